//! Shared helpers of the integration tests: a temp root holding a tiny /etc (its own
//! passwd, group, shadow, login.defs with a high private uid range), server.conf and
//! host keys, removed on drop; and a runner for the built binaries under that root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const ID1: &str = "6466b34bde54";
pub const ID2: &str = "0242ac110002";
pub const FP1: &str = "SHA256:PtMtRWVHKuGrzuX9RFxdUS3m8k7hxmSwH+iceMIwDeM";
pub const FP4: &str = "SHA256:4ZkDixyUbf+2ZWcxX4D8jYLinLyq+Jwut5Ah440pU7c";

/// The n-th public key line of the fixtures (0: ed25519 FP1, 1: rsa 2048, 2: ecdsa-256,
/// 3: ed25519 FP4, 4: rsa 1024, 5: ecdsa-521).
pub fn key(n: usize) -> String {
    include_str!("../fixtures/keys.pub")
        .lines()
        .nth(n)
        .unwrap()
        .to_string()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Root {
    pub dir: PathBuf,
    /// First uid useradd hands out in this root (no host process has it).
    pub uid_min: u32,
    _tmp: phonehome_plumbing::tempdir::TempDir,
}

impl Root {
    pub fn new() -> Root {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tmp = phonehome_plumbing::tempdir::TempDir::new("srv");
        let dir = tmp.path().to_path_buf();
        let uid_min = 61000 + n * 50;
        let w = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
        w("etc/group", "root:x:0:\nphonehome-devices:x:60999:\n");
        w("etc/shadow", "root:*:19000:0:99999:7:::\n");
        w("etc/gshadow", "root:*::\nphonehome-devices:!::\n");
        w(
            "etc/login.defs",
            &format!("UID_MIN {}\nUID_MAX {}\n", uid_min, uid_min + 49),
        );
        w(
            "etc/phonehome/server.conf",
            "server_host = ph.example.org\nadmin_user = admin\npoll_interval = 2\nlog_hosts = srv rhel9\n",
        );
        w(
            "etc/ssh/ssh_host_ed25519_key.pub",
            &format!("{} root@srv\n", key(3)),
        );
        w(
            "etc/ssh/ssh_host_ecdsa_key.pub",
            &format!("{} root@srv\n", key(2)),
        );
        Root {
            dir,
            uid_min,
            _tmp: tmp,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{}: {}", rel, e))
    }

    pub fn set_conf(&self, extra: &str) {
        let mut c = self.read("etc/phonehome/server.conf");
        c.push_str(extra);
        std::fs::write(self.path("etc/phonehome/server.conf"), c).unwrap();
    }

    pub fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(bin_path(bin));
        c.env("PHONEHOME_ROOT", &self.dir)
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, bin: &str, args: &[&str]) -> Out {
        let out = self.cmd(bin).args(args).output().unwrap();
        Out::new(format!("{} {:?}", bin, args), out)
    }

    /// add-device that must succeed.
    pub fn add(&self, id: &str, key_line: &str) -> Out {
        self.run("add-device", &[id, key_line]).ok()
    }

    /// The uid of a device's account in this root's passwd.
    pub fn uid_of(&self, id: &str) -> u32 {
        self.read("etc/passwd")
            .lines()
            .find(|l| l.starts_with(&format!("device{}:", id)))
            .and_then(|l| l.split(':').nth(2))
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("no account for {}", id))
    }

    /// Map this process's uid to the device's account (first match wins), so that the
    /// gate, run by the test, believes it runs as the device.
    pub fn impersonate(&self, id: &str) {
        let uid = unsafe_free_getuid();
        let p = self.read("etc/passwd");
        std::fs::write(
            self.path("etc/passwd"),
            format!("device{}:x:{}:0::/:/bin/sh\n{}", id, uid, p),
        )
        .unwrap();
    }

    /// The gate as sshd starts it for a device's `poll`: this root, a read timeout of
    /// `read_timeout` seconds, SSH_CONNECTION, piped stdio.
    pub fn gate_process(&self, read_timeout: u32) -> Command {
        let mut c = Command::new(bin_path("phonehome-gate"));
        c.arg("--root")
            .arg(&self.dir)
            .args(["--read-timeout", &read_timeout.to_string()])
            .env_remove("PHONEHOME_ROOT")
            .env("SSH_ORIGINAL_COMMAND", "poll")
            .env("SSH_CONNECTION", "198.51.100.2 40022 198.51.100.1 22")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Run the gate as a device would: SSH_ORIGINAL_COMMAND, SSH_CONNECTION, stdin.
    pub fn gate(&self, command: Option<&str>, stdin: &[u8]) -> Out {
        use std::io::Write;
        let mut c = self.gate_process(1);
        match command {
            Some(cmd) => c.env("SSH_ORIGINAL_COMMAND", cmd),
            None => c.env_remove("SSH_ORIGINAL_COMMAND"),
        };
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Out::new(format!("phonehome-gate {:?}", command), out)
    }
}

impl Root {
    /// A device's record in the registry.
    pub fn record(&self, id: &str) -> Option<serde_json::Value> {
        let reg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.path("var/lib/phonehome/devices.json")).ok()?,
        )
        .ok()?;
        reg["devices"]
            .as_array()?
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
    }

    /// Take device `id` out of the registry behind the tools' back (what a crash of
    /// remove-device after that step leaves).
    pub fn unregister(&self, id: &str) {
        let p = self.path("var/lib/phonehome/devices.json");
        let mut reg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        reg["devices"]
            .as_array_mut()
            .unwrap()
            .retain(|d| d["id"] != id);
        std::fs::write(p, reg.to_string()).unwrap();
    }

    /// The gate's status file of a device, parsed.
    pub fn status(&self, id: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.status_path(id)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn status_path(&self, id: &str) -> PathBuf {
        self.path(&format!("var/lib/phonehome/status/{}/status.json", id))
    }

    /// Write the heartbeat part of a device's status file (the report part kept).
    pub fn set_heartbeat(&self, id: &str, heartbeat: &str) {
        let mut st = self.status(id).unwrap_or_else(|| serde_json::json!({}));
        st["heartbeat"] = serde_json::from_str(heartbeat).unwrap();
        std::fs::write(self.status_path(id), st.to_string()).unwrap();
    }

    /// Write the report part (`{"received":..,"report":{..}}`) of a device's status
    /// file; a heartbeat at the same time is made if there is none.
    pub fn set_report(&self, id: &str, stored: &str) {
        let stored: serde_json::Value = serde_json::from_str(stored).unwrap();
        let mut st = self
            .status(id)
            .unwrap_or_else(|| serde_json::json!({"heartbeat": {"received": stored["received"]}}));
        st["report"] = stored;
        std::fs::write(self.status_path(id), st.to_string()).unwrap();
    }

    /// Write the held-session part of a device's status file (the rest kept; a
    /// heartbeat now if there is none).
    pub fn set_session(&self, id: &str, session: &str) {
        let now = phonehome_plumbing::clock::now();
        let mut st = self
            .status(id)
            .unwrap_or_else(|| serde_json::json!({"heartbeat": {"received": now}}));
        st["session"] = serde_json::from_str(session).unwrap();
        std::fs::write(self.status_path(id), st.to_string()).unwrap();
    }

    /// Remove the report part of a device's status file.
    pub fn clear_report(&self, id: &str) {
        let mut st = self.status(id).unwrap();
        st["report"] = serde_json::Value::Null;
        std::fs::write(self.status_path(id), st.to_string()).unwrap();
    }

    /// The forced command the key lines of this root carry.
    pub fn gate_command(&self) -> String {
        format!(
            "{d}/usr/local/lib/phonehome/phonehome-gate --root {d}",
            d = self.dir.display()
        )
    }
}

/// The uid of this test process.
pub fn unsafe_free_getuid() -> u32 {
    phonehome_plumbing::process::getuid()
}

pub fn bin_path(bin: &str) -> PathBuf {
    let p = match bin {
        "add-device" => env!("CARGO_BIN_EXE_add-device"),
        "remove-device" => env!("CARGO_BIN_EXE_remove-device"),
        "forward-device-port" => env!("CARGO_BIN_EXE_forward-device-port"),
        "list-devices" => env!("CARGO_BIN_EXE_list-devices"),
        "phonehome-gate" => env!("CARGO_BIN_EXE_phonehome-gate"),
        "watch-devices" => env!("CARGO_BIN_EXE_watch-devices"),
        other => panic!("unknown binary {}", other),
    };
    Path::new(p).to_path_buf()
}

/// Tests that run install-server.sh (which checks its files with `sshd -t`) or a real
/// sshd need root and /usr/sbin/sshd; without either they say so and pass.
pub fn root_and_sshd() -> bool {
    let ok = unsafe_free_getuid() == 0 && Path::new("/usr/sbin/sshd").exists();
    if !ok {
        eprintln!("SKIPPED: needs root and /usr/sbin/sshd (openssh-server)");
    }
    ok
}

/// A command started with its output piped, for a test that acts while it runs (holds
/// a lock it waits for, say); `finish` waits for it.
pub struct Started {
    what: String,
    child: std::process::Child,
}

pub fn start(what: &str, cmd: &mut Command) -> Started {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: cannot start: {}", what, e));
    Started {
        what: what.to_string(),
        child,
    }
}

impl Started {
    pub fn finish(self) -> Out {
        Out::new(self.what, self.child.wait_with_output().unwrap())
    }
}

pub struct Out {
    pub what: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn new(what: String, o: Output) -> Out {
        Out {
            what,
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn dump(&self) -> String {
        format!(
            "{}\nexit {}\n--- stdout\n{}--- stderr\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "expected success: {}", self.dump());
        self
    }

    /// A failure with exit `code` and one stderr line containing `needle`.
    pub fn fails(self, code: i32, needle: &str) -> Out {
        assert_eq!(self.code, code, "expected exit {}: {}", code, self.dump());
        assert!(
            self.stderr.contains(needle),
            "expected {:?} in stderr: {}",
            needle,
            self.dump()
        );
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            self.dump()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{}: {}", e, self.dump()))
    }
}

/// A snapshot of every file under a directory (path -> bytes), to prove nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() && !p.to_string_lossy().contains("/locks/") {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Take the registry lock of this root, as add-device and install-server.sh take it,
/// and hold it until the returned file is dropped.
pub fn hold_registry_lock(r: &Root) -> (std::fs::File, PathBuf) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = r.path("var/lib/phonehome/locks");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    let path = dir.join("registry.lock");
    let file = phonehome_plumbing::lock::open(&path).unwrap();
    phonehome_plumbing::lock::exclusive(&file).unwrap();
    (file, path)
}

/// Wait (up to 20 s) until some process waits for a flock on `path`: /proc/locks lists
/// each waiter as "N: -> FLOCK ... MAJ:MIN:INODE ...".
pub fn wait_for_a_waiter(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ino = format!(":{} ", std::fs::metadata(path).unwrap().ino());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        if locks
            .lines()
            .any(|l| l.contains(" -> FLOCK ") && l.contains(&ino))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nobody waits for {} after 20 s: {}",
            path.display(),
            locks
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
