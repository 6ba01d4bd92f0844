//! The status report sent on every poll's stdin: agent and client version, uptime, load,
//! free memory, each tunnel's state and last error, and what went wrong on the previous
//! poll (its error and the inbox lines it refused). Built from plain data so that it can
//! be tested without /proc.

use crate::last_poll::LastPoll;
use crate::tunnels::Observed;
use phonehome_plumbing::text::for_terminal;
use phonehome_protocol::{
    truncate_text, StatusReport, TunnelState, TunnelStatus, MAX_REPORTED_ERRORS, MAX_REQUESTS,
    MAX_TEXT_LEN, PROTOCOL_VERSION,
};

/// Host figures read from /proc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostInfo {
    pub uptime_secs: Option<u64>,
    pub load1: Option<f64>,
    pub mem_available_kb: Option<u64>,
}

impl HostInfo {
    pub fn read() -> HostInfo {
        let read = |p: &str| phonehome_plumbing::files::read_kernel_text(p).unwrap_or_default();
        HostInfo {
            uptime_secs: parse_uptime(&read("/proc/uptime")),
            load1: parse_load1(&read("/proc/loadavg")),
            mem_available_kb: parse_mem_available(&read("/proc/meminfo")),
        }
    }
}

/// `/proc/uptime`: "12345.67 2345.67" → 12345.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    first.split('.').next()?.parse().ok()
}

/// `/proc/loadavg`: "0.25 0.10 0.05 1/123 4567" → 0.25.
///
/// The kernel writes the load as plain decimal digits (`%lu.%02lu`); they are read by
/// hand because `str::parse::<f64>` links its general algorithm and tables (15 KB of
/// the router build) for this one number. `digits / 10^k` is one correctly rounded
/// division of two exact doubles, so the value is the same as `parse` gives.
pub fn parse_load1(text: &str) -> Option<f64> {
    let word = text.split_whitespace().next()?;
    let (int, frac) = word.split_once('.').unwrap_or((word, ""));
    if int.len() + frac.len() == 0 || frac.len() > 22 {
        return None;
    }
    let mut digits: u64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        digits = digits.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    // Exact as a double (2^53), as is every power of ten up to 10^22.
    if digits > 1 << 53 {
        return None;
    }
    let mut scale = 1.0;
    for _ in 0..frac.len() {
        scale *= 10.0;
    }
    Some(digits as f64 / scale)
}

/// `/proc/meminfo`: the `MemAvailable:  20480 kB` line (absent on kernels < 3.14).
pub fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn tunnel_status(o: &Observed) -> TunnelStatus {
    TunnelStatus {
        local: o.record.local,
        remote: o.record.remote,
        state: if o.alive {
            TunnelState::Running
        } else {
            TunnelState::Failed
        },
        since: Some(o.record.started_at),
        restarts: o.record.restarts,
        last_error: o.error.as_deref().map(clean),
    }
}

/// Inbox errors bounded for a report: at most `MAX_REPORTED_ERRORS`, the last one saying
/// how many more were left out.
pub fn bounded_errors(errors: &[String]) -> Vec<String> {
    let mut out: Vec<String> = errors.iter().map(|e| clean(e)).collect();
    if out.len() > MAX_REPORTED_ERRORS {
        let more = out.len() - (MAX_REPORTED_ERRORS - 1);
        out.truncate(MAX_REPORTED_ERRORS - 1);
        out.push(format!("... and {} more inbox errors", more));
    }
    out
}

/// The report of one poll; `hold`: the seconds the agent can hold the session, if it
/// offers to.
pub fn build(
    client: Option<&str>,
    host: &HostInfo,
    tunnels: &[Observed],
    previous: Option<&LastPoll>,
    hold: Option<u64>,
) -> StatusReport {
    StatusReport {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        client: client.map(clean),
        uptime_secs: host.uptime_secs,
        load1: host.load1,
        mem_available_kb: host.mem_available_kb,
        tunnels: tunnels
            .iter()
            .take(MAX_REQUESTS)
            .map(tunnel_status)
            .collect(),
        inbox_errors: previous
            .map(|p| bounded_errors(&p.inbox_errors))
            .unwrap_or_default(),
        last_error: previous.and_then(|p| p.error.as_deref()).map(clean),
        hold,
    }
}

/// Text as the gate accepts it: no control characters, bounded.
pub fn clean(s: &str) -> String {
    truncate_text(&for_terminal(s, MAX_TEXT_LEN), MAX_TEXT_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnels::TunnelRecord;

    #[test]
    fn proc_files() {
        assert_eq!(parse_uptime("12345.67 2345.67\n"), Some(12345));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_load1("0.25 0.10 0.05 1/123 4567\n"), Some(0.25));
        assert_eq!(parse_load1("nan 1 1"), None);
        // The same value as `parse` for what the kernel writes.
        for text in [
            "0.00",
            "0.01",
            "0.1",
            "3",
            "1.5",
            "12.34",
            "255.99",
            "0.07",
            "1234567.89",
        ] {
            assert_eq!(parse_load1(text), text.parse::<f64>().ok(), "{}", text);
        }
        for text in ["", "-1.0", "inf", "1.2.3", "1e3", ".", "x 1"] {
            assert_eq!(parse_load1(text), None, "{}", text);
        }
        assert_eq!(
            parse_mem_available("MemTotal:  100 kB\nMemFree: 5 kB\nMemAvailable:   20480 kB\n"),
            Some(20480)
        );
        assert_eq!(parse_mem_available("MemTotal: 100 kB\n"), None);
        let real = HostInfo::read();
        assert!(real.uptime_secs.is_some() && real.load1.is_some());
    }

    fn observed(alive: bool, error: Option<&str>) -> Observed {
        Observed {
            record: TunnelRecord {
                local: 22,
                remote: 9876,
                pid: 5,
                start_time: 6,
                argv: vec![],
                started_at: 1_700_000_000,
                restarts: 2,
                last_error: None,
            },
            alive,
            error: error.map(String::from),
        }
    }

    #[test]
    fn report_carries_tunnels_and_previous_poll() {
        let prev = LastPoll {
            time: 1,
            ok: false,
            error: Some("x".repeat(MAX_TEXT_LEN * 2)),
            inbox_errors: (0..40).map(|i| format!("inbox line {}: bad", i)).collect(),
            ..LastPoll::default()
        };
        let host = HostInfo {
            uptime_secs: Some(7),
            load1: Some(0.5),
            mem_available_kb: Some(1000),
        };
        let r = build(
            Some("dbclient 2022.83"),
            &host,
            &[
                observed(true, None),
                observed(false, Some("forward refused")),
            ],
            Some(&prev),
            Some(55),
        );
        assert_eq!(r.protocol, PROTOCOL_VERSION);
        assert_eq!(r.hold, Some(55));
        assert_eq!(r.client.as_deref(), Some("dbclient 2022.83"));
        assert_eq!(
            (r.uptime_secs, r.load1, r.mem_available_kb),
            (Some(7), Some(0.5), Some(1000))
        );
        assert_eq!(r.tunnels[0].state, TunnelState::Running);
        assert_eq!(r.tunnels[1].state, TunnelState::Failed);
        assert_eq!(r.tunnels[1].last_error.as_deref(), Some("forward refused"));
        assert_eq!(r.tunnels[1].restarts, 2);
        assert_eq!(r.inbox_errors.len(), MAX_REPORTED_ERRORS);
        assert!(r.inbox_errors.last().unwrap().contains("25 more"));
        assert_eq!(r.last_error.as_ref().unwrap().len(), MAX_TEXT_LEN);
        // Whatever the ssh client printed, the gate accepts the report (threat 25).
        let hostile = LastPoll {
            error: Some("dbclient: \u{1b}[2J\u{9b}x\u{202e}".into()),
            ..prev.clone()
        };
        let r = build(Some("dbclient\u{7}"), &host, &[], Some(&hostile), None);
        phonehome_protocol::StatusReport::from_device(r.to_json().as_bytes()).unwrap();
        // What the gate will accept.
        phonehome_protocol::StatusReport::from_device(r.to_json().as_bytes()).unwrap();
        let first = build(None, &HostInfo::default(), &[], None, None);
        assert!(first.inbox_errors.is_empty() && first.last_error.is_none());
    }
}
