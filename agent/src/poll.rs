//! One cron tick: lock, jitter, one login that sends the status report and reads the
//! gate's answer, then reconcile the tunnels with it. Every failure is logged, kept in
//! `last-poll.json` and sent with the next report.

use crate::client::{Client, Target};
use crate::config::Settings;
use crate::device_id;
use crate::failure::Failure;
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
use phonehome_protocol::{parse_answer, AnswerError, DeviceId, Inbox, PortPair};
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
}

pub fn poll(settings: &Settings) -> Result<Outcome, Failure> {
    let login = Login::new(settings)?;
    let _lock = match login.run.try_lock()? {
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
    let mut client_text = None;
    let result = exchange(settings, &login, previous.as_ref(), &mut client_text);
    let mut record = LastPoll {
        time: clock::now() as u64,
        client: client_text,
        ..LastPoll::default()
    };
    let outcome = match result {
        Err(e) => {
            record.error = Some(e.clone());
            // Refused lines not yet known to be delivered: send them again next time.
            record.inbox_errors = previous.map(|p| p.inbox_errors).unwrap_or_default();
            Err(Failure::Failed(e))
        }
        Ok(ex) => {
            record.inbox_errors = ex.inbox.rejected.iter().map(|r| r.to_string()).collect();
            for r in &record.inbox_errors {
                log::warn!("refused {}", r);
            }
            record.requests = ex.inbox.requests.iter().map(|p| p.to_string()).collect();
            let errors = apply(&login, &ex.client, &ex.inbox.requests, &ex.observed);
            record.ok = true;
            record.error = errors.first().cloned();
            if errors.is_empty() {
                Ok(Outcome::Polled)
            } else {
                Err(Failure::Failed(errors.join("; ")))
            }
        }
    };
    record.duration_ms = started.elapsed().as_millis() as u64;
    record.save(&login.run).map_err(Failure::Failed)?;
    outcome
}

/// The login itself: known_hosts for the client, the report out, the answer in.
fn exchange(
    settings: &Settings,
    login: &Login,
    previous: Option<&LastPoll>,
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
    );
    let mut stdin = status.to_json().into_bytes();
    stdin.push(b'\n');
    let answer = ssh::poll(
        &client,
        &login.target,
        &login.run.home(),
        &stdin,
        Duration::from_secs(settings.timeout),
    )
    .map_err(|e| e.to_string())?;
    let inbox = parse_answer(&answer).map_err(|e| not_the_gate(e, login))?;
    Ok(Exchange {
        client,
        inbox,
        observed,
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

/// Reconcile: carry out the plan. Returns the errors (the caller logs them).
fn apply(
    login: &Login,
    client: &Client,
    desired: &[PortPair],
    observed: &[Observed],
) -> Vec<String> {
    let current: Vec<Current> = observed
        .iter()
        .map(|o| Current {
            pair: o.record.pair(),
            alive: o.alive,
            up_to_date: o.record.argv == client.tunnel_argv(&login.target, o.record.pair()),
        })
        .collect();
    let find = |p: PortPair| observed.iter().find(|o| o.record.pair() == p);
    let mut errors = Vec::new();
    let mut done = Done::default();
    for action in reconcile::plan(desired, &current) {
        let result = match action {
            Action::Stop(p) | Action::Forget(p) => withdraw(
                login,
                find(p),
                p,
                &mut done,
                matches!(action, Action::Stop(_)),
            ),
            Action::Restart(p) | Action::Start(p) => open(login, client, find(p), p, &mut done),
        };
        if let Err(e) = result {
            errors.push(format!("tunnel {}: {}", action_pair(action), e));
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
    errors
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
