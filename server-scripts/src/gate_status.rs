//! The gate's status files, in `var/lib/phonehome/status/<id>/` (owned by the device's
//! uid, mode 0700): `heartbeat.json`, rewritten on every poll (time by the server's
//! clock, source address, the requests the answer carried, and why the report was
//! refused if it was), `report.json`, the last valid status report (its tunnels
//! updated by what the device said during a held session), and `session.json`, the
//! last held session (the gate's pid, until when, and each tunnel's outcome with the
//! server's time). The directory is writable by the device, so readers here never
//! follow symlinks and bound every read, and take nothing in it for more than the
//! device's own word.

use crate::error::Result;
use crate::paths::Paths;
use crate::store;
use phonehome_protocol::{DeviceId, OutcomeState, StatusReport, MAX_REQUESTS, MAX_STATUS_BYTES};
use serde::{Deserialize, Serialize};

pub const HEARTBEAT_FILE: &str = "heartbeat.json";
pub const REPORT_FILE: &str = "report.json";
pub const SESSION_FILE: &str = "session.json";
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

/// Read a record the gate wrote; `Ok(None)` if missing or unreadable as a record.
/// An I/O error (permission, symlink) is returned so the caller can say so.
fn read<T: for<'de> Deserialize<'de>>(
    paths: &Paths,
    id: &DeviceId,
    file: &str,
) -> Result<Option<T>> {
    let path = paths.status(id).join(file);
    let max = (MAX_STATUS_BYTES * 2 + 1024) as u64;
    Ok(store::read(&path, max)?.and_then(|d| serde_json::from_slice(&d).ok()))
}

pub fn heartbeat(paths: &Paths, id: &DeviceId) -> Result<Option<Heartbeat>> {
    read(paths, id, HEARTBEAT_FILE)
}

pub fn report(paths: &Paths, id: &DeviceId) -> Result<Option<StoredReport>> {
    read(paths, id, REPORT_FILE)
}

pub fn session(paths: &Paths, id: &DeviceId) -> Result<Option<HeldSession>> {
    read(paths, id, SESSION_FILE)
}
