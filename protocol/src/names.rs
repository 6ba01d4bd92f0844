//! The names both sides put into an ssh command line or a config file: the server's
//! host, Unix account and group names, and free text. Checked here, once, so that the
//! server never prints a `phonehome setup` line the agent would refuse, and so that
//! nothing shaped like an ssh option, a dbclient multihop (`a,b`, `h/22`, `h^22`) or
//! a second user (`u@h`) can ever reach an ssh argv (CVE-2025-47203).

use crate::Invalid;
use phonehome_plumbing::text::{is_unsafe_char, quoted};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest Unix user or group name accepted (useradd's own limit is 32).
pub const MAX_UNIX_NAME: usize = 32;

/// A server host: a DNS name (labels of letters, digits and inner `-`, joined by
/// dots) or an IP literal. Nothing else: no port, brackets, user or list.
pub fn validate_host(s: &str) -> Result<(), Invalid> {
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
        Err(Invalid(format!(
            "invalid server host {}: use a host name (letters, digits, '-' and '.') or an IP address, without a port",
            quoted(s, 64)
        )))
    }
}

/// A portable Unix user or group name: `a-z`, `0-9`, `_`, `-`, starting with a letter
/// or `_`, at most 32 characters (`device6466b34bde54`, `phonehome-devices`).
pub fn is_unix_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_UNIX_NAME
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// A server account, as [`is_unix_name`].
pub fn validate_account(s: &str) -> Result<(), Invalid> {
    if is_unix_name(s) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "invalid account {}: use a Unix user name (a-z, 0-9, '_', '-', starting with a letter, at most {})",
            quoted(s, 40),
            MAX_UNIX_NAME
        )))
    }
}

/// Free text that crosses the wire (status report strings) and reaches an admin's
/// terminal: at most `max` bytes, and no control character or bidirectional override
/// (see `phonehome_plumbing::text::is_unsafe_char`).
pub fn check_text(field: &str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid(format!("{} is longer than {} bytes", field, max)));
    }
    if let Some(c) = s.chars().find(|c| is_unsafe_char(*c)) {
        return Err(Invalid(format!(
            "{} contains the control character U+{:04X}",
            field, c as u32
        )));
    }
    Ok(())
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
            "a.",
            ".a",
        ] {
            assert!(validate_host(bad).is_err(), "{:?} accepted", bad);
        }
        let e = validate_host("x\u{1b}[2J").unwrap_err();
        assert!(!e.0.contains('\u{1b}'), "{}", e);
    }

    #[test]
    fn unix_names() {
        for ok in ["device6466b34bde54", "phonehome-devices", "_x", "root"] {
            assert!(validate_account(ok).is_ok(), "{:?}", ok);
        }
        for bad in [
            "",
            "-oX",
            "u@h",
            "Root",
            "a b",
            "a,b",
            "a/b",
            "1a",
            &"a".repeat(33),
        ] {
            assert!(validate_account(bad).is_err(), "{:?} accepted", bad);
        }
    }

    #[test]
    fn text_rules() {
        assert!(check_text("agent_version", "0.2.0 (routér)", 64).is_ok());
        for bad in [
            "a\u{1b}]0;x\u{7}",
            "\u{9b}2J",
            "a\u{202e}b",
            "a\nb",
            "a\u{7f}",
        ] {
            let e = check_text("agent_version", bad, 64).unwrap_err();
            assert!(
                e.0.starts_with("agent_version contains the control character U+"),
                "{}",
                e
            );
        }
        assert!(check_text("x", &"a".repeat(65), 64).is_err());
    }
}
