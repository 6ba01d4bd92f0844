//! Writes that never leave a half-written file: data goes to a temp file in the same
//! directory (created with O_EXCL|O_NOFOLLOW, so a planted symlink is never followed),
//! is fsynced, then renamed over the target and the directory fsynced. A failed write
//! (disk full) leaves the previous file intact.
//!
//! `prepare` and `commit` are separate so that a command can write several files
//! (requests and key file) and rename them only once all of them are safely on disk.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fully written temp file waiting to replace `target`.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    target: PathBuf,
    sync: bool,
    done: bool,
}

fn temp_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    target.with_file_name(format!(
        ".{}.{}.{}.{}.tmp",
        name,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    ))
}

/// Open a new file exclusively, never through a symlink.
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Write `data` to a temp file beside `target` with `mode`; fsync it when `sync`.
pub fn prepare(target: &Path, data: &[u8], mode: u32, sync: bool) -> Result<Pending> {
    let tmp = temp_name(target);
    let mut pending = Pending {
        tmp: tmp.clone(),
        target: target.to_path_buf(),
        sync,
        done: false,
    };
    let result = (|| -> std::io::Result<()> {
        let mut f = create_new(&tmp, mode)?;
        // The umask may have narrowed the mode: set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(pending),
        Err(e) => {
            pending.done = true;
            let _ = std::fs::remove_file(&tmp);
            Err(Error::io("write", target, &e))
        }
    }
}

impl Pending {
    /// Rename the temp file over the target (and fsync the directory when syncing).
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(Error::io("replace", &self.target, &e));
        }
        if self.sync {
            if let Some(dir) = self.target.parent() {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Prepare and commit in one step.
pub fn write(target: &Path, data: &[u8], mode: u32, sync: bool) -> Result<()> {
    prepare(target, data, mode, sync)?.commit()
}

/// Commit several prepared files; all were fully written before the first rename.
pub fn commit_all(pending: Vec<Pending>) -> Result<()> {
    for p in pending {
        p.commit()?;
    }
    Ok(())
}

/// Read a regular file of at most `max` bytes without following a symlink.
/// `Ok(None)` when it does not exist.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, &e)),
    };
    let meta = f.metadata().map_err(|e| Error::io("read", path, &e))?;
    if !meta.is_file() {
        return Err(Error::new(format!(
            "cannot read {}: not a regular file; remove it",
            path.display()
        )));
    }
    let mut data = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("read", path, &e))?;
    if data.len() as u64 > max {
        return Err(Error::new(format!(
            "cannot read {}: larger than {} bytes",
            path.display(),
            max
        )));
    }
    Ok(Some(data))
}

/// Create `dir` (and parents) if missing, the last one with `mode`. An existing
/// directory is left as it is; a symlink or file in its place is an error.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::new(format!(
                "{} exists but is not a directory; remove it",
                dir.display()
            )))
        }
        Err(_) => {}
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, &e))?;
    }
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io("create", dir, &e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("set the mode of", dir, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_never_follows_symlinks() {
        let dir = std::env::temp_dir().join(format!("ph-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("f");
        write(&target, b"one", 0o600, true).unwrap();
        write(&target, b"two", 0o644, true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // A symlink at the target is replaced, not followed.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read_bounded(&link, 100).is_err());
        write(&link, b"new", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // A dropped pending write leaves nothing behind.
        drop(prepare(&target, b"three", 0o600, false).unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        assert_eq!(read_bounded(&target, 3).unwrap().unwrap(), b"two");
        assert!(read_bounded(&target, 2).is_err());
        assert!(read_bounded(&dir.join("none"), 2).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
