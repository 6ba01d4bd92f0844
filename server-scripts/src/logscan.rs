//! Heartbeats from sshd's log: `Accepted publickey for device<id> from IP port N ssh2:
//! TYPE SHA256:fp`. Sources: syslog files (Debian auth.log, RHEL secure, rotated and
//! gzipped, traditional or ISO timestamps), journald (`journalctl -o json`, one JSON
//! object per line), and the same given with `--log`.
//!
//! A line counts only when the program is `sshd` or `sshd-session` (OpenSSH >= 9.8) —
//! in journald, by the `_COMM` field journald itself sets, never by the identifier a
//! client chooses —, it was logged by this server (its host field is one of
//! `log_hosts`: logs gathered from several hosts, or lines anyone can send to syslog,
//! name others), the message STARTS with the sentence and ends right after the
//! fingerprint; list-devices then keeps only logins with the device's registered
//! fingerprint and not dated beyond a small clock skew (`Hits::latest`). Pre-auth user
//! names reach the log verbatim, so a crafted name must never forge a heartbeat.
//!
//! Refused logins of device accounts are kept too (`Refusal`, for watch-devices'
//! `key.refused`): `Failed publickey for device<id> ...` and the end of a connection
//! that never authenticated (`Connection closed by authenticating user device<id> IP
//! port N [preauth]` and its kin), anchored and host-filtered the same way. sshd says
//! "authenticating user" only for an existing account, so a made-up pre-auth name is
//! logged as "invalid user" and never counts.
//!
//! The scan is built for gigabytes: the input is read in large blocks, searched for the
//! sentence with a vectorised substring search, and only the lines that carry it are
//! parsed, without allocating; lines over `MAX_LOG_LINE` are skipped; invalid UTF-8 is
//! tolerated. A long plain log is split into ranges of whole lines, one thread each,
//! whose findings merge into what one pass finds (tested); each thread reads its range
//! in chunks, the newest first, so that most lines of a log in time order name a key
//! that already has a newer login, and are passed over after one look-up; those
//! look-ups, mostly cache misses, are made in batches so that they overlap. Each file is
//! opened once (a rotation between two opens would read two different files) and must
//! be a regular file (a FIFO or a device would block or never end). What a scan finds
//! is kept per (account, fingerprint), so that `logcache` can keep it between runs
//! whatever the registry later says.

use memchr::memmem;
use phonehome_plumbing::clock::{civil_from_days, local_offset, unix_from_civil};
use phonehome_plumbing::files::{self, Follow};
use phonehome_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Longest log line considered (journald JSON lines included); longer ones are skipped.
pub const MAX_LOG_LINE: usize = 64 * 1024;
/// How far into the future a log line may be dated and still count (clock skew
/// between the log's writer and this reader).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// The sentence of a successful key login, as sshd logs it.
const SENTENCE: &[u8] = b"Accepted publickey for ";
/// What the lines of a refused login carry (found in a block, then parsed anchored).
const REFUSED_NEEDLES: [&[u8]; 2] = [b"Failed publickey for ", b"authenticating user "];
/// Refused logins kept per device account: the newest.
pub const MAX_REFUSALS: usize = 16;
/// How much of a log is read at a time.
const BLOCK: usize = 1 << 20;
/// A plain log is split between threads in ranges of at least this many bytes.
const MIN_SCAN_RANGE: u64 = 8 << 20;
/// At most this many threads scan one log.
const MAX_SCAN_THREADS: usize = 4;
/// A thread's range is read in chunks of about this many bytes, the newest first.
const SCAN_CHUNK: u64 = 4 << 20;
/// Accepted lines whose keys are looked up together (`Hits::accepted_lines`).
const LOOKUP_BATCH: usize = 32;

/// A login of a device account, as far as the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub time: i64,
    pub from: IpAddr,
    pub port: u16,
}

/// A login to a device account that did not authenticate (its key was refused), as far
/// as the log says; `fingerprint` when sshd logged the key it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub time: i64,
    pub from: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The parts of a refused-login message, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused<'a> {
    pub account: &'a str,
    pub from: IpAddr,
    pub port: u16,
    pub fingerprint: Option<&'a str>,
}

/// The parts of an accepted-publickey message, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<'a> {
    pub account: &'a str,
    /// The account's device id as a number (the scan's key).
    device: u64,
    pub from: IpAddr,
    pub port: u16,
    pub key_type: &'a str,
    pub fingerprint: &'a str,
}

/// `s` split at its first space (a plain loop: the words of a log line are short, and
/// this runs for every candidate line).
fn split_space(s: &str) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

/// The words of `s` between single spaces.
fn words(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match split_space(r) {
            Some((w, tail)) => {
                rest = Some(tail);
                Some(w)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Parse the message of an sshd line, anchored at both ends.
pub fn parse_accepted(msg: &str) -> Option<Accepted<'_>> {
    key_sentence(msg.strip_prefix("Accepted publickey for ")?)
}

/// What a byte may be part of: a key type name (letters, digits, `-`), unpadded
/// base64 (letters, digits, `+`, `/`).
const KEY_TYPE: u8 = 1;
const BASE64: u8 = 2;
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] = KEY_TYPE | BASE64;
        }
        b += 1;
    }
    t[b'-' as usize] = KEY_TYPE;
    t[b'+' as usize] = BASE64;
    t[b'/' as usize] = BASE64;
    t
};

/// `ACCOUNT from IP port N ssh2: TYPE SHA256:fp` and nothing after.
fn key_sentence(rest: &str) -> Option<Accepted<'_>> {
    let mut w = words(rest);
    let account = w.next()?;
    let device = device_number(account)?;
    if w.next()? != "from" {
        return None;
    }
    let from = w.next()?.parse::<IpAddr>().ok()?;
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
            .all(|b| CLASS[usize::from(b)] & KEY_TYPE != 0)
    {
        return None;
    }
    let fingerprint = w.next()?;
    let b64 = fingerprint.strip_prefix("SHA256:")?;
    // A table, not a chain of comparisons: this check ran for a tenth of a scan's time.
    if b64.len() != 43 || !b64.bytes().all(|b| CLASS[usize::from(b)] & BASE64 != 0) {
        return None;
    }
    if w.next().is_some() {
        return None;
    }
    Some(Accepted {
        account,
        device,
        from,
        port,
        key_type,
        fingerprint,
    })
}

/// How sshd ends a connection whose user never authenticated, in front of
/// `ACCOUNT IP port N`, and what follows the port.
const UNAUTHENTICATED_ENDS: [(&str, &str); 4] = [
    ("Connection closed by authenticating user ", " [preauth]"),
    ("Connection reset by authenticating user ", " [preauth]"),
    ("Disconnected from authenticating user ", " [preauth]"),
    (
        "Disconnecting authenticating user ",
        ": Too many authentication failures [preauth]",
    ),
];

/// Parse a refused login of a device account, anchored at both ends: `Failed
/// publickey for ...` (with the refused key's fingerprint) or the end of a connection
/// that never authenticated.
pub fn parse_refused(msg: &str) -> Option<Refused<'_>> {
    if let Some(rest) = msg.strip_prefix("Failed publickey for ") {
        let a = key_sentence(rest)?;
        return Some(Refused {
            account: a.account,
            from: a.from,
            port: a.port,
            fingerprint: Some(a.fingerprint),
        });
    }
    let rest = UNAUTHENTICATED_ENDS
        .iter()
        .find_map(|(head, tail)| msg.strip_prefix(head)?.strip_suffix(tail))?;
    let mut w = words(rest);
    let account = w.next()?;
    device_number(account)?;
    let from = w.next()?.parse::<IpAddr>().ok()?;
    if w.next()? != "port" {
        return None;
    }
    let port = phonehome_protocol::parse_port(w.next()?).ok()?;
    if w.next().is_some() {
        return None;
    }
    Some(Refused {
        account,
        from,
        port,
        fingerprint: None,
    })
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn two(s: &str) -> Option<u32> {
    match s.as_bytes() {
        [a @ b'0'..=b'9', b @ b'0'..=b'9'] => Some(u32::from(a - b'0') * 10 + u32::from(b - b'0')),
        _ => None,
    }
}

/// `23:49:50`.
fn hms(s: &str) -> Option<(u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let t = (two(&s[0..2])?, two(&s[3..5])?, two(&s[6..8])?);
    (t.0 < 24 && t.1 < 60 && t.2 < 61).then_some(t)
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
    let pid = tag
        .strip_prefix("sshd[")
        .or_else(|| tag.strip_prefix("sshd-session["))
        .and_then(|rest| rest.strip_suffix("]:"));
    pid.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// An sshd line of a log: when, which host logged it, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: i64,
    pub host: &'a str,
    pub msg: std::borrow::Cow<'a, str>,
}

/// The last timestamp text a scan converted, and what it gave: a busy log's lines share
/// their second, so most lines skip the calendar arithmetic.
#[derive(Debug, Default)]
struct TimeMemo {
    text: String,
    time: Option<i64>,
}

impl TimeMemo {
    /// The time of the timestamp `head` + `tail`, converted by `convert` unless it is
    /// the last one's.
    fn get(
        &mut self,
        head: &str,
        tail: &str,
        convert: impl FnOnce() -> Option<i64>,
    ) -> Option<i64> {
        let same = self.text.len() == head.len() + tail.len()
            && self.text.starts_with(head)
            && self.text.ends_with(tail);
        if !same {
            self.text.clear();
            self.text.push_str(head);
            self.text.push_str(tail);
            self.time = convert();
        }
        self.time
    }
}

/// An ISO timestamp without its fraction of a second (which no heartbeat needs):
/// `2026-11-21T23:49:50` and the zone after the fraction.
fn iso_second(ts: &str) -> (&str, &str) {
    let b = ts.as_bytes();
    if b.len() > 19 && b[19] == b'.' && ts.is_char_boundary(19) {
        let digits = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        (&ts[..19], &ts[20 + digits..])
    } else {
        (ts, "")
    }
}

/// A syslog text line when it is an sshd line. `offset` is the local time zone's
/// offset from UTC (seconds east), for timestamps without a zone.
pub fn parse_syslog_line(line: &str, now: i64, offset: i64) -> Option<Entry<'_>> {
    parse_syslog_line_with(line, now, offset, &mut TimeMemo::default())
}

/// [`parse_syslog_line`], converting a timestamp only when it differs from the last.
fn parse_syslog_line_with<'a>(
    line: &'a str,
    now: i64,
    offset: i64,
    memo: &mut TimeMemo,
) -> Option<Entry<'a>> {
    let (time, rest) = if line.as_bytes().first()?.is_ascii_digit() {
        let (ts, rest) = split_space(line)?;
        let (second, zone) = iso_second(ts);
        (memo.get(second, zone, || iso_time(ts))?, rest)
    } else {
        // `Nov 21 23:49:50 host sshd[1]: msg`; single-digit days are space-padded.
        let (month, rest) = split_space(line)?;
        let rest = &rest[rest.bytes().take_while(|b| *b == b' ').count()..];
        let (day, rest) = split_space(rest)?;
        let (time, rest) = split_space(rest)?;
        let stamp = &line[..line.len() - rest.len() - 1];
        let t = memo.get(stamp, "", || {
            traditional_time(month, day, time, now, offset)
        })?;
        (t, rest)
    };
    let (host, rest) = split_space(rest)?;
    let (tag, msg) = split_space(rest)?;
    is_sshd_tag(tag).then_some(Entry {
        time,
        host,
        msg: msg.into(),
    })
}

/// The fields of a `journalctl -o json` line that a scan reads, borrowed from the line
/// (a string with escapes is the only copy); every other field is skipped unparsed.
/// journald exports a field that is not printable UTF-8 as an array of bytes; sshd
/// never logs one (it escapes every other byte as octal before logging), so such a line
/// fails here and is no sshd line of ours.
#[derive(Deserialize)]
struct JournalFields<'a> {
    #[serde(rename = "_COMM", borrow)]
    comm: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "_HOSTNAME", borrow)]
    host: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "__REALTIME_TIMESTAMP", borrow)]
    micros: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "MESSAGE", borrow)]
    msg: Option<std::borrow::Cow<'a, str>>,
}

/// An sshd line of the journal: its time (seconds), host and message.
pub struct JournalLine<'a> {
    pub time: i64,
    pub host: Option<std::borrow::Cow<'a, str>>,
    pub msg: std::borrow::Cow<'a, str>,
}

/// A `journalctl -o json` line when it comes from sshd: `_COMM`, which journald sets
/// itself from the process, must say so (SYSLOG_IDENTIFIER is the client's choice and
/// does not count). The host is `_HOSTNAME`, also journald's.
pub fn parse_journal_line(line: &[u8]) -> Option<JournalLine<'_>> {
    let v: JournalFields = serde_json::from_slice(line).ok()?;
    let prog = v.comm?;
    if prog != "sshd" && prog != "sshd-session" {
        return None;
    }
    let micros: i64 = v.micros?.parse().ok()?;
    Some(JournalLine {
        time: micros.div_euclid(1_000_000),
        host: v.host,
        msg: v.msg?,
    })
}

/// What a scan keeps: the names this server logs under, and the time now.
#[derive(Debug, Clone)]
pub struct Filter {
    pub hosts: Vec<String>,
    pub now: i64,
}

/// A device's id as a number (its 12 hex digits), the key of the scan's table: cheap
/// to hash, no string kept per line. `None` unless `account` is a device account.
fn device_number(account: &str) -> Option<u64> {
    hex12(
        account
            .strip_prefix(phonehome_protocol::ACCOUNT_PREFIX)?
            .as_bytes(),
    )
}

/// 12 lowercase hex digits (a device id, `DeviceId::is_valid`) as a number.
fn hex12(hex: &[u8]) -> Option<u64> {
    if hex.len() != 12 {
        return None;
    }
    hex.iter().try_fold(0u64, |n, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(digit))
    })
}

/// Hashes a device number with one multiplication (the numbers are MAC addresses: their
/// low bits vary, the multiplication spreads them).
#[derive(Default)]
struct NumberHasher(u64);

impl std::hash::Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A login's key: the device number and the fingerprint's 43 base64 characters, held
/// inline so that a look-up touches one place in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    device: u64,
    fingerprint: [u8; 43],
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.fingerprint[..8]);
        state.write_u64(self.device ^ u64::from_le_bytes(head));
    }
}

impl Key {
    fn new(device: u64, fingerprint: &str) -> Option<Key> {
        let b64 = fingerprint.strip_prefix("SHA256:")?;
        Some(Key {
            device,
            fingerprint: b64.as_bytes().try_into().ok()?,
        })
    }
}

type Table = HashMap<Key, Login, std::hash::BuildHasherDefault<NumberHasher>>;
type RefusedTable = HashMap<u64, Vec<Refusal>, std::hash::BuildHasherDefault<NumberHasher>>;

/// What the scan of one source found: the newest login per (account, fingerprint),
/// and what it passed over. Kept by `logcache` (`StoredHits`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hits {
    logins: Table,
    /// Refused logins per device number, the newest `MAX_REFUSALS`, oldest first.
    refused: RefusedTable,
    /// Over-long lines that carried the sentence.
    pub skipped_long: u64,
    /// Device logins logged by another host.
    pub skipped_foreign: u64,
}

/// `Hits` as it is stored (`logcache`, a binary file): a flat list of (device number,
/// the fingerprint's base64, time, address, port), numbers rather than names, the
/// fingerprint borrowed from the file, the refusals from the table when written: a
/// fleet of thousands is read back and written every run.
#[derive(Serialize, Deserialize)]
struct StoredHits<'a> {
    #[serde(borrow)]
    logins: Vec<(u64, &'a str, i64, IpAddr, u16)>,
    refused: Vec<(u64, std::borrow::Cow<'a, [Refusal]>)>,
    skipped_long: u64,
    skipped_foreign: u64,
}

/// Device numbers are 12 hex digits.
const MAX_DEVICE_NUMBER: u64 = (1 << 48) - 1;

/// What a cache holds is checked as a log line is: a device number, 43 base64 bytes.
impl<'de> Deserialize<'de> for Hits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hits, D::Error> {
        let s = StoredHits::deserialize(d)?;
        let mut logins = Table::with_capacity_and_hasher(s.logins.len(), Default::default());
        logins.extend(
            s.logins
                .into_iter()
                .filter(|(device, b64, ..)| {
                    *device <= MAX_DEVICE_NUMBER
                        && b64.bytes().all(|b| CLASS[usize::from(b)] & BASE64 != 0)
                })
                .filter_map(|(device, b64, time, from, port)| {
                    let fingerprint = b64.as_bytes().try_into().ok()?;
                    Some((
                        Key {
                            device,
                            fingerprint,
                        },
                        Login { time, from, port },
                    ))
                }),
        );
        let mut refused =
            RefusedTable::with_capacity_and_hasher(s.refused.len(), Default::default());
        refused.extend(
            s.refused
                .into_iter()
                .filter(|(device, _)| *device <= MAX_DEVICE_NUMBER)
                .map(|(device, r)| (device, r.into_owned())),
        );
        Ok(Hits {
            logins,
            refused,
            skipped_long: s.skipped_long,
            skipped_foreign: s.skipped_foreign,
        })
    }
}

/// Stored without copying the table first.
impl Serialize for Hits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredHits {
            logins: self
                .logins
                .iter()
                .filter_map(|(k, l)| {
                    let b64 = std::str::from_utf8(&k.fingerprint).ok()?;
                    Some((k.device, b64, l.time, l.from, l.port))
                })
                .collect(),
            refused: self
                .refused
                .iter()
                .map(|(n, r)| (*n, std::borrow::Cow::Borrowed(r.as_slice())))
                .collect(),
            skipped_long: self.skipped_long,
            skipped_foreign: self.skipped_foreign,
        }
        .serialize(s)
    }
}

impl Hits {
    fn offer(&mut self, time: i64, host: Option<&str>, msg: &str, f: &Filter) {
        let foreign = host.is_some_and(|h| !f.hosts.iter().any(|o| o == h));
        if !foreign && self.has_newer(time, msg) {
            return;
        }
        let Some(a) = parse_accepted(msg) else {
            if !foreign {
                self.offer_refused(time, msg);
            }
            return;
        };
        if foreign {
            self.skipped_foreign += 1;
            return;
        }
        let Some(k) = Key::new(a.device, a.fingerprint) else {
            return;
        };
        self.keep(
            k,
            Login {
                time,
                from: a.from,
                port: a.port,
            },
        );
    }

    fn offer_refused(&mut self, time: i64, msg: &str) {
        let Some(r) = parse_refused(msg) else {
            return;
        };
        let Some(n) = device_number(r.account) else {
            return;
        };
        let refusal = Refusal {
            time,
            from: r.from,
            port: r.port,
            fingerprint: r.fingerprint.map(str::to_string),
        };
        keep_refusals(self.refused.entry(n).or_default(), std::iter::once(refusal));
    }

    /// Refused logins of `account`, oldest first (at most `MAX_REFUSALS`).
    pub fn refusals(&self, account: &str) -> &[Refusal] {
        device_number(account)
            .and_then(|n| self.refused.get(&n))
            .map_or(&[], |v| v.as_slice())
    }

    /// True when `msg`, read as an accepted login without checking it, names a key
    /// already kept with a newer login: then nothing in the line can change what is
    /// kept (a login replaces only an older one), valid or forged, and it is not
    /// parsed. A log scanned newest part first (`scan_ranges`) skips most of its lines
    /// here.
    fn has_newer(&self, time: i64, msg: &str) -> bool {
        unchecked_key(msg.as_bytes()).is_some_and(|k| self.newer(time, &k))
    }

    /// True when `k` is kept with a login newer than `time`.
    fn newer(&self, time: i64, k: &Key) -> bool {
        self.logins.get(k).is_some_and(|l| l.time > time)
    }

    /// Keep `login` under `k` if it is the newest. Two logins of one second are told
    /// apart by address and port, so that what is kept does not depend on the order
    /// the lines were read in (ranges, chunks newest first, a cache and a new part).
    fn keep(&mut self, k: Key, login: Login) {
        self.logins
            .entry(k)
            .and_modify(|l| {
                if (login.time, login.from, login.port) > (l.time, l.from, l.port) {
                    *l = login
                }
            })
            .or_insert(login);
    }

    /// Add what another source found.
    /// Add what `other` found. Taken by value: into an empty `Hits` (a run's first
    /// source, its cache entry) it is moved whole, not copied entry by entry.
    pub fn merge(&mut self, other: Hits) {
        self.skipped_long += other.skipped_long;
        self.skipped_foreign += other.skipped_foreign;
        if self.logins.is_empty() && self.refused.is_empty() {
            self.logins = other.logins;
            self.refused = other.refused;
            return;
        }
        for (k, l) in other.logins {
            self.keep(k, l);
        }
        for (n, r) in other.refused {
            keep_refusals(self.refused.entry(n).or_default(), r.into_iter());
        }
    }

    /// The newest login of device `id` with `fingerprint`, not dated beyond the clock
    /// skew ahead of `now`; `Err(())` if the only ones are from the future.
    pub fn latest(&self, id: &DeviceId, fingerprint: &str, now: i64) -> Option<Result<Login, ()>> {
        let device = hex12(id.as_str().as_bytes())?;
        let l = *self.logins.get(&Key::new(device, fingerprint)?)?;
        Some(if l.time > now + MAX_CLOCK_SKEW_SECS {
            Err(())
        } else {
            Ok(l)
        })
    }

    /// Scan one line (without its newline).
    fn line(&mut self, line: &[u8], p: &mut Pass) {
        let f = p.filter;
        if line.len() > MAX_LOG_LINE {
            self.skipped_long += 1;
            return;
        }
        if line.first() == Some(&b'{') {
            if let Some(j) = parse_journal_line(line) {
                self.offer(j.time, j.host.as_deref(), &j.msg, f);
            }
            return;
        }
        // Valid UTF-8 is checked fast; only a broken line pays for the lossy copy.
        let text = match std::str::from_utf8(line) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(line),
        };
        if let Some(e) = parse_syslog_line_with(&text, f.now, p.offset, &mut p.memo) {
            self.offer(e.time, Some(e.host), &e.msg, f);
        }
    }

    /// Scan the complete lines of `block`: only those that carry a sentence are parsed.
    fn block(&mut self, block: &[u8], p: &mut Pass) {
        self.accepted_lines(block, p);
        for needle in REFUSED_NEEDLES {
            let mut done = 0;
            for at in memmem::find_iter(block, needle) {
                if let Some(line) = line_around(block, at, &mut done) {
                    self.line(&block[line], p);
                }
            }
        }
    }

    /// The lines of `block` that carry the accepted sentence, `LOOKUP_BATCH` at a time:
    /// the key and time of each are read first, then all of the batch's keys are
    /// looked up together, then only the lines whose key has no newer login kept are
    /// scanned. A look-up is mostly a cache miss (one table entry of thousands); made
    /// one after the other, without a line's parsing between them, they overlap. A key
    /// looked up before the lines just ahead of it were kept may miss a newer login:
    /// then its line is scanned in full, which gives the same answer.
    fn accepted_lines(&mut self, block: &[u8], p: &mut Pass) {
        let mut batch: Vec<Pending> = Vec::with_capacity(LOOKUP_BATCH);
        let mut done = 0;
        for at in memmem::find_iter(block, SENTENCE) {
            let Some(line) = line_around(block, at, &mut done) else {
                continue;
            };
            let key = quick_key(&block[line.clone()], p);
            batch.push((line, key));
            if batch.len() == LOOKUP_BATCH {
                self.scan_batch(block, &mut batch, p);
            }
        }
        self.scan_batch(block, &mut batch, p);
    }

    /// Look up the keys of `batch`, then scan its lines that may change something.
    fn scan_batch(&mut self, block: &[u8], batch: &mut Vec<Pending>, p: &mut Pass) {
        let mut newer = [false; LOOKUP_BATCH];
        for (n, (_, key)) in newer.iter_mut().zip(batch.iter()) {
            *n = key.as_ref().is_some_and(|(time, k)| self.newer(*time, k));
        }
        for (n, (range, _)) in newer.iter().zip(batch.drain(..)) {
            if !n {
                self.line(&block[range], p);
            }
        }
    }
}

/// An accepted line of a block waiting for its look-up: where it is, and its time and
/// key when [`quick_key`] could read them.
type Pending = (std::ops::Range<usize>, Option<(i64, Key)>);

/// The line of `block` around byte `at` (without its newline), unless it starts before
/// `done` (a second hit on a line already scanned); `done` moves past it.
fn line_around(block: &[u8], at: usize, done: &mut usize) -> Option<std::ops::Range<usize>> {
    let start = memchr::memrchr(b'\n', &block[..at]).map_or(0, |i| i + 1);
    if start < *done {
        return None;
    }
    let end = memchr::memchr(b'\n', &block[at..]).map_or(block.len(), |i| at + i);
    *done = end + 1;
    Some(start..end)
}

/// The key of an accepted-login message read without checking it: the account is
/// right after the sentence, the fingerprint ends the line.
fn unchecked_key(msg: &[u8]) -> Option<Key> {
    let rest = msg.strip_prefix(SENTENCE)?;
    let prefix = phonehome_protocol::ACCOUNT_PREFIX.len();
    if rest.len() < prefix + 12 + 43 {
        return None;
    }
    let device = hex12(&rest[prefix..prefix + 12])?;
    let mut fingerprint = [0u8; 43];
    fingerprint.copy_from_slice(&msg[msg.len() - 43..]);
    Some(Key {
        device,
        fingerprint,
    })
}

/// The time and unchecked key of a syslog or journald line that `Hits::has_newer` would
/// look up (a line of this host, valid UTF-8, its message an accepted login); `None` for
/// any other, which is scanned in full.
fn quick_key(line: &[u8], p: &mut Pass) -> Option<(i64, Key)> {
    if line.len() > MAX_LOG_LINE {
        return None;
    }
    if line.first() == Some(&b'{') {
        let j = parse_journal_line(line)?;
        if !p
            .filter
            .hosts
            .iter()
            .any(|h| Some(h.as_str()) == j.host.as_deref())
        {
            return None;
        }
        return Some((j.time, unchecked_key(j.msg.as_bytes())?));
    }
    let text = std::str::from_utf8(line).ok()?;
    let e = parse_syslog_line_with(text, p.filter.now, p.offset, &mut p.memo)?;
    if !p.filter.hosts.iter().any(|h| h == e.host) {
        return None;
    }
    Some((e.time, unchecked_key(e.msg.as_bytes())?))
}

/// What one scan carries from line to line besides its hits.
struct Pass<'a> {
    filter: &'a Filter,
    /// The local time zone's offset from UTC, for timestamps without a zone.
    offset: i64,
    memo: TimeMemo,
}

/// Add `new` refusals to `kept`: one per connection (address and port; a `Failed
/// publickey` and the connection's end are the same login, the fingerprint kept),
/// oldest first, the newest `MAX_REFUSALS` only.
fn keep_refusals(kept: &mut Vec<Refusal>, new: impl Iterator<Item = Refusal>) {
    for r in new {
        match kept
            .iter_mut()
            .find(|k| k.from == r.from && k.port == r.port && (k.time - r.time).abs() < 600)
        {
            Some(k) => {
                k.time = k.time.max(r.time);
                if k.fingerprint.is_none() {
                    k.fingerprint = r.fingerprint;
                }
            }
            None => kept.push(r),
        }
    }
    kept.sort_by_key(|r| r.time);
    let extra = kept.len().saturating_sub(MAX_REFUSALS);
    kept.drain(..extra);
}

/// What reading one source gave: its hits, and how far it was read (the end of its
/// last complete line: a line being written is read again next time).
#[derive(Debug, Default)]
pub struct Scanned {
    pub hits: Hits,
    pub complete: u64,
}

/// An over-long line being skipped: how much of it went by, and whether it carried
/// the sentence (then it is counted).
#[derive(Default)]
struct Skipping {
    bytes: u64,
    carried: bool,
}

/// Scan `input` to its end, in blocks.
pub fn scan(input: impl Read, f: &Filter) -> std::io::Result<Scanned> {
    let mut out = Scanned::default();
    out.complete = scan_into(input, f, &mut out.hits, &mut Vec::new())?;
    Ok(out)
}

/// [`scan`] into `hits`, which may hold what newer parts of the log gave; returns
/// how far the input was read (the end of its last complete line). `buf` is the
/// block read and what is carried from the last one: zeroed once, reused by the
/// caller's next call.
fn scan_into(
    mut input: impl Read,
    f: &Filter,
    hits: &mut Hits,
    buf: &mut Vec<u8>,
) -> std::io::Result<u64> {
    let mut pass = Pass {
        filter: f,
        offset: local_offset(f.now),
        memo: TimeMemo::default(),
    };
    let mut complete = 0;
    if buf.len() < BLOCK + MAX_LOG_LINE {
        buf.resize(BLOCK + MAX_LOG_LINE, 0);
    }
    // The first `have` bytes of `buf` are held: read, not yet scanned (at most
    // MAX_LOG_LINE at the top of the loop).
    let mut have = 0;
    let mut skipping: Option<Skipping> = None;
    // What a sentence cut by a read boundary needs kept while skipping.
    let keep = SENTENCE.len() - 1;
    loop {
        let n = loop {
            match input.read(&mut buf[have..have + BLOCK]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        have += n;
        let at_end = n == 0;
        if let Some(sk) = &mut skipping {
            let Some(i) = memchr::memchr(b'\n', &buf[..have]) else {
                sk.carried |= memmem::find(&buf[..have], SENTENCE).is_some();
                if at_end {
                    hits.skipped_long += u64::from(sk.carried);
                    return Ok(complete);
                }
                let drop = have.saturating_sub(keep);
                sk.bytes += drop as u64;
                drop_front(buf, drop, &mut have);
                continue;
            };
            sk.carried |= memmem::find(&buf[..i], SENTENCE).is_some();
            hits.skipped_long += u64::from(sk.carried);
            complete += sk.bytes + i as u64 + 1;
            drop_front(buf, i + 1, &mut have);
            skipping = None;
        }
        // Complete lines are scanned now; at the end, the unterminated last one too
        // (but `complete` stops before it: it is read again next time).
        let lines_end = memchr::memrchr(b'\n', &buf[..have]).map_or(0, |i| i + 1);
        let cut = if at_end { have } else { lines_end };
        hits.block(&buf[..cut], &mut pass);
        complete += lines_end as u64;
        if at_end {
            return Ok(complete);
        }
        drop_front(buf, cut, &mut have);
        if have > MAX_LOG_LINE {
            // No newline in sight: an over-long line, skipped up to its newline.
            let mut sk = Skipping {
                carried: memmem::find(&buf[..have], SENTENCE).is_some(),
                bytes: 0,
            };
            let drop = have - keep;
            sk.bytes += drop as u64;
            drop_front(buf, drop, &mut have);
            skipping = Some(sk);
        }
    }
}

/// Drop the first `n` of the `have` bytes held at the front of `buf`.
fn drop_front(buf: &mut [u8], n: usize, have: &mut usize) {
    buf.copy_within(n..*have, 0);
    *have -= n;
}

/// Scan an open log file from byte `from`, gunzipping it when it starts with the gzip
/// magic (then all of it, whatever `from` says). A long plain log is scanned by several
/// threads, a range of whole lines each ([`ranges`]); what they find is merged as the
/// finds of several files are, which gives what one pass would.
pub fn scan_file(file: &mut std::fs::File, from: u64, f: &Filter) -> std::io::Result<Scanned> {
    use std::io::{BufRead, BufReader, Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut input = BufReader::with_capacity(64 * 1024, &mut *file);
    let head = input.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut r = scan(flate2::bufread::MultiGzDecoder::new(input), f)?;
        r.complete = file.metadata()?.len();
        return Ok(r);
    }
    drop(input);
    let threads = phonehome_plumbing::threads::cores().min(MAX_SCAN_THREADS);
    scan_ranges(file, from, f, threads, MIN_SCAN_RANGE, SCAN_CHUNK)
}

/// Scan a plain file from `from` in up to `threads` ranges of at least `min_range`
/// bytes, and merge what they found.
fn scan_ranges(
    file: &std::fs::File,
    from: u64,
    f: &Filter,
    threads: usize,
    min_range: u64,
    chunk: u64,
) -> std::io::Result<Scanned> {
    let len = file.metadata()?.len();
    let starts = ranges(file, from, len, threads, min_range)?;
    let spans: Vec<_> = (0..starts.len())
        .map(|i| (starts[i], starts.get(i + 1).copied(), len))
        .collect();
    let parts = phonehome_plumbing::threads::map(&spans, 1, |&span| {
        scan_newest_first(file, span, f, chunk)
    });
    let mut out = Scanned::default();
    for (part, start) in parts.into_iter().zip(&starts) {
        let part = part?;
        out.hits.merge(part.hits);
        // Every range but the last ends after a newline: complete to its end.
        out.complete = start + part.complete;
    }
    Ok(out)
}

/// Scan the range of `file` from `start` to `end` (to the file's end, about `len`,
/// when `None`) in chunks of about `chunk` bytes of whole lines, the last chunk first: a log is in time order,
/// so once the newest chunk is read nearly every line of an older one names a key with
/// a newer login already kept, and is passed over unparsed (`Hits::has_newer`). What
/// is kept is what one pass from the start keeps (tested).
fn scan_newest_first(
    file: &std::fs::File,
    (start, end, len): (u64, Option<u64>, u64),
    f: &Filter,
    chunk: u64,
) -> std::io::Result<Scanned> {
    let chunks = ranges(file, start, end.unwrap_or(len), usize::MAX, chunk)?;
    let mut out = Scanned::default();
    let mut buf = Vec::new();
    for (i, &at) in chunks.iter().enumerate().rev() {
        let chunk_end = chunks.get(i + 1).copied().or(end);
        let complete = scan_into(
            Range {
                file,
                at,
                end: chunk_end,
            },
            f,
            &mut out.hits,
            &mut buf,
        )?;
        // Every chunk but the last ends after a newline: complete to its end.
        if chunk_end == end {
            out.complete = at - start + complete;
        }
    }
    Ok(out)
}

/// Where the ranges of a file scanned from `from` to (about) `len` start, one per thread
/// at most and each at least `min_range` long: each starts right after a newline. The
/// last range runs to the end of the file, however long it has grown by then.
fn ranges(
    file: &std::fs::File,
    from: u64,
    len: u64,
    threads: usize,
    min_range: u64,
) -> std::io::Result<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let span = len.saturating_sub(from);
    let n = (span / min_range.max(1)).clamp(1, threads.max(1) as u64);
    let mut starts = vec![from];
    let mut window = vec![0u8; MAX_LOG_LINE + 1];
    for k in 1..n {
        let nominal = from + span * k / n;
        let got = file.read_at(&mut window, nominal)?;
        // A line longer than the window: no cut here (the range before it grows).
        if let Some(i) = memchr::memchr(b'\n', &window[..got]) {
            let start = nominal + i as u64 + 1;
            if start > *starts.last().expect("from") && start < len {
                starts.push(start);
            }
        }
    }
    Ok(starts)
}

/// A file read from `at` to `end` (to its end when `None`) with positioned reads, so
/// that threads share one open file.
struct Range<'a> {
    file: &'a std::fs::File,
    at: u64,
    end: Option<u64>,
}

impl Read for Range<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let room = self
            .end
            .map_or(buf.len() as u64, |e| e.saturating_sub(self.at));
        let want = buf.len().min(room.try_into().unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Open a log: a regular file, opened once, a symlink followed (an admin's path).
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    files::open_regular(path, Follow::Yes)
}

/// Which file a path names now: its device and inode survive a rename (rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    #[serde(default)]
    pub gzip: bool,
}

impl FileId {
    pub fn of(f: &std::fs::File) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata()?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            gzip: false,
        })
    }
}

/// Scan sshd's entries in journald (`journalctl -o json`), streaming its output.
pub fn scan_journal(f: &Filter) -> Result<Hits, String> {
    let mut cmd = std::process::Command::new("journalctl");
    cmd.args([
        "-o",
        "json",
        "--no-pager",
        "-q",
        "_COMM=sshd",
        "_COMM=sshd-session",
    ]);
    let mut journal =
        phonehome_plumbing::process::stream(&mut cmd, 4096).map_err(|e| e.to_string())?;
    // On an error, dropping `journal` kills and reaps journalctl.
    let read = scan(&mut journal.stdout, f).map_err(|e| e.to_string())?;
    journal.finish().map_err(|e| e.to_string())?;
    if read.complete == 0 {
        return Err("no sshd entries at all (is journald running and sshd logging to it?)".into());
    }
    Ok(read.hits)
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

    /// The device of `device6466b34bde54`, the account in the test lines.
    fn dev() -> DeviceId {
        DeviceId::parse("6466b34bde54").unwrap()
    }

    #[test]
    fn accepted_sentence_is_anchored() {
        let ok = format!("Accepted publickey for device6466b34bde54 from 198.51.100.2 port 40022 ssh2: ED25519 {}", FP);
        let p = parse_accepted(&ok).unwrap();
        assert_eq!(p.account, "device6466b34bde54");
        assert_eq!(p.from.to_string(), "198.51.100.2");
        assert_eq!(p.port, 40022);
        assert_eq!(p.fingerprint, FP);
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
    fn threat_41_refused_logins_are_anchored_too() {
        let closed = "Connection closed by authenticating user device6466b34bde54 198.51.100.2 port 40022 [preauth]";
        let r = parse_refused(closed).unwrap();
        assert_eq!(
            (r.account, r.port, r.fingerprint),
            ("device6466b34bde54", 40022, None)
        );
        let failed = format!(
            "Failed publickey for device6466b34bde54 from 198.51.100.2 port 40022 ssh2: ED25519 {}",
            FP
        );
        assert_eq!(parse_refused(&failed).unwrap().fingerprint, Some(FP));
        for ok in [
            "Connection reset by authenticating user device6466b34bde54 198.51.100.2 port 1 [preauth]",
            "Disconnected from authenticating user device6466b34bde54 2001:db8::1 port 1 [preauth]",
            "Disconnecting authenticating user device6466b34bde54 198.51.100.2 port 1: Too many authentication failures [preauth]",
        ] {
            assert!(parse_refused(ok).is_some(), "{}", ok);
        }
        for bad in [
            // A made-up pre-auth name is an invalid user, whatever it says.
            "Connection closed by invalid user device6466b34bde54 198.51.100.2 port 1 [preauth]",
            "Invalid user x Connection closed by authenticating user device6466b34bde54 198.51.100.2 port 1 [preauth]",
            "Connection closed by authenticating user root 198.51.100.2 port 1 [preauth]",
            "Connection closed by authenticating user device6466b34bde54 198.51.100.2 port 1",
            "Connection closed by authenticating user device6466b34bde54 x 198.51.100.2 port 1 [preauth]",
            "Connection closed by authenticating user device6466b34bde54 198.51.100.2 port 1 [preauth] x",
            "Disconnected from user device6466b34bde54 198.51.100.2 port 1",
        ] {
            assert!(parse_refused(bad).is_none(), "{}", bad);
        }
        assert!(parse_refused(&format!("{} x", failed)).is_none());
    }

    #[test]
    fn threat_41_refusals_of_this_host_one_per_connection() {
        let now = unix_from_civil(2026, 11, 21, 12, 0, 0);
        let msg = |t: &str, host: &str, m: &str| format!("{} {} sshd[9]: {}\n", t, host, m);
        let closed = |port: u16| {
            format!("Connection closed by authenticating user device6466b34bde54 198.51.100.2 port {} [preauth]", port)
        };
        let failed = format!(
            "Failed publickey for device6466b34bde54 from 198.51.100.2 port 7 ssh2: ED25519 {}",
            FP
        );
        let text = [
            msg("2026-11-21T11:00:00Z", "srv", &failed),
            msg("2026-11-21T11:00:01Z", "srv", &closed(7)),
            msg("2026-11-21T11:01:00Z", "srv", &closed(8)),
            msg("2026-11-21T11:02:00Z", "otherhost", &closed(9)),
            msg(
                "2026-11-21T11:03:00Z",
                "srv",
                &format!("Invalid user x {}", closed(10)),
            ),
        ]
        .concat();
        let r = scan(text.as_bytes(), &filter(now)).unwrap();
        let got = r.hits.refusals("device6466b34bde54");
        assert_eq!(got.len(), 2, "{:?}", got);
        assert_eq!(got[0].port, 7);
        assert_eq!(
            got[0].fingerprint.as_deref(),
            Some(FP),
            "one login, its key kept"
        );
        assert_eq!(got[1].port, 8);
        // Kept through the cache's stored form, and bounded.
        let back: Hits = serde_json::from_str(&serde_json::to_string(&r.hits).unwrap()).unwrap();
        assert_eq!(back, r.hits);
        let many: String = (0..40)
            .map(|p| msg("2026-11-21T11:00:00Z", "srv", &closed(100 + p)))
            .collect();
        let r = scan(many.as_bytes(), &filter(now)).unwrap();
        assert_eq!(r.hits.refusals("device6466b34bde54").len(), MAX_REFUSALS);
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

    /// One memo across lines, as a scan uses it: a fraction of a second does not
    /// change the second, a zone or a day does, and a bad stamp stays bad.
    #[test]
    fn timestamps_through_the_memo() {
        let now = 1_795_304_990 + 3600;
        let off = local_offset(now);
        let mut memo = TimeMemo::default();
        let mut at = |line: &str| {
            parse_syslog_line_with(line, now, off, &mut memo).map(|e| (e.time, e.host.to_string()))
        };
        let t = 1_795_304_990;
        let msg = "h sshd[1]: x";
        assert_eq!(
            at(&format!("2026-11-21T23:49:50.1+00:00 {msg}")),
            Some((t, "h".into()))
        );
        assert_eq!(
            at(&format!("2026-11-21T23:49:50.9+00:00 {msg}")),
            Some((t, "h".into()))
        );
        assert_eq!(
            at(&format!("2026-11-21T23:49:50.9+01:00 {msg}")),
            Some((t - 3600, "h".into()))
        );
        assert_eq!(
            at(&format!("2026-11-21T23:49:50Z {msg}")),
            Some((t, "h".into()))
        );
        assert_eq!(
            at(&format!("2026-11-21T23:49:51Z {msg}")),
            Some((t + 1, "h".into()))
        );
        assert_eq!(at(&format!("2026-11-21T23:49:51.5Q {msg}")), None);
        assert_eq!(at(&format!("2026-11-21T23:49:51.5Q {msg}")), None);
        assert_eq!(
            at(&format!("Nov 21 23:49:50 {msg}")),
            Some((t - off, "h".into()))
        );
        assert_eq!(
            at(&format!("Nov 21 23:49:50 {msg}")),
            Some((t - off, "h".into()))
        );
        assert_eq!(
            at(&format!("Nov  2 23:49:50 {msg}")),
            Some((t - off - 19 * 86400, "h".into()))
        );
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

    fn filter(now: i64) -> Filter {
        Filter {
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
        let text = [
            line("2026-11-21T11:00:00Z", "srv"),
            line("2026-11-21T11:30:00Z", "otherhost"),
            line("2026-11-21T12:04:00Z", "srv"),
        ]
        .concat();
        let r = scan(text.as_bytes(), &filter(now)).unwrap();
        let l = r.hits.latest(&dev(), FP, now).unwrap().unwrap();
        assert_eq!(l.time, now + 240, "a few minutes of skew are accepted");
        assert_eq!(r.hits.skipped_foreign, 1);
        let r = scan(line("2099-01-01T00:00:00Z", "srv").as_bytes(), &filter(now)).unwrap();
        assert_eq!(
            r.hits.latest(&dev(), FP, now),
            Some(Err(())),
            "beyond the skew"
        );
        assert_eq!(r.hits.latest(&dev(), "SHA256:other", now), None);
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
        let line = mk("\"_COMM\":\"sshd\",\"_HOSTNAME\":\"srv\",");
        let ok = parse_journal_line(line.as_bytes()).unwrap();
        assert_eq!(ok.host.as_deref(), Some("srv"));
        assert_eq!((ok.time, &*ok.msg), (1_795_255_200, msg.as_str()));
    }

    #[test]
    fn threat_31_a_fifo_or_a_device_is_refused_at_once() {
        let e = open_log(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{}", e);
    }

    #[test]
    fn blocks_and_their_edges() {
        // Lines cut across block boundaries, a partial last line, an over-long line
        // that carries the sentence, and one that does not.
        let now = unix_from_civil(2026, 11, 21, 12, 0, 0);
        let good = line("2026-11-21T11:00:00Z", "srv");
        let mut text = Vec::new();
        for _ in 0..(BLOCK / good.len() + 3) {
            text.extend_from_slice(good.as_bytes());
        }
        text.extend(vec![b'x'; MAX_LOG_LINE * 2]);
        text.extend_from_slice(b"\n");
        text.extend(vec![b'y'; MAX_LOG_LINE]);
        text.extend_from_slice(good.trim_end().as_bytes());
        text.extend_from_slice(b"\n");
        let last = line("2026-11-21T11:59:00Z", "srv");
        text.extend_from_slice(last.trim_end().as_bytes());
        let r = scan(&text[..], &filter(now)).unwrap();
        assert_eq!(r.hits.skipped_long, 1);
        let l = r.hits.latest(&dev(), FP, now).unwrap().unwrap();
        assert_eq!(l.time, now - 60, "the partial last line counts");
        assert_eq!(
            r.complete as usize,
            text.len() - last.trim_end().len(),
            "but is read again next time"
        );
    }

    /// A device number is read from exactly what `DeviceId::is_valid` accepts.
    #[test]
    fn device_numbers() {
        for hex in [
            "000000000000",
            "6466b34bde54",
            "ffffffffffff",
            "0123456789ab",
        ] {
            assert!(DeviceId::is_valid(hex));
            assert_eq!(hex12(hex.as_bytes()), u64::from_str_radix(hex, 16).ok());
        }
        for bad in [
            "6466B34BDE54",
            "6466b34bde5",
            "6466b34bde545",
            "6466b34bde5g",
            "+466b34bde54",
            "",
        ] {
            assert!(!DeviceId::is_valid(bad));
            assert_eq!(hex12(bad.as_bytes()), None, "{}", bad);
        }
        assert_eq!(device_number("device6466b34bde54"), Some(0x6466_b34b_de54));
        assert_eq!(device_number("root"), None);
    }

    /// What a scan found survives being stored and read back; a stored login that no
    /// log line could have given (a device number past 12 hex digits, a fingerprint
    /// that is not 43 base64 characters) is dropped on reading, and so are refusals of
    /// such a number.
    #[test]
    fn hits_stored_and_read_back() {
        let now = unix_from_civil(2026, 11, 21, 12, 0, 0);
        let text = format!(
            "{}{}",
            line("2026-11-21T11:00:00Z", "srv"),
            line("2026-11-21T11:00:00Z", "other")
        );
        let hits = scan(text.as_bytes(), &filter(now)).unwrap().hits;
        let bytes = postcard::to_stdvec(&hits).unwrap();
        assert_eq!(postcard::from_bytes::<Hits>(&bytes).unwrap(), hits);
        assert_eq!(hits.skipped_foreign, 1);
        let mut stored: StoredHits = postcard::from_bytes(&bytes).unwrap();
        let good = stored.logins[0];
        let far = (1u64 << 48, good.1, good.2, good.3, good.4);
        let short = (good.0, "AAAA", good.2, good.3, good.4);
        let odd_text = format!("{}\"", "A".repeat(42));
        let odd = (good.0, odd_text.as_str(), good.2, good.3, good.4);
        stored.logins = vec![far, short, odd, good];
        stored.refused = vec![(1u64 << 48, vec![].into())];
        let back: Hits = postcard::from_bytes(&postcard::to_stdvec(&stored).unwrap()).unwrap();
        assert_eq!(back, hits, "only the good login is read back");
    }

    /// A file scanned in ranges by several threads gives what one pass over it gives,
    /// from its start or from a cursor, with lines across the cuts, over-long lines,
    /// other hosts, refusals and a partial last line.
    #[test]
    fn ranges_give_what_one_pass_gives() {
        let now = unix_from_civil(2026, 11, 21, 12, 0, 0);
        let mut text = String::new();
        for i in 0..3000u32 {
            let ts = format!(
                "2026-11-21T{:02}:{:02}:{:02}Z",
                9 + i % 3,
                (i * 7) % 60,
                i % 60
            );
            let id = format!("6466b34b{:04x}", i % 97);
            let port = 1000 + i;
            match i % 10 {
                0 => text.push_str(&format!(
                    "{ts} srv sshd[9]: Failed publickey for device{id} from 10.0.0.1 port {port} ssh2: ED25519 {FP}\n"
                )),
                1 => text.push_str(&format!(
                    "{ts} elsewhere sshd[9]: Accepted publickey for device{id} from 10.0.0.1 port {port} ssh2: ED25519 {FP}\n"
                )),
                2 if i % 700 == 2 => text.push_str(&format!(
                    "{ts} srv sshd[9]: {} Accepted publickey for device{id}\n",
                    "z".repeat(MAX_LOG_LINE)
                )),
                _ => text.push_str(&format!(
                    "{ts} srv sshd[9]: Accepted publickey for device{id} from 10.0.{}.1 port {port} ssh2: ED25519 {FP}\n",
                    i % 200
                )),
            }
        }
        // Logins of one second, far apart in the file: the same one is kept whichever
        // is read first.
        let tie = |port: u32, from: &str| {
            format!("2026-11-21T10:30:00Z srv sshd[9]: Accepted publickey for device6466b34bffff from {from} port {port} ssh2: ED25519 {FP}\n")
        };
        text.insert_str(0, &tie(7, "10.9.9.9"));
        text.push_str(&tie(5, "10.9.9.10"));
        text.push_str(&tie(9, "10.9.9.9"));
        text.push_str(line("2026-11-21T11:59:00Z", "srv").trim_end());
        let dir = phonehome_plumbing::tempdir::TempDir::new("logscan-ranges");
        let path = dir.path().join("auth.log");
        std::fs::write(&path, &text).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let f = filter(now);
        let cursor = text[..text.len() / 3].rfind('\n').unwrap() as u64 + 1;
        for from in [0, cursor] {
            let one = scan(&text.as_bytes()[from as usize..], &f).unwrap();
            for threads in [1, 2, 3, 4] {
                // Ranges read whole, and in chunks of whole lines, the newest first.
                for chunk in [u64::MAX, 4096, 50_000] {
                    let r = scan_ranges(&file, from, &f, threads, 4096, chunk).unwrap();
                    let what = format!("{threads} threads, chunks of {chunk}, from {from}");
                    assert_eq!(r.hits, one.hits, "{what}");
                    assert_eq!(r.complete, from + one.complete, "{what}");
                }
            }
            assert!(
                ranges(&file, from, text.len() as u64, 4, 4096)
                    .unwrap()
                    .len()
                    == 4
            );
        }
        assert!(one_pass_found_something(&text, &f));
    }

    fn one_pass_found_something(text: &str, f: &Filter) -> bool {
        let r = scan(text.as_bytes(), f).unwrap();
        r.hits.skipped_long > 0
            && r.hits.skipped_foreign > 0
            && !r.hits.refusals("device6466b34b0000").is_empty()
    }
}
