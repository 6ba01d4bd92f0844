//! One cron tick: lock, jitter, one login that sends the status report and reads the
//! inbox, then reconcile the tunnels with it. Every failure is logged, kept in
//! `last-poll.json` and sent with the next report.

use crate::config::Settings;
use crate::device_id;
use crate::files::{atomic_write, RunDir};
use crate::hostkey::{self, HostKey};
use crate::reconcile::{self, Action, Current};
use crate::report::{self, HostInfo};
use crate::ssh::{self, Client, Target};
use crate::state::LastPoll;
use crate::sys;
use crate::tunnels::{self, Observed};
use phonehome_protocol::{parse_inbox, DeviceId, PortPair, MAX_INBOX_BYTES};
use std::fs::{File, OpenOptions};
use std::time::{Duration, Instant};

/// Why a command could not do its job; decides the exit status.
#[derive(Debug)]
pub enum Failure {
    /// Bad settings: exit 2.
    Config(String),
    /// The poll (or the command) failed: exit 1.
    Failed(String),
}

pub enum Outcome {
    Polled,
    /// Another tick holds the lock.
    Overlapped,
}

/// Everything a login needs, derived from validated settings.
pub struct Login {
    pub run: RunDir,
    pub device: DeviceId,
    pub target: Target,
    pub keys: Vec<HostKey>,
}

pub fn device(settings: &Settings) -> Result<DeviceId, Failure> {
    device_id::choose(
        settings.device_id.as_ref(),
        settings.interface.as_deref(),
        &device_id::system_interfaces(),
    )
    .map_err(Failure::Config)
}

/// The pinned keys: the `--host-key` values if any were given, else the known-hosts file.
pub fn pinned_keys(settings: &Settings, host: &str) -> Result<Vec<HostKey>, Failure> {
    if !settings.host_keys.is_empty() {
        return hostkey::one_per_type(&settings.host_keys).map_err(Failure::Config);
    }
    let path = &settings.known_hosts;
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Config(format!(
            "cannot read the pinned host keys in {}: {}; pass --host-key 'TYPE BASE64' or run `phonehome setup`",
            path.display(),
            e
        ))
    })?;
    let keys = hostkey::parse_known_hosts(&text, host, settings.port)
        .and_then(|keys| hostkey::one_per_type(&keys))
        .map_err(|e| Failure::Config(format!("{}: {}", path.display(), e)))?;
    if keys.is_empty() {
        return Err(Failure::Config(format!(
            "{} pins no host key for {}: pass --host-key 'TYPE BASE64' or run `phonehome setup`",
            path.display(),
            host
        )));
    }
    Ok(keys)
}

pub fn login(settings: &Settings) -> Result<Login, Failure> {
    let host = settings.server().map_err(Failure::Config)?.to_string();
    let device = device(settings)?;
    let keys = pinned_keys(settings, &host)?;
    let run = RunDir::new(&settings.run_dir);
    let target = Target {
        account: settings.account.clone().unwrap_or_else(|| device.account()),
        host,
        port: settings.port,
        key: settings.key.clone(),
        keepalive: settings.keepalive,
        connect_timeout: settings.timeout,
        known_hosts: run.openssh_known_hosts(),
    };
    Ok(Login {
        run,
        device,
        target,
        keys,
    })
}

pub fn open_lock(run: &RunDir) -> Result<File, Failure> {
    run.create().map_err(|e| {
        Failure::Failed(format!(
            "cannot create the run dir {}: {}",
            run.root.display(),
            e
        ))
    })?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run.lock())
        .map_err(|e| Failure::Failed(format!("cannot open {}: {}", run.lock().display(), e)))
}

pub fn poll(settings: &Settings) -> Result<Outcome, Failure> {
    let login = login(settings)?;
    let lock = open_lock(&login.run)?;
    match sys::try_lock(&lock) {
        Ok(true) => {}
        Ok(false) => {
            log::debug!(
                "another poll is running (lock {} held): skipping this tick",
                login.run.lock().display()
            );
            return Ok(Outcome::Overlapped);
        }
        Err(e) => {
            return Err(Failure::Failed(format!(
                "cannot lock {}: {}",
                login.run.lock().display(),
                e
            )))
        }
    }
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
        time: report::now(),
        client: client_text.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
        ..LastPoll::default()
    };
    match result {
        Err(e) => {
            record.error = Some(e.clone());
            // Refused lines not yet known to be delivered: send them again next time.
            record.inbox_errors = previous.map(|p| p.inbox_errors).unwrap_or_default();
            record.save(&login.run).map_err(Failure::Failed)?;
            Err(Failure::Failed(e))
        }
        Ok((client, inbox_data, observed)) => {
            let inbox = parse_inbox(&inbox_data);
            record.inbox_errors = inbox.rejected.iter().map(|r| r.to_string()).collect();
            for r in &record.inbox_errors {
                log::warn!("refused {}", r);
            }
            record.requests = inbox.requests.iter().map(|p| p.to_string()).collect();
            let errors = apply(&login, &client, &inbox.requests, &observed);
            record.ok = true;
            record.error = errors.first().cloned();
            record.duration_ms = started.elapsed().as_millis() as u64;
            record.save(&login.run).map_err(Failure::Failed)?;
            if errors.is_empty() {
                Ok(Outcome::Polled)
            } else {
                Err(Failure::Failed(errors.join("; ")))
            }
        }
    }
}

/// The login itself. Returns the client, the raw inbox and the tunnels as found.
fn exchange(
    settings: &Settings,
    login: &Login,
    previous: Option<&LastPoll>,
    client_text: &mut Option<String>,
) -> Result<(Client, Vec<u8>, Vec<Observed>), String> {
    let host = &login.target.host;
    // Regenerated every poll from the pins, so that a changed pin takes effect at once.
    atomic_write(
        &login.run.dbclient_known_hosts(),
        hostkey::dbclient_known_hosts(host, &login.keys).as_bytes(),
        0o644,
    )
    .and_then(|_| {
        atomic_write(
            &login.run.openssh_known_hosts(),
            hostkey::openssh_known_hosts(host, login.target.port, &login.keys).as_bytes(),
            0o644,
        )
    })
    .map_err(|e| {
        format!(
            "cannot write the known_hosts files in {}: {}",
            login.run.root.display(),
            e
        )
    })?;

    let path_env = std::env::var("PATH").ok();
    let client = Client::detect_cached(
        settings.client,
        path_env.as_deref(),
        &login.run.client_cache(),
    )?;
    *client_text = Some(client.description.clone());
    if !settings.key.is_file() {
        return Err(format!(
            "private key {} not found: create it with `dropbearkey -t ed25519 -f {}` and add its public key on the server",
            settings.key.display(),
            settings.key.display()
        ));
    }
    let observed = tunnels::survey(&login.run, true);
    let status = report::build(
        Some(&client.description),
        &HostInfo::read(),
        &observed,
        previous,
    );
    let mut stdin = status.to_json().into_bytes();
    stdin.push(b'\n');
    let args = client.poll_args(&login.target);
    let command = ssh::render(&client.program, &args);
    log::debug!("running {}", command);
    let out = ssh::run_bounded(
        &client.program,
        &args,
        Some(&login.run.home()),
        &stdin,
        Duration::from_secs(settings.timeout),
        MAX_INBOX_BYTES + 1,
    )
    .map_err(|e| format!("cannot run `{}`: {}", command, e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = ssh::telling_line(&stderr);
    let error = if out.timed_out {
        let why = match (ssh::classify(&stderr), line) {
            (ssh::ErrorKind::Other, Some(l)) => format!(": {}", l),
            (ssh::ErrorKind::Other, None) => String::new(),
            (k, l) => format!(": {} ({})", k.advice(), l.unwrap_or_default()),
        };
        Some(phonehome_protocol::truncate_text(
            &format!(
                "poll timed out after {} s and was killed (server {}:{}){}",
                settings.timeout, host, login.target.port, why
            ),
            phonehome_protocol::MAX_TEXT_LEN,
        ))
    } else if let Some(status) = out.status.filter(|s| !s.success()) {
        let l = line.unwrap_or_else(|| format!("{}", status));
        Some(tunnels::describe_failure(&stderr, &l))
    } else {
        None
    };
    if let Some(e) = error {
        log::error!("poll command: {}", command);
        if !stderr.trim().is_empty() {
            log::debug!("its stderr: {}", stderr.trim());
        }
        return Err(e);
    }
    Ok((client, out.stdout, observed))
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
        .map(|o| {
            let mut argv = vec![client.program.to_string_lossy().into_owned()];
            argv.extend(client.tunnel_args(&login.target, o.record.local, o.record.remote));
            Current {
                pair: o.record.pair(),
                alive: o.alive,
                up_to_date: o.record.argv == argv,
            }
        })
        .collect();
    let find = |p: PortPair| observed.iter().find(|o| o.record.pair() == p);
    let mut errors = Vec::new();
    let (mut started, mut stopped, mut restarted) = (0, 0, 0);
    for action in reconcile::plan(desired, &current) {
        match action {
            Action::Stop(p) | Action::Forget(p) => {
                if let Some(o) = find(p) {
                    if let Err(e) = tunnels::stop(&o.record) {
                        errors.push(format!("tunnel {}: {}", p, e));
                        continue;
                    }
                }
                tunnels::remove_record(&login.run, p);
                if matches!(action, Action::Stop(_)) {
                    log::info!("tunnel {} stopped: no longer requested", p);
                    stopped += 1;
                }
            }
            Action::Restart(p) | Action::Start(p) => {
                let old = find(p);
                if let Some(o) = old.filter(|o| o.alive) {
                    log::info!("tunnel {}: settings changed, restarting it", p);
                    if let Err(e) = tunnels::stop(&o.record) {
                        errors.push(format!("tunnel {}: {}", p, e));
                        continue;
                    }
                } else if let Some(o) = old {
                    log::warn!(
                        "tunnel {} had died ({}): restarting it",
                        p,
                        o.error.as_deref().unwrap_or("no error message")
                    );
                }
                match tunnels::start(&login.run, client, &login.target, p) {
                    Ok(mut rec) => {
                        if let Some(o) = old {
                            rec.restarts = o.record.restarts + u32::from(!o.alive);
                            rec.last_error = o.error.clone();
                            restarted += 1;
                        } else {
                            log::info!("tunnel {} started (pid {})", p, rec.pid);
                            started += 1;
                        }
                        if let Err(e) = tunnels::save_record(&login.run, &rec) {
                            errors.push(format!("tunnel {}: cannot save its record: {}", p, e));
                        }
                    }
                    Err(e) => {
                        errors.push(format!("tunnel {}: {}", p, e));
                    }
                }
            }
        }
    }
    log::info!(
        "polled {}: {} request(s); {} started, {} restarted, {} stopped",
        login.target.host,
        desired.len(),
        started,
        restarted,
        stopped
    );
    errors
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
        let b = DeviceId::parse("6466b34bde55").unwrap();
        assert_eq!(jitter(&a, 0), 0);
        assert_eq!(jitter(&a, 30), jitter(&a, 30));
        assert!(jitter(&a, 30) <= 30);
        let spread: std::collections::BTreeSet<u64> = (0..50u8)
            .map(|i| jitter(&DeviceId::from_mac([0, 0, 0, 0, 0, i]), 30))
            .collect();
        assert!(spread.len() > 10, "{:?}", spread);
        let _ = b;
    }
}
