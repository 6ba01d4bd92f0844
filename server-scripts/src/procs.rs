//! Ending a device's sessions: find every process whose real uid is the device's by
//! walking `/proc/*/status`, SIGTERM them, then SIGKILL what is left. Used by
//! remove-device so that an open tunnel is cut at once. uid 0 is never targeted.

use crate::error::{Error, Result};
use crate::sys;
use std::time::{Duration, Instant};

/// How long processes get to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Pids of processes whose real uid is `uid`.
pub fn pids_of_uid(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok());
        if real == Some(uid) && pid != std::process::id() as i32 {
            out.push(pid);
        }
    }
    out
}

/// SIGTERM every process of `uid`, wait up to TERM_GRACE, SIGKILL the rest.
/// Returns how many processes were signalled.
pub fn kill_uid(uid: u32) -> Result<usize> {
    if uid == 0 {
        return Err(Error::new(
            "refusing to kill the processes of uid 0: the device account must not be root",
        ));
    }
    let first = pids_of_uid(uid);
    for pid in &first {
        let _ = sys::kill(*pid, sys::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < TERM_GRACE && !pids_of_uid(uid).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids_of_uid(uid) {
        let _ = sys::kill(pid, sys::SIGKILL);
    }
    Ok(first.len())
}
