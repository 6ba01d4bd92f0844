//! Advisory locks (flock) on lock files. The kernel drops a flock when its holder
//! dies, so a killed process never blocks the next one. Both calls retry on EINTR (a
//! signal arriving while waiting is not a failure).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Open (creating it, mode 0600) a lock file, never through a symlink.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Open an existing lock file for reading only (flock needs no write access: a slot
/// file that root made can be locked by anyone who may read it), never through a
/// symlink and never a FIFO or device.
pub fn open_existing(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number; `file` keeps it open.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Take an exclusive lock on `file`, waiting for its holder.
pub fn exclusive(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_EX)
}

/// Take an exclusive lock without waiting: `Ok(false)` when another process holds it.
pub fn try_exclusive(file: &File) -> io::Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let t = crate::tempdir::TempDir::new("lock");
        let p = t.join("l");
        let a = open(&p).unwrap();
        let b = open(&p).unwrap();
        assert!(try_exclusive(&a).unwrap());
        assert!(!try_exclusive(&b).unwrap());
        drop(a);
        assert!(try_exclusive(&b).unwrap());
        exclusive(&b).unwrap();
        let link = t.join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(open(&link).is_err(), "a symlinked lock file is refused");
        assert!(open_existing(&link).is_err());
        assert!(open_existing(&t.join("missing")).is_err());
        assert!(
            open_existing(t.path()).is_err(),
            "a directory is no lock file"
        );
        let r = open_existing(&p).unwrap();
        assert!(!try_exclusive(&r).unwrap(), "held by b");
        drop(b);
        assert!(
            try_exclusive(&r).unwrap(),
            "a read-only descriptor takes the lock"
        );
    }
}
