//! What every command shares on the command line: `--root`, `--help`, `--version`,
//! and turning an `Error` into one line on stderr and an exit status.

use crate::error::{Error, Result};
use getopts::{Matches, Options};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Run a command's `run` on the process arguments and exit with its status.
pub fn main(name: &str, run: fn(&[String]) -> Result<()>) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{}: {}", name, e.msg);
            std::process::exit(e.code)
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
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

/// Parse `args`; `Ok(None)` when --help or --version was answered.
pub fn parse(
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
        print!(
            "{}",
            opts.usage(&format!("Usage: {}\n\n{}", synopsis, about))
        );
        return Ok(None);
    }
    if m.opt_present("version") {
        println!("{} {}", name, VERSION);
        return Ok(None);
    }
    Ok(Some(m))
}

/// Refuse to go on unless running as root (the command changes accounts or root-owned files).
pub fn require_root(name: &str) -> Result<()> {
    if crate::sys::geteuid() != 0 {
        return Err(Error::new(format!(
            "{} must run as root: it changes accounts and root-owned files; retry with sudo",
            name
        )));
    }
    Ok(())
}

/// Quote a value for a POSIX shell command line shown to the user.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
