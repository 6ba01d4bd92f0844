//! Private temp directories for tests (unit and integration, both sides): created
//! 0700 under the system temp dir with a unique name, removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/phonehome-TAG-PID-N`.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "phonehome-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        crate::files::ensure_dir(&p, 0o700)
            .unwrap_or_else(|e| panic!("cannot create {}: {}", p.display(), e));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    /// A process the test just stopped may still be on its way out and make a file
    /// (a state file written on SIGTERM, say) while the tree is being removed, which
    /// then fails with "Directory not empty": try again for a while, and say so if
    /// the directory is still there (`install.sh test` fails on what the tests leave).
    fn drop(&mut self) {
        let mut last = None;
        for _ in 0..REMOVE_TRIES {
            match std::fs::remove_dir_all(&self.0) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(REMOVE_PAUSE);
        }
        if let Some(e) = last {
            eprintln!("warning: cannot remove {}: {}", self.0.display(), e);
        }
    }
}

const REMOVE_TRIES: u32 = 20;
const REMOVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
