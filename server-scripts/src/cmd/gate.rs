//! `phonehome-gate`: the forced command of every device login (ForceCommand and the key
//! line's `command=`). It trusts nothing the client sends: the command must be exactly
//! `poll`, the identity comes from getuid() and `<root>/etc/passwd`, the status report
//! on stdin is bounded, time-limited and validated. It records the heartbeat (always)
//! and the report (only if valid), then answers with the unexpired requests, one
//! `local:remote` per line, and nothing else on stdout. It runs for every device every
//! minute, so it does no fsync and no log parsing.
//!
//! The root comes only from `--root` in its own argv (written by root into the key
//! file), never from the environment, which a client may influence (AcceptEnv).
//! A login with any other command is refused and not counted as a heartbeat by the gate
//! (sshd's own log still shows the login).

use crate::accounts;
use crate::atomic;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::records::{Heartbeat, StoredReport, HEARTBEAT_FILE, REPORT_FILE};
use crate::requests;
use crate::timefmt;
use phonehome_protocol::{render_inbox, DeviceId, StatusReport, MAX_STATUS_BYTES, POLL_COMMAND};
use std::io::{Read, Write};
use std::time::Duration;

const NAME: &str = "phonehome-gate";
/// How long the gate waits for the status report before answering without it.
pub const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Read at most MAX_STATUS_BYTES + 1 bytes of stdin, giving up after the timeout (a
/// client that never closes stdin must not hold the session open).
fn read_report() -> std::result::Result<Vec<u8>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut data = Vec::new();
        let r = std::io::stdin()
            .lock()
            .take(MAX_STATUS_BYTES as u64 + 1)
            .read_to_end(&mut data);
        let _ = tx.send(r.map(|_| data));
    });
    match rx.recv_timeout(STATUS_READ_TIMEOUT) {
        Ok(Ok(data)) => Ok(data),
        Ok(Err(e)) => Err(format!("cannot read the status report: {}", e)),
        Err(_) => Err(format!(
            "no status report within {} s (stdin not closed)",
            STATUS_READ_TIMEOUT.as_secs()
        )),
    }
}

fn write_record<T: serde::Serialize>(
    paths: &Paths,
    id: &DeviceId,
    file: &str,
    value: &T,
) -> Result<()> {
    let json = serde_json::to_vec(value).expect("records always serialise");
    atomic::write(&paths.status(id).join(file), &json, 0o600, false)
}

pub fn run(args: &[String]) -> Result<()> {
    let mut opts = getopts::Options::new();
    opts.optopt("", "root", "root of the server paths (default /)", "DIR");
    let m = opts.parse(args).map_err(|e| {
        Error::usage(format!(
            "{}: this is the forced command of device logins",
            e
        ))
    })?;
    let paths = Paths::new(std::path::Path::new(
        m.opt_str("root").as_deref().unwrap_or("/"),
    ))?;

    let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    if command != POLL_COMMAND {
        return Err(Error::new(format!(
            "this account only runs `{}` for the phonehome agent; refused {:?}",
            POLL_COMMAND,
            phonehome_protocol::truncate_text(&command, 64)
        )));
    }
    let uid = crate::sys::getuid();
    let account = accounts::by_uid(&paths, uid)?.ok_or_else(|| {
        Error::new(format!(
            "uid {} has no account in {}",
            uid,
            paths.passwd().display()
        ))
    })?;
    let id = DeviceId::from_account(&account.name).ok_or_else(|| {
        Error::new(format!(
            "account {} is not a phonehome device account",
            account.name
        ))
    })?;

    let now = timefmt::now();
    let (report, report_error) = match read_report() {
        Ok(data) if data.len() > MAX_STATUS_BYTES => (
            None,
            Some(format!(
                "status report larger than {} bytes",
                MAX_STATUS_BYTES
            )),
        ),
        Ok(data) => match StatusReport::from_device(&data) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(phonehome_protocol::truncate_text(&e.0, 200))),
        },
        Err(e) => (None, Some(e)),
    };
    let conn = std::env::var("SSH_CONNECTION").unwrap_or_default();
    let mut words = conn.split(' ');
    let from = words
        .next()
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string);
    let port = words.next().and_then(|p| p.parse().ok());
    let heartbeat = Heartbeat {
        received: now,
        from,
        port,
        report_error: report_error.clone(),
    };
    if let Err(e) = write_record(&paths, &id, HEARTBEAT_FILE, &heartbeat) {
        eprintln!("{}: warning: heartbeat not recorded: {}", NAME, e);
    }
    match (report, report_error) {
        (Some(report), _) => {
            if let Err(e) = write_record(
                &paths,
                &id,
                REPORT_FILE,
                &StoredReport {
                    received: now,
                    report,
                },
            ) {
                eprintln!("{}: warning: status report not recorded: {}", NAME, e);
            }
        }
        (None, Some(why)) => eprintln!("{}: warning: status report refused: {}", NAME, why),
        (None, None) => {}
    }

    let current = requests::unexpired(requests::load(&paths, &id)?, now);
    let pairs: Vec<_> = current.iter().map(|r| r.pair()).collect();
    let mut out = std::io::stdout().lock();
    out.write_all(render_inbox(&pairs).as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::new(format!("cannot answer the device: {}", e)))
}
