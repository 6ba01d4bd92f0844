//! Files that are never half-written and never reached through a planted symlink.
//!
//! A write goes to a temp file beside its target, created with `O_EXCL|O_NOFOLLOW`
//! (so a symlink in its place is never followed), fsynced when asked, then renamed over
//! the target and the directory fsynced: a crash or a full disk leaves the previous
//! file intact. [`prepare`] and [`Pending::commit`] are separate so that a caller can
//! write several files and rename them only once all of them are safely on disk.
//!
//! Reads are bounded and refuse what is not a regular file (a FIFO or `/dev/zero`
//! would block or never end); the open is non-blocking so that even a FIFO cannot
//! hold the caller before the check.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

/// What every temp file's name ends with; [`remove_stale_temps`] looks for it.
const TEMP_SUFFIX: &str = ".tmp";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fully written temp file waiting to replace its target.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    target: PathBuf,
    sync: bool,
    done: bool,
}

/// `.NAME.PID.N.NANOS.tmp` beside `target`: unique within and across processes.
fn temp_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    target.with_file_name(format!(
        ".{}.{}.{}.{}{}",
        name,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos,
        TEMP_SUFFIX
    ))
}

/// Open a new file exclusively, never through a symlink.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Write `data` to a temp file beside `target` with exactly `mode`; fsync it when `sync`.
pub fn prepare(target: &Path, data: &[u8], mode: u32, sync: bool) -> io::Result<Pending> {
    let tmp = temp_name(target);
    let mut pending = Pending {
        tmp,
        target: target.to_path_buf(),
        sync,
        done: false,
    };
    let mut f = match create_new(&pending.tmp, mode) {
        Ok(f) => f,
        Err(e) => {
            // Not ours to remove: the name may belong to someone else's write.
            pending.done = true;
            return Err(e);
        }
    };
    // The umask may have narrowed the mode: set it exactly. On any error the drop of
    // `pending` removes the temp file.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    if sync {
        f.sync_all()?;
    }
    Ok(pending)
}

impl Pending {
    /// The file this write replaces.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Rename the temp file over the target (and fsync the directory when syncing).
    pub fn commit(mut self) -> io::Result<()> {
        self.done = true;
        if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        if self.sync {
            sync_dir(&self.target);
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

fn sync_dir(file: &Path) {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Prepare and commit in one step.
pub fn write(target: &Path, data: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    prepare(target, data, mode, sync)?.commit()
}

/// Whether [`open_regular`] follows a symlink at the path itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Files in directories someone else can write: a symlink is an error (ELOOP).
    No,
    /// Files an admin names (a log path may well be a link).
    Yes,
}

/// Open `path` for reading if it is a regular file. The open never blocks (a FIFO is
/// opened non-blocking, then refused); anything but a regular file is an
/// `InvalidInput` error saying so.
pub fn open_regular(path: &Path, follow: Follow) -> io::Result<File> {
    let f = open_nonblocking(path, follow)?;
    regular_len(&f)?;
    Ok(f)
}

/// `path` opened for reading without blocking on a FIFO, not yet checked.
fn open_nonblocking(path: &Path, follow: Follow) -> io::Result<File> {
    let mut flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    if follow == Follow::No {
        flags |= libc::O_NOFOLLOW;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// The length of an open file, which must be a regular file (one fstat).
fn regular_len(f: &File) -> io::Result<u64> {
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(m.len())
}

/// A small kernel file (`/proc`, `/sys`): they report a size of 0, on which std reads
/// in 32-byte probes that double (8 reads for `/proc/meminfo`); a page at once takes
/// one read and the one that says the end.
pub fn read_kernel_text(path: impl AsRef<Path>) -> io::Result<String> {
    let mut text = String::with_capacity(4096);
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Read a regular file of at most `max` bytes without following a symlink.
/// `Ok(None)` when it does not exist; larger files are an `InvalidData` error.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    match open_nonblocking(path, Follow::No) {
        Ok(f) => read_sized(f, max).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What an open file holds, at most `max` bytes, if it is a regular file: sized by its
/// metadata, so that the usual case is one read (files here are replaced by rename,
/// never grown in place).
fn read_sized(mut f: File, max: u64) -> io::Result<Vec<u8>> {
    let len = regular_len(&f)?;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} bytes", max),
        ));
    }
    let mut data = vec![0u8; len as usize];
    let mut got = 0;
    while got < data.len() {
        match f.read(&mut data[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    data.truncate(got);
    Ok(data)
}

/// A directory held open, to read many files in it without walking its path each time
/// (list-devices reads a status file per device).
#[derive(Debug)]
pub struct Dir(File);

impl Dir {
    pub fn open(path: &Path) -> io::Result<Dir> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map(Dir)
    }

    /// As [`read_bounded`], for `rel` inside this directory.
    #[allow(unsafe_code)]
    pub fn read_bounded(&self, rel: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(rel.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: a live directory descriptor, a NUL-terminated path, plain flags.
        let fd = unsafe { libc::openat(self.0.as_raw_fd(), c.as_ptr(), flags) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: a descriptor openat just returned, owned by nobody else.
        let f = unsafe { File::from_raw_fd(fd) };
        read_to_short(f, max).map(Some)
    }
}

/// The first read of [`read_to_short`]: a device's status file fits.
const FIRST_READ: usize = 1024;

/// What an open file holds, at most `max` bytes, read until a read comes back short:
/// for the regular files read here (replaced by rename, never grown in place) that is
/// their end, so the usual case is one read and no fstat — list-devices reads a file a
/// device, and the kernel's time is most of it. Only an empty read is checked to be a
/// regular file's (a FIFO opened without blocking reads as empty too).
fn read_to_short(mut f: File, max: u64) -> io::Result<Vec<u8>> {
    let limit = usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1);
    let mut data = vec![0u8; FIRST_READ.min(limit)];
    let mut got = 0;
    loop {
        let want = data.len() - got;
        let n = match f.read(&mut data[got..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        got += n;
        if got as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {} bytes", max),
            ));
        }
        if n < want {
            break;
        }
        data.resize((data.len() * 2).min(limit), 0);
    }
    if got == 0 {
        regular_len(&f)?;
    }
    data.truncate(got);
    Ok(data)
}

/// Create `dir` (and its parents) if missing, the last one with exactly `mode`. An
/// existing directory is left as it is; a symlink or a file in its place is an error.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists but is not a directory",
            ))
        }
        Err(_) => {}
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Remove `path`; a missing file is not an error.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Remove the temp files of writes that never finished (a crash between prepare and
/// commit) from `dir`, when older than `min_age`. Returns how many were removed.
pub fn remove_stale_temps(dir: &Path, min_age: Duration) -> io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let meta = entry.metadata()?;
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= min_age);
        if meta.is_file() && old {
            remove_if_present(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Bytes an unprivileged process can still write on the file system holding `path`.
#[allow(unsafe_code)]
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a live struct to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A kernel file is read whole, and so is a file longer than the first read.
    #[test]
    fn kernel_text_is_read_whole() {
        assert_eq!(
            read_kernel_text("/proc/version").unwrap(),
            std::fs::read_to_string("/proc/version").unwrap()
        );
        let t = TempDir::new("files-kernel-text");
        let p = t.join("long");
        let long = "x".repeat(10_000);
        std::fs::write(&p, &long).unwrap();
        assert_eq!(read_kernel_text(&p).unwrap(), long);
        assert!(read_kernel_text(t.join("missing")).is_err());
    }

    #[test]
    fn writes_replace_with_the_mode_and_leave_no_temp() {
        let t = TempDir::new("files-write");
        let p = t.join("f");
        write(&p, b"one", 0o600, true).unwrap();
        write(&p, b"two", 0o644, false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o644);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        assert!(write(&t.join("missing/f"), b"x", 0o600, true).is_err());
        // A dropped pending write leaves nothing behind and the old file intact.
        drop(prepare(&p, b"three", 0o600, false).unwrap());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        assert_eq!(read_bounded(&p, 3).unwrap().unwrap(), b"two");
    }

    #[test]
    fn symlinks_are_replaced_never_followed() {
        let t = TempDir::new("files-link");
        let victim = t.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = t.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read_bounded(&link, 100).is_err());
        assert!(open_regular(&link, Follow::Yes).is_ok());
        write(&link, b"new", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn reads_are_bounded_and_only_of_regular_files() {
        let t = TempDir::new("files-read");
        let p = t.join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap().unwrap(), b"12345");
        let e = read_bounded(&p, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(read_bounded(&t.join("none"), 2).unwrap().is_none());
        for special in ["/dev/zero", "/dev/null"] {
            let e = open_regular(Path::new(special), Follow::Yes).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{}", special);
        }
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = t.join("fifo");
        mkfifo(&fifo);
        let e = open_regular(&fifo, Follow::Yes).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(read_bounded(&t.join("."), 10).is_err(), "a directory");
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a valid NUL-terminated path; mkfifo touches no memory of ours.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
    }

    #[test]
    fn directories_read_files_relative_to_them() {
        let t = TempDir::new("files-dirfd");
        std::fs::create_dir(t.join("a")).unwrap();
        std::fs::write(t.join("a/f"), b"hello").unwrap();
        std::os::unix::fs::symlink(t.join("a/f"), t.join("a/link")).unwrap();
        let d = Dir::open(t.path()).unwrap();
        assert_eq!(
            d.read_bounded(Path::new("a/f"), 5).unwrap().unwrap(),
            b"hello"
        );
        assert!(d.read_bounded(Path::new("a/f"), 4).is_err());
        assert!(d.read_bounded(Path::new("a/none"), 4).unwrap().is_none());
        assert!(
            d.read_bounded(Path::new("a/link"), 9).is_err(),
            "a symlink is not followed"
        );
        assert!(
            d.read_bounded(Path::new("a"), 9).is_err(),
            "a directory is not a file"
        );
        // Larger than the first read, at the limit and beyond it; empty; a FIFO.
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(t.join("a/big"), &big).unwrap();
        assert_eq!(
            d.read_bounded(Path::new("a/big"), 5000).unwrap().unwrap(),
            big
        );
        assert!(d.read_bounded(Path::new("a/big"), 4999).is_err());
        assert!(d.read_bounded(Path::new("a/big"), 1024).is_err());
        std::fs::write(t.join("a/empty"), b"").unwrap();
        assert_eq!(
            d.read_bounded(Path::new("a/empty"), 9).unwrap().unwrap(),
            b""
        );
        mkfifo(&t.join("a/fifo"));
        assert!(
            d.read_bounded(Path::new("a/fifo"), 9).is_err(),
            "a FIFO is not a file, and is not waited on"
        );
    }

    #[test]
    fn free_space() {
        assert!(free_bytes(Path::new("/")).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(Path::new("/nonexistent/x")), None);
    }

    #[test]
    fn directories() {
        let t = TempDir::new("files-dir");
        let d = t.join("a/b/c");
        ensure_dir(&d, 0o700).unwrap();
        assert_eq!(mode(&d), 0o700);
        ensure_dir(&d, 0o755).unwrap();
        assert_eq!(mode(&d), 0o700, "an existing directory is left alone");
        std::fs::write(t.join("file"), b"").unwrap();
        assert!(ensure_dir(&t.join("file"), 0o700).is_err());
        remove_if_present(&t.join("file")).unwrap();
        remove_if_present(&t.join("file")).unwrap();
    }

    #[test]
    fn stale_temps_are_found_by_name_and_age() {
        let t = TempDir::new("files-stale");
        let p = t.join("requests.json");
        let pending = prepare(&p, b"x", 0o600, false).unwrap();
        std::mem::forget(pending); // a crash between prepare and commit
        std::fs::write(t.join("keep.json"), b"").unwrap();
        std::fs::write(t.join(".hidden"), b"").unwrap();
        assert_eq!(
            remove_stale_temps(t.path(), Duration::from_secs(3600)).unwrap(),
            0
        );
        assert_eq!(remove_stale_temps(t.path(), Duration::ZERO).unwrap(), 1);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);
    }
}
