//! The gate's status files, in `var/lib/phonehome/status/<id>/` (owned by the device's
//! uid, mode 0700): `heartbeat.json`, rewritten on every poll (time by the server's
//! clock, source address, and why the report was refused if it was), and
//! `report.json`, the last valid status report. The directory is writable by the
//! device, so readers here never follow symlinks and bound every read.

use crate::error::Result;
use crate::paths::Paths;
use crate::store;
use phonehome_protocol::{DeviceId, StatusReport, MAX_STATUS_BYTES};
use serde::{Deserialize, Serialize};

pub const HEARTBEAT_FILE: &str = "heartbeat.json";
pub const REPORT_FILE: &str = "report.json";

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    pub received: i64,
    pub report: StatusReport,
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
