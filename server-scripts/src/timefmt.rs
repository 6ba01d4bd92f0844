//! Calendar arithmetic without a time crate: Unix seconds <-> civil UTC dates
//! (Howard Hinnant's days-from-civil), a readable UTC form, and the current time.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of the proleptic Gregorian date y-m-d.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date (y, m, d) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds of a UTC civil time.
pub fn unix_from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    days_from_civil(y, mo, d) * 86400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)
}

/// `2026-11-21 23:49:50 UTC`
pub fn format_utc(t: i64) -> String {
    format_with(t, ' ', " UTC")
}

/// `2026-11-21T23:49:50Z`, for JSON output.
pub fn format_iso(t: i64) -> String {
    format_with(t, 'T', "Z")
}

fn format_with(t: i64, sep: char, zone: &str) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
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

/// `3 min ago`, `2 h ago`: for tables.
pub fn format_age(secs: i64) -> String {
    match secs {
        s if s < 0 => "in the future".into(),
        s if s < 120 => format!("{} s ago", s),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(unix_from_civil(2026, 11, 21, 23, 49, 50), 1_795_304_990);
        assert_eq!(format_utc(1_795_304_990), "2026-11-21 23:49:50 UTC");
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
}
