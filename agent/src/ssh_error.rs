//! What an ssh client's stderr means. OpenSSH and every dbclient release OpenWrt
//! ships word their failures differently; this turns either into data — a kind and
//! the client's own telling line — so that callers decide on the kind and people read
//! the advice plus the client's words.

use phonehome_plumbing::text::for_terminal;
use phonehome_protocol::{truncate_text, MAX_TEXT_LEN};
use std::fmt;

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
    /// What it means and what to do.
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

/// What each kind looks like in OpenSSH's and dbclient's stderr (lower case), most
/// specific first. dbclient >= 2024.84 ends an unknown host key with "Not accepted
/// automatically" (cli-kex.c), older releases prompt "Do you want to continue".
const PATTERNS: &[(ErrorKind, &[&str])] = &[
    (
        ErrorKind::HostKey,
        &[
            "host key verification failed",
            "remote host identification has changed",
            "host key is known for",
            "not in the trusted hosts file",
            "host key mismatch",
            "not accepted automatically",
            "didn't validate host key",
            "bad hostkey signature",
            "bad host key",
            "do you want to continue connecting",
            "host key not accepted",
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

/// An ssh failure as data: its kind and the client's telling line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshError {
    pub kind: ErrorKind,
    /// The line of stderr that shows the kind (else its last line), cleaned.
    pub line: Option<String>,
}

impl SshError {
    /// Read a client's stderr.
    pub fn from_stderr(stderr: &str) -> SshError {
        let s = stderr.to_ascii_lowercase();
        let found = PATTERNS
            .iter()
            .find_map(|(k, pats)| pats.iter().find(|p| s.contains(*p)).map(|p| (*k, *p)));
        let line = match found {
            Some((_, pat)) => stderr
                .lines()
                .find(|l| l.to_ascii_lowercase().contains(pat))
                .and_then(last_line),
            None => None,
        }
        .or_else(|| last_line(stderr));
        SshError {
            kind: found.map_or(ErrorKind::Other, |(k, _)| k),
            line,
        }
    }
}

/// One line for logs and reports: the kind's advice when known, then the client's
/// own words; bounded for a status report.
impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match (self.kind, &self.line) {
            (ErrorKind::Other, Some(l)) => l.clone(),
            (k, Some(l)) => format!("{} ({})", k.advice(), l),
            (k, None) => k.advice().to_string(),
        };
        f.write_str(&truncate_text(&text, MAX_TEXT_LEN))
    }
}

/// The last non-empty line of `text`, trimmed, terminal-safe and bounded.
pub fn last_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rev().find(|l| !l.is_empty())?;
    Some(for_terminal(line, 300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;

    #[test]
    fn stderr_kinds() {
        for (text, kind) in [
            ("Host key verification failed.", HostKey),
            ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.", HostKey),
            ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", HostKey),
            ("\nHost '127.0.0.1' is not in the trusted hosts file.\nDo you want to continue connecting? (y/n) ", HostKey),
            ("Host key mismatch for 127.0.0.1 !", HostKey),
            // dbclient 2024.84 and later, unknown host key with BatchMode.
            ("\nHost '127.0.0.1' is not in the trusted hosts file.\n(ssh-ed25519 fingerprint SHA256:abc)\ndbclient: Connection to root@127.0.0.1:2222 exited: Not accepted automatically", HostKey),
            ("dbclient: Connection to root@127.0.0.1:22 exited: Didn't validate host key", HostKey),
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
            assert_eq!(SshError::from_stderr(text).kind, kind, "{:?}", text);
        }
    }

    #[test]
    fn the_telling_line_is_kept() {
        let dbclient =
            "\nHost key mismatch for 127.0.0.1 !\nFingerprint is SHA256:abc\nExpected SHA256:def\n";
        let e = SshError::from_stderr(dbclient);
        assert_eq!(e.line.as_deref(), Some("Host key mismatch for 127.0.0.1 !"));
        assert!(
            e.to_string()
                .starts_with("server host key unknown or changed"),
            "{}",
            e
        );
        assert_eq!(SshError::from_stderr("a\nb\n").line.as_deref(), Some("b"));
        assert_eq!(SshError::from_stderr("a\nb\n").to_string(), "b");
        let openssh = "@@@\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nblah\nHost key verification failed.\n";
        assert_eq!(
            SshError::from_stderr(openssh).line.as_deref(),
            Some("Host key verification failed.")
        );
    }

    #[test]
    fn lines_are_clean() {
        assert_eq!(last_line("a\n\x1b[2Jb \n\n").as_deref(), Some("?[2Jb"));
        assert_eq!(last_line("x\u{202e}y").as_deref(), Some("x?y"));
        assert_eq!(last_line("\n \n"), None);
    }
}
