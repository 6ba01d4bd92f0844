//! Tunnel processes: each one is a long-lived ssh `-N -R ...` of its own, detached from
//! the tick that started it. Its record in the run dir (pid, the process start time
//! and the exact argv) lets a later tick recognise it and refuse to signal a process
//! that merely reuses its pid; signals go through a pidfd opened on the checked
//! process. Its stderr goes to a log file that says why it died.
//!
//! Starting is safe against the agent being killed half way: the record is written
//! first with no pid ("starting"), then the process is spawned, then the record is
//! completed. A later tick that finds a record still "starting" looks for the process
//! by its exact argv and `HOME` (the run dir's own) and adopts it, so a tunnel can
//! never hold its port unrecorded.

use crate::client::{Client, Target};
use crate::rundir::RunDir;
use crate::ssh::{self, Spawned};
use crate::ssh_error::{ErrorKind, SshError};
use phonehome_plumbing::process::{self, Handle, SIGKILL, SIGTERM};
use phonehome_plumbing::{clock, files};
use phonehome_protocol::PortPair;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

/// How long a tunnel gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Most bytes of a tunnel log read back.
const MAX_LOG_READ: u64 = 16 * 1024;
/// Largest tunnel record read.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    pub local: u16,
    pub remote: u16,
    /// 0 while the process is being started (see the module comment).
    pub pid: u32,
    /// Clock ticks after boot when the process started (/proc/<pid>/stat field 22).
    pub start_time: u64,
    /// The full argv, program first, as /proc/<pid>/cmdline shows it.
    pub argv: Vec<String>,
    /// Unix time the process was started.
    pub started_at: u64,
    pub restarts: u32,
    /// Why the previous process of this tunnel died.
    pub last_error: Option<String>,
}

impl TunnelRecord {
    pub fn pair(&self) -> PortPair {
        PortPair {
            local: self.local,
            remote: self.remote,
        }
    }
}

/// A tunnel as found at the start of a tick.
#[derive(Debug, Clone)]
pub struct Observed {
    pub record: TunnelRecord,
    pub alive: bool,
    /// For a dead tunnel: why it died (its log), else the error it last died of.
    pub error: Option<String>,
}

/// Every tunnel record of the run dir. Unreadable records are removed (with a warning):
/// without a trustworthy record nothing may be signalled anyway.
pub fn load_records(run: &RunDir) -> Vec<TunnelRecord> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(run.tunnels()) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match files::read_bounded(&path, MAX_RECORD_BYTES)
            .ok()
            .flatten()
            .and_then(|d| serde_json::from_slice::<TunnelRecord>(&d).ok())
        {
            Some(r) if path == run.tunnel_record(r.local, r.remote) => insert_sorted(&mut out, r),
            _ => {
                log::warn!("removing unreadable tunnel record {}", path.display());
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}

/// Records in port order, each put in its place as it is read (after its equals, as a
/// stable sort would): a handful of them, and no sort algorithm in the router build
/// (`slice::sort` was 4 KB of code per type).
fn insert_sorted(out: &mut Vec<TunnelRecord>, r: TunnelRecord) {
    let at = out.partition_point(|o| (o.local, o.remote) <= (r.local, r.remote));
    out.insert(at, r);
}

/// Written without fsync: the run dir is a tmpfs, emptied at boot with the processes.
pub fn save_record(run: &RunDir, r: &TunnelRecord) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(r).expect("a record serialises");
    files::write(&run.tunnel_record(r.local, r.remote), &json, 0o600, false)
}

pub fn remove_record(run: &RunDir, pair: PortPair) {
    let _ = files::remove_if_present(&run.tunnel_record(pair.local, pair.remote));
    let _ = files::remove_if_present(&run.tunnel_log(pair.local, pair.remote));
}

/// The recorded argv, as /proc shows it: exactly, or after an interpreter when the
/// client is a script (`/bin/sh /usr/bin/ssh-wrapper ARGS`).
fn same_command(cmdline: &[String], argv: &[String]) -> bool {
    !argv.is_empty() && (cmdline == argv || cmdline.get(1..) == Some(argv))
}

/// A handle on the recorded process, if it is still running *and* is the one
/// recorded: same start time and same argv (a reused pid fails one or both). The
/// check is made after the handle is open, so the handle names what was checked.
pub fn handle(r: &TunnelRecord) -> Option<Handle> {
    if r.pid == 0 {
        return None;
    }
    let h = Handle::open(r.pid).ok()?;
    let st = process::stat(r.pid)?;
    let ours = st.start_time == r.start_time
        && !st.is_dead()
        && process::cmdline(r.pid).is_some_and(|c| same_command(&c, &r.argv));
    ours.then_some(h)
}

/// A running process with exactly this argv whose `HOME` is `home`: the tunnel of a
/// tick killed between spawning it and recording it.
fn find_orphan(argv: &[String], home: &str) -> Option<(u32, u64)> {
    process::all_pids().into_iter().find_map(|pid| {
        let cmd = process::cmdline(pid)?;
        if !same_command(&cmd, argv) || process::environ_var(pid, "HOME")? != home {
            return None;
        }
        let st = process::stat(pid).filter(|s| !s.is_dead())?;
        Some((pid, st.start_time))
    })
}

/// The error a tunnel's log ends with, as data.
fn log_error(run: &RunDir, pair: PortPair) -> Option<SshError> {
    let mut f = File::open(run.tunnel_log(pair.local, pair.remote)).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG_READ)))
        .ok()?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).ok()?;
    let text = String::from_utf8_lossy(&data);
    (!text.trim().is_empty()).then(|| SshError::from_stderr(&text))
}

/// Why the tunnel of `pair` died, from its log, as one line.
pub fn death_reason(run: &RunDir, pair: PortPair) -> String {
    log_error(run, pair).map_or_else(
        || "the tunnel's ssh exited without an error message".into(),
        |e| e.to_string(),
    )
}

/// Handles on every recorded tunnel that is running (the ones a held session watches,
/// to report at once the one that dies).
pub fn running(run: &RunDir) -> Vec<(PortPair, Handle)> {
    load_records(run)
        .into_iter()
        .filter_map(|r| handle(&r).map(|h| (r.pair(), h)))
        .collect()
}

fn observe(run: &RunDir, record: TunnelRecord, alive: bool) -> Observed {
    let error = if alive {
        record.last_error.clone()
    } else if record.pid == 0 {
        Some("the agent was stopped while starting this tunnel".into())
    } else {
        Some(death_reason(run, record.pair()))
    };
    Observed {
        record,
        alive,
        error,
    }
}

/// Look at every recorded tunnel without changing anything (`status`).
pub fn inspect(run: &RunDir) -> Vec<Observed> {
    let home = run.home().to_string_lossy().into_owned();
    load_records(run)
        .into_iter()
        .map(|r| {
            let alive =
                handle(&r).is_some() || (r.pid == 0 && find_orphan(&r.argv, &home).is_some());
            observe(run, r, alive)
        })
        .collect()
}

/// Look at every recorded tunnel and repair what a tick must (`poll`): adopt the
/// process of a record left "starting", kill a dbclient stuck at a host-key prompt
/// (2022.83 spins on it forever) or stopped with SIGSTOP (it forwards nothing).
pub fn repair(run: &RunDir) -> Vec<Observed> {
    let home = run.home().to_string_lossy().into_owned();
    load_records(run)
        .into_iter()
        .map(|mut record| {
            if record.pid == 0 {
                if let Some((pid, start_time)) = find_orphan(&record.argv, &home) {
                    log::warn!(
                        "tunnel {}: adopting pid {}, started by an interrupted tick",
                        record.pair(),
                        pid
                    );
                    record.pid = pid;
                    record.start_time = start_time;
                    if let Err(e) = save_record(run, &record) {
                        log::warn!("tunnel {}: cannot save its record: {}", record.pair(), e);
                    }
                }
            }
            let Some(h) = handle(&record) else {
                return observe(run, record, false);
            };
            let stuck = log_error(run, record.pair()).is_some_and(|e| e.kind == ErrorKind::HostKey);
            let stopped = process::stat(record.pid).is_some_and(|s| s.is_stopped());
            if stuck {
                log::warn!(
                    "tunnel {} is stuck on a host key prompt: stopping it",
                    record.pair()
                );
                let _ = stop_handle(&h);
                return observe(run, record, false);
            }
            if stopped {
                log::warn!("tunnel {} was stopped (SIGSTOP): killing it", record.pair());
                let _ = h.signal(SIGKILL);
                let mut o = observe(run, record, false);
                o.error = Some("the tunnel's ssh was stopped (SIGSTOP) and has been killed".into());
                return o;
            }
            observe(run, record, true)
        })
        .collect()
}

/// Start the tunnel process for `pair`, after recording that it is being started.
/// `previous`: the tunnel it replaces, whose restart count and last error carry over.
pub fn start(
    run: &RunDir,
    client: &Client,
    target: &Target,
    pair: PortPair,
    previous: Option<&Observed>,
) -> Result<TunnelRecord, String> {
    let mut record = TunnelRecord {
        local: pair.local,
        remote: pair.remote,
        pid: 0,
        start_time: 0,
        argv: client.tunnel_argv(target, pair),
        started_at: clock::now() as u64,
        restarts: previous.map_or(0, |o| o.record.restarts + u32::from(!o.alive)),
        last_error: previous.and_then(|o| o.error.clone()),
    };
    save_record(run, &record).map_err(|e| format!("cannot save its record: {}", e))?;
    let log_path = run.tunnel_log(pair.local, pair.remote);
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {}", log_path.display(), e))?;
    let Spawned {
        pid,
        start_time,
        argv,
    } = ssh::spawn_tunnel(client, target, &run.home(), pair, log).inspect_err(|_| {
        // Nothing was started: nothing to remember.
        remove_record(run, pair);
    })?;
    record.pid = pid;
    record.start_time = start_time;
    record.argv = argv;
    save_record(run, &record).map_err(|e| format!("cannot save its record: {}", e))?;
    Ok(record)
}

/// Stop a recorded tunnel: SIGTERM, then SIGKILL after `STOP_GRACE`, only if it is
/// the recorded process. `Ok(false)` when it was already gone (or its pid now belongs
/// to someone else, who is left alone).
pub fn stop(r: &TunnelRecord) -> Result<bool, String> {
    match handle(r) {
        None => Ok(false),
        Some(h) => stop_handle(&h).map(|()| true),
    }
}

fn stop_handle(h: &Handle) -> Result<(), String> {
    match h.signal(SIGTERM) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot stop tunnel pid {}: {}", h.pid(), e)),
        Ok(()) => {}
    }
    if h.wait_exit(STOP_GRACE) {
        return Ok(());
    }
    let _ = h.signal(SIGKILL);
    if h.wait_exit(Duration::from_secs(2)) {
        Ok(())
    } else {
        Err(format!("tunnel pid {} did not exit after SIGKILL", h.pid()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_recognised_by_start_time_and_argv() {
        let me = std::process::id();
        let start = process::stat(me).unwrap().start_time;
        let argv = process::cmdline(me).unwrap();
        let r = TunnelRecord {
            local: 1,
            remote: 2,
            pid: me,
            start_time: start,
            argv: argv.clone(),
            started_at: 0,
            restarts: 0,
            last_error: None,
        };
        assert!(handle(&r).is_some());
        assert!(handle(&TunnelRecord {
            start_time: start + 1,
            ..r.clone()
        })
        .is_none());
        assert!(handle(&TunnelRecord {
            argv: vec!["dbclient".into()],
            ..r.clone()
        })
        .is_none());
        assert!(handle(&TunnelRecord {
            pid: 0,
            ..r.clone()
        })
        .is_none());
        // Refuses to signal a process that is not the recorded one.
        assert_eq!(
            stop(&TunnelRecord {
                start_time: start + 1,
                ..r
            }),
            Ok(false)
        );
    }

    #[test]
    fn records_load_in_port_order() {
        let dir = phonehome_plumbing::tempdir::TempDir::new("records");
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.tunnels()).unwrap();
        for (local, remote) in [(80, 9), (22, 9876), (443, 1), (22, 2222), (8080, 8080)] {
            let r = TunnelRecord {
                local,
                remote,
                pid: 0,
                start_time: 0,
                argv: vec![],
                started_at: 0,
                restarts: 0,
                last_error: None,
            };
            save_record(&run, &r).unwrap();
        }
        let pairs: Vec<(u16, u16)> = load_records(&run)
            .iter()
            .map(|r| (r.local, r.remote))
            .collect();
        assert_eq!(
            pairs,
            [(22, 2222), (22, 9876), (80, 9), (443, 1), (8080, 8080)]
        );
    }

    #[test]
    fn orphans_are_found_by_argv_and_home() {
        let home = phonehome_plumbing::tempdir::TempDir::new("orphan");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("HOME", home.path())
            .spawn()
            .unwrap();
        // Until the child has exec'd, /proc shows the test binary's argv.
        let argv = (0..500)
            .find_map(|_| {
                let c = process::cmdline(child.id())
                    .filter(|c| c.first().is_some_and(|a| a == "sleep"));
                if c.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                c
            })
            .unwrap();
        let h = home.path().to_string_lossy().into_owned();
        assert_eq!(find_orphan(&argv, &h).map(|f| f.0), Some(child.id()));
        assert_eq!(find_orphan(&argv, "/elsewhere"), None);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(find_orphan(&argv, &h), None);
    }
}
