//! The only place with `unsafe`: thin wrappers over the few libc calls std does not
//! offer (getuid, flock, kill, localtime_r). Each call is a plain syscall or libc
//! function taking plain integers or a pointer to a local, so the wrappers are safe.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::io::AsRawFd;

/// The real uid of this process: who the gate runs as (never what the client says).
pub fn getuid() -> u32 {
    // SAFETY: getuid has no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}

/// The effective uid: the commands that create accounts need root.
pub fn geteuid() -> u32 {
    // SAFETY: as getuid.
    unsafe { libc::geteuid() }
}

/// Take an exclusive flock on an open file, waiting for it.
pub fn flock_exclusive(file: &std::fs::File) -> io::Result<()> {
    loop {
        // SAFETY: the fd is valid for the life of `file`, borrowed for this call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Send `sig` to `pid`. Refuses pid <= 0 (process groups, "everyone").
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing pid <= 0",
        ));
    }
    // SAFETY: kill takes two integers; pid > 0 names exactly one process.
    let r = unsafe { libc::kill(pid, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGKILL: i32 = libc::SIGKILL;

/// Offset of local time from UTC (seconds east) at Unix time `t`, from the system's
/// time zone (TZ, /etc/localtime). Syslog timestamps are local time without a zone.
pub fn local_offset(t: i64) -> i64 {
    let tt: libc::time_t = t as libc::time_t;
    // SAFETY: tm is a plain C struct; all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers point to live locals for the duration of the call;
    // localtime_r is the thread-safe variant and writes only into `tm`.
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    if r.is_null() {
        0
    } else {
        tm.tm_gmtoff
    }
}
