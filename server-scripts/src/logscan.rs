//! Heartbeats from sshd's log: `Accepted publickey for device<id> from IP port N ssh2:
//! TYPE SHA256:fp`. Sources: syslog files (Debian auth.log, RHEL secure, rotated and
//! gzipped, traditional or ISO timestamps), journald (`journalctl -o json`, one JSON
//! object per line), and the same given with `--log`.
//!
//! A line counts only when the program is `sshd` or `sshd-session` (OpenSSH >= 9.8) —
//! in journald, by the `_COMM` field journald itself sets, never by the identifier a
//! client chooses —, it was logged by this server (its host field is one of
//! `log_hosts`: logs gathered from several hosts, or lines anyone can send to syslog,
//! name others), it is not dated beyond a small clock skew into the future, the message
//! STARTS with the sentence and ends right after the fingerprint, and the fingerprint
//! is the device's registered key: pre-auth usernames reach the log verbatim, so a
//! crafted name must never forge a heartbeat. Input is streamed line by line with a
//! cap on line length (the rest of an over-long line is skipped), invalid UTF-8 is
//! tolerated, so gigabytes of log are read in bounded memory. Each file is opened once
//! (a rotation between two opens would read two different files) and must be a regular
//! file (a FIFO or a device would block or never end).

use phonehome_plumbing::clock::{civil_from_days, local_offset, unix_from_civil};
use phonehome_plumbing::files::{self, Follow};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Longest log line considered (journald JSON lines included); longer ones are skipped.
pub const MAX_LOG_LINE: usize = 64 * 1024;
/// How far into the future a log line may be dated and still count (clock skew
/// between the log's writer and this reader).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// A successful device login found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub time: i64,
    pub account: String,
    pub from: String,
    pub port: u16,
    pub key_type: String,
    pub fingerprint: String,
}

/// Parse the message of an sshd line, anchored at both ends.
pub fn parse_accepted(msg: &str) -> Option<(String, String, u16, String, String)> {
    let rest = msg.strip_prefix("Accepted publickey for ")?;
    let mut w = rest.split(' ');
    let account = w.next()?;
    phonehome_protocol::DeviceId::from_account(account)?;
    if w.next()? != "from" {
        return None;
    }
    let from = w.next()?;
    from.parse::<std::net::IpAddr>().ok()?;
    if w.next()? != "port" {
        return None;
    }
    let port = phonehome_protocol::parse_port(w.next()?).ok()?;
    if w.next()? != "ssh2:" {
        return None;
    }
    let key_type = w.next()?;
    if key_type.is_empty()
        || !key_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    let fp = w.next()?;
    let b64 = fp.strip_prefix("SHA256:")?;
    if b64.len() != 43
        || !b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return None;
    }
    if w.next().is_some() {
        return None;
    }
    Some((
        account.into(),
        from.into(),
        port,
        key_type.into(),
        fp.into(),
    ))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn two(s: &str) -> Option<u32> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

fn hms(s: &str) -> Option<(u32, u32, u32)> {
    let mut p = s.split(':');
    let t = (two(p.next()?)?, two(p.next()?)?, two(p.next()?)?);
    (p.next().is_none() && t.0 < 24 && t.1 < 60 && t.2 < 61).then_some(t)
}

/// `Nov 21 23:49:50` in local time, year unknown: the most recent such moment that is
/// not in the future (a day of slack for clock skew).
fn traditional_time(month: &str, day: &str, time: &str, now: i64, offset: i64) -> Option<i64> {
    let m = MONTHS.iter().position(|x| *x == month)? as u32 + 1;
    let d: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let (h, mi, s) = hms(time)?;
    let (this_year, _, _) = civil_from_days((now + offset).div_euclid(86400));
    for year in [this_year, this_year - 1] {
        let t = unix_from_civil(year, m, d, h, mi, s) - offset;
        if t <= now + 86400 {
            return Some(t);
        }
    }
    None
}

/// `2026-11-21T23:49:50.123456+00:00` (rsyslog high precision, journalctl short-iso).
fn iso_time(s: &str) -> Option<i64> {
    if s.len() < 20 || !s.is_ascii() || &s[4..5] != "-" || &s[7..8] != "-" || &s[10..11] != "T" {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let mo = two(&s[5..7])?;
    let d = two(&s[8..10])?;
    let (h, mi, sec) = hms(&s[11..19])?;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = if rest == "Z" {
        0
    } else {
        let sign = match rest.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let hhmm = rest[1..].replace(':', "");
        if hhmm.len() != 4 {
            return None;
        }
        sign * (i64::from(two(&hhmm[..2])?) * 3600 + i64::from(two(&hhmm[2..])?) * 60)
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    Some(unix_from_civil(y, mo, d, h, mi, sec) - offset)
}

/// `sshd[123]:` or `sshd-session[123]:` exactly.
fn is_sshd_tag(tag: &str) -> bool {
    let Some(body) = tag.strip_suffix("]:") else {
        return false;
    };
    let Some((prog, pid)) = body.split_once('[') else {
        return false;
    };
    (prog == "sshd" || prog == "sshd-session")
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
}

/// An sshd line of a log: when, which host logged it, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: i64,
    pub host: &'a str,
    pub msg: std::borrow::Cow<'a, str>,
}

/// A syslog text line when it is an sshd line. `offset` is the local time zone's
/// offset from UTC (seconds east), for timestamps without a zone.
pub fn parse_syslog_line(line: &str, now: i64, offset: i64) -> Option<Entry<'_>> {
    let (time, rest) = if line.as_bytes().first()?.is_ascii_digit() {
        let (ts, rest) = line.split_once(' ')?;
        (iso_time(ts)?, rest)
    } else {
        // `Nov 21 23:49:50 host sshd[1]: msg`; single-digit days are space-padded.
        let (month, rest) = line.split_once(' ')?;
        let rest = rest.trim_start_matches(' ');
        let (day, rest) = rest.split_once(' ')?;
        let (time, rest) = rest.split_once(' ')?;
        (traditional_time(month, day, time, now, offset)?, rest)
    };
    let (host, rest) = rest.split_once(' ')?;
    let (tag, msg) = rest.split_once(' ')?;
    is_sshd_tag(tag).then_some(Entry {
        time,
        host,
        msg: msg.into(),
    })
}

/// A `journalctl -o json` line when it comes from sshd: `_COMM`, which journald sets
/// itself from the process, must say so (SYSLOG_IDENTIFIER is the client's choice and
/// does not count). The host is `_HOSTNAME`, also journald's.
pub fn parse_journal_line(line: &[u8]) -> Option<(i64, Option<String>, String)> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str());
    let prog = field("_COMM")?;
    if prog != "sshd" && prog != "sshd-session" {
        return None;
    }
    let host = field("_HOSTNAME").map(str::to_string);
    let micros: i64 = field("__REALTIME_TIMESTAMP")?.parse().ok()?;
    let msg = match v.get("MESSAGE")? {
        serde_json::Value::String(s) => s.clone(),
        // journald exports a non-UTF-8 message as an array of bytes.
        serde_json::Value::Array(a) => {
            let bytes: Vec<u8> = a
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    Some((micros.div_euclid(1_000_000), host, msg))
}

/// Reads lines of at most MAX_LOG_LINE bytes; longer ones are consumed and skipped.
pub struct BoundedLines<R> {
    inner: R,
    buf: Vec<u8>,
    pub skipped: u64,
}

impl<R: BufRead> BoundedLines<R> {
    pub fn new(inner: R) -> Self {
        BoundedLines {
            inner,
            buf: Vec::new(),
            skipped: 0,
        }
    }

    /// The next line (without its newline), or None at the end of input.
    pub fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.buf.clear();
        let mut overlong = false;
        let mut any = false;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if !overlong {
                if self.buf.len() + take > MAX_LOG_LINE {
                    overlong = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.inner.consume(if done { take + 1 } else { take });
            if done {
                break;
            }
        }
        if overlong {
            self.skipped += 1;
            self.buf.clear();
        }
        Ok(Some(&self.buf))
    }
}

/// What a scan looks for: the registered fingerprint of each device account, the
/// names this server logs under, and the time now.
#[derive(Debug)]
pub struct Filter {
    /// account -> registered fingerprint
    pub keys: HashMap<String, String>,
    pub hosts: Vec<String>,
    pub now: i64,
}

/// What a scan found: the newest valid login per account, and what was read.
#[derive(Debug, Default)]
pub struct Scan {
    pub latest: HashMap<String, Login>,
    /// Sources read successfully (file names, or `journald`).
    pub read: Vec<String>,
    /// Sources that could not be read, with why.
    pub failed: Vec<String>,
    pub lines: u64,
    pub skipped_long: u64,
    /// Logins dated too far into the future to be true.
    pub skipped_future: u64,
    /// Logins of device accounts logged by another host.
    pub skipped_foreign: u64,
}

impl Scan {
    /// Consider one sshd message.
    fn offer(&mut self, time: i64, host: Option<&str>, msg: &str, f: &Filter) {
        let Some((account, from, port, key_type, fp)) = parse_accepted(msg) else {
            return;
        };
        if f.keys.get(&account) != Some(&fp) {
            return;
        }
        if host.is_some_and(|h| !f.hosts.iter().any(|o| o == h)) {
            self.skipped_foreign += 1;
            return;
        }
        if time > f.now + MAX_CLOCK_SKEW_SECS {
            self.skipped_future += 1;
            return;
        }
        if self.latest.get(&account).is_some_and(|l| l.time >= time) {
            return;
        }
        self.latest.insert(
            account.clone(),
            Login {
                time,
                account,
                from,
                port,
                key_type,
                fingerprint: fp,
            },
        );
    }

    /// Scan a stream of syslog or journald JSON lines (detected per line).
    pub fn read_stream<R: Read>(&mut self, input: R, f: &Filter) -> std::io::Result<()> {
        let mut lines = BoundedLines::new(BufReader::with_capacity(64 * 1024, input));
        let offset = local_offset(f.now);
        while let Some(line) = lines.next_line()? {
            self.lines += 1;
            if line.first() == Some(&b'{') {
                // Parse JSON only where a heartbeat can be: the sentence, or a MESSAGE
                // journald exported as a byte array (not UTF-8).
                if !contains(line, b"Accepted publickey for ") && !contains(line, b"\"MESSAGE\":[")
                {
                    continue;
                }
                if let Some((t, host, msg)) = parse_journal_line(line) {
                    self.offer(t, host.as_deref(), &msg, f);
                }
                continue;
            }
            // Cheap pre-filter before any parsing: the sentence must be there.
            if !contains(line, b"Accepted publickey for ") {
                continue;
            }
            let text = String::from_utf8_lossy(line);
            if let Some(e) = parse_syslog_line(&text, f.now, offset) {
                self.offer(e.time, Some(e.host), &e.msg, f);
            }
        }
        self.skipped_long += lines.skipped;
        Ok(())
    }

    /// Scan a file, opened once, gunzipping it when it starts with the gzip magic.
    pub fn read_file(&mut self, path: &Path, f: &Filter) {
        let result = files::open_regular(path, Follow::Yes).and_then(|file| {
            let mut input = BufReader::with_capacity(64 * 1024, file);
            if input.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
                self.read_stream(flate2::bufread::MultiGzDecoder::new(input), f)
            } else {
                self.read_stream(input, f)
            }
        });
        match result {
            Ok(()) => self.read.push(path.display().to_string()),
            Err(e) => self.failed.push(format!("{}: {}", path.display(), e)),
        }
    }

    /// Scan sshd's entries in journald (`journalctl -o json`), streaming its output.
    pub fn read_journal(&mut self, f: &Filter) {
        let mut cmd = std::process::Command::new("journalctl");
        cmd.args([
            "-o",
            "json",
            "--no-pager",
            "-q",
            "_COMM=sshd",
            "_COMM=sshd-session",
        ]);
        let mut journal = match phonehome_plumbing::process::stream(&mut cmd, 4096) {
            Ok(j) => j,
            Err(e) => return self.failed.push(format!("journald: {}", e)),
        };
        let lines_before = self.lines;
        if let Err(e) = self.read_stream(&mut journal.stdout, f) {
            // Dropping `journal` kills and reaps journalctl.
            return self.failed.push(format!("journald: {}", e));
        }
        match journal.finish() {
            Ok(()) if self.lines > lines_before => self.read.push("journald".into()),
            Ok(()) => self.failed.push(
                "journald: no sshd entries at all (is journald running and sshd logging to it?)"
                    .into(),
            ),
            Err(e) => self.failed.push(format!("journald: {}", e)),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut i = 0;
    while let Some(p) = hay[i..].iter().position(|b| *b == first) {
        let start = i + p + 1;
        if hay[start..].starts_with(rest) {
            return true;
        }
        i = start;
    }
    false
}

/// The default log files under `<root>/var/log`: `auth.log*` (Debian) and `secure*`
/// (RHEL), rotated ones included (`auth.log.1`, `auth.log.2.gz`, `secure-20261115`).
pub fn default_files(log_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let n = name.to_string_lossy();
            ["auth.log", "secure"].iter().any(|base| {
                n == *base
                    || n.starts_with(&format!("{}.", base))
                    || n.starts_with(&format!("{}-", base))
            })
        })
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:PtMtRWVHKuGrzuX9RFxdUS3m8k7hxmSwH+iceMIwDeM";

    #[test]
    fn accepted_sentence_is_anchored() {
        let ok = format!("Accepted publickey for device6466b34bde54 from 198.51.100.2 port 40022 ssh2: ED25519 {}", FP);
        let p = parse_accepted(&ok).unwrap();
        assert_eq!(p.0, "device6466b34bde54");
        assert_eq!(p.1, "198.51.100.2");
        assert_eq!(p.2, 40022);
        for bad in [
            format!("Invalid user x {}", ok),
            format!("{} extra", ok),
            format!(" {}", ok),
            ok.replace("device6466b34bde54", "root"),
            ok.replace("198.51.100.2", "evil.example"),
            ok.replace("port 40022", "port 0"),
            ok.replace(FP, "SHA256:short"),
            format!("Accepted publickey for device6466b34bde54 from 198.51.100.2 port 40022 ssh2: ED25519 {} from 1.2.3.4 port 1 ssh2", FP),
        ] {
            assert!(parse_accepted(&bad).is_none(), "{:?}", bad);
        }
        assert!(parse_accepted(&ok.replace("198.51.100.2", "2001:db8::1")).is_some());
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            iso_time("2026-11-21T23:49:50.123456+00:00"),
            Some(1_795_304_990)
        );
        assert_eq!(iso_time("2026-11-21T23:49:50Z"), Some(1_795_304_990));
        assert_eq!(iso_time("2026-11-22T00:49:50+0100"), Some(1_795_304_990));
        assert_eq!(iso_time("2026-11-21T18:49:50-05:00"), Some(1_795_304_990));
        assert_eq!(iso_time("2026-13-21T23:49:50Z"), None);
        assert_eq!(iso_time("2026-11-21 23:49:50Z"), None);
        let now = 1_795_304_990 + 3600;
        let off = local_offset(now);
        // A date later in the year than now belongs to last year.
        let t = traditional_time("Dec", "24", "10:00:00", now, off).unwrap();
        assert_eq!(t, unix_from_civil(2025, 12, 24, 10, 0, 0) - off);
        let t = traditional_time("Nov", "21", "23:49:50", now, off).unwrap();
        assert_eq!(t, 1_795_304_990 - off);
        assert!(traditional_time("Foo", "21", "23:49:50", now, off).is_none());
    }

    #[test]
    fn program_tags() {
        assert!(is_sshd_tag("sshd[123]:"));
        assert!(is_sshd_tag("sshd-session[9]:"));
        for bad in [
            "sshd:",
            "sshd[]:",
            "sshdx[1]:",
            "logger[1]:",
            "sshd[1]",
            "sshd[1a]:",
        ] {
            assert!(!is_sshd_tag(bad), "{}", bad);
        }
    }

    #[test]
    fn bounded_lines_skip_overlong() {
        let mut data = b"short\n".to_vec();
        data.extend(vec![b'x'; MAX_LOG_LINE * 3]);
        data.extend(b"\nlast");
        let mut l = BoundedLines::new(std::io::BufReader::with_capacity(1000, &data[..]));
        assert_eq!(l.next_line().unwrap().unwrap(), b"short");
        assert_eq!(l.next_line().unwrap().unwrap(), b"");
        assert_eq!(l.next_line().unwrap().unwrap(), b"last");
        assert!(l.next_line().unwrap().is_none());
        assert_eq!(l.skipped, 1);
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    const FP: &str = "SHA256:PtMtRWVHKuGrzuX9RFxdUS3m8k7hxmSwH+iceMIwDeM";

    fn filter(now: i64) -> Filter {
        Filter {
            keys: [("device6466b34bde54".to_string(), FP.to_string())].into(),
            hosts: vec!["srv".into()],
            now,
        }
    }

    fn line(ts: &str, host: &str) -> String {
        format!(
            "{} {} sshd[7]: Accepted publickey for device6466b34bde54 from 198.51.100.2 port 40022 ssh2: ED25519 {}\n",
            ts, host, FP
        )
    }

    #[test]
    fn threat_28_other_hosts_and_the_future_do_not_count() {
        let now = unix_from_civil(2026, 11, 21, 12, 0, 0);
        let f = filter(now);
        let mut scan = Scan::default();
        let text = [
            line("2026-11-21T11:00:00Z", "srv"),
            line("2026-11-21T11:30:00Z", "otherhost"),
            line("2099-01-01T00:00:00Z", "srv"),
            line("2026-11-21T12:04:00Z", "srv"),
        ]
        .concat();
        scan.read_stream(text.as_bytes(), &f).unwrap();
        let login = &scan.latest["device6466b34bde54"];
        assert_eq!(login.time, now + 240, "a few minutes of skew are accepted");
        assert_eq!(scan.skipped_foreign, 1);
        assert_eq!(scan.skipped_future, 1);
        let mut scan = Scan::default();
        scan.read_stream(line("2026-11-21T12:06:00Z", "srv").as_bytes(), &f)
            .unwrap();
        assert!(scan.latest.is_empty(), "beyond the skew");
    }

    #[test]
    fn threat_31_journald_lines_need_journald_own_fields() {
        let msg = format!(
            "Accepted publickey for device6466b34bde54 from 198.51.100.2 port 1 ssh2: ED25519 {}",
            FP
        );
        let mk = |fields: &str| {
            format!(
                "{{\"__REALTIME_TIMESTAMP\":\"1795255200000000\",{}\"MESSAGE\":\"{}\"}}",
                fields, msg
            )
        };
        assert!(parse_journal_line(mk("\"SYSLOG_IDENTIFIER\":\"sshd\",").as_bytes()).is_none());
        assert!(parse_journal_line(
            mk("\"_COMM\":\"logger\",\"SYSLOG_IDENTIFIER\":\"sshd\",").as_bytes()
        )
        .is_none());
        let ok =
            parse_journal_line(mk("\"_COMM\":\"sshd\",\"_HOSTNAME\":\"srv\",").as_bytes()).unwrap();
        assert_eq!(ok.1.as_deref(), Some("srv"));
    }

    #[test]
    fn threat_31_a_fifo_or_a_device_is_refused_at_once() {
        let f = filter(0);
        let mut scan = Scan::default();
        scan.read_file(Path::new("/dev/zero"), &f);
        assert!(scan.read.is_empty());
        assert!(
            scan.failed[0].contains("not a regular file"),
            "{:?}",
            scan.failed
        );
    }
}
