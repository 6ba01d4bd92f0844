//! list-devices' memory of the log files it read, so that a repeated run reads only
//! what they gained: per file — known by device and inode, which survive a rotation by
//! rename — how far it was read (the end of its last complete line), a checksum of the
//! bytes just before that point, and what was found up to there. A file that shrank
//! (copytruncate), whose bytes before the cursor changed, or that is new, is read
//! whole; a gzipped file is reused only unchanged. The answer is the same as a full
//! scan's (tested): what is kept is per (account, fingerprint), before the registry or
//! the clock decide anything.
//!
//! The cache lives in `var/cache/phonehome/logscan.bin`, root 0600, written atomically
//! (never under `var/lib/phonehome`: listing changes nothing there); deleting it costs
//! one full scan. It is read and written only when list-devices runs as root. journald
//! is read whole every time. It is binary (postcard, behind a magic line and a format
//! number): it holds a login per device and is read and rewritten on every run, which
//! as JSON cost a fleet of 10,000 about a sixth of an incremental run's instructions.

use crate::logscan::{self, FileId, Filter, Hits};
use crate::paths::Paths;
use phonehome_plumbing::files;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The cache file, under the cache directory.
const CACHE_FILE: &str = "logscan.bin";
/// Where earlier releases kept it as JSON: removed when the new one is written.
const OLD_CACHE_FILE: &str = "logscan.json";
/// The cache file's first bytes: what it is, then [`FORMAT`] as 4 bytes LE.
const MAGIC: &[u8] = b"phonehome logscan cache\n";
/// Bumped whenever what is kept, or how it is encoded, changes.
const FORMAT: u32 = 6;
/// How many bytes before a cursor its checksum covers.
const TAIL: u64 = 4096;
/// Largest cache read.
const MAX_CACHE_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: FileId,
    /// Read up to here (the end of the last complete line).
    complete: u64,
    /// FNV-1a of the `TAIL` bytes before `complete`.
    tail: u64,
    hits: Hits,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    /// The log_hosts the hits were filtered with: other hosts, other hits.
    hosts: Vec<String>,
    files: Vec<Entry>,
}

/// What the scan of every file gave, merged, and what was read.
#[derive(Debug, Default)]
pub struct Outcome {
    pub hits: Hits,
    /// Sources read successfully.
    pub read: Vec<String>,
    /// Sources that could not be read, with why.
    pub failed: Vec<String>,
    /// Bytes read this time; bytes whose findings came from the cache.
    pub bytes_read: u64,
    pub bytes_reused: u64,
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The checksum of the bytes just before `at`.
fn tail_of(file: &std::fs::File, at: u64) -> std::io::Result<u64> {
    let start = at.saturating_sub(TAIL);
    let mut buf = vec![0u8; (at - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(fnv(&buf))
}

/// The header every cache file starts with.
fn header() -> Vec<u8> {
    [MAGIC, &FORMAT.to_le_bytes()].concat()
}

/// The cache, if `data` is one of this format made with these `hosts`.
fn decode(data: &[u8], hosts: &[String]) -> Option<Cache> {
    let body = data.strip_prefix(header().as_slice())?;
    match postcard::take_from_bytes::<Cache>(body) {
        Ok((cache, [])) if cache.hosts == hosts => Some(cache),
        _ => None,
    }
}

fn encode(cache: &Cache) -> Vec<u8> {
    postcard::to_extend(cache, header()).expect("a cache serialises")
}

/// The cache at `path`; empty (every log read whole) if there is none, or it cannot be
/// read, or it is not one of this format made with these `hosts`.
fn load(path: &Path, hosts: &[String]) -> Cache {
    files::read_bounded(path, MAX_CACHE_BYTES)
        .ok()
        .flatten()
        .and_then(|d| decode(&d, hosts))
        .unwrap_or_default()
}

/// Where a file's reading can start: from its cached cursor (with what was found
/// before it, taken out of `old`), or from the beginning.
fn resume(old: &mut Cache, file: &std::fs::File, id: &FileId) -> Option<Entry> {
    let i = old
        .files
        .iter()
        .position(|e| e.id.dev == id.dev && e.id.ino == id.ino)?;
    let e = &old.files[i];
    if id.size < e.complete || tail_of(file, e.complete).ok()? != e.tail {
        return None;
    }
    if e.id.gzip && id.size != e.id.size {
        return None;
    }
    Some(old.files.swap_remove(i))
}

/// Read one file, from its cursor when the cache has a valid one.
fn read_one(path: &Path, old: &mut Cache, f: &Filter, out: &mut Outcome) -> std::io::Result<Entry> {
    let mut file = logscan::open_log(path)?;
    let id = FileId::of(&file)?;
    let mut entry = match resume(old, &file, &id) {
        Some(e) if e.id.gzip => {
            out.bytes_reused += id.size;
            return Ok(e);
        }
        Some(e) => e,
        None => Entry {
            id,
            complete: 0,
            tail: 0,
            hits: Hits::default(),
        },
    };
    out.bytes_reused += entry.complete;
    let scanned = logscan::scan_file(&mut file, entry.complete, f)?;
    let gzip = is_gzip(&file);
    out.bytes_read += id.size - entry.complete;
    entry.hits.merge(scanned.hits);
    entry.id = FileId { gzip, ..id };
    entry.complete = scanned.complete;
    entry.tail = tail_of(&file, entry.complete)?;
    Ok(entry)
}

fn is_gzip(file: &std::fs::File) -> bool {
    let mut magic = [0u8; 2];
    file.read_exact_at(&mut magic, 0).is_ok() && magic == [0x1f, 0x8b]
}

/// Scan `logs`, reusing what `paths`' cache knows when `use_cache`, and keep what was
/// found for the next run (as root only).
pub fn scan(paths: &Paths, logs: &[PathBuf], f: &Filter, use_cache: bool) -> Outcome {
    let cache_path = paths.cache().join(CACHE_FILE);
    let use_cache = use_cache && phonehome_plumbing::process::geteuid() == 0;
    let mut old = if use_cache {
        load(&cache_path, &f.hosts)
    } else {
        Cache::default()
    };
    let mut out = Outcome::default();
    let mut new = Cache {
        hosts: f.hosts.clone(),
        files: Vec::new(),
    };
    for path in logs {
        match read_one(path, &mut old, f, &mut out) {
            Ok(e) => {
                out.read.push(path.display().to_string());
                new.files.push(e);
            }
            Err(e) => out.failed.push(format!("{}: {}", path.display(), e)),
        }
    }
    if use_cache {
        if let Err(e) = save(&cache_path, &new) {
            log::warn!(
                "cannot keep the log cursors in {}: {}",
                cache_path.display(),
                e
            );
        }
    }
    // Kept first, then merged: the entries are moved into the answer, not copied.
    for e in new.files {
        out.hits.merge(e.hits);
    }
    out
}

fn save(path: &Path, cache: &Cache) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        files::ensure_dir(dir, 0o700)?;
    }
    files::write(path, &encode(cache), 0o600, false)?;
    // An earlier release's cache is only stale bytes: gone or not, the new one stands.
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_file(dir.join(OLD_CACHE_FILE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Cache {
        let id = FileId {
            dev: 1,
            ino: 2,
            size: 300,
            gzip: false,
        };
        Cache {
            hosts: vec!["srv".into()],
            files: vec![Entry {
                id,
                complete: 300,
                tail: 42,
                hits: Hits::default(),
            }],
        }
    }

    /// A cache is read back only whole, of this format and these hosts: every shorter
    /// prefix, bytes after its end, another format number, JSON of an earlier release
    /// or other log_hosts give nothing (a full scan), never a panic or a guess.
    #[test]
    fn only_a_whole_cache_of_this_format_is_read() {
        let hosts = vec!["srv".to_string()];
        let bytes = encode(&cache());
        let back = decode(&bytes, &hosts).expect("read back");
        assert_eq!(back.files.len(), 1);
        assert_eq!((back.files[0].complete, back.files[0].tail), (300, 42));
        assert!(decode(&bytes, &["other".to_string()]).is_none());
        for n in 0..bytes.len() {
            assert!(
                decode(&bytes[..n], &hosts).is_none(),
                "prefix of {} bytes",
                n
            );
        }
        assert!(decode(&[bytes.as_slice(), b"x"].concat(), &hosts).is_none());
        let mut other = bytes.clone();
        other[MAGIC.len()] ^= 1;
        assert!(decode(&other, &hosts).is_none());
        assert!(decode(br#"{"format":5,"hosts":["srv"],"files":[]}"#, &hosts).is_none());
        // Any byte changed: read or refused, but nothing else.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] = b[i].wrapping_add(0x81);
            let _ = decode(&b, &hosts);
        }
    }
}
