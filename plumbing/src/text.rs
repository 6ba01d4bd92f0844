//! Text rules shared by both sides: strict base64 (one spelling per value), shell
//! quoting for commands shown to people, and what may reach a terminal.
//!
//! Device- and log-supplied strings pass through [`for_terminal`] before a person
//! sees them: control characters (C0, DEL, C1) and bidirectional overrides would let
//! a device retitle the admin's window, clear the screen or reorder what is shown.
//! Bad input quoted back in an error goes through [`quoted`]: escaped and cut short.
//! Addresses are written by [`Ip`] (as `IpAddr` writes them, faster).

use std::net::IpAddr;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 (RFC 4648, standard alphabet); `=` padding when `pad` (OpenSSH
/// fingerprints have none).
pub fn base64_encode(data: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Strict base64: standard alphabet, `=` padding required, no whitespace, and the
/// unused bits of the last character zero, so that every value has exactly one
/// spelling (a key registered twice under two spellings would be two keys).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() % 4 != 0 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let chunks = b.len() / 4;
    let mut out = Vec::with_capacity(chunks * 3);
    for (n, c) in b.chunks(4).enumerate() {
        let pad = c.iter().rev().take_while(|x| **x == b'=').count();
        if pad > 2 || (pad > 0 && n + 1 != chunks) {
            return None;
        }
        let mut acc = 0u32;
        for (j, x) in c.iter().enumerate() {
            acc = acc << 6 | if j >= 4 - pad { 0 } else { val(*x)? };
        }
        // Bits below the last full byte must be zero (canonical spelling).
        let unused = [0, 0xff, 0xffff][pad];
        if acc & unused != 0 {
            return None;
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// Quote a value for a POSIX shell command line shown to a person.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// An address written the way `IpAddr`'s `Display` writes it, IPv4 without going
/// through the formatter's padding for each octet (std's took 1,400 instructions an
/// address; list-devices writes one per device into its table and its cache).
pub struct Ip(pub IpAddr);

impl std::fmt::Display for Ip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let IpAddr::V4(v4) = self.0 else {
            return self.0.fmt(f);
        };
        let mut buf = [0u8; 15];
        let mut n = 0;
        for (i, o) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if o >= 100 {
                buf[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                buf[n] = b'0' + o / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + o % 10;
            n += 1;
        }
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| std::fmt::Error)?)
    }
}

/// Characters that must never reach a terminal from a device or a log: C0 controls
/// (tab and newline included), DEL, C1 controls (U+0080–U+009F) and the bidirectional
/// marks, embeddings, overrides and isolates.
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` fit for a terminal: every unsafe character replaced by `?`, at most
/// `max_chars` characters (then `…`).
pub fn for_terminal(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    push_for_terminal(&mut out, s, max_chars);
    out
}

/// [`for_terminal`], appended to `out` (a table built in one buffer).
pub fn push_for_terminal(out: &mut String, s: &str, max_chars: usize) {
    // Printable ASCII within the limit, the usual case, is copied whole.
    if s.len() <= max_chars && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push_str(s);
        return;
    }
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        out.push(if is_unsafe_char(c) { '?' } else { c });
    }
}

/// Bad input quoted back in an error: `"…"` with escapes, at most `max_chars`
/// characters of it.
pub fn quoted(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max_chars)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    format!("\"{}\"", out)
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_is_strict() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGV5").unwrap(), b"hey");
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0xff, 0xfe, 0x00]] {
            assert_eq!(
                base64_decode(&base64_encode(data, true)).unwrap_or_default(),
                data
            );
        }
        assert_eq!(base64_encode(b"hi", false), "aGk");
        // "aGk=" and "aGl=" decode to the same bytes in a lenient decoder: only one
        // spelling is accepted.
        for bad in [
            "", "a", "aGk", "aG=k", "a=Gk", "aGk=aGk=", "aG k", "aGk!", "aGl=", "aGVsbG9=", "aQ=",
            "aR==",
        ] {
            assert!(base64_decode(bad).is_none(), "{:?}", bad);
        }
        assert_eq!(base64_decode("aQ==").unwrap(), b"i");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("ph.example.org"), "ph.example.org");
        assert_eq!(shell_quote("ssh-ed25519 AAAA"), "'ssh-ed25519 AAAA'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a^b"), "'a^b'");
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for a in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "198.51.100.2",
            "::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(Ip(ip).to_string(), ip.to_string());
            assert_eq!(Ip(ip).to_string(), a);
        }
    }

    #[test]
    fn terminal_safety() {
        let hostile = "v1\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}abc\u{2066}\t\n";
        let clean = for_terminal(hostile, 100);
        assert!(!clean.chars().any(is_unsafe_char), "{:?}", clean);
        assert!(
            clean.starts_with("v1?]0;owned??[2J?31m?abc?"),
            "{:?}",
            clean
        );
        assert_eq!(for_terminal("routér ok", 100), "routér ok");
        assert_eq!(for_terminal("abcdef", 3), "abc…");
        // The plain-ASCII shortcut: at the limit, and with a control byte or DEL in it.
        assert_eq!(for_terminal("abc", 3), "abc");
        assert_eq!(for_terminal("a\tb\u{7f}", 10), "a?b?");
        let mut cell = String::from("x ");
        push_for_terminal(&mut cell, "10.0.0.1\u{1b}", 60);
        assert_eq!(cell, "x 10.0.0.1?");
        for c in [
            '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{202d}', '\u{2069}', '\u{200f}',
        ] {
            assert!(is_unsafe_char(c), "{:?}", c);
        }
        for c in ['a', ' ', 'é', '\u{a0}', '…', '中'] {
            assert!(!is_unsafe_char(c), "{:?}", c);
        }
    }

    #[test]
    fn quoting_bad_input() {
        assert_eq!(quoted("a\u{1b}b", 10), "\"a\\u{1b}b\"");
        let long = "x".repeat(10_000);
        assert_eq!(quoted(&long, 5), "\"xxxxx…\"");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
