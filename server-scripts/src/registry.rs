//! The device registry: one file, `var/lib/phonehome/devices.json`, holding a record per
//! device (id, alias, canonical key, fingerprint, creation time), sorted by id; and the
//! `revoked` list of fingerprints of removed devices. Key files are generated from it,
//! never edited. add-device and remove-device rewrite the file atomically under the
//! registry lock; everyone else reads it whole, without a lock (a rename is atomic).
//! One file, because list-devices and add-device read every record: for a fleet of
//! 10,000 that is one read instead of 10,000 opens.

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::store;
use phonehome_plumbing::clock;
use phonehome_plumbing::files::Pending;
use phonehome_plumbing::text::quoted;
use phonehome_protocol::DeviceId;
use serde::{Deserialize, Serialize};

/// Largest registry read: about 250 bytes a device, room for well over 100,000.
const MAX_REGISTRY_BYTES: u64 = 256 * 1024 * 1024;
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

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    devices: Vec<DeviceRecord>,
}

/// Every registered device, sorted by id.
pub fn list(paths: &Paths) -> Result<Vec<DeviceRecord>> {
    let path = paths.registry();
    let Some(data) = store::read(&path, MAX_REGISTRY_BYTES)? else {
        return Ok(Vec::new());
    };
    let mut file: RegistryFile = store::parse_json(&data).map_err(|e| {
        Error::new(format!(
            "the registry {} is corrupt ({}); restore it from a backup",
            path.display(),
            e
        ))
    })?;
    file.devices.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = file.devices.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(Error::new(format!(
            "the registry {} names device {} twice; restore it from a backup",
            path.display(),
            w[0].id
        )));
    }
    Ok(file.devices)
}

/// The record of device `id`, if registered.
pub fn load(paths: &Paths, id: &DeviceId) -> Result<Option<DeviceRecord>> {
    let all = list(paths)?;
    Ok(all
        .binary_search_by(|r| r.id.cmp(id))
        .ok()
        .map(|i| all[i].clone()))
}

/// The registry with `rec` added (or replacing the record of its id), written but not
/// renamed yet. Call under the registry lock.
pub fn prepare_with(paths: &Paths, rec: DeviceRecord) -> Result<Pending> {
    let mut all = list(paths)?;
    all.retain(|r| r.id != rec.id);
    all.push(rec);
    prepare(paths, all)
}

/// The registry without device `id`, written but not renamed yet. Call under the
/// registry lock.
pub fn prepare_without(paths: &Paths, id: &DeviceId) -> Result<Pending> {
    let mut all = list(paths)?;
    all.retain(|r| r.id != *id);
    prepare(paths, all)
}

fn prepare(paths: &Paths, mut devices: Vec<DeviceRecord>) -> Result<Pending> {
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    let mut data = serde_json::to_vec(&RegistryFile { devices }).expect("a registry serialises");
    data.push(b'\n');
    store::ensure_dir(&paths.state(), 0o755)?;
    store::prepare(&paths.registry(), &data, 0o600)
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

/// Add `fingerprint device-id time` to the revoked list (once): the whole file
/// rewritten atomically, so a full disk leaves the old list (and everything else) as
/// it was.
pub fn revoke(paths: &Paths, rec: &DeviceRecord, now: i64) -> Result<()> {
    if revoked(paths)?.contains(&rec.fingerprint) {
        return Ok(());
    }
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
