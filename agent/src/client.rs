//! Which ssh client the agent drives and the exact argv it gets: dropbear's `dbclient`
//! (with the options its version knows) or OpenSSH's `ssh`. Pure data and functions:
//! every value comes from validated settings (nothing from the server ever reaches an
//! argv); `ssh.rs` is what runs it.

use phonehome_protocol::{truncate_text, PortPair, POLL_COMMAND};
use std::path::{Path, PathBuf};

/// First dropbear release with `-o StrictHostKeyChecking` and `-o BatchMode` (CHANGES).
pub const DBCLIENT_STRICT_SINCE: (u32, u32) = (2024, 84);

/// The two clients the agent can drive, by their program names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dbclient,
    Ssh,
}

impl Kind {
    /// Both, in the order `--client auto` prefers them (OpenWrt's own client first).
    pub const ALL: [Kind; 2] = [Kind::Dbclient, Kind::Ssh];

    /// The program's name on PATH.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dbclient => "dbclient",
            Kind::Ssh => "ssh",
        }
    }

    /// The Debian package that brings it.
    pub fn package(self) -> &'static str {
        match self {
            Kind::Dbclient => "dropbear-bin (OpenWrt: dropbear)",
            Kind::Ssh => "openssh-client",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// dropbear's client; `strict` when it knows StrictHostKeyChecking and BatchMode.
    Dbclient {
        strict: bool,
    },
    OpenSsh,
}

/// A client ready to use: its path, flavour and version text for the status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub program: PathBuf,
    pub flavour: Flavour,
    pub description: String,
}

/// Where and as whom to log in. Every field was validated by `config`.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub account: String,
    pub key: PathBuf,
    pub keepalive: u64,
    pub connect_timeout: u64,
    /// OpenSSH's UserKnownHostsFile (dbclient reads `$HOME/.ssh/known_hosts` instead).
    pub known_hosts: PathBuf,
}

impl Client {
    /// The client from what its `-V` printed; `kind` tells which binary was run.
    pub fn from_version(program: PathBuf, kind: Kind, text: &str) -> Client {
        if kind == Kind::Dbclient {
            let version = parse_dropbear_version(text);
            Client {
                flavour: Flavour::Dbclient {
                    strict: version.is_some_and(|v| v >= DBCLIENT_STRICT_SINCE),
                },
                description: match version {
                    Some((y, n)) => format!("dbclient {}.{}", y, n),
                    None => "dbclient (unknown version)".into(),
                },
                program,
            }
        } else {
            let word = text
                .split_whitespace()
                .next()
                .unwrap_or("unknown")
                .trim_end_matches(',');
            Client {
                flavour: Flavour::OpenSsh,
                description: format!("ssh {}", truncate_text(word, 64)),
                program,
            }
        }
    }

    /// The cache file's text: the binary's identity, then the flavour and description.
    pub fn cache_text(&self, binary: &str) -> String {
        let flavour = match self.flavour {
            Flavour::Dbclient { strict: true } => "dbclient-strict",
            Flavour::Dbclient { strict: false } => "dbclient",
            Flavour::OpenSsh => "openssh",
        };
        format!("{}\n{}\n{}\n", binary, flavour, self.description)
    }

    /// The client a cache file describes, if it describes `binary` at `program`.
    pub fn from_cache(text: &str, binary: &str, program: &Path) -> Option<Client> {
        let mut lines = text.lines();
        if lines.next()? != binary {
            return None;
        }
        let flavour = match lines.next()? {
            "dbclient-strict" => Flavour::Dbclient { strict: true },
            "dbclient" => Flavour::Dbclient { strict: false },
            "openssh" => Flavour::OpenSsh,
            _ => return None,
        };
        Some(Client {
            program: program.to_path_buf(),
            flavour,
            description: truncate_text(lines.next()?, 80),
        })
    }

    /// Options shared by polls and tunnels.
    fn common_args(&self, t: &Target) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        match self.flavour {
            Flavour::Dbclient { strict } => {
                push(&["-i", &t.key.to_string_lossy(), "-T"]);
                push(&["-K", &t.keepalive.to_string()]);
                push(&["-o", "ExitOnForwardFailure=yes"]);
                if strict {
                    push(&["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]);
                }
                push(&["-p", &t.port.to_string()]);
            }
            Flavour::OpenSsh => {
                push(&["-F", "/dev/null"]);
                for o in [
                    "BatchMode=yes".to_string(),
                    "StrictHostKeyChecking=yes".to_string(),
                    format!("UserKnownHostsFile={}", t.known_hosts.display()),
                    "GlobalKnownHostsFile=/dev/null".to_string(),
                    "ExitOnForwardFailure=yes".to_string(),
                    format!("ServerAliveInterval={}", t.keepalive),
                    "ServerAliveCountMax=3".to_string(),
                    format!("ConnectTimeout={}", t.connect_timeout),
                    "IdentitiesOnly=yes".to_string(),
                    "UpdateHostKeys=no".to_string(),
                    // Prefer classic curve25519: OpenSSH's default post-quantum kex costs
                    // about ten times the CPU per login (LAB-NOTES), on the device and on
                    // a server taking a login per device per minute. `^` puts it first and
                    // keeps the rest of the default list as a fallback.
                    "KexAlgorithms=^curve25519-sha256".to_string(),
                    "LogLevel=ERROR".to_string(),
                ] {
                    push(&["-o", &o]);
                }
                push(&[
                    "-i",
                    &t.key.to_string_lossy(),
                    "-p",
                    &t.port.to_string(),
                    "-T",
                ]);
            }
        }
        a
    }

    /// argv (without the program) of one poll: log in and run the gate's `poll`.
    pub fn poll_args(&self, t: &Target) -> Vec<String> {
        let mut a = self.common_args(t);
        a.push(destination(t));
        a.push(POLL_COMMAND.to_string());
        a
    }

    /// argv (without the program) of a tunnel: no command, one remote forward.
    pub fn tunnel_args(&self, t: &Target, pair: PortPair) -> Vec<String> {
        let mut a = self.common_args(t);
        a.push("-N".into());
        a.push("-R".into());
        a.push(format!(
            "localhost:{}:127.0.0.1:{}",
            pair.remote, pair.local
        ));
        a.push(destination(t));
        a
    }

    /// The whole argv of a tunnel, program first, as /proc shows it.
    pub fn tunnel_argv(&self, t: &Target, pair: PortPair) -> Vec<String> {
        let mut argv = vec![self.program.to_string_lossy().into_owned()];
        argv.extend(self.tunnel_args(t, pair));
        argv
    }
}

fn destination(t: &Target) -> String {
    format!("{}@{}", t.account, t.host)
}

/// What identifies one build of the client: path, size, mtime (ns) and inode, resolved
/// through symlinks (OpenWrt's dbclient is a link to the dropbear multi-call binary).
pub fn binary_identity(program: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(program).ok()?;
    Some(format!(
        "{}\t{}\t{}.{}\t{}",
        program.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino()
    ))
}

/// `Dropbear v2022.83` → (2022, 83).
pub fn parse_dropbear_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("Dropbear v")? + "Dropbear v".len()..];
    let ver: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let (y, n) = ver.split_once('.')?;
    Some((y.parse().ok()?, n.trim_end_matches('.').parse().ok()?))
}

/// The first executable `name` in the directories of `path_env`.
pub fn find_on_path(name: &str, path_env: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path_env?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16) -> Target {
        Target {
            host: "198.51.100.1".into(),
            port,
            account: "device6466b34bde54".into(),
            key: "/etc/phonehome/id_dropbear".into(),
            keepalive: 30,
            connect_timeout: 30,
            known_hosts: "/var/run/phonehome/known_hosts".into(),
        }
    }

    fn client(flavour: Flavour) -> Client {
        Client {
            program: "/usr/bin/x".into(),
            flavour,
            description: String::new(),
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    const PAIR: PortPair = PortPair {
        local: 22,
        remote: 9876,
    };

    #[test]
    fn dbclient_2022_argv_has_no_strict_options_and_never_y() {
        let c = client(Flavour::Dbclient { strict: false });
        assert_eq!(
            c.poll_args(&target(22)),
            words("-i /etc/phonehome/id_dropbear -T -K 30 -o ExitOnForwardFailure=yes -p 22 device6466b34bde54@198.51.100.1 poll")
        );
        assert_eq!(
            c.tunnel_args(&target(2222), PAIR),
            words("-i /etc/phonehome/id_dropbear -T -K 30 -o ExitOnForwardFailure=yes -p 2222 -N -R localhost:9876:127.0.0.1:22 device6466b34bde54@198.51.100.1")
        );
        assert_eq!(c.tunnel_argv(&target(2222), PAIR)[0], "/usr/bin/x");
    }

    #[test]
    fn dbclient_2024_84_argv_is_strict() {
        let c = client(Flavour::Dbclient { strict: true });
        assert_eq!(
            c.poll_args(&target(22)),
            words("-i /etc/phonehome/id_dropbear -T -K 30 -o ExitOnForwardFailure=yes -o StrictHostKeyChecking=yes -o BatchMode=yes -p 22 device6466b34bde54@198.51.100.1 poll")
        );
    }

    #[test]
    fn openssh_argv() {
        let c = client(Flavour::OpenSsh);
        let expected = "-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes \
            -o UserKnownHostsFile=/var/run/phonehome/known_hosts -o GlobalKnownHostsFile=/dev/null \
            -o ExitOnForwardFailure=yes -o ServerAliveInterval=30 -o ServerAliveCountMax=3 \
            -o ConnectTimeout=30 -o IdentitiesOnly=yes -o UpdateHostKeys=no \
            -o KexAlgorithms=^curve25519-sha256 -o LogLevel=ERROR \
            -i /etc/phonehome/id_dropbear -p 2222 -T";
        let mut poll = words(expected);
        poll.extend(words("device6466b34bde54@198.51.100.1 poll"));
        assert_eq!(c.poll_args(&target(2222)), poll);
        let mut tunnel = words(expected);
        tunnel.extend(words(
            "-N -R localhost:9876:127.0.0.1:22 device6466b34bde54@198.51.100.1",
        ));
        assert_eq!(c.tunnel_args(&target(2222), PAIR), tunnel);
    }

    #[test]
    fn no_flavour_ever_uses_y_or_f() {
        for f in [
            Flavour::Dbclient { strict: false },
            Flavour::Dbclient { strict: true },
            Flavour::OpenSsh,
        ] {
            let c = client(f);
            for a in c
                .poll_args(&target(22))
                .iter()
                .chain(c.tunnel_args(&target(22), PAIR).iter())
            {
                assert!(
                    a != "-y" && a != "-f" && a != "-J" && a != "-t",
                    "{:?}: {}",
                    f,
                    a
                );
            }
        }
    }

    #[test]
    fn versions_and_their_flavours() {
        assert_eq!(
            parse_dropbear_version("Dropbear v2022.83\n"),
            Some((2022, 83))
        );
        assert_eq!(
            parse_dropbear_version("Dropbear v2024.84"),
            Some((2024, 84))
        );
        assert_eq!(
            parse_dropbear_version("Dropbear v2025.88\n"),
            Some((2025, 88))
        );
        assert_eq!(parse_dropbear_version("OpenSSH_9.2p1"), None);
        let strict = |v: &str| Client::from_version("/x".into(), Kind::Dbclient, v).flavour;
        assert_eq!(
            strict("Dropbear v2020.81"),
            Flavour::Dbclient { strict: false }
        );
        assert_eq!(
            strict("Dropbear v2022.83"),
            Flavour::Dbclient { strict: false }
        );
        assert_eq!(
            strict("Dropbear v2024.84"),
            Flavour::Dbclient { strict: true }
        );
        assert_eq!(
            strict("Dropbear v2026.94"),
            Flavour::Dbclient { strict: true }
        );
        assert_eq!(strict("garbage"), Flavour::Dbclient { strict: false });
        let ssh = Client::from_version(
            "/x".into(),
            Kind::Ssh,
            "OpenSSH_9.2p1 Debian-2, OpenSSL 3.0",
        );
        assert_eq!(ssh.description, "ssh OpenSSH_9.2p1");
    }

    #[test]
    fn cache_round_trip() {
        let c = Client::from_version(
            "/usr/bin/dbclient".into(),
            Kind::Dbclient,
            "Dropbear v2024.86",
        );
        let text = c.cache_text("id1");
        assert_eq!(
            Client::from_cache(&text, "id1", Path::new("/usr/bin/dbclient")),
            Some(c)
        );
        assert_eq!(
            Client::from_cache(&text, "id2", Path::new("/usr/bin/dbclient")),
            None
        );
        assert_eq!(
            Client::from_cache("garbage\n", "garbage", Path::new("/x")),
            None
        );
    }
}
