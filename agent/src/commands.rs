//! The small commands: `id`, `status` and `stop`.

use crate::config::Settings;
use crate::device_id;
use crate::failure::Failure;
use crate::last_poll::LastPoll;
use crate::report;
use crate::rundir::RunDir;
use crate::tunnels;
use phonehome_plumbing::clock::{format_utc, now};
use phonehome_protocol::{TunnelState, TunnelStatus};
use serde::Serialize;

pub fn id(settings: &Settings) -> Result<(), Failure> {
    println!("{}", device_id::of(settings)?);
    Ok(())
}

/// A tunnel as the status report describes it, plus the local pid.
#[derive(Serialize)]
struct TunnelView {
    pid: u32,
    #[serde(flatten)]
    status: TunnelStatus,
}

#[derive(Serialize)]
struct StatusView {
    last_poll: Option<LastPoll>,
    tunnels: Vec<TunnelView>,
}

pub fn status(settings: &Settings, json: bool) -> Result<(), Failure> {
    let run = RunDir::new(&settings.run_dir);
    let view = StatusView {
        last_poll: LastPoll::load(&run),
        tunnels: tunnels::inspect(&run)
            .into_iter()
            .map(|o| TunnelView {
                pid: o.record.pid,
                status: report::tunnel_status(&o),
            })
            .collect(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).expect("serialises")
        );
        return Ok(());
    }
    let t = now() as u64;
    match &view.last_poll {
        None => println!("last poll: none yet (run dir {})", run.root.display()),
        Some(p) => {
            let ago = t.saturating_sub(p.time);
            println!(
                "last poll: {} at {} ({} s ago){}",
                if p.ok { "ok" } else { "FAILED" },
                format_utc(p.time as i64),
                ago,
                p.client
                    .as_deref()
                    .map(|c| format!(", client {}", c))
                    .unwrap_or_default()
            );
            if let Some(e) = &p.error {
                println!("  error: {}", e);
            }
            if let Some(secs) = p.held_secs {
                println!(
                    "  held the session {} s ({} frame(s)){}",
                    secs,
                    p.frames,
                    p.held_end
                        .as_deref()
                        .map(|e| format!(": {}", e))
                        .unwrap_or_default()
                );
            }
            if p.ok {
                println!(
                    "  requests: {}",
                    if p.requests.is_empty() {
                        "none".to_string()
                    } else {
                        p.requests.join(" ")
                    }
                );
            }
            for e in &p.inbox_errors {
                println!("  refused {}", e);
            }
        }
    }
    if view.tunnels.is_empty() {
        println!("tunnels: none");
    }
    for TunnelView { pid, status: v } in &view.tunnels {
        let state = match v.state {
            TunnelState::Running => format!("running (pid {})", pid),
            TunnelState::Failed => "failed".to_string(),
        };
        println!(
            "tunnel {}:{} {} since {}, {} restart(s)",
            v.local,
            v.remote,
            state,
            format_utc(v.since.unwrap_or(0) as i64),
            v.restarts
        );
        if let Some(e) = &v.last_error {
            println!("  last error: {}", e);
        }
    }
    Ok(())
}

/// Stop every tunnel (package removal, shutdown). Asks a held session to end and waits
/// for a running poll to finish, so that it cannot start a tunnel behind our back.
pub fn stop(settings: &Settings) -> Result<(), Failure> {
    let run = RunDir::new(&settings.run_dir);
    if !run.root.exists() {
        println!("no tunnels (no run dir {})", run.root.display());
        return Ok(());
    }
    let _lock = run.lock()?;
    let mut errors = Vec::new();
    let mut stopped = 0;
    for rec in tunnels::load_records(&run) {
        match tunnels::stop(&rec) {
            Ok(was_running) => {
                stopped += usize::from(was_running);
                tunnels::remove_record(&run, rec.pair());
            }
            Err(e) => errors.push(format!("tunnel {}: {}", rec.pair(), e)),
        }
    }
    log::info!("stopped {} tunnel(s)", stopped);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(errors.join("; ")))
    }
}
