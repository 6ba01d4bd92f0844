//! What every command shares on the command line: `--root`, `--verbose`, `--help`,
//! `--version`; standard output that is buffered and whose write errors are errors
//! (one line, exit 1; a closed pipe ends quietly), and turning an `Error` into one line
//! on stderr and an exit status.

use crate::error::{Error, Result};
use getopts::{Matches, Options};
use log::LevelFilter;
use std::io::Write;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A command's standard output: buffered, flushed at the end or when asked.
pub struct Out {
    inner: std::io::BufWriter<std::io::Stdout>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            inner: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        }
    }

    /// Write one line.
    pub fn line(&mut self, args: std::fmt::Arguments) -> Result<()> {
        self.inner
            .write_fmt(args)
            .and_then(|()| self.inner.write_all(b"\n"))
            .map_err(Error::Output)
    }

    /// Write text as it is.
    pub fn text(&mut self, s: &str) -> Result<()> {
        self.inner.write_all(s.as_bytes()).map_err(Error::Output)
    }

    /// Push what is buffered out now (progress a person is waiting for).
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(Error::Output)
    }
}

impl Default for Out {
    fn default() -> Out {
        Out::new()
    }
}

/// `say!(out, "format", args...)`: one line on the command's standard output.
#[macro_export]
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}

/// Run a command's `run` on the process arguments and exit with its status.
pub fn main(name: &str, run: fn(&[String], &mut Out) -> Result<()>) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = Out::new();
    let result = run(&args, &mut out).and_then(|()| out.flush());
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) if e.is_broken_pipe() => std::process::exit(0),
        Err(e) => {
            // What was printed before the error stays in front of it.
            let _ = out.flush();
            eprintln!("{}: {}", name, e);
            std::process::exit(e.code())
        }
    }
}

/// Options every command takes.
pub fn base_options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "",
        "root",
        "use DIR as the root of every server path (default: $PHONEHOME_ROOT, else /)",
        "DIR",
    );
    o.optflag(
        "v",
        "verbose",
        "say on stderr what is changed, step by step",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

/// `--log FILE`, for the commands that read sshd's log (list-devices, watch-devices).
pub fn log_option(opts: &mut Options) {
    opts.optmulti(
        "l",
        "log",
        "read sshd's log from FILE (repeatable; gzip recognised); replaces the default sources",
        "FILE",
    );
}

/// Parse `args`; `Ok(None)` when --help or --version was answered.
pub fn parse(
    out: &mut Out,
    name: &str,
    opts: &Options,
    args: &[String],
    synopsis: &str,
    about: &str,
) -> Result<Option<Matches>> {
    let m = opts
        .parse(args)
        .map_err(|e| Error::usage(format!("{} (see {} --help)", e, name)))?;
    if m.opt_present("help") {
        out.text(&opts.usage(&format!("Usage: {}\n\n{}", synopsis, about)))?;
        return Ok(None);
    }
    if m.opt_present("version") {
        say!(out, "{} {}", name, VERSION)?;
        return Ok(None);
    }
    init_logging(m.opt_present("verbose"));
    Ok(Some(m))
}

/// Warnings always, what is changed with --verbose; on stderr, one line each.
fn init_logging(verbose: bool) {
    let level = if verbose {
        LevelFilter::Info
    } else {
        LevelFilter::Warn
    };
    let config = simplelog::ConfigBuilder::new()
        .set_time_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let _ = simplelog::WriteLogger::init(level, config, std::io::stderr());
}

/// Refuse to go on unless running as root (the command changes accounts or root-owned files).
pub fn require_root(name: &str) -> Result<()> {
    if phonehome_plumbing::process::geteuid() != 0 {
        return Err(Error::new(format!(
            "{} must run as root: it changes accounts and root-owned files; retry with sudo",
            name
        )));
    }
    Ok(())
}
