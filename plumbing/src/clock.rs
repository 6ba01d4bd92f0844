//! The time: Unix seconds now, calendar arithmetic without a time-zone database (a
//! router has none), and the formats people and scripts read. Howard Hinnant's
//! days-from-civil algorithms.
#![allow(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 if the clock is before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Days since 1970-01-01 of the proleptic Gregorian date y-m-d.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (y, m, d) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix seconds of a UTC civil time.
pub fn unix_from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    days_from_civil(y, mo, d) * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)
}

/// `2026-11-21 23:49:50 UTC`, for people.
pub fn format_utc(t: i64) -> String {
    format_with(t, ' ', " UTC")
}

/// `2026-11-21T23:49:50Z`, for JSON and logs.
pub fn format_iso(t: i64) -> String {
    format_with(t, 'T', "Z")
}

fn format_with(t: i64, sep: char, zone: &str) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}{}",
        y,
        m,
        d,
        sep,
        s / 3600,
        s / 60 % 60,
        s % 60,
        zone
    )
}

/// `3 min ago`, `2 h ago`, for tables. Never negative: a time ahead of the clock is
/// "just now" (small skew) — callers refuse times far ahead before they get here.
pub fn format_age(secs: i64) -> String {
    let mut s = String::new();
    push_age(&mut s, secs);
    s
}

/// [`format_age`], appended to `out` (a table built in one buffer).
pub fn push_age(out: &mut String, secs: i64) {
    use std::fmt::Write;
    let _ = match secs.max(0) {
        s if s < 120 => write!(out, "{} s ago", s),
        s if s < 7200 => write!(out, "{} min ago", s / 60),
        s if s < 172_800 => write!(out, "{} h ago", s / 3600),
        s => write!(out, "{} days ago", s / 86_400),
    };
}

/// Offset of local time from UTC (seconds east) at Unix time `t`, from the system's
/// time zone (TZ, /etc/localtime): syslog timestamps are local time without a zone.
// tm_gmtoff is a c_long: 32 bits on armv7 and MIPS, so the cast is needed there.
// `libc::time_t` is deprecated on musl targets (the libc crate's 32-bit musl time_t will
// become musl 1.2's 64-bit one); only the server's log scan calls this, and a 32-bit musl
// build is still right until 2038 (it links musl's time32 `localtime_r`).
#[allow(clippy::unnecessary_cast, deprecated)]
pub fn local_offset(t: i64) -> i64 {
    let tt = t as libc::time_t;
    // SAFETY: tm is a plain C struct; all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers point to live locals for the duration of the call;
    // localtime_r is the thread-safe variant and writes only into `tm`.
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    if r.is_null() {
        0
    } else {
        tm.tm_gmtoff as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(unix_from_civil(2026, 11, 21, 23, 49, 50), 1_795_304_990);
        assert_eq!(format_utc(1_795_304_990), "2026-11-21 23:49:50 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn round_trip_over_centuries() {
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn ages_are_never_negative() {
        assert_eq!(format_age(-2_274_775_678), "0 s ago");
        assert_eq!(format_age(59), "59 s ago");
        assert_eq!(format_age(600), "10 min ago");
        assert_eq!(format_age(7200), "2 h ago");
        assert_eq!(format_age(3 * 86_400), "3 days ago");
    }
}
