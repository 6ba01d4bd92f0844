//! Waiting on several things at once, in one thread and without sleeping: descriptors
//! that become readable (poll(2)), bounded reads of what a descriptor holds now, and a
//! directory's changes (inotify). A held poll needs all three at once: the gate waits
//! for the device's outcome lines on stdin and for its request file to change; the
//! agent waits for the gate's frames and for a tunnel process to die.
//!
//! poll(2) lives here only; the process runner uses it too.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

/// poll(2) over `fds`, retried on EINTR; `None` waits forever. Returns how many are ready.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout.map_or(-1, |t| {
        // Round up: a wait of 0.4 ms must not become a busy loop of 0 ms waits.
        let ms = t.as_micros().div_ceil(1000);
        ms.min(i32::MAX as u128) as libc::c_int
    });
    loop {
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Wait until one of `fds` is readable (or at its end: a closed pipe, an exited
/// process's pidfd), at most `timeout` (`None`: forever). One flag per descriptor.
pub fn readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    poll(&mut p, timeout)?;
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// One read(2) of at most `max` bytes from `fd`, retried on EINTR: what is there now
/// (call it when [`readable`] said so, or it may block). Empty means end of file.
pub fn read_some(fd: BorrowedFd<'_>, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; max.max(1)];
    loop {
        // SAFETY: `buf` is a live buffer of buf.len() bytes; read writes at most that.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One thing [`Lines`] has for its reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its newline.
    Line(Vec<u8>),
    /// What came after the last newline when the input ended (never empty).
    Last(Vec<u8>),
    /// More than the limit without a newline; what was read is dropped.
    TooLong,
    /// The input ended.
    End,
}

/// Lines from a descriptor as they arrive, bounded: at most `max` bytes a line. Fed by
/// [`Lines::fill`] when the descriptor is readable (so that it can be waited on with
/// others), or by [`Lines::next_within`] alone.
pub struct Lines<'a> {
    fd: BorrowedFd<'a>,
    buf: Vec<u8>,
    max: usize,
    ended: bool,
}

impl<'a> Lines<'a> {
    pub fn new(fd: BorrowedFd<'a>, max: usize) -> Lines<'a> {
        Lines {
            fd,
            buf: Vec::new(),
            max,
            ended: false,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'a> {
        self.fd
    }

    /// True once the input ended and every line was taken.
    pub fn is_done(&self) -> bool {
        self.ended && self.buf.is_empty()
    }

    /// Read what the descriptor holds now (one read: call it when it is readable).
    pub fn fill(&mut self) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        let data = read_some(self.fd, self.max + 1)?;
        if data.is_empty() {
            self.ended = true;
        }
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    /// The next line already read, if there is one (`None`: wait and fill).
    pub fn take(&mut self) -> Option<Line> {
        if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            if i > self.max {
                self.buf.drain(..=i);
                return Some(Line::TooLong);
            }
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            return Some(Line::Line(line));
        }
        if self.buf.len() > self.max {
            self.buf.clear();
            return Some(Line::TooLong);
        }
        if self.ended {
            return Some(if self.buf.is_empty() {
                Line::End
            } else {
                Line::Last(std::mem::take(&mut self.buf))
            });
        }
        None
    }

    /// The next line, waiting for it until `until`; `Ok(None)` when the time is up.
    pub fn next_within(&mut self, until: std::time::Instant) -> io::Result<Option<Line>> {
        loop {
            if let Some(l) = self.take() {
                return Ok(Some(l));
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if readable(&[self.fd], Some(left))?[0] {
                self.fill()?;
            }
        }
    }
}

/// What a [`DirWatch`] saw since it was last asked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Names (in the watched directory) written, renamed into place or removed.
    pub names: Vec<OsString>,
    /// The kernel's queue overflowed: anything may have changed.
    pub overflowed: bool,
}

impl Changes {
    /// True when `name` may have changed.
    pub fn touches(&self, name: &str) -> bool {
        self.overflowed || self.names.iter().any(|n| n.as_bytes() == name.as_bytes())
    }
}

/// An inotify watch on one directory: files written and closed, renamed into it, or
/// removed from it (an atomic write is a rename, so it shows up once, complete).
#[derive(Debug)]
pub struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    /// Watch `dir` (needs read permission on it). Fails where inotify is missing or
    /// its limits are reached; the caller then looks at the files now and then.
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor inotify_init1 just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut path = dir.as_os_str().as_bytes().to_vec();
        if path.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"));
        }
        path.push(0);
        let mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONLYDIR
            | libc::IN_DONT_FOLLOW;
        // SAFETY: a live inotify descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr().cast(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirWatch { fd })
    }

    /// Drain what the kernel queued (never blocks). A directory that went away
    /// (removed or renamed) counts as an overflow: look at everything.
    pub fn changes(&self) -> io::Result<Changes> {
        let mut out = Changes::default();
        loop {
            let data = match read_some(self.fd.as_fd(), 16 * 1024) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) => return Err(e),
            };
            if data.is_empty() {
                return Ok(out);
            }
            parse_events(&data, &mut out);
        }
    }
}

impl AsFd for DirWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The records of one inotify read: a fixed header (wd, mask, cookie, len) and `len`
/// bytes of NUL-padded name.
fn parse_events(data: &[u8], out: &mut Changes) {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut at = 0;
    while at + HEADER <= data.len() {
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&data[at + 4 * i..at + 4 * i + 4]);
            u32::from_ne_bytes(b)
        };
        let mask = word(1);
        let len = word(3) as usize;
        let name_end = (at + HEADER + len).min(data.len());
        let name = &data[at + HEADER..name_end];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        let gone =
            libc::IN_Q_OVERFLOW | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED;
        if mask & gone != 0 {
            out.overflowed = true;
        } else if !name.is_empty() {
            out.names.push(OsString::from_vec(name.to_vec()));
        }
        at = name_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_watch_sees_atomic_writes_and_removals() {
        let t = crate::tempdir::TempDir::new("watch");
        let w = DirWatch::new(t.path()).unwrap();
        assert_eq!(w.changes().unwrap(), Changes::default());
        let ready = readable(&[w.as_fd()], Some(Duration::from_millis(20))).unwrap();
        assert_eq!(ready, [false], "nothing happened yet");
        crate::files::write(&t.join("a.json"), b"{}", 0o644, false).unwrap();
        assert_eq!(
            readable(&[w.as_fd()], Some(Duration::from_secs(5))).unwrap(),
            [true]
        );
        let c = w.changes().unwrap();
        assert!(c.touches("a.json") && !c.touches("b.json"), "{:?}", c);
        std::fs::remove_file(t.join("a.json")).unwrap();
        readable(&[w.as_fd()], Some(Duration::from_secs(5))).unwrap();
        assert!(w.changes().unwrap().touches("a.json"));
        assert!(DirWatch::new(&t.join("missing")).is_err());
    }

    #[test]
    fn reads_what_is_there_and_sees_the_end() {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        (&w).write_all(b"line\n").unwrap();
        let start = Instant::now();
        assert_eq!(readable(&[r.as_fd()], None).unwrap(), [true]);
        assert_eq!(read_some(r.as_fd(), 3).unwrap(), b"lin");
        assert_eq!(read_some(r.as_fd(), 100).unwrap(), b"e\n");
        drop(w);
        assert_eq!(
            readable(&[r.as_fd()], None).unwrap(),
            [true],
            "the end is readable"
        );
        assert!(read_some(r.as_fd(), 100).unwrap().is_empty());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn lines_are_bounded_and_end_with_the_input() {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        let mut lines = Lines::new(r.as_fd(), 8);
        let soon = || Instant::now() + Duration::from_millis(50);
        assert_eq!(lines.next_within(soon()).unwrap(), None, "nothing yet");
        (&w).write_all(b"one\ntwo").unwrap();
        assert_eq!(
            lines.next_within(soon()).unwrap(),
            Some(Line::Line(b"one".to_vec()))
        );
        assert_eq!(
            lines.next_within(soon()).unwrap(),
            None,
            "two has no newline yet"
        );
        (&w).write_all(b"\n0123456789\nlast").unwrap();
        assert_eq!(
            lines.next_within(soon()).unwrap(),
            Some(Line::Line(b"two".to_vec()))
        );
        assert_eq!(lines.next_within(soon()).unwrap(), Some(Line::TooLong));
        drop(w);
        assert_eq!(
            lines.next_within(soon()).unwrap(),
            Some(Line::Last(b"last".to_vec()))
        );
        assert_eq!(lines.next_within(soon()).unwrap(), Some(Line::End));
        assert!(lines.is_done());
    }

    #[test]
    fn event_records_are_parsed_by_their_lengths() {
        let mut data = Vec::new();
        let mut rec = |mask: u32, name: &[u8], pad: usize| {
            for w in [1u32, mask, 0, (name.len() + pad) as u32] {
                data.extend_from_slice(&w.to_ne_bytes());
            }
            data.extend_from_slice(name);
            data.extend(std::iter::repeat(0).take(pad));
        };
        rec(libc::IN_MOVED_TO, b"x.json", 10);
        rec(libc::IN_CLOSE_WRITE, b"y", 3);
        let mut c = Changes::default();
        parse_events(&data, &mut c);
        assert_eq!(c.names, [OsString::from("x.json"), OsString::from("y")]);
        assert!(!c.overflowed);
        let mut o = Vec::new();
        for w in [u32::MAX, libc::IN_Q_OVERFLOW, 0, 0] {
            o.extend_from_slice(&w.to_ne_bytes());
        }
        parse_events(&o, &mut c);
        assert!(c.overflowed && c.touches("anything"));
    }
}
