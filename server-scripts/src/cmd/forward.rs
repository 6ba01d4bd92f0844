//! `forward-device-port <id> <local>[:<remote>]`: ask a device for a reverse tunnel.
//! Checks the device and ports, then under the device's lock (and the ports lock, so
//! two devices never get one port) writes the request with its expiry and regenerates
//! the key file granting exactly the requested listen ports, both atomically (written
//! and fsynced first, then renamed). Expired requests are dropped on every write.
//! `--wait` watches /proc/net/tcp{,6} until the device's uid alone listens on the port,
//! or fails with the device's own reported error, or with how long it has been silent.

use crate::accounts::{self, Account};
use crate::atomic;
use crate::cli;
use crate::config::ServerConf;
use crate::duration::{parse_duration, parse_ttl};
use crate::error::{Error, Result};
use crate::keys;
use crate::listeners;
use crate::lock;
use crate::paths::Paths;
use crate::records;
use crate::registry::{self, DeviceRecord};
use crate::requests::{self, Request};
use crate::timefmt::{format_iso, format_utc, now};
use phonehome_protocol::{parse_port, DeviceId, PortPair, TunnelState, MAX_REQUESTS};
use std::time::Duration;

const NAME: &str = "forward-device-port";
const ABOUT: &str =
    "Ask a device to open a reverse tunnel: its LOCAL port becomes reachable on this
server's loopback at REMOTE. With LOCAL alone a free REMOTE is taken from port_range.
The device picks the request up at its next poll. Without a port, list the device's
requests. REMOTE must be 1024 or above and free.";

/// Smallest remote port a device may be granted.
pub const MIN_REMOTE_PORT: u16 = 1024;
/// How often --wait looks at the listeners and the device's report.
const WAIT_STEP: Duration = Duration::from_millis(250);

pub fn run(args: &[String]) -> Result<()> {
    let mut opts = cli::base_options();
    opts.optopt("t", "ttl", "how long the request lives: 3600, 90s, 30m, 2h, 1d (default: default_ttl of server.conf, max 7d)", "DURATION");
    opts.optflagopt(
        "w",
        "wait",
        "wait until the tunnel is up, at most SECS given as --wait=SECS (default: 2 polls + 15 s)",
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
        "drop expired requests of every device from its requests and key file (cron)",
    );
    let synopsis = "forward-device-port [OPTIONS] <ID|ALIAS> [<LOCAL>[:<REMOTE>]]\n       forward-device-port [OPTIONS] <ID|ALIAS> --close <REMOTE|all>\n       forward-device-port [OPTIONS] --prune";
    let Some(m) = cli::parse(NAME, &opts, args, synopsis, ABOUT)? else {
        return Ok(());
    };
    if m.opt_present("prune") {
        if !m.free.is_empty() {
            return Err(Error::usage(
                "--prune takes no device: it looks at every device",
            ));
        }
        let paths = Paths::resolve(m.opt_str("root").as_deref())?;
        return prune(&paths, &ServerConf::load(&paths)?);
    }
    if m.free.is_empty() || m.free.len() > 2 {
        return Err(Error::usage(
            "expected a device and a port spec, e.g. forward-device-port 6466b34bde54 22:9876",
        ));
    }
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    let conf = ServerConf::load(&paths)?;
    let rec = registry::find(&paths, &m.free[0])?;
    let id = rec.device_id()?;
    let json = m.opt_present("json");
    let ttl = match m.opt_str("ttl") {
        Some(t) => parse_ttl(&t)?,
        None => conf.default_ttl,
    };
    let wait = match (m.opt_present("wait"), m.opt_str("wait")) {
        (false, _) => None,
        (true, None) => Some(conf.default_wait()),
        (true, Some(s)) => Some(parse_duration(&s)?),
    };
    if let Some(close) = m.opt_str("close") {
        if m.free.len() != 1 {
            return Err(Error::usage(
                "--close takes the port itself: forward-device-port <ID> --close <REMOTE|all>",
            ));
        }
        return close_requests(&paths, &conf, &rec, &id, &close, json);
    }
    let Some(spec) = m.free.get(1) else {
        return show(&paths, &rec, &id, json);
    };
    let (local, remote) = parse_spec(spec)?;
    cli::require_root(NAME)?;
    let account = device_account(&paths, &id)?;
    let req = add_request(&paths, &conf, &rec, &id, &account, local, remote, ttl)?;
    let connect = connect_hint(&conf, &req);
    if !json {
        println!(
            "requested {} on device {}, until {}; the device picks it up at its next poll (every {} s)",
            req.pair(),
            rec.label(),
            format_utc(req.expires),
            conf.poll_interval
        );
    }
    let ready = match wait {
        None => None,
        Some(secs) => {
            if !json {
                println!("waiting up to {} s for the tunnel...", secs);
            }
            wait_for_tunnel(&paths, &id, &rec, &account, &req, secs)?;
            Some(true)
        }
    };
    if json {
        let v = serde_json::json!({
            "device": rec.id, "alias": rec.alias, "local": req.local, "remote": req.remote,
            "created": format_iso(req.created), "expires": format_iso(req.expires),
            "expires_unix": req.expires, "ready": ready, "connect": connect,
        });
        println!("{}", v);
    } else {
        if ready.is_some() {
            println!(
                "tunnel up: {} listens on 127.0.0.1:{} of this server",
                id.account(),
                req.remote
            );
        }
        println!("connect: {}", connect);
    }
    Ok(())
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

/// The request file and key file of a device for `reqs`, written but not yet renamed.
fn prepare_files(
    paths: &Paths,
    conf: &ServerConf,
    rec: &DeviceRecord,
    id: &DeviceId,
    reqs: &[Request],
) -> Result<Vec<atomic::Pending>> {
    let ports: Vec<u16> = reqs.iter().map(|r| r.remote).collect();
    let line = keys::key_line(&rec.key, &keys::gate_command(&conf.gate, paths), &ports);
    Ok(vec![
        atomic::prepare(
            &paths.requests(id),
            &requests::file_bytes(id, reqs),
            0o644,
            true,
        )?,
        atomic::prepare(&paths.key_file(id), line.as_bytes(), 0o644, true)?,
    ])
}

#[allow(clippy::too_many_arguments)]
fn add_request(
    paths: &Paths,
    conf: &ServerConf,
    rec: &DeviceRecord,
    id: &DeviceId,
    account: &Account,
    local: u16,
    remote: Option<u16>,
    ttl: u64,
) -> Result<Request> {
    let _device_lock = lock::device(paths, id)?;
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
    atomic::commit_all(prepare_files(paths, conf, rec, id, &mine)?)?;
    Ok(req)
}

fn user_name(paths: &Paths, uid: u32) -> String {
    match accounts::by_uid(paths, uid) {
        Ok(Some(a)) => format!("user {} (uid {})", a.name, uid),
        _ => format!("uid {}", uid),
    }
}

fn close_requests(
    paths: &Paths,
    conf: &ServerConf,
    rec: &DeviceRecord,
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
    let _ports_lock = lock::ports(paths)?;
    let now = now();
    let mine = requests::unexpired(requests::load(paths, id)?, now);
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
    atomic::commit_all(prepare_files(paths, conf, rec, id, &kept)?)?;
    if json {
        let pairs: Vec<String> = closed.iter().map(|r| r.pair().to_string()).collect();
        println!("{}", serde_json::json!({"device": rec.id, "closed": pairs}));
    } else if closed.is_empty() {
        println!("device {} had no requests", rec.label());
    } else {
        for r in &closed {
            println!(
                "closed {} on device {}; the tunnel closes at its next poll",
                r.pair(),
                rec.label()
            );
        }
    }
    Ok(())
}

fn show(paths: &Paths, rec: &DeviceRecord, id: &DeviceId, json: bool) -> Result<()> {
    let mine = requests::unexpired(requests::load(paths, id)?, now());
    if json {
        let v: Vec<_> = mine
            .iter()
            .map(|r| serde_json::json!({"local": r.local, "remote": r.remote, "expires": format_iso(r.expires)}))
            .collect();
        println!("{}", serde_json::json!({"device": rec.id, "requests": v}));
    } else if mine.is_empty() {
        println!("device {} has no requests", rec.label());
    } else {
        for r in mine {
            println!("{}  until {}", r.pair(), format_utc(r.expires));
        }
    }
    Ok(())
}

/// Rewrite the requests and key file of every device holding an expired request, so
/// that an expired port is no longer granted (the gate already stops serving it).
fn prune(paths: &Paths, conf: &ServerConf) -> Result<()> {
    cli::require_root(NAME)?;
    let mut pruned = 0;
    for rec in registry::list(paths)? {
        let id = rec.device_id()?;
        let _device_lock = lock::device(paths, &id)?;
        let all = requests::load(paths, &id)?;
        let kept = requests::unexpired(all.clone(), now());
        if kept.len() != all.len() {
            atomic::commit_all(prepare_files(paths, conf, &rec, &id, &kept)?)?;
            pruned += all.len() - kept.len();
        }
    }
    if pruned > 0 {
        println!("dropped {} expired request(s)", pruned);
    }
    Ok(())
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

fn wait_for_tunnel(
    paths: &Paths,
    id: &DeviceId,
    rec: &DeviceRecord,
    account: &Account,
    req: &Request,
    secs: u64,
) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let on_port = listeners::on_port(req.remote);
        if listeners::held_only_by(&on_port, account.uid) {
            return Ok(());
        }
        if let Some(l) = on_port.iter().find(|l| l.uid != account.uid) {
            return Err(Error::new(format!(
                "port {} is held by {} on {}: the device's tunnel cannot use it; close that listener or request another port",
                req.remote,
                user_name(paths, l.uid),
                l.addr
            )));
        }
        if let Some(stored) = records::report(paths, id).ok().flatten() {
            if stored.received >= req.created {
                let failed = stored.report.tunnels.iter().find(|t| {
                    t.remote == req.remote && t.local == req.local && t.state == TunnelState::Failed
                });
                if let Some(t) = failed {
                    return Err(Error::new(format!(
                        "device {} reports that tunnel {} failed: {}",
                        rec.label(),
                        req.pair(),
                        t.last_error.as_deref().unwrap_or("no reason given")
                    )));
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            let hb = records::heartbeat(paths, id).ok().flatten();
            return Err(Error::new(match hb {
                None => format!(
                    "device {} has never called in: check the agent on the device (phonehome status) and its cron line",
                    rec.label()
                ),
                Some(h) if h.received < req.created => format!(
                    "device {} has not called in since {}: the request stays queued until {}",
                    rec.label(),
                    format_utc(h.received),
                    format_utc(req.expires)
                ),
                Some(h) => format!(
                    "device {} called in at {} but the tunnel on port {} is not up after {} s{}; see `phonehome status` on the device",
                    rec.label(),
                    format_utc(h.received),
                    req.remote,
                    secs,
                    h.report_error.map(|e| format!(" (its status report was refused: {})", e)).unwrap_or_default()
                ),
            }));
        }
        std::thread::sleep(WAIT_STEP);
    }
}
