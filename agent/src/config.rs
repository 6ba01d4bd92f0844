//! Settings of the agent: their defaults, the config file (`name = value`, the format
//! in `phonehome_plumbing::settings`) merged under the flags, and the validation of
//! every value that ends up in an ssh command line. The server host and account follow
//! the protocol's rules (`phonehome_protocol::validate_host`), so that nothing shaped
//! like an ssh option, a dbclient multihop or a second user can ever reach argv, and
//! so that every line the server prints is one the agent takes. Which key and client
//! go together when they are not given is `identity`'s business.

use crate::known_hosts::parse_host_key;
use phonehome_plumbing::{files, settings};
use phonehome_protocol::sshkey::PublicKey;
use phonehome_protocol::{
    parse_port, validate_account, validate_host, DeviceId, DEFAULT_KEEPALIVE_SECS,
    DEFAULT_POLL_INTERVAL_SECS, DEFAULT_POLL_TIMEOUT_SECS, MAX_HOLD_SECS,
};
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/phonehome/phonehome.conf";
/// Where keys are looked for without a config file (`--config /dev/null`).
pub const DEFAULT_KEY_DIR: &str = "/etc/phonehome";
pub const DEFAULT_KNOWN_HOSTS: &str = "/etc/phonehome/known_hosts";
pub const DEFAULT_RUN_DIR: &str = "/var/run/phonehome";
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
    (
        "key",
        "FILE",
        "private key (auto: beside the config file, id_dropbear for dbclient, id_ed25519, id_ecdsa or id_rsa for ssh)",
    ),
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
        "ssh client (auto: the one that reads the key; dbclient first)",
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
    (
        "timeout",
        "SECS",
        "hard limit of a poll's login and first answer (30)",
    ),
    ("keepalive", "SECS", "ssh keepalive interval (30)"),
    (
        "hold",
        "yes|no",
        "offer to hold the session until the next tick, when the server allows (yes)",
    ),
    (
        "interval",
        "SECS",
        "how often cron runs poll; a held session ends by the next tick (60)",
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: Option<String>,
    pub port: u16,
    pub account: Option<String>,
    /// `--key`; None: the client's key names in `key_dir` (`identity`).
    pub key: Option<PathBuf>,
    /// The config file's directory (`DEFAULT_KEY_DIR` without a config file).
    pub key_dir: PathBuf,
    pub known_hosts: PathBuf,
    pub host_keys: Vec<PublicKey>,
    pub client: ClientChoice,
    pub interface: Option<String>,
    pub device_id: Option<DeviceId>,
    pub run_dir: PathBuf,
    pub log: LogTarget,
    pub jitter: u64,
    pub timeout: u64,
    pub keepalive: u64,
    /// Offer the server to hold the session (protocol 3); off on a link where an open
    /// session costs too much.
    pub hold: bool,
    /// The cron period: a held session ends by the time the next tick comes.
    pub interval: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            server: None,
            port: 22,
            account: None,
            key: None,
            key_dir: DEFAULT_KEY_DIR.into(),
            known_hosts: DEFAULT_KNOWN_HOSTS.into(),
            host_keys: Vec::new(),
            client: ClientChoice::Auto,
            interface: None,
            device_id: None,
            run_dir: DEFAULT_RUN_DIR.into(),
            log: LogTarget::Auto,
            jitter: 0,
            timeout: DEFAULT_POLL_TIMEOUT_SECS,
            keepalive: DEFAULT_KEEPALIVE_SECS,
            hold: true,
            interval: DEFAULT_POLL_INTERVAL_SECS,
        }
    }
}

impl Settings {
    /// Set one option from its name and text. Errors say what is wrong with the value.
    pub fn apply(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "server" => {
                validate_host(value).map_err(|e| e.0)?;
                self.server = Some(value.to_string());
            }
            "port" => self.port = parse_port(value).map_err(|e| e.0)?,
            "account" => {
                validate_account(value).map_err(|e| e.0)?;
                self.account = Some(value.to_string());
            }
            "key" => self.key = Some(path(name, value)?),
            "known-hosts" => self.known_hosts = path(name, value)?,
            "host-key" => self.host_keys.push(parse_host_key(value)?),
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
            "hold" => {
                self.hold = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(format!("invalid hold {:?}: use yes or no", value)),
                }
            }
            "interval" => self.interval = seconds(name, value, 1, MAX_HOLD_SECS)?,
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

/// Defaults, then the config file (unless `read_file` is false), then the flags
/// (`given`: name without `--`, value, in order; `config` names the file). A missing
/// default file is fine, a missing explicit one is an error.
pub fn load(given: &[(String, String)], read_file: bool) -> Result<Settings, String> {
    let mut s = Settings::default();
    let explicit = given
        .iter()
        .find(|(n, _)| n == "config")
        .map(|(_, v)| v.as_str());
    s.key_dir = key_dir(explicit);
    // `--config /dev/null`: no config file, as usual on the command line.
    if read_file && explicit != Some("/dev/null") {
        let path = explicit.unwrap_or(DEFAULT_CONFIG);
        match files::read_bounded(std::path::Path::new(path), MAX_CONFIG_BYTES) {
            Ok(Some(data)) => {
                let text = String::from_utf8_lossy(&data);
                for fs in parse_config_file(&text).map_err(|e| format!("{} {}", path, e))? {
                    s.apply(&fs.name, &fs.value)
                        .map_err(|e| format!("{} line {}: {}", path, fs.line, e))?;
                }
            }
            Ok(None) if explicit.is_none() => {}
            Ok(None) => {
                return Err(format!(
                    "cannot read config file {}: it does not exist",
                    path
                ))
            }
            Err(e) => return Err(format!("cannot read config file {}: {}", path, e)),
        }
    }
    if given.iter().any(|(n, _)| n == "host-key") {
        s.host_keys.clear();
    }
    for (name, value) in given.iter().filter(|(n, _)| n != "config") {
        s.apply(name, value)
            .map_err(|e| format!("--{}: {}", name, e))?;
    }
    Ok(s)
}

/// Where keys are looked for: beside the config file (so that a second agent with its
/// own config has its own keys), or `DEFAULT_KEY_DIR` without one.
fn key_dir(config: Option<&str>) -> PathBuf {
    match config {
        Some("/dev/null") => DEFAULT_KEY_DIR.into(),
        other => std::path::Path::new(other.unwrap_or(DEFAULT_CONFIG))
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
    }
}

/// The settings of a config file's text, each with its line.
pub fn parse_config_file(text: &str) -> Result<Vec<settings::Setting>, settings::LineError> {
    let names: Vec<&str> = VALUE_OPTIONS.iter().map(|o| o.0).collect();
    settings::parse(text, &names, &["host-key"])
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
    fn config_files_take_known_names_and_repeat_only_host_keys() {
        let text = "server = example.org\nhost-key = ssh-ed25519 AAAA\nhost-key = x y\n";
        assert_eq!(parse_config_file(text).unwrap().len(), 3);
        assert!(parse_config_file("port = 1\nport = 2\n").is_err());
        assert!(parse_config_file("frobnicate = 1\n").is_err());
    }

    /// The fenced block of `readme` whose first line is `first`.
    pub fn example_block<'a>(readme: &'a str, first: &str) -> &'a str {
        let start = readme
            .find(&format!("```\n{}\n", first))
            .unwrap_or_else(|| panic!("no example starting with {:?}", first))
            + 4;
        let len = readme[start..].find("```").unwrap();
        &readme[start..start + len]
    }

    #[test]
    fn the_readme_example_config_parses() {
        let text = example_block(
            include_str!("../README.md"),
            "# /etc/phonehome/phonehome.conf",
        );
        let mut s = Settings::default();
        for fs in parse_config_file(text).unwrap() {
            s.apply(&fs.name, &fs.value).unwrap();
        }
        assert_eq!(s.server.as_deref(), Some("198.51.100.1"));
        assert_eq!(s.host_keys.len(), 1);
    }

    #[test]
    fn keys_are_looked_for_beside_the_config_file() {
        assert_eq!(key_dir(None), PathBuf::from("/etc/phonehome"));
        assert_eq!(key_dir(Some("/dev/null")), PathBuf::from("/etc/phonehome"));
        assert_eq!(key_dir(Some("/tmp/x/ph.conf")), PathBuf::from("/tmp/x"));
        assert_eq!(key_dir(Some("ph.conf")), PathBuf::from("."));
        let s = load(&[("config".into(), "/tmp/x/ph.conf".into())], false).unwrap();
        assert_eq!(s.key_dir, PathBuf::from("/tmp/x"));
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
        assert_eq!(s.key, None);
        s.apply("key", "/k/mine").unwrap();
        assert_eq!(s.key, Some(PathBuf::from("/k/mine")));
        assert!(
            s.hold && s.interval == 60,
            "holds, every minute, by default"
        );
        s.apply("hold", "no").unwrap();
        s.apply("interval", "300").unwrap();
        assert!(!s.hold && s.interval == 300);
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
            ("server", "h:22"),
            ("server", "a..b"),
            ("account", "root@x"),
            ("hold", "maybe"),
            ("hold", "1"),
            ("interval", "0"),
            ("interval", "3601"),
            ("nonsense", "1"),
        ] {
            assert!(s.apply(n, v).is_err(), "{}={:?} accepted", n, v);
        }
    }
}
