//! Held sessions through the built gate, as sshd runs it (the test's uid mapped to a
//! device): the first frame grants the hold, a request made meanwhile reaches the open
//! session as a new frame, outcome lines land in the status file (session, report), and
//! every bound holds (server.conf off, the slot cap, one session per device, hostile
//! outcome lines, protocol 2 agents). THREATS 44 and 46.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A report of protocol 3 offering to hold 30 s.
const OFFER: &str = r#"{"protocol":3,"agent_version":"0.3.0","hold":30,"tunnels":[{"local":22,"remote":22100,"state":"running"}]}"#;

/// A gate running with its stdin open and its stdout read line by line.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    started: Instant,
}

impl Session {
    fn start(r: &Root, report: &str) -> Session {
        let mut child = r.gate_process(2).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", report).unwrap();
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                if tx.send(l.unwrap()).is_err() {
                    break;
                }
            }
        });
        Session {
            child,
            stdin: Some(stdin),
            lines,
            started: Instant::now(),
        }
    }

    /// The next frame's lines (header to end), within `limit`.
    fn frame(&self, limit: Duration) -> Option<Vec<String>> {
        let until = Instant::now() + limit;
        let mut f = Vec::new();
        loop {
            let l = self
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .ok()?;
            let end = l == "end";
            f.push(l);
            if end {
                return Some(f);
            }
        }
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        let _ = writeln!(s, "{}", line);
        let _ = s.flush();
    }

    /// Close stdin and wait for the gate to end; its stderr.
    fn close(mut self, limit: Duration) -> String {
        drop(self.stdin.take());
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.child.try_wait().unwrap().is_some() {
                let mut err = String::new();
                use std::io::Read;
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return err;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the gate did not end within {:?} of stdin closing", limit);
    }

    fn ended_by_itself(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One part (heartbeat, report, session) of a device's status file.
fn json(r: &Root, id: &str, part: &str) -> serde_json::Value {
    r.status(id).expect("a status file")[part].clone()
}

/// Two devices with a request each, hold on (10 s, 4 slots made by --prune), and the
/// test's uid mapped to device 1.
fn setup(extra_conf: &str) -> Root {
    let r = Root::new();
    r.set_conf(&format!("hold = 10\nhold_sessions = 4\n{}", extra_conf));
    r.add(ID1, &key(0));
    r.add(ID2, &key(3));
    r.run("forward-device-port", &[ID1, "22:22100"]).ok();
    r.run("forward-device-port", &["--prune"]).ok();
    r.impersonate(ID1);
    r
}

#[test]
fn a_held_session_hears_a_new_request_at_once_and_records_outcomes() {
    let r = setup("");
    let slots = std::fs::read_dir(r.path("var/lib/phonehome/hold"))
        .unwrap()
        .count();
    assert_eq!(slots, 4, "--prune made the slot files of hold_sessions");
    let mut s = Session::start(&r, OFFER);
    let first = s.frame(Duration::from_secs(5)).expect("a first frame");
    assert_eq!(first, ["phonehome-inbox 3 hold=10", "22:22100", "end"]);
    assert!(
        s.started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    let session = json(&r, ID1, "session");
    assert_eq!(session["ended"], serde_json::Value::Null);
    assert!(session["until"].as_i64().unwrap() - session["since"].as_i64().unwrap() == 10);
    let hb = json(&r, ID1, "heartbeat");
    assert_eq!(hb["served"], serde_json::json!(["22:22100"]));

    // A request made while the session is held reaches it as a new frame, at once.
    let t = Instant::now();
    r.run("forward-device-port", &[ID1, "80:22101"]).ok();
    let second = s
        .frame(Duration::from_secs(3))
        .expect("a frame for the new request");
    assert_eq!(second, ["phonehome-inbox 3", "22:22100", "80:22101", "end"]);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // The device says what happened; the server's records follow at once.
    s.send("tunnel 80:22101 starting");
    s.send("tunnel 80:22101 failed remote port forwarding failed for listen port 22101");
    let until = Instant::now() + Duration::from_secs(3);
    let failed = loop {
        let o = json(&r, ID1, "session")["outcomes"].clone();
        if o.as_array()
            .is_some_and(|a| a.iter().any(|x| x["state"] == "failed"))
            || Instant::now() > until
        {
            break o;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(failed[0]["remote"], 22101, "{}", failed);
    assert_eq!(
        failed[0]["reason"],
        "remote port forwarding failed for listen port 22101"
    );
    let report = json(&r, ID1, "report");
    let t = report["report"]["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["remote"] == 22101)
        .unwrap()
        .clone();
    assert_eq!(t["state"], "failed");
    assert!(report["updated"].as_i64().is_some());

    // Closing a request is a frame too; closing stdin ends the session at once.
    r.run("forward-device-port", &[ID1, "--close", "22100"])
        .ok();
    assert_eq!(
        s.frame(Duration::from_secs(3)).unwrap(),
        ["phonehome-inbox 3", "80:22101", "end"]
    );
    let t = Instant::now();
    let err = s.close(Duration::from_secs(3));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(err, "");
    assert!(json(&r, ID1, "session")["ended"].as_i64().is_some());
}

#[test]
fn a_request_that_expires_during_the_hold_is_withdrawn_by_a_frame() {
    let r = setup("");
    let s = Session::start(&r, OFFER);
    s.frame(Duration::from_secs(5)).unwrap();
    r.run("forward-device-port", &[ID1, "80:22101", "--ttl", "2"])
        .ok();
    assert_eq!(
        s.frame(Duration::from_secs(3)).unwrap(),
        ["phonehome-inbox 3", "22:22100", "80:22101", "end"]
    );
    let t = Instant::now();
    assert_eq!(
        s.frame(Duration::from_secs(5)).unwrap(),
        ["phonehome-inbox 3", "22:22100", "end"],
        "expired: withdrawn without a change to the file"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn a_held_session_ends_by_itself_at_its_hold() {
    let r = setup("");
    let conf = r
        .read("etc/phonehome/server.conf")
        .replace("hold = 10", "hold = 5");
    std::fs::write(r.path("etc/phonehome/server.conf"), conf).unwrap();
    let mut s = Session::start(&r, OFFER);
    assert_eq!(
        s.frame(Duration::from_secs(5)).unwrap()[0],
        "phonehome-inbox 3 hold=5"
    );
    assert!(!s.ended_by_itself(Duration::from_secs(4)), "held");
    assert!(
        s.ended_by_itself(Duration::from_secs(3)),
        "ended at the hold"
    );
    assert!(s.started.elapsed() < Duration::from_secs(7));
}

#[test]
fn no_hold_unless_offered_allowed_and_of_protocol_3() {
    // server.conf off: a protocol 3 agent gets its frame and the session ends at once.
    let r = Root::new();
    r.add(ID1, &key(0));
    r.run("forward-device-port", &[ID1, "22:22100"]).ok();
    r.impersonate(ID1);
    let mut s = Session::start(&r, OFFER);
    assert_eq!(
        s.frame(Duration::from_secs(5)).unwrap(),
        ["phonehome-inbox 3", "22:22100", "end"]
    );
    assert!(
        s.ended_by_itself(Duration::from_secs(2)),
        "stdin open, yet not held"
    );
    // Hold on, but a protocol 2 agent (even one saying hold) gets exactly what it knows.
    let r = setup("");
    let v2 = OFFER.replace("\"protocol\":3", "\"protocol\":2");
    let mut s = Session::start(&r, &v2);
    assert_eq!(
        s.frame(Duration::from_secs(5)).unwrap(),
        ["phonehome-inbox 2", "22:22100", "end"]
    );
    assert!(s.ended_by_itself(Duration::from_secs(2)));
    // An agent that offers no hold.
    let no_offer = OFFER.replace("\"hold\":30,", "");
    answered_not_held(&r, &no_offer);
    // An offer below the shortest hold.
    let short = OFFER.replace("\"hold\":30", "\"hold\":2");
    answered_not_held(&r, &short);
    // Slots not made yet (no --prune since hold was set): answered, not held.
    std::fs::remove_dir_all(r.path("var/lib/phonehome/hold")).unwrap();
    answered_not_held(&r, OFFER);
}

/// A protocol 3 answer comes, and the session then ends by itself: not held.
fn answered_not_held(r: &Root, report: &str) {
    let mut s = Session::start(r, report);
    assert_eq!(
        s.frame(Duration::from_secs(5)).unwrap()[0],
        "phonehome-inbox 3"
    );
    assert!(s.ended_by_itself(Duration::from_secs(2)));
}

#[test]
fn threat_44_one_held_session_per_device_and_no_more_than_the_slots() {
    let r = setup("");
    let conf = r
        .read("etc/phonehome/server.conf")
        .replace("hold_sessions = 4", "hold_sessions = 1");
    std::fs::write(r.path("etc/phonehome/server.conf"), conf).unwrap();
    r.run("forward-device-port", &["--prune"]).ok();
    assert_eq!(
        std::fs::read_dir(r.path("var/lib/phonehome/hold"))
            .unwrap()
            .count(),
        1
    );
    let s1 = Session::start(&r, OFFER);
    assert_eq!(
        s1.frame(Duration::from_secs(5)).unwrap()[0],
        "phonehome-inbox 3 hold=10"
    );
    // The same device again (its agent gave the old session up, or a stolen key logs in
    // twice): the newer login ends the older session and holds; never two at once.
    let mut s1 = s1;
    let s2 = Session::start(&r, OFFER);
    let f2 = s2.frame(Duration::from_secs(5)).unwrap();
    assert!(
        s1.ended_by_itself(Duration::from_secs(1)),
        "the older session ended"
    );
    assert_eq!(f2[0], "phonehome-inbox 3 hold=10");
    // Another device while the only slot is taken: not held.
    r.impersonate(ID2);
    let mut s3 = Session::start(&r, OFFER);
    assert_eq!(
        s3.frame(Duration::from_secs(5)).unwrap(),
        ["phonehome-inbox 3", "end"]
    );
    assert!(s3.ended_by_itself(Duration::from_secs(2)));
    // The slot comes back when the held session ends, even by SIGKILL.
    drop(s2);
    let s4 = Session::start(&r, OFFER);
    assert_eq!(
        s4.frame(Duration::from_secs(5)).unwrap()[0],
        "phonehome-inbox 3 hold=10"
    );
    // hold = 0 removes the slots at the next prune.
    let conf = r
        .read("etc/phonehome/server.conf")
        .replace("hold = 10", "hold = 0");
    std::fs::write(r.path("etc/phonehome/server.conf"), conf).unwrap();
    r.run("forward-device-port", &["--prune"]).ok();
    assert_eq!(
        std::fs::read_dir(r.path("var/lib/phonehome/hold"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn threat_46_a_hostile_outcome_line_ends_the_held_session() {
    let r = setup("");
    for (bad, why) in [
        ("tunnel 22:22100 failed \u{1b}[2Jowned", "control character"),
        ("rm -rf /", "expected `tunnel"),
        (&"x".repeat(20_000)[..], "too long"),
        ("tunnel 22:22100 starting now", "reason"),
    ] {
        let mut s = Session::start(&r, OFFER);
        assert_eq!(
            s.frame(Duration::from_secs(5)).unwrap()[0],
            "phonehome-inbox 3 hold=10"
        );
        s.send(bad);
        assert!(
            s.ended_by_itself(Duration::from_secs(3)),
            "{:?} did not end it",
            why
        );
        let mut err = String::new();
        use std::io::Read;
        s.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains("held session ended") && err.contains(why),
            "{}: {}",
            why,
            err
        );
        assert!(!err.contains('\u{1b}'), "{:?}", err);
        let session = json(&r, ID1, "session");
        assert!(session["ended"].as_i64().is_some());
        assert_eq!(
            session["outcomes"],
            serde_json::json!([]),
            "nothing recorded"
        );
    }
    // A flood of valid lines is cut at MAX_OUTCOMES.
    let mut s = Session::start(&r, OFFER);
    s.frame(Duration::from_secs(5)).unwrap();
    for _ in 0..=phonehome_protocol::MAX_OUTCOMES {
        s.send("tunnel 22:22100 starting");
    }
    assert!(s.ended_by_itself(Duration::from_secs(5)));
}

/// The gate keeps one status file a device. A held session's gate writes its outcomes
/// there only while the heartbeat in it is its own login's: a newer login of the device
/// (here one that does not hold: a protocol 2 report) has recorded its poll, and the
/// held session must not put the older heartbeat and report back.
#[test]
fn a_held_session_never_undoes_a_newer_logins_record() {
    let r = setup("");
    let mut s = Session::start(&r, OFFER);
    s.frame(Duration::from_secs(5)).expect("a first frame");
    let held = r.status(ID1).unwrap();
    assert!(held["session"]["pid"].as_u64().is_some(), "{}", held);
    // A newer login, a second later (heartbeats are in seconds).
    std::thread::sleep(Duration::from_millis(1100));
    let v2 = OFFER.replace("\"protocol\":3", "\"protocol\":2");
    r.gate(Some("poll"), format!("{}\n", v2).as_bytes()).ok();
    let newer = r.status(ID1).unwrap();
    assert!(
        newer["heartbeat"]["received"].as_i64() > held["heartbeat"]["received"].as_i64(),
        "{}",
        newer
    );
    assert_eq!(newer["report"]["report"]["protocol"], 2);
    assert_eq!(
        newer["session"], held["session"],
        "the live held session stays on record"
    );
    // The held session's outcome and its end change nothing of that record.
    s.send("tunnel 22:22100 failed remote port forwarding failed for listen port 22100");
    std::thread::sleep(Duration::from_millis(300));
    let err = s.close(Duration::from_secs(3));
    assert_eq!(err, "");
    assert_eq!(
        r.status(ID1).unwrap(),
        newer,
        "the newer login's record stands"
    );
}
