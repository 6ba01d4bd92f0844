//! Held sessions, the gate's side (protocol 3): instead of answering and exiting, the
//! gate keeps a device's session open for up to `hold` seconds of server.conf, sends
//! the device's whole request set again the moment its requests file changes (inotify
//! on the requests directory; a look every `FALLBACK_LOOK` where inotify fails) or a
//! request expires, and reads the device's outcome lines (`tunnel L:R starting|failed
//! REASON|stopped`) into the device's status file (its session and its report's
//! tunnels), where `--wait` and `list-devices` see them at once.
//!
//! Bounds, because the device is not trusted and every held session costs the server
//! memory: a device holds one session at most (`status/<id>/hold.lock`; a newer login
//! of the device ends the older session, which its agent has given up), the server at
//! most `hold_sessions` (a free slot file in `var/lib/phonehome/hold/`, flock'd for the
//! session's life, so a killed gate frees its slot with its last breath), a session
//! lasts at most the hold the agent offered and server.conf allows, and a device that
//! sends more than `MAX_OUTCOMES` lines or one it may not send ends its session. The
//! session also ends when the device closes stdin (its next cron tick asked it to) or
//! the connection goes away.

use crate::cli::Out;
use crate::config::ServerConf;
use crate::error::{Error, Result};
use crate::gate_status::{self, HeldSession, Status, TunnelOutcome, HOLD_LOCK_FILE};
use crate::paths::Paths;
use crate::requests::{self, Request};
use phonehome_plumbing::watch::{self, DirWatch, Line, Lines};
use phonehome_plumbing::{clock, files, lock, process};
use phonehome_protocol::{
    render_frame, DeviceId, Outcome, OutcomeState, TunnelState, TunnelStatus, HOLD_PROTOCOL,
    MAX_OUTCOMES, MIN_HOLD_SECS,
};
use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Where inotify is not to be had, how often the requests file is looked at instead.
pub const FALLBACK_LOOK: Duration = Duration::from_secs(1);
/// How long a new login of a device waits for its previous held session's gate to end.
const TAKE_OVER_WAIT: Duration = Duration::from_secs(2);

/// A hold granted to one login: its length and the two locks that make it count.
pub struct Grant {
    pub secs: u64,
    _slot: File,
    _device: File,
}

/// Hold this login's session? Only when server.conf allows it, the agent offered, the
/// device holds no other session and a slot is free; otherwise the poll is answered
/// and ended as before. Never an error: a hold is a convenience, the poll is not.
pub fn grant(paths: &Paths, conf: &ServerConf, id: &DeviceId, offer: Option<u64>) -> Option<Grant> {
    let secs = conf.hold.min(offer?);
    if secs < MIN_HOLD_SECS || conf.hold_sessions == 0 {
        return None;
    }
    let device = lock::open(&paths.status(id).join(HOLD_LOCK_FILE)).ok()?;
    if !lock::try_exclusive(&device).ok()? && !take_over(paths, id, &device) {
        eprintln!(
            "phonehome-gate: device {} still holds another session: this one is not held",
            id
        );
        return None;
    }
    let slot = free_slot(paths, conf.hold_sessions, id)?;
    Some(Grant {
        secs,
        _slot: slot,
        _device: device,
    })
}

/// The device logged in again while a session of it is held: the agent holds one
/// session at a time, so the old one is dead (a dropped network, a client killed) even
/// if sshd has not noticed yet. End its gate (the device's own uid, checked by pid and
/// start time) and take its lock, so that the dead session does not cost the device
/// its hold for the next minute.
fn take_over(paths: &Paths, id: &DeviceId, device: &File) -> bool {
    let Some(old) = gate_status::session(paths, id).ok().flatten() else {
        return false;
    };
    if !old.is_live(clock::now()) || old.pid == std::process::id() {
        return false;
    }
    match process::Handle::open(old.pid) {
        Ok(h) if h.start_time() == old.start_time => {
            if h.signal(process::SIGTERM).is_err() {
                return false;
            }
        }
        _ => return false,
    }
    let until = Instant::now() + TAKE_OVER_WAIT;
    while Instant::now() < until {
        if lock::try_exclusive(device).unwrap_or(false) {
            eprintln!(
                "phonehome-gate: device {} logged in again: its previous held session (gate pid {}) was ended",
                id, old.pid
            );
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A slot file locked for us, probing from a place that depends on the device so that
/// devices spread over the slots.
fn free_slot(paths: &Paths, slots: u64, id: &DeviceId) -> Option<File> {
    if !paths.hold_dir().is_dir() {
        eprintln!(
            "phonehome-gate: {} is missing: no session is held until forward-device-port --prune makes its slots",
            paths.hold_dir().display()
        );
        return None;
    }
    let start = id
        .as_str()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % slots;
    (0..slots).find_map(|i| {
        let f = lock::open_existing(&paths.hold_slot((start + i) % slots)).ok()?;
        lock::try_exclusive(&f).ok()?.then_some(f)
    })
}

/// Make the slot files match `hold_sessions` (root, from `forward-device-port
/// --prune`): `0`..`n-1`, empty, root 0644; others removed. A removed slot still locked
/// by a gate stays held until that session ends. Returns (created, removed).
pub fn sync_slots(paths: &Paths, conf: &ServerConf) -> Result<(u64, u64)> {
    let dir = paths.hold_dir();
    let n = if conf.hold == 0 {
        0
    } else {
        conf.hold_sessions
    };
    if n == 0 && !dir.exists() {
        return Ok((0, 0));
    }
    files::ensure_dir(&dir, 0o755).map_err(|e| Error::io("create", &dir, e))?;
    let mut removed = 0;
    for e in std::fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))? {
        let e = e.map_err(|e| Error::io("read", &dir, e))?;
        let keep = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok().filter(|i| i.to_string() == s))
            .is_some_and(|i| i < n && e.file_type().is_ok_and(|t| t.is_file()));
        if !keep {
            let p = e.path();
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|err| Error::io("remove", &p, err))?;
            removed += 1;
        }
    }
    let mut created = 0;
    for i in 0..n {
        let p = paths.hold_slot(i);
        if !p.exists() {
            files::write(&p, b"", 0o644, false).map_err(|e| Error::io("write", &p, e))?;
            created += 1;
        }
    }
    Ok((created, removed))
}

/// What a held session works with.
pub struct Held<'a> {
    pub paths: &'a Paths,
    pub id: &'a DeviceId,
    pub grant: Grant,
    /// The requests the first frame carried.
    pub sent: Vec<Request>,
    /// What this login recorded, its session included (outcomes update the session
    /// and the report's tunnels).
    pub status: Status,
}

/// The record of the session a grant holds, from its start (`now`, server time).
pub fn session_record(grant: &Grant, now: i64) -> HeldSession {
    let me = std::process::id();
    HeldSession {
        pid: me,
        start_time: process::stat(me).map_or(0, |s| s.start_time),
        since: now,
        until: now + grant.secs as i64,
        ended: None,
        outcomes: Vec::new(),
    }
}

/// Why a held session ended, for the gate's stderr (the device's client keeps it).
#[derive(Debug, PartialEq, Eq)]
enum End {
    TimeUp,
    DeviceClosed,
    Refused(String),
    Gone,
}

/// Serve the session until it ends: send the first frame (already written to `out`),
/// then wait. The gate has recorded the session. `lines` is the device's stdin after
/// its report.
pub fn serve(mut h: Held<'_>, out: &mut Out, lines: &mut Lines<'_>) -> Result<()> {
    let started = Instant::now();
    let until = started + Duration::from_secs(h.grant.secs);
    out.flush()?;
    let watch = DirWatch::new(&h.paths.requests_dir()).ok();
    let file_name = format!("{}.json", h.id);
    let mut outcomes = 0usize;
    let end = loop {
        let now = Instant::now();
        if now >= until {
            break End::TimeUp;
        }
        let wake = next_expiry(&h.sent, started)
            .map_or(until, |t| t.min(until))
            .min(if watch.is_some() {
                until
            } else {
                now + FALLBACK_LOOK
            });
        let mut fds = vec![lines.fd()];
        fds.extend(watch.as_ref().map(|w| w.as_fd()));
        let ready = watch::readable(&fds, Some(wake.saturating_duration_since(now)))
            .map_err(|e| Error::new(format!("waiting on the session: {}", e)))?;
        if ready[0] {
            if let Err(e) = lines.fill() {
                break End::Refused(format!("cannot read the device: {}", e));
            }
            if let Some(end) = take_outcomes(&mut h, lines, &mut outcomes) {
                break end;
            }
        }
        let changed = match &watch {
            Some(w) if ready.get(1) == Some(&true) => {
                w.changes().map_or(true, |c| c.touches(&file_name))
            }
            Some(_) => false,
            None => true,
        };
        if changed || next_expiry(&h.sent, started).is_some_and(|t| t <= Instant::now()) {
            if let Err(e) = resend(&mut h, out) {
                if e.is_broken_pipe() {
                    break End::Gone;
                }
                return Err(e);
            }
        }
    };
    if let End::Refused(why) = &end {
        eprintln!("phonehome-gate: held session ended: {}", why);
    }
    if let Some(session) = h.status.session.as_mut() {
        session.ended = Some(clock::now());
    }
    save(&h);
    Ok(())
}

/// When the earliest request of `sent` expires, as an Instant (server clock).
fn next_expiry(sent: &[Request], started: Instant) -> Option<Instant> {
    let first = sent.iter().map(|r| r.expires).min()?;
    let secs_from_now = (first - clock::now()).max(0) as u64;
    Some(Instant::now().max(started) + Duration::from_secs(secs_from_now))
}

/// Send the request set again if it changed (a new, renewed, closed or expired request).
fn resend(h: &mut Held<'_>, out: &mut Out) -> Result<()> {
    let now = clock::now();
    let current = match requests::load(h.paths, h.id) {
        Ok(all) => requests::unexpired(all, now),
        Err(e) => {
            eprintln!("phonehome-gate: warning: {}", e);
            return Ok(());
        }
    };
    if current == h.sent {
        return Ok(());
    }
    let pairs: Vec<_> = current.iter().map(|r| r.pair()).collect();
    out.text(&render_frame(HOLD_PROTOCOL, None, &pairs))?;
    out.flush()?;
    h.sent = current;
    Ok(())
}

/// Take every complete outcome line read so far; `Some` when the session must end.
fn take_outcomes(h: &mut Held<'_>, lines: &mut Lines<'_>, count: &mut usize) -> Option<End> {
    while let Some(line) = lines.take() {
        let data = match line {
            Line::Line(d) => d,
            Line::Last(_) | Line::End => return Some(End::DeviceClosed),
            Line::TooLong => return Some(End::Refused("an outcome line too long".into())),
        };
        *count += 1;
        if *count > MAX_OUTCOMES {
            return Some(End::Refused(format!(
                "more than {} outcome lines",
                MAX_OUTCOMES
            )));
        }
        match Outcome::parse(&data) {
            Ok(o) => apply(h, o),
            Err(e) => return Some(End::Refused(e.0)),
        }
    }
    None
}

/// Record one outcome in the session and the stored report's tunnels.
fn apply(h: &mut Held<'_>, o: Outcome) {
    let now = clock::now();
    if let Some(session) = h.status.session.as_mut() {
        session.record(TunnelOutcome {
            local: o.pair.local,
            remote: o.pair.remote,
            state: o.state,
            at: now,
            reason: o.reason.clone(),
        });
    }
    update_report(h, o, now);
    save(h);
}

/// The outcome in the stored report's tunnels (a refused report has none to update).
fn update_report(h: &mut Held<'_>, o: Outcome, now: i64) {
    let Some(stored) = h.status.report.as_mut() else {
        return;
    };
    let tunnels = &mut stored.report.tunnels;
    let at = tunnels
        .iter()
        .position(|t| t.local == o.pair.local && t.remote == o.pair.remote);
    match (o.state, at) {
        (OutcomeState::Stopped, Some(i)) => {
            tunnels.remove(i);
        }
        (OutcomeState::Stopped, None) => {}
        (state, at) => {
            let entry = TunnelStatus {
                local: o.pair.local,
                remote: o.pair.remote,
                state: if state == OutcomeState::Failed {
                    TunnelState::Failed
                } else {
                    TunnelState::Running
                },
                since: at.and_then(|i| tunnels[i].since),
                restarts: at.map_or(0, |i| tunnels[i].restarts),
                last_error: o
                    .reason
                    .or_else(|| at.and_then(|i| tunnels[i].last_error.clone())),
            };
            match at {
                Some(i) => tunnels[i] = entry,
                None if tunnels.len() < phonehome_protocol::MAX_REQUESTS => tunnels.push(entry),
                None => return,
            }
        }
    }
    stored.updated = Some(now);
}

/// Write the session's status, unless a newer login of the device has recorded its
/// own since (then the file is that login's, and this session only a past one).
fn save(h: &Held<'_>) {
    let mine = &h.status;
    let r = gate_status::update(h.paths, h.id, |old| match old {
        Some(o) if o.heartbeat != mine.heartbeat => None,
        _ => Some(mine.clone()),
    });
    if let Err(e) = r {
        eprintln!("phonehome-gate: warning: held session not recorded: {}", e);
    }
}
