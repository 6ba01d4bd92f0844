//! A webhook's outbox: the events not yet delivered to it, on disk, in order, so that a
//! receiver that is down for an hour gets everything when it returns and a crash loses
//! nothing. One directory per webhook URL (`var/lib/phonehome/watch/outbox/<key>/`,
//! root 0700, `key` a hash of the URL), one file per event named by its sequence number
//! (`0000000000000042.json`), written atomically and fsynced; delivered files are
//! removed. The queue is bounded: past `webhook_queue` events the oldest are removed
//! and one notice, `<seq>.dropped.json` (a `watch.dropped` event), sits in front of
//! the oldest kept event saying how many went (a later trim carries its count on).
//!
//! Who may touch it: the detecting run appends (a new name, renamed into place); the
//! delivering run (and trimming) holds `deliver.lock`, so two runs never send the same
//! event twice and a delivery never races a trim. `meta.json` keeps the delivery
//! counters the metrics show, written under the same lock.

use crate::error::{Context, Error, Result};
use crate::events::Event;
use crate::paths::Paths;
use crate::store;
use crate::webhook::Webhook;
use phonehome_plumbing::lock;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Largest event file read (an event is well under 2 KB).
const MAX_EVENT_BYTES: u64 = 64 * 1024;
const MAX_META_BYTES: u64 = 64 * 1024;
const NOTICE_SUFFIX: &str = ".dropped.json";

/// A queued file: an event, or the notice of dropped ones (sorted just before the
/// event of the same sequence number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub notice: bool,
}

impl Entry {
    fn name(&self) -> String {
        if self.notice {
            format!("{:016}{}", self.seq, NOTICE_SUFFIX)
        } else {
            format!("{:016}.json", self.seq)
        }
    }

    fn parse(name: &str) -> Option<Entry> {
        let (digits, notice) = match name.strip_suffix(NOTICE_SUFFIX) {
            Some(d) => (d, true),
            None => (name.strip_suffix(".json")?, false),
        };
        if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Entry {
            seq: digits.parse().ok()?,
            notice,
        })
    }

    fn order(&self) -> (u64, bool) {
        (self.seq, !self.notice)
    }
}

/// Delivery counters of one webhook (the metrics), and when to try it next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    pub delivered: u64,
    /// Failed attempts (each retry counts).
    pub failures: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Failed runs in a row: the backoff grows with it.
    pub consecutive_failures: u32,
    /// Unix time before which no run tries again.
    pub next_attempt: i64,
    pub last_success: Option<i64>,
    /// The last failure, one line, URL secrets masked.
    pub last_error: Option<String>,
}

/// The delivery lock of an outbox, held until dropped.
pub struct Held {
    _file: std::fs::File,
}

/// What a trim removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Events removed now.
    pub events: u64,
    /// What the new notice says: these plus the counts of notices removed with them.
    pub total: u64,
}

pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn of(paths: &Paths, hook: &Webhook) -> Outbox {
        Outbox {
            dir: outboxes(paths).join(hook.url.key()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, e: &Entry) -> PathBuf {
        self.dir.join(e.name())
    }

    /// Queue `ev` under sequence number `seq` (the same number again replaces the file:
    /// re-queueing after a crash is harmless).
    pub fn append(&self, seq: u64, ev: &Event) -> Result<()> {
        self.ensure()?;
        self.put(&Entry { seq, notice: false }, ev)
    }

    /// The directory and its parent, root-only.
    fn ensure(&self) -> Result<()> {
        if let Some(parent) = self.dir.parent() {
            store::ensure_dir(parent, 0o700)?;
        }
        store::ensure_dir(&self.dir, 0o700)
    }

    fn put(&self, e: &Entry, ev: &Event) -> Result<()> {
        let mut data = serde_json::to_vec(ev).expect("an event serialises");
        data.push(b'\n');
        store::write(&self.path(e), &data, 0o600)
    }

    /// The queued files, oldest first; none when the outbox does not exist.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &self.dir, e)),
        };
        let mut out: Vec<Entry> = rd
            .flatten()
            .filter_map(|d| Entry::parse(d.file_name().to_str()?))
            .collect();
        out.sort_by_key(Entry::order);
        Ok(out)
    }

    /// A queued event; `None` if it is gone (delivered or trimmed meanwhile).
    pub fn read(&self, e: &Entry) -> Result<Option<Event>> {
        let path = self.path(e);
        let Some(data) = store::read(&path, MAX_EVENT_BYTES)? else {
            return Ok(None);
        };
        crate::store::parse_json(&data).map(Some).map_err(|err| {
            Error::new(format!(
                "{} is not an event ({}); remove it",
                path.display(),
                err
            ))
        })
    }

    pub fn remove(&self, e: &Entry) -> Result<()> {
        store::remove(&self.path(e))
    }

    /// The delivery lock, without waiting: `None` when another run delivers.
    pub fn try_lock(&self) -> Result<Option<Held>> {
        self.ensure()?;
        let path = self.dir.join("deliver.lock");
        let file = lock::open(&path).context("open the lock", &path)?;
        Ok(lock::try_exclusive(&file)
            .context("lock", &path)?
            .then_some(Held { _file: file }))
    }

    pub fn meta(&self) -> Meta {
        store::read(&self.dir.join("meta.json"), MAX_META_BYTES)
            .ok()
            .flatten()
            .and_then(|d| crate::store::parse_json(&d).ok())
            .unwrap_or_default()
    }

    pub fn save_meta(&self, _held: &Held, m: &Meta) -> Result<()> {
        let data = serde_json::to_vec(m).expect("meta serialises");
        store::write(&self.dir.join("meta.json"), &data, 0o600)
    }

    /// Keep at most `max` files: remove the oldest and put one notice in front of what
    /// is kept, made by `notice(total dropped, its sequence number)`.
    pub fn trim(
        &self,
        _held: &Held,
        max: usize,
        notice: impl FnOnce(u64, u64) -> Event,
    ) -> Result<Trimmed> {
        let entries = self.entries()?;
        if entries.len() <= max {
            return Ok(Trimmed::default());
        }
        // Room for the notice.
        let excess = entries.len() - max.max(1) + 1;
        let (gone, kept) = entries.split_at(excess);
        let mut t = Trimmed::default();
        for e in gone {
            if e.notice {
                t.total += self.read(e)?.map_or(0, |ev| notice_count(&ev));
            } else {
                t.events += 1;
                t.total += 1;
            }
            self.remove(e)?;
        }
        let seq = kept
            .first()
            .map_or_else(|| gone.last().map_or(0, |e| e.seq + 1), |e| e.seq);
        self.put(&Entry { seq, notice: true }, &notice(t.total, seq))?;
        Ok(t)
    }
}

/// How many events a `watch.dropped` notice counts.
pub fn notice_count(ev: &Event) -> u64 {
    ev.details
        .get("count")
        .and_then(|c| c.as_u64())
        .unwrap_or(0)
}

/// Where every outbox lives.
pub fn outboxes(paths: &Paths) -> PathBuf {
    paths.watch_dir().join("outbox")
}

/// Remove the outboxes of webhooks no longer in server.conf; returns how many queued
/// files each held (a removed or edited URL will never be delivered to again).
pub fn remove_unconfigured(paths: &Paths, hooks: &[Webhook]) -> Vec<(String, usize)> {
    let keys: Vec<String> = hooks.iter().map(|h| h.url.key()).collect();
    let Ok(rd) = std::fs::read_dir(outboxes(paths)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for d in rd.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        if keys.contains(&name) || !d.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let queued = Outbox { dir: d.path() }.entries().map_or(0, |e| e.len());
        if std::fs::remove_dir_all(d.path()).is_ok() {
            removed.push((name, queued));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Draft, Kind};

    fn ev(n: u64) -> Event {
        Draft::new(Kind::DeviceAdded, format!("event {}", n)).into_event(
            format!("id-{}", n),
            1000 + n as i64,
            "srv",
        )
    }

    fn notice(count: u64, seq: u64) -> Event {
        Draft::new(Kind::WatchDropped, format!("{} dropped", count))
            .detail("count", count)
            .into_event(format!("d-{}", seq), 0, "srv")
    }

    fn outbox(t: &phonehome_plumbing::tempdir::TempDir) -> Outbox {
        Outbox { dir: t.join("o") }
    }

    #[test]
    fn in_order_and_appending_again_replaces() {
        let t = phonehome_plumbing::tempdir::TempDir::new("outbox");
        let o = outbox(&t);
        assert!(o.entries().unwrap().is_empty(), "no directory yet: empty");
        for n in [3, 1, 12, 2] {
            o.append(n, &ev(n)).unwrap();
        }
        o.append(12, &ev(12)).unwrap();
        let seqs: Vec<u64> = o.entries().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 12]);
        let first = &o.entries().unwrap()[0];
        assert_eq!(o.read(first).unwrap().unwrap(), ev(1));
        o.remove(first).unwrap();
        assert_eq!(o.read(first).unwrap(), None);
        let held = o.try_lock().unwrap().unwrap();
        assert!(o.try_lock().unwrap().is_none(), "one deliverer at a time");
        drop(held);
        assert!(o.try_lock().unwrap().is_some());
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let t = phonehome_plumbing::tempdir::TempDir::new("outbox");
        let o = outbox(&t);
        let held = o.try_lock().unwrap().unwrap();
        for n in 1..=7 {
            o.append(n, &ev(n)).unwrap();
        }
        let t1 = o.trim(&held, 4, notice).unwrap();
        assert_eq!(
            t1,
            Trimmed {
                events: 4,
                total: 4
            }
        );
        let e = o.entries().unwrap();
        assert_eq!(e.len(), 4);
        assert!(
            e[0].notice && e[0].seq == 5,
            "the notice sits before event 5: {:?}",
            e
        );
        assert_eq!(notice_count(&o.read(&e[0]).unwrap().unwrap()), 4);
        // More events: the notice itself goes, its count is carried on.
        for n in 8..=9 {
            o.append(n, &ev(n)).unwrap();
        }
        let t2 = o.trim(&held, 4, notice).unwrap();
        assert_eq!(
            t2,
            Trimmed {
                events: 2,
                total: 6
            }
        );
        let e = o.entries().unwrap();
        let names: Vec<(u64, bool)> = e.iter().map(|e| (e.seq, e.notice)).collect();
        assert_eq!(names, [(7, true), (7, false), (8, false), (9, false)]);
        assert_eq!(o.trim(&held, 4, notice).unwrap(), Trimmed::default());
    }

    #[test]
    fn names_are_strict() {
        assert_eq!(Entry::parse("0000000000000042.json").unwrap().seq, 42);
        assert!(
            Entry::parse("0000000000000042.dropped.json")
                .unwrap()
                .notice
        );
        for bad in [
            "42.json",
            "meta.json",
            "deliver.lock",
            ".0000000000000042.json.1.tmp",
        ] {
            assert!(Entry::parse(bad).is_none(), "{}", bad);
        }
    }
}
