//! Helpers shared by the agent's integration tests: temp dirs, running the built binary,
//! a fake ssh client on PATH that records its argv and stdin and plays scripted answers,
//! and process checks.
#![allow(dead_code)]

pub use phonehome_plumbing::tempdir::TempDir;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_phonehome");
/// A real ed25519 public key, used as the pinned host key with the fake client.
pub const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPepv9pZfZuENxTlzREuAc0gKIGOohaJfmKJFDgf2KiK";
pub const DEVICE: &str = "6466b34bde54";

pub fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The fake client: `bin/dbclient` (answers `-V` as dropbear 2022.83) in a temp dir,
/// and the same script as `ssh-bin/ssh` (answers `-V` as OpenSSH 9.2) for tests that
/// put only OpenSSH on PATH.
/// Polls record `polls/<pid>.argv` (one arg per line, renamed into place whole, so a
/// test never reads half of it) and `.stdin` (the report line, as the gate reads it),
/// then act on the file `poll-mode` (ok | slow | hang | hostkey | fail, with
/// `poll-stderr` | nogate: exit 0 with no answer, as a client that gave up at a
/// password prompt | raw: the inbox without the gate's framing | oldgate: a gate of
/// protocol 2, which reads stdin to its end | hold: grant `hold-secs` (10), then send
/// `hold-extra` as it is, a frame each time `inbox` changes, and keep the lines the
/// agent sends in `.outcomes`, until stdin ends, the file `hold-over` appears or the
/// time is up) and print `inbox`
/// framed as the gate frames it.
/// Tunnels (`-N`) record `tunnels/<pid>.argv` and act on `tunnel-mode` (up | fail |
/// hostkey); an `up` tunnel stays until SIGTERM.
pub struct Fake {
    pub dir: TempDir,
}

const FAKE: &str = r#"#!/bin/sh
D='@DIR@'
PATH=/usr/bin:/bin
if [ "$1" = -V ]; then
  case "${0##*/}" in
    ssh) echo 'OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024' >&2;;
    *) echo 'Dropbear v2022.83' >&2;;
  esac
  exit 0
fi
tunnel=
for a in "$@"; do [ "$a" = -N ] && tunnel=1; done
if [ -n "$tunnel" ]; then
  # The mode is read before the argv is recorded, so a test that changes the mode
  # after seeing a tunnel's argv never changes that tunnel's mode.
  mode=$(cat "$D/tunnel-mode" 2>/dev/null)
  printf '%s\n' "$@" > "$D/tunnels/.$$.tmp" && mv "$D/tunnels/.$$.tmp" "$D/tunnels/$$.argv"
  case "$mode" in
    fail) echo "Error: remote port forwarding failed for listen port 9876" >&2; exit 1;;
    hostkey) printf "\nHost '127.0.0.1' is not in the trusted hosts file.\nDo you want to continue connecting? (y/n) " >&2;;
  esac
  trap 'kill $! 2>/dev/null; exit 0' TERM
  while :; do sleep 1 & wait $!; done
fi
printf '%s\n' "$@" > "$D/polls/.$$.tmp" && mv "$D/polls/.$$.tmp" "$D/polls/$$.argv"
mode=$(cat "$D/poll-mode" 2>/dev/null)
if [ "$mode" = oldgate ]; then
  cat > "$D/polls/$$.stdin"
  echo 'phonehome-inbox 2'; cat "$D/inbox" 2>/dev/null; echo end
  exit 0
fi
IFS= read -r line; printf '%s\n' "$line" > "$D/polls/$$.stdin"
case "$mode" in
  hold)
    secs=$(cat "$D/hold-secs" 2>/dev/null || echo 10)
    last=$(cat "$D/inbox" 2>/dev/null)
    echo "phonehome-inbox @VERSION@ hold=$secs"; [ -n "$last" ] && printf '%s\n' "$last"; echo end
    cat "$D/hold-extra" 2>/dev/null
    # (an asynchronous list reads /dev/null unless given another descriptor)
    exec 3<&0
    ( while IFS= read -r l; do printf '%s\n' "$l" >> "$D/polls/$$.outcomes"; done
      touch "$D/polls/$$.eof" ) <&3 >/dev/null 2>&1 &
    exec 3<&-
    end=$(( $(date +%s) + secs ))
    while [ ! -e "$D/polls/$$.eof" ] && [ ! -e "$D/hold-over" ] && [ "$(date +%s)" -lt "$end" ]; do
      now=$(cat "$D/inbox" 2>/dev/null)
      if [ "$now" != "$last" ]; then
        last=$now; echo 'phonehome-inbox @VERSION@'; [ -n "$now" ] && printf '%s\n' "$now"; echo end
      fi
      sleep 0.05
    done
    exit 0;;
  slow) sleep 3;;
  hang) exec sleep 1000;;
  hostkey) printf "\nHost '127.0.0.1' is not in the trusted hosts file.\nDo you want to continue connecting? (y/n) " >&2; exec sleep 1000;;
  fail) cat "$D/poll-stderr" >&2; exit 255;;
  nogate) exit 0;;
  raw) cat "$D/inbox" 2>/dev/null; exit 0;;
esac
echo 'phonehome-inbox @VERSION@'
cat "$D/inbox" 2>/dev/null
echo end
exit 0
"#;

impl Fake {
    pub fn new(tag: &str) -> Fake {
        let dir = TempDir::new(tag);
        for d in ["bin", "ssh-bin", "polls", "tunnels", "run"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let script = FAKE.replace("@DIR@", dir.path().to_str().unwrap()).replace(
            "@VERSION@",
            &phonehome_protocol::PROTOCOL_VERSION.to_string(),
        );
        write_exec(&dir.join("bin/dbclient"), &script);
        write_exec(&dir.join("ssh-bin/ssh"), &script);
        fs::write(dir.join("id_dropbear"), "not a real key\n").unwrap();
        fs::write(dir.join("empty.conf"), "").unwrap();
        Fake { dir }
    }

    pub fn set(&self, name: &str, text: &str) {
        fs::write(self.dir.join(name), text).unwrap();
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// `phonehome` with the fake on PATH and every option pointing into the temp dir.
    pub fn cmd(&self, command: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env(
            "PATH",
            format!("{}:/usr/bin:/bin", self.dir.join("bin").display()),
        )
        .arg(command)
        .args(["--config", self.dir.join("empty.conf").to_str().unwrap()])
        .args(["--server", "127.0.0.1", "--port", "2222"])
        .args(["--device-id", DEVICE])
        .args(["--key", self.dir.join("id_dropbear").to_str().unwrap()])
        .args(["--host-key", HOST_KEY])
        .args(["--client", "dbclient", "--log", "stderr"])
        .args(["--run-dir", self.run_dir().to_str().unwrap()])
        .stdin(Stdio::null());
        c
    }

    pub fn poll(&self) -> Output {
        run(self.cmd("poll"))
    }

    /// Files in `polls/` or `tunnels/` with this extension, oldest first.
    pub fn records(&self, sub: &str, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(self.dir.join(sub))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(ext))
            .map(|p| (fs::metadata(&p).unwrap().modified().unwrap(), p))
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    pub fn poll_argvs(&self) -> Vec<Vec<String>> {
        self.records("polls", "argv")
            .iter()
            .map(|p| lines(p))
            .collect()
    }

    pub fn tunnel_argvs(&self) -> Vec<Vec<String>> {
        self.records("tunnels", "argv")
            .iter()
            .map(|p| lines(p))
            .collect()
    }

    /// The status reports the fake server received, oldest first.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.records("polls", "stdin")
            .iter()
            .map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Pids of the fake tunnel processes started so far.
    pub fn tunnel_pids(&self) -> Vec<u32> {
        self.records("tunnels", "argv")
            .iter()
            .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
            .collect()
    }

    pub fn status_json(&self) -> serde_json::Value {
        let mut c = self.cmd("status");
        c.arg("--json");
        let out = run(c);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // Never leave a tunnel behind, even when a test fails.
        let _ = self
            .cmd("stop")
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status();
        for pid in self.tunnel_pids() {
            if alive(pid) && cmdline(pid).contains(self.dir.path().to_str().unwrap()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

pub fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

pub fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "ran {:?}: {}\n--- stdout\n{}--- stderr\n{}---",
        c,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{}/stat", pid)) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{}/cmdline", pid))
        .map(|d| String::from_utf8_lossy(&d).replace('\0', " "))
        .unwrap_or_default()
}

/// Wait until `f` holds, up to `limit`.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}
