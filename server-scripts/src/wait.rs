//! What `forward-device-port --wait` watches, as data: whether the device hears the
//! request now (it holds a session) or when it polled last and is due next, whether
//! it picked the request up, and how it ended: the tunnel up (the device's uid alone
//! listens on the port), another listener on the port, the device's own reason for a
//! failed tunnel (an outcome line of a held session, or the next poll's report), or a
//! device that is offline, said at once rather than at the deadline.
//!
//! Everything here is read from the gate's records in a directory the device can
//! write: bounded reads, no symlinks, and nothing in them is more than the device's
//! word (a forged session record can only make `--wait` say the device listens).
//! `forward.rs` turns each [`Step`] into a line for a person.

use crate::accounts::Account;
use crate::config::ServerConf;
use crate::gate_status::{self, Heartbeat, HeldSession, StoredReport};
use crate::listeners::{self, Listener};
use crate::paths::Paths;
use crate::registry::DeviceRecord;
use crate::requests::Request;
use phonehome_protocol::OutcomeState;
use std::time::{Duration, Instant};

/// How often the listeners and the device's records are looked at.
pub const WAIT_STEP: Duration = Duration::from_millis(100);

/// Whether and when the device hears a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// It holds a session now, until then (server time): it hears the request at once.
    Holding { until: i64 },
    /// Its last poll, and when the next one is due.
    Polled { at: i64, next: i64 },
    /// Added at `added` and not called in yet (its first poll is due).
    NotYet { added: i64 },
    /// Silent for longer than list-devices calls offline (`stale_after`): it will
    /// not hear it soon.
    Offline { last: Option<i64> },
}

/// One thing worth telling the person waiting, in the order they happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Reach(Reach),
    /// The device heard the request: at `at`, in a held session or at a poll.
    PickedUp {
        at: i64,
        held: bool,
    },
    /// The device's uid alone listens on the port.
    Up,
    /// Another process holds the port.
    Taken(Listener),
    /// The device says the tunnel failed, and why.
    Failed(String),
    /// Nothing happened by the deadline: what the records say.
    TimedOut {
        last: Option<Heartbeat>,
    },
}

impl Step {
    /// True for the steps that end the wait.
    pub fn is_last(&self) -> bool {
        !matches!(
            self,
            Step::Reach(Reach::Holding { .. } | Reach::Polled { .. } | Reach::NotYet { .. })
                | Step::PickedUp { .. }
        )
    }
}

/// One look at the device's records.
#[derive(Default)]
struct Seen {
    heartbeat: Option<Heartbeat>,
    session: Option<HeldSession>,
    report: Option<StoredReport>,
}

impl Seen {
    fn read(paths: &Paths, rec: &DeviceRecord) -> Seen {
        match gate_status::read(paths, &rec.id).ok().flatten() {
            Some(s) => Seen {
                heartbeat: Some(s.heartbeat),
                session: s.session,
                report: s.report,
            },
            None => Seen::default(),
        }
    }
}

fn reach(conf: &ServerConf, rec: &DeviceRecord, seen: &Seen, now: i64) -> Reach {
    if let Some(s) = seen.session.as_ref().filter(|s| s.is_live(now)) {
        return Reach::Holding { until: s.until };
    }
    let window = conf.stale_after();
    match &seen.heartbeat {
        Some(h) if now - h.received <= window => Reach::Polled {
            at: h.received,
            next: h.received + conf.poll_interval as i64,
        },
        None if now - rec.created <= window => Reach::NotYet { added: rec.created },
        h => Reach::Offline {
            last: h.as_ref().map(|h| h.received),
        },
    }
}

fn picked_up(req: &Request, seen: &Seen) -> Option<Step> {
    let held = seen.session.as_ref().and_then(|s| {
        s.outcomes
            .iter()
            .find(|o| o.local == req.local && o.remote == req.remote && o.at >= req.created)
            .map(|o| o.at)
    });
    if let Some(at) = held {
        return Some(Step::PickedUp { at, held: true });
    }
    let h = seen.heartbeat.as_ref()?;
    (h.received >= req.created && h.served.contains(&req.pair().to_string())).then_some(
        Step::PickedUp {
            at: h.received,
            held: false,
        },
    )
}

/// The device's own reason for a failed tunnel, said after the request was made.
fn failure(req: &Request, seen: &Seen) -> Option<String> {
    let mine = |local: u16, remote: u16| local == req.local && remote == req.remote;
    if let Some(o) = seen.session.as_ref().and_then(|s| {
        s.outcomes.iter().find(|o| {
            mine(o.local, o.remote) && o.at >= req.created && o.state == OutcomeState::Failed
        })
    }) {
        return Some(o.reason.clone().unwrap_or_else(|| "no reason given".into()));
    }
    crate::fleet::reported_failure(seen.report.as_ref()?, req)
}

/// Wait for the tunnel of `req` at most `secs`, calling `tell` with each step as it
/// happens; the last step says how it ended.
pub fn run(
    paths: &Paths,
    conf: &ServerConf,
    rec: &DeviceRecord,
    account: &Account,
    req: &Request,
    secs: u64,
    tell: &mut dyn FnMut(&Step) -> crate::error::Result<()>,
) -> crate::error::Result<Step> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut told_reach: Option<Reach> = None;
    let mut told_pickup = false;
    loop {
        let now = phonehome_plumbing::clock::now();
        let on_port = listeners::on_port(req.remote);
        let last = if listeners::held_only_by(&on_port, account.uid) {
            Some(Step::Up)
        } else {
            on_port
                .iter()
                .find(|l| l.uid != account.uid)
                .map(|l| Step::Taken(*l))
        };
        if let Some(step) = last {
            // A tunnel that came up between two looks was picked up first: say so.
            if !told_pickup {
                if let Some(p) = picked_up(req, &Seen::read(paths, rec)) {
                    tell(&p)?;
                }
            }
            tell(&step)?;
            return Ok(step);
        }
        let seen = Seen::read(paths, rec);
        if !told_pickup {
            let r = reach(conf, rec, &seen, now);
            // Said once, and again only when the device starts to hold a session.
            let news = match (&told_reach, &r) {
                (None, _) => true,
                (Some(Reach::Holding { .. }), _) => false,
                (Some(_), Reach::Holding { .. }) => true,
                _ => false,
            };
            if news {
                let step = Step::Reach(r.clone());
                tell(&step)?;
                if step.is_last() {
                    return Ok(step);
                }
                told_reach = Some(r);
            }
            if let Some(step) = picked_up(req, &seen) {
                tell(&step)?;
                told_pickup = true;
            }
        }
        if let Some(why) = failure(req, &seen) {
            let step = Step::Failed(why);
            tell(&step)?;
            return Ok(step);
        }
        if Instant::now() >= deadline {
            let step = Step::TimedOut {
                last: seen.heartbeat,
            };
            tell(&step)?;
            return Ok(step);
        }
        std::thread::sleep(WAIT_STEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate_status::TunnelOutcome;
    use phonehome_protocol::DeviceId;

    fn conf() -> ServerConf {
        let mut c = ServerConf::defaults(&Paths::new(std::path::Path::new("/")).unwrap());
        c.poll_interval = 60;
        c
    }

    fn rec(created: i64) -> DeviceRecord {
        DeviceRecord {
            id: DeviceId::parse("6466b34bde54").unwrap(),
            alias: None,
            key: String::new(),
            fingerprint: String::new(),
            created,
        }
    }

    fn hb(received: i64, served: &[&str]) -> Heartbeat {
        Heartbeat {
            received,
            from: None,
            port: None,
            report_error: None,
            served: served.iter().map(|s| s.to_string()).collect(),
        }
    }

    const REQ: Request = Request {
        local: 22,
        remote: 9876,
        created: 1000,
        expires: 5000,
    };

    #[test]
    fn where_the_device_stands() {
        let c = conf();
        let polled = Seen {
            heartbeat: Some(hb(990, &[])),
            ..Seen::default()
        };
        assert_eq!(
            reach(&c, &rec(0), &polled, 1000),
            Reach::Polled {
                at: 990,
                next: 1050
            }
        );
        // Late (stale in list-devices): still waited for.
        assert!(matches!(
            reach(&c, &rec(0), &polled, 990 + 600),
            Reach::Polled { .. }
        ));
        // Silent for hours: offline, at once.
        assert_eq!(
            reach(&c, &rec(0), &polled, 990 + 3 * 3600),
            Reach::Offline { last: Some(990) }
        );
        assert_eq!(
            reach(&c, &rec(0), &Seen::default(), 3 * 3600),
            Reach::Offline { last: None },
            "added hours ago and never called in"
        );
        assert_eq!(
            reach(&c, &rec(980), &Seen::default(), 1000),
            Reach::NotYet { added: 980 }
        );
        assert!(Step::Reach(Reach::Offline { last: None }).is_last());
        assert!(!Step::Reach(Reach::NotYet { added: 1 }).is_last());
        // A session record whose gate is gone (or never was this process) is no hold.
        let dead = Seen {
            session: Some(HeldSession {
                pid: u32::MAX - 1,
                start_time: 1,
                since: 990,
                until: 2000,
                ended: None,
                outcomes: vec![],
            }),
            heartbeat: Some(hb(990, &[])),
            ..Seen::default()
        };
        assert!(matches!(
            reach(&c, &rec(0), &dead, 1000),
            Reach::Polled { .. }
        ));
        let me = std::process::id();
        let live = Seen {
            session: Some(HeldSession {
                pid: me,
                start_time: phonehome_plumbing::process::stat(me).unwrap().start_time,
                ..dead.session.clone().unwrap()
            }),
            ..Seen::default()
        };
        assert_eq!(
            reach(&c, &rec(0), &live, 1000),
            Reach::Holding { until: 2000 }
        );
    }

    #[test]
    fn picked_up_and_failed_only_after_the_request() {
        let outcome = |at: i64, state: OutcomeState| TunnelOutcome {
            local: 22,
            remote: 9876,
            state,
            at,
            reason: Some("remote port forwarding failed".into()),
        };
        let session = |o: Vec<TunnelOutcome>| HeldSession {
            pid: 1,
            start_time: 1,
            since: 0,
            until: 0,
            ended: None,
            outcomes: o,
        };
        let s = Seen {
            session: Some(session(vec![outcome(999, OutcomeState::Failed)])),
            heartbeat: Some(hb(999, &["22:9876"])),
            ..Seen::default()
        };
        assert_eq!(
            picked_up(&REQ, &s),
            None,
            "before the request: an older attempt"
        );
        assert_eq!(failure(&REQ, &s), None);
        let s = Seen {
            session: Some(session(vec![outcome(1001, OutcomeState::Starting)])),
            ..Seen::default()
        };
        assert_eq!(
            picked_up(&REQ, &s),
            Some(Step::PickedUp {
                at: 1001,
                held: true
            })
        );
        assert_eq!(failure(&REQ, &s), None);
        let s = Seen {
            session: Some(session(vec![outcome(1002, OutcomeState::Failed)])),
            ..Seen::default()
        };
        assert_eq!(
            failure(&REQ, &s).as_deref(),
            Some("remote port forwarding failed")
        );
        let s = Seen {
            heartbeat: Some(hb(1005, &["22:9876"])),
            ..Seen::default()
        };
        assert_eq!(
            picked_up(&REQ, &s),
            Some(Step::PickedUp {
                at: 1005,
                held: false
            })
        );
        let other = Seen {
            heartbeat: Some(hb(1005, &["80:9876"])),
            ..Seen::default()
        };
        assert_eq!(picked_up(&REQ, &other), None, "another local port");
    }
}
