//! The one error type of the server tools: a message for a person (what is wrong and
//! what to do) and the exit status it maps to. `main` prints it once, on one line.

use std::fmt;

/// Exit status of a failed command (the operation did not happen).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of a usage error (bad flags or arguments).
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub msg: String,
    pub code: i32,
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error {
            msg: msg.into(),
            code: EXIT_FAILURE,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Error {
        Error {
            msg: msg.into(),
            code: EXIT_USAGE,
        }
    }

    /// An I/O failure on `path` while doing `what`, with a hint of what to check.
    pub fn io(what: &str, path: &std::path::Path, e: &std::io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                ": the disk is full, free some space and retry"
            }
            Some(libc::EACCES) | Some(libc::EPERM) => ": permission denied, run it as root",
            Some(libc::EROFS) => ": the file system is read-only",
            Some(libc::ELOOP) => ": it is a symbolic link, which is never followed; remove it",
            _ => "",
        };
        Error::new(format!("cannot {} {}: {}{}", what, path.display(), e, hint))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<phonehome_protocol::Invalid> for Error {
    fn from(e: phonehome_protocol::Invalid) -> Error {
        Error::usage(e.0)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
