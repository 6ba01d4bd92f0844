//! What watch-devices remembers between runs, in `var/lib/phonehome/watch/` (root
//! 0700): `state.json` (0600) — each device's last known state, the sequence number of
//! the last event, this installation's random event-id prefix, and the events of the
//! last run until they are safely in every outbox — and `watch.lock`, held while a run
//! detects and queues, so that two runs never see the same change twice.
//!
//! Why the events travel inside the state: the new device states and the events they
//! produced are committed in one rename. A crash after it re-queues the same events
//! (same ids: receivers drop the duplicates) on the next run; a crash before it leaves
//! the old state, and the next run finds the same changes again. Either way no change
//! is lost and none gets two ids.

use crate::error::{Context, Error, Result};
use crate::events::Event;
use crate::paths::Paths;
use crate::store;
use phonehome_plumbing::lock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

/// Bumped when what is kept changes meaning.
const FORMAT: u32 = 1;
/// Largest state file read: about 200 bytes a device.
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// Whether a device has been heard from, as watch-devices last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seen {
    /// Never called in.
    Never,
    /// Called in within `offline_after`.
    Up,
    /// Silent for longer than `offline_after`.
    Down,
}

/// Where a requested tunnel stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelPhase {
    Pending,
    Up,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelMemo {
    pub local: u16,
    pub remote: u16,
    pub phase: TunnelPhase,
    #[serde(default)]
    pub reason: Option<String>,
    /// When the request expires (to tell "expired" from "withdrawn" once it is gone).
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMemo {
    #[serde(default)]
    pub alias: Option<String>,
    pub seen: Seen,
    #[serde(default)]
    pub last_seen: Option<i64>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub tunnels: Vec<TunnelMemo>,
    #[serde(default)]
    pub agent_error: Option<String>,
    /// Refused logins up to this time have been judged (alerted, or too few).
    #[serde(default)]
    pub refused_until: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchState {
    pub format: u32,
    /// The prefix of every event id of this installation (random, made once).
    pub instance: String,
    /// The last sequence number given to an event.
    pub seq: u64,
    #[serde(default)]
    pub last_run: Option<i64>,
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceMemo>,
    /// Events committed with this state that may not be in every outbox yet.
    #[serde(default)]
    pub pending: Vec<(u64, Event)>,
}

impl WatchState {
    /// A first state: a fresh instance prefix, nothing seen.
    pub fn fresh() -> Result<WatchState> {
        let mut b = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .context("read", std::path::Path::new("/dev/urandom"))?;
        Ok(WatchState {
            format: FORMAT,
            instance: b.iter().map(|x| format!("{:02x}", x)).collect(),
            ..WatchState::default()
        })
    }

    /// The next event id and its sequence number.
    pub fn next_id(&mut self) -> (u64, String) {
        self.seq += 1;
        (self.seq, format!("{}-{:012}", self.instance, self.seq))
    }
}

fn state_file(paths: &Paths) -> std::path::PathBuf {
    paths.watch_dir().join("state.json")
}

/// The state of the last run; `None` before the first.
pub fn load(paths: &Paths) -> Result<Option<WatchState>> {
    let path = state_file(paths);
    let Some(data) = store::read(&path, MAX_STATE_BYTES)? else {
        return Ok(None);
    };
    let state: WatchState = crate::store::parse_json(&data).map_err(|e| {
        Error::new(format!(
            "{} is corrupt ({}); remove it: the next run starts afresh (and sends no event for what changed meanwhile)",
            path.display(),
            e
        ))
    })?;
    if state.format != FORMAT {
        return Err(Error::new(format!(
            "{} was written by another version of watch-devices; remove it to start afresh",
            path.display()
        )));
    }
    Ok(Some(state))
}

/// Commit `state` (fsynced, then renamed).
pub fn save(paths: &Paths, state: &WatchState) -> Result<()> {
    store::ensure_dir(&paths.watch_dir(), 0o700)?;
    let data = serde_json::to_vec(state).expect("the state serialises");
    store::write(&state_file(paths), &data, 0o600)
}

/// Held while a run detects and queues.
pub struct Held {
    _file: std::fs::File,
}

/// Take the watch lock, waiting for another run's detection (a short one) to end.
pub fn lock(paths: &Paths) -> Result<Held> {
    store::ensure_dir(&paths.watch_dir(), 0o700)?;
    let path = paths.watch_dir().join("watch.lock");
    let file = lock::open(&path).context("open the lock", &path)?;
    lock::exclusive(&file).context("lock", &path)?;
    Ok(Held { _file: file })
}
