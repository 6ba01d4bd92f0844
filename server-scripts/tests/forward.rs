//! forward-device-port through the built binary under a temp root: requests, key file
//! grants, allocation, --close, --wait, and the admin-error and concurrency threats.

mod common;
use common::*;
use std::process::{Child, Command};
use std::time::Duration;

fn requests(r: &Root, id: &str) -> serde_json::Value {
    serde_json::from_str(&r.read(&format!("var/lib/phonehome/requests/{}.json", id))).unwrap()
}

fn keyfile(r: &Root, id: &str) -> String {
    r.read(&format!("etc/phonehome/authorized_keys/device{}", id))
}

/// A process of `uid` listening on 127.0.0.1 and [::1] of `port` for a while (perl,
/// from Debian's essential perl-base: a listener that is not this test's own uid).
fn listen_as(uid: u32, port: u16) -> Child {
    let script = format!(
        "use IO::Socket::IP; my @s = map {{ IO::Socket::IP->new(LocalHost => $_, LocalPort => {}, Listen => 5, ReuseAddr => 1) }} ('127.0.0.1', '::1'); sleep 20;",
        port
    );
    Command::new("setpriv")
        .args([
            &format!("--reuid={}", uid),
            "--regid=60999",
            "--clear-groups",
        ])
        .args(["perl", "-e", &script])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn request_grants_exactly_the_port_and_prints_how_to_connect() {
    let r = Root::new();
    r.add(ID1, &key(0));
    let out = r.run("forward-device-port", &[ID1, "22:21100"]).ok();
    assert!(
        out.stdout
            .contains("requested 22:21100 on device 6466b34bde54"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("connect: ssh -J admin@ph.example.org -p 21100 root@localhost"),
        "{}",
        out.stdout
    );
    let req = requests(&r, ID1);
    assert_eq!(req["requests"][0]["local"], 22);
    assert_eq!(req["requests"][0]["remote"], 21100);
    let ttl = req["requests"][0]["expires"].as_i64().unwrap()
        - req["requests"][0]["created"].as_i64().unwrap();
    assert_eq!(ttl, 3600, "default ttl");
    assert_eq!(
        keyfile(&r, ID1),
        format!(
            "restrict,port-forwarding,permitlisten=\"localhost:21100\",command=\"{}\" {}\n",
            r.gate_command(),
            key(0)
        )
    );
    // A second request, a web port, with a ttl and JSON output.
    let j = r
        .run(
            "forward-device-port",
            &[ID1, "80:21101", "--ttl", "30m", "--json"],
        )
        .ok()
        .json();
    assert_eq!(j["remote"], 21101);
    assert_eq!(j["ready"], serde_json::Value::Null);
    assert!(j["connect"]
        .as_str()
        .unwrap()
        .starts_with("ssh -N -L 21101:localhost:21101 admin@ph.example.org"));
    assert!(keyfile(&r, ID1)
        .contains("permitlisten=\"localhost:21100\",permitlisten=\"localhost:21101\",command="));
    // Listing, then closing one, then all: the key file follows.
    let list = r.run("forward-device-port", &[ID1]).ok();
    assert!(list.stdout.contains("22:21100") && list.stdout.contains("80:21101"));
    r.run("forward-device-port", &[ID1, "--close", "21100"])
        .ok();
    assert!(!keyfile(&r, ID1).contains("21100"));
    r.run("forward-device-port", &[ID1, "--close", "21100"])
        .fails(1, "no request for remote port 21100");
    r.run("forward-device-port", &[ID1, "--close", "all"]).ok();
    assert!(
        keyfile(&r, ID1).starts_with("restrict,command="),
        "{}",
        keyfile(&r, ID1)
    );
    assert_eq!(requests(&r, ID1)["requests"].as_array().unwrap().len(), 0);
}

#[test]
fn local_alone_allocates_a_free_port_from_the_range() {
    let r = Root::new();
    r.set_conf("port_range = 21200-21203\n");
    r.add(ID1, &key(0));
    r.add(ID2, &key(3));
    let held = std::net::TcpListener::bind("127.0.0.1:21201").unwrap();
    let a = r
        .run("forward-device-port", &[ID1, "22", "--json"])
        .ok()
        .json();
    assert_eq!(a["remote"], 21200);
    let b = r
        .run("forward-device-port", &[ID2, "22", "--json"])
        .ok()
        .json();
    assert_eq!(
        b["remote"], 21202,
        "21200 is the other device's, 21201 is held"
    );
    let c = r
        .run("forward-device-port", &[ID2, "80", "--json"])
        .ok()
        .json();
    assert_eq!(c["remote"], 21203);
    r.run("forward-device-port", &[ID1, "443"])
        .fails(1, "no free port left in port_range 21200-21203");
    drop(held);
}

#[test]
fn expired_requests_are_dropped_on_write() {
    let r = Root::new();
    r.add(ID1, &key(0));
    let path = r.path(&format!("var/lib/phonehome/requests/{}.json", ID1));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!(r#"{{"device":"{}","requests":[{{"local":22,"remote":21300,"created":1,"expires":2}}]}}"#, ID1)).unwrap();
    assert!(keyfile(&r, ID1).starts_with("restrict,command="));
    // --prune rewrites the key file of a device whose grant expired.
    let now = phonehome_plumbing::clock::now();
    std::fs::write(&path, format!(r#"{{"device":"{}","requests":[{{"local":22,"remote":21300,"created":1,"expires":2}},{{"local":22,"remote":21302,"created":1,"expires":{}}}]}}"#, ID1, now + 100)).unwrap();
    let kf = r.path(&format!("etc/phonehome/authorized_keys/device{}", ID1));
    std::fs::write(&kf, keyfile(&r, ID1).replace("restrict,", "restrict,port-forwarding,permitlisten=\"localhost:21300\",permitlisten=\"localhost:21302\",")).unwrap();
    let out = r.run("forward-device-port", &["--prune"]).ok();
    assert_eq!(out.stdout, "pruned: 1 expired request(s), 1 key file(s) regranted, 0 leftover file(s) of removed devices, 0 stale temp file(s)\n");
    assert!(!keyfile(&r, ID1).contains("21300"), "{}", keyfile(&r, ID1));
    assert!(keyfile(&r, ID1).contains("permitlisten=\"localhost:21302\""));
    assert_eq!(
        r.run("forward-device-port", &["--prune"]).ok().stdout,
        "",
        "nothing left to prune"
    );
    r.run("forward-device-port", &["--prune", ID1])
        .fails(2, "takes no device");
    r.run("forward-device-port", &[ID1, "--close", "all"]).ok();
    std::fs::write(&path, format!(r#"{{"device":"{}","requests":[{{"local":22,"remote":21300,"created":1,"expires":2}}]}}"#, ID1)).unwrap();
    r.run("forward-device-port", &[ID1, "22:21301"]).ok();
    let req = requests(&r, ID1);
    assert_eq!(req["requests"].as_array().unwrap().len(), 1);
    assert_eq!(req["requests"][0]["remote"], 21301);
    assert!(!keyfile(&r, ID1).contains("21300"));
}

#[test]
fn threat_06_bad_specs_are_refused_and_change_nothing() {
    let r = Root::new();
    r.add(ID1, &key(0));
    r.run("forward-device-port", &[ID1, "22:21400"]).ok();
    let before = snapshot(&r.dir);
    r.run("forward-device-port", &["0242ac110099", "22:21401"])
        .fails(1, "unknown device");
    r.run("forward-device-port", &["nosuchalias", "22:21401"])
        .fails(1, "unknown device");
    r.run("forward-device-port", &[ID1, "9876:22"])
        .fails(2, "privileged");
    for bad in [
        "0:21401",
        "22:0",
        "22:65536",
        "65536:21401",
        "022:21401",
        "22:021401",
        " 22:21401",
        "22 :21401",
        "22:21401 ",
        "22::21401",
        "22:21401:1",
        ":21401",
        "22:",
        "a:b",
        "+1:21401",
        "",
    ] {
        r.run("forward-device-port", &[ID1, bad])
            .fails(2, "invalid port");
    }
    r.run("forward-device-port", &[ID1, "-1:21401"])
        .fails(2, "Unrecognized option");
    r.run("forward-device-port", &[ID1, "22:21401", "--ttl", "8d"])
        .fails(2, "maximum of 7 days");
    r.run(
        "forward-device-port",
        &[ID1, "22:21401", "--ttl", "forever"],
    )
    .fails(2, "invalid duration");
    r.run("forward-device-port", &[ID1, "--close", "abc"])
        .fails(2, "invalid port");
    assert_eq!(snapshot(&r.dir), before, "nothing changed");
}

#[test]
fn threat_07_ports_taken_by_another_device_or_listener() {
    let r = Root::new();
    r.add(ID1, &key(0));
    r.add(ID2, &key(3));
    r.run("forward-device-port", &[ID1, "22:21500"]).ok();
    let before = snapshot(&r.dir);
    r.run("forward-device-port", &[ID2, "22:21500"])
        .fails(1, "already requested for device 6466b34bde54");
    let held = std::net::TcpListener::bind("127.0.0.1:21501").unwrap();
    r.run("forward-device-port", &[ID2, "22:21501"]).fails(
        1,
        "already in use on this server (user root (uid 0) listens on 127.0.0.1:21501)",
    );
    drop(held);
    assert_eq!(snapshot(&r.dir), before);
    // Re-requesting one's own port refreshes it (new local, new expiry).
    r.run("forward-device-port", &[ID1, "2222:21500"]).ok();
    assert_eq!(requests(&r, ID1)["requests"][0]["local"], 2222);
    assert_eq!(requests(&r, ID1)["requests"].as_array().unwrap().len(), 1);
}

#[test]
fn threat_08_fifty_concurrent_requests_on_one_device() {
    let r = std::sync::Arc::new(Root::new());
    r.add(ID1, &key(0));
    let handles: Vec<_> = (0..50u16)
        .map(|i| {
            let r = r.clone();
            std::thread::spawn(move || {
                let spec = format!("22:{}", 21600 + i);
                let out = r.run("forward-device-port", &[ID1, &spec]);
                (21600 + i, out)
            })
        })
        .collect();
    let mut landed = Vec::new();
    let mut refused = 0;
    for h in handles {
        let (port, out) = h.join().unwrap();
        if out.code == 0 {
            landed.push(port);
        } else {
            assert_eq!(out.code, 1, "{}", out.stderr);
            assert!(
                out.stderr.contains("already has 32 requests"),
                "clear error: {}",
                out.stderr
            );
            refused += 1;
        }
    }
    assert_eq!(landed.len(), 32, "MAX_REQUESTS land");
    assert_eq!(refused, 18);
    landed.sort_unstable();
    let req = requests(&r, ID1);
    let mut stored: Vec<u16> = req["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["remote"].as_u64().unwrap() as u16)
        .collect();
    stored.sort_unstable();
    assert_eq!(
        stored, landed,
        "every landed request is stored, nothing else"
    );
    let kf = keyfile(&r, ID1);
    for p in &landed {
        assert!(kf.contains(&format!("permitlisten=\"localhost:{}\"", p)));
    }
    assert_eq!(kf.matches("permitlisten").count(), 32);
    assert_eq!(kf.lines().count(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(r.path("var/lib/phonehome/requests"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left");
}

#[test]
fn wait_succeeds_when_the_device_uid_alone_listens() {
    let r = Root::new();
    r.add(ID1, &key(0));
    let uid = r.uid_of(ID1);
    let mut cmd = r.cmd("forward-device-port");
    cmd.args([ID1, "22:21700", "--wait=15"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut listener = listen_as(uid, 21700);
    let out = Out::new("forward --wait".into(), child.wait_with_output().unwrap()).ok();
    assert!(
        out.stdout
            .contains("tunnel up: device6466b34bde54 listens on 127.0.0.1:21700"),
        "{}",
        out.stdout
    );
    let _ = listener.kill();
    let _ = listener.wait();
}

#[test]
fn wait_fails_with_the_reason() {
    let r = Root::new();
    r.add(ID1, &key(0));
    // Never called in.
    r.run("forward-device-port", &[ID1, "22:21800", "--wait=1"])
        .fails(1, "device 6466b34bde54 has never called in");
    // Called in long ago.
    r.set_heartbeat(ID1, r#"{"received":1795304990}"#);
    // Called in long ago: offline, said at once rather than at the deadline.
    let t = std::time::Instant::now();
    r.run("forward-device-port", &[ID1, "22:21800", "--wait=60"])
        .fails(
            1,
            "device 6466b34bde54 is offline: it last called in at 2026-11-21 23:49:50 UTC",
        );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The device reports the tunnel's failure.
    let now = phonehome_plumbing::clock::now() + 5;
    r.set_heartbeat(ID1, &format!(r#"{{"received":{}}}"#, now - 5));
    r.set_report(ID1, &format!(r#"{{"received":{},"report":{{"protocol":1,"agent_version":"0.1.0","tunnels":[{{"local":22,"remote":21800,"state":"failed","last_error":"remote port forwarding failed for listen port 21800"}}]}}}}"#, now));
    r.run("forward-device-port", &[ID1, "22:21800", "--wait=5"]).fails(1, "reports that tunnel 22:21800 failed: remote port forwarding failed for listen port 21800");
    // Another process grabbed the port after the request was recorded.
    r.clear_report(ID1);
    let mut cmd = r.cmd("forward-device-port");
    cmd.args([ID1, "22:21801", "--wait=10"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let held = std::net::TcpListener::bind("127.0.0.1:21801").unwrap();
    Out::new("forward --wait".into(), child.wait_with_output().unwrap())
        .fails(1, "port 21801 is held by user root (uid 0)");
    drop(held);
}

/// Issue 16: --wait says as it goes whether the device hears the request now (it
/// holds a session), that it picked the request up, then the tunnel.
#[test]
fn wait_shows_a_held_session_and_the_pickup() {
    let r = Root::new();
    r.add(ID1, &key(0));
    let uid = r.uid_of(ID1);
    let now = phonehome_plumbing::clock::now();
    r.set_heartbeat(ID1, &format!(r#"{{"received":{}}}"#, now));
    // A gate holding the session: a live process and its start time.
    let mut gate = Command::new("sleep").arg("30").spawn().unwrap();
    let start = phonehome_plumbing::process::stat(gate.id())
        .unwrap()
        .start_time;
    let session = |outcomes: &str| {
        format!(
            r#"{{"pid":{},"start_time":{},"since":{},"until":{},"outcomes":[{}]}}"#,
            gate.id(),
            start,
            now,
            now + 50,
            outcomes
        )
    };
    // forward-device-port --wait for 22:PORT, its output piped.
    let wait_for = |port: u16| {
        r.cmd("forward-device-port")
            .args([ID1, &format!("22:{port}"), "--wait=15"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The gate's record that the device picked 22:PORT up, a second from now.
    let picked = |port: u16| {
        format!(
            r#"{{"local":22,"remote":{port},"state":"starting","at":{}}}"#,
            phonehome_plumbing::clock::now() + 1
        )
    };
    r.set_session(ID1, &session(""));
    let child = wait_for(21802);
    std::thread::sleep(Duration::from_millis(700));
    r.set_session(ID1, &session(&picked(21802)));
    std::thread::sleep(Duration::from_millis(500));
    let mut listener = listen_as(uid, 21802);
    let out = Out::new("forward --wait".into(), child.wait_with_output().unwrap()).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {:?} in {}", needle, out.stdout))
    };
    let holds = find("device 6466b34bde54 holds a session now (until ");
    let pickup = find("picked the request up at ");
    let up = find("tunnel up: device6466b34bde54 listens on 127.0.0.1:21802");
    assert!(holds < pickup && pickup < up, "{}", out.stdout);
    assert!(
        lines[pickup].ends_with("(in its held session)"),
        "{}",
        lines[pickup]
    );
    let _ = listener.kill();
    let _ = listener.wait();
    // Picked up and up between two looks: the pickup is still said, before the tunnel.
    // forward-device-port is stopped (SIGSTOP) once it has said the session, both
    // happen, then it goes on.
    r.set_session(ID1, &session(""));
    let mut child = wait_for(21804);
    let mut said = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.contains("holds a session now") {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut said, &mut line).unwrap() > 0,
            "{text}"
        );
        text.push_str(&line);
    }
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    r.set_session(ID1, &session(&picked(21804)));
    let mut listener = listen_as(uid, 21804);
    std::thread::sleep(Duration::from_millis(500));
    signal("-CONT");
    std::io::Read::read_to_string(&mut said, &mut text).unwrap();
    assert!(child.wait().unwrap().success(), "{text}");
    let pickup = text.find("picked the request up at ");
    let up = text.find("tunnel up: device6466b34bde54 listens on 127.0.0.1:21804");
    assert!(
        matches!((pickup, up), (Some(p), Some(u)) if p < u),
        "{}",
        text
    );
    let _ = listener.kill();
    let _ = listener.wait();
    // Without a live gate, the same record says nothing of a session: the last poll.
    let _ = gate.kill();
    let _ = gate.wait();
    let out = r
        .run("forward-device-port", &[ID1, "22:21803", "--wait=1"])
        .fails(1, "has not called in since");
    assert!(out.stdout.contains("last polled at "), "{}", out.stdout);
    assert!(!out.stdout.contains("holds a session"), "{}", out.stdout);
}

#[test]
fn threat_26_forward_racing_remove_leaves_nothing_behind() {
    // 20 rounds of forward-device-port and remove-device at once: whichever wins, no
    // key file or requests file of the removed device is left, and its port is free
    // for another device.
    let r = Root::new();
    r.add(ID2, &key(3));
    for round in 0..20 {
        r.run("add-device", &[ID1, &key(0), "--force"]).ok();
        let port = (22000 + round).to_string();
        let spec = format!("22:{}", port);
        let mut fwd = r.cmd("forward-device-port");
        fwd.args([ID1, &spec]);
        let fwd = fwd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let rm = r.run("remove-device", &[ID1]);
        let fwd = fwd.wait_with_output().unwrap();
        assert_eq!(rm.code, 0, "round {}: {}", round, rm.stderr);
        if !fwd.status.success() {
            let err = String::from_utf8_lossy(&fwd.stderr);
            assert!(err.contains("unknown device"), "round {}: {}", round, err);
        }
        for rel in [
            format!("etc/phonehome/authorized_keys/device{}", ID1),
            format!("var/lib/phonehome/requests/{}.json", ID1),
        ] {
            assert!(
                !r.path(&rel).exists(),
                "round {}: {} left behind",
                round,
                rel
            );
        }
        r.run("forward-device-port", &[ID2, &spec]).ok();
        r.run("forward-device-port", &[ID2, "--close", &port]).ok();
    }
}

#[test]
fn threat_27_every_crash_point_between_the_renames_is_safe() {
    let r = Root::new();
    r.add(ID1, &key(0));
    r.add(ID2, &key(3));
    r.run("forward-device-port", &[ID1, "22:22200"]).ok();
    r.run("forward-device-port", &[ID2, "22:22300"]).ok();
    // A crash while adding 22:22201 (grant renamed, request not), and one while
    // closing 22:22200 (request renamed, grant not): the key file grants ports no
    // request names. And a crash before either rename leaves a temp file.
    let kf = r.path(&format!("etc/phonehome/authorized_keys/device{}", ID1));
    let reqs = r.path(&format!("var/lib/phonehome/requests/{}.json", ID1));
    std::fs::write(&reqs, format!(r#"{{"device":"{}","requests":[]}}"#, ID1)).unwrap();
    let line = keyfile(&r, ID1).replace(
        "restrict,port-forwarding,",
        "restrict,port-forwarding,permitlisten=\"localhost:22201\",",
    );
    std::fs::write(&kf, &line).unwrap();
    let temp = r.path(&format!(
        "var/lib/phonehome/requests/.{}.json.1.2.3.tmp",
        ID1
    ));
    std::fs::write(&temp, "{").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&temp)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // What a remove-device interrupted after the registry record went leaves.
    r.unregister(ID2);

    let out = r.run("forward-device-port", &["--prune"]).ok();
    assert_eq!(
        out.stdout,
        "pruned: 0 expired request(s), 1 key file(s) regranted, 2 leftover file(s) of removed devices, 1 stale temp file(s)\n"
    );
    assert!(
        keyfile(&r, ID1).starts_with("restrict,command="),
        "{}",
        keyfile(&r, ID1)
    );
    assert!(!temp.exists());
    assert!(!r
        .path(&format!("etc/phonehome/authorized_keys/device{}", ID2))
        .exists());
    assert!(!r
        .path(&format!("var/lib/phonehome/requests/{}.json", ID2))
        .exists());
    assert_eq!(
        r.run("forward-device-port", &["--prune"]).ok().stdout,
        "",
        "settled"
    );
}
