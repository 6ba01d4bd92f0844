//! `last-poll.json`: the outcome of the last poll, kept in the run dir for `status` and
//! for the next poll's report (its error and the inbox lines it refused).

use crate::files::{atomic_write, RunDir};
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
}

impl LastPoll {
    pub fn load(run: &RunDir) -> Option<LastPoll> {
        let data = std::fs::read(run.last_poll()).ok()?;
        serde_json::from_slice(&data).ok()
    }

    pub fn save(&self, run: &RunDir) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(self).expect("serialises");
        atomic_write(&run.last_poll(), &json, 0o600)
            .map_err(|e| format!("cannot write {}: {}", run.last_poll().display(), e))
    }
}

/// `2026-11-21 23:59:00 UTC` from Unix seconds (no time zone database on a router).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        y,
        m,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_305_599), "2026-11-21 23:59:59 UTC");
    }
}
