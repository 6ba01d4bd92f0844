//! Small file helpers: the run-dir layout, and atomic writes (temp file, fsync, rename)
//! so that a killed agent or a full disk never leaves a half-written state or config.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Write `data` to `path` atomically with `mode`.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create `dir` (and parents) with `mode` if missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// The layout of the run directory (see docs/ARCHITECTURE.md).
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> RunDir {
        RunDir {
            root: root.to_path_buf(),
        }
    }
    pub fn lock(&self) -> PathBuf {
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
    /// What the ssh client's `-V` said, remembered between polls (`ssh::Client::detect_cached`).
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
    pub fn create(&self) -> io::Result<()> {
        ensure_dir(&self.root, 0o700)?;
        ensure_dir(&self.tunnels(), 0o700)?;
        ensure_dir(&self.home().join(".ssh"), 0o700)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A temp dir removed on drop (no dev-dependencies allowed).
    pub struct TempDir(pub PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "phonehome-unit-{}-{}-{}",
                tag,
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn atomic_write_replaces_with_mode_and_leaves_no_temp() {
        let t = TempDir::new("aw");
        let p = t.0.join("f");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(fs::read_dir(&t.0).unwrap().count(), 1);
        assert!(atomic_write(&t.0.join("missing/f"), b"x", 0o600).is_err());
    }
}
