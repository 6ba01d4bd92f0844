//! Port requests: `var/lib/phonehome/requests/<id>.json`, written by
//! forward-device-port (root, under the device's lock), read by the gate (the device's
//! uid, so world-readable, root-owned). Each request carries its expiry, decided by the
//! server's clock; expired requests are dropped whenever the file is written and never
//! served by the gate.

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::store;
use phonehome_protocol::{DeviceId, PortPair};
use serde::{Deserialize, Serialize};

/// Largest requests file read (32 requests take about 3 KB).
pub const MAX_REQUESTS_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub local: u16,
    pub remote: u16,
    /// Unix time it was made (server clock).
    pub created: i64,
    /// Unix time it stops being served (server clock).
    pub expires: i64,
}

impl Request {
    pub fn pair(&self) -> PortPair {
        PortPair {
            local: self.local,
            remote: self.remote,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestsFile {
    device: DeviceId,
    requests: Vec<Request>,
}

/// All requests of a device (expired ones included); none when there is no file.
pub fn load(paths: &Paths, id: &DeviceId) -> Result<Vec<Request>> {
    let path = paths.requests(id);
    let Some(data) = store::read(&path, MAX_REQUESTS_BYTES)? else {
        return Ok(Vec::new());
    };
    let file: RequestsFile = store::parse_json(&data).map_err(|e| {
        Error::new(format!(
            "requests file {} is corrupt ({}); remove it and request the ports again",
            path.display(),
            e
        ))
    })?;
    if file.device != *id {
        return Err(Error::new(format!(
            "requests file {} names device {}; remove it",
            path.display(),
            file.device
        )));
    }
    Ok(file.requests)
}

/// The requests still valid at `now`, sorted by remote port.
pub fn unexpired(mut requests: Vec<Request>, now: i64) -> Vec<Request> {
    requests.retain(|r| r.expires > now);
    requests.sort_by_key(|r| r.remote);
    requests
}

pub fn file_bytes(id: &DeviceId, requests: &[Request]) -> Vec<u8> {
    let file = RequestsFile {
        device: id.clone(),
        requests: requests.to_vec(),
    };
    let mut s = serde_json::to_string_pretty(&file).expect("requests always serialise");
    s.push('\n');
    s.into_bytes()
}

/// Unexpired requests of every device, keyed by id (for cross-device port checks).
pub fn all_unexpired(paths: &Paths, now: i64) -> Result<Vec<(DeviceId, Request)>> {
    let mut out = Vec::new();
    for id in crate::paths::ids_in(&paths.requests_dir(), "read the requests")? {
        for r in unexpired(load(paths, &id)?, now) {
            out.push((id.clone(), r));
        }
    }
    Ok(out)
}
