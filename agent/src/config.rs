//! Settings of the agent: their defaults, the `name = value` config file, and the
//! validation of every value that ends up in an ssh command line. The server host and
//! account are checked here, once, so that nothing shaped like an ssh option, a
//! dbclient multihop (`a,b`, `h/22`, `h^22`) or a second user (`u@h`) can ever reach
//! argv (CVE-2025-47203).

use crate::hostkey::HostKey;
use phonehome_protocol::{parse_port, DeviceId};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/phonehome/phonehome.conf";
pub const DEFAULT_KEY: &str = "/etc/phonehome/id_dropbear";
pub const DEFAULT_KNOWN_HOSTS: &str = "/etc/phonehome/known_hosts";
pub const DEFAULT_RUN_DIR: &str = "/var/run/phonehome";
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_KEEPALIVE_SECS: u64 = 30;
pub const MAX_TIMEOUT_SECS: u64 = 3600;
pub const MAX_JITTER_SECS: u64 = 300;
/// Longest config file read; a real one is a few hundred bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientChoice {
    Auto,
    Dbclient,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Auto,
    Syslog,
    Stderr,
}

/// Every option, by its config-file name (the flag is `--` + name).
pub const VALUE_OPTIONS: &[(&str, &str, &str)] = &[
    ("server", "HOST", "server host name or IP address"),
    ("port", "N", "server ssh port (22)"),
    ("account", "NAME", "server account (device<id>)"),
    ("key", "FILE", "private key (/etc/phonehome/id_dropbear)"),
    (
        "known-hosts",
        "FILE",
        "pinned server host keys, lines [HOST] TYPE BASE64 (/etc/phonehome/known_hosts)",
    ),
    (
        "host-key",
        "'TYPE BASE64'",
        "a pinned server host key; repeatable, used instead of --known-hosts",
    ),
    (
        "client",
        "auto|dbclient|ssh",
        "ssh client (auto: dbclient if on PATH)",
    ),
    ("interface", "IF", "interface whose MAC is the device id"),
    ("device-id", "ID", "device id, overrides the MAC"),
    ("run-dir", "DIR", "state directory (/var/run/phonehome)"),
    (
        "log",
        "auto|syslog|stderr",
        "log target (auto: stderr on a terminal)",
    ),
    ("jitter", "SECS", "max per-device delay before a poll (0)"),
    ("timeout", "SECS", "hard limit of one poll's ssh (30)"),
    ("keepalive", "SECS", "ssh keepalive interval (30)"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: Option<String>,
    pub port: u16,
    pub account: Option<String>,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub host_keys: Vec<HostKey>,
    pub client: ClientChoice,
    pub interface: Option<String>,
    pub device_id: Option<DeviceId>,
    pub run_dir: PathBuf,
    pub log: LogTarget,
    pub jitter: u64,
    pub timeout: u64,
    pub keepalive: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            server: None,
            port: 22,
            account: None,
            key: DEFAULT_KEY.into(),
            known_hosts: DEFAULT_KNOWN_HOSTS.into(),
            host_keys: Vec::new(),
            client: ClientChoice::Auto,
            interface: None,
            device_id: None,
            run_dir: DEFAULT_RUN_DIR.into(),
            log: LogTarget::Auto,
            jitter: 0,
            timeout: DEFAULT_TIMEOUT_SECS,
            keepalive: DEFAULT_KEEPALIVE_SECS,
        }
    }
}

impl Settings {
    /// Set one option from its name and text. Errors say what is wrong with the value.
    pub fn apply(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "server" => {
                validate_host(value)?;
                self.server = Some(value.to_string());
            }
            "port" => self.port = parse_port(value).map_err(|e| e.0)?,
            "account" => {
                validate_account(value)?;
                self.account = Some(value.to_string());
            }
            "key" => self.key = path(name, value)?,
            "known-hosts" => self.known_hosts = path(name, value)?,
            "host-key" => self.host_keys.push(HostKey::parse(value)?),
            "client" => {
                self.client = match value {
                    "auto" => ClientChoice::Auto,
                    "dbclient" => ClientChoice::Dbclient,
                    "ssh" => ClientChoice::Ssh,
                    _ => {
                        return Err(format!(
                            "invalid client {:?}: use auto, dbclient or ssh",
                            value
                        ))
                    }
                }
            }
            "interface" => {
                validate_interface(value)?;
                self.interface = Some(value.to_string());
            }
            "device-id" => self.device_id = Some(DeviceId::from_mac_text(value).map_err(|e| e.0)?),
            "run-dir" => self.run_dir = path(name, value)?,
            "log" => {
                self.log = match value {
                    "auto" => LogTarget::Auto,
                    "syslog" => LogTarget::Syslog,
                    "stderr" => LogTarget::Stderr,
                    _ => {
                        return Err(format!(
                            "invalid log target {:?}: use auto, syslog or stderr",
                            value
                        ))
                    }
                }
            }
            "jitter" => self.jitter = seconds(name, value, 0, MAX_JITTER_SECS)?,
            "timeout" => self.timeout = seconds(name, value, 1, MAX_TIMEOUT_SECS)?,
            "keepalive" => self.keepalive = seconds(name, value, 1, MAX_TIMEOUT_SECS)?,
            _ => return Err(format!("unknown option {:?}", name)),
        }
        Ok(())
    }

    /// The server host, or the error every command that needs it gives.
    pub fn server(&self) -> Result<&str, String> {
        self.server.as_deref().ok_or_else(|| {
            "no server configured: pass --server HOST or set `server = HOST` in the config file"
                .to_string()
        })
    }
}

/// One `name = value` setting of a config file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    pub line: usize,
    pub name: String,
    pub value: String,
}

/// Split a config file into settings: blank lines and `#` comments are skipped, every
/// other line must be `name = value` with a known name. Only `host-key` may repeat.
pub fn parse_config_file(text: &str) -> Result<Vec<FileSetting>, String> {
    let mut out: Vec<FileSetting> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (name, value) = trimmed.split_once('=').ok_or_else(|| {
            format!(
                "line {}: expected `name = value`, found {:?}",
                line, trimmed
            )
        })?;
        let (name, value) = (name.trim(), value.trim());
        if !VALUE_OPTIONS.iter().any(|(n, _, _)| *n == name) {
            return Err(format!("line {}: unknown setting {:?}", line, name));
        }
        if name != "host-key" {
            if let Some(first) = out.iter().find(|s| s.name == name) {
                return Err(format!(
                    "line {}: {} is already set on line {}",
                    line, name, first.line
                ));
            }
        }
        out.push(FileSetting {
            line,
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

/// A server host: a DNS name (letters, digits, `-`, dots) or an IP literal. Nothing
/// else, so that it can never be read by ssh or dbclient as an option, a user, a port
/// or a multihop list.
pub fn validate_host(s: &str) -> Result<(), String> {
    if s.parse::<Ipv4Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid server host {:?}: use a host name (letters, digits, '-' and '.') or an IP address",
            s.escape_debug().to_string()
        ))
    }
}

/// A server account: a portable Unix user name (`device6466b34bde54`).
pub fn validate_account(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid account {:?}: use a Unix user name (a-z, 0-9, '_', '-', starting with a letter)",
            s
        ))
    }
}

fn validate_interface(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid interface name {:?}", s))
    }
}

fn path(name: &str, value: &str) -> Result<PathBuf, String> {
    if value.is_empty() || value.contains('\0') {
        return Err(format!("invalid {} path {:?}", name, value));
    }
    Ok(PathBuf::from(value))
}

fn seconds(name: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "invalid {} {:?}: expected whole seconds from {} to {}",
            name, value, min, max
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_ip_literals_only() {
        for ok in [
            "198.51.100.1",
            "::1",
            "2001:db8::1",
            "example.org",
            "a",
            "srv-1.example.org",
            "localhost",
        ] {
            assert!(validate_host(ok).is_ok(), "{:?} refused", ok);
        }
        for bad in [
            "-oProxyCommand=x",
            "-p",
            "a,b",
            "u@h",
            "h/22",
            "h^22",
            "a b",
            " a",
            "a\n",
            "",
            "h:22",
            "[::1]",
            "a..b",
            "-a.b",
            "a-.b",
            "h%eth0",
            "a_b",
        ] {
            assert!(validate_host(bad).is_err(), "{:?} accepted", bad);
        }
        let e = validate_host("x\u{1b}[2J").unwrap_err();
        assert!(!e.contains('\u{1b}'), "{}", e);
    }

    #[test]
    fn accounts_are_unix_names() {
        assert!(validate_account("device6466b34bde54").is_ok());
        for bad in [
            "",
            "-oX",
            "u@h",
            "Root",
            "a b",
            "a,b",
            "a/b",
            &"a".repeat(33),
        ] {
            assert!(validate_account(bad).is_err(), "{:?} accepted", bad);
        }
    }

    #[test]
    fn config_file_lines() {
        let text = "# comment\n\n server = example.org \nport=2222\nhost-key = ssh-ed25519 AAAA\nhost-key = x y\n";
        let s = parse_config_file(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            FileSetting {
                line: 3,
                name: "server".into(),
                value: "example.org".into()
            }
        );
        assert_eq!(s[1].value, "2222");
        assert_eq!(s[3].line, 6);
    }

    #[test]
    fn config_file_errors_name_the_line() {
        let e = parse_config_file("server = a\nfrobnicate = 1\n").unwrap_err();
        assert!(
            e.starts_with("line 2:") && e.contains("frobnicate"),
            "{}",
            e
        );
        let e = parse_config_file("server a\n").unwrap_err();
        assert!(
            e.starts_with("line 1:") && e.contains("name = value"),
            "{}",
            e
        );
        let e = parse_config_file("port = 1\n\nport = 2\n").unwrap_err();
        assert!(e.starts_with("line 3:") && e.contains("line 1"), "{}", e);
    }

    #[test]
    fn values_are_checked() {
        let mut s = Settings::default();
        s.apply("port", "2222").unwrap();
        assert_eq!(s.port, 2222);
        s.apply("device-id", "64:66:B3:4B:DE:54").unwrap();
        assert_eq!(s.device_id.as_ref().unwrap().as_str(), "6466b34bde54");
        s.apply("client", "dbclient").unwrap();
        assert_eq!(s.client, ClientChoice::Dbclient);
        for (n, v) in [
            ("port", "0"),
            ("port", "022"),
            ("port", "65536"),
            ("server", "-oProxyCommand=x"),
            ("client", "plink"),
            ("log", "file"),
            ("timeout", "0"),
            ("timeout", "+5"),
            ("jitter", "100000"),
            ("interface", "../x"),
            ("device-id", "xyz"),
            ("host-key", "ssh-ed25519"),
            ("account", "root@x"),
            ("nonsense", "1"),
        ] {
            assert!(s.apply(n, v).is_err(), "{}={:?} accepted", n, v);
        }
    }
}
