//! What the gate records of a device's polls: one file, `var/lib/phonehome/status/<id>/
//! status.json`, in the device's own directory (owned by its uid, mode 0700): the
//! heartbeat of the last poll (time by the server's clock, source address, and why the
//! report was refused if it was) and the last *valid* status report with the time it
//! came. One file, so that list-devices reads one file a device. The directory is
//! writable by the device, so readers never follow symlinks and bound every read.

use crate::error::Result;
use crate::paths::Paths;
use crate::store;
use phonehome_protocol::{DeviceId, StatusReport, MAX_STATUS_BYTES};
use serde::{Deserialize, Serialize};

/// Largest status file read: a report and its frame.
pub const MAX_STATUS_FILE_BYTES: u64 = (MAX_STATUS_BYTES * 2 + 1024) as u64;

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

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub heartbeat: Heartbeat,
    #[serde(default)]
    pub report: Option<StoredReport>,
}

/// Parse a status file's bytes; `None` if they are not one.
pub fn parse(data: &[u8]) -> Option<Status> {
    serde_json::from_slice(data).ok()
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

pub fn heartbeat(paths: &Paths, id: &DeviceId) -> Result<Option<Heartbeat>> {
    Ok(read(paths, id)?.map(|s| s.heartbeat))
}

pub fn report(paths: &Paths, id: &DeviceId) -> Result<Option<StoredReport>> {
    Ok(read(paths, id)?.and_then(|s| s.report))
}
