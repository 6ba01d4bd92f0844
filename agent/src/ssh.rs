//! The one place that starts an ssh client: the `-V` probe that tells which client it
//! is, one poll (a [`PollSession`]: stdin fed, and closed at once or when a held
//! session ends; a hard deadline; the gate's frames taken as they come, what is not yet
//! taken bounded by the inbox limit, so a client that never ends is cut), and the
//! long-lived tunnel processes. A poll's failure comes back as data ([`PollError`]);
//! its `Display` is the line the log, `status` and the next report show.

use crate::client::{binary_identity, Client, Kind, Target};
use crate::ssh_error::SshError;
use phonehome_plumbing::process::{self, Event, Limits, Session};
use phonehome_plumbing::{files, text};
use phonehome_protocol::{PortPair, MAX_INBOX_BYTES};
use std::fmt;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most stderr kept from any ssh run.
pub const MAX_STDERR_BYTES: usize = 16 * 1024;
/// How long `-V` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the client at `program` (found by `identity`) is, remembering the answer of
/// its `-V` in `cache` (a file of the run dir): it changes only with the client's
/// binary, and asking is one more process start every poll. The cache is keyed by the
/// binary's path, size, mtime and inode.
pub fn detect(kind: Kind, program: &Path, cache: &Path) -> Result<Client, String> {
    let identity = binary_identity(program);
    if let Some(id) = &identity {
        let cached = files::read_bounded(cache, 4096).ok().flatten();
        if let Some(c) = cached
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|t| Client::from_cache(&t, id, program))
        {
            return Ok(c);
        }
    }
    let version = probe(program)?;
    let client = Client::from_version(program.to_path_buf(), kind, &version);
    if let Some(id) = identity {
        if let Err(e) = files::write(cache, client.cache_text(&id).as_bytes(), 0o600, false) {
            log::debug!(
                "cannot cache the client's version in {}: {}",
                cache.display(),
                e
            );
        }
    }
    Ok(client)
}

/// What `program -V` prints (dropbear on stderr, OpenSSH on stderr too).
fn probe(program: &Path) -> Result<String, String> {
    let out = process::run(
        Command::new(program).arg("-V"),
        b"",
        &Limits {
            timeout: VERSION_TIMEOUT,
            max_stdout: 4096,
            max_stderr: 4096,
        },
    )
    .map_err(|e| format!("cannot run `{} -V`: {}", program.display(), e))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    ))
}

/// Why a poll's ssh did not bring an answer.
#[derive(Debug)]
pub enum PollError {
    /// The client could not be started.
    Spawn {
        command: String,
        error: std::io::Error,
    },
    /// It ran past the poll's timeout and was killed.
    TimedOut {
        secs: u64,
        server: String,
        ssh: SshError,
    },
    /// It exited unsuccessfully.
    Failed(SshError),
    /// It sent more than an answer may hold, and was cut off.
    AnswerTooLarge,
    /// Waiting on it failed (poll(2) or a read of its pipes).
    Io(std::io::Error),
}

impl fmt::Display for PollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollError::Spawn { command, error } => write!(f, "cannot run `{}`: {}", command, error),
            PollError::TimedOut { secs, server, ssh } => {
                write!(f, "poll timed out after {} s and was killed (server {})", secs, server)?;
                if ssh.line.is_some() {
                    write!(f, ": {}", ssh)?;
                }
                Ok(())
            }
            PollError::Failed(ssh) => write!(f, "{}", ssh),
            PollError::AnswerTooLarge => write!(
                f,
                "the server's answer was larger than {} bytes and was cut off: is that really the phonehome gate?",
                MAX_INBOX_BYTES
            ),
            PollError::Io(e) => write!(f, "cannot follow the poll's ssh: {}", e),
        }
    }
}

/// One poll's ssh, running: log in, run the gate, talk to it.
pub struct PollSession {
    session: Session,
    command: String,
    server: String,
    timeout: Duration,
}

/// Start one poll: the client logging in and running `poll`, killed after `timeout`
/// unless the deadline is moved (a held session).
pub fn start_poll(
    client: &Client,
    target: &Target,
    home: &Path,
    timeout: Duration,
) -> Result<PollSession, PollError> {
    let mut cmd = Command::new(&client.program);
    cmd.args(client.poll_args(target)).env("HOME", home);
    let command = process::render(&cmd);
    log::debug!("running {}", command);
    let limits = Limits {
        timeout,
        max_stdout: MAX_INBOX_BYTES,
        max_stderr: MAX_STDERR_BYTES,
    };
    // Tied: a killed agent takes its poll along (THREATS 18).
    let session = Session::start_tied(&cmd, &limits).map_err(|error| PollError::Spawn {
        command: command.clone(),
        error,
    })?;
    Ok(PollSession {
        session,
        command,
        server: format!("{}:{}", target.host, target.port),
        timeout,
    })
}

impl PollSession {
    /// Queue `data` for the gate (dropped once stdin is closed).
    pub fn send(&mut self, data: &[u8]) {
        self.session.send(data);
    }

    /// Close stdin once what is queued is written: the gate then ends the session.
    pub fn close_stdin(&mut self) {
        self.session.close_stdin();
    }

    pub fn stdin_open(&self) -> bool {
        self.session.stdin_open()
    }

    /// Kill the client at `at` instead of at the poll's timeout.
    pub fn set_deadline(&mut self, at: Instant) {
        self.session.set_deadline(at);
    }

    /// What the gate sent and was not taken yet.
    pub fn stdout(&mut self) -> &mut Vec<u8> {
        self.session.stdout()
    }

    /// Wait for output, one of `also`, `until`, or the end (see `process::Session`).
    pub fn wait(&mut self, until: Instant, also: &[BorrowedFd<'_>]) -> Result<Event, PollError> {
        self.session.wait(until, also).map_err(PollError::Io)
    }

    /// Wait for the client to end (stdin closed, the deadline still applies): what the
    /// gate sent and was not taken, or why the login failed.
    pub fn finish(self) -> Result<Vec<u8>, PollError> {
        let PollSession {
            session,
            command,
            server,
            timeout,
        } = self;
        let out = session.finish().map_err(PollError::Io)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failed =
            out.timed_out || out.stdout_overflow || out.status.is_some_and(|s| !s.success());
        if failed {
            log::error!("poll command: {}", command);
            if !stderr.trim().is_empty() {
                log::debug!("its stderr: {}", text::for_terminal(stderr.trim(), 2000));
            }
        }
        if out.stdout_overflow {
            return Err(PollError::AnswerTooLarge);
        }
        if out.timed_out {
            return Err(PollError::TimedOut {
                secs: timeout.as_secs(),
                server,
                ssh: SshError::from_stderr(&stderr),
            });
        }
        match out.status {
            Some(s) if !s.success() => {
                let mut ssh = SshError::from_stderr(&stderr);
                if ssh.line.is_none() {
                    ssh.line = Some(s.to_string());
                }
                Err(PollError::Failed(ssh))
            }
            _ => Ok(out.stdout),
        }
    }
}

/// A tunnel process just started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    /// Its start time (clock ticks after boot), 0 if it is already gone.
    pub start_time: u64,
    /// Its whole argv, program first.
    pub argv: Vec<String>,
}

/// Start the tunnel process for `pair`: detached (a session of its own, so it outlives
/// the tick), stdin and stdout null, stderr to `log`. Not waited for: when the agent
/// exits, init reaps it.
pub fn spawn_tunnel(
    client: &Client,
    target: &Target,
    home: &Path,
    pair: PortPair,
    log: File,
) -> Result<Spawned, String> {
    let argv = client.tunnel_argv(target, pair);
    let mut cmd = Command::new(&client.program);
    cmd.args(&argv[1..])
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    process::new_session(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {}", process::render(&cmd), e))?;
    let pid = child.id();
    drop(child);
    Ok(Spawned {
        pid,
        start_time: process::stat(pid).map_or(0, |s| s.start_time),
        argv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonehome_plumbing::tempdir::TempDir;

    #[test]
    fn the_client_version_is_probed_once_per_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("client-cache");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = bin.join("dbclient");
        let calls = dir.join("calls");
        let write_fake = |version: &str| {
            std::fs::write(
                &fake,
                format!(
                    "#!/bin/sh\necho probe >>'{}'\necho 'Dropbear v{}' >&2\n",
                    calls.display(),
                    version
                ),
            )
            .unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let probes = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let cache = dir.join("client");
        // A script just written can be "busy" while another test thread forks: retry.
        let run = || {
            (0..50)
                .find_map(|_| match detect(Kind::Dbclient, &fake, &cache) {
                    Err(e) if e.contains("busy") => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                    r => Some(r.unwrap()),
                })
                .unwrap()
        };

        write_fake("2022.83");
        let first = run();
        assert_eq!(
            first.flavour,
            crate::client::Flavour::Dbclient { strict: false }
        );
        assert_eq!(first.description, "dbclient 2022.83");
        assert_eq!(run(), first, "the cached answer is the probed one");
        assert_eq!(probes(), 1, "-V ran once for two polls");

        // A new binary (upgraded dropbear) is probed again.
        write_fake("2024.86");
        let upgraded = run();
        assert_eq!(
            upgraded.flavour,
            crate::client::Flavour::Dbclient { strict: true }
        );
        assert_eq!(probes(), 2);

        // A damaged cache is ignored, never trusted.
        std::fs::write(&cache, "garbage\n").unwrap();
        assert_eq!(run(), upgraded);
        assert_eq!(probes(), 3);
    }
}
