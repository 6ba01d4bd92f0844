//! Processes: who we are, signals that cannot hit a reused pid, what `/proc` says about
//! a process, and the one runner every child process of phonehome goes through.
//!
//! Signals go through a pidfd ([`Handle`], Linux >= 5.3, which every supported OpenWrt
//! runs): once the handle is open and the process checked, a signal reaches that
//! process or none. On older kernels the handle falls back to the pid, checked against
//! its start time just before each signal (a pid reused in that instant could still be
//! hit). Killing by uid is done by a child that takes the uid and signals -1: the
//! kernel then reaches exactly the processes of that uid, with no pid list to go stale.
//!
//! [`run`] starts a child in a process group of its own, feeds and closes its stdin,
//! keeps at most so much of its stdout and stderr, kills the whole group at a deadline
//! or when stdout overflows, and always reaps it. It waits with poll(2) on the pipes
//! and a pidfd, without threads or sleeps, and kills stragglers of the group before
//! reaping the leader so that the group id cannot have been reused. [`Session`] is the
//! same runner driven step by step (a held poll: stdin written while the child runs,
//! stdout taken frame by frame, other descriptors waited on in the same poll, a
//! deadline that moves); `run` is a session fed once and finished.
//!
//! [`notify_on`] turns a signal into a byte on a pipe, so that a process waiting in
//! poll(2) hears it with the rest (a held poll asked to end by the next cron tick).
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGKILL: i32 = libc::SIGKILL;
pub const SIGUSR1: i32 = libc::SIGUSR1;

/// How long a finished child's pipes may stay open (held by something it left behind)
/// before its process group is killed.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Wake-up interval when the kernel has no pidfd to wait on.
const FALLBACK_TICK: Duration = Duration::from_millis(50);

/// The real uid of this process.
pub fn getuid() -> u32 {
    // SAFETY: getuid has no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: as getuid.
    unsafe { libc::geteuid() }
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

fn cvt(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Send `sig` to every process of group `pgid` (never 0 or 1: our own group, init).
pub fn kill_group(pgid: u32, sig: i32) -> io::Result<()> {
    let pgid = checked_pid(pgid)?;
    // SAFETY: killpg takes two integers and has no memory effects.
    cvt(unsafe { libc::killpg(pgid, sig) } as libc::c_long).map(drop)
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    /// Field 22: clock ticks after boot when it started. With the pid, it names one
    /// process for the whole life of the system.
    pub start_time: u64,
}

impl Stat {
    /// Gone for every purpose: a zombie or dead.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
    /// Stopped by a signal (SIGSTOP) or a tracer.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// The state and start time of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = crate::files::read_kernel_text(format!("/proc/{}/stat", pid)).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some(Stat {
        state,
        start_time: fields.nth(18)?.parse().ok()?,
    })
}

/// The argv of `pid` as `/proc/<pid>/cmdline` shows it.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let data = std::fs::read(format!("/proc/{}/cmdline", pid)).ok()?;
    Some(split_nul(&data))
}

/// One variable of `pid`'s initial environment (readable for our own processes).
pub fn environ_var(pid: u32, name: &str) -> Option<String> {
    let data = std::fs::read(format!("/proc/{}/environ", pid)).ok()?;
    split_nul(&data)
        .into_iter()
        .find_map(|kv| kv.strip_prefix(&format!("{}=", name)).map(str::to_string))
}

fn split_nul(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Every pid in `/proc` (processes, not threads).
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Pids of the processes whose real uid is `uid` (this process excluded).
pub fn pids_of_uid(uid: u32) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{}/status", pid))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))?
                        .split_whitespace()
                        .next()?
                        .parse::<u32>()
                        .ok()
                })
                == Some(uid)
        })
        .collect()
}

/// Send `sig` to every process of `uid` (and `gid`): a child takes that uid and calls
/// kill(-1), which reaches exactly the processes that uid may signal, itself excepted.
/// Refuses uid 0.
pub fn kill_uid(uid: u32, gid: u32, sig: i32) -> io::Result<()> {
    if uid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal every process of uid 0",
        ));
    }
    let mut cmd = Command::new("/bin/true");
    cmd.uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child after std has dropped to `uid`;
    // kill and _exit are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            libc::kill(-1, sig);
            libc::_exit(0)
        });
    }
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the child that signals uid {} failed: {}",
            uid, status
        )))
    }
}

/// A process to signal: its pidfd when the kernel has them, else its pid and start time.
#[derive(Debug)]
pub struct Handle {
    pid: u32,
    start_time: u64,
    fd: Option<OwnedFd>,
}

impl Handle {
    /// Open a handle on `pid`. `NotFound` if it does not exist. Check the process
    /// (its [`stat`], [`cmdline`]) *after* opening: what was checked then is what the
    /// handle signals.
    pub fn open(pid: u32) -> io::Result<Handle> {
        let p = checked_pid(pid)?;
        let gone = || io::Error::new(io::ErrorKind::NotFound, format!("no process {}", pid));
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
        let fd = match cvt(rc) {
            // SAFETY: a successful pidfd_open returns a descriptor nobody else owns.
            Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(gone()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
            Err(e) => return Err(e),
        };
        let start_time = stat(pid).ok_or_else(gone)?.start_time;
        Ok(Handle {
            pid,
            start_time,
            fd,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time of the process this handle names.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// The pidfd, readable once the process has exited (to wait on it with others);
    /// `None` on kernels without pidfds.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Send `sig`. `NotFound` when the process is gone.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        let rc = match &self.fd {
            // SAFETY: a live pidfd, a signal number, no siginfo, no flags.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            None => {
                if self.has_exited() {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // SAFETY: kill takes two integers; the pid was checked just above.
                unsafe { libc::kill(self.pid as libc::pid_t, sig) as libc::c_long }
            }
        };
        match cvt(rc) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                Err(io::Error::new(io::ErrorKind::NotFound, e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// True once the process has exited (zombie or reaped).
    pub fn has_exited(&self) -> bool {
        match &self.fd {
            Some(fd) => poll_readable(fd.as_raw_fd(), Duration::ZERO),
            None => stat(self.pid).map_or(true, |s| s.start_time != self.start_time || s.is_dead()),
        }
    }

    /// Wait up to `limit` for the process to exit; true if it did.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match &self.fd {
                Some(fd) => {
                    if poll_readable(fd.as_raw_fd(), left) || self.has_exited() {
                        return true;
                    }
                }
                None if self.has_exited() => return true,
                None => std::thread::sleep(left.min(FALLBACK_TICK)),
            }
            if left.is_zero() {
                return self.has_exited();
            }
        }
    }
}

/// poll(2) one descriptor for input (a pidfd is readable once its process exited).
fn poll_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    crate::watch::poll(&mut p, Some(timeout)).is_ok_and(|n| n > 0)
}

/// Make `cmd`'s child die with SIGKILL when the thread that spawned it goes away (a
/// killed agent must not leave its poll behind). Linux sends the signal when the
/// spawning *thread* exits: call it from the main thread.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid has no memory effects.
    let parent = unsafe { libc::getpid() };
    // SAFETY: prctl, getppid and _exit are async-signal-safe and touch no memory of
    // the parent; the closure captures a plain integer.
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

/// Start `cmd`'s child in a session of its own, so that it outlives the process that
/// started it and no terminal signal (hangup, ^C) reaches it.
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

/// The write ends of the pipes [`notify_on`] made, by signal number (-1: none).
#[allow(clippy::declare_interior_mutable_const)]
const NO_PIPE: AtomicI32 = AtomicI32::new(-1);
static NOTIFY: [AtomicI32; 65] = [NO_PIPE; 65];

extern "C" fn on_notified_signal(sig: libc::c_int) {
    let fd = usize::try_from(sig)
        .ok()
        .and_then(|i| NOTIFY.get(i))
        .map_or(-1, |a| a.load(Ordering::Relaxed));
    if fd >= 0 {
        // SAFETY: write(2) and errno are async-signal-safe; errno is restored so the
        // interrupted code never sees ours. A full pipe just drops the byte: one is
        // enough to wake the reader.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, b"!".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// From now on `sig` no longer ends this process: each time it arrives a byte is
/// written to a pipe, whose read end (non-blocking) comes back, to be waited on with
/// everything else (`watch::readable`) and drained with `watch::read_some`. Once per
/// signal per process.
pub fn notify_on(sig: i32) -> io::Result<OwnedFd> {
    let slot = usize::try_from(sig)
        .ok()
        .and_then(|i| NOTIFY.get(i))
        .filter(|_| sig > 0 && sig != libc::SIGKILL && sig != libc::SIGSTOP)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "signal cannot be caught"))?;
    let (read, write) = crate::spawn::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
    if slot
        .compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "this signal already has a pipe",
        ));
    }
    // The write end lives as long as the process: the handler may run at any time.
    std::mem::forget(write);
    // SAFETY: a zeroed sigaction is valid; we set the handler and an empty mask, and
    // sigaction only reads it.
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_notified_signal as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(read)
}

/// A command line for messages, shell-quoted (never executed).
pub fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| crate::text::shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bounds of one [`run`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Kill the process group past this.
    pub timeout: Duration,
    /// Most stdout kept; past it the group is killed and `stdout_overflow` set.
    pub max_stdout: usize,
    /// Most stderr kept; the rest is read and dropped.
    pub max_stderr: usize,
}

/// What came out of one [`run`].
#[derive(Debug)]
pub struct Output {
    /// `None` when it was killed (timeout or overflow).
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    /// It wrote more than `max_stdout`: it was killed, `stdout` holds the first bytes.
    pub stdout_overflow: bool,
}

/// Why a command did not succeed, as data; `Display` names the command and its stderr.
#[derive(Debug)]
pub struct CommandError {
    /// The command line, shell-quoted.
    pub command: String,
    pub kind: CommandErrorKind,
}

#[derive(Debug)]
pub enum CommandErrorKind {
    /// It could not be started.
    Spawn(io::Error),
    /// It ran past its deadline and was killed.
    TimedOut(Duration),
    /// It exited unsuccessfully; `stderr` is its last words, cleaned for a terminal.
    Exited { status: ExitStatus, stderr: String },
}

impl CommandError {
    /// The exit code, when it exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match &self.kind {
            CommandErrorKind::Exited { status, .. } => status.code(),
            _ => None,
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            CommandErrorKind::Spawn(e) => write!(f, "cannot run `{}`: {}", self.command, e),
            CommandErrorKind::TimedOut(t) => write!(
                f,
                "`{}` did not finish within {} s and was killed",
                self.command,
                t.as_secs()
            ),
            CommandErrorKind::Exited { status, stderr } if stderr.is_empty() => {
                write!(f, "`{}` failed ({})", self.command, status)
            }
            CommandErrorKind::Exited { status, stderr } => {
                write!(f, "`{}` failed ({}): {}", self.command, status, stderr)
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// A child whose stdout is read as a stream (`journalctl` on gigabytes of log): stdin
/// closed, stderr kept (bounded) by a thread, the child always reaped — by
/// [`Streaming::finish`], or killed and reaped when dropped unfinished.
pub struct Streaming {
    child: Child,
    command: String,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// Its standard output.
    pub stdout: std::process::ChildStdout,
}

/// Start `cmd` with its stdout to read; its stderr, up to `max_stderr` bytes, comes
/// back with [`Streaming::finish`].
pub fn stream(cmd: &mut Command, max_stderr: usize) -> Result<Streaming, CommandError> {
    let command = render(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CommandError {
            command: command.clone(),
            kind: CommandErrorKind::Spawn(e),
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut err).take(max_stderr as u64).read_to_end(&mut kept);
        let _ = std::io::copy(&mut err, &mut std::io::sink());
        kept
    });
    Ok(Streaming {
        child,
        command,
        stderr: Some(stderr),
        stdout,
    })
}

impl Streaming {
    /// Wait for the child; an unsuccessful exit is an error with its stderr.
    pub fn finish(mut self) -> Result<(), CommandError> {
        let status = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let stderr = crate::text::for_terminal(String::from_utf8_lossy(&stderr).trim(), 400)
            .replace('\n', "; ");
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(status) => Err(CommandError {
                command: self.command.clone(),
                kind: CommandErrorKind::Exited { status, stderr },
            }),
            Err(e) => Err(CommandError {
                command: self.command.clone(),
                kind: CommandErrorKind::Spawn(e),
            }),
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` within `limits`; success or a [`CommandError`] naming it and its stderr.
pub fn run_checked(
    cmd: &mut Command,
    stdin: &[u8],
    limits: &Limits,
) -> Result<Output, CommandError> {
    let command = render(cmd);
    let out = run(cmd, stdin, limits).map_err(|e| CommandError {
        command: command.clone(),
        kind: CommandErrorKind::Spawn(e),
    })?;
    match out.status {
        Some(s) if s.success() => Ok(out),
        Some(status) => Err(CommandError {
            command,
            kind: CommandErrorKind::Exited {
                status,
                stderr: crate::text::for_terminal(String::from_utf8_lossy(&out.stderr).trim(), 400)
                    .replace('\n', "; "),
            },
        }),
        None => Err(CommandError {
            command,
            kind: CommandErrorKind::TimedOut(limits.timeout),
        }),
    }
}

/// Run `cmd` with `stdin` written then closed, in a process group of its own, within
/// `limits`. The child is always reaped before this returns.
pub fn run(cmd: &mut Command, stdin: &[u8], limits: &Limits) -> io::Result<Output> {
    let mut s = Session::start(cmd, limits)?;
    s.send(stdin);
    s.close_stdin();
    s.finish()
}

/// What [`Session::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// New bytes arrived on stdout (see [`Session::stdout`]), or stdout ended.
    Output,
    /// The descriptor `also[i]` of the call became readable.
    Ready(usize),
    /// The time the caller gave passed.
    Timeout,
    /// The child is gone and its pipes are closed (or it was killed): call `finish`.
    Done,
}

/// A child run as [`run`] runs it, but driven step by step: its stdin fed at any time
/// and closed when the caller says, its stdout taken as it arrives (a held poll reads
/// the gate's frames while the session goes on), and other descriptors waited on in
/// the same poll(2). The deadline (kill of the whole group) can be moved. The child is
/// always reaped: by [`Session::finish`], or killed and reaped when dropped.
pub struct Session {
    w: Watch,
}

impl Session {
    /// Start `cmd` with piped stdin, stdout and stderr in a process group of its own;
    /// it is killed `limits.timeout` from now unless the deadline is moved.
    pub fn start(cmd: &mut Command, limits: &Limits) -> io::Result<Session> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let pipes = [
            child.stdin.take().map(OwnedFd::from),
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
        ];
        Session::watch(child.id(), pipes, limits)
    }

    /// [`Session::start`], with the child also killed by the kernel when the calling
    /// thread exits (a killed agent leaves no poll behind), and started without fork(2):
    /// see [`crate::spawn::spawn_tied`] for what of `cmd` it takes.
    pub fn start_tied(cmd: &Command, limits: &Limits) -> io::Result<Session> {
        let child = crate::spawn::spawn_tied(cmd)?;
        let pipes = [Some(child.stdin), Some(child.stdout), Some(child.stderr)];
        Session::watch(child.pid, pipes, limits)
    }

    /// Watch the child `pid` through the parent's ends of its stdin, stdout and stderr;
    /// killed and reaped if that cannot start.
    fn watch(
        pid: u32,
        [stdin, stdout, stderr]: [Option<OwnedFd>; 3],
        limits: &Limits,
    ) -> io::Result<Session> {
        let w = (|| -> io::Result<Watch> {
            Ok(Watch {
                pid,
                pidfd: Handle::open(pid).ok().and_then(|h| h.fd),
                deadline: Instant::now() + limits.timeout,
                input: Input {
                    fd: owned(stdin)?,
                    queue: Vec::new(),
                    closing: false,
                },
                out: Pipe::new(owned(stdout)?, limits.max_stdout),
                err: Pipe::new(owned(stderr)?, limits.max_stderr),
                exited_at: None,
                killed: false,
                timed_out: false,
                reaped: false,
            })
        })();
        match w {
            Ok(w) => Ok(Session { w }),
            Err(e) => {
                let _ = kill_group(pid, SIGKILL);
                let _ = wait_pid(pid);
                Err(e)
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.w.pid
    }

    /// Queue `data` for the child's stdin (dropped if stdin is already closed).
    pub fn send(&mut self, data: &[u8]) {
        if self.w.input.fd.is_some() && !self.w.input.closing {
            self.w.input.queue.extend_from_slice(data);
        }
    }

    /// Close the child's stdin once what is queued has been written.
    pub fn close_stdin(&mut self) {
        self.w.input.closing = true;
        self.w.input.write();
    }

    /// True while stdin is open and not asked to close.
    pub fn stdin_open(&self) -> bool {
        self.w.input.fd.is_some() && !self.w.input.closing
    }

    /// Kill the group at `at` instead (sooner or later than the limit it started with).
    pub fn set_deadline(&mut self, at: Instant) {
        self.w.deadline = at;
    }

    /// The stdout received and not yet taken; the caller removes what it consumed.
    /// Past `limits.max_stdout` of it, the group is killed (`stdout_overflow`).
    pub fn stdout(&mut self) -> &mut Vec<u8> {
        &mut self.w.out.kept
    }

    /// True once stdout has ended.
    pub fn stdout_closed(&self) -> bool {
        self.w.out.fd.is_none()
    }

    /// Move stdin, stdout and stderr along until something the caller cares about
    /// happens: output, one of `also` readable, `until` passed, or the end.
    pub fn wait(&mut self, until: Instant, also: &[BorrowedFd<'_>]) -> io::Result<Event> {
        loop {
            let now = Instant::now();
            if !self.w.go_on(now) {
                return Ok(Event::Done);
            }
            if now >= until {
                return Ok(Event::Timeout);
            }
            let ready = self.w.wait(now, until, also)?;
            let before = (self.w.out.kept.len(), self.w.out.fd.is_some());
            self.w.out.read()?;
            self.w.err.read()?;
            self.w.input.write();
            if let Some(i) = ready {
                return Ok(Event::Ready(i));
            }
            if (self.w.out.kept.len(), self.w.out.fd.is_some()) != before {
                return Ok(Event::Output);
            }
        }
    }

    /// Close stdin, wait for the end (the deadline still applies), reap the child and
    /// return what it left: exit status, stdout not taken, stderr.
    pub fn finish(mut self) -> io::Result<Output> {
        self.close_stdin();
        let result = loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            match self.wait(far, &[]) {
                Ok(Event::Done) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.reap(result)
    }

    fn reap(&mut self, result: io::Result<()>) -> io::Result<Output> {
        if result.is_err() {
            self.w.kill();
        }
        // Reaped last: until now the leader's pid (and so the group id) cannot be reused.
        let status = wait_pid(self.w.pid);
        self.w.reaped = true;
        result?;
        let status = status?;
        let killed = self.w.timed_out || self.w.out.overflow;
        Ok(Output {
            // Killed, unless it exited by itself at the last moment: then keep what it said.
            status: (!killed || status.signal().is_none()).then_some(status),
            stdout: std::mem::take(&mut self.w.out.kept),
            stderr: std::mem::take(&mut self.w.err.kept),
            timed_out: self.w.timed_out,
            stdout_overflow: self.w.out.overflow,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.w.reaped {
            let _ = kill_group(self.w.pid, SIGKILL);
            let _ = wait_pid(self.w.pid);
        }
    }
}

struct Pipe {
    fd: Option<OwnedFd>,
    kept: Vec<u8>,
    max: usize,
    overflow: bool,
}

impl Pipe {
    fn new(fd: Option<OwnedFd>, max: usize) -> Pipe {
        Pipe {
            fd,
            kept: Vec::new(),
            max,
            overflow: false,
        }
    }

    /// Read what is there; drop the fd at EOF.
    fn read(&mut self) -> io::Result<()> {
        let Some(fd) = &self.fd else { return Ok(()) };
        let mut buf = [0u8; 8192];
        // SAFETY: ManuallyDrop keeps the borrowed descriptor open; File reads it.
        let mut f =
            std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    self.fd = None;
                    return Ok(());
                }
                Ok(n) => {
                    let room = self.max.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        self.overflow = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, plain integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn owned(x: Option<OwnedFd>) -> io::Result<Option<OwnedFd>> {
    match x {
        Some(fd) => {
            set_nonblocking(fd.as_raw_fd())?;
            Ok(Some(fd))
        }
        None => Ok(None),
    }
}

/// Reap `pid` (our child), waiting for it to exit.
pub(crate) fn wait_pid(pid: u32) -> io::Result<ExitStatus> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes only into `status`.
        if unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) } >= 0 {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// True once `pid` (our child) has exited, without reaping it.
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain data; waitid writes only into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is valid to read for a waitid result.
    rc == 0 && unsafe { info.si_pid() } != 0
}

/// The child's stdin: what is still to be written, and whether to close it after.
struct Input {
    fd: Option<OwnedFd>,
    queue: Vec<u8>,
    closing: bool,
}

impl Input {
    /// Write what the pipe takes now; close it when asked and all is written, or when
    /// the child closed its end (what it did not read is its business).
    fn write(&mut self) {
        let Some(fd) = &self.fd else {
            self.queue.clear();
            return;
        };
        if !self.queue.is_empty() {
            // SAFETY: ManuallyDrop keeps the borrowed descriptor open; File writes it.
            let mut f =
                std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
            match f.write(&self.queue) {
                Ok(n) => {
                    self.queue.drain(..n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    self.queue.clear();
                    self.fd = None;
                    return;
                }
            }
        }
        if self.closing && self.queue.is_empty() {
            self.fd = None;
        }
    }
}

/// One child under watch: its pipes, its deadline, whether and why it was killed.
struct Watch {
    pid: u32,
    pidfd: Option<OwnedFd>,
    deadline: Instant,
    input: Input,
    out: Pipe,
    err: Pipe,
    exited_at: Option<Instant>,
    killed: bool,
    timed_out: bool,
    reaped: bool,
}

impl Watch {
    fn kill(&mut self) {
        if !self.killed {
            let _ = kill_group(self.pid, SIGKILL);
            self.killed = true;
        }
    }

    /// Apply the rules (overflow, deadline, stragglers after exit); false when done.
    fn go_on(&mut self, now: Instant) -> bool {
        if self.exited_at.is_none() && exited_unreaped(self.pid) {
            self.exited_at = Some(now);
        }
        if self.exited_at.is_some() && self.out.fd.is_none() && self.err.fd.is_none() {
            return false;
        }
        if self.out.overflow {
            self.kill();
        }
        if now >= self.deadline && !self.killed {
            self.kill();
            self.timed_out = true;
        }
        match self.exited_at {
            // Something it left behind holds the pipes: the group goes too.
            Some(t) if now >= t + 2 * OUTPUT_GRACE => return false,
            Some(t) if now >= t + OUTPUT_GRACE => self.kill(),
            _ => {}
        }
        true
    }

    /// Wait for the next thing to happen on a pipe, to the child or to one of `also`,
    /// or a deadline; which of `also` is readable, if one is.
    fn wait(
        &self,
        now: Instant,
        until: Instant,
        also: &[BorrowedFd<'_>],
    ) -> io::Result<Option<usize>> {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4 + also.len());
        let pidfd = if self.exited_at.is_none() {
            &self.pidfd
        } else {
            &None
        };
        let input = if self.input.queue.is_empty() {
            &None
        } else {
            &self.input.fd
        };
        let watched = [
            (&self.out.fd, libc::POLLIN),
            (&self.err.fd, libc::POLLIN),
            (input, libc::POLLOUT),
            (pidfd, libc::POLLIN),
        ];
        for (fd, events) in watched {
            if let Some(fd) = fd {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
        }
        let first_also = fds.len();
        fds.extend(also.iter().map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let wake = match self.exited_at {
            Some(t) => (t + 2 * OUTPUT_GRACE).min(self.deadline.max(now)),
            None => self.deadline,
        }
        .min(until);
        let mut timeout = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if self.killed || (self.pidfd.is_none() && self.exited_at.is_none()) {
            timeout = timeout.min(FALLBACK_TICK);
        }
        crate::watch::poll(&mut fds, Some(timeout))?;
        Ok(fds[first_also..].iter().position(|p| p.revents != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    const LIMITS: Limits = Limits {
        timeout: Duration::from_secs(20),
        max_stdout: 8,
        max_stderr: 1024,
    };

    #[test]
    fn stat_lines_with_odd_names() {
        let s =
            parse_stat("42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 0")
                .unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'S',
                start_time: 12345
            }
        );
        let me = stat(std::process::id()).unwrap();
        assert!(!me.is_dead());
        assert!(!cmdline(std::process::id()).unwrap().is_empty());
        assert_eq!(
            environ_var(std::process::id(), "PHONEHOME_NO_SUCH_VAR"),
            None
        );
    }

    #[test]
    fn feeds_stdin_and_bounds_stdout() {
        let out = run(
            &mut sh("cat; printf 0123456789; echo err >&2"),
            b"in-",
            &LIMITS,
        )
        .unwrap();
        assert_eq!(out.stdout, b"in-01234");
        assert!(out.stdout_overflow);
        assert!(out.status.is_none() || out.stderr == b"err\n");
        let out = run(&mut sh("cat; echo err >&2"), b"in", &LIMITS).unwrap();
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr, b"err\n");
        assert!(out.status.unwrap().success() && !out.timed_out && !out.stdout_overflow);
    }

    #[test]
    fn an_answer_that_never_ends_is_cut_at_the_limit() {
        let start = Instant::now();
        let out = run(&mut sh("yes"), b"", &LIMITS).unwrap();
        assert!(out.stdout_overflow && out.status.is_none());
        assert_eq!(out.stdout.len(), 8);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_client_that_never_reads_stdin_does_not_block() {
        let big = vec![b'x'; 1 << 20];
        let out = run(&mut sh("exec 0<&-; echo done"), &big, &LIMITS).unwrap();
        assert_eq!(out.stdout, b"done\n");
    }

    #[test]
    fn does_not_wait_for_a_straggler_holding_the_pipes() {
        let start = Instant::now();
        let out = run(&mut sh("echo out; sleep 30 & exit 3"), b"", &LIMITS).unwrap();
        assert_eq!(out.status.unwrap().code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn kills_a_hang_and_its_group() {
        let start = Instant::now();
        let limits = Limits {
            timeout: Duration::from_millis(300),
            max_stdout: 64,
            ..LIMITS
        };
        let out = run(&mut sh("sleep 30 & echo $!; sleep 30"), b"", &limits).unwrap();
        assert!(out.timed_out && out.status.is_none());
        assert!(start.elapsed() < Duration::from_secs(10));
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let h = Handle::open(pid);
        assert!(h.map_or(true, |h| h.wait_exit(Duration::from_secs(5))));
    }

    #[test]
    fn checked_runs_say_what_failed() {
        let e = run_checked(&mut sh("echo 'it broke' >&2; exit 8"), b"", &LIMITS).unwrap_err();
        assert_eq!(e.exit_code(), Some(8));
        assert_eq!(
            e.to_string(),
            "`/bin/sh -c 'echo '\\''it broke'\\'' >&2; exit 8'` failed (exit status: 8): it broke"
        );
        let e = run_checked(&mut Command::new("/nonexistent/x"), b"", &LIMITS).unwrap_err();
        assert!(matches!(e.kind, CommandErrorKind::Spawn(_)), "{}", e);
    }

    #[test]
    fn streams_are_read_and_reaped() {
        use std::io::BufRead;
        let mut st = stream(&mut sh("printf 'a\\nb\\n'; echo oops >&2; exit 3"), 100).unwrap();
        let lines: Vec<String> = std::io::BufReader::new(&mut st.stdout)
            .lines()
            .map(|l| l.unwrap())
            .collect();
        assert_eq!(lines, ["a", "b"]);
        let e = st.finish().unwrap_err();
        assert_eq!(e.exit_code(), Some(3));
        assert!(e.to_string().ends_with(": oops"), "{}", e);
        // Dropped unfinished: killed and reaped, not left running.
        let st = stream(&mut sh("echo $$; sleep 30"), 100).unwrap();
        let pid = st.child.id();
        drop(st);
        assert!(stat(pid).is_none(), "reaped");
        assert!(stream(&mut Command::new("/nonexistent/x"), 10).is_err());
    }

    #[test]
    fn a_session_is_fed_and_read_step_by_step() {
        let mut s = Session::start(
            &mut sh("while read l; do echo \"got $l\"; done; echo bye >&2"),
            &LIMITS_BIG,
        )
        .unwrap();
        let far = Instant::now() + Duration::from_secs(10);
        s.send(b"one\n");
        while !s.stdout().ends_with(b"\n") {
            assert_eq!(s.wait(far, &[]).unwrap(), Event::Output);
        }
        assert_eq!(std::mem::take(s.stdout()), b"got one\n");
        assert!(s.stdin_open());
        // Nothing more comes until more is sent: the wait ends at the time given.
        let t = Instant::now();
        assert_eq!(
            s.wait(t + Duration::from_millis(100), &[]).unwrap(),
            Event::Timeout
        );
        assert!(t.elapsed() >= Duration::from_millis(100));
        s.send(b"two\n");
        s.close_stdin();
        assert!(!s.stdin_open());
        while s.wait(far, &[]).unwrap() != Event::Done {}
        let out = s.finish().unwrap();
        assert_eq!(out.stdout, b"got two\n");
        assert_eq!(out.stderr, b"bye\n");
        assert!(out.status.unwrap().success());
    }

    const LIMITS_BIG: Limits = Limits {
        timeout: Duration::from_secs(20),
        max_stdout: 1024,
        max_stderr: 1024,
    };

    #[test]
    fn a_session_waits_on_other_descriptors_and_its_deadline_moves() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut s = Session::start(&mut sh("sleep 30"), &LIMITS_BIG).unwrap();
        let far = Instant::now() + Duration::from_secs(10);
        use std::io::Write;
        (&b).write_all(b"x").unwrap();
        assert_eq!(s.wait(far, &[a.as_fd()]).unwrap(), Event::Ready(0));
        // A deadline brought forward kills the group.
        let t = Instant::now();
        s.set_deadline(t + Duration::from_millis(200));
        let out = s.finish().unwrap();
        assert!(out.timed_out && out.status.is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
        // Dropped unfinished: killed and reaped.
        let s = Session::start(&mut sh("sleep 30"), &LIMITS_BIG).unwrap();
        let pid = s.pid();
        drop(s);
        assert!(stat(pid).is_none(), "reaped");
    }

    #[test]
    fn a_notified_signal_writes_to_its_pipe_instead_of_killing() {
        let fd = notify_on(SIGUSR1).unwrap();
        assert!(notify_on(SIGUSR1).is_err(), "one pipe per signal");
        assert!(notify_on(SIGKILL).is_err());
        let me = Handle::open(std::process::id()).unwrap();
        me.signal(SIGUSR1).unwrap();
        let ready = crate::watch::readable(&[fd.as_fd()], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ready, [true]);
        assert_eq!(crate::watch::read_some(fd.as_fd(), 16).unwrap(), b"!");
    }

    #[test]
    fn handles_signal_the_process_they_were_opened_on() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let h = Handle::open(child.id()).unwrap();
        assert!(!h.has_exited());
        assert!(!h.wait_exit(Duration::from_millis(50)));
        h.signal(SIGTERM).unwrap();
        assert!(h.wait_exit(Duration::from_secs(5)));
        child.wait().unwrap();
        // Reaped: the pidfd still names the dead process, never a newcomer.
        assert_eq!(
            h.signal(SIGTERM).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(Handle::open(u32::MAX).is_err());
        assert!(Handle::open(1).is_err(), "init is never a target");
    }
}
