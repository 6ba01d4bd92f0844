//! The only module that talks to libc directly: flock, signals, setsid and the
//! parent-death signal. Everything unsafe in the agent lives here, small and commented,
//! so that the rest of the crate stays free of it (`deny(unsafe_code)` in main.rs).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Try to take an exclusive lock on `file` without waiting. `Ok(false)` when another
/// process holds it. The kernel drops the lock when the holder dies, so a killed run
/// never blocks the next one.
pub fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock only reads the descriptor number; `file` keeps it open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Take an exclusive lock on `file`, waiting for the holder to release it.
pub fn lock(file: &File) -> io::Result<()> {
    // SAFETY: as in `try_lock`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Send `sig` to process `pid`. Refuses pids that would address groups or everyone.
pub fn kill(pid: u32, sig: i32) -> io::Result<()> {
    let pid = checked_pid(pid)?;
    // SAFETY: kill has no memory effects; pid is a single positive process id.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Send `sig` to every process of group `pgid`.
pub fn kill_group(pgid: u32, sig: i32) -> io::Result<()> {
    let pgid = checked_pid(pgid)?;
    // SAFETY: killpg has no memory effects; pgid is positive (never 0 = our own group).
    if unsafe { libc::killpg(pgid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn checked_pid(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 1 => Ok(p),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {}", pid),
        )),
    }
}

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGKILL: i32 = libc::SIGKILL;

/// Make the child die with SIGKILL when the thread that spawned it goes away (a killed
/// agent must not leave its poll ssh behind). Call from the main thread: Linux sends the
/// signal when the spawning *thread* exits.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid/getppid/prctl/_exit are async-signal-safe and touch no memory of
    // the parent; the closure captures only a plain integer.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Start the child in a session of its own, so that it outlives the tick that started
/// it and no terminal signal (hangup, ^C) reaches it.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
