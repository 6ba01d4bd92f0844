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

/// `--config`, the first option of the help.
const CONFIG_OPTION: (&str, &str, &str) = (
    "config",
    "FILE",
    "config file (/etc/phonehome/phonehome.conf)",
);

/// The flags without a value: short name, long name, description.
const FLAGS: &[(&str, &str, &str)] = &[
    ("", "json", "status: print JSON"),
    ("v", "verbose", "log debug lines too"),
    ("h", "help", "print this help"),
    ("V", "version", "print the version"),
];

/// Every option in the help's order: short name, long name, value hint, description.
fn option_rows() -> impl Iterator<Item = (&'static str, &'static str, &'static str, &'static str)> {
    std::iter::once(CONFIG_OPTION)
        .chain(VALUE_OPTIONS.iter().copied())
        .map(|(name, hint, desc)| ("", name, hint, desc))
        .chain(
            FLAGS
                .iter()
                .map(|&(short, name, desc)| (short, name, "", desc)),
        )
}

fn options() -> Options {
    let mut o = Options::new();
    for (short, name, hint, desc) in option_rows() {
        if hint.is_empty() {
            o.optflag(short, name, desc);
        } else if name == "host-key" {
            o.optmulti(short, name, desc, hint);
        } else {
            o.optopt(short, name, desc, hint);
        }
    }
    o
}

fn usage(command: Option<&str>) -> String {
    let mut text = brief(command);
    text.push_str("\n\nOptions:\n");
    for (short, name, hint, desc) in option_rows() {
        option_usage(&mut text, short, name, hint, desc);
    }
    text
}

/// The text above the options.
fn brief(command: Option<&str>) -> String {
    match command.and_then(|c| COMMANDS.iter().find(|(n, _)| *n == c)) {
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
    }
}

/// One option of the help, laid out as getopts' `Options::usage` does (the test
/// `usage_is_getopts_own` holds them equal): the names and hint in 24 columns, the
/// description wrapped at 54. Written here because getopts' layout measures text with
/// the unicode-width crate, whose tables are 11 KB of the router build, for help texts
/// that are ASCII.
fn option_usage(text: &mut String, short: &str, name: &str, hint: &str, desc: &str) {
    const INDENT: usize = 24;
    let start = text.len();
    text.push_str("    ");
    if short.is_empty() {
        text.push_str("    ");
    } else {
        text.push('-');
        text.push_str(short);
        text.push_str(", ");
    }
    text.push_str("--");
    text.push_str(name);
    text.push(' ');
    text.push_str(hint);
    let width = text[start..].chars().count();
    let mut column = INDENT;
    if width < INDENT {
        text.extend(std::iter::repeat(' ').take(INDENT - width));
    } else {
        column = 0;
    }
    for word in desc.split_whitespace() {
        let len = word.chars().count();
        if column > INDENT && column + 1 + len <= INDENT + 54 {
            text.push(' ');
            column += 1;
        } else if column != INDENT {
            text.push('\n');
            text.extend(std::iter::repeat(' ').take(INDENT));
            column = INDENT;
        }
        text.push_str(word);
        column += len;
    }
    text.push('\n');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_getopts_own() {
        let commands = COMMANDS.iter().map(|(name, _)| Some(*name));
        for command in std::iter::once(None).chain(commands) {
            assert_eq!(usage(command), options().usage(&brief(command)));
        }
        // The layout's corners: a description that wraps, a hint past the 24 columns,
        // a word longer than a line, no description.
        let long = format!("{} {} end", "word ".repeat(30), "x".repeat(60));
        let mut text = String::new();
        option_usage(&mut text, "", "a-long-option-name", "VALUE", &long);
        option_usage(&mut text, "q", "quiet", "", "");
        assert_eq!(
            format!("\n\nOptions:\n{}", text),
            Options::new()
                .optopt("", "a-long-option-name", &long, "VALUE")
                .optflag("q", "quiet", "")
                .usage("")
        );
    }
}
