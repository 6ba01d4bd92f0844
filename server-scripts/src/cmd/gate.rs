//! `phonehome-gate`: the forced command of every device login (ForceCommand and the key
//! line's `command=`). It trusts nothing the client sends: the command must be exactly
//! `poll`, the identity comes from getuid() and `<root>/etc/passwd`, the status report
//! on stdin is bounded, time-limited and validated. It records the heartbeat (always)
//! and the report (only if valid), then answers with the unexpired requests, framed as
//! the agent's protocol version asks (`phonehome_protocol::render_answer`), and nothing
//! else on stdout. It runs for every device every minute, so it does no fsync and no
//! log parsing.
//!
//! Its options come only from its own argv (written by root into the key file and the
//! sshd drop-in), never from the environment, which a client may influence (AcceptEnv):
//! `--root DIR`, and `--read-timeout SECS` for tests. A login with any other command is
//! refused and not counted as a heartbeat by the gate (sshd's own log still shows it).

use crate::accounts::Db;
use crate::cli::Out;
use crate::error::{Error, Result};
use crate::gate_status::{self, Heartbeat, Status, StoredReport, MAX_STATUS_FILE_BYTES};
use crate::paths::Paths;
use crate::requests;
use phonehome_plumbing::{clock, files};
use phonehome_protocol::{
    render_answer, render_inbox, truncate_text, DeviceId, StatusReport, GATE_READ_TIMEOUT_SECS,
    MAX_STATUS_BYTES, POLL_COMMAND,
};
use std::io::Read;
use std::time::Duration;

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

/// Read at most MAX_STATUS_BYTES + 1 bytes of stdin, giving up after the timeout (a
/// client that never closes stdin must not hold the session open).
fn read_report(timeout: Duration) -> std::result::Result<Vec<u8>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut data = Vec::new();
        let r = std::io::stdin()
            .lock()
            .take(MAX_STATUS_BYTES as u64 + 1)
            .read_to_end(&mut data);
        let _ = tx.send(r.map(|_| data));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(data)) => Ok(data),
        Ok(Err(e)) => Err(format!("cannot read the status report: {}", e)),
        Err(_) => Err(format!(
            "no status report within {} s (stdin not closed)",
            timeout.as_secs()
        )),
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

/// The heartbeat (always) and the report (when valid; else the last valid one is
/// kept), in the device's status file: one write a poll, and a read only when the
/// report was refused.
fn record(
    paths: &Paths,
    id: &DeviceId,
    now: i64,
    report: &std::result::Result<StatusReport, String>,
) {
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
    };
    let report = match report {
        Ok(r) => Some(StoredReport {
            received: now,
            report: r.clone(),
        }),
        Err(why) => {
            eprintln!("{}: warning: status report refused: {}", NAME, why);
            files::read_bounded(&paths.status_file(id), MAX_STATUS_FILE_BYTES)
                .ok()
                .flatten()
                .and_then(|d| gate_status::parse(&d))
                .and_then(|s| s.report)
        }
    };
    let json = serde_json::to_vec(&Status { heartbeat, report }).expect("a status serialises");
    if let Err(e) = files::write(&paths.status_file(id), &json, 0o600, false) {
        eprintln!("{}: warning: heartbeat not recorded: {}", NAME, e);
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
    let report = check_report(read_report(args.read_timeout));
    record(&args.paths, &id, now, &report);

    let current = requests::unexpired(requests::load(&args.paths, &id)?, now);
    let pairs: Vec<_> = current.iter().map(|r| r.pair()).collect();
    // An agent of protocol 1 knows only the bare lines; everything else gets the frame.
    let answer = match &report {
        Ok(r) if r.protocol == 1 => render_inbox(&pairs),
        _ => render_answer(&pairs),
    };
    out.text(&answer)
}
