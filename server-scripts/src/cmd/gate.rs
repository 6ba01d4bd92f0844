//! `phonehome-gate`: the forced command of every device login (ForceCommand and the key
//! line's `command=`). It trusts nothing the client sends: the command must be exactly
//! `poll`, the identity comes from getuid() and `<root>/etc/passwd`, the status report
//! on stdin is bounded, time-limited and validated. It records the heartbeat (always,
//! with the requests it answers) and the report (only if valid), then answers with the
//! unexpired requests, framed as the agent's protocol version asks (1: bare lines, 2:
//! `render_answer`, 3: `render_frame`), and nothing else on stdout. It runs for every
//! device every minute, so it does no fsync and no log parsing.
//!
//! The report is read up to its first newline (protocol 3 leaves stdin open after it),
//! or to the end of stdin for a client that sends none. When the agent offers to hold
//! the session and server.conf allows it, the first frame says `hold=SECS` and
//! `hold::serve` keeps the session open (see there).
//!
//! Its options come only from its own argv (written by root into the key file and the
//! sshd drop-in), never from the environment, which a client may influence (AcceptEnv):
//! `--root DIR`, and `--read-timeout SECS` for tests. A login with any other command is
//! refused and not counted as a heartbeat by the gate (sshd's own log still shows it).

use crate::accounts::Db;
use crate::cli::Out;
use crate::config::ServerConf;
use crate::error::{Error, Result};
use crate::gate_status::{self, Heartbeat, HeldSession, Status, StoredReport};
use crate::hold::{self, Held};
use crate::paths::Paths;
use crate::requests::{self, Request};
use phonehome_plumbing::clock;
use phonehome_plumbing::watch::{Line, Lines};
use phonehome_protocol::{
    render_frame, render_inbox, truncate_text, DeviceId, PortPair, StatusReport,
    GATE_READ_TIMEOUT_SECS, HOLD_PROTOCOL, MAX_OUTCOME_LINE, MAX_STATUS_BYTES, POLL_COMMAND,
};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const NAME: &str = "phonehome-gate";

/// What the gate's argv holds.
struct Args {
    paths: Paths,
    read_timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut opts = getopts::Options::new();
    opts.optopt("", "root", "root of the server paths (default /)", "DIR");
    opts.optopt(
        "",
        "read-timeout",
        "seconds to wait for the status report",
        "SECS",
    );
    let m = opts.parse(args).map_err(|e| {
        Error::usage(format!(
            "{}: this is the forced command of device logins",
            e
        ))
    })?;
    let paths = Paths::new(std::path::Path::new(
        m.opt_str("root").as_deref().unwrap_or("/"),
    ))?;
    let secs = match m.opt_str("read-timeout") {
        None => GATE_READ_TIMEOUT_SECS,
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=60).contains(n))
            .ok_or_else(|| Error::usage("--read-timeout: expected seconds from 1 to 60"))?,
    };
    Ok(Args {
        paths,
        read_timeout: Duration::from_secs(secs),
    })
}

/// The status report: stdin up to its first newline, or to its end when none comes,
/// at most MAX_STATUS_BYTES, within the timeout (a client that sends nothing must not
/// hold the session open). A first line that is no JSON of its own (a report written
/// over several lines by some client) is read on to the end of stdin, as before.
fn read_report(stdin: &mut Lines<'_>, timeout: Duration) -> std::result::Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let too_big = || format!("status report larger than {} bytes", MAX_STATUS_BYTES);
    let late = || {
        format!(
            "no status report within {} s (no newline, stdin not closed)",
            timeout.as_secs()
        )
    };
    let read = |l: &mut Lines<'_>| {
        l.next_within(deadline)
            .map_err(|e| format!("cannot read the status report: {}", e))
    };
    let mut data = match read(stdin)?.ok_or_else(late)? {
        Line::Line(d) | Line::Last(d) => d,
        Line::End => return Ok(Vec::new()),
        Line::TooLong => return Err(too_big()),
    };
    if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok() || stdin.is_done() {
        return Ok(data);
    }
    loop {
        data.push(b'\n');
        match read(stdin)?.ok_or_else(late)? {
            Line::Line(d) | Line::Last(d) => data.extend_from_slice(&d),
            Line::End => return Ok(data),
            Line::TooLong => return Err(too_big()),
        }
        if data.len() > MAX_STATUS_BYTES {
            return Err(too_big());
        }
    }
}

/// The device this login is: from the uid, never from anything the client sent.
fn identify(paths: &Paths) -> Result<DeviceId> {
    let uid = phonehome_plumbing::process::getuid();
    let db = Db::load(paths)?;
    let account = db.by_uid(uid).ok_or_else(|| {
        Error::new(format!(
            "uid {} has no account in {}",
            uid,
            paths.passwd().display()
        ))
    })?;
    DeviceId::from_account(&account.name).ok_or_else(|| {
        Error::new(format!(
            "account {} is not a phonehome device account",
            account.name
        ))
    })
}

/// The report, or why it was refused.
fn check_report(
    data: std::result::Result<Vec<u8>, String>,
) -> std::result::Result<StatusReport, String> {
    let data = data?;
    StatusReport::from_device(&data).map_err(|e| truncate_text(&e.0, 200))
}

/// The heartbeat (always, with the requests answered), the report (when valid; else
/// the last valid one is kept) and the held session (this login's, when it holds one;
/// else the last one), in the device's status file: one write a poll. Returns what it
/// wrote, for a held session to update.
fn record(
    paths: &Paths,
    id: &DeviceId,
    now: i64,
    report: &std::result::Result<StatusReport, String>,
    served: &[PortPair],
    session: Option<HeldSession>,
) -> Status {
    let conn = std::env::var("SSH_CONNECTION").unwrap_or_default();
    let mut words = conn.split(' ');
    let heartbeat = Heartbeat {
        received: now,
        from: words
            .next()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            .map(str::to_string),
        port: words.next().and_then(|p| p.parse().ok()),
        report_error: report.as_ref().err().cloned(),
        served: served.iter().map(|p| p.to_string()).collect(),
    };
    if let Err(why) = report {
        eprintln!("{}: warning: status report refused: {}", NAME, why);
    }
    let mut status = Status {
        heartbeat,
        report: report.as_ref().ok().map(|r| StoredReport {
            received: now,
            report: r.clone(),
            updated: None,
        }),
        session,
    };
    let written = gate_status::update(paths, id, |old| {
        if let Some(old) = old {
            status.report = status.report.take().or(old.report);
            status.session = status.session.take().or(old.session);
        }
        Some(status.clone())
    });
    if let Err(e) = written {
        eprintln!("{}: warning: heartbeat not recorded: {}", NAME, e);
    }
    status
}

/// The framing the agent reads: 1 (bare lines) for an agent of protocol 1, 3 for one
/// of protocol 3 or later, else 2 (which every framed agent reads, so a refused report
/// gets it).
fn answer_version(report: &std::result::Result<StatusReport, String>) -> u32 {
    match report {
        Ok(r) if r.protocol == 1 => 1,
        Ok(r) if r.protocol >= HOLD_PROTOCOL => HOLD_PROTOCOL,
        _ => 2,
    }
}

/// A hold for this login, if the agent offered one and server.conf allows it.
fn offer_hold(
    paths: &Paths,
    id: &DeviceId,
    report: &std::result::Result<StatusReport, String>,
) -> Option<hold::Grant> {
    let offer = report
        .as_ref()
        .ok()
        .filter(|r| r.protocol >= HOLD_PROTOCOL)?
        .hold?;
    match ServerConf::load(paths) {
        Ok(conf) => hold::grant(paths, &conf, id, Some(offer)),
        Err(e) => {
            eprintln!("{}: warning: no held session: {}", NAME, e);
            None
        }
    }
}

pub fn run(args: &[String], out: &mut Out) -> Result<()> {
    let args = parse_args(args)?;
    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    if command != POLL_COMMAND {
        return Err(Error::new(format!(
            "this account only runs `{}` for the phonehome agent; refused {}",
            POLL_COMMAND,
            phonehome_plumbing::text::quoted(&command, 64)
        )));
    }
    let id = identify(&args.paths)?;
    let now = clock::now();
    let stdin = std::io::stdin();
    let mut input = Lines::new(stdin.as_fd(), MAX_STATUS_BYTES.max(MAX_OUTCOME_LINE));
    let report = check_report(read_report(&mut input, args.read_timeout));
    let current: Result<Vec<Request>> =
        requests::load(&args.paths, &id).map(|all| requests::unexpired(all, now));
    let pairs: Vec<PortPair> = current.iter().flatten().map(|r| r.pair()).collect();
    // The hold first: taking over an older held session ends its gate, which then
    // writes nothing after this login's record.
    let grant = offer_hold(&args.paths, &id, &report);
    let session = grant.as_ref().map(|g| hold::session_record(g, now));
    let status = record(&args.paths, &id, now, &report, &pairs, session);
    let current = current?;
    let version = answer_version(&report);
    let answer = match version {
        1 => render_inbox(&pairs),
        v => render_frame(v, grant.as_ref().map(|g| g.secs), &pairs),
    };
    out.text(&answer)?;
    let Some(grant) = grant else {
        return Ok(());
    };
    let held = Held {
        paths: &args.paths,
        id: &id,
        grant,
        sent: current,
        status,
    };
    hold::serve(held, out, &mut input)
}
