//! Command line: parse the flags, merge them over the config file (`config::load`),
//! answer `--help` and `--version`, and dispatch; the exit status of each outcome is
//! `failure::Failure`'s.

use crate::config::{self, VALUE_OPTIONS};
use crate::failure::{Failure, EXIT_OK, EXIT_USAGE};
use crate::poll::Outcome;
use crate::{commands, logging, poll, setup};
use getopts::Options;

const COMMANDS: &[(&str, &str)] = &[
    (
        "poll",
        "one cron tick: log in, send the status report, open and close tunnels as asked (until the next tick if the server holds the session)",
    ),
    (
        "id",
        "print the device id (MAC of the configured interface, or --device-id)",
    ),
    (
        "status",
        "show the last poll and every tunnel with its state and last error (--json for JSON)",
    ),
    ("stop", "stop every tunnel (package removal, shutdown)"),
    (
        "setup",
        "write the config file and known_hosts from the flags given (--server, --host-key, ...)",
    ),
];

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "",
        "config",
        "config file (/etc/phonehome/phonehome.conf)",
        "FILE",
    );
    for (name, hint, desc) in VALUE_OPTIONS {
        if *name == "host-key" {
            o.optmulti("", name, desc, hint);
        } else {
            o.optopt("", name, desc, hint);
        }
    }
    o.optflag("", "json", "status: print JSON");
    o.optflag("v", "verbose", "log debug lines too");
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

fn usage(command: Option<&str>) -> String {
    let brief = match command.and_then(|c| COMMANDS.iter().find(|(n, _)| *n == c)) {
        Some((name, what)) => format!(
            "Usage: phonehome [OPTIONS] {}\n\n{}.",
            name,
            capitalise(what)
        ),
        None => {
            let mut b = String::from(
                "Usage: phonehome [OPTIONS] COMMAND\n\nThe phonehome device agent: calls its server over ssh every minute and opens the\nreverse tunnels it is asked for.\n\nCommands:\n",
            );
            for (name, what) in COMMANDS {
                b.push_str(&format!("    {:<8} {}\n", name, what));
            }
            b.push_str("\nEvery option can also be a `name = value` line of the config file.");
            b
        }
    };
    options().usage(&brief)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Parse, load settings, dispatch; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let m = match options().parse(args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("phonehome: {}\nTry `phonehome --help`.", e);
            return EXIT_USAGE;
        }
    };
    let command = m.free.first().map(String::as_str);
    if m.free.len() > 1 {
        eprintln!(
            "phonehome: unexpected argument {:?}\nTry `phonehome --help`.",
            m.free[1]
        );
        return EXIT_USAGE;
    }
    if let Some(c) = command {
        if !COMMANDS.iter().any(|(n, _)| *n == c) {
            eprintln!(
                "phonehome: unknown command {:?}\nTry `phonehome --help`.",
                c
            );
            return EXIT_USAGE;
        }
    }
    if m.opt_present("help") {
        print!("{}", usage(command));
        return EXIT_OK;
    }
    if m.opt_present("version") {
        println!("phonehome {}", env!("CARGO_PKG_VERSION"));
        return EXIT_OK;
    }
    let Some(command) = command else {
        eprint!("{}", usage(None));
        return EXIT_USAGE;
    };
    if m.opt_present("json") && command != "status" {
        eprintln!("phonehome: --json is only for `status`");
        return EXIT_USAGE;
    }

    // The flags given, in order, for `setup` and to override the config file.
    let mut given: Vec<(String, String)> = Vec::new();
    for name in std::iter::once("config").chain(VALUE_OPTIONS.iter().map(|o| o.0)) {
        for v in m.opt_strs(name) {
            given.push((name.to_string(), v));
        }
    }
    let settings = match config::load(&given, command != "setup") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("phonehome {}: {}", command, e);
            return EXIT_USAGE;
        }
    };
    logging::init(settings.log, m.opt_present("verbose"));

    let result = match command {
        // An overlapping tick is quiet on purpose (poll logs it at debug level).
        "poll" => poll::poll(&settings).map(|_: Outcome| ()),
        "id" => commands::id(&settings),
        "status" => commands::status(&settings, m.opt_present("json")),
        "stop" => commands::stop(&settings),
        "setup" => setup::setup(&settings, &given),
        _ => unreachable!("commands are checked above"),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(f) => {
            match &f {
                Failure::Config(e) => log::error!("{}: {}", command, e),
                Failure::Failed(e) => log::error!("{} failed: {}", command, e),
            }
            f.exit_code()
        }
    }
}
