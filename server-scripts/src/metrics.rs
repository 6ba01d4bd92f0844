//! The fleet as Prometheus metrics, in node_exporter's textfile-collector format (the
//! text exposition format): per device whether it is up, when it was last seen, how
//! many tunnels it holds open and what agent it runs; per webhook the outbox depth and
//! the delivery counters. `list-devices --prometheus` prints it; watch-devices writes
//! it to `metrics_file` after each run (atomically: the collector never reads half a
//! file). Label values come from devices (agent version, ssh client): they are
//! escaped as the format asks (`\\`, `\"`, `\n`), other control and bidi characters
//! replaced, and bounded, so that no device can add a series or break the file.

use crate::fleet::{self, Fleet};
use crate::outbox::Outbox;
use crate::paths::Paths;
use phonehome_plumbing::text::is_unsafe_char;
use std::fmt::Write;

/// Longest label value written.
const MAX_LABEL_CHARS: usize = 128;

pub struct DeviceMetrics {
    pub id: String,
    pub alias: Option<String>,
    /// `None`: no heartbeat source could be read (the series is left out).
    pub up: Option<bool>,
    pub last_seen: Option<i64>,
    pub tunnels_open: usize,
    /// Agent version and ssh client of the last valid report.
    pub agent: Option<(String, Option<String>)>,
}

pub struct HookMetrics {
    /// The webhook's line in server.conf.
    pub line: usize,
    pub host: String,
    pub queued: usize,
    pub delivered: u64,
    pub failures: u64,
    pub dropped: u64,
    pub last_success: Option<i64>,
}

pub struct Metrics {
    pub devices: Vec<DeviceMetrics>,
    pub hooks: Vec<HookMetrics>,
}

/// The metrics of the registered devices and of every configured webhook's outbox.
pub fn snapshot(paths: &Paths, fleet: &Fleet) -> Metrics {
    let devices = fleet
        .rows
        .iter()
        .map(|r| DeviceMetrics {
            id: r.id.to_string(),
            alias: r.alias.clone(),
            up: fleet::up(&fleet.src, r),
            last_seen: r.last_seen,
            tunnels_open: r.open.len(),
            agent: r
                .report
                .as_ref()
                .map(|s| (s.report.agent_version.clone(), s.report.client.clone())),
        })
        .collect();
    let hooks = fleet
        .src
        .conf
        .webhooks
        .iter()
        .map(|h| {
            let o = Outbox::of(paths, h);
            let m = o.meta();
            HookMetrics {
                line: h.line,
                host: h.url.host().to_string(),
                queued: o.entries().map_or(0, |e| e.len()),
                delivered: m.delivered,
                failures: m.failures,
                dropped: m.dropped,
                last_success: m.last_success,
            }
        })
        .collect();
    Metrics { devices, hooks }
}

/// A label value as the exposition format wants it.
pub fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        if i == MAX_LABEL_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if is_unsafe_char(c) => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its help, type and samples (`labels`, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {} {}", name, help);
    let _ = writeln!(out, "# TYPE {} {}", name, kind);
    for (labels, value) in samples {
        let _ = writeln!(out, "{}{{{}}} {}", name, labels, value);
    }
}

fn device_labels(d: &DeviceMetrics) -> String {
    format!(
        "device=\"{}\",alias=\"{}\"",
        escape_label(&d.id),
        escape_label(d.alias.as_deref().unwrap_or(""))
    )
}

/// The text of the metrics; `last_run`: when watch-devices ran (its own gauge).
pub fn render(m: &Metrics, last_run: Option<i64>) -> String {
    let mut out = String::new();
    let per_device = |f: &dyn Fn(&DeviceMetrics) -> Option<String>| -> Vec<(String, String)> {
        m.devices
            .iter()
            .filter_map(|d| Some((device_labels(d), f(d)?)))
            .collect()
    };
    family(&mut out, "phonehome_device_up", "gauge",
        "1 if the device called in within offline_after, else 0 (absent: no heartbeat source could be read).",
        &per_device(&|d| d.up.map(|u| u8::from(u).to_string())));
    family(
        &mut out,
        "phonehome_device_last_seen_timestamp_seconds",
        "gauge",
        "Unix time of the device's last heartbeat (the gate's records or sshd's log).",
        &per_device(&|d| d.last_seen.map(|t| t.to_string())),
    );
    family(
        &mut out,
        "phonehome_device_tunnels_open",
        "gauge",
        "Loopback ports of this server the device's account listens on (its open tunnels).",
        &per_device(&|d| Some(d.tunnels_open.to_string())),
    );
    let info: Vec<(String, String)> = m
        .devices
        .iter()
        .filter_map(|d| {
            let (version, client) = d.agent.as_ref()?;
            let labels = format!(
                "{},version=\"{}\",client=\"{}\"",
                device_labels(d),
                escape_label(version),
                escape_label(client.as_deref().unwrap_or(""))
            );
            Some((labels, "1".to_string()))
        })
        .collect();
    family(
        &mut out,
        "phonehome_agent_info",
        "gauge",
        "The agent version and ssh client of the device's last status report.",
        &info,
    );
    render_hooks(&mut out, &m.hooks);
    if let Some(t) = last_run {
        let _ = writeln!(out, "# HELP phonehome_watch_last_run_timestamp_seconds Unix time watch-devices last looked at the fleet.");
        let _ = writeln!(
            out,
            "# TYPE phonehome_watch_last_run_timestamp_seconds gauge"
        );
        let _ = writeln!(out, "phonehome_watch_last_run_timestamp_seconds {}", t);
    }
    out
}

fn render_hooks(out: &mut String, hooks: &[HookMetrics]) {
    let per_hook = |f: &dyn Fn(&HookMetrics) -> Option<String>| -> Vec<(String, String)> {
        hooks
            .iter()
            .filter_map(|h| {
                let labels = format!("line=\"{}\",host=\"{}\"", h.line, escape_label(&h.host));
                Some((labels, f(h)?))
            })
            .collect()
    };
    family(
        out,
        "phonehome_webhook_queued_events",
        "gauge",
        "Events waiting in the webhook's outbox.",
        &per_hook(&|h| Some(h.queued.to_string())),
    );
    family(
        out,
        "phonehome_webhook_delivered_events_total",
        "counter",
        "Events the webhook's receiver accepted.",
        &per_hook(&|h| Some(h.delivered.to_string())),
    );
    family(
        out,
        "phonehome_webhook_delivery_failures_total",
        "counter",
        "Failed attempts to deliver to the webhook (each retry counts).",
        &per_hook(&|h| Some(h.failures.to_string())),
    );
    family(
        out,
        "phonehome_webhook_dropped_events_total",
        "counter",
        "Events dropped undelivered because the webhook's outbox was full.",
        &per_hook(&|h| Some(h.dropped.to_string())),
    );
    family(
        out,
        "phonehome_webhook_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last event the webhook's receiver accepted.",
        &per_hook(&|h| h.last_success.map(|t| t.to_string())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(version: &str, client: Option<&str>) -> DeviceMetrics {
        DeviceMetrics {
            id: "6466b34bde54".into(),
            alias: Some("kitchen".into()),
            up: Some(true),
            last_seen: Some(1_795_304_990),
            tunnels_open: 1,
            agent: Some((version.into(), client.map(str::to_string))),
        }
    }

    #[test]
    fn the_exposition_format() {
        let m = Metrics {
            devices: vec![
                device("0.1.0", Some("dbclient 2022.83")),
                DeviceMetrics {
                    id: "0242ac110002".into(),
                    alias: None,
                    up: None,
                    last_seen: None,
                    tunnels_open: 0,
                    agent: None,
                },
            ],
            hooks: vec![HookMetrics {
                line: 12,
                host: "hooks.slack.com".into(),
                queued: 3,
                delivered: 10,
                failures: 2,
                dropped: 0,
                last_success: None,
            }],
        };
        let text = render(&m, Some(1_795_305_000));
        for line in [
            "# TYPE phonehome_device_up gauge",
            "phonehome_device_up{device=\"6466b34bde54\",alias=\"kitchen\"} 1",
            "phonehome_device_last_seen_timestamp_seconds{device=\"6466b34bde54\",alias=\"kitchen\"} 1795304990",
            "phonehome_device_tunnels_open{device=\"0242ac110002\",alias=\"\"} 0",
            "phonehome_agent_info{device=\"6466b34bde54\",alias=\"kitchen\",version=\"0.1.0\",client=\"dbclient 2022.83\"} 1",
            "phonehome_webhook_queued_events{line=\"12\",host=\"hooks.slack.com\"} 3",
            "# TYPE phonehome_webhook_delivery_failures_total counter",
            "phonehome_webhook_delivery_failures_total{line=\"12\",host=\"hooks.slack.com\"} 2",
            "phonehome_watch_last_run_timestamp_seconds 1795305000",
        ] {
            assert!(text.lines().any(|l| l == line), "{} not in\n{}", line, text);
        }
        assert!(
            !text.contains("phonehome_device_up{device=\"0242ac110002\""),
            "unknown: left out"
        );
        assert!(
            !text.contains("last_success_timestamp"),
            "no sample, no family"
        );
    }

    #[test]
    fn threat_40_hostile_label_values_stay_inside_their_quotes() {
        let m = Metrics {
            devices: vec![device(
                "1\"} phonehome_device_up{device=\"x\"} 1\n#",
                Some("a\\b\u{1b}[2J\u{202e}"),
            )],
            hooks: Vec::new(),
        };
        let text = render(&m, None);
        let info: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("phonehome_agent_info"))
            .collect();
        assert_eq!(info.len(), 1, "{}", text);
        assert!(
            info[0].contains(r#"version="1\"} phonehome_device_up{device=\"x\"} 1\n#""#),
            "{}",
            info[0]
        );
        assert!(info[0].ends_with(r#"client="a\\b?[2J?"} 1"#), "{}", info[0]);
        // Every sample line is NAME{labels} VALUE: no line was injected.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("phonehome_"), "{}", l);
        }
        assert_eq!(
            escape_label(&"x".repeat(500)).chars().count(),
            MAX_LABEL_CHARS + 1
        );
    }
}
