//! watch-devices' judgement: what changed since the last run. `observe` turns the fleet
//! (as `fleet` computes it for list-devices too) into one observation per device;
//! `diff` compares them with what the last run remembered and returns the new memory
//! and an event for every change — pure, so that every rule is tested on its own:
//!
//! - `device.added` / `device.removed`: in the registry now and not before, or the
//!   reverse;
//! - `device.online`: a first heartbeat, or one after `offline_after` of silence;
//!   `device.offline`: no heartbeat for `offline_after`. When no heartbeat source can
//!   be read (a full disk, no log) nothing is concluded: the last state is kept;
//! - `tunnel.up`: the device's uid, and only it, listens on a requested port;
//!   `tunnel.failed`: another process holds the port, or the device reports the
//!   tunnel failed (after the request was made), with its reason; `tunnel.closed`: a
//!   request is gone, `expired` or `withdrawn`;
//! - `agent.error`: the device reports a new poll error (or its report was refused);
//! - `key.refused`: `key_refused_after` refused key logins of the device's account
//!   within the stale window, since the last such event (a rotated or stolen key).
//!
//! The first run ever only remembers: it sends nothing about what was already so.

use crate::events::{Draft, Kind};
use crate::fleet::{self, Fleet, Tunnel};
use crate::logscan::{Refusal, MAX_CLOCK_SKEW_SECS};
use crate::watch_state::{DeviceMemo, Seen, TunnelMemo, TunnelPhase};
use phonehome_plumbing::clock::{format_age, format_iso};
use phonehome_plumbing::text::for_terminal;
use std::collections::BTreeMap;

/// Longest device-supplied text in a message.
const MAX_TEXT: usize = 300;

/// One device as this run sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub id: String,
    pub alias: Option<String>,
    /// When it was added (refused logins before that are not its own).
    pub created: i64,
    /// `None`: no heartbeat source could be read.
    pub up: Option<bool>,
    pub last_seen: Option<i64>,
    pub from: Option<String>,
    pub tunnels: Vec<TunnelMemo>,
    pub agent_error: Option<String>,
    pub refusals: Vec<Refusal>,
}

/// The thresholds of the rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub now: i64,
    pub offline_after: i64,
    pub key_refused_after: usize,
    /// Refused logins older than this many seconds are not counted.
    pub refused_window: i64,
}

impl Rules {
    pub fn of(fleet: &Fleet) -> Rules {
        let c = &fleet.src.conf;
        Rules {
            now: fleet.src.now,
            offline_after: c.offline_after(),
            key_refused_after: c.key_refused_after as usize,
            refused_window: c.stale_after(),
        }
    }
}

/// Every registered device, observed.
pub fn observe(fleet: &Fleet) -> Vec<Observation> {
    fleet
        .rows
        .iter()
        .zip(&fleet.devices)
        .map(|(row, rec)| Observation {
            id: row.id.to_string(),
            alias: row.alias.clone(),
            created: rec.created,
            up: fleet::up(&fleet.src, row),
            last_seen: row.last_seen,
            from: row.from.clone(),
            tunnels: row
                .requests
                .iter()
                .map(|req| {
                    let (phase, reason) = match fleet::tunnel(&fleet.src, row, req) {
                        Tunnel::Pending => (TunnelPhase::Pending, None),
                        Tunnel::Up => (TunnelPhase::Up, None),
                        Tunnel::Failed(why) => (TunnelPhase::Failed, Some(why)),
                    };
                    TunnelMemo {
                        local: req.local,
                        remote: req.remote,
                        phase,
                        reason,
                        expires: req.expires,
                    }
                })
                .collect(),
            agent_error: fleet::agent_error(row),
            refusals: fleet.src.scan.hits.refusals(&row.id.account()).to_vec(),
        })
        .collect()
}

/// The new memory and the events: `prev` is `None` on the first run (nothing is sent).
pub fn diff(
    prev: Option<&BTreeMap<String, DeviceMemo>>,
    seen: &[Observation],
    rules: &Rules,
) -> (BTreeMap<String, DeviceMemo>, Vec<Draft>) {
    let mut memory = BTreeMap::new();
    let mut events = Vec::new();
    for o in seen {
        let before = prev.and_then(|p| p.get(&o.id));
        if prev.is_some() && before.is_none() {
            events.push(device_event(Kind::DeviceAdded, o, "was added".into()));
        }
        let (memo, mut ev) = device(before, o, rules);
        if prev.is_some() {
            events.append(&mut ev);
        }
        memory.insert(o.id.clone(), memo);
    }
    if let Some(p) = prev {
        for (id, m) in p.iter().filter(|(id, _)| !memory.contains_key(*id)) {
            let d = Draft::new(
                Kind::DeviceRemoved,
                format!("{} was removed", subject(id, m.alias.as_deref())),
            );
            events.push(d.device(id, m.alias.as_deref()));
        }
    }
    (memory, events)
}

fn subject(id: &str, alias: Option<&str>) -> String {
    match alias {
        Some(a) => format!("device {} ({})", id, a),
        None => format!("device {}", id),
    }
}

fn device_event(kind: Kind, o: &Observation, what: String) -> Draft {
    Draft::new(
        kind,
        format!("{} {}", subject(&o.id, o.alias.as_deref()), what),
    )
    .device(&o.id, o.alias.as_deref())
}

/// One device: its new memory and its events (all kinds but added/removed).
fn device(before: Option<&DeviceMemo>, o: &Observation, r: &Rules) -> (DeviceMemo, Vec<Draft>) {
    let mut events = Vec::new();
    let prev_seen = before.map_or(Seen::Never, |b| b.seen);
    let seen = match o.up {
        // Nothing can be said: keep what was known.
        None => prev_seen,
        Some(true) => Seen::Up,
        Some(false) if o.last_seen.is_some() => Seen::Down,
        Some(false) => Seen::Never,
    };
    if let Some(e) = seen_event(prev_seen, seen, before, o, r) {
        events.push(e);
    }
    let prev_tunnels = before.map_or(&[][..], |b| b.tunnels.as_slice());
    events.extend(tunnel_events(prev_tunnels, o, r));
    let agent_error = if o.up.is_none() {
        before.and_then(|b| b.agent_error.clone())
    } else {
        o.agent_error.clone()
    };
    if let Some(e) = agent_error
        .as_ref()
        .filter(|e| before.and_then(|b| b.agent_error.as_ref()) != Some(*e))
    {
        let safe = for_terminal(e, MAX_TEXT);
        events.push(
            device_event(Kind::AgentError, o, format!("reports: {}", safe)).detail("error", safe),
        );
    }
    let (refused_until, refused) = refused_event(before, o, r);
    events.extend(refused);
    let memo = DeviceMemo {
        alias: o.alias.clone(),
        seen,
        last_seen: o.last_seen.or(before.and_then(|b| b.last_seen)),
        from: o.from.clone().or(before.and_then(|b| b.from.clone())),
        tunnels: o.tunnels.clone(),
        agent_error,
        refused_until,
    };
    (memo, events)
}

fn seen_event(
    prev: Seen,
    now: Seen,
    before: Option<&DeviceMemo>,
    o: &Observation,
    r: &Rules,
) -> Option<Draft> {
    let from = o.from.as_deref().map(|f| for_terminal(f, 60));
    let from_text = from
        .as_deref()
        .map_or(String::new(), |f| format!(", from {}", f));
    let last = o.last_seen.map(format_iso);
    match (prev, now) {
        (Seen::Never, Seen::Up) => Some(
            device_event(
                Kind::DeviceOnline,
                o,
                format!("called in for the first time{}", from_text),
            )
            .detail("first", true),
        ),
        (Seen::Down, Seen::Up) => {
            let since = before.and_then(|b| b.last_seen);
            let gap = since.map_or(String::new(), |t| {
                format!(
                    " (silent since {}, {})",
                    format_iso(t),
                    format_age(r.now - t).replace(" ago", "")
                )
            });
            Some(
                device_event(
                    Kind::DeviceOnline,
                    o,
                    format!("is back online{}{}", from_text, gap),
                )
                .detail("first", false)
                .detail("silent_since", since.map(format_iso)),
            )
        }
        (Seen::Up, Seen::Down) => Some(
            device_event(
                Kind::DeviceOffline,
                o,
                format!(
                    "is offline: no heartbeat since {} ({}){}",
                    last.clone().unwrap_or_default(),
                    o.last_seen.map_or(String::new(), |t| format_age(r.now - t)),
                    from.as_deref()
                        .map_or(String::new(), |f| format!(", last from {}", f))
                ),
            )
            .detail("offline_after", r.offline_after),
        ),
        _ => None,
    }
    .map(|d| d.detail("last_seen", last).detail("from", from))
}

fn tunnel_draft(kind: Kind, o: &Observation, t: &TunnelMemo, what: String) -> Draft {
    let subject = subject(&o.id, o.alias.as_deref());
    Draft::new(
        kind,
        format!("tunnel {}:{} of {} {}", t.local, t.remote, subject, what),
    )
    .device(&o.id, o.alias.as_deref())
    .detail("local", t.local)
    .detail("remote", t.remote)
}

fn tunnel_events(prev: &[TunnelMemo], o: &Observation, r: &Rules) -> Vec<Draft> {
    let same = |a: &TunnelMemo, b: &TunnelMemo| a.local == b.local && a.remote == b.remote;
    let mut out = Vec::new();
    for p in prev
        .iter()
        .filter(|p| !o.tunnels.iter().any(|t| same(t, p)))
    {
        let why = if r.now >= p.expires {
            "expired"
        } else {
            "withdrawn"
        };
        out.push(
            tunnel_draft(Kind::TunnelClosed, o, p, format!("closed ({})", why))
                .detail("reason", why),
        );
    }
    for t in &o.tunnels {
        let before = prev.iter().find(|p| same(p, t));
        let was = before.map(|b| (b.phase, b.reason.as_deref()));
        match t.phase {
            TunnelPhase::Up if was.map(|w| w.0) != Some(TunnelPhase::Up) => {
                out.push(tunnel_draft(
                    Kind::TunnelUp,
                    o,
                    t,
                    format!("is up: port {} of this server", t.remote),
                ));
            }
            TunnelPhase::Failed if was != Some((TunnelPhase::Failed, t.reason.as_deref())) => {
                let why = for_terminal(t.reason.as_deref().unwrap_or("no reason given"), MAX_TEXT);
                out.push(
                    tunnel_draft(Kind::TunnelFailed, o, t, format!("failed: {}", why))
                        .detail("reason", why),
                );
            }
            _ => {}
        }
    }
    out
}

/// Refused logins since the last judgement: an event once there are enough of them.
fn refused_event(before: Option<&DeviceMemo>, o: &Observation, r: &Rules) -> (i64, Option<Draft>) {
    // A new device: refused logins from the second it was added on (logs count seconds).
    let since = before.map_or(o.created - 1, |b| b.refused_until);
    let fresh: Vec<&Refusal> = o
        .refusals
        .iter()
        .filter(|x| x.time > since && x.time > r.now - r.refused_window)
        .filter(|x| x.time <= r.now + MAX_CLOCK_SKEW_SECS)
        .collect();
    if fresh.len() < r.key_refused_after.max(1) {
        return (since, None);
    }
    let last = fresh.iter().map(|x| x.time).max().unwrap_or(since);
    let first = fresh.iter().map(|x| x.time).min().unwrap_or(since);
    let mut from: Vec<String> = fresh.iter().map(|x| x.from.to_string()).collect();
    from.sort();
    from.dedup();
    let mut keys: Vec<String> = fresh.iter().filter_map(|x| x.fingerprint.clone()).collect();
    keys.sort();
    keys.dedup();
    let key_text = if keys.is_empty() {
        String::new()
    } else {
        format!(", key {}", keys.join(" "))
    };
    let d = device_event(
        Kind::KeyRefused,
        o,
        format!(
            "had {} refused key logins since {}, from {}{}: a rotated key, or someone else's",
            fresh.len(),
            format_iso(first),
            from.join(" "),
            key_text
        ),
    )
    .detail("count", fresh.len())
    .detail("first", format_iso(first))
    .detail("last", format_iso(last))
    .detail("from", from)
    .detail("fingerprints", keys);
    (last, Some(d))
}

#[cfg(test)]
// `&[x.clone()]` reads as "the fleet is x" in these tests.
#[allow(clippy::cloned_ref_to_slice_refs)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const NOW: i64 = 1_795_304_990;

    fn rules() -> Rules {
        Rules {
            now: NOW,
            offline_after: 180,
            key_refused_after: 3,
            refused_window: 3600,
        }
    }

    fn obs(id: &str, last_seen: Option<i64>) -> Observation {
        Observation {
            id: id.into(),
            alias: Some("kitchen".into()),
            created: NOW - 86400,
            up: Some(last_seen.is_some_and(|t| NOW - t <= 180)),
            last_seen,
            from: Some("198.51.100.2".into()),
            tunnels: Vec::new(),
            agent_error: None,
            refusals: Vec::new(),
        }
    }

    fn tunnel(remote: u16, phase: TunnelPhase, reason: Option<&str>) -> TunnelMemo {
        TunnelMemo {
            local: 22,
            remote,
            phase,
            reason: reason.map(str::to_string),
            expires: NOW + 3600,
        }
    }

    /// Run `diff` from the memory of `before` to `after`: the kinds of the events.
    fn step(before: &[Observation], after: &[Observation], r: &Rules) -> Vec<(Kind, String)> {
        let (memory, none) = diff(None, before, r);
        assert!(none.is_empty(), "the first run sends nothing");
        let (_, events) = diff(Some(&memory), after, r);
        events.into_iter().map(|e| (e.kind, e.message)).collect()
    }

    fn kinds(e: &[(Kind, String)]) -> Vec<Kind> {
        e.iter().map(|e| e.0).collect()
    }

    #[test]
    fn added_online_offline_back_removed() {
        let r = rules();
        let never = obs("a", None);
        let up = obs("a", Some(NOW - 10));
        let down = obs("a", Some(NOW - 600));
        let e = step(&[], &[never.clone()], &r);
        assert_eq!(kinds(&e), [Kind::DeviceAdded]);
        let e = step(&[never.clone()], &[up.clone()], &r);
        assert_eq!(kinds(&e), [Kind::DeviceOnline]);
        assert!(
            e[0].1.contains("first time, from 198.51.100.2"),
            "{}",
            e[0].1
        );
        let e = step(&[up.clone()], &[down.clone()], &r);
        assert_eq!(kinds(&e), [Kind::DeviceOffline]);
        assert!(
            e[0].1.contains("is offline: no heartbeat since"),
            "{}",
            e[0].1
        );
        let e = step(&[down.clone()], &[up.clone()], &r);
        assert_eq!(kinds(&e), [Kind::DeviceOnline]);
        assert!(e[0].1.contains("back online"), "{}", e[0].1);
        assert!(
            step(&[up.clone()], &[up.clone()], &r).is_empty(),
            "no change, no event"
        );
        assert_eq!(kinds(&step(&[up.clone()], &[], &r)), [Kind::DeviceRemoved]);
        // Added and already calling in between two runs.
        assert_eq!(
            kinds(&step(&[], &[up], &r)),
            [Kind::DeviceAdded, Kind::DeviceOnline]
        );
    }

    #[test]
    fn threat_20_no_readable_source_is_never_offline() {
        let r = rules();
        let up = obs("a", Some(NOW - 10));
        let unknown = Observation {
            up: None,
            last_seen: None,
            ..up.clone()
        };
        assert!(step(&[up.clone()], &[unknown.clone()], &r).is_empty());
        let (m1, _) = diff(None, &[up.clone()], &r);
        let (m2, _) = diff(Some(&m1), &[unknown], &r);
        assert_eq!(m2["a"].seen, Seen::Up, "the last state is kept");
        let (_, e) = diff(Some(&m2), &[up], &r);
        assert!(e.is_empty(), "and nothing happens when the source is back");
    }

    #[test]
    fn tunnels_up_failed_closed() {
        let r = rules();
        let base = obs("a", Some(NOW - 10));
        let with = |t: Vec<TunnelMemo>| Observation {
            tunnels: t,
            ..base.clone()
        };
        let pending = with(vec![tunnel(9876, TunnelPhase::Pending, None)]);
        let up = with(vec![tunnel(9876, TunnelPhase::Up, None)]);
        let failed = with(vec![tunnel(
            9876,
            TunnelPhase::Failed,
            Some("remote port forwarding failed"),
        )]);
        assert!(step(&[base.clone()], &[pending.clone()], &r).is_empty());
        let e = step(&[pending.clone()], &[up.clone()], &r);
        assert_eq!(kinds(&e), [Kind::TunnelUp]);
        assert!(
            e[0].1
                .starts_with("tunnel 22:9876 of device a (kitchen) is up"),
            "{}",
            e[0].1
        );
        assert!(step(&[up.clone()], &[up.clone()], &r).is_empty());
        let e = step(&[pending.clone()], &[failed.clone()], &r);
        assert_eq!(kinds(&e), [Kind::TunnelFailed]);
        assert!(
            e[0].1.ends_with("failed: remote port forwarding failed"),
            "{}",
            e[0].1
        );
        assert!(
            step(&[failed.clone()], &[failed.clone()], &r).is_empty(),
            "once per failure"
        );
        let e = step(&[up.clone()], &[base.clone()], &r);
        assert_eq!(kinds(&e), [Kind::TunnelClosed]);
        assert!(e[0].1.ends_with("closed (withdrawn)"), "{}", e[0].1);
        let mut old = up.clone();
        old.tunnels[0].expires = NOW - 1;
        let e = step(&[old], &[base], &r);
        assert!(e[0].1.ends_with("closed (expired)"), "{}", e[0].1);
    }

    #[test]
    fn agent_errors_once_each() {
        let r = rules();
        let ok = obs("a", Some(NOW - 10));
        let bad = Observation {
            agent_error: Some("poll failed: connection refused".into()),
            ..ok.clone()
        };
        let e = step(&[ok.clone()], &[bad.clone()], &r);
        assert_eq!(kinds(&e), [Kind::AgentError]);
        assert!(
            e[0].1.ends_with("reports: poll failed: connection refused"),
            "{}",
            e[0].1
        );
        assert!(step(&[bad.clone()], &[bad.clone()], &r).is_empty());
        assert!(step(&[bad], &[ok], &r).is_empty());
    }

    fn refusal(t: i64, port: u16) -> Refusal {
        Refusal {
            time: t,
            from: "203.0.113.7".parse::<IpAddr>().unwrap(),
            port,
            fingerprint: None,
        }
    }

    #[test]
    fn key_refused_after_enough_and_once() {
        let r = rules();
        let base = obs("a", Some(NOW - 10));
        let with = |n: i64| Observation {
            refusals: (0..n)
                .map(|i| refusal(NOW - 100 + i, 40000 + i as u16))
                .collect(),
            ..base.clone()
        };
        assert!(
            step(&[base.clone()], &[with(2)], &r).is_empty(),
            "two are not enough"
        );
        let (m1, _) = diff(None, &[base.clone()], &r);
        let (m2, e) = diff(Some(&m1), &[with(3)], &r);
        assert_eq!(
            e.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [Kind::KeyRefused]
        );
        assert!(
            e[0].message.contains("3 refused key logins"),
            "{}",
            e[0].message
        );
        assert_eq!(e[0].details["from"], serde_json::json!(["203.0.113.7"]));
        let (m3, e) = diff(Some(&m2), &[with(3)], &r);
        assert!(e.is_empty(), "the same refusals are not counted twice");
        let (_, e) = diff(Some(&m3), &[with(6)], &r);
        assert_eq!(e.len(), 1, "three more: a second event");
        // Old ones (outside the window) and those before the device was added do not count.
        let old = Observation {
            refusals: (0..5)
                .map(|i| refusal(NOW - 7200 + i, 1000 + i as u16))
                .collect(),
            ..base.clone()
        };
        assert!(step(&[base.clone()], &[old], &r).is_empty());
        let mut fresh = with(5);
        fresh.created = NOW;
        assert_eq!(
            kinds(&step(&[], &[fresh], &r)),
            [Kind::DeviceAdded, Kind::DeviceOnline],
            "refused before it was added: not its own"
        );
    }

    #[test]
    fn threat_40_device_text_in_messages_is_terminal_safe() {
        let r = rules();
        let ok = obs("a", Some(NOW - 10));
        let bad = Observation {
            agent_error: Some("x\u{1b}]0;pwned\u{7}\u{202e}y".into()),
            from: Some("\u{1b}[2J".into()),
            ..ok.clone()
        };
        for (_, m) in step(&[ok], &[bad], &r) {
            assert!(
                !m.chars().any(phonehome_plumbing::text::is_unsafe_char),
                "{:?}",
                m
            );
        }
    }
}
