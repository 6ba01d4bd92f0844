//! What the server knows about each device, computed in one place for every command
//! that reports on the fleet (`list-devices`, `watch-devices`): the registry, the
//! gate's status files, sshd's log (through the incremental scan of `logcache`), the
//! requests and the listening sockets, read once, then one `Row` per device with its
//! last heartbeat, its state, its requested and open tunnels and what is wrong.
//! list-devices renders the rows; watch-devices compares them with the previous run.
//! Nothing here writes under `var/lib/phonehome`.

use crate::accounts::Db;
use crate::config::ServerConf;
use crate::error::{Error, Result};
use crate::gate_status::{self, Heartbeat, Status, StoredReport};
use crate::listeners;
use crate::logcache;
use crate::logscan::{self, Filter, Hits};
use crate::paths::Paths;
use crate::registry::{self, DeviceRecord};
use crate::requests::{self, Request};
use phonehome_plumbing::clock::now;
use phonehome_plumbing::files::{self, Follow};
use phonehome_plumbing::text::Ip;
use phonehome_plumbing::threads;
use phonehome_protocol::{DeviceId, TunnelState};
use std::path::PathBuf;

/// The status files of a large fleet are read by this many threads at most, each
/// reading at least `MIN_STATUS_CHUNK` of them.
const MAX_STATUS_THREADS: usize = 4;
const MIN_STATUS_CHUNK: usize = 1000;

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
    pub fn as_str(self) -> &'static str {
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

/// One device as the server sees it now.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: DeviceId,
    pub alias: Option<String>,
    pub state: State,
    pub last_seen: Option<i64>,
    pub seen_by: Option<&'static str>,
    pub from: Option<String>,
    /// Unexpired requests, by remote port.
    pub requests: Vec<Request>,
    /// Loopback ports the device's uid listens on.
    pub open: Vec<u16>,
    /// The device account's uid, when it has one.
    pub uid: Option<u32>,
    pub heartbeat: Option<Heartbeat>,
    pub report: Option<StoredReport>,
    /// What is wrong now.
    pub error: Option<String>,
}

/// What the logs gave.
pub struct Scan {
    pub hits: Hits,
    pub read: Vec<String>,
    pub failed: Vec<String>,
}

/// Everything the rows are made of, read once.
pub struct Sources {
    pub conf: ServerConf,
    pub now: i64,
    pub scan: Scan,
    /// Devices with a requests file (the others have none).
    with_requests: std::collections::HashSet<DeviceId>,
    /// The gate can write its records (the disk is not full).
    pub gate_writable: bool,
    pub passwd: Db,
    pub listening: listeners::Index,
}

/// The whole fleet: the registry, the sources, a row per registered device and one per
/// removed device whose history is still on disk.
pub struct Fleet {
    pub devices: Vec<DeviceRecord>,
    pub src: Sources,
    pub rows: Vec<Row>,
    pub removed: Vec<Row>,
}

/// Read everything and make the rows. `explicit`: `--log` files (else the default
/// sources); `use_cache`: resume the log scan from the cursors of earlier runs. The
/// registry and the gate's status files (a file a device, mostly system time) are read
/// while the logs are scanned.
pub fn read(paths: &Paths, explicit: &[PathBuf], use_cache: bool) -> Result<Fleet> {
    let (records, src) = std::thread::scope(|s| {
        // The logs do not depend on the registry: their scan starts first.
        let src = s.spawn(|| gather(paths, explicit, use_cache));
        let records = registry::list(paths).map(|devices| {
            let statuses = read_statuses(paths, &devices);
            let removed = removed_rows(paths, &devices);
            (devices, statuses, removed)
        });
        let src = threads::rejoin(src);
        (records, src)
    });
    let (devices, statuses, removed) = records?;
    let src = src?;
    let rows = devices
        .iter()
        .zip(statuses)
        .map(|(d, status)| device_row(paths, &src, d, status))
        .collect();
    Ok(Fleet {
        devices,
        src,
        rows,
        removed,
    })
}

/// Every device's status file, in the order of `devices`: by several threads when the
/// fleet is large (the cost is the kernel's, a file at a time, and it shares cores well).
fn read_statuses(paths: &Paths, devices: &[DeviceRecord]) -> Vec<Result<Option<Status>>> {
    let reader = gate_status::Reader::new(paths);
    let per_thread = devices
        .len()
        .div_ceil(threads::cores().min(MAX_STATUS_THREADS))
        .max(MIN_STATUS_CHUNK);
    threads::map(devices, per_thread, |d| reader.read(paths, &d.id))
}

/// `--log` files must exist and be regular files (a FIFO or /dev/zero would hang).
pub fn explicit_logs(names: &[String]) -> Result<Vec<PathBuf>> {
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

fn gather(paths: &Paths, explicit: &[PathBuf], use_cache: bool) -> Result<Sources> {
    let conf = ServerConf::load(paths)?;
    let now = now();
    let filter = Filter {
        hosts: conf.log_hosts.clone(),
        now,
    };
    let files = if explicit.is_empty() {
        logscan::default_files(&paths.log_dir())
    } else {
        explicit.to_vec()
    };
    let out = logcache::scan(paths, &files, &filter, use_cache);
    log::info!(
        "logs: {} bytes read, {} bytes known from earlier runs",
        out.bytes_read,
        out.bytes_reused
    );
    let mut scan = Scan {
        hits: out.hits,
        read: out.read,
        failed: out.failed,
    };
    if files.is_empty() && paths.is_system() {
        match logscan::scan_journal(&filter) {
            Ok(h) => {
                scan.hits.merge(h);
                scan.read.push("journald".into());
            }
            Err(e) => scan.failed.push(format!("journald: {}", e)),
        }
    }
    Ok(Sources {
        conf,
        now,
        scan,
        with_requests: crate::paths::ids_in(&paths.requests_dir(), "read the requests")?
            .into_iter()
            .collect(),
        gate_writable: !disk_full(paths),
        passwd: Db::load(paths).unwrap_or_default(),
        listening: listeners::Index::new(listeners::all()),
    })
}

/// The newest heartbeat in sshd's log: a login with the device's registered key, not
/// from the future. `Err(())` when the log holds only logins from the future.
pub fn log_login(
    src: &Sources,
    d: &DeviceRecord,
) -> Option<std::result::Result<logscan::Login, ()>> {
    src.scan.hits.latest(&d.id, &d.fingerprint, src.now)
}

/// The row of `d`, whose status file said `status`.
fn device_row(
    paths: &Paths,
    src: &Sources,
    d: &DeviceRecord,
    status: Result<Option<Status>>,
) -> Row {
    let id = &d.id;
    let (status, status_err) = match status {
        Ok(s) => (s, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (hb, report) = match status {
        Some(Status {
            heartbeat, report, ..
        }) => (Some(heartbeat), report),
        None => (None, None),
    };
    let account = id.account();
    let login = log_login(src, d).and_then(|l| l.ok());
    let (last_seen, seen_by, from) = newest(hb.as_ref(), login.as_ref());
    let sources_readable = (status_err.is_none() && src.gate_writable) || !src.scan.read.is_empty();
    let state = state(src, last_seen, sources_readable);
    let requests = if src.with_requests.contains(id) {
        requests::unexpired(requests::load(paths, id).unwrap_or_default(), src.now)
    } else {
        Vec::new()
    };
    let uid = src
        .passwd
        .by_name(&account)
        .map(|a| a.uid)
        .filter(|u| *u != 0);
    let open = uid.map_or_else(Vec::new, |u| src.listening.loopback_ports(u).to_vec());
    let error = current_error(hb.as_ref(), report.as_ref()).or(status_err);
    Row {
        id: id.clone(),
        alias: d.alias.clone(),
        state,
        last_seen,
        seen_by,
        from,
        requests,
        open,
        uid,
        heartbeat: hb,
        report,
        error,
    }
}

fn state(src: &Sources, last_seen: Option<i64>, readable: bool) -> State {
    let stale_after = src.conf.stale_after();
    match last_seen.map(|t| src.now - t) {
        Some(age) if age <= src.conf.online_window() => State::Online,
        Some(age) if age <= stale_after => State::Stale,
        Some(_) if readable => State::Offline,
        None if readable => State::Never,
        _ => State::Unknown,
    }
}

fn newest(
    hb: Option<&Heartbeat>,
    login: Option<&logscan::Login>,
) -> (Option<i64>, Option<&'static str>, Option<String>) {
    match (hb, login) {
        (Some(h), Some(l)) if l.time > h.received => {
            (Some(l.time), Some("sshd log"), Some(Ip(l.from).to_string()))
        }
        (Some(h), _) => (Some(h.received), Some("gate"), h.from.clone()),
        (None, Some(l)) => (Some(l.time), Some("sshd log"), Some(Ip(l.from).to_string())),
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

/// Whether the device called in within `offline_after` (what watch-devices alerts on
/// and the metrics show); `None` when no heartbeat source could be read.
pub fn up(src: &Sources, row: &Row) -> Option<bool> {
    if row.state == State::Unknown || row.state == State::Removed {
        return None;
    }
    Some(
        row.last_seen
            .is_some_and(|t| src.now - t <= src.conf.offline_after()),
    )
}

/// What the device reported as wrong with its polls: a status report the gate refused,
/// the failure of its previous poll, or a request it refused. (A failed tunnel is the
/// tunnel's own matter: see [`tunnel`].)
pub fn agent_error(row: &Row) -> Option<String> {
    if let Some(e) = row.heartbeat.as_ref().and_then(|h| h.report_error.as_ref()) {
        return Some(format!("status report refused: {}", e));
    }
    let r = &row.report.as_ref()?.report;
    if let Some(e) = &r.last_error {
        return Some(format!("poll failed: {}", e));
    }
    r.inbox_errors
        .first()
        .map(|e| format!("request refused: {}", e))
}

/// Where a requested tunnel stands, as far as the server can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tunnel {
    /// Requested; not (yet) listening, no failure known.
    Pending,
    /// The device's uid, and only it, listens on the remote port.
    Up,
    /// Why it cannot be up: another process holds the port, or the device says so.
    Failed(String),
}

/// The tunnel of request `req` of `row`: up when the device's uid, and only it, listens
/// on the port; failed when the device's report (newer than the request) says so, with
/// its reason, or when the device got only part of the port (sshd binds `localhost` as
/// 127.0.0.1 and ::1 and calls a forward good when one of them works) and another
/// process holds the rest; else pending. (Another process holding the whole port makes
/// the device's tunnel fail, and the device says why at its next poll.)
pub fn tunnel(src: &Sources, row: &Row, req: &Request) -> Tunnel {
    let on_port = src.listening.on_port(req.remote);
    let Some(uid) = row.uid else {
        return Tunnel::Pending;
    };
    if listeners::held_only_by(on_port, uid) {
        return Tunnel::Up;
    }
    if let Some(why) = row.report.as_ref().and_then(|r| reported_failure(r, req)) {
        return Tunnel::Failed(why);
    }
    let other = on_port.iter().find(|l| l.uid != uid);
    match other {
        Some(l) if on_port.iter().any(|m| m.uid == uid) => {
            let who = src
                .passwd
                .by_uid(l.uid)
                .map_or_else(|| format!("uid {}", l.uid), |a| a.name.clone());
            Tunnel::Failed(format!(
                "port {} is held by {} on {} of the server: the device got only part of it",
                req.remote, who, l.addr
            ))
        }
        _ => Tunnel::Pending,
    }
}

/// Why the device says the tunnel of `req` failed, if its report (or a held session's
/// update of it) is newer than the request and says so.
pub fn reported_failure(stored: &StoredReport, req: &Request) -> Option<String> {
    if stored.received.max(stored.updated.unwrap_or(0)) < req.created {
        return None;
    }
    let t = stored.report.tunnels.iter().find(|t| {
        t.remote == req.remote && t.local == req.local && t.state == TunnelState::Failed
    })?;
    Some(
        t.last_error
            .clone()
            .unwrap_or_else(|| "no reason given".into()),
    )
}

/// Devices removed with remove-device whose status history is still on disk.
fn removed_rows(paths: &Paths, devices: &[DeviceRecord]) -> Vec<Row> {
    let Ok(entries) = std::fs::read_dir(paths.status_dir()) else {
        return Vec::new();
    };
    let registered: std::collections::HashSet<&str> =
        devices.iter().map(|d| d.id.as_str()).collect();
    let mut rows: Vec<Row> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            if registered.contains(name) {
                return None;
            }
            DeviceId::parse(name).ok()
        })
        .map(|id| {
            let status = gate_status::read(paths, &id).ok().flatten();
            let hb = status.as_ref().map(|s| s.heartbeat.clone());
            Row {
                report: status.and_then(|s| s.report),
                id,
                alias: None,
                state: State::Removed,
                last_seen: hb.as_ref().map(|h| h.received),
                seen_by: hb.as_ref().map(|_| "gate"),
                from: hb.as_ref().and_then(|h| h.from.clone()),
                requests: Vec::new(),
                open: Vec::new(),
                uid: None,
                heartbeat: hb,
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

#[cfg(test)]
mod tests {
    use super::*;
    use phonehome_protocol::{StatusReport, TunnelStatus};

    fn report(received: i64, state: TunnelState, err: Option<&str>) -> StoredReport {
        StoredReport {
            received,
            report: StatusReport {
                tunnels: vec![TunnelStatus {
                    local: 22,
                    remote: 9876,
                    state,
                    since: None,
                    restarts: 0,
                    last_error: err.map(str::to_string),
                }],
                ..StatusReport::default()
            },
            updated: None,
        }
    }

    #[test]
    fn a_failure_counts_only_from_a_report_newer_than_the_request() {
        let req = Request {
            local: 22,
            remote: 9876,
            created: 100,
            expires: 1000,
        };
        let failed = report(150, TunnelState::Failed, Some("port busy"));
        assert_eq!(
            reported_failure(&failed, &req).as_deref(),
            Some("port busy")
        );
        assert_eq!(
            reported_failure(&report(50, TunnelState::Failed, None), &req),
            None
        );
        assert_eq!(
            reported_failure(&report(150, TunnelState::Running, None), &req),
            None
        );
        let other = Request { local: 80, ..req };
        assert_eq!(reported_failure(&failed, &other), None);
        // A report from before the request that a held session updated after it.
        let updated = StoredReport {
            updated: Some(120),
            ..report(50, TunnelState::Failed, Some("port busy"))
        };
        assert_eq!(
            reported_failure(&updated, &req).as_deref(),
            Some("port busy")
        );
    }
}
