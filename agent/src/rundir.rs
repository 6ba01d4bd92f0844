//! The run directory (`/var/run/phonehome`, a tmpfs on OpenWrt): its layout, and the
//! poll lock that keeps two ticks, or a tick and `stop`, from acting at once.
//!
//! The lock's holder writes into the lock file who it is (pid, start time) and whether
//! it holds a session. A held session lasts until the next tick, which must not be
//! skipped (one login, one heartbeat a minute): a tick that finds the lock held by a
//! held session asks it to end (`END_HOLD_SIGNAL`) and waits for the lock up to
//! `HANDOVER_WAIT`; `stop` asks the same and waits as long as it takes. A tick that
//! finds the lock held by an ordinary poll still exits quietly (THREATS 17). So a
//! device never has two sessions, and never a minute without one.

use crate::failure::Failure;
use phonehome_plumbing::process::{self, Handle};
use phonehome_plumbing::{files, lock};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The signal that asks a held poll to end its session (it ends it, then exits).
pub const END_HOLD_SIGNAL: i32 = process::SIGUSR1;
/// How long a tick waits for a held session it asked to end.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting tick tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// The layout of the run directory (see docs/ARCHITECTURE.md).
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

/// Whether the poll lock was taken.
pub enum Locked {
    Yes(File),
    /// Another tick holds it.
    Busy,
}

impl RunDir {
    pub fn new(root: &Path) -> RunDir {
        RunDir {
            root: root.to_path_buf(),
        }
    }
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("poll.lock")
    }
    pub fn last_poll(&self) -> PathBuf {
        self.root.join("last-poll.json")
    }
    pub fn tunnels(&self) -> PathBuf {
        self.root.join("tunnels")
    }
    pub fn tunnel_record(&self, local: u16, remote: u16) -> PathBuf {
        self.tunnels().join(format!("{}-{}.json", local, remote))
    }
    pub fn tunnel_log(&self, local: u16, remote: u16) -> PathBuf {
        self.tunnels().join(format!("{}-{}.log", local, remote))
    }
    /// What the ssh client's `-V` said, remembered between polls.
    pub fn client_cache(&self) -> PathBuf {
        self.root.join("client")
    }
    /// HOME of every ssh run: dbclient reads `$HOME/.ssh/known_hosts` only.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    pub fn dbclient_known_hosts(&self) -> PathBuf {
        self.home().join(".ssh").join("known_hosts")
    }
    pub fn openssh_known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }

    /// Create the directories (private: they hold pids and error texts).
    pub fn create(&self) -> Result<(), Failure> {
        for d in [
            self.root.clone(),
            self.tunnels(),
            self.home(),
            self.home().join(".ssh"),
        ] {
            files::ensure_dir(&d, 0o700).map_err(|e| {
                Failure::Failed(format!("cannot create the run dir {}: {}", d.display(), e))
            })?;
        }
        Ok(())
    }

    fn open_lock(&self) -> Result<File, Failure> {
        self.create()?;
        lock::open(&self.lock_path()).map_err(|e| {
            Failure::Failed(format!("cannot open {}: {}", self.lock_path().display(), e))
        })
    }

    /// Take the poll lock for a tick: at once, or after asking a held session to end;
    /// `Busy` when an ordinary poll holds it, or the held one did not end in time.
    pub fn lock_for_tick(&self) -> Result<Locked, Failure> {
        let f = self.open_lock()?;
        if self.take(&f)? {
            return Ok(Locked::Yes(f));
        }
        if !self.end_hold() {
            return Ok(Locked::Busy);
        }
        let until = Instant::now() + HANDOVER_WAIT;
        while Instant::now() < until {
            std::thread::sleep(LOCK_RETRY);
            if self.take(&f)? {
                return Ok(Locked::Yes(f));
            }
        }
        Ok(Locked::Busy)
    }

    /// Take the poll lock, asking a held session to end and waiting for a running
    /// tick (stop).
    pub fn lock(&self) -> Result<File, Failure> {
        let f = self.open_lock()?;
        if !self.take(&f)? {
            self.end_hold();
            lock::exclusive(&f).map_err(|e| self.lock_error(e))?;
            mark(&f, false);
        }
        Ok(f)
    }

    fn take(&self, f: &File) -> Result<bool, Failure> {
        match lock::try_exclusive(f) {
            Ok(true) => {
                mark(f, false);
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(self.lock_error(e)),
        }
    }

    /// If the lock's holder says it holds a session and is still that process, ask it
    /// to end the session; true if it was asked.
    fn end_hold(&self) -> bool {
        let Some(text) = files::read_bounded(&self.lock_path(), 128)
            .ok()
            .flatten()
            .and_then(|d| String::from_utf8(d).ok())
        else {
            return false;
        };
        let Some((pid, start_time)) = parse_mark(&text).filter(|m| m.2).map(|m| (m.0, m.1)) else {
            return false;
        };
        let Ok(h) = Handle::open(pid) else {
            return false;
        };
        if h.start_time() != start_time || pid == std::process::id() {
            return false;
        }
        log::debug!("asking the held poll (pid {}) to end its session", pid);
        h.signal(END_HOLD_SIGNAL).is_ok()
    }

    fn lock_error(&self, e: std::io::Error) -> Failure {
        Failure::Failed(format!("cannot lock {}: {}", self.lock_path().display(), e))
    }
}

/// Write into the held lock file who holds it, and whether it holds a session. Only
/// the holder writes; a failure only costs the next tick its handover.
pub fn mark(lock_file: &File, held: bool) {
    let me = std::process::id();
    let start = process::stat(me).map_or(0, |s| s.start_time);
    let text = format!("{} {} {}\n", me, start, if held { "held" } else { "poll" });
    let _ = lock_file
        .set_len(0)
        .and_then(|()| lock_file.write_all_at(text.as_bytes(), 0));
}

/// `pid start_time held|poll`.
fn parse_mark(text: &str) -> Option<(u32, u64, bool)> {
    let mut w = text.split_whitespace();
    let pid = w.next()?.parse().ok()?;
    let start = w.next()?.parse().ok()?;
    let held = match w.next()? {
        "held" => true,
        "poll" => false,
        _ => return None,
    };
    Some((pid, start, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_says_who_holds_it() {
        assert_eq!(parse_mark("42 77 held\n"), Some((42, 77, true)));
        assert_eq!(parse_mark("42 77 poll\n"), Some((42, 77, false)));
        for bad in ["", "42", "42 77", "42 77 maybe", "x 77 held", "-1 77 held"] {
            assert_eq!(parse_mark(bad), None, "{:?}", bad);
        }
        let t = phonehome_plumbing::tempdir::TempDir::new("rundir-mark");
        let run = RunDir::new(t.path());
        let Locked::Yes(f) = run.lock_for_tick().unwrap() else {
            panic!("free lock")
        };
        mark(&f, true);
        let text = std::fs::read_to_string(run.lock_path()).unwrap();
        let (pid, _, held) = parse_mark(&text).unwrap();
        assert_eq!((pid, held), (std::process::id(), true));
        // Our own mark is never signalled (a tick does not end itself).
        assert!(!run.end_hold());
    }
}
