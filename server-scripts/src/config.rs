//! `etc/phonehome/server.conf`: `name = value` lines (`phonehome_plumbing::settings`).
//! A missing file means all defaults; an unknown name or a bad value is an error naming
//! the line, because a typo in a security setting must not pass silently. Host and
//! account names follow the protocol's rules, so the setup line `add-device` prints is
//! always one the agent accepts.

use crate::duration::{parse_duration, parse_ttl};
use crate::error::{Error, Result};
use crate::paths::{is_safe_path, Paths};
use crate::store;
use crate::webhook::Webhook;
use phonehome_plumbing::settings;
use phonehome_protocol::sshkey::KeyType;
use phonehome_protocol::{
    is_unix_name, parse_port, validate_host, DEFAULT_POLL_INTERVAL_SECS, MAX_HOLD_SECS,
    MIN_HOLD_SECS,
};

/// Where install-server.sh puts the gate (under the root); what goes into `command="..."`.
pub const DEFAULT_GATE: &str = "/usr/local/lib/phonehome/phonehome-gate";
pub const DEFAULT_GROUP: &str = "phonehome-devices";
pub const DEFAULT_PORT_RANGE: (u16, u16) = (20000, 29999);
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Held sessions are off until an admin chooses a hold (BENCHMARKS.md, section 8).
pub const DEFAULT_HOLD_SECS: u64 = 0;
/// The default cap on sessions held at once; see BENCHMARKS.md for what each costs.
pub const DEFAULT_HOLD_SESSIONS: u64 = 1000;
/// Most held sessions a server may be configured for (one slot file each).
pub const MAX_HOLD_SESSIONS: u64 = 100_000;
/// Largest server.conf read.
const MAX_CONF_BYTES: u64 = 64 * 1024;
/// watch-devices: a device is offline after this many poll intervals without a heartbeat.
pub const DEFAULT_OFFLINE_POLLS: u64 = 3;
/// watch-devices: refused key logins of one device account that make a `key.refused`.
pub const DEFAULT_KEY_REFUSED_AFTER: u32 = 3;
/// watch-devices: undelivered events kept per webhook.
pub const DEFAULT_WEBHOOK_QUEUE: usize = 1000;
/// watch-devices: the longest wait between two attempts to reach a failing receiver.
pub const DEFAULT_WEBHOOK_RETRY_MAX_SECS: u64 = 600;

const NAMES: &[&str] = &[
    "server_host",
    "server_port",
    "port_range",
    "poll_interval",
    "default_ttl",
    "admin_user",
    "device_group",
    "gate",
    "log_hosts",
    "offline_after",
    "key_refused_after",
    "webhook",
    "webhook_queue",
    "webhook_retry_max",
    "metrics_file",
    "hold",
    "hold_sessions",
    "device_key_types",
];

/// Names that may appear on several lines.
const REPEATABLE: &[&str] = &["webhook"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConf {
    /// The name or address devices reach this server at.
    pub server_host: String,
    pub server_port: u16,
    pub port_range: (u16, u16),
    pub poll_interval: u64,
    pub default_ttl: u64,
    pub admin_user: String,
    pub device_group: String,
    pub gate: String,
    /// The names this server's own syslog lines carry; list-devices counts sshd lines
    /// of these hosts only (logs gathered from several hosts hold others').
    pub log_hosts: Vec<String>,
    /// watch-devices: no heartbeat for this long is `device.offline` (default: three
    /// poll intervals, see [`ServerConf::offline_after`]).
    pub offline_after: Option<u64>,
    /// watch-devices: this many refused key logins of a device account (within the
    /// stale window) make a `key.refused`.
    pub key_refused_after: u32,
    /// watch-devices: where events go, in the order of the lines.
    pub webhooks: Vec<Webhook>,
    /// watch-devices: most undelivered events kept per webhook; the oldest go first.
    pub webhook_queue: usize,
    /// watch-devices: the longest wait between attempts to a failing receiver.
    pub webhook_retry_max: u64,
    /// watch-devices: node_exporter textfile written after each run.
    pub metrics_file: Option<std::path::PathBuf>,
    /// How long the gate keeps a device's session open after answering (seconds; 0:
    /// never), so that a request reaches the device at once (protocol 3).
    pub hold: u64,
    /// The most sessions held at once, over all devices (each holds an sshd session
    /// and a gate process in memory); past it a poll is answered and ended as before.
    pub hold_sessions: u64,
    /// The device key types add-device takes: every type phonehome knows (`all`), or
    /// those the devices' sshd can check (install-server.sh writes `ssh-ed25519` when
    /// that sshd is built without OpenSSL).
    pub device_key_types: Vec<KeyType>,
}

/// `all`, or key type names (`ssh-ed25519`, `ssh-rsa`, ...) separated by commas.
fn parse_key_types(value: &str) -> Option<Vec<KeyType>> {
    if value == "all" {
        return Some(KeyType::ALL.to_vec());
    }
    let mut types = Vec::new();
    for name in value.split(',').map(str::trim) {
        let t = KeyType::from_name(name)?;
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Some(types)
}

/// The kernel's host name, if it is a valid one.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| validate_host(s).is_ok())
}

impl ServerConf {
    /// The defaults for a server whose paths are `paths` (the gate lives under its root).
    pub fn defaults(paths: &Paths) -> ServerConf {
        let host = hostname();
        let mut log_hosts: Vec<String> = host.iter().cloned().collect();
        if let Some(short) = host
            .as_deref()
            .and_then(|h| h.split_once('.'))
            .map(|(s, _)| s)
        {
            log_hosts.push(short.to_string());
        }
        ServerConf {
            server_host: host.unwrap_or_else(|| "localhost".into()),
            server_port: 22,
            port_range: DEFAULT_PORT_RANGE,
            poll_interval: DEFAULT_POLL_INTERVAL_SECS,
            default_ttl: DEFAULT_TTL_SECS,
            admin_user: "root".into(),
            device_group: DEFAULT_GROUP.into(),
            gate: paths.join(DEFAULT_GATE).display().to_string(),
            log_hosts,
            offline_after: None,
            key_refused_after: DEFAULT_KEY_REFUSED_AFTER,
            webhooks: Vec::new(),
            webhook_queue: DEFAULT_WEBHOOK_QUEUE,
            webhook_retry_max: DEFAULT_WEBHOOK_RETRY_MAX_SECS,
            metrics_file: None,
            hold: DEFAULT_HOLD_SECS,
            hold_sessions: DEFAULT_HOLD_SESSIONS,
            device_key_types: KeyType::ALL.to_vec(),
        }
    }

    pub fn load(paths: &Paths) -> Result<ServerConf> {
        let path = paths.conf();
        match store::read(&path, MAX_CONF_BYTES)? {
            None => Ok(ServerConf::defaults(paths)),
            Some(data) => {
                let text = String::from_utf8(data).map_err(|_| {
                    Error::new(format!("{}: not valid UTF-8; fix the file", path.display()))
                })?;
                ServerConf::parse(&text, paths)
                    .map_err(|e| Error::new(format!("{}: {}", path.display(), e)))
            }
        }
    }

    pub fn parse(text: &str, paths: &Paths) -> std::result::Result<ServerConf, String> {
        let mut c = ServerConf::defaults(paths);
        for s in settings::parse(text, NAMES, REPEATABLE).map_err(|e| e.to_string())? {
            let r = if s.name == "webhook" {
                c.add_webhook(&s.value, s.line)
            } else {
                c.set(&s.name, &s.value)
            };
            r.map_err(|e| format!("line {}: {}: {}", s.line, s.name, e))?;
        }
        Ok(c)
    }

    fn set(&mut self, name: &str, value: &str) -> std::result::Result<(), String> {
        let bad = || {
            format!(
                "invalid value {}",
                phonehome_plumbing::text::quoted(value, 60)
            )
        };
        match name {
            "server_host" => {
                validate_host(value).map_err(|e| e.0)?;
                self.server_host = value.into();
            }
            "server_port" => self.server_port = parse_port(value).map_err(|e| e.0)?,
            "port_range" => {
                let (lo, hi) = value
                    .split_once('-')
                    .ok_or("expected LOW-HIGH, e.g. 20000-29999")?;
                let lo = parse_port(lo.trim()).map_err(|e| e.0)?;
                let hi = parse_port(hi.trim()).map_err(|e| e.0)?;
                if lo < 1024 || lo > hi {
                    return Err("LOW must be at least 1024 and at most HIGH".into());
                }
                self.port_range = (lo, hi);
            }
            "poll_interval" => {
                self.poll_interval = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=86400).contains(n))
                    .ok_or("expected seconds from 1 to 86400")?
            }
            "default_ttl" => self.default_ttl = parse_ttl(value).map_err(|e| e.to_string())?,
            "admin_user" | "device_group" if !is_unix_name(value) => return Err(bad()),
            "admin_user" => self.admin_user = value.into(),
            "device_group" => self.device_group = value.into(),
            "gate" if !is_safe_path(value) => return Err(bad()),
            "gate" => self.gate = value.into(),
            "log_hosts" => {
                let hosts: Vec<String> = value
                    .split([' ', ','])
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect();
                if hosts.is_empty() || hosts.iter().any(|h| validate_host(h).is_err()) {
                    return Err(format!(
                        "{}: expected host names separated by spaces",
                        bad()
                    ));
                }
                self.log_hosts = hosts;
            }
            "hold" => {
                self.hold = value
                    .parse()
                    .ok()
                    .filter(|n| *n == 0 || (MIN_HOLD_SECS..=MAX_HOLD_SECS).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "expected 0 (off) or seconds from {} to {}",
                            MIN_HOLD_SECS, MAX_HOLD_SECS
                        )
                    })?
            }
            "hold_sessions" => {
                self.hold_sessions = value
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_HOLD_SESSIONS)
                    .ok_or_else(|| format!("expected a number from 0 to {}", MAX_HOLD_SESSIONS))?
            }
            "device_key_types" => self.device_key_types = parse_key_types(value).ok_or_else(bad)?,
            _ => return self.set_watch(name, value),
        }
        Ok(())
    }

    /// The settings of watch-devices.
    fn set_watch(&mut self, name: &str, value: &str) -> std::result::Result<(), String> {
        let count = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or(format!("expected a number from 1 to {}", max))
        };
        match name {
            "offline_after" => {
                self.offline_after = Some(parse_ttl(value).map_err(|e| e.to_string())?)
            }
            "key_refused_after" => {
                self.key_refused_after = count(crate::logscan::MAX_REFUSALS as u64)? as u32
            }
            "webhook_queue" => self.webhook_queue = count(1_000_000)? as usize,
            "webhook_retry_max" => {
                self.webhook_retry_max = parse_duration(value)
                    .map_err(|e| e.to_string())?
                    .min(86400)
            }
            "metrics_file" if !is_safe_path(value) || !value.ends_with(".prom") => {
                return Err(format!(
                    "invalid value {}: an absolute path ending in .prom (node_exporter's textfile collector reads only those)",
                    phonehome_plumbing::text::quoted(value, 60)
                ))
            }
            "metrics_file" => self.metrics_file = Some(value.into()),
            _ => unreachable!("settings::parse checks the names"),
        }
        Ok(())
    }

    fn add_webhook(&mut self, value: &str, line: usize) -> std::result::Result<(), String> {
        let hook = Webhook::parse(value, line)?;
        if let Some(first) = self.webhooks.iter().find(|h| h.url == hook.url) {
            return Err(format!(
                "the same URL is already given on line {}",
                first.line
            ));
        }
        self.webhooks.push(hook);
        Ok(())
    }

    /// watch-devices: a device with no heartbeat for this long is offline.
    pub fn offline_after(&self) -> i64 {
        self.offline_after
            .unwrap_or(DEFAULT_OFFLINE_POLLS * self.poll_interval) as i64
    }

    /// A device last seen longer ago than this is offline in list-devices (before, stale).
    pub fn stale_after(&self) -> i64 {
        (self.poll_interval as i64 * 10).max(3600)
    }

    /// How long `forward-device-port --wait` waits by default: two polls and a margin.
    pub fn default_wait(&self) -> u64 {
        2 * self.poll_interval + 15
    }

    /// A device last seen within this many seconds is online.
    pub fn online_window(&self) -> i64 {
        (2 * self.poll_interval + 15) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Paths {
        Paths::new(std::path::Path::new("/")).unwrap()
    }

    #[test]
    fn parses_and_validates() {
        let c = ServerConf::parse(
            "# comment\nserver_host = ph.example.org\nserver_port=2222\nport_range = 30000-30010\n\
             poll_interval = 5\ndefault_ttl = 2h\nadmin_user = admin\ngate = /opt/ph/gate\n\
             log_hosts = ph ph.example.org\nhold = 60\nhold_sessions = 250\n\
             device_key_types = ssh-ed25519, ssh-ed25519\n",
            &root(),
        )
        .unwrap();
        assert_eq!(c.server_host, "ph.example.org");
        assert_eq!(c.server_port, 2222);
        assert_eq!(c.port_range, (30000, 30010));
        assert_eq!(c.default_ttl, 7200);
        assert_eq!(c.default_wait(), 25);
        assert_eq!(c.log_hosts, ["ph", "ph.example.org"]);
        assert_eq!((c.hold, c.hold_sessions), (60, 250));
        assert_eq!(ServerConf::defaults(&root()).hold, 0, "off by default");
        assert_eq!(c.device_key_types, [KeyType::Ed25519]);
        let d = ServerConf::defaults(&root());
        assert_eq!(d.device_key_types, KeyType::ALL, "every type by default");
        let all = ServerConf::parse("device_key_types = all", &root()).unwrap();
        assert_eq!(all.device_key_types, KeyType::ALL);
        for bad in [
            "nonsense",
            "colour = blue",
            "port_range = 80-90",
            "port_range = 3000-2000",
            "poll_interval = 0",
            "gate = relative/gate",
            "gate = /opt/\"x\"",
            "admin_user = Root",
            "server_host = a b",
            // What the agent would refuse (issue 10): the two sides agree now.
            "server_host = h:22",
            "server_host = a..b",
            "default_ttl = 30d",
            "log_hosts = ",
            "log_hosts = a/b",
            "server_port = 1\nserver_port = 2",
            "offline_after = 0",
            "offline_after = 8d",
            "key_refused_after = 0",
            "webhook_queue = many",
            "metrics_file = /var/lib/node/phonehome.txt",
            "metrics_file = relative.prom",
            "webhook = http://alerts.example.org/",
            "webhook = https://a.example.org/x\nwebhook = https://a.example.org/x format=slack",
            "hold = 2",
            "hold = 3601",
            "hold = -1",
            "hold = 1m",
            "hold_sessions = 100001",
            "hold_sessions = many",
            "device_key_types = ed25519",
            "device_key_types = ",
            "device_key_types = ssh-ed25519,,ssh-rsa",
        ] {
            assert!(ServerConf::parse(bad, &root()).is_err(), "{:?}", bad);
        }
        let e = ServerConf::parse("\n\ncolour = blue", &root()).unwrap_err();
        assert!(e.starts_with("line 3:"), "{}", e);
        let e = ServerConf::parse("\nwebhook = https://h.example.org/x format=xml", &root())
            .unwrap_err();
        assert!(e.starts_with("line 2: webhook: format="), "{}", e);
    }

    #[test]
    fn webhooks_repeat_and_watch_settings_default_from_the_poll_interval() {
        let c = ServerConf::parse(
            "poll_interval = 20\nwebhook = https://a.example.org/x\nwebhook = http://127.0.0.1:9/ format=ntfy\n",
            &root(),
        )
        .unwrap();
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.webhooks[1].line, 3);
        assert_eq!(c.offline_after(), 60);
        assert_eq!(c.webhook_queue, DEFAULT_WEBHOOK_QUEUE);
        let c =
            ServerConf::parse("offline_after = 5m\nwebhook_retry_max = 30s\n", &root()).unwrap();
        assert_eq!(c.offline_after(), 300);
        assert_eq!(c.webhook_retry_max, 30);
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../README.md");
        let start = readme.find("```\n# /etc/phonehome/server.conf\n").unwrap() + 4;
        let len = readme[start..].find("```").unwrap();
        let c = ServerConf::parse(&readme[start..start + len], &root()).unwrap();
        assert_eq!(c.server_host, "ph.example.org");
        assert_eq!(c.default_ttl, 3600);
        assert_eq!(c.log_hosts, ["ph", "ph.example.org"]);
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.offline_after(), 180);
        assert!(c.metrics_file.is_some());
    }

    #[test]
    fn threat_33_the_default_gate_lies_under_the_root() {
        let p = Paths::new(std::path::Path::new("/tmp/r")).unwrap();
        assert_eq!(
            ServerConf::defaults(&p).gate,
            "/tmp/r/usr/local/lib/phonehome/phonehome-gate"
        );
        assert_eq!(ServerConf::defaults(&root()).gate, DEFAULT_GATE);
    }
}
