//! `list-devices`: every device with alias, last seen (the newer of sshd's log and the
//! gate's heartbeat), source address, online / stale / offline, requested and open
//! tunnels, agent version, uptime and last error; columns for people, `--json` for
//! scripts. It names the heartbeat sources it read, says "no log data" instead of
//! guessing, never calls a device offline without a readable source, and flags the
//! case where every device went quiet at once (the server or its network is the likely
//! cause, not the devices).

use crate::accounts;
use crate::atomic;
use crate::cli;
use crate::config::ServerConf;
use crate::error::Result;
use crate::listeners;
use crate::logscan::{self, Scan};
use crate::paths::Paths;
use crate::records::{self, Heartbeat, StoredReport};
use crate::registry;
use crate::requests;
use crate::timefmt::{format_age, format_iso, format_utc, now};
use phonehome_protocol::{DeviceId, TunnelState};
use std::collections::HashMap;

const NAME: &str = "list-devices";
const ABOUT: &str =
    "Show every device: when it last called in (sshd's log and the gate's records), from
where, whether it is online (seen within 2 polls + 15 s), stale (within max(1 h, 10
polls)) or offline, its requested and open tunnels and what it last reported.
Logs: --log FILE (repeatable, .gz recognised), else <root>/var/log/auth.log* and
secure*, else journald (root / only).";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Online,
    Stale,
    Offline,
    /// No source ever showed it.
    Never,
    /// No heartbeat source could be read: nothing can be said.
    Unknown,
    /// Removed with remove-device; only its history remains.
    Removed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Stale => "stale",
            State::Offline => "offline",
            State::Never => "never-seen",
            State::Unknown => "unknown",
            State::Removed => "removed",
        }
    }
}

struct Row {
    id: String,
    alias: Option<String>,
    state: State,
    last_seen: Option<i64>,
    seen_by: Option<&'static str>,
    from: Option<String>,
    requested: Vec<String>,
    open: Vec<u16>,
    report: Option<StoredReport>,
    error: Option<String>,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut opts = cli::base_options();
    opts.optflag("j", "json", "print JSON for scripts");
    opts.optmulti(
        "l",
        "log",
        "read sshd's log from FILE (repeatable; gzip recognised); replaces the default sources",
        "FILE",
    );
    let Some(m) = cli::parse(NAME, &opts, args, "list-devices [OPTIONS]", ABOUT)? else {
        return Ok(());
    };
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    let conf = ServerConf::load(&paths)?;
    let devices = registry::list(&paths)?;
    let now = now();

    // sshd's log: explicit files, else the syslog files, else journald.
    let keys: HashMap<String, String> = devices
        .iter()
        .filter_map(|d| {
            Some((
                DeviceId::parse(&d.id).ok()?.account(),
                d.fingerprint.clone(),
            ))
        })
        .collect();
    let mut scan = Scan::default();
    let explicit = m.opt_strs("log");
    if !explicit.is_empty() {
        for f in &explicit {
            scan.read_file(std::path::Path::new(f), &keys, now);
        }
    } else {
        let files = logscan::default_files(&paths.log_dir());
        for f in &files {
            scan.read_file(f, &keys, now);
        }
        if files.is_empty() && paths.is_system() {
            scan.read_journal(&keys, now);
        }
    }
    let log_read = !scan.read.is_empty();

    // The gate's records are trustworthy only if the gate can still write them.
    let disk_full = gate_cannot_write(&paths);
    let stale_after = (conf.poll_interval as i64 * 10).max(3600);
    let passwd = accounts::all(&paths).unwrap_or_default();
    let listening = listeners::all();

    let mut rows = Vec::new();
    for d in &devices {
        let Ok(id) = DeviceId::parse(&d.id) else {
            continue;
        };
        let (hb, hb_err) = match records::heartbeat(&paths, &id) {
            Ok(h) => (h, None),
            Err(e) => (None, Some(e.msg)),
        };
        let gate_ok = hb_err.is_none() && !disk_full;
        let report = records::report(&paths, &id).ok().flatten();
        let login = scan.latest.get(&id.account());
        let (last_seen, seen_by, from) = newest(hb.as_ref(), login);
        let state = match last_seen {
            Some(t) if now - t <= conf.online_window() => State::Online,
            Some(t) if now - t <= stale_after => State::Stale,
            Some(_) if gate_ok || log_read => State::Offline,
            Some(_) => State::Unknown,
            None if gate_ok || log_read => State::Never,
            None => State::Unknown,
        };
        let uid = passwd
            .iter()
            .find(|a| a.name == id.account())
            .map(|a| a.uid);
        let requested: Vec<String> =
            requests::unexpired(requests::load(&paths, &id).unwrap_or_default(), now)
                .iter()
                .map(|r| r.pair().to_string())
                .collect();
        let mut open: Vec<u16> = match uid {
            Some(uid) if uid != 0 => listening
                .iter()
                .filter(|l| l.uid == uid && l.addr.is_loopback())
                .map(|l| l.port)
                .collect(),
            _ => Vec::new(),
        };
        open.sort_unstable();
        open.dedup();
        let error = last_error(hb.as_ref(), report.as_ref()).or(hb_err);
        rows.push(Row {
            id: d.id.clone(),
            alias: d.alias.clone(),
            state,
            last_seen,
            seen_by,
            from,
            requested,
            open,
            report,
            error,
        });
    }
    rows.extend(removed_rows(&paths, &devices));

    let mut notes = Vec::new();
    if disk_full {
        notes.push(format!(
            "the disk holding {} is full: the gate cannot record heartbeats, so they may be missing",
            paths.state().display()
        ));
    }
    if !log_read {
        notes.push(if scan.failed.is_empty() {
            "no log data: no sshd log was found (give one with --log FILE); heartbeats come from the gate's records only".to_string()
        } else {
            "no log data: no sshd log could be read; heartbeats come from the gate's records only".to_string()
        });
    }
    for f in &scan.failed {
        notes.push(format!("could not read {}", f));
    }
    if scan.skipped_long > 0 {
        notes.push(format!(
            "{} over-long log line(s) skipped",
            scan.skipped_long
        ));
    }
    if let Some(w) = all_went_quiet(&rows, conf.online_window()) {
        notes.push(w);
    }
    let mut sources = vec!["gate records".to_string()];
    sources.extend(scan.read.iter().cloned());

    if m.opt_present("json") {
        print_json(&rows, &sources, &notes, now);
    } else {
        print_table(&rows, now);
        println!("heartbeat sources: {}", sources.join(", "));
        for n in &notes {
            println!("note: {}", n);
        }
    }
    Ok(())
}

fn newest(
    hb: Option<&Heartbeat>,
    login: Option<&logscan::Login>,
) -> (Option<i64>, Option<&'static str>, Option<String>) {
    match (hb, login) {
        (Some(h), Some(l)) if l.time > h.received => {
            (Some(l.time), Some("sshd log"), Some(l.from.clone()))
        }
        (Some(h), _) => (Some(h.received), Some("gate"), h.from.clone()),
        (None, Some(l)) => (Some(l.time), Some("sshd log"), Some(l.from.clone())),
        (None, None) => (None, None, None),
    }
}

fn last_error(hb: Option<&Heartbeat>, report: Option<&StoredReport>) -> Option<String> {
    if let Some(e) = hb.and_then(|h| h.report_error.clone()) {
        return Some(format!("status report refused: {}", e));
    }
    let r = &report?.report;
    r.last_error
        .clone()
        .or_else(|| {
            r.tunnels
                .iter()
                .find(|t| t.state == TunnelState::Failed)
                .map(|t| {
                    format!(
                        "tunnel {}:{}: {}",
                        t.local,
                        t.remote,
                        t.last_error.as_deref().unwrap_or("failed")
                    )
                })
        })
        .or_else(|| r.inbox_errors.first().cloned())
}

/// Devices removed with remove-device whose status history is still on disk.
fn removed_rows(paths: &Paths, devices: &[registry::DeviceRecord]) -> Vec<Row> {
    let Ok(entries) = std::fs::read_dir(paths.status_dir()) else {
        return Vec::new();
    };
    let mut rows: Vec<Row> = entries
        .flatten()
        .filter_map(|e| DeviceId::parse(e.file_name().to_str()?).ok())
        .filter(|id| !devices.iter().any(|d| d.id == id.as_str()))
        .map(|id| {
            let hb = records::heartbeat(paths, &id).ok().flatten();
            Row {
                id: id.to_string(),
                alias: None,
                state: State::Removed,
                last_seen: hb.as_ref().map(|h| h.received),
                seen_by: hb.as_ref().map(|_| "gate"),
                from: hb.and_then(|h| h.from),
                requested: Vec::new(),
                open: Vec::new(),
                report: records::report(paths, &id).ok().flatten(),
                error: None,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// True when a 1-byte file cannot be written where the gate writes (disk full).
fn gate_cannot_write(paths: &Paths) -> bool {
    let probe = paths.status_dir().join(".list-devices-probe");
    match atomic::prepare(&probe, b"x", 0o600, false) {
        Ok(p) => {
            drop(p);
            false
        }
        Err(e) => e.msg.contains("disk is full"),
    }
}

/// Every device went quiet within one poll window of each other: the server or its
/// network is the likely cause.
pub fn all_went_quiet_times(last_seen: &[i64], window: i64, now: i64) -> Option<(i64, i64)> {
    if last_seen.len() < 2 || last_seen.iter().any(|t| now - t <= window) {
        return None;
    }
    let (lo, hi) = (*last_seen.iter().min()?, *last_seen.iter().max()?);
    (hi - lo <= window).then_some((lo, hi))
}

fn all_went_quiet(rows: &[Row], window: i64) -> Option<String> {
    let active: Vec<&Row> = rows.iter().filter(|r| r.state != State::Removed).collect();
    if active.iter().any(|r| r.last_seen.is_none()) {
        return None;
    }
    let times: Vec<i64> = active.iter().filter_map(|r| r.last_seen).collect();
    let (lo, hi) = all_went_quiet_times(&times, window, now())?;
    Some(format!(
        "all {} devices stopped calling in at the same time ({} to {}): the server, its sshd or its network is the likely cause, not the devices",
        times.len(),
        format_utc(lo),
        format_utc(hi)
    ))
}

fn print_table(rows: &[Row], now: i64) {
    let header = [
        "DEVICE",
        "ALIAS",
        "STATE",
        "LAST SEEN",
        "FROM",
        "REQUESTED",
        "OPEN",
        "AGENT",
        "UPTIME",
        "LAST ERROR",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let rep = r.report.as_ref().map(|s| &s.report);
        table.push(vec![
            r.id.clone(),
            r.alias.clone().unwrap_or_else(|| "-".into()),
            r.state.as_str().into(),
            r.last_seen
                .map(|t| format_age(now - t))
                .unwrap_or_else(|| "-".into()),
            r.from.clone().unwrap_or_else(|| "-".into()),
            dash(r.requested.join(",")),
            dash(
                r.open
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            rep.map(|r| r.agent_version.clone())
                .unwrap_or_else(|| "-".into()),
            rep.and_then(|r| r.uptime_secs)
                .map(|u| format!("{}h", u / 3600))
                .unwrap_or_else(|| "-".into()),
            r.error
                .clone()
                .map(|e| sanitize(&e, 60))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{:w$}", cell, w = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    if rows.is_empty() {
        println!("(no devices: add one with add-device)");
    }
}

fn dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// Device-supplied text for a terminal: no control characters, bounded.
fn sanitize(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > max {
        format!("{}…", clean.chars().take(max).collect::<String>())
    } else {
        clean
    }
}

fn print_json(rows: &[Row], sources: &[String], notes: &[String], now: i64) {
    let devices: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "alias": r.alias, "state": r.state.as_str(),
                "last_seen": r.last_seen.map(format_iso), "last_seen_unix": r.last_seen,
                "age_secs": r.last_seen.map(|t| now - t), "seen_by": r.seen_by, "from": r.from,
                "requested": r.requested, "open": r.open,
                "report": r.report.as_ref().map(|s| &s.report),
                "report_received": r.report.as_ref().map(|s| format_iso(s.received)),
                "last_error": r.error,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "now": format_iso(now), "devices": devices, "sources": sources, "notes": notes,
        }))
        .expect("JSON always serialises")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_at_once_detection() {
        let now = 100_000;
        assert!(all_went_quiet_times(&[now - 5000, now - 5010, now - 4990], 135, now).is_some());
        assert!(
            all_went_quiet_times(&[now - 5000, now - 9000], 135, now).is_none(),
            "spread out"
        );
        assert!(
            all_went_quiet_times(&[now - 5000, now - 10], 135, now).is_none(),
            "one online"
        );
        assert!(
            all_went_quiet_times(&[now - 5000], 135, now).is_none(),
            "one device"
        );
    }
}
