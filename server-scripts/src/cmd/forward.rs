//! `forward-device-port <id> <local>[:<remote>]`: ask a device for a reverse tunnel.
//! Under the device's lock (the device is looked up under it, so a concurrent
//! remove-device either finished first or waits) and the ports lock (two devices never
//! get one port), it writes the request with its expiry and regenerates the key file
//! granting exactly the requested listen ports. Both are written and fsynced first,
//! then renamed in the order that makes every crash point safe: adding grants the port
//! before the request names it, closing withdraws the request before the grant.
//! `--prune` (cron) drops expired requests, reconciles every key file with its
//! requests, removes what a removed device left, and stale temp files.
//! `--wait` (`wait.rs`) says whether the device hears the request now (a held session)
//! or when it polled last and is due next, then that it picked the request up, then
//! returns when the device's uid alone listens on the port, or fails with the device's
//! own reason, another listener on the port, or a device that list-devices would call
//! offline (silent for an hour or ten polls: said at once).

use crate::accounts::{self, Account};
use crate::cli::{self, Out};
use crate::config::ServerConf;
use crate::duration::{parse_duration, parse_ttl};
use crate::error::{Error, Result};
use crate::keys;
use crate::listeners::{self, Listener};
use crate::lock;
use crate::paths::Paths;
use crate::registry::{self, DeviceRecord};
use crate::requests::{self, Request};
use crate::say;
use crate::store;
use crate::wait::{self, Reach, Step};
use phonehome_plumbing::clock::{format_age, format_iso, format_utc, now};
use phonehome_plumbing::files::{self, Pending};
use phonehome_plumbing::text::for_terminal;
use phonehome_protocol::{parse_port, DeviceId, PortPair, MAX_REQUESTS};
use std::time::Duration;

const NAME: &str = "forward-device-port";
const ABOUT: &str =
    "Ask a device to open a reverse tunnel: its LOCAL port becomes reachable on this
server's loopback at REMOTE. With LOCAL alone a free REMOTE is taken from port_range.
The device picks the request up at its next poll. Without a port, list the device's
requests. REMOTE must be 1024 or above and free.";

/// Smallest remote port a device may be granted.
pub const MIN_REMOTE_PORT: u16 = 1024;
/// Largest key file read (one key line).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// Temp files of writes older than this are leftovers of a crash (`--prune`).
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// What was asked, once the arguments are parsed.
enum Mode {
    Prune,
    Show(String),
    Close {
        device: String,
        which: String,
    },
    Request {
        device: String,
        local: u16,
        remote: Option<u16>,
        ttl: Option<u64>,
        wait: Option<Option<u64>>,
    },
}

pub fn run(args: &[String], out: &mut Out) -> Result<()> {
    let mut opts = cli::base_options();
    opts.optopt("t", "ttl", "how long the request lives: 3600, 90s, 30m, 2h, 1d (default: default_ttl of server.conf, max 7d)", "DURATION");
    opts.optflagopt(
        "w",
        "wait",
        "wait until the tunnel is up, at most SECS (default: 2 polls + 15 s)",
        "SECS",
    );
    opts.optopt(
        "c",
        "close",
        "withdraw the request for REMOTE, or all of them",
        "REMOTE|all",
    );
    opts.optflag("j", "json", "print JSON for scripts");
    opts.optflag(
        "",
        "prune",
        "drop expired requests, reconcile key files with requests, remove leftovers (cron)",
    );
    let synopsis = "forward-device-port [OPTIONS] <ID|ALIAS> [<LOCAL>[:<REMOTE>]]\n       forward-device-port [OPTIONS] <ID|ALIAS> --close <REMOTE|all>\n       forward-device-port [OPTIONS] --prune";
    let args = join_wait_value(args);
    let Some(m) = cli::parse(out, NAME, &opts, &args, synopsis, ABOUT)? else {
        return Ok(());
    };
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    let json = m.opt_present("json");
    match parse_mode(&m)? {
        Mode::Prune => prune(out, &paths, &ServerConf::load(&paths)?),
        Mode::Show(device) => show(out, &paths, &registry::find(&paths, &device)?, json),
        Mode::Close { device, which } => {
            let conf = ServerConf::load(&paths)?;
            let rec = registry::find(&paths, &device)?;
            close_requests(out, &paths, &conf, &rec.id, &which, json)
        }
        Mode::Request {
            device,
            local,
            remote,
            ttl,
            wait,
        } => {
            let conf = ServerConf::load(&paths)?;
            let rec = registry::find(&paths, &device)?;
            let ttl = ttl.unwrap_or(conf.default_ttl);
            cli::require_root(NAME)?;
            let (rec, req) = add_request(&paths, &conf, &rec.id, local, remote, ttl)?;
            let wait = wait.map(|w| w.unwrap_or_else(|| conf.default_wait()));
            report_request(out, &paths, &conf, &rec, &req, wait, json)
        }
    }
}

/// `--wait 5` as most tools take it: the value after the flag when it reads as a
/// duration (getopts only takes `--wait=5`).
fn join_wait_value(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if a == "--wait" || a == "-w" {
            if let Some(v) = it
                .peek()
                .filter(|v| parse_duration(v).is_ok() && !v.contains(':'))
            {
                out.push(format!("--wait={}", v));
                it.next();
                continue;
            }
        }
        out.push(a.clone());
    }
    out
}

fn parse_mode(m: &getopts::Matches) -> Result<Mode> {
    if m.opt_present("prune") {
        if !m.free.is_empty() {
            return Err(Error::usage(
                "--prune takes no device: it looks at every device",
            ));
        }
        return Ok(Mode::Prune);
    }
    let (device, spec) =
        match m.free.as_slice() {
            [d] => (d.clone(), None),
            [d, s] => (d.clone(), Some(s.as_str())),
            _ => return Err(Error::usage(
                "expected a device and a port spec, e.g. forward-device-port 6466b34bde54 22:9876",
            )),
        };
    if let Some(which) = m.opt_str("close") {
        if spec.is_some() {
            return Err(Error::usage(
                "--close takes the port itself: forward-device-port <ID> --close <REMOTE|all>",
            ));
        }
        return Ok(Mode::Close { device, which });
    }
    let Some(spec) = spec else {
        if m.opt_present("wait") {
            return Err(Error::usage(
                "--wait needs a port request, e.g. forward-device-port ID 22:9876 --wait",
            ));
        }
        return Ok(Mode::Show(device));
    };
    let (local, remote) = parse_spec(spec)?;
    Ok(Mode::Request {
        device,
        local,
        remote,
        ttl: m.opt_str("ttl").map(|t| parse_ttl(&t)).transpose()?,
        wait: match (m.opt_present("wait"), m.opt_str("wait")) {
            (false, _) => None,
            (true, None) => Some(None),
            (true, Some(s)) => Some(Some(parse_duration(&s)?)),
        },
    })
}

/// `LOCAL:REMOTE` or `LOCAL` alone.
pub fn parse_spec(spec: &str) -> Result<(u16, Option<u16>)> {
    let (local, remote) = if spec.contains(':') {
        let p = PortPair::parse(spec)?;
        (p.local, Some(p.remote))
    } else {
        (parse_port(spec)?, None)
    };
    if let Some(r) = remote {
        if r < MIN_REMOTE_PORT {
            return Err(Error::usage(format!(
                "remote port {} is privileged (below {}): choose one from {} to 65535, or give only LOCAL to get a free one",
                r, MIN_REMOTE_PORT, MIN_REMOTE_PORT
            )));
        }
    }
    Ok((local, remote))
}

fn device_account(paths: &Paths, id: &DeviceId) -> Result<Account> {
    accounts::by_name(paths, &id.account())?.ok_or_else(|| {
        Error::new(format!(
            "device {} is registered but its account {} is missing: remove-device and add-device it again",
            id,
            id.account()
        ))
    })
}

/// The device's record, looked up again under its lock.
fn locked_record(paths: &Paths, id: &DeviceId) -> Result<DeviceRecord> {
    registry::load(paths, id)?.ok_or_else(|| {
        Error::new(format!(
            "unknown device {}: it was removed meanwhile; see list-devices",
            id
        ))
    })
}

/// The key file of a device granting exactly the remote ports of `reqs`, prepared.
fn prepare_grant(
    paths: &Paths,
    conf: &ServerConf,
    rec: &DeviceRecord,
    reqs: &[Request],
) -> Result<Pending> {
    let ports: Vec<u16> = reqs.iter().map(|r| r.remote).collect();
    let line = keys::key_line(&rec.key, &keys::gate_command(&conf.gate, paths), &ports);
    store::prepare(&paths.key_file(&rec.id), line.as_bytes(), 0o644)
}

fn prepare_requests(paths: &Paths, id: &DeviceId, reqs: &[Request]) -> Result<Pending> {
    store::ensure_dir(&paths.requests_dir(), 0o755)?;
    store::prepare(&paths.requests(id), &requests::file_bytes(id, reqs), 0o644)
}

/// A port no one else holds: not another device's request, no other listener.
fn check_port_free(
    paths: &Paths,
    port: u16,
    others: &[(DeviceId, Request)],
    held_by_other: impl Fn(u16) -> Option<Listener>,
) -> Result<()> {
    if let Some((other, r)) = others.iter().find(|(_, r)| r.remote == port) {
        return Err(Error::new(format!(
            "remote port {} is already requested for device {} (until {}): choose another, or give only LOCAL to get a free one",
            port, other, format_utc(r.expires)
        )));
    }
    if let Some(l) = held_by_other(port) {
        return Err(Error::new(format!(
            "remote port {} is already in use on this server ({} listens on {}:{}): choose another, or give only LOCAL to get a free one",
            port, user_name(paths, l.uid), l.addr, l.port
        )));
    }
    Ok(())
}

/// Record the request and grant its port; returns the device's record and the request.
fn add_request(
    paths: &Paths,
    conf: &ServerConf,
    id: &DeviceId,
    local: u16,
    remote: Option<u16>,
    ttl: u64,
) -> Result<(DeviceRecord, Request)> {
    let _device_lock = lock::device(paths, id)?;
    let rec = locked_record(paths, id)?;
    let account = device_account(paths, id)?;
    let _ports_lock = lock::ports(paths)?;
    let now = now();
    let mut mine = requests::unexpired(requests::load(paths, id)?, now);
    let others: Vec<(DeviceId, Request)> = requests::all_unexpired(paths, now)?
        .into_iter()
        .filter(|(other, _)| other != id)
        .collect();
    let listening = listeners::all();
    let held_by_other = |port: u16| {
        listening
            .iter()
            .find(|l| {
                l.port == port && !(l.uid == account.uid && mine.iter().any(|r| r.remote == port))
            })
            .copied()
    };
    let remote = match remote {
        Some(port) => {
            check_port_free(paths, port, &others, held_by_other)?;
            port
        }
        None => (conf.port_range.0..=conf.port_range.1)
            .find(|p| {
                !mine.iter().any(|r| r.remote == *p)
                    && !others.iter().any(|(_, r)| r.remote == *p)
                    && !listening.iter().any(|l| l.port == *p)
            })
            .ok_or_else(|| {
                Error::new(format!(
                    "no free port left in port_range {}-{}: close some requests or widen port_range in {}",
                    conf.port_range.0,
                    conf.port_range.1,
                    paths.conf().display()
                ))
            })?,
    };
    let req = Request {
        local,
        remote,
        created: now,
        expires: now + ttl as i64,
    };
    if let Some(existing) = mine.iter_mut().find(|r| r.remote == remote) {
        *existing = req;
    } else if mine.len() >= MAX_REQUESTS {
        return Err(Error::new(format!(
            "device {} already has {} requests, the most it can hold: close some with --close first",
            id, MAX_REQUESTS
        )));
    } else {
        mine.push(req);
    }
    mine.sort_by_key(|r| r.remote);
    // Grant first, then the request: a crash in between leaves a grant nobody asked
    // for (prune withdraws it), never a request the server refuses.
    let grant = prepare_grant(paths, conf, &rec, &mine)?;
    let request = prepare_requests(paths, id, &mine)?;
    store::commit_all(vec![grant, request])?;
    log::info!(
        "granted port {} to {} and recorded request {}",
        req.remote,
        id.account(),
        req.pair()
    );
    Ok((rec, req))
}

/// What was done, and with `--wait`, the wait.
fn report_request(
    out: &mut Out,
    paths: &Paths,
    conf: &ServerConf,
    rec: &DeviceRecord,
    req: &Request,
    wait: Option<u64>,
    json: bool,
) -> Result<()> {
    let ttl = (req.expires - req.created) as u64;
    if ttl < conf.poll_interval {
        log::warn!(
            "the request lives {} s, less than the poll interval of {} s: it may expire before the device picks it up",
            ttl,
            conf.poll_interval
        );
    }
    let connect = connect_hint(conf, req);
    if !json {
        say!(
            out,
            "requested {} on device {}, until {}; the device picks it up at its next poll (every {} s){}",
            req.pair(),
            rec.label(),
            format_utc(req.expires),
            conf.poll_interval,
            if conf.hold > 0 {
                ", or at once if it holds a session"
            } else {
                ""
            }
        )?;
    }
    let ready = match wait {
        None => None,
        Some(secs) => {
            if !json {
                say!(out, "waiting up to {} s for the tunnel...", secs)?;
                out.flush()?;
            }
            let account = device_account(paths, &rec.id)?;
            let mut tell = |step: &Step| -> Result<()> {
                if json {
                    return Ok(());
                }
                if let Some(line) = progress_line(rec, step) {
                    say!(out, "{}", line)?;
                    out.flush()?;
                }
                Ok(())
            };
            let last = wait::run(paths, conf, rec, &account, req, secs, &mut tell)?;
            wait_result(paths, rec, req, secs, last)?;
            Some(true)
        }
    };
    if json {
        let v = serde_json::json!({
            "device": rec.id, "alias": rec.alias, "local": req.local, "remote": req.remote,
            "created": format_iso(req.created), "expires": format_iso(req.expires),
            "expires_unix": req.expires, "ready": ready, "connect": connect,
        });
        return say!(out, "{}", v);
    }
    if ready.is_some() {
        say!(
            out,
            "tunnel up: {} listens on 127.0.0.1:{} of this server",
            rec.id.account(),
            req.remote
        )?;
    }
    say!(out, "connect: {}", connect)
}

fn user_name(paths: &Paths, uid: u32) -> String {
    match accounts::Db::load(paths)
        .ok()
        .and_then(|db| db.by_uid(uid).cloned())
    {
        Some(a) => format!("user {} (uid {})", a.name, uid),
        None => format!("uid {}", uid),
    }
}

fn close_requests(
    out: &mut Out,
    paths: &Paths,
    conf: &ServerConf,
    id: &DeviceId,
    which: &str,
    json: bool,
) -> Result<()> {
    let port = if which == "all" {
        None
    } else {
        Some(
            parse_port(which)
                .map_err(|e| Error::usage(format!("--close: {}; or use --close all", e)))?,
        )
    };
    cli::require_root(NAME)?;
    let _device_lock = lock::device(paths, id)?;
    let rec = locked_record(paths, id)?;
    let _ports_lock = lock::ports(paths)?;
    let mine = requests::unexpired(requests::load(paths, id)?, now());
    let (closed, kept): (Vec<Request>, Vec<Request>) = mine
        .into_iter()
        .partition(|r| port.map_or(true, |p| r.remote == p));
    if let Some(p) = port {
        if closed.is_empty() {
            let list: Vec<String> = kept.iter().map(|r| r.pair().to_string()).collect();
            return Err(Error::new(format!(
                "device {} has no request for remote port {} (its requests: {})",
                rec.label(),
                p,
                if list.is_empty() {
                    "none".into()
                } else {
                    list.join(", ")
                }
            )));
        }
    }
    // The request goes first, then the grant: a crash in between leaves a grant
    // without a request (prune withdraws it), never the other way round.
    let request = prepare_requests(paths, id, &kept)?;
    let grant = prepare_grant(paths, conf, &rec, &kept)?;
    store::commit_all(vec![request, grant])?;
    log::info!(
        "withdrew {} request(s) of {} and their grants",
        closed.len(),
        id.account()
    );
    if json {
        let pairs: Vec<String> = closed.iter().map(|r| r.pair().to_string()).collect();
        return say!(
            out,
            "{}",
            serde_json::json!({"device": rec.id, "closed": pairs})
        );
    }
    if closed.is_empty() {
        return say!(out, "device {} had no requests", rec.label());
    }
    for r in &closed {
        say!(
            out,
            "closed {} on device {}; the tunnel closes at its next poll",
            r.pair(),
            rec.label()
        )?;
    }
    Ok(())
}

fn show(out: &mut Out, paths: &Paths, rec: &DeviceRecord, json: bool) -> Result<()> {
    let mine = requests::unexpired(requests::load(paths, &rec.id)?, now());
    if json {
        let v: Vec<_> = mine
            .iter()
            .map(|r| serde_json::json!({"local": r.local, "remote": r.remote, "expires": format_iso(r.expires)}))
            .collect();
        return say!(
            out,
            "{}",
            serde_json::json!({"device": rec.id, "requests": v})
        );
    }
    if mine.is_empty() {
        return say!(out, "device {} has no requests", rec.label());
    }
    for r in mine {
        say!(out, "{}  until {}", r.pair(), format_utc(r.expires))?;
    }
    Ok(())
}

/// What one prune did.
#[derive(Default)]
struct Pruned {
    expired: usize,
    regranted: usize,
    leftovers: usize,
    temps: usize,
}

/// Bring every device's files back to what the registry and the unexpired requests
/// say: expired requests dropped, key files granting exactly the requested ports
/// (a crash between two renames, or an expiry), files of devices no longer registered
/// removed, and temp files of interrupted writes deleted; and the held-session slot
/// files back to what server.conf says.
fn prune(out: &mut Out, paths: &Paths, conf: &ServerConf) -> Result<()> {
    cli::require_root(NAME)?;
    let _registry_lock = lock::registry(paths)?;
    let mut done = Pruned::default();
    let devices = registry::list(paths)?;
    for rec in &devices {
        let _device_lock = lock::device(paths, &rec.id)?;
        prune_device(paths, conf, rec, &mut done)?;
    }
    done.leftovers += remove_leftovers(paths, &devices)?;
    let (made, dropped) = crate::hold::sync_slots(paths, conf)?;
    if made + dropped > 0 {
        log::info!(
            "held-session slots: {} made, {} removed (hold_sessions = {}, hold = {})",
            made,
            dropped,
            conf.hold_sessions,
            conf.hold
        );
    }
    for dir in [paths.keys_dir(), paths.requests_dir(), paths.state()] {
        match files::remove_stale_temps(&dir, STALE_TEMP_AGE) {
            Ok(n) => done.temps += n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("clean", &dir, e)),
        }
    }
    let Pruned {
        expired,
        regranted,
        leftovers,
        temps,
    } = done;
    if expired + regranted + leftovers + temps > 0 {
        say!(
            out,
            "pruned: {} expired request(s), {} key file(s) regranted, {} leftover file(s) of removed devices, {} stale temp file(s)",
            expired,
            regranted,
            leftovers,
            temps
        )?;
    }
    Ok(())
}

fn prune_device(
    paths: &Paths,
    conf: &ServerConf,
    rec: &DeviceRecord,
    done: &mut Pruned,
) -> Result<()> {
    let all = requests::load(paths, &rec.id)?;
    let kept = requests::unexpired(all.clone(), now());
    let wanted: Vec<u16> = kept.iter().map(|r| r.remote).collect();
    let granted = store::read(&paths.key_file(&rec.id), MAX_KEY_FILE_BYTES)?
        .map(|d| keys::granted_ports(&String::from_utf8_lossy(&d)));
    if kept.len() != all.len() {
        let request = prepare_requests(paths, &rec.id, &kept)?;
        store::commit_all(vec![request])?;
        done.expired += all.len() - kept.len();
    }
    if granted.as_deref() != Some(&wanted[..]) {
        store::commit_all(vec![prepare_grant(paths, conf, rec, &kept)?])?;
        done.regranted += 1;
        log::info!("key file of {} now grants {:?}", rec.id.account(), wanted);
    }
    Ok(())
}

/// Key files and request files of devices that are not in the registry.
fn remove_leftovers(paths: &Paths, devices: &[DeviceRecord]) -> Result<usize> {
    let registered = |id: &DeviceId| devices.iter().any(|d| d.id == *id);
    let mut removed = 0;
    for id in crate::paths::ids_in(&paths.requests_dir(), "read the requests")? {
        if !registered(&id) {
            store::remove(&paths.requests(&id))?;
            removed += 1;
        }
    }
    if let Ok(entries) = std::fs::read_dir(paths.keys_dir()) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(DeviceId::from_account) else {
                continue;
            };
            if !registered(&id) {
                store::remove(&paths.key_file(&id))?;
                log::info!(
                    "removed the key file of {}, which is not registered",
                    id.account()
                );
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// How to reach the tunnel from the admin's machine.
pub fn connect_hint(conf: &ServerConf, req: &Request) -> String {
    let server = if conf.server_port == 22 {
        format!("{}@{}", conf.admin_user, conf.server_host)
    } else {
        format!(
            "{}@{}:{}",
            conf.admin_user, conf.server_host, conf.server_port
        )
    };
    if req.local == 22 {
        format!("ssh -J {} -p {} root@localhost", server, req.remote)
    } else {
        let port_flag = if conf.server_port == 22 {
            String::new()
        } else {
            format!(" -p {}", conf.server_port)
        };
        format!(
            "ssh -N -L {r}:localhost:{r}{} {}@{}  (then use localhost:{r} on your machine)",
            port_flag,
            conf.admin_user,
            conf.server_host,
            r = req.remote
        )
    }
}

/// A progress line of `--wait` (the steps that do not end it).
fn progress_line(rec: &DeviceRecord, step: &Step) -> Option<String> {
    let t = now();
    let at = |when: i64| format!("{} ({})", format_utc(when), format_age(t - when));
    Some(match step {
        Step::Reach(Reach::Holding { until }) => format!(
            "device {} holds a session now (until {}): it hears the request at once",
            rec.label(),
            format_utc(*until)
        ),
        Step::Reach(Reach::Polled { at: last, next }) => format!(
            "device {} last polled at {}; its next poll is due {}",
            rec.label(),
            at(*last),
            if *next >= t {
                format!("at about {} (in {} s)", format_utc(*next), next - t)
            } else {
                format!("now (it was expected at {})", format_utc(*next))
            }
        ),
        Step::Reach(Reach::NotYet { added }) => format!(
            "device {} has not called in since it was added at {}: its first poll picks the request up",
            rec.label(),
            at(*added)
        ),
        Step::PickedUp { at: when, held } => format!(
            "device {} picked the request up at {}{}",
            rec.label(),
            format_utc(*when),
            if *held { " (in its held session)" } else { " (at its poll)" }
        ),
        _ => return None,
    })
}

/// How a wait ended: Ok when the tunnel is up, else the error that says why.
fn wait_result(
    paths: &Paths,
    rec: &DeviceRecord,
    req: &Request,
    secs: u64,
    last: Step,
) -> Result<()> {
    let t = now();
    let queued = format!("the request stays queued until {}", format_utc(req.expires));
    Err(Error::new(match last {
        Step::Up => return Ok(()),
        Step::Taken(l) => format!(
            "port {} is held by {} on {}: the device's tunnel cannot use it; close that listener or request another port",
            req.remote,
            user_name(paths, l.uid),
            l.addr
        ),
        Step::Failed(why) => format!(
            "device {} reports that tunnel {} failed: {}",
            rec.label(),
            req.pair(),
            for_terminal(&why, 300)
        ),
        Step::Reach(Reach::Offline { last: Some(last) }) => format!(
            "device {} is offline: it last called in at {} ({}); {}. See `phonehome status` on the device",
            rec.label(),
            format_utc(last),
            format_age(t - last),
            queued
        ),
        Step::Reach(Reach::Offline { last: None }) => format!(
            "device {} has never called in (added {}); {}: check the agent on the device (phonehome status) and its cron line",
            rec.label(),
            format_age(t - rec.created),
            queued
        ),
        Step::TimedOut { last: Some(h) } if h.received >= req.created => format!(
            "device {} called in at {} but the tunnel on port {} is not up after {} s{}; see `phonehome status` on the device",
            rec.label(),
            format_utc(h.received),
            req.remote,
            secs,
            h.report_error
                .map(|e| format!(" (its status report was refused: {})", for_terminal(&e, 200)))
                .unwrap_or_default()
        ),
        Step::TimedOut { last: Some(h) } => format!(
            "device {} has not called in since {}: {}",
            rec.label(),
            format_utc(h.received),
            queued
        ),
        Step::TimedOut { last: None } => format!(
            "device {} has never called in: check the agent on the device (phonehome status) and its cron line",
            rec.label()
        ),
        other => format!("--wait ended unexpectedly: {:?}", other),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn wait_takes_its_value_with_a_space_too() {
        assert_eq!(
            join_wait_value(&v(&["id", "22:9876", "--wait", "5"])),
            v(&["id", "22:9876", "--wait=5"])
        );
        assert_eq!(
            join_wait_value(&v(&["--wait", "30s", "id", "22:9876"])),
            v(&["--wait=30s", "id", "22:9876"])
        );
        assert_eq!(
            join_wait_value(&v(&["id", "22:9876", "--wait"])),
            v(&["id", "22:9876", "--wait"])
        );
        assert_eq!(
            join_wait_value(&v(&["id", "--wait", "22:9876"])),
            v(&["id", "--wait", "22:9876"])
        );
        assert_eq!(
            join_wait_value(&v(&["id", "22:9876", "-w", "5"])),
            v(&["id", "22:9876", "--wait=5"])
        );
    }
}
