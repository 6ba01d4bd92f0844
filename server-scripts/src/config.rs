//! `etc/phonehome/server.conf`: `name = value` lines, `#` comments. A missing file
//! means all defaults; an unknown name or a bad value is an error naming the line,
//! because a typo in a security setting must not pass silently.

use crate::duration::parse_ttl;
use crate::error::{Error, Result};
use crate::paths::Paths;
use phonehome_protocol::{parse_port, DEFAULT_POLL_INTERVAL_SECS};

/// Where install-server.sh puts the gate; what goes into `command="..."`.
pub const DEFAULT_GATE: &str = "/usr/local/lib/phonehome/phonehome-gate";
pub const DEFAULT_GROUP: &str = "phonehome-devices";
pub const DEFAULT_PORT_RANGE: (u16, u16) = (20000, 29999);
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Largest server.conf read.
const MAX_CONF_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConf {
    pub server_host: String,
    pub server_port: u16,
    pub port_range: (u16, u16),
    pub poll_interval: u64,
    pub default_ttl: u64,
    pub admin_user: String,
    pub device_group: String,
    pub gate: String,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| is_host(s))
        .unwrap_or_else(|| "localhost".into())
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        && !s.starts_with('-')
}

/// A Unix user or group name as useradd accepts it, and safe in sshd's config.
pub fn is_unix_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-".contains(c))
}

/// A path safe to put unquoted in sshd_config and inside `command="..."`.
pub fn is_safe_path(s: &str) -> bool {
    s.starts_with('/')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
}

impl Default for ServerConf {
    fn default() -> ServerConf {
        ServerConf {
            server_host: hostname(),
            server_port: 22,
            port_range: DEFAULT_PORT_RANGE,
            poll_interval: DEFAULT_POLL_INTERVAL_SECS,
            default_ttl: DEFAULT_TTL_SECS,
            admin_user: "root".into(),
            device_group: DEFAULT_GROUP.into(),
            gate: DEFAULT_GATE.into(),
        }
    }
}

impl ServerConf {
    pub fn load(paths: &Paths) -> Result<ServerConf> {
        let path = paths.conf();
        match crate::atomic::read_bounded(&path, MAX_CONF_BYTES)? {
            None => Ok(ServerConf::default()),
            Some(data) => {
                let text = String::from_utf8(data).map_err(|_| {
                    Error::new(format!("{}: not valid UTF-8; fix the file", path.display()))
                })?;
                ServerConf::parse(&text)
                    .map_err(|e| Error::new(format!("{}: {}", path.display(), e.msg)))
            }
        }
    }

    pub fn parse(text: &str) -> Result<ServerConf> {
        let mut c = ServerConf::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |what: &str| Error::new(format!("line {}: {}", i + 1, what));
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| err("expected `name = value`"))?;
            let (name, value) = (name.trim(), value.trim());
            match name {
                "server_host" if is_host(value) => c.server_host = value.into(),
                "server_port" => c.server_port = parse_port(value).map_err(|e| err(&e.0))?,
                "port_range" => {
                    let (lo, hi) = value
                        .split_once('-')
                        .ok_or_else(|| err("port_range: expected LOW-HIGH, e.g. 20000-29999"))?;
                    let lo = parse_port(lo.trim()).map_err(|e| err(&e.0))?;
                    let hi = parse_port(hi.trim()).map_err(|e| err(&e.0))?;
                    if lo < 1024 || lo > hi {
                        return Err(err(
                            "port_range: LOW must be at least 1024 and at most HIGH",
                        ));
                    }
                    c.port_range = (lo, hi);
                }
                "poll_interval" => {
                    c.poll_interval = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=86400).contains(n))
                        .ok_or_else(|| err("poll_interval: expected seconds from 1 to 86400"))?
                }
                "default_ttl" => c.default_ttl = parse_ttl(value).map_err(|e| err(&e.msg))?,
                "admin_user" if is_unix_name(value) => c.admin_user = value.into(),
                "device_group" if is_unix_name(value) => c.device_group = value.into(),
                "gate" if is_safe_path(value) => c.gate = value.into(),
                "server_host" | "admin_user" | "device_group" | "gate" => {
                    return Err(err(&format!("invalid value for {}: {:?}", name, value)))
                }
                _ => return Err(err(&format!("unknown setting {:?}", name))),
            }
        }
        Ok(c)
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

    #[test]
    fn parses_and_validates() {
        let c = ServerConf::parse(
            "# comment\nserver_host = ph.example.org\nserver_port=2222\nport_range = 30000-30010\n\
             poll_interval = 5\ndefault_ttl = 2h\nadmin_user = admin\ngate = /opt/ph/gate\n",
        )
        .unwrap();
        assert_eq!(c.server_host, "ph.example.org");
        assert_eq!(c.server_port, 2222);
        assert_eq!(c.port_range, (30000, 30010));
        assert_eq!(c.default_ttl, 7200);
        assert_eq!(c.default_wait(), 25);
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
            "default_ttl = 30d",
        ] {
            assert!(ServerConf::parse(bad).is_err(), "{:?}", bad);
        }
        let e = ServerConf::parse("\n\ncolour = blue").unwrap_err();
        assert!(e.msg.starts_with("line 3:"), "{}", e);
    }
}
