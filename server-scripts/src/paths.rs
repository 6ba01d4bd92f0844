//! Where everything lives, under one root prefix (`--root DIR`, else `PHONEHOME_ROOT`,
//! else `/`). The table is in docs/ARCHITECTURE.md "Server"; this is its only copy in code.

use crate::error::{Error, Result};
use phonehome_protocol::DeviceId;
use std::path::{Path, PathBuf};

/// The environment variable that moves every server path under a prefix.
pub const ROOT_ENV: &str = "PHONEHOME_ROOT";

#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// `--root` if given, else `PHONEHOME_ROOT`, else `/`. Made absolute: the root ends
    /// up in sshd's configuration and in the key files' `command="..."`.
    pub fn resolve(flag: Option<&str>) -> Result<Paths> {
        let env = std::env::var(ROOT_ENV).ok().filter(|s| !s.is_empty());
        let raw = flag
            .map(str::to_string)
            .or(env)
            .unwrap_or_else(|| "/".into());
        Paths::new(Path::new(&raw))
    }

    pub fn new(root: &Path) -> Result<Paths> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| {
                    Error::new(format!("cannot resolve the root {}: {}", root.display(), e))
                })?
                .join(root)
        };
        let text = root.to_str().unwrap_or("");
        if text.is_empty()
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
        {
            return Err(Error::usage(format!(
                "invalid root {}: use a path of letters, digits and / . _ - + only",
                phonehome_plumbing::text::quoted(&root.to_string_lossy(), 80)
            )));
        }
        Ok(Paths { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the root is `/`: the tools act on the live system (sshd, journald).
    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `rel` (written without a leading slash) under the root.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn conf(&self) -> PathBuf {
        self.join("etc/phonehome/server.conf")
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.join("etc/phonehome/authorized_keys")
    }
    pub fn key_file(&self, id: &DeviceId) -> PathBuf {
        self.keys_dir().join(id.account())
    }
    pub fn state(&self) -> PathBuf {
        self.join("var/lib/phonehome")
    }
    /// The registry: every device's record (`registry.rs`).
    pub fn registry(&self) -> PathBuf {
        self.state().join("devices.json")
    }
    pub fn revoked(&self) -> PathBuf {
        self.state().join("revoked")
    }
    pub fn requests_dir(&self) -> PathBuf {
        self.state().join("requests")
    }
    pub fn requests(&self, id: &DeviceId) -> PathBuf {
        self.requests_dir().join(format!("{}.json", id))
    }
    pub fn status_dir(&self) -> PathBuf {
        self.state().join("status")
    }
    pub fn status(&self, id: &DeviceId) -> PathBuf {
        self.status_dir().join(id.as_str())
    }
    /// What the gate records of a device's polls (`gate_status.rs`).
    pub fn status_file(&self, id: &DeviceId) -> PathBuf {
        self.status(id).join("status.json")
    }
    /// Root-only state that can be rebuilt at any time (list-devices' log cursors).
    pub fn cache(&self) -> PathBuf {
        self.join("var/cache/phonehome")
    }
    /// watch-devices' own state: last known device states, outboxes (root 0700).
    pub fn watch_dir(&self) -> PathBuf {
        self.state().join("watch")
    }
    /// Slot files of held sessions (`<n>`, root 0644): a gate holds one locked for the
    /// time it holds a session, so there are never more held sessions than slots.
    pub fn hold_dir(&self) -> PathBuf {
        self.state().join("hold")
    }
    pub fn hold_slot(&self, n: u64) -> PathBuf {
        self.hold_dir().join(n.to_string())
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.state().join("locks")
    }
    pub fn passwd(&self) -> PathBuf {
        self.join("etc/passwd")
    }
    pub fn group(&self) -> PathBuf {
        self.join("etc/group")
    }
    pub fn ssh_dir(&self) -> PathBuf {
        self.join("etc/ssh")
    }
    pub fn dropin(&self) -> PathBuf {
        self.join("etc/ssh/sshd_config.d/phonehome.conf")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.join("var/log")
    }
}

/// A path safe to put unquoted in sshd_config and inside `command="..."`.
pub fn is_safe_path(s: &str) -> bool {
    s.starts_with('/')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
}

/// The device ids named by the `<id>.json` files of `dir`, in no particular order; other
/// names are ignored and a missing directory is empty. `what` names the store in errors.
pub fn ids_in(dir: &Path, what: &'static str) -> Result<Vec<DeviceId>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(what, dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(what, dir, e))?;
        let name = entry.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| DeviceId::parse(n).ok())
        {
            ids.push(id);
        }
    }
    Ok(ids)
}
