//! The status report: JSON the agent sends on the poll's stdin, and the gate stores
//! for `list-devices` and `forward-device-port --wait`. It is how a device tells the
//! admin why a tunnel is not up (port busy, refused, host key, auth).
//!
//! The gate treats it as hostile input: at most `MAX_STATUS_BYTES`, strict JSON, every
//! string bounded and free of control characters and bidi overrides
//! (`StatusReport::validate`; they would reach the admin's terminal). Unknown fields
//! are ignored so that a newer agent can talk to an older server.

use crate::{
    check_text, Invalid, MAX_HOLD_SECS, MAX_REPORTED_ERRORS, MAX_REQUESTS, MAX_STATUS_BYTES,
    MAX_TEXT_LEN, MAX_VERSION_LEN,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelState {
    /// The tunnel's ssh process is alive.
    Running,
    /// The tunnel's ssh process exited; `last_error` says why. The agent retries it on
    /// the next poll while it is still requested.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelStatus {
    pub local: u16,
    pub remote: u16,
    pub state: TunnelState,
    /// Unix time the current (or last) tunnel process was started, by the device clock.
    #[serde(default)]
    pub since: Option<u64>,
    /// How many times the agent has had to restart this tunnel.
    #[serde(default)]
    pub restarts: u32,
    /// The last error the tunnel's ssh client printed, one line.
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusReport {
    /// `PROTOCOL_VERSION` of the agent.
    pub protocol: u32,
    pub agent_version: String,
    /// The ssh client in use, e.g. `dbclient 2022.83` or `ssh OpenSSH_9.2p1`.
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    #[serde(default)]
    pub load1: Option<f64>,
    #[serde(default)]
    pub mem_available_kb: Option<u64>,
    #[serde(default)]
    pub tunnels: Vec<TunnelStatus>,
    /// Inbox lines the agent refused on its previous poll.
    #[serde(default)]
    pub inbox_errors: Vec<String>,
    /// Why the previous poll failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Protocol 3: the agent can hold this session up to so many seconds (its stdin
    /// stays open after this report's line, see `HOLD_PROTOCOL`); absent: it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<u64>,
}

impl StatusReport {
    /// Parse a report read from a device, bounded and validated.
    pub fn from_device(data: &[u8]) -> Result<StatusReport, Invalid> {
        if data.len() > MAX_STATUS_BYTES {
            return Err(Invalid(format!(
                "status report larger than {} bytes",
                MAX_STATUS_BYTES
            )));
        }
        let report: StatusReport = serde_json::from_slice(data)
            .map_err(|e| Invalid(format!("status report is not valid JSON: {}", e)))?;
        report.validate()?;
        Ok(report)
    }

    /// Check every bound a stored report must respect.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_text("agent_version", &self.agent_version, MAX_VERSION_LEN)?;
        for (field, text) in [("client", &self.client), ("last_error", &self.last_error)] {
            if let Some(t) = text {
                check_text(field, t, MAX_TEXT_LEN)?;
            }
        }
        if self.tunnels.len() > MAX_REQUESTS {
            return Err(Invalid(format!(
                "status report lists more than {} tunnels",
                MAX_REQUESTS
            )));
        }
        for t in &self.tunnels {
            if t.local == 0 || t.remote == 0 {
                return Err(Invalid(
                    "status report has an invalid tunnel entry (port 0)".into(),
                ));
            }
            if let Some(e) = &t.last_error {
                check_text("a tunnel's last_error", e, MAX_TEXT_LEN)?;
            }
        }
        if self.inbox_errors.len() > MAX_REPORTED_ERRORS {
            return Err(Invalid(format!(
                "status report has more than {} inbox errors",
                MAX_REPORTED_ERRORS
            )));
        }
        for e in &self.inbox_errors {
            check_text("an inbox error", e, MAX_TEXT_LEN)?;
        }
        if self.hold.is_some_and(|h| h > MAX_HOLD_SECS) {
            return Err(Invalid(format!(
                "status report offers a hold over {} s",
                MAX_HOLD_SECS
            )));
        }
        if self.load1.is_some_and(|l| !l.is_finite() || l < 0.0) {
            return Err(Invalid("status report has an invalid load".into()));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a status report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    fn sample() -> StatusReport {
        StatusReport {
            protocol: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            client: Some("dbclient 2022.83".into()),
            uptime_secs: Some(3600),
            load1: Some(0.25),
            mem_available_kb: Some(20480),
            tunnels: vec![TunnelStatus {
                local: 22,
                remote: 9876,
                state: TunnelState::Failed,
                since: Some(1_700_000_000),
                restarts: 2,
                last_error: Some("remote port forwarding failed for listen port 9876".into()),
            }],
            inbox_errors: vec!["inbox line 2: duplicate request 22:9876".into()],
            last_error: None,
            hold: Some(55),
        }
    }

    #[test]
    fn round_trips_through_json() {
        let r = sample();
        let json = r.to_json();
        assert!(json.contains("\"state\":\"failed\""), "{}", json);
        assert_eq!(StatusReport::from_device(json.as_bytes()).unwrap(), r);
    }

    #[test]
    fn minimal_report_and_unknown_fields_are_accepted() {
        let r =
            StatusReport::from_device(br#"{"protocol":1,"agent_version":"9.9","future":[1,2]}"#)
                .unwrap();
        assert_eq!(r.agent_version, "9.9");
        assert!(r.tunnels.is_empty());
    }

    #[test]
    fn hostile_reports_are_refused() {
        let too_big = vec![b' '; MAX_STATUS_BYTES + 1];
        assert!(StatusReport::from_device(&too_big)
            .unwrap_err()
            .0
            .contains("larger"));
        for bad in [
            &b"not json"[..],
            b"\xff\xfe",
            b"{}",
            b"[]",
            br#"{"protocol":1,"agent_version":"1","tunnels":[{"local":0,"remote":1,"state":"running"}]}"#,
            br#"{"protocol":1,"agent_version":"1","tunnels":[{"local":1,"remote":70000,"state":"running"}]}"#,
            br#"{"protocol":1,"agent_version":"1","tunnels":[{"local":1,"remote":2,"state":"exploded"}]}"#,
            br#"{"protocol":-1,"agent_version":"1"}"#,
        ] {
            assert!(StatusReport::from_device(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut r = sample();
        r.last_error = Some("x".repeat(MAX_TEXT_LEN + 1));
        assert!(StatusReport::from_device(r.to_json().as_bytes()).is_err());
        let mut r = sample();
        r.inbox_errors = vec!["e".into(); MAX_REPORTED_ERRORS + 1];
        assert!(StatusReport::from_device(r.to_json().as_bytes()).is_err());
        let mut r = sample();
        r.hold = Some(MAX_HOLD_SECS + 1);
        assert!(StatusReport::from_device(r.to_json().as_bytes()).is_err());
        assert!(!StatusReport {
            hold: None,
            ..sample()
        }
        .to_json()
        .contains("hold"));
    }

    #[test]
    fn threat_25_terminal_control_in_any_string_is_refused() {
        let hostile = "0.1\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}\u{202e}";
        let mutations: [fn(&mut StatusReport, &str); 5] = [
            |r, h| r.agent_version = h.into(),
            |r, h| r.client = Some(h.into()),
            |r, h| r.last_error = Some(h.into()),
            |r, h| r.tunnels[0].last_error = Some(h.into()),
            |r, h| r.inbox_errors = vec![h.into()],
        ];
        for (i, m) in mutations.iter().enumerate() {
            for bad in [hostile, "a\u{85}b", "tab\there", "del\u{7f}"] {
                let mut r = sample();
                m(&mut r, bad);
                let e = StatusReport::from_device(r.to_json().as_bytes()).unwrap_err();
                assert!(e.0.contains("control character"), "mutation {}: {}", i, e);
            }
        }
        let mut r = sample();
        r.agent_version = "x".repeat(MAX_VERSION_LEN + 1);
        assert!(StatusReport::from_device(r.to_json().as_bytes()).is_err());
    }
}
