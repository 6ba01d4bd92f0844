//! The events watch-devices sends: their kinds, and the one JSON shape every event has
//! in the outbox and on the wire (`format=json`): a unique `id`, the `time` it was
//! seen, the `event` kind, the `device` (id and alias), a one-line `message` for
//! people, and `details` that depend on the kind. Device-supplied text inside a
//! message has already been made terminal-safe (`for_terminal`) when the event is
//! made; each webhook format escapes what its receiver needs on top (`deliver`).

use phonehome_plumbing::clock::format_iso;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "device.added")]
    DeviceAdded,
    #[serde(rename = "device.removed")]
    DeviceRemoved,
    #[serde(rename = "device.online")]
    DeviceOnline,
    #[serde(rename = "device.offline")]
    DeviceOffline,
    #[serde(rename = "tunnel.up")]
    TunnelUp,
    #[serde(rename = "tunnel.failed")]
    TunnelFailed,
    #[serde(rename = "tunnel.closed")]
    TunnelClosed,
    #[serde(rename = "agent.error")]
    AgentError,
    #[serde(rename = "key.refused")]
    KeyRefused,
    /// Undelivered events of one webhook were dropped (its queue was full).
    #[serde(rename = "watch.dropped")]
    WatchDropped,
    /// Sent by `watch-devices --check`.
    #[serde(rename = "watch.test")]
    WatchTest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DeviceAdded => "device.added",
            Kind::DeviceRemoved => "device.removed",
            Kind::DeviceOnline => "device.online",
            Kind::DeviceOffline => "device.offline",
            Kind::TunnelUp => "tunnel.up",
            Kind::TunnelFailed => "tunnel.failed",
            Kind::TunnelClosed => "tunnel.closed",
            Kind::AgentError => "agent.error",
            Kind::KeyRefused => "key.refused",
            Kind::WatchDropped => "watch.dropped",
            Kind::WatchTest => "watch.test",
        }
    }

    /// How urgent it is for a person: 1 (min) to 5 (max), as ntfy counts.
    pub fn priority(self) -> u8 {
        match self {
            Kind::DeviceOffline | Kind::KeyRefused => 4,
            Kind::TunnelFailed | Kind::AgentError | Kind::WatchDropped => 4,
            Kind::DeviceOnline | Kind::TunnelUp | Kind::WatchTest => 3,
            Kind::DeviceAdded | Kind::DeviceRemoved | Kind::TunnelClosed => 2,
        }
    }
}

/// What detection found, before it gets an id and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub kind: Kind,
    /// The device's id and alias; none for the watcher's own events.
    pub device: Option<(String, Option<String>)>,
    pub message: String,
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Draft {
    pub fn new(kind: Kind, message: String) -> Draft {
        Draft {
            kind,
            device: None,
            message,
            details: serde_json::Map::new(),
        }
    }

    pub fn device(mut self, id: &str, alias: Option<&str>) -> Draft {
        self.device = Some((id.to_string(), alias.map(str::to_string)));
        self
    }

    pub fn detail(mut self, name: &str, value: impl Into<serde_json::Value>) -> Draft {
        self.details.insert(name.to_string(), value.into());
        self
    }

    /// The event, named `id`, seen at `time` on `server`.
    pub fn into_event(self, id: String, time: i64, server: &str) -> Event {
        let (device, alias) = match self.device {
            Some((d, a)) => (Some(d), a),
            None => (None, None),
        };
        Event {
            id,
            time: format_iso(time),
            time_unix: time,
            event: self.kind,
            server: server.to_string(),
            device,
            alias,
            message: self.message,
            details: self.details,
        }
    }
}

/// An event as it is queued and sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique: receivers drop an event whose id they have seen (delivery is at least
    /// once).
    pub id: String,
    /// When watch-devices saw it, ISO 8601 UTC.
    pub time: String,
    pub time_unix: i64,
    pub event: Kind,
    /// This server (`server_host`).
    pub server: String,
    pub device: Option<String>,
    pub alias: Option<String>,
    /// One line for people.
    pub message: String,
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// `device 6466b34bde54 (kitchen)`, or `phonehome` for the watcher's own events.
    pub fn subject(&self) -> String {
        match (&self.device, &self.alias) {
            (Some(d), Some(a)) => format!("device {} ({})", d, a),
            (Some(d), None) => format!("device {}", d),
            _ => "phonehome".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape() {
        let e = Draft::new(Kind::DeviceOffline, "gone".into())
            .device("6466b34bde54", Some("kitchen"))
            .detail("last_seen", 100)
            .into_event("a-1".into(), 1_795_304_990, "ph.example.org");
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "device.offline");
        assert_eq!(v["time"], "2026-11-21T23:49:50Z");
        assert_eq!(v["device"], "6466b34bde54");
        assert_eq!(v["alias"], "kitchen");
        assert_eq!(v["details"]["last_seen"], 100);
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.subject(), "device 6466b34bde54 (kitchen)");
    }
}
