//! The device registry: one JSON record per device under `var/lib/phonehome/devices/`
//! (id, alias, canonical key, fingerprint, creation time) and the `revoked` list of
//! fingerprints of removed devices. Key files are generated from it, never edited.

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::store;
use phonehome_plumbing::clock;
use phonehome_plumbing::text::quoted;
use phonehome_protocol::DeviceId;
use serde::{Deserialize, Serialize};

/// Largest registry record read.
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Largest revoked list read.
const MAX_REVOKED_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    pub id: DeviceId,
    #[serde(default)]
    pub alias: Option<String>,
    /// `TYPE BASE64`
    pub key: String,
    /// `SHA256:...`
    pub fingerprint: String,
    /// Unix time of `add-device`.
    pub created: i64,
}

impl DeviceRecord {
    pub fn label(&self) -> String {
        match &self.alias {
            Some(a) => format!("{} ({})", self.id, a),
            None => self.id.to_string(),
        }
    }
}

pub fn load(paths: &Paths, id: &DeviceId) -> Result<Option<DeviceRecord>> {
    let path = paths.device_record(id);
    match store::read(&path, MAX_RECORD_BYTES)? {
        None => Ok(None),
        Some(data) => {
            let rec: DeviceRecord = serde_json::from_slice(&data).map_err(|e| {
                Error::new(format!(
                    "registry record {} is corrupt ({}); restore it from a backup or remove the device",
                    path.display(),
                    e
                ))
            })?;
            if rec.id != *id {
                return Err(Error::new(format!(
                    "registry record {} names device {}; restore it from a backup",
                    path.display(),
                    rec.id
                )));
            }
            Ok(Some(rec))
        }
    }
}

/// Every registered device, sorted by id. Files that are not `<id>.json` are ignored.
pub fn list(paths: &Paths) -> Result<Vec<DeviceRecord>> {
    let mut out = Vec::new();
    for id in crate::paths::ids_in(&paths.devices_dir(), "read the registry")? {
        if let Some(rec) = load(paths, &id)? {
            out.push(rec);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A device id typed by an admin: `6466b34bde54` or a MAC notation, nothing else.
pub fn parse_id_arg(s: &str) -> Result<DeviceId> {
    Ok(DeviceId::from_mac_text(s)?)
}

/// Resolve what an admin typed: a device id (or MAC notation) or an alias.
pub fn find(paths: &Paths, name: &str) -> Result<DeviceRecord> {
    if let Ok(id) = parse_id_arg(name) {
        return load(paths, &id)?.ok_or_else(|| {
            Error::new(format!(
                "unknown device {}: see list-devices, or add it with add-device",
                id
            ))
        });
    }
    if phonehome_protocol::validate_alias(name).is_ok() {
        if let Some(rec) = list(paths)?
            .into_iter()
            .find(|r| r.alias.as_deref() == Some(name))
        {
            return Ok(rec);
        }
        return Err(Error::new(format!(
            "unknown device {}: no device has that id or alias; see list-devices",
            quoted(name, 40)
        )));
    }
    Err(Error::usage(format!(
        "invalid device {}: give a device id (12 hex digits, e.g. 6466b34bde54) or an alias",
        quoted(name, 40)
    )))
}

pub fn record_bytes(rec: &DeviceRecord) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(rec).expect("a record always serialises");
    s.push('\n');
    s.into_bytes()
}

/// Fingerprints of revoked keys.
pub fn revoked(paths: &Paths) -> Result<Vec<String>> {
    let data = store::read(&paths.revoked(), MAX_REVOKED_BYTES)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&data)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|fp| fp.starts_with("SHA256:"))
        .map(str::to_string)
        .collect())
}

/// Add `fingerprint device-id time` to the revoked list: the whole file rewritten
/// atomically, so a full disk leaves the old list (and everything else) as it was.
pub fn revoke(paths: &Paths, rec: &DeviceRecord, now: i64) -> Result<()> {
    let path = paths.revoked();
    let mut data = store::read(&path, MAX_REVOKED_BYTES)?.unwrap_or_default();
    if !data.is_empty() && !data.ends_with(b"\n") {
        data.push(b'\n');
    }
    data.extend_from_slice(
        format!(
            "{} {} {}\n",
            rec.fingerprint,
            rec.id,
            clock::format_iso(now)
        )
        .as_bytes(),
    );
    store::write(&path, &data, 0o600)
}
