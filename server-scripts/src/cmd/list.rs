//! `list-devices`: every device with alias, last seen (the newer of sshd's log and the
//! gate's heartbeat), source address, online / stale / offline, requested and open
//! tunnels, agent version, uptime and current error; columns for people, `--json` for
//! scripts. It names the heartbeat sources it read, says "no log data" instead of
//! guessing, never calls a device offline without a readable source, and flags the
//! case where every device went quiet at once (the server or its network is the likely
//! cause, not the devices). Every device- or log-supplied string goes through
//! `for_terminal` before it reaches the table. It only reads: listing changes nothing.

use crate::accounts::Db;
use crate::cli::{self, Out};
use crate::config::ServerConf;
use crate::error::{Error, Result};
use crate::gate_status::{self, Heartbeat, StoredReport};
use crate::listeners::{self, Listener};
use crate::logscan::{self, Filter, Scan};
use crate::paths::Paths;
use crate::registry::{self, DeviceRecord};
use crate::requests;
use crate::say;
use phonehome_plumbing::clock::{format_age, format_iso, format_utc, now};
use phonehome_plumbing::files::{self, Follow};
use phonehome_plumbing::text::for_terminal;
use phonehome_protocol::{DeviceId, TunnelState};
use std::path::PathBuf;

const NAME: &str = "list-devices";
const ABOUT: &str =
    "Show every device: when it last called in (sshd's log and the gate's records), from
where, whether it is online (seen within 2 polls + 15 s), stale (within max(1 h, 10
polls)) or offline, its requested and open tunnels and what it last reported.
Logs: --log FILE (repeatable, .gz recognised), else <root>/var/log/auth.log* and
secure*, else journald (root / only); only lines of this server's own host names
(log_hosts in server.conf) count.";

/// Longest device-supplied text in a table cell.
const MAX_CELL: usize = 60;

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
    id: DeviceId,
    alias: Option<String>,
    state: State,
    last_seen: Option<i64>,
    seen_by: Option<&'static str>,
    from: Option<String>,
    requested: Vec<String>,
    open: Vec<u16>,
    report: Option<StoredReport>,
    /// What is wrong now.
    error: Option<String>,
}

/// Everything the rows are made of, read once.
struct Sources {
    conf: ServerConf,
    now: i64,
    scan: Scan,
    /// The gate can write its records (the disk is not full).
    gate_writable: bool,
    passwd: Db,
    listening: Vec<Listener>,
}

pub fn run(args: &[String], out: &mut Out) -> Result<()> {
    let mut opts = cli::base_options();
    opts.optflag("j", "json", "print JSON for scripts");
    opts.optmulti(
        "l",
        "log",
        "read sshd's log from FILE (repeatable; gzip recognised); replaces the default sources",
        "FILE",
    );
    let Some(m) = cli::parse(out, NAME, &opts, args, "list-devices [OPTIONS]", ABOUT)? else {
        return Ok(());
    };
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    let explicit = explicit_logs(&m.opt_strs("log"))?;
    let devices = registry::list(&paths)?;
    let src = gather(&paths, &devices, &explicit)?;
    let mut rows: Vec<Row> = devices
        .iter()
        .map(|d| device_row(&paths, &src, d))
        .collect();
    rows.extend(removed_rows(&paths, &devices));
    let notes = notes(&paths, &src, &rows);
    let mut sources = vec!["gate records".to_string()];
    sources.extend(src.scan.read.iter().cloned());
    if m.opt_present("json") {
        print_json(out, &rows, &sources, &notes, src.now)
    } else {
        print_table(out, &rows, src.now)?;
        say!(out, "heartbeat sources: {}", sources.join(", "))?;
        for n in &notes {
            say!(out, "note: {}", n)?;
        }
        Ok(())
    }
}

/// `--log` files must exist and be regular files (a FIFO or /dev/zero would hang).
fn explicit_logs(names: &[String]) -> Result<Vec<PathBuf>> {
    names
        .iter()
        .map(|n| {
            let p = PathBuf::from(n);
            files::open_regular(&p, Follow::Yes).map_err(|e| {
                Error::usage(format!("--log {}: {}; give a log file", p.display(), e))
            })?;
            Ok(p)
        })
        .collect()
}

fn gather(paths: &Paths, devices: &[DeviceRecord], explicit: &[PathBuf]) -> Result<Sources> {
    let conf = ServerConf::load(paths)?;
    let now = now();
    let filter = Filter {
        keys: devices
            .iter()
            .map(|d| (d.id.account(), d.fingerprint.clone()))
            .collect(),
        hosts: conf.log_hosts.clone(),
        now,
    };
    let mut scan = Scan::default();
    if !explicit.is_empty() {
        for f in explicit {
            scan.read_file(f, &filter);
        }
    } else {
        let files = logscan::default_files(&paths.log_dir());
        for f in &files {
            scan.read_file(f, &filter);
        }
        if files.is_empty() && paths.is_system() {
            scan.read_journal(&filter);
        }
    }
    Ok(Sources {
        conf,
        now,
        scan,
        gate_writable: !disk_full(paths),
        passwd: Db::load(paths).unwrap_or_default(),
        listening: listeners::all(),
    })
}

fn device_row(paths: &Paths, src: &Sources, d: &DeviceRecord) -> Row {
    let id = &d.id;
    let (hb, hb_err) = match gate_status::heartbeat(paths, id) {
        Ok(h) => (h, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let report = gate_status::report(paths, id).ok().flatten();
    let login = src.scan.latest.get(&id.account());
    let (last_seen, seen_by, from) = newest(hb.as_ref(), login);
    let sources_readable = (hb_err.is_none() && src.gate_writable) || !src.scan.read.is_empty();
    let state = state(src, last_seen, sources_readable);
    let requested: Vec<String> =
        requests::unexpired(requests::load(paths, id).unwrap_or_default(), src.now)
            .iter()
            .map(|r| r.pair().to_string())
            .collect();
    let open = match src.passwd.by_name(&id.account()).map(|a| a.uid) {
        Some(uid) if uid != 0 => open_ports(&src.listening, uid),
        _ => Vec::new(),
    };
    let error = current_error(hb.as_ref(), report.as_ref()).or(hb_err);
    Row {
        id: id.clone(),
        alias: d.alias.clone(),
        state,
        last_seen,
        seen_by,
        from,
        requested,
        open,
        report,
        error,
    }
}

fn state(src: &Sources, last_seen: Option<i64>, readable: bool) -> State {
    let stale_after = src.conf.offline_after();
    match last_seen.map(|t| src.now - t) {
        Some(age) if age <= src.conf.online_window() => State::Online,
        Some(age) if age <= stale_after => State::Stale,
        Some(_) if readable => State::Offline,
        None if readable => State::Never,
        _ => State::Unknown,
    }
}

fn open_ports(listening: &[Listener], uid: u32) -> Vec<u16> {
    let mut open: Vec<u16> = listening
        .iter()
        .filter(|l| l.uid == uid && l.addr.is_loopback())
        .map(|l| l.port)
        .collect();
    open.sort_unstable();
    open.dedup();
    open
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

/// What is wrong now: a refused report, a failed tunnel, refused inbox lines. The
/// report's `last_error` is about the poll *before* this one, which the device has
/// since recovered from (it reported): it stays in the JSON, not in this column.
fn current_error(hb: Option<&Heartbeat>, report: Option<&StoredReport>) -> Option<String> {
    if let Some(e) = hb.and_then(|h| h.report_error.clone()) {
        return Some(format!("status report refused: {}", e));
    }
    let r = &report?.report;
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
        .or_else(|| r.inbox_errors.first().cloned())
}

/// Devices removed with remove-device whose status history is still on disk.
fn removed_rows(paths: &Paths, devices: &[DeviceRecord]) -> Vec<Row> {
    let Ok(entries) = std::fs::read_dir(paths.status_dir()) else {
        return Vec::new();
    };
    let registered: std::collections::HashSet<&DeviceId> = devices.iter().map(|d| &d.id).collect();
    let mut rows: Vec<Row> = entries
        .flatten()
        .filter_map(|e| DeviceId::parse(e.file_name().to_str()?).ok())
        .filter(|id| !registered.contains(id))
        .map(|id| {
            let hb = gate_status::heartbeat(paths, &id).ok().flatten();
            Row {
                report: gate_status::report(paths, &id).ok().flatten(),
                id,
                alias: None,
                state: State::Removed,
                last_seen: hb.as_ref().map(|h| h.received),
                seen_by: hb.as_ref().map(|_| "gate"),
                from: hb.and_then(|h| h.from),
                requested: Vec::new(),
                open: Vec::new(),
                error: None,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// True when the gate cannot write where it writes (disk full). Checked without
/// writing anything: the free space of the file system holding the status dirs.
fn disk_full(paths: &Paths) -> bool {
    phonehome_plumbing::files::free_bytes(&paths.status_dir()).is_some_and(|free| free < 4096)
}

fn notes(paths: &Paths, src: &Sources, rows: &[Row]) -> Vec<String> {
    let scan = &src.scan;
    let mut notes = Vec::new();
    if !src.gate_writable {
        notes.push(format!(
            "the disk holding {} is full: the gate cannot record heartbeats, so they may be missing",
            paths.state().display()
        ));
    }
    if scan.read.is_empty() {
        let tried = if scan.failed.is_empty() {
            "no sshd log was found".to_string()
        } else {
            format!("no sshd log could be read ({})", scan.failed.join("; "))
        };
        notes.push(format!(
            "no log data: {}; heartbeats come from the gate's records only (to add sshd's log: install rsyslog for /var/log/auth.log, or pass --log FILE)",
            for_terminal(&tried, 400)
        ));
    } else {
        for f in &scan.failed {
            notes.push(format!("could not read {}", for_terminal(f, 200)));
        }
    }
    if scan.skipped_long > 0 {
        notes.push(format!(
            "{} over-long log line(s) skipped",
            scan.skipped_long
        ));
    }
    if scan.skipped_foreign > 0 {
        notes.push(format!(
            "{} device login(s) logged by other hosts ignored (this server logs as: {}; set log_hosts in {} if that is wrong)",
            scan.skipped_foreign,
            src.conf.log_hosts.join(" "),
            paths.conf().display()
        ));
    }
    if scan.skipped_future > 0 {
        notes.push(format!(
            "{} device login(s) dated more than {} s in the future ignored",
            scan.skipped_future,
            logscan::MAX_CLOCK_SKEW_SECS
        ));
    }
    if let Some(w) = all_went_quiet(rows, src.conf.online_window(), src.now) {
        notes.push(w);
    }
    notes
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

fn all_went_quiet(rows: &[Row], window: i64, now: i64) -> Option<String> {
    let active: Vec<&Row> = rows.iter().filter(|r| r.state != State::Removed).collect();
    if active.iter().any(|r| r.last_seen.is_none()) {
        return None;
    }
    let times: Vec<i64> = active.iter().filter_map(|r| r.last_seen).collect();
    let (lo, hi) = all_went_quiet_times(&times, window, now)?;
    Some(format!(
        "all {} devices stopped calling in at the same time ({} to {}): the server, its sshd or its network is the likely cause, not the devices",
        times.len(),
        format_utc(lo),
        format_utc(hi)
    ))
}

fn dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// The cells of a row; every device-supplied string made terminal-safe.
fn cells(r: &Row, now: i64) -> Vec<String> {
    let rep = r.report.as_ref().map(|s| &s.report);
    let safe = |s: &str| for_terminal(s, MAX_CELL);
    vec![
        r.id.to_string(),
        r.alias.clone().unwrap_or_else(|| "-".into()),
        r.state.as_str().into(),
        r.last_seen
            .map_or_else(|| "-".into(), |t| format_age(now - t)),
        r.from.as_deref().map_or_else(|| "-".into(), safe),
        dash(r.requested.join(",")),
        dash(
            r.open
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        rep.map_or_else(|| "-".into(), |r| safe(&r.agent_version)),
        rep.and_then(|r| r.uptime_secs)
            .map_or_else(|| "-".into(), |u| format!("{}h", u / 3600)),
        r.error.as_deref().map_or_else(|| "-".into(), safe),
    ]
}

fn print_table(out: &mut Out, rows: &[Row], now: i64) -> Result<()> {
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
    table.extend(rows.iter().map(|r| cells(r, now)));
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
        say!(out, "{}", line.join("  ").trim_end())?;
    }
    if rows.is_empty() {
        say!(out, "(no devices: add one with add-device)")?;
    }
    Ok(())
}

fn print_json(
    out: &mut Out,
    rows: &[Row],
    sources: &[String],
    notes: &[String],
    now: i64,
) -> Result<()> {
    let devices: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "alias": r.alias, "state": r.state.as_str(),
                "last_seen": r.last_seen.map(format_iso), "last_seen_unix": r.last_seen,
                "age_secs": r.last_seen.map(|t| (now - t).max(0)), "seen_by": r.seen_by, "from": r.from,
                "requested": r.requested, "open": r.open,
                "report": r.report.as_ref().map(|s| &s.report),
                "report_received": r.report.as_ref().map(|s| format_iso(s.received)),
                "last_error": r.error,
                "previous_poll_error": r.report.as_ref().and_then(|s| s.report.last_error.clone()),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "now": format_iso(now), "devices": devices, "sources": sources, "notes": notes,
    });
    say!(
        out,
        "{}",
        serde_json::to_string_pretty(&doc).expect("JSON always serialises")
    )
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
