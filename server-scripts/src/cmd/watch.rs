//! `watch-devices`: tell the admin's webhooks when a device goes dark, comes back, or a
//! tunnel fails, and keep node_exporter's textfile up to date. `--once` is one run (the
//! cron line install-server.sh writes, every minute); without it, a service that runs
//! every `--interval` seconds (the systemd unit); `--check` validates server.conf and
//! sends a `watch.test` to each webhook, saying what is wrong. The work itself is in
//! `crate::watch`; this module parses the flags and reports.

use crate::cli::{self, Out};
use crate::config::ServerConf;
use crate::error::{Error, Result};
use crate::fleet;
use crate::outbox::Outbox;
use crate::paths::Paths;
use crate::say;
use crate::watch::{self, Delivery, Detected, Outcome};
use phonehome_plumbing::clock::{format_iso, now};
use std::collections::HashMap;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NAME: &str = "watch-devices";
const ABOUT: &str = "Watch the fleet as list-devices sees it and send an event to every webhook of
server.conf on each change: device.added, device.removed, device.online,
device.offline (no heartbeat for offline_after), tunnel.up, tunnel.failed,
tunnel.closed, agent.error, key.refused. Events wait in an outbox per webhook until
the receiver takes them, in order. With metrics_file set, writes node_exporter's
textfile after each run. --once: one run (cron); without it, run every --interval
seconds (a service); --check: validate server.conf and send a watch.test event.";

/// How long `--once` may spend delivering, so that a run ends before cron's next.
const ONCE_DELIVERY_SECS: u64 = 40;

enum Mode {
    Once,
    Check,
    Serve(u64),
}

pub fn run(args: &[String], out: &mut Out) -> Result<()> {
    let mut opts = cli::base_options();
    opts.optflag("", "once", "one run, then exit (for cron)");
    opts.optflag(
        "",
        "check",
        "validate server.conf, send a watch.test event to each webhook, say what is wrong",
    );
    opts.optopt(
        "",
        "interval",
        "as a service: seconds between runs (default: poll_interval of server.conf)",
        "SECS",
    );
    cli::log_option(&mut opts);
    let synopsis = "watch-devices [OPTIONS] --once | --check | [--interval SECS]";
    let Some(m) = cli::parse(out, NAME, &opts, args, synopsis, ABOUT)? else {
        return Ok(());
    };
    let mode = match (
        m.opt_present("once"),
        m.opt_present("check"),
        m.opt_str("interval"),
    ) {
        (true, false, None) => Mode::Once,
        (false, true, None) => Mode::Check,
        (false, false, i) => Mode::Serve(parse_interval(i.as_deref())?),
        _ => {
            return Err(Error::usage(
                "--once, --check and --interval exclude each other (see watch-devices --help)",
            ))
        }
    };
    cli::require_root(NAME)?;
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    let logs = fleet::explicit_logs(&m.opt_strs("log"))?;
    match mode {
        Mode::Once => once(&paths, &logs, out),
        Mode::Check => check(&paths, out),
        Mode::Serve(secs) => serve(&paths, &logs, secs, out),
    }
}

/// `--interval`: 0 (or absent) means the poll interval.
fn parse_interval(s: Option<&str>) -> Result<u64> {
    match s {
        None => Ok(0),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=86400).contains(n))
            .ok_or_else(|| Error::usage("--interval takes seconds from 1 to 86400")),
    }
}

fn once(paths: &Paths, logs: &[PathBuf], out: &mut Out) -> Result<()> {
    let d = watch::detect(paths, logs)?;
    report_detected(out, &d)?;
    let deadline = Instant::now() + Duration::from_secs(ONCE_DELIVERY_SECS);
    let conf = &d.fleet.src.conf;
    let handles: Vec<JoinHandle<Result<Delivery>>> = conf
        .webhooks
        .iter()
        .map(|h| spawn_delivery(paths, h, conf.webhook_retry_max, deadline))
        .collect();
    for h in handles {
        report_delivery(out, join(h), false)?;
    }
    metrics(paths, &d)
}

fn spawn_delivery(
    paths: &Paths,
    hook: &crate::webhook::Webhook,
    retry_max: u64,
    deadline: Instant,
) -> JoinHandle<Result<Delivery>> {
    let (paths, hook) = (paths.clone(), hook.clone());
    std::thread::spawn(move || watch::deliver(&paths, &hook, retry_max, deadline))
}

fn join(h: JoinHandle<Result<Delivery>>) -> Result<Delivery> {
    h.join()
        .unwrap_or_else(|_| Err(Error::new("a delivery thread panicked")))
}

fn metrics(paths: &Paths, d: &Detected) -> Result<()> {
    if let Some(path) = &d.fleet.src.conf.metrics_file {
        watch::write_metrics(paths, &d.fleet, path)?;
    }
    Ok(())
}

fn report_detected(out: &mut Out, d: &Detected) -> Result<()> {
    if d.first {
        say!(
            out,
            "first run: the state of {} device(s) recorded; every change from now on is an event",
            d.devices
        )?;
    }
    for e in &d.events {
        say!(out, "{:<15} {}", e.event.as_str(), e.message)?;
    }
    for (label, n) in &d.dropped {
        say!(out, "{}: queue full, {} oldest event(s) dropped", label, n)?;
    }
    for (key, n) in &d.abandoned {
        log::warn!(
            "the outbox {} belongs to no webhook of server.conf any more: removed with its {} queued file(s)",
            key,
            n
        );
    }
    Ok(())
}

/// One line per delivery that did something; `quiet_waits`: not for a webhook that
/// is only waiting out its backoff (the service would say so every turn).
fn report_delivery(out: &mut Out, r: Result<Delivery>, quiet_waits: bool) -> Result<()> {
    let d = match r {
        Ok(d) => d,
        Err(e) => {
            log::warn!("delivery: {}", e);
            return Ok(());
        }
    };
    let what = match &d.outcome {
        Outcome::Done if d.sent == 0 => return Ok(()),
        Outcome::Waiting(_) | Outcome::Busy if quiet_waits => return Ok(()),
        Outcome::Done => format!("{} event(s) delivered", d.sent),
        Outcome::OutOfTime => format!(
            "{} event(s) delivered, {} left for the next run",
            d.sent, d.left
        ),
        Outcome::Busy => "another run is delivering to it".to_string(),
        Outcome::Waiting(t) => format!(
            "{} event(s) kept; it failed recently, next attempt at {}",
            d.left,
            format_iso(*t)
        ),
        Outcome::Failed(f) => format!(
            "{} event(s) delivered, then FAILED: {}; {} event(s) kept for the next attempt",
            d.sent, f, d.left
        ),
    };
    say!(out, "{}: {}", d.label, what)
}

/// The service: a run every `secs` (0: the poll interval); each webhook delivers on its
/// own thread, started again only once its previous delivery ended.
fn serve(paths: &Paths, logs: &[PathBuf], secs: u64, out: &mut Out) -> Result<()> {
    let mut running: HashMap<String, JoinHandle<Result<Delivery>>> = HashMap::new();
    loop {
        let start = Instant::now();
        let interval = match run_service_once(paths, logs, &mut running, out) {
            Ok(poll) => {
                if secs == 0 {
                    poll
                } else {
                    secs
                }
            }
            Err(e) => {
                // A bad edit of server.conf, a full disk: say so, try again next time.
                eprintln!("{}: {}", NAME, e);
                if secs == 0 {
                    crate::config::DEFAULT_WEBHOOK_RETRY_MAX_SECS.min(60)
                } else {
                    secs
                }
            }
        };
        out.flush()?;
        let next = start + Duration::from_secs(interval);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// One turn of the service; returns the poll interval (the default pace).
fn run_service_once(
    paths: &Paths,
    logs: &[PathBuf],
    running: &mut HashMap<String, JoinHandle<Result<Delivery>>>,
    out: &mut Out,
) -> Result<u64> {
    let finished: Vec<String> = running
        .iter()
        .filter(|(_, h)| h.is_finished())
        .map(|(k, _)| k.clone())
        .collect();
    for k in finished {
        if let Some(h) = running.remove(&k) {
            report_delivery(out, join(h), true)?;
        }
    }
    let d = watch::detect(paths, logs)?;
    report_detected(out, &d)?;
    let conf = &d.fleet.src.conf;
    let interval = conf.poll_interval;
    // A delivery may take most of a turn, never more than a few.
    let deadline = Instant::now() + Duration::from_secs(interval.clamp(10, 300));
    for h in &conf.webhooks {
        running
            .entry(h.url.key())
            .or_insert_with(|| spawn_delivery(paths, h, conf.webhook_retry_max, deadline));
    }
    metrics(paths, &d)?;
    Ok(interval)
}

/// `--check`: the configuration, each webhook's files and a test event, the queues.
fn check(paths: &Paths, out: &mut Out) -> Result<()> {
    let conf = ServerConf::load(paths)?;
    say!(
        out,
        "{}: ok: {} webhook(s), offline_after {} s, key_refused_after {}, webhook_queue {}",
        paths.conf().display(),
        conf.webhooks.len(),
        conf.offline_after(),
        conf.key_refused_after,
        conf.webhook_queue
    )?;
    let mut failed = 0;
    if conf.webhooks.is_empty() {
        say!(
            out,
            "no webhook = lines: events are only printed by --once (see server-scripts/README.md)"
        )?;
    }
    let test = watch::test_event(&conf)?;
    for hook in &conf.webhooks {
        match watch::check(hook, &test) {
            Ok((code, took)) => say!(
                out,
                "{}, format {}: ok, watch.test accepted (HTTP {}) in {} ms",
                hook.label(),
                hook.format.as_str(),
                code,
                took.as_millis()
            )?,
            Err(f) => {
                failed += 1;
                say!(
                    out,
                    "{}, format {}: FAILED: {}",
                    hook.label(),
                    hook.format.as_str(),
                    f
                )?;
            }
        }
        queue_status(paths, hook, out)?;
    }
    failed += check_metrics_file(&conf, out)?;
    if failed > 0 {
        return Err(Error::new(format!(
            "{} problem(s) found; see above",
            failed
        )));
    }
    Ok(())
}

fn queue_status(paths: &Paths, hook: &crate::webhook::Webhook, out: &mut Out) -> Result<()> {
    let o = Outbox::of(paths, hook);
    let queued = o.entries()?.len();
    let m = o.meta();
    if queued == 0 && m.last_error.is_none() {
        return Ok(());
    }
    say!(
        out,
        "  {} event(s) queued, {} delivered, {} failed attempt(s){}{}",
        queued,
        m.delivered,
        m.failures,
        m.last_error
            .as_deref()
            .map_or(String::new(), |e| format!("; last error: {}", e)),
        if m.next_attempt > now() {
            format!("; next attempt at {}", format_iso(m.next_attempt))
        } else {
            String::new()
        }
    )
}

fn check_metrics_file(conf: &ServerConf, out: &mut Out) -> Result<usize> {
    let Some(path) = &conf.metrics_file else {
        return Ok(0);
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    if dir.is_dir() {
        say!(
            out,
            "metrics_file {}: ok (its directory exists)",
            path.display()
        )?;
        Ok(0)
    } else {
        say!(
            out,
            "metrics_file {}: FAILED: {} is not a directory (node_exporter's --collector.textfile.directory)",
            path.display(),
            dir.display()
        )?;
        Ok(1)
    }
}
