//! Tunnel processes: each one is a long-lived ssh `-N -R ...` of its own, detached from
//! the tick that started it. Its record in the run dir (pid, the process start time from
//! /proc/<pid>/stat and the exact argv) lets a later tick recognise it, and refuse to
//! signal a process that merely reuses its pid. Its stderr goes to a log file that says
//! why it died.

use crate::files::{atomic_write, RunDir};
use crate::ssh::{self, Client, Target};
use crate::sys;
use phonehome_protocol::PortPair;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a tunnel gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Most bytes of a tunnel log read back.
const MAX_LOG_READ: u64 = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    pub local: u16,
    pub remote: u16,
    pub pid: u32,
    /// Field 22 of /proc/<pid>/stat: clock ticks after boot when the process started.
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
    let Ok(rd) = fs::read_dir(run.tunnels()) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match fs::read(&path)
            .ok()
            .and_then(|d| serde_json::from_slice::<TunnelRecord>(&d).ok())
        {
            Some(r) if path == run.tunnel_record(r.local, r.remote) => out.push(r),
            _ => {
                log::warn!("removing unreadable tunnel record {}", path.display());
                let _ = fs::remove_file(&path);
            }
        }
    }
    out.sort_by_key(|r| (r.local, r.remote));
    out
}

pub fn save_record(run: &RunDir, r: &TunnelRecord) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(r).expect("a record serialises");
    atomic_write(&run.tunnel_record(r.local, r.remote), &json, 0o600)
}

pub fn remove_record(run: &RunDir, pair: PortPair) {
    let _ = fs::remove_file(run.tunnel_record(pair.local, pair.remote));
    let _ = fs::remove_file(run.tunnel_log(pair.local, pair.remote));
}

/// (state letter, start time) from /proc/<pid>/stat.
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{}/stat", pid)).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

pub fn proc_cmdline(pid: u32) -> Option<Vec<String>> {
    let data = fs::read(format!("/proc/{}/cmdline", pid)).ok()?;
    let data = data.strip_suffix(b"\0").unwrap_or(&data);
    Some(
        data.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// True only if the recorded process is still running *and* is the one recorded: same
/// start time and same argv (a reused pid fails one or both). Zombies are dead.
pub fn is_alive(r: &TunnelRecord) -> bool {
    match proc_stat(r.pid) {
        Some((state, start)) if start == r.start_time && state != 'Z' && state != 'X' => {
            proc_cmdline(r.pid).is_some_and(|c| same_command(&c, &r.argv))
        }
        _ => false,
    }
}

/// The recorded argv, as /proc shows it: exactly, or after an interpreter when the
/// client is a script (`/bin/sh /usr/bin/ssh-wrapper ARGS`).
fn same_command(cmdline: &[String], argv: &[String]) -> bool {
    !argv.is_empty() && (cmdline == argv || cmdline.get(1..) == Some(argv))
}

/// True if the recorded process is ours and stopped (SIGSTOP): it forwards nothing.
fn is_stopped(r: &TunnelRecord) -> bool {
    is_alive(r) && matches!(proc_stat(r.pid), Some(('T', _)) | Some(('t', _)))
}

/// The error a tunnel's log ends with, classified: `forward refused: <line>`.
pub fn log_error(run: &RunDir, pair: PortPair) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(run.tunnel_log(pair.local, pair.remote)).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG_READ)))
        .ok()?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).ok()?;
    let text = String::from_utf8_lossy(&data);
    let line = ssh::telling_line(&text)?;
    Some(describe_failure(&text, &line))
}

/// One line for reports: the kind's advice when known, then the client's own words.
pub fn describe_failure(stderr: &str, line: &str) -> String {
    let kind = ssh::classify(stderr);
    let text = if kind == ssh::ErrorKind::Other {
        line.to_string()
    } else {
        format!("{} ({})", kind.advice(), line)
    };
    phonehome_protocol::truncate_text(&text, phonehome_protocol::MAX_TEXT_LEN)
}

/// Look at every recorded tunnel. With `fix`, a live dbclient stuck at a host-key prompt
/// (2022.83 spins on it forever) is killed and counted as failed.
pub fn survey(run: &RunDir, fix: bool) -> Vec<Observed> {
    load_records(run)
        .into_iter()
        .map(|record| {
            let pair = record.pair();
            let mut alive = is_alive(&record);
            let logged = log_error(run, pair);
            let mut why = None;
            let stuck = logged
                .as_deref()
                .is_some_and(|e| e.starts_with(ssh::ErrorKind::HostKey.advice()));
            if fix && alive && stuck {
                log::warn!("tunnel {} is stuck on a host key prompt: stopping it", pair);
                let _ = stop(&record);
                alive = false;
            } else if fix && is_stopped(&record) {
                log::warn!("tunnel {} was stopped (SIGSTOP): killing it", pair);
                let _ = sys::kill(record.pid, sys::SIGKILL);
                alive = false;
                why =
                    Some("the tunnel's ssh was stopped (SIGSTOP) and has been killed".to_string());
            }
            let error =
                match why {
                    Some(w) => Some(w),
                    None if alive => record.last_error.clone(),
                    None => Some(logged.unwrap_or_else(|| {
                        "the tunnel's ssh exited without an error message".into()
                    })),
                };
            Observed {
                record,
                alive,
                error,
            }
        })
        .collect()
}

/// Start the tunnel process for `pair`, detached, stderr to its log.
pub fn start(
    run: &RunDir,
    client: &Client,
    target: &Target,
    pair: PortPair,
) -> Result<TunnelRecord, String> {
    let args = client.tunnel_args(target, pair.local, pair.remote);
    let log_path = run.tunnel_log(pair.local, pair.remote);
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {}", log_path.display(), e))?;
    let mut cmd = Command::new(&client.program);
    cmd.args(&args)
        .env("HOME", run.home())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    sys::new_session(&mut cmd);
    let child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start `{}`: {}",
            ssh::render(&client.program, &args),
            e
        )
    })?;
    let pid = child.id();
    // Not waited for: it outlives this tick (init reaps it once we exit).
    drop(child);
    let start_time = proc_stat(pid).map(|(_, s)| s).unwrap_or(0);
    let mut argv = vec![client.program.to_string_lossy().into_owned()];
    argv.extend(args);
    Ok(TunnelRecord {
        local: pair.local,
        remote: pair.remote,
        pid,
        start_time,
        argv,
        started_at: crate::report::now(),
        restarts: 0,
        last_error: None,
    })
}

/// Stop a recorded tunnel: SIGTERM, then SIGKILL after `STOP_GRACE`, only after making
/// sure the pid still belongs to it. `Ok(false)` when it was already gone (or its pid
/// now belongs to someone else, who is left alone).
pub fn stop(r: &TunnelRecord) -> Result<bool, String> {
    if !is_alive(r) {
        return Ok(false);
    }
    sys::kill(r.pid, sys::SIGTERM)
        .map_err(|e| format!("cannot stop tunnel pid {}: {}", r.pid, e))?;
    if wait_gone(r, STOP_GRACE) {
        return Ok(true);
    }
    if is_alive(r) {
        let _ = sys::kill(r.pid, sys::SIGKILL);
    }
    if wait_gone(r, Duration::from_secs(2)) {
        Ok(true)
    } else {
        Err(format!("tunnel pid {} did not exit after SIGKILL", r.pid))
    }
}

fn wait_gone(r: &TunnelRecord, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if !is_alive(r) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    !is_alive(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_recognised_by_start_time_and_argv() {
        let me = std::process::id();
        let (state, start) = proc_stat(me).unwrap();
        assert_ne!(state, 'Z');
        let argv = proc_cmdline(me).unwrap();
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
        assert!(is_alive(&r));
        assert!(!is_alive(&TunnelRecord {
            start_time: start + 1,
            ..r.clone()
        }));
        assert!(!is_alive(&TunnelRecord {
            argv: vec!["dbclient".into()],
            ..r.clone()
        }));
        // Refuses to signal a process that is not the recorded one.
        assert_eq!(
            stop(&TunnelRecord {
                start_time: start + 1,
                ..r
            }),
            Ok(false)
        );
    }
}
