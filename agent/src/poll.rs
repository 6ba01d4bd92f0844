//! One cron tick: lock (asking a held session of the previous tick to end), jitter, one
//! login that sends the status report and reads the gate's answer, then reconcile the
//! tunnels with it; when the gate holds the session, keep reconciling on each frame
//! until the next tick (`hold.rs`). Every failure is logged, kept in `last-poll.json`
//! and sent with the next report.

use crate::client::{Client, Target};
use crate::config::Settings;
use crate::device_id;
use crate::failure::Failure;
use crate::hold::{self, FirstError};
use crate::identity::{self, Identity, IdentityError};
use crate::known_hosts;
use crate::last_poll::LastPoll;
use crate::reconcile::{self, Action, Current};
use crate::report::{self, HostInfo};
use crate::rundir::{Locked, RunDir};
use crate::ssh;
use crate::tunnels::{self, Observed};
use phonehome_plumbing::{clock, files};
use phonehome_protocol::sshkey::PublicKey;
use phonehome_protocol::{
    AnswerError, DeviceId, Inbox, Outcome as TunnelOutcome, OutcomeState, PortPair,
};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

pub enum Outcome {
    Polled,
    /// Another tick holds the lock.
    Overlapped,
}

/// Everything a login needs, derived from validated settings.
pub struct Login {
    pub run: RunDir,
    pub device: DeviceId,
    /// `target.key` is the identity's key (empty when there is none: then no login).
    pub target: Target,
    pub keys: Vec<PublicKey>,
    /// The client and key that go together; an error is a failed poll, kept for `status`.
    pub identity: Result<Identity, IdentityError>,
}

impl Login {
    pub fn new(settings: &Settings) -> Result<Login, Failure> {
        let host = settings.server().map_err(Failure::Config)?.to_string();
        let device = device_id::of(settings)?;
        let keys = known_hosts::pinned(
            &settings.host_keys,
            &settings.known_hosts,
            &host,
            settings.port,
        )?;
        let run = RunDir::new(&settings.run_dir);
        let path_env = std::env::var("PATH").ok();
        let identity = identity::choose(
            settings.client,
            settings.key.as_deref(),
            &settings.key_dir,
            path_env.as_deref(),
        );
        let target = Target {
            account: settings.account.clone().unwrap_or_else(|| device.account()),
            host,
            port: settings.port,
            key: identity.as_ref().map(|i| i.key.clone()).unwrap_or_default(),
            keepalive: settings.keepalive,
            connect_timeout: settings.timeout,
            known_hosts: run.openssh_known_hosts(),
        };
        Ok(Login {
            run,
            device,
            target,
            keys,
            identity,
        })
    }
}

/// What one successful login brought back.
struct Exchange {
    client: Client,
    inbox: Inbox,
    observed: Vec<Observed>,
    /// The protocol of the gate's answer.
    version: u32,
    /// The session, when the gate holds it, and the seconds it granted.
    held: Option<(crate::ssh::PollSession, u64)>,
}

pub fn poll(settings: &Settings) -> Result<Outcome, Failure> {
    let tick = Instant::now();
    let login = Login::new(settings)?;
    let lock = match login.run.lock_for_tick()? {
        Locked::Yes(f) => f,
        Locked::Busy => {
            log::debug!(
                "another poll is running (lock {} held): skipping this tick",
                login.run.lock_path().display()
            );
            return Ok(Outcome::Overlapped);
        }
    };
    let delay = jitter(&login.device, settings.jitter);
    if delay > 0 {
        log::debug!("waiting {} s (jitter)", delay);
        std::thread::sleep(Duration::from_secs(delay));
    }
    let started = Instant::now();
    let previous = LastPoll::load(&login.run);
    let offer = hold::offer(settings, previous.as_ref(), tick);
    let mut client_text = None;
    let result = exchange(settings, &login, previous.as_ref(), offer, &mut client_text);
    let mut record = LastPoll {
        time: clock::now() as u64,
        client: client_text,
        ..LastPoll::default()
    };
    let outcome = match result {
        Err(e) => {
            record.error = Some(e.clone());
            // Refused lines not yet known to be delivered: send them again next time.
            record.inbox_errors = previous
                .as_ref()
                .map(|p| p.inbox_errors.clone())
                .unwrap_or_default();
            record.gate_protocol = previous.and_then(|p| p.gate_protocol);
            Err(Failure::Failed(e))
        }
        Ok(ex) => answered(&login, &lock, ex, &mut record, started),
    };
    record.duration_ms = started.elapsed().as_millis() as u64;
    record.save(&login.run).map_err(Failure::Failed)?;
    outcome
}

/// The gate answered: reconcile, and keep doing so while it holds the session.
fn answered(
    login: &Login,
    lock: &File,
    ex: Exchange,
    record: &mut LastPoll,
    started: Instant,
) -> Result<Outcome, Failure> {
    record.gate_protocol = Some(ex.version);
    take_inbox(record, &ex.inbox);
    let first = apply(login, &ex.client, &ex.inbox.requests, &ex.observed);
    record.ok = true;
    let mut errors = first.errors;
    if let Some((session, granted)) = ex.held {
        record.error = errors.first().cloned();
        record.duration_ms = started.elapsed().as_millis() as u64;
        // Seen by `status` while the session lasts.
        let _ = record.save(&login.run);
        let mut on_frame = |inbox: &Inbox| {
            take_inbox(record, inbox);
            let observed = tunnels::repair(&login.run);
            let done = apply(login, &ex.client, &inbox.requests, &observed);
            errors.extend(done.errors);
            record.error = errors.first().cloned();
            let _ = record.save(&login.run);
            done.events
        };
        let summary = hold::serve(
            session,
            granted,
            &login.run,
            lock,
            first.events,
            &mut on_frame,
        );
        record.held_secs = Some(summary.secs);
        record.frames = summary.frames;
        record.held_end = Some(summary.ended.to_string());
    }
    record.error = errors.first().cloned();
    if errors.is_empty() {
        Ok(Outcome::Polled)
    } else {
        Err(Failure::Failed(errors.join("; ")))
    }
}

/// What a poll keeps of an answer: the requests, and the lines refused (logged).
fn take_inbox(record: &mut LastPoll, inbox: &Inbox) {
    record.inbox_errors = inbox.rejected.iter().map(|r| r.to_string()).collect();
    for r in &record.inbox_errors {
        log::warn!("refused {}", r);
    }
    record.requests = inbox.requests.iter().map(|p| p.to_string()).collect();
}

/// The login itself: known_hosts for the client, the report out, the answer in.
fn exchange(
    settings: &Settings,
    login: &Login,
    previous: Option<&LastPoll>,
    offer: Option<u64>,
    client_text: &mut Option<String>,
) -> Result<Exchange, String> {
    let id = login.identity.as_ref().map_err(|e| e.to_string())?;
    log::debug!("client {}, key {}", id.program.display(), id.key.display());
    let client = ssh::detect(id.kind, &id.program, &login.run.client_cache())?;
    *client_text = Some(client.description.clone());
    pin_host_keys(login, &client)?;
    let observed = tunnels::repair(&login.run);
    let status = report::build(
        Some(&client.description),
        &HostInfo::read(),
        &observed,
        previous,
        offer,
    );
    let mut stdin = status.to_json().into_bytes();
    stdin.push(b'\n');
    let timeout = Duration::from_secs(settings.timeout);
    let mut session = ssh::start_poll(&client, &login.target, &login.run.home(), timeout)
        .map_err(|e| e.to_string())?;
    session.send(&stdin);
    if offer.is_none() {
        session.close_stdin();
    }
    let wait = hold::answer_wait(timeout);
    let (frame, session) =
        hold::first_frame(session, offer.is_some(), wait).map_err(|e| match e {
            FirstError::Ssh(p) => p.to_string(),
            FirstError::Answer(a) => not_the_gate(a, login),
        })?;
    let held = match (session, frame.hold, offer) {
        (Some(s), Some(granted), Some(offered)) => Some((s, granted.min(offered))),
        _ => None,
    };
    Ok(Exchange {
        client,
        inbox: frame.inbox,
        observed,
        version: frame.version,
        held,
    })
}

/// What to say when the answer is not the gate's (threat 34): the login worked as far
/// as the client is concerned, but the gate never ran.
fn not_the_gate(e: AnswerError, login: &Login) -> String {
    match e {
        AnswerError::NotFromGate => format!(
            "{} on {}: check that this device was added on the server (add-device {} ...) and not removed since, and that the account {} is right",
            e, login.target.host, login.device, login.target.account
        ),
        AnswerError::Version(_) => format!("{}: upgrade the agent or the server so that they match", e),
        AnswerError::Unterminated => format!("{}: the connection dropped; the next poll retries", e),
        AnswerError::BadHeader(_) | AnswerError::BetweenFrames(_) => {
            format!("{}: upgrade the agent or the server so that they match", e)
        }
    }
}

/// The known_hosts file the client reads, regenerated from the pins only when they
/// changed (a changed pin takes effect at the next poll, without a write per poll).
fn pin_host_keys(login: &Login, client: &Client) -> Result<(), String> {
    let host = &login.target.host;
    let (path, text) = match client.flavour {
        crate::client::Flavour::OpenSsh => (
            login.run.openssh_known_hosts(),
            known_hosts::openssh_text(host, login.target.port, &login.keys),
        ),
        crate::client::Flavour::Dbclient { .. } => (
            login.run.dbclient_known_hosts(),
            known_hosts::dbclient_text(host, &login.keys),
        ),
    };
    write_if_changed(&path, text.as_bytes()).map_err(|e| {
        format!(
            "cannot write the known_hosts file {}: {}",
            path.display(),
            e
        )
    })
}

fn write_if_changed(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let max = data.len() as u64;
    match files::read_bounded(path, max) {
        Ok(Some(old)) if old == data => Ok(()),
        _ => files::write(path, data, 0o644, false),
    }
}

/// Counts of what one reconcile did, for the log line.
#[derive(Default)]
struct Done {
    started: usize,
    restarted: usize,
    stopped: usize,
}

/// What one reconcile did: its errors (the caller logs them) and, for a held session,
/// the outcome of each tunnel it touched.
#[derive(Default)]
struct Applied {
    errors: Vec<String>,
    events: Vec<TunnelOutcome>,
}

/// Reconcile: carry out the plan.
fn apply(login: &Login, client: &Client, desired: &[PortPair], observed: &[Observed]) -> Applied {
    let current: Vec<Current> = observed
        .iter()
        .map(|o| Current {
            pair: o.record.pair(),
            alive: o.alive,
            up_to_date: o.record.argv == client.tunnel_argv(&login.target, o.record.pair()),
        })
        .collect();
    let find = |p: PortPair| observed.iter().find(|o| o.record.pair() == p);
    let mut out = Applied::default();
    let mut done = Done::default();
    for action in reconcile::plan(desired, &current) {
        let p = action_pair(action);
        let event = |state, reason| TunnelOutcome {
            pair: p,
            state,
            reason,
        };
        let result = match action {
            Action::Stop(_) | Action::Forget(_) => {
                let running = matches!(action, Action::Stop(_));
                let r = withdraw(login, find(p), p, &mut done, running);
                if running && r.is_ok() {
                    out.events.push(event(OutcomeState::Stopped, None));
                }
                r
            }
            Action::Restart(_) | Action::Start(_) => {
                out.events.push(event(OutcomeState::Starting, None));
                open(login, client, find(p), p, &mut done)
            }
        };
        if let Err(e) = result {
            out.events
                .push(event(OutcomeState::Failed, Some(e.clone())));
            out.errors.push(format!("tunnel {}: {}", p, e));
        }
    }
    log::info!(
        "polled {}: {} request(s); {} started, {} restarted, {} stopped",
        login.target.host,
        desired.len(),
        done.started,
        done.restarted,
        done.stopped
    );
    out
}

fn action_pair(a: Action) -> PortPair {
    match a {
        Action::Start(p) | Action::Restart(p) | Action::Stop(p) | Action::Forget(p) => p,
    }
}

/// Stop a tunnel no longer requested (or forget a dead one) and drop its record.
fn withdraw(
    login: &Login,
    old: Option<&Observed>,
    p: PortPair,
    done: &mut Done,
    running: bool,
) -> Result<(), String> {
    if let Some(o) = old {
        tunnels::stop(&o.record)?;
    }
    tunnels::remove_record(&login.run, p);
    if running {
        log::info!("tunnel {} stopped: no longer requested", p);
        done.stopped += 1;
    }
    Ok(())
}

/// Start a requested tunnel, stopping an outdated one first.
fn open(
    login: &Login,
    client: &Client,
    old: Option<&Observed>,
    p: PortPair,
    done: &mut Done,
) -> Result<(), String> {
    match old {
        Some(o) if o.alive => {
            log::info!("tunnel {}: settings changed, restarting it", p);
            tunnels::stop(&o.record)?;
        }
        Some(o) => log::warn!(
            "tunnel {} had died ({}): restarting it",
            p,
            o.error.as_deref().unwrap_or("no error message")
        ),
        None => {}
    }
    let rec = tunnels::start(&login.run, client, &login.target, p, old)?;
    if old.is_some() {
        done.restarted += 1;
    } else {
        log::info!("tunnel {} started (pid {})", p, rec.pid);
        done.started += 1;
    }
    Ok(())
}

/// A delay in 0..=max seconds that differs between devices but not between ticks, so a
/// fleet spreads out over the minute (FNV-1a of the device id).
pub fn jitter(device: &DeviceId, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.as_str().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h % (max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_stable_bounded_and_spread() {
        let a = DeviceId::parse("6466b34bde54").unwrap();
        assert_eq!(jitter(&a, 0), 0);
        assert_eq!(jitter(&a, 30), jitter(&a, 30));
        assert!(jitter(&a, 30) <= 30);
        let spread: std::collections::BTreeSet<u64> = (0..50u8)
            .map(|i| jitter(&DeviceId::from_mac([0, 0, 0, 0, 0, i]), 30))
            .collect();
        assert!(spread.len() > 10, "{:?}", spread);
    }

    #[test]
    fn known_hosts_are_written_only_when_they_change() {
        let t = phonehome_plumbing::tempdir::TempDir::new("kh-write");
        let p = t.join("known_hosts");
        write_if_changed(&p, b"a\n").unwrap();
        let first = std::fs::metadata(&p).unwrap();
        write_if_changed(&p, b"a\n").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().ino(),
            first.ino(),
            "not rewritten"
        );
        write_if_changed(&p, b"b\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"b\n");
    }
}
