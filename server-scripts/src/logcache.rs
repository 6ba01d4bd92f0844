//! list-devices' memory of the log files it read, so that a repeated run reads only
//! what they gained: per file — known by device and inode, which survive a rotation by
//! rename — how far it was read (the end of its last complete line), a checksum of the
//! bytes just before that point, and what was found up to there. A file that shrank
//! (copytruncate), whose bytes before the cursor changed, or that is new, is read
//! whole; a gzipped file is reused only unchanged. The answer is the same as a full
//! scan's (tested): what is kept is per (account, fingerprint), before the registry or
//! the clock decide anything.
//!
//! The cache lives in `var/cache/phonehome/logscan.json`, root 0600, written atomically
//! (never under `var/lib/phonehome`: listing changes nothing there); deleting it costs
//! one full scan. It is read and written only when list-devices runs as root. journald
//! is read whole every time.

use crate::logscan::{self, FileId, Filter, Hits};
use crate::paths::Paths;
use phonehome_plumbing::files;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bumped whenever what is kept changes meaning.
const FORMAT: u32 = 5;
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
    format: u32,
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

fn load(path: &Path, hosts: &[String]) -> Cache {
    files::read_bounded(path, MAX_CACHE_BYTES)
        .ok()
        .flatten()
        .and_then(|d| crate::store::parse_json::<Cache>(&d).ok())
        .filter(|c| c.format == FORMAT && c.hosts == hosts)
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
    entry.hits.merge(&scanned.hits);
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
    let cache_path = paths.cache().join("logscan.json");
    let use_cache = use_cache && phonehome_plumbing::process::geteuid() == 0;
    let mut old = if use_cache {
        load(&cache_path, &f.hosts)
    } else {
        Cache::default()
    };
    let mut out = Outcome::default();
    let mut new = Cache {
        format: FORMAT,
        hosts: f.hosts.clone(),
        files: Vec::new(),
    };
    for path in logs {
        match read_one(path, &mut old, f, &mut out) {
            Ok(e) => {
                out.hits.merge(&e.hits);
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
    out
}

fn save(path: &Path, cache: &Cache) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        files::ensure_dir(dir, 0o700)?;
    }
    let data = serde_json::to_vec(cache).expect("a cache serialises");
    files::write(path, &data, 0o600, false)
}
