//! What one run of watch-devices does, apart from talking to the admin (`cmd::watch`):
//!
//! 1. `detect`: under the watch lock, read the fleet (`fleet`, as list-devices does),
//!    compare it with the last run (`detect`), give each change an id, commit the new
//!    state with the events in it, queue the events in every webhook's outbox, trim
//!    full outboxes, and commit again. Short: no network.
//! 2. `deliver`: per webhook, under its outbox's own lock (another run delivering the
//!    same webhook makes this one skip it), send the queued events in order, each
//!    removed once its receiver took it; a failure stops that webhook until its
//!    backoff passes (30 s, doubling, at most `webhook_retry_max`). Each webhook runs
//!    on its own thread with its own deadline, so a slow or dead receiver delays
//!    neither the others nor the next detection.
//! 3. `write_metrics`: the node_exporter textfile, if `metrics_file` is set.

use crate::config::ServerConf;
use crate::deliver::{Failure, Sender};
use crate::detect::{self, Rules};
use crate::error::{Context, Result};
use crate::events::{Draft, Event, Kind};
use crate::fleet::{self, Fleet};
use crate::metrics;
use crate::outbox::{self, Meta, Outbox};
use crate::paths::Paths;
use crate::watch_state::{self, WatchState};
use crate::webhook::Webhook;
use phonehome_plumbing::clock::now;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The first wait after a failed delivery; it doubles with each failed run.
pub const FIRST_BACKOFF_SECS: u64 = 30;
/// Attempts of one event within a run (transient failures only), 1 s then 2 s apart.
const ATTEMPTS: u32 = 3;
/// How often a long delivery saves its counters.
const SAVE_EVERY: u64 = 100;

/// What a detection found.
pub struct Detected {
    /// The first run: nothing was sent, the state of the fleet was recorded.
    pub first: bool,
    pub devices: usize,
    pub events: Vec<Event>,
    /// Per webhook, events dropped from its full queue now.
    pub dropped: Vec<(String, u64)>,
    /// Outboxes of webhooks no longer configured, removed with their queued events.
    pub abandoned: Vec<(String, usize)>,
    pub fleet: Fleet,
}

/// Step 1: find the changes since the last run and queue them for every webhook.
pub fn detect(paths: &Paths, logs: &[PathBuf]) -> Result<Detected> {
    let _held = watch_state::lock(paths)?;
    let fleet = fleet::read(paths, logs, true)?;
    let conf = &fleet.src.conf;
    let previous = watch_state::load(paths)?;
    let first = previous.is_none();
    let mut state = match previous {
        Some(s) => s,
        None => WatchState::fresh()?,
    };
    // Events a crashed run committed but may not have queued: again, same ids.
    let leftover = std::mem::take(&mut state.pending);
    queue(paths, &conf.webhooks, &leftover)?;
    let rules = Rules::of(&fleet);
    let observed = detect::observe(&fleet);
    let (memory, drafts) = detect::diff((!first).then_some(&state.devices), &observed, &rules);
    let events: Vec<(u64, Event)> = drafts
        .into_iter()
        .map(|d| {
            let (seq, id) = state.next_id();
            (seq, d.into_event(id, rules.now, &conf.server_host))
        })
        .collect();
    state.devices = memory;
    state.last_run = Some(rules.now);
    state.pending = events.clone();
    watch_state::save(paths, &state)?;
    queue(paths, &conf.webhooks, &events)?;
    if !state.pending.is_empty() {
        state.pending.clear();
        watch_state::save(paths, &state)?;
    }
    let dropped = trim_all(paths, conf, &state, rules.now)?;
    Ok(Detected {
        first,
        devices: fleet.rows.len(),
        events: events.into_iter().map(|(_, e)| e).collect(),
        dropped,
        abandoned: outbox::remove_unconfigured(paths, &conf.webhooks),
        fleet,
    })
}

fn queue(paths: &Paths, hooks: &[Webhook], events: &[(u64, Event)]) -> Result<()> {
    for hook in hooks {
        let o = Outbox::of(paths, hook);
        for (seq, ev) in events {
            o.append(*seq, ev)?;
        }
    }
    Ok(())
}

/// Bound every outbox to `webhook_queue` (skipping one being delivered right now).
fn trim_all(
    paths: &Paths,
    conf: &ServerConf,
    state: &WatchState,
    now: i64,
) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for hook in &conf.webhooks {
        let o = Outbox::of(paths, hook);
        let Some(held) = o.try_lock()? else {
            continue;
        };
        let t = o.trim(&held, conf.webhook_queue, |count, seq| {
            Draft::new(
                Kind::WatchDropped,
                format!(
                    "{} undelivered event(s) were dropped: the queue of this webhook holds at most {} (webhook_queue)",
                    count, conf.webhook_queue
                ),
            )
            .detail("count", count)
            .into_event(
                format!("{}-{:012}-dropped-{}", state.instance, seq, count),
                now,
                &conf.server_host,
            )
        })?;
        if t.events > 0 {
            let mut m = o.meta();
            m.dropped += t.events;
            o.save_meta(&held, &m)?;
            out.push((hook.label(), t.events));
        }
    }
    Ok(out)
}

/// How a webhook's delivery ended.
#[derive(Debug)]
pub enum Outcome {
    /// Everything queued was delivered (possibly nothing).
    Done,
    /// The deadline came first; the rest waits for the next run.
    OutOfTime,
    /// Another run is delivering to it.
    Busy,
    /// It failed recently: no attempt before this time.
    Waiting(i64),
    Failed(Failure),
}

#[derive(Debug)]
pub struct Delivery {
    pub label: String,
    pub sent: u64,
    pub left: usize,
    pub outcome: Outcome,
}

/// Step 2, for one webhook: send what its outbox holds, in order, until `deadline`.
pub fn deliver(
    paths: &Paths,
    hook: &Webhook,
    retry_max: u64,
    deadline: Instant,
) -> Result<Delivery> {
    let o = Outbox::of(paths, hook);
    let mut d = Delivery {
        label: hook.label(),
        sent: 0,
        left: 0,
        outcome: Outcome::Done,
    };
    let Some(held) = o.try_lock()? else {
        d.outcome = Outcome::Busy;
        return Ok(d);
    };
    let entries = o.entries()?;
    d.left = entries.len();
    let mut meta = o.meta();
    if entries.is_empty() {
        return Ok(d);
    }
    if now() < meta.next_attempt {
        d.outcome = Outcome::Waiting(meta.next_attempt);
        return Ok(d);
    }
    let result = Sender::new(hook)
        .and_then(|sender| send_queue(&o, &held, &entries, &sender, deadline, &mut meta, &mut d));
    if let Err(f) = result {
        failed(&mut meta, &f, retry_max);
        d.outcome = Outcome::Failed(f);
    }
    o.save_meta(&held, &meta)?;
    Ok(d)
}

/// Send the queued `entries` in order; stop at the first failure or at `deadline`.
fn send_queue(
    o: &Outbox,
    held: &outbox::Held,
    entries: &[outbox::Entry],
    sender: &Sender,
    deadline: Instant,
    meta: &mut Meta,
    d: &mut Delivery,
) -> std::result::Result<(), Failure> {
    for e in entries {
        if Instant::now() >= deadline {
            d.outcome = Outcome::OutOfTime;
            break;
        }
        let ev = match o.read(e) {
            Ok(Some(ev)) => ev,
            // Delivered or trimmed by someone else meanwhile.
            Ok(None) => {
                d.left -= 1;
                continue;
            }
            Err(err) => {
                // Never written so by us: set aside rather than block the queue.
                log::warn!("{}: {}; dropped", d.label, err);
                o.remove(e).ok();
                meta.dropped += 1;
                d.left -= 1;
                continue;
            }
        };
        send_with_retries(sender, &ev, deadline, meta)?;
        o.remove(e).map_err(|err| Failure::Other(err.to_string()))?;
        succeeded(meta);
        d.sent += 1;
        d.left -= 1;
        if d.sent % SAVE_EVERY == 0 {
            o.save_meta(held, meta).ok();
        }
    }
    Ok(())
}

fn succeeded(m: &mut Meta) {
    m.delivered += 1;
    m.last_success = Some(now());
    m.consecutive_failures = 0;
    m.next_attempt = 0;
    m.last_error = None;
}

fn failed(m: &mut Meta, f: &Failure, retry_max: u64) {
    m.consecutive_failures += 1;
    let wait = FIRST_BACKOFF_SECS
        .saturating_mul(1 << (m.consecutive_failures - 1).min(20))
        .min(retry_max.max(1));
    m.next_attempt = now() + wait as i64;
    m.last_error = Some(f.to_string());
    if matches!(f, Failure::Setup(_)) {
        m.failures += 1;
    }
}

/// Send one event, again after 1 s and 2 s when the failure may pass.
fn send_with_retries(
    s: &Sender,
    ev: &Event,
    deadline: Instant,
    m: &mut Meta,
) -> std::result::Result<(), Failure> {
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match s.send(ev) {
            Ok(_) => return Ok(()),
            Err(f) => {
                m.failures += 1;
                if attempt == ATTEMPTS || !f.transient() || Instant::now() + pause >= deadline {
                    return Err(f);
                }
            }
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    unreachable!("the last attempt returns")
}

/// `--check` for one webhook: its files, then a `watch.test` event sent once, now.
pub fn check(hook: &Webhook, ev: &Event) -> std::result::Result<(u16, Duration), Failure> {
    let sender = Sender::new(hook)?;
    let t0 = Instant::now();
    sender.send(ev).map(|code| (code, t0.elapsed()))
}

/// The `watch.test` event of `--check`.
pub fn test_event(conf: &ServerConf) -> Result<Event> {
    let id = format!("{}-test", WatchState::fresh()?.instance);
    Ok(Draft::new(
        Kind::WatchTest,
        format!(
            "test event from watch-devices --check on {}",
            conf.server_host
        ),
    )
    .into_event(id, now(), &conf.server_host))
}

/// Step 3: write the metrics file atomically (mode 0644: node_exporter reads it).
pub fn write_metrics(paths: &Paths, fleet: &Fleet, path: &std::path::Path) -> Result<()> {
    let text = metrics::render(&metrics::snapshot(paths, fleet), Some(fleet.src.now));
    phonehome_plumbing::files::write(path, text.as_bytes(), 0o644, false).context("write", path)
}
