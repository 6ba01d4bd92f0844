//! The one place that runs an ssh client. It finds the client (dropbear `dbclient` or
//! OpenSSH `ssh`), builds its argv for a poll or a tunnel from validated settings only
//! (nothing from the server ever gets here), runs a poll with stdin fed and closed, a
//! hard timeout and bounded output, and turns the client's stderr into an error kind.

use crate::sys;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// First dropbear release with `-o StrictHostKeyChecking` and `-o BatchMode`.
pub const DBCLIENT_STRICT_SINCE: (u32, u32) = (2024, 84);
/// Most stderr kept from any ssh run.
pub const MAX_STDERR_BYTES: usize = 16 * 1024;
/// How long to wait for a client's output to end after it exited, before killing what
/// it left behind holding the pipes.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long `-V` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Find the client (`dbclient` or `ssh` on PATH, or auto: dbclient first) and ask it
    /// its version, remembering the answer in `cache` (a file of the run dir): what `-V`
    /// says changes only with the client's binary, and asking it is one more process
    /// start on every poll (most of the agent's CPU beyond the client's own, measured by
    /// the bench). The cache is keyed by the binary's path, size, mtime and inode.
    pub fn detect_cached(
        choice: crate::config::ClientChoice,
        path_env: Option<&str>,
        cache: &Path,
    ) -> Result<Client, String> {
        let (program, dropbear) = Client::locate(choice, path_env)?;
        let Some(key) = binary_key(&program) else {
            return Client::probe(program, dropbear);
        };
        if let Some(client) = std::fs::read_to_string(cache)
            .ok()
            .and_then(|text| Client::from_cache(&text, &key, &program))
        {
            return Ok(client);
        }
        let client = Client::probe(program, dropbear)?;
        let flavour = match client.flavour {
            Flavour::Dbclient { strict: true } => "dbclient-strict",
            Flavour::Dbclient { strict: false } => "dbclient",
            Flavour::OpenSsh => "openssh",
        };
        let text = format!("{}\n{}\n{}\n", key, flavour, client.description);
        if let Err(e) = crate::files::atomic_write(cache, text.as_bytes(), 0o644) {
            log::debug!(
                "cannot cache the client's version in {}: {}",
                cache.display(),
                e
            );
        }
        Ok(client)
    }

    fn from_cache(text: &str, key: &str, program: &Path) -> Option<Client> {
        let mut lines = text.lines();
        if lines.next()? != key {
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
            description: phonehome_protocol::truncate_text(lines.next()?, 80),
        })
    }

    /// The client's path on PATH, and whether it is dropbear's.
    fn locate(
        choice: crate::config::ClientChoice,
        path_env: Option<&str>,
    ) -> Result<(PathBuf, bool), String> {
        use crate::config::ClientChoice::*;
        let names: &[&str] = match choice {
            Auto => &["dbclient", "ssh"],
            Dbclient => &["dbclient"],
            Ssh => &["ssh"],
        };
        for name in names {
            if let Some(program) = find_on_path(name, path_env) {
                return Ok((program, name == &"dbclient"));
            }
        }
        Err(format!(
            "no ssh client found: {} not on PATH; install dropbear's dbclient or openssh-client, or set --client",
            names.join(" or ")
        ))
    }

    /// Ask the client for its version (`-V`) to know which options it understands.
    fn probe(program: PathBuf, dropbear: bool) -> Result<Client, String> {
        let out = run_bounded(
            &program,
            &["-V".to_string()],
            None,
            b"",
            VERSION_TIMEOUT,
            4096,
        )
        .map_err(|e| format!("cannot run `{} -V`: {}", program.display(), e))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        if dropbear {
            let version = parse_dropbear_version(&text);
            Ok(Client {
                flavour: Flavour::Dbclient {
                    strict: version.is_some_and(|v| v >= DBCLIENT_STRICT_SINCE),
                },
                description: match version {
                    Some((y, n)) => format!("dbclient {}.{}", y, n),
                    None => "dbclient (unknown version)".into(),
                },
                program,
            })
        } else {
            let word = text
                .split_whitespace()
                .next()
                .unwrap_or("unknown")
                .trim_end_matches(',');
            Ok(Client {
                flavour: Flavour::OpenSsh,
                description: format!("ssh {}", phonehome_protocol::truncate_text(word, 64)),
                program,
            })
        }
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
        a.push(phonehome_protocol::POLL_COMMAND.to_string());
        a
    }

    /// argv (without the program) of a tunnel: no command, one remote forward.
    pub fn tunnel_args(&self, t: &Target, local: u16, remote: u16) -> Vec<String> {
        let mut a = self.common_args(t);
        a.push("-N".into());
        a.push("-R".into());
        a.push(format!("localhost:{}:127.0.0.1:{}", remote, local));
        a.push(destination(t));
        a
    }
}

fn destination(t: &Target) -> String {
    format!("{}@{}", t.account, t.host)
}

/// What identifies one build of the client: path, size, mtime (ns) and inode, resolved
/// through symlinks (OpenWrt's dbclient is a link to the dropbear multi-call binary).
fn binary_key(program: &Path) -> Option<String> {
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

/// What came out of one bounded run.
#[derive(Debug)]
pub struct Outcome {
    /// None when it had to be killed.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// Run `program args` with `stdin_data` written then closed, stdout kept up to
/// `max_stdout` bytes and stderr up to `MAX_STDERR_BYTES` (the rest is drained and
/// dropped), killed with its whole process group past `timeout`, and killed if this
/// agent dies first.
pub fn run_bounded(
    program: &Path,
    args: &[String],
    home: Option<&Path>,
    stdin_data: &[u8],
    timeout: Duration,
    max_stdout: usize,
) -> io::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(home) = home {
        cmd.env("HOME", home);
    }
    sys::die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let pgid = child.id();

    let mut stdin = child.stdin.take().expect("stdin is piped");
    let data = stdin_data.to_vec();
    // A client that never reads its stdin must not block us: write from a thread.
    thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out_rx = reader(child.stdout.take().expect("stdout is piped"), max_stdout);
    let err_rx = reader(
        child.stderr.take().expect("stderr is piped"),
        MAX_STDERR_BYTES,
    );

    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = sys::kill_group(pgid, sys::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The client is gone; a process it left behind may still hold the pipes open.
    // Its output has normally reached EOF already; give a straggler a short grace.
    let grace = OUTPUT_GRACE;
    let collect = |rx: &mpsc::Receiver<Vec<u8>>| match rx.recv_timeout(grace) {
        Ok(v) => v,
        Err(_) => {
            let _ = sys::kill_group(pgid, sys::SIGKILL);
            rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
        }
    };
    let stdout = collect(&out_rx);
    let stderr = collect(&err_rx);
    Ok(Outcome {
        status,
        stdout,
        stderr,
        timed_out,
    })
}

fn reader(mut pipe: impl Read + Send + 'static, max: usize) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

/// Why an ssh run failed, as far as its stderr tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    HostKey,
    Auth,
    Refused,
    Timeout,
    Dns,
    Unreachable,
    ForwardRefused,
    Other,
}

impl ErrorKind {
    /// What it means and what to do, for messages and status reports.
    pub fn advice(self) -> &'static str {
        match self {
            ErrorKind::HostKey => "server host key unknown or changed: check the pinned keys (--host-key / --known-hosts)",
            ErrorKind::Auth => "the server refused this device's key: check --key and that the device was added on the server",
            ErrorKind::Refused => "connection refused: is sshd running on that host and port?",
            ErrorKind::Timeout => "timed out: the server is unreachable or too slow",
            ErrorKind::Dns => "cannot resolve the server name: check DNS or use an IP address",
            ErrorKind::Unreachable => "no route to the server: check the network",
            ErrorKind::ForwardRefused => "the server refused the port forward: the port is busy or not granted to this device",
            ErrorKind::Other => "ssh failed",
        }
    }
}

/// Classify an ssh client's stderr (OpenSSH or dbclient wording).
pub fn classify(stderr: &str) -> ErrorKind {
    let s = stderr.to_ascii_lowercase();
    PATTERNS
        .iter()
        .find(|(_, pats)| pats.iter().any(|p| s.contains(p)))
        .map_or(ErrorKind::Other, |(k, _)| *k)
}

/// What each kind looks like in OpenSSH's and dbclient's stderr, most specific first.
const PATTERNS: &[(ErrorKind, &[&str])] = &[
    (
        ErrorKind::HostKey,
        &[
            "host key verification failed",
            "remote host identification has changed",
            "host key is known for",
            "not in the trusted hosts file",
            "host key mismatch",
            "bad host key",
            "do you want to continue connecting",
            "host key not accepted",
            // dbclient 2024.84+ with StrictHostKeyChecking=yes (cli-kex.c), and with
            // BatchMode alone.
            "not accepted automatically",
            "didn't validate host key",
        ],
    ),
    (
        ErrorKind::ForwardRefused,
        &[
            "remote port forwarding failed",
            "request was denied",
            "forward request failed",
            "port forwarding failed",
        ],
    ),
    (
        ErrorKind::Auth,
        &[
            "permission denied",
            "no auth methods could be used",
            "too many authentication failures",
        ],
    ),
    (
        ErrorKind::Dns,
        &[
            "could not resolve hostname",
            "name or service not known",
            "error resolving",
            "temporary failure in name resolution",
            "no address associated",
        ],
    ),
    (ErrorKind::Refused, &["connection refused"]),
    (ErrorKind::Timeout, &["timed out", "timeout"]),
    (
        ErrorKind::Unreachable,
        &["no route to host", "network is unreachable"],
    ),
];

/// The line of stderr that shows the error kind (e.g. dbclient's "Host key mismatch
/// for ..." rather than the fingerprint lines after it; patterns in table order), else
/// the last line.
pub fn telling_line(stderr: &str) -> Option<String> {
    let kind = classify(stderr);
    let pats: &[&str] = PATTERNS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, p)| *p);
    pats.iter()
        .find_map(|p| stderr.lines().find(|l| l.to_ascii_lowercase().contains(p)))
        .and_then(last_line)
        .or_else(|| last_line(stderr))
}

/// The most telling line of an ssh client's stderr, cleaned for logs and reports:
/// the last non-empty line, control characters replaced.
pub fn last_line(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| !l.is_empty())?;
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Some(phonehome_protocol::truncate_text(&clean, 300))
}

/// Shell-like rendering of a command for error messages (never executed).
pub fn render(program: &Path, args: &[String]) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@^,+".contains(&b))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    std::iter::once(quote(&program.to_string_lossy()))
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_version_is_probed_once_per_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::files::tests::TempDir::new("client-cache");
        let bin = dir.0.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = bin.join("dbclient");
        let calls = dir.0.join("calls");
        let write_fake = |version: &str| {
            std::fs::write(
                &fake,
                format!(
                    "#!/bin/sh\necho probe >>'{}'\necho 'Dropbear v{}' >&2\n",
                    calls.display(),
                    version
                ),
            )
            .unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let probes = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let cache = dir.0.join("client");
        let path = bin.to_str().unwrap().to_string();
        let detect = || {
            Client::detect_cached(crate::config::ClientChoice::Auto, Some(&path), &cache).unwrap()
        };

        write_fake("2022.83");
        let first = detect();
        assert_eq!(first.flavour, Flavour::Dbclient { strict: false });
        assert_eq!(first.description, "dbclient 2022.83");
        assert_eq!(detect(), first, "the cached answer is the probed one");
        assert_eq!(probes(), 1, "-V ran once for two polls");

        // A new binary (upgraded dropbear) is probed again.
        write_fake("2024.86");
        let upgraded = detect();
        assert_eq!(upgraded.flavour, Flavour::Dbclient { strict: true });
        assert_eq!(probes(), 2);

        // A damaged cache is ignored, never trusted.
        std::fs::write(&cache, "garbage\n").unwrap();
        assert_eq!(detect(), upgraded);
        assert_eq!(probes(), 3);
    }

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

    #[test]
    fn dbclient_2022_argv_has_no_strict_options_and_never_y() {
        let c = client(Flavour::Dbclient { strict: false });
        assert_eq!(
            c.poll_args(&target(22)),
            words("-i /etc/phonehome/id_dropbear -T -K 30 -o ExitOnForwardFailure=yes -p 22 device6466b34bde54@198.51.100.1 poll")
        );
        assert_eq!(
            c.tunnel_args(&target(2222), 22, 9876),
            words("-i /etc/phonehome/id_dropbear -T -K 30 -o ExitOnForwardFailure=yes -p 2222 -N -R localhost:9876:127.0.0.1:22 device6466b34bde54@198.51.100.1")
        );
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
        assert_eq!(c.tunnel_args(&target(2222), 22, 9876), tunnel);
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
                .chain(c.tunnel_args(&target(22), 1, 2).iter())
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
    fn dropbear_versions() {
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
        assert!((2022, 83) < DBCLIENT_STRICT_SINCE);
        assert!((2024, 84) >= DBCLIENT_STRICT_SINCE);
        assert!((2025, 1) >= DBCLIENT_STRICT_SINCE);
    }

    #[test]
    fn stderr_kinds() {
        use ErrorKind::*;
        for (text, kind) in [
            ("Host key verification failed.", HostKey),
            ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.", HostKey),
            ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", HostKey),
            ("\nHost '127.0.0.1' is not in the trusted hosts file.\nDo you want to continue connecting? (y/n) ", HostKey),
            ("Host key mismatch for 127.0.0.1 !", HostKey),
            // dbclient 2024.86 and 2026.94, a host whose key is not pinned.
            ("/run/bin/dbclient: Connection to root@127.0.0.1:38421 exited: Not accepted automatically", HostKey),
            ("dbclient: Exited: Didn't validate host key", HostKey),
            ("device1@h: Permission denied (publickey).", Auth),
            ("dbclient: Exited: No auth methods could be used.", Auth),
            ("ssh: connect to host 127.0.0.1 port 1: Connection refused", Refused),
            ("dbclient: Exited: Failed connecting to '127.0.0.1' port 1: Connection refused", Refused),
            ("ssh: Could not resolve hostname nowhere.invalid: Name or service not known", Dns),
            ("dbclient: Exited: Error resolving 'nowhere.invalid' port '22'. Name or service not known", Dns),
            ("ssh: connect to host 10.1.1.1 port 22: Connection timed out", Timeout),
            ("Error: remote port forwarding failed for listen port 9876", ForwardRefused),
            ("dbclient: Exited: Remote TCP forward request failed (port 9876 -> 127.0.0.1:22)", ForwardRefused),
            ("ssh: connect to host 10.1.1.1 port 22: No route to host", Unreachable),
            ("something odd", Other),
        ] {
            assert_eq!(classify(text), kind, "{:?}", text);
        }
    }

    #[test]
    fn telling_line_picks_the_classified_line() {
        let dbclient =
            "\nHost key mismatch for 127.0.0.1 !\nFingerprint is SHA256:abc\nExpected SHA256:def\n";
        assert_eq!(
            telling_line(dbclient).as_deref(),
            Some("Host key mismatch for 127.0.0.1 !")
        );
        assert_eq!(telling_line("a\nb\n").as_deref(), Some("b"));
        let openssh = "@@@\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nblah\nHost key verification failed.\n";
        assert_eq!(
            telling_line(openssh).as_deref(),
            Some("Host key verification failed.")
        );
    }

    #[test]
    fn last_line_is_clean() {
        assert_eq!(last_line("a\n\x1b[2Jb \n\n").as_deref(), Some("?[2Jb"));
        assert_eq!(last_line("\n \n"), None);
    }

    #[test]
    fn bounded_run_feeds_stdin_and_bounds_stdout() {
        let out = run_bounded(
            Path::new("/bin/sh"),
            &["-c".into(), "cat; printf 0123456789; echo err >&2".into()],
            None,
            b"in-",
            Duration::from_secs(10),
            8,
        )
        .unwrap();
        assert_eq!(out.stdout, b"in-01234");
        assert_eq!(out.stderr, b"err\n");
        assert!(out.status.unwrap().success());
        assert!(!out.timed_out);
    }

    #[test]
    fn bounded_run_does_not_wait_for_a_straggler_holding_the_pipes() {
        let start = Instant::now();
        let out = run_bounded(
            Path::new("/bin/sh"),
            &["-c".into(), "echo out; sleep 30 & exit 3".into()],
            None,
            b"",
            Duration::from_secs(25),
            64,
        )
        .unwrap();
        assert_eq!(out.status.unwrap().code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn bounded_run_kills_a_hang_and_its_group() {
        let start = Instant::now();
        let out = run_bounded(
            Path::new("/bin/sh"),
            &["-c".into(), "sleep 30 & echo $!; sleep 30".into()],
            None,
            b"",
            Duration::from_millis(300),
            64,
        )
        .unwrap();
        assert!(out.timed_out && out.status.is_none());
        assert!(start.elapsed() < Duration::from_secs(10));
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let gone = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid))
                .map_or(true, |s| s.contains(") Z "))
        };
        let until = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the background sleep {} outlived the timeout", pid);
    }
}
