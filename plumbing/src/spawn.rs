//! Start a child the way posix_spawn(3) does, with `clone(CLONE_VM | CLONE_VFORK)`
//! instead of fork(2), plus the one thing posix_spawn cannot do: `PR_SET_PDEATHSIG` in
//! the child, so that the poll's ssh dies with an agent killed outright (THREATS 18).
//!
//! Why not std's `Command::spawn`: it uses posix_spawn only while no `pre_exec` hook is
//! set, and falls back to fork(2) for the hook that sets the death signal. fork copies
//! the parent's page tables, marks its pages copy-on-write and flushes the TLBs of the
//! other cores with IPIs; on the 2-core bench machine that was the largest single item
//! of the agent's own CPU per poll (`perf record`, about 8 %); agent/README.md ("Cost of
//! one poll") has what leaving it out saves.
//!
//! The child shares the parent's memory until it execs, and the parent is suspended
//! until then: the child runs only async-signal-safe system calls on a stack of its
//! own, on data prepared beforehand, and reports a failure by writing its errno to a
//! close-on-exec pipe before `_exit` (a pipe, not the shared memory: qemu-user, which
//! runs the router builds in the tests, turns CLONE_VFORK into a plain fork). Signals are blocked across the clone and the child resets
//! every caught signal to its default before unblocking, so no handler of the parent
//! runs in it (what glibc's and musl's posix_spawn do).
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::Command;

/// The child's stack until it execs: its one function and the system calls it makes.
const CHILD_STACK: usize = 64 * 1024;

/// A child just started: its pid (to be reaped by the caller) and the parent's ends of
/// its stdin, stdout and stderr pipes (close-on-exec).
pub struct Child {
    pub pid: u32,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Everything the child needs, prepared by the parent: the child must not allocate.
struct Plan {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The child's ends of the three pipes, all above 2, to become its 0, 1 and 2.
    stdio: [RawFd; 3],
    parent: libc::pid_t,
    /// The signal mask to restore in the child before exec.
    mask: libc::sigset_t,
    /// The highest signal number (64, or 128 on MIPS), asked of libc by the parent.
    last_signal: libc::c_int,
    /// Where the child writes the errno of the step that failed (close-on-exec: the
    /// parent reads end of file once the child has exec'd).
    report: RawFd,
}

/// Start `cmd`'s program with its arguments and environment changes (`env`,
/// `env_remove`; not `env_clear`, which std does not let us see, nor `current_dir` or
/// stdio settings: the child always gets three pipes) in a process group of its own,
/// killed by the kernel when the calling thread exits. The program is a path (no `PATH`
/// search: the agent finds its client itself); `InvalidInput` for a bare name, a
/// directory change, or a NUL byte in an argument.
pub fn spawn_tied(cmd: &Command) -> io::Result<Child> {
    let program = cmd.get_program();
    if cmd.get_current_dir().is_some() || !program.as_bytes().contains(&b'/') {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let args = c_strings(
        std::iter::once(program)
            .chain(cmd.get_args())
            .map(|a| a.as_bytes().to_vec()),
    )?;
    let vars = c_strings(child_env(cmd))?;
    let (stdin_child, stdin) = pipe()?;
    let (stdout, stdout_child) = pipe()?;
    let (stderr, stderr_child) = pipe()?;
    let (report, report_child) = pipe()?;
    let mut plan = Plan {
        path: c_string(program.as_bytes().to_vec())?,
        argv: nul_terminated(&args),
        envp: nul_terminated(&vars),
        stdio: [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        // SAFETY: getpid has no memory effects.
        parent: unsafe { libc::getpid() },
        // SAFETY: sigset_t is plain data, filled in by pthread_sigmask below.
        mask: unsafe { std::mem::zeroed() },
        last_signal: libc::SIGRTMAX(),
        report: report_child.as_raw_fd(),
    };
    let pid = clone_child(&mut plan)?;
    drop((stdin_child, stdout_child, stderr_child, report_child));
    // Four bytes if the child failed before exec; end of file once it has exec'd.
    let mut errno = [0u8; 4];
    let got = read_full(&report, &mut errno);
    if got != 0 {
        crate::process::wait_pid(pid)?;
        let errno = if got == 4 {
            libc::c_int::from_ne_bytes(errno)
        } else {
            libc::EIO
        };
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(Child {
        pid,
        stdin,
        stdout,
        stderr,
    })
}

/// The parent's environment with `cmd`'s changes, as `NAME=value` strings.
fn child_env(cmd: &Command) -> impl Iterator<Item = Vec<u8>> + '_ {
    let changed = |k: &OsStr| cmd.get_envs().any(|(c, _)| c == k);
    let kept = std::env::vars_os().filter(move |(k, _)| !changed(k));
    let set = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())));
    kept.chain(set).map(|(k, v)| {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        kv
    })
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn c_strings(items: impl Iterator<Item = Vec<u8>>) -> io::Result<Vec<CString>> {
    items.map(c_string).collect()
}

fn nul_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec pipe (read end, write end), both descriptors above 2 so that the
/// child's dup2 onto 0, 1 and 2 cannot overwrite one it has yet to move.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe2(libc::O_CLOEXEC)?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// pipe2(2) with `flags`: (read end, write end). The one place phonehome makes a pipe.
pub(crate) fn pipe2(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made by pipe2 and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, which we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Read until `buf` is full or end of file (retried on EINTR); how many bytes came.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: read writes at most the rest of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    got
}

/// The child's end: the errno of the step that failed, to the parent, then `_exit`.
///
/// # Safety
/// Only in the child, on the parent's `Plan`.
unsafe fn fail(plan: &Plan) -> ! {
    // SAFETY: errno is the child's (its thread pointer is the parent's, and the parent
    // is suspended); write and _exit are system calls, and _exit runs nothing of the
    // parent's.
    unsafe {
        let mut errno = *libc::__errno_location();
        if errno == 0 {
            errno = libc::EINVAL;
        }
        let bytes = errno.to_ne_bytes();
        libc::write(plan.report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// Clone the child onto a stack of its own, with every signal blocked around it.
fn clone_child(plan: &mut Plan) -> io::Result<u32> {
    // SAFETY: an anonymous private mapping, unmapped below; the child uses it only
    // until it execs or exits, which CLONE_VFORK waits for.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            CHILD_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask fill it in.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut plan.mask);
        // The stack grows down on every CPU Linux runs phonehome on: start at its top.
        let top = stack.cast::<u8>().add(CHILD_STACK).cast::<libc::c_void>();
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (plan as *mut Plan).cast::<libc::c_void>(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &plan.mask, std::ptr::null_mut());
        libc::munmap(stack, CHILD_STACK);
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    Ok(pid as u32)
}

/// The child, until execve. Only async-signal-safe calls, no allocation, no unwinding.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's Plan, alive and untouched while the parent is
    // suspended (CLONE_VFORK); every call below is a plain system call.
    unsafe {
        let plan = &*arg.cast::<Plan>();
        // No handler of the parent may run here: caught signals back to their default.
        for sig in 1..=plan.last_signal {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::pthread_sigmask(libc::SIG_SETMASK, &plan.mask, std::ptr::null_mut()) != 0 {
            fail(plan);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(plan);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(plan);
        }
        // The parent may have been killed before prctl took effect.
        if libc::getppid() != plan.parent {
            libc::_exit(1);
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(plan);
            }
        }
        libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        fail(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{wait_pid, Limits, Session};
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    const LIMITS: Limits = Limits {
        timeout: Duration::from_secs(20),
        max_stdout: 4096,
        max_stderr: 4096,
    };

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_tied_child_gets_its_args_env_pipes_and_a_group_of_its_own() {
        let mut cmd = sh(
            "read l; echo \"$l $PHONEHOME_T\" \"$0\"; echo $$; cut -d' ' -f5 /proc/$$/stat; \
             echo oops >&2; exit 3",
        );
        cmd.env("PHONEHOME_T", "set");
        let mut s = Session::start_tied(&cmd, &LIMITS).unwrap();
        s.send(b"hello\n");
        let out = s.finish().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "hello set /bin/sh", "{}", text);
        assert_eq!(lines[1], lines[2], "its own process group: {}", text);
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.unwrap().code(), Some(3));
    }

    #[test]
    fn a_tied_child_has_the_signal_mask_of_its_parent_not_the_spawns() {
        // exec keeps the mask, and the spawn blocks every signal around the clone. grep
        // reads its own, untouched (a shell would reset it).
        let mut cmd = Command::new("/bin/grep");
        cmd.args(["^SigBlk", "/proc/self/status"]);
        let out = Session::start_tied(&cmd, &LIMITS)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(out.stdout, b"SigBlk:\t0000000000000000\n");
    }

    #[test]
    fn a_child_that_cannot_start_is_an_error_of_the_spawn() {
        let e = spawn_tied(&Command::new("/nonexistent/phonehome-x"))
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{}", e);
        let dir = crate::tempdir::TempDir::new("spawn-noexec");
        let file = dir.path().join("not-executable");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let e = spawn_tied(&Command::new(&file)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{}", e);
        let mut in_dir = Command::new("/bin/true");
        in_dir.current_dir("/");
        let e = spawn_tied(&in_dir).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{}", e);
        let e = spawn_tied(&Command::new("true")).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "a bare name: {}", e);
    }

    #[test]
    fn a_tied_child_is_killed_when_the_thread_that_started_it_exits() {
        let pid = std::thread::spawn(|| {
            let s = Session::start_tied(&sh("exec sleep 30"), &LIMITS).unwrap();
            let pid = s.pid();
            // Not killed by the session's Drop: left to the kernel.
            std::mem::forget(s);
            pid
        })
        .join()
        .unwrap();
        let status = wait_pid(pid).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{:?}", status);
    }

    #[test]
    fn the_child_env_is_the_parents_with_the_commands_changes() {
        let mut cmd = Command::new("true");
        cmd.env("PHONEHOME_SPAWN_TEST", "1").env_remove("PATH");
        let env: Vec<Vec<u8>> = child_env(&cmd).collect();
        assert!(env.contains(&b"PHONEHOME_SPAWN_TEST=1".to_vec()));
        assert!(!env.iter().any(|kv| kv.starts_with(b"PATH=")));
        assert!(
            env.iter().any(|kv| kv.starts_with(b"HOME=")),
            "the rest is kept"
        );
    }
}
