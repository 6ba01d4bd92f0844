//! The server's files through the shared atomic writes (`phonehome_plumbing::files`),
//! with the path in every error. Several files of one change are prepared (written and
//! fsynced) first and then committed in the order given: the order is what makes a
//! crash between two renames safe (see `cmd::forward`).

use crate::error::{Context, Result};
use phonehome_plumbing::files::{self, Pending};
use std::path::Path;

/// Write a temp file beside `target` (fsynced), ready to be renamed over it.
pub fn prepare(target: &Path, data: &[u8], mode: u32) -> Result<Pending> {
    files::prepare(target, data, mode, true).context("write", target)
}

/// Rename prepared files over their targets, in order.
pub fn commit_all(pending: Vec<Pending>) -> Result<()> {
    for p in pending {
        let target = p.target().to_path_buf();
        p.commit().context("replace", &target)?;
    }
    Ok(())
}

/// Prepare and commit one file.
pub fn write(target: &Path, data: &[u8], mode: u32) -> Result<()> {
    commit_all(vec![prepare(target, data, mode)?])
}

/// A regular file of at most `max` bytes, never through a symlink; `None` if missing.
pub fn read(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    files::read_bounded(path, max).context("read", path)
}

/// A JSON file's bytes parsed: the UTF-8 is checked once for the whole file, not once
/// per string as `serde_json::from_slice` does it (which was a third of the cost of
/// parsing a fleet's status files).
pub fn parse_json<'a, T: serde::Deserialize<'a>>(data: &'a [u8]) -> serde_json::Result<T> {
    let text = std::str::from_utf8(data).map_err(|e| {
        <serde_json::Error as serde::de::Error>::custom(format!("not UTF-8 text: {}", e))
    })?;
    serde_json::from_str(text)
}

/// Create `dir` if missing, with `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    files::ensure_dir(dir, mode).context("create", dir)
}

/// Remove `path` if it exists.
pub fn remove(path: &Path) -> Result<()> {
    files::remove_if_present(path).context("remove", path)
}
