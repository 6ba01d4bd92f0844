//! The one error type of the server tools: what went wrong, as data a caller can act
//! on (a usage error, an I/O error on a named path, a command that failed, output that
//! could not be written), and the exit status it maps to. `Display` is the one line
//! `main` prints: what is wrong and what to do.

use phonehome_plumbing::process::CommandError;
use std::fmt;
use std::path::{Path, PathBuf};

/// Exit status of a failed command (the operation did not happen).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of a usage error (bad flags or arguments).
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug)]
pub enum Error {
    /// Bad flags or arguments: exit 2.
    Usage(String),
    /// Anything else that stopped the command: exit 1.
    Failed(String),
    /// `what` on `path` failed.
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A program we ran failed (useradd, userdel, journalctl).
    Command(CommandError),
    /// Standard output could not be written (a full disk, a closed pipe).
    Output(std::io::Error),
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error::Failed(msg.into())
    }

    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    pub fn io(what: &'static str, path: &Path, error: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.to_path_buf(),
            error,
        }
    }

    pub fn code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// A closed pipe on stdout (`list-devices | head`): not worth a word.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// What to check, by errno, after an I/O error.
fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ": the disk is full, free some space and retry",
        Some(libc::EACCES) | Some(libc::EPERM) => ": permission denied, run it as root",
        Some(libc::EROFS) => ": the file system is read-only",
        Some(libc::ELOOP) => ": it is a symbolic link, which is never followed; remove it",
        _ => "",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Failed(m) => f.write_str(m),
            Error::Io { what, path, error } => write!(
                f,
                "cannot {} {}: {}{}",
                what,
                path.display(),
                error,
                hint(error)
            ),
            Error::Command(e) => write!(f, "{}", e),
            Error::Output(e) => write!(f, "cannot write the output: {}{}", e, hint(e)),
        }
    }
}

impl std::error::Error for Error {}

impl From<phonehome_protocol::Invalid> for Error {
    fn from(e: phonehome_protocol::Invalid) -> Error {
        Error::Usage(e.0)
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Error {
        Error::Command(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `io_result.context("write", &path)?`: an I/O error with what was done and where.
pub trait Context<T> {
    fn context(self, what: &'static str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}
