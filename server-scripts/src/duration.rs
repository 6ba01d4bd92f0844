//! Durations typed by admins: `--ttl 30m`, `2h`, `1d`, `90s`, `3600` (seconds), and
//! `--wait=SECS`. Bounded so that a request is never unbounded by accident.

use crate::error::{Error, Result};

/// The longest a port request may live.
pub const MAX_TTL_SECS: u64 = 7 * 86400;

/// Parse `N`, `Ns`, `Nm`, `Nh` or `Nd` (N a positive decimal integer).
pub fn parse_duration(s: &str) -> Result<u64> {
    let bad = || {
        Error::usage(format!(
            "invalid duration {:?}: use a number of seconds or a number with s, m, h or d, e.g. 30m",
            s.chars().take(32).collect::<String>()
        ))
    };
    let (digits, unit) = match s.as_bytes().last() {
        Some(b's') => (&s[..s.len() - 1], 1),
        Some(b'm') => (&s[..s.len() - 1], 60),
        Some(b'h') => (&s[..s.len() - 1], 3600),
        Some(b'd') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(Error::usage(format!(
            "invalid duration {:?}: must be more than zero",
            s
        )));
    }
    Ok(n * unit)
}

/// A `--ttl`: a duration no longer than `MAX_TTL_SECS`.
pub fn parse_ttl(s: &str) -> Result<u64> {
    let secs = parse_duration(s)?;
    if secs > MAX_TTL_SECS {
        return Err(Error::usage(format!(
            "--ttl {} is longer than the maximum of 7 days: request again later to extend it",
            s
        )));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600").unwrap(), 3600);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("1d").unwrap(), 86400);
        for bad in [
            "",
            "0",
            "0m",
            "m",
            "-1",
            "1.5h",
            "1w",
            " 1h",
            "1h ",
            "1 h",
            "9999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "{:?}", bad);
        }
        assert_eq!(parse_ttl("7d").unwrap(), MAX_TTL_SECS);
        assert!(parse_ttl("8d").is_err());
    }
}
