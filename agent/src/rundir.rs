//! The run directory (`/var/run/phonehome`, a tmpfs on OpenWrt): its layout, and the
//! poll lock that keeps two ticks, or a tick and `stop`, from acting at once.

use crate::failure::Failure;
use phonehome_plumbing::{files, lock};
use std::fs::File;
use std::path::{Path, PathBuf};

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

    /// Take the poll lock without waiting (a tick).
    pub fn try_lock(&self) -> Result<Locked, Failure> {
        let f = self.open_lock()?;
        match lock::try_exclusive(&f) {
            Ok(true) => Ok(Locked::Yes(f)),
            Ok(false) => Ok(Locked::Busy),
            Err(e) => Err(self.lock_error(e)),
        }
    }

    /// Take the poll lock, waiting for a running tick (stop).
    pub fn lock(&self) -> Result<File, Failure> {
        let f = self.open_lock()?;
        lock::exclusive(&f).map_err(|e| self.lock_error(e))?;
        Ok(f)
    }

    fn lock_error(&self, e: std::io::Error) -> Failure {
        Failure::Failed(format!("cannot lock {}: {}", self.lock_path().display(), e))
    }
}
