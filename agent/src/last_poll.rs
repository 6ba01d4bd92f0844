//! `last-poll.json`: the outcome of the last poll, kept in the run dir for `status` and
//! for the next poll's report (its error and the inbox lines it refused), and what the
//! gate's framing said of it (a gate older than protocol 3 is not offered a hold).

use crate::rundir::RunDir;
use phonehome_plumbing::files;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastPoll {
    /// Unix time the poll finished.
    pub time: u64,
    pub ok: bool,
    /// Why it failed (one line: advice and the client's own words).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
    /// The requests the server answered with, `local:remote`.
    #[serde(default)]
    pub requests: Vec<String>,
    /// Inbox lines refused, for the next report.
    #[serde(default)]
    pub inbox_errors: Vec<String>,
    #[serde(default)]
    pub duration_ms: u64,
    /// The protocol of the gate's last answer (2: it cannot hold a session).
    #[serde(default)]
    pub gate_protocol: Option<u32>,
    /// How long the session was held, if it was, and how many frames it brought.
    #[serde(default)]
    pub held_secs: Option<u64>,
    #[serde(default)]
    pub frames: u32,
    /// Why the held session ended.
    #[serde(default)]
    pub held_end: Option<String>,
}

impl LastPoll {
    pub fn load(run: &RunDir) -> Option<LastPoll> {
        let data = files::read_bounded(&run.last_poll(), MAX_LAST_POLL_BYTES).ok()??;
        serde_json::from_slice(&data).ok()
    }

    /// Written without fsync: the run dir is a tmpfs (OpenWrt's /var/run), emptied at
    /// boot anyway.
    pub fn save(&self, run: &RunDir) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(self).expect("serialises");
        files::write(&run.last_poll(), &json, 0o600, false)
            .map_err(|e| format!("cannot write {}: {}", run.last_poll().display(), e))
    }
}

/// Largest last-poll record read (a real one is under 2 KB).
const MAX_LAST_POLL_BYTES: u64 = 64 * 1024;
