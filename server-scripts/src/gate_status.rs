//! What the gate records of a device's polls: one file, `var/lib/phonehome/status/<id>/
//! status.json`, in the device's own directory (owned by its uid, mode 0700): the
//! heartbeat of the last poll (time by the server's clock, source address, the
//! requests the answer carried, and why the report was refused if it was), the last
//! *valid* status report with the time it came (its tunnels updated by what the device
//! said during a held session), and the last held session (the gate's pid, until when,
//! each tunnel's outcome with the server's time). One file, so that list-devices reads
//! one file a device; the gate changes it only under the device's `status.lock`, so a
//! held session's gate and a newer login never undo each other's writes.
//!
//! The directory is writable by the device, so readers never follow symlinks and bound
//! every read, and take nothing in it for more than the device's own word.

use crate::error::Result;
use crate::paths::Paths;
use crate::store;
use phonehome_plumbing::{files, lock};
use phonehome_protocol::{
    DeviceId, OutcomeState, StatusReport, MAX_OUTCOME_LINE, MAX_REQUESTS, MAX_STATUS_BYTES,
};
use serde::{Deserialize, Serialize};

/// Largest status file read: a report and its frame, and a held session's outcomes
/// (JSON may double a text in escaping it).
pub const MAX_STATUS_FILE_BYTES: u64 =
    (MAX_STATUS_BYTES * 2 + MAX_REQUESTS * (2 * MAX_OUTCOME_LINE + 256) + 1024) as u64;
/// The lock the gate takes to change a device's status file.
pub const STATUS_LOCK_FILE: &str = "status.lock";
/// The per-device lock a held session keeps (a device holds one session at most).
pub const HOLD_LOCK_FILE: &str = "hold.lock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Unix time the gate ran (server clock).
    pub received: i64,
    /// Source address and port from SSH_CONNECTION.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Why the status report of this poll was refused, if it was.
    #[serde(default)]
    pub report_error: Option<String>,
    /// The requests the answer carried, `local:remote`.
    #[serde(default)]
    pub served: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    pub received: i64,
    pub report: StatusReport,
    /// When an outcome of a held session last changed `report.tunnels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
}

/// A held session, as its gate records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldSession {
    /// The gate holding it, and its start time (`/proc/<pid>/stat`), to tell it from a
    /// process that reuses the pid.
    pub pid: u32,
    pub start_time: u64,
    /// Server times: when it began, when the gate ends it at the latest, and when it
    /// ended (absent while it lasts).
    pub since: i64,
    pub until: i64,
    #[serde(default)]
    pub ended: Option<i64>,
    /// The last outcome of each tunnel the device reported in this session.
    #[serde(default)]
    pub outcomes: Vec<TunnelOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelOutcome {
    pub local: u16,
    pub remote: u16,
    pub state: OutcomeState,
    /// Server time the gate read it.
    pub at: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

impl HeldSession {
    /// Record `o` for its tunnel (replacing that tunnel's previous one), keeping at
    /// most `MAX_REQUESTS` tunnels: the oldest go first.
    pub fn record(&mut self, o: TunnelOutcome) {
        self.outcomes
            .retain(|x| !(x.local == o.local && x.remote == o.remote));
        self.outcomes.push(o);
        if self.outcomes.len() > MAX_REQUESTS {
            self.outcomes.remove(0);
        }
    }

    /// True while its gate still runs and has not said it ended.
    pub fn is_live(&self, now: i64) -> bool {
        self.ended.is_none()
            && self.until > now
            && phonehome_plumbing::process::stat(self.pid)
                .is_some_and(|s| s.start_time == self.start_time && !s.is_dead())
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub heartbeat: Heartbeat,
    #[serde(default)]
    pub report: Option<StoredReport>,
    /// The last held session (protocol 3), live or ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<HeldSession>,
}

/// Parse a status file's bytes; `None` if they are not one.
pub fn parse(data: &[u8]) -> Option<Status> {
    store::parse_json(data).ok()
}

/// A device's status; `Ok(None)` if missing or unreadable as a record. An I/O error
/// (permission, a symlink) is returned so the caller can say so.
pub fn read(paths: &Paths, id: &DeviceId) -> Result<Option<Status>> {
    Ok(store::read(&paths.status_file(id), MAX_STATUS_FILE_BYTES)?.and_then(|d| parse(&d)))
}

/// Every device's status through one open handle on the status directory (what
/// list-devices reads for the whole fleet).
pub struct Reader {
    dir: Option<phonehome_plumbing::files::Dir>,
}

impl Reader {
    pub fn new(paths: &Paths) -> Reader {
        Reader {
            dir: phonehome_plumbing::files::Dir::open(&paths.status_dir()).ok(),
        }
    }

    /// As [`read`]; the error names the file.
    pub fn read(&self, paths: &Paths, id: &DeviceId) -> Result<Option<Status>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let rel = std::path::Path::new(id.as_str()).join("status.json");
        dir.read_bounded(&rel, MAX_STATUS_FILE_BYTES)
            .map(|d| d.and_then(|d| parse(&d)))
            .map_err(|e| crate::error::Error::io("read", &paths.status_file(id), e))
    }
}

/// Change a device's status file (the gate, as the device): under its lock, read it,
/// let `change` make the new one from it (`None`: leave it as it is), write it (no
/// fsync: it is rewritten every poll).
pub fn update(
    paths: &Paths,
    id: &DeviceId,
    change: impl FnOnce(Option<Status>) -> Option<Status>,
) -> std::io::Result<()> {
    let dir = paths.status(id);
    let guard = lock::open(&dir.join(STATUS_LOCK_FILE))?;
    lock::exclusive(&guard)?;
    let file = paths.status_file(id);
    let old = files::read_bounded(&file, MAX_STATUS_FILE_BYTES)
        .ok()
        .flatten()
        .and_then(|d| parse(&d));
    match change(old) {
        Some(new) => {
            let json = serde_json::to_vec(&new).expect("a status serialises");
            files::write(&file, &json, 0o600, false)
        }
        None => Ok(()),
    }
}

/// A device's last held session.
pub fn session(paths: &Paths, id: &DeviceId) -> Result<Option<HeldSession>> {
    Ok(read(paths, id)?.and_then(|s| s.session))
}
