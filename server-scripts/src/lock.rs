//! Advisory locks (flock) under `var/lib/phonehome/locks/`: one per device, serialising
//! every change to that device's requests and key file, one for the registry (duplicate
//! key checks) and one for ports (no two devices granted the same remote port).
//! The kernel drops a flock when its holder dies: a killed command never blocks the next.

use crate::error::{Context, Result};
use crate::paths::Paths;
use phonehome_plumbing::lock;
use phonehome_protocol::DeviceId;
use std::fs::File;

/// Held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

fn take(paths: &Paths, name: &str) -> Result<Lock> {
    let dir = paths.locks_dir();
    crate::store::ensure_dir(&dir, 0o700)?;
    let path = dir.join(name);
    let file = lock::open(&path).context("open the lock", &path)?;
    lock::exclusive(&file).context("lock", &path)?;
    Ok(Lock { _file: file })
}

pub fn device(paths: &Paths, id: &DeviceId) -> Result<Lock> {
    take(paths, &format!("{}.lock", id))
}

pub fn registry(paths: &Paths) -> Result<Lock> {
    take(paths, "registry.lock")
}

pub fn ports(paths: &Paths) -> Result<Lock> {
    take(paths, "ports.lock")
}
