//! Held sessions (protocol 3), the agent's side, against the fake client playing the
//! gate: a request that arrives during the session starts its tunnel at once, outcomes
//! go back over the session, the next tick takes over (never two sessions, never a
//! skipped tick), `stop` ends a hold, an older gate still gets its report, and hostile
//! frames cut the session off. THREATS 45, 47, 48.

mod common;
use common::*;
use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn outcomes(f: &Fake) -> String {
    f.records("polls", "outcomes")
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect()
}

/// `phonehome poll` in the background (a tick that may hold).
fn tick(f: &Fake, extra: &[&str]) -> Child {
    let mut c = f.cmd("poll");
    c.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn polls_running(f: &Fake) -> usize {
    f.records("polls", "argv")
        .iter()
        .filter(|p| {
            let pid: u32 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            alive(pid)
        })
        .count()
}

#[test]
fn a_request_during_a_held_session_opens_its_tunnel_at_once() {
    let f = Fake::new("held");
    f.set("poll-mode", "hold");
    // Long enough that a loaded machine never reaches it: the test ends the hold itself.
    f.set("hold-secs", "30");
    f.set("inbox", "");
    let start = Instant::now();
    let mut t = tick(&f, &[]);
    assert!(wait_for(Duration::from_secs(3), || f.reports().len() == 1));
    assert_eq!(f.reports()[0]["hold"], 60, "offers the rest of the minute");
    std::thread::sleep(Duration::from_millis(300));
    // The admin's request reaches the held session: the tunnel starts within a second.
    let asked = Instant::now();
    f.set("inbox", "22:9876\n");
    assert!(wait_for(Duration::from_secs(3), || f.tunnel_argvs().len() == 1));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert!(t.try_wait().unwrap().is_none(), "still the same session");
    assert!(wait_for(Duration::from_secs(2), || outcomes(&f)
        .contains("tunnel 22:9876 starting")));
    // A tunnel that dies during the session is reported at once, with its reason.
    f.set("tunnel-mode", "fail");
    f.set("inbox", "22:9876\n80:8080\n");
    assert!(
        wait_for(Duration::from_secs(3), || {
            let o = outcomes(&f);
            o.contains("tunnel 80:8080 failed ") && o.contains("refused the port forward")
        }),
        "{}",
        outcomes(&f)
    );
    // Withdrawn: stopped, and said so.
    f.set("inbox", "80:8080\n");
    assert!(
        wait_for(Duration::from_secs(5), || outcomes(&f)
            .contains("tunnel 22:9876 stopped")),
        "{}",
        outcomes(&f)
    );
    assert!(t.try_wait().unwrap().is_none(), "still the same session");
    // The gate ends the hold: the tick ends with it, at once.
    let held = start.elapsed();
    let over = Instant::now();
    f.set("hold-over", "");
    let st = t.wait().unwrap();
    assert!(st.success(), "{:?}", st);
    assert!(
        over.elapsed() < Duration::from_secs(3),
        "ended with the hold: {:?}",
        over.elapsed()
    );
    let s = f.status_json();
    let held_secs = s["last_poll"]["held_secs"].as_u64().unwrap();
    assert!(
        held_secs + 1 >= held.as_secs() && held_secs <= held.as_secs() + 3,
        "held_secs {held_secs} for a hold of {held:?}"
    );
    assert!(s["last_poll"]["frames"].as_u64().unwrap() >= 4);
    assert_eq!(s["last_poll"]["gate_protocol"], 3);
    assert_eq!(f.poll_argvs().len(), 1, "one login for the whole session");
}

#[test]
fn threat_48_the_next_tick_takes_over_a_held_session() {
    let f = Fake::new("t42");
    f.set("poll-mode", "hold");
    f.set("hold-secs", "30");
    let mut first = tick(&f, &[]);
    assert!(wait_for(Duration::from_secs(3), || polls_running(&f) == 1));
    std::thread::sleep(Duration::from_millis(300));
    // The next tick asks the held session to end, waits for it, then logs in itself.
    let t = Instant::now();
    let mut second = tick(&f, &[]);
    assert!(first.wait().unwrap().success());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(wait_for(Duration::from_secs(3), || f.poll_argvs().len() == 2));
    assert!(polls_running(&f) <= 1, "never two sessions");
    // The first client's stdin ended (its gate saw the end) before the second logged in.
    let eof = f.records("polls", "eof");
    assert_eq!(eof.len(), 1, "the first session was ended by closing stdin");
    let second_login = &f.records("polls", "argv")[1];
    assert!(
        fs::metadata(&eof[0]).unwrap().modified().unwrap()
            <= fs::metadata(second_login).unwrap().modified().unwrap()
    );
    // `stop` ends a held session too, at once, and the tunnels with it.
    f.set("inbox", "22:9876\n");
    assert!(wait_for(Duration::from_secs(3), || f.tunnel_argvs().len() == 1));
    let t = Instant::now();
    assert_ok(&run(f.cmd("stop")));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(second.wait().unwrap().success());
    assert!(f.status_json()["tunnels"].as_array().unwrap().is_empty());
    // An ordinary poll in the way still makes a tick exit quietly (THREATS 17).
    f.set("poll-mode", "slow");
    let mut slow = tick(&f, &[]);
    assert!(wait_for(Duration::from_secs(3), || polls_running(&f) == 1));
    let out = run(f.cmd("poll"));
    assert_ok(&out);
    assert!(slow.wait().unwrap().success());
    assert_eq!(
        f.poll_argvs().len(),
        3,
        "the overlapping tick did not log in"
    );
}

#[test]
fn threat_47_an_older_gate_gets_its_report_and_is_remembered() {
    let f = Fake::new("t41");
    f.set("poll-mode", "oldgate");
    f.set("inbox", "22:9876\n");
    let t = Instant::now();
    let out = f.poll();
    assert_ok(&out);
    let first = t.elapsed();
    // The old gate read until the end of stdin: the agent closed it after waiting.
    let secs = phonehome_protocol::HOLD_ANSWER_WAIT_SECS;
    assert!(
        first >= Duration::from_secs(secs) && first < Duration::from_secs(secs + 4),
        "{:?}",
        first
    );
    assert_eq!(f.reports()[0]["hold"], 60, "the report it got is whole");
    assert!(wait_for(Duration::from_secs(3), || f.tunnel_argvs().len() == 1));
    assert_eq!(f.status_json()["last_poll"]["gate_protocol"], 2);
    // From now on no hold is offered: stdin is closed at once, the poll is quick.
    let t = Instant::now();
    assert_ok(&f.poll());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(f.reports()[1].get("hold").is_none(), "{}", f.reports()[1]);
    // A gate of protocol 3 that does not hold (hold off on the server): offered again.
    f.set("poll-mode", "ok");
    assert_ok(&f.poll());
    assert_ok(&f.poll());
    assert_eq!(f.reports()[3]["hold"], 60);
    // hold = no: never offered.
    let mut c = f.cmd("poll");
    c.args(["--hold", "no"]);
    assert_ok(&run(c));
    assert!(f.reports()[4].get("hold").is_none());
    // --interval bounds the offer: a held session ends by the next tick.
    let mut c = f.cmd("poll");
    c.args(["--interval", "20"]);
    assert_ok(&run(c));
    assert_eq!(f.reports()[5]["hold"], 20);
}

#[test]
fn threat_45_a_gate_that_breaks_the_framing_is_cut_off() {
    for (extra, why) in [
        ("junk\n", "between two frames"),
        ("phonehome-inbox 3 hold=10\n22:9999\nend\n", "hold again"),
        ("phonehome-inbox 9\nend\n", "speaks protocol"),
    ] {
        let f = Fake::new("t39");
        f.set("poll-mode", "hold");
        f.set("hold-secs", "20");
        f.set("inbox", "22:9876\n");
        f.set("hold-extra", extra);
        let t = Instant::now();
        let out = f.poll();
        assert_ok(&out);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{}: {:?}",
            why,
            t.elapsed()
        );
        assert!(
            stderr(&out).contains("held session cut off") && stderr(&out).contains(why),
            "{}: {}",
            why,
            stderr(&out)
        );
        // The first frame was honoured; nothing of the broken part was.
        assert!(wait_for(Duration::from_secs(3), || f.tunnel_argvs().len() == 1));
        assert!(!f
            .tunnel_argvs()
            .iter()
            .any(|a| a.iter().any(|x| x.contains("9999"))));
    }
    // A flood of frames is cut at MAX_HELD_FRAMES.
    let f = Fake::new("t39-flood");
    f.set("poll-mode", "hold");
    f.set("hold-secs", "20");
    let flood = "phonehome-inbox 3\nend\n".repeat(phonehome_protocol::MAX_HELD_FRAMES + 1);
    f.set("hold-extra", &flood);
    let out = f.poll();
    assert_ok(&out);
    assert!(
        stderr(&out).contains("more than 64 frames"),
        "{}",
        stderr(&out)
    );
}
