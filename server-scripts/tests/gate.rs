//! The gate through its built binary, as sshd runs it: SSH_ORIGINAL_COMMAND, stdin,
//! and an identity that comes from the uid (the test maps its own uid to a device in
//! the temp root's passwd).

mod common;
use common::*;
use phonehome_protocol::MAX_STATUS_BYTES;

/// A report of an agent of protocol 1, which gets the bare lines it knows.
const REPORT: &str = r#"{"protocol":1,"agent_version":"0.1.0","uptime_secs":7200,"tunnels":[{"local":22,"remote":22100,"state":"running"}]}"#;
/// The same from an agent of protocol 2.
const REPORT_2: &str = r#"{"protocol":2,"agent_version":"0.2.0","uptime_secs":7200,"tunnels":[{"local":22,"remote":22100,"state":"running"}]}"#;
/// The answer in protocol 2's framing.
const FRAMED: &str = "phonehome-inbox 2\n22:22100\n80:22101\nend\n";

/// The heartbeat or the report part of a device's status file, as JSON text.
fn status(r: &Root, id: &str, part: &str) -> Option<String> {
    let v = r.status(id)?[part].clone();
    (!v.is_null()).then(|| v.to_string())
}

fn setup() -> Root {
    let r = Root::new();
    r.add(ID1, &key(0));
    r.add(ID2, &key(3));
    r.run("forward-device-port", &[ID1, "22:22100"]).ok();
    r.run("forward-device-port", &[ID1, "80:22101"]).ok();
    r.run("forward-device-port", &[ID2, "22:22102"]).ok();
    r.impersonate(ID1);
    r
}

#[test]
fn poll_records_heartbeat_and_report_and_answers_requests() {
    let r = setup();
    let out = r.gate(Some("poll"), REPORT.as_bytes()).ok();
    assert_eq!(
        out.stdout, "22:22100\n80:22101\n",
        "only this device's requests, nothing else"
    );
    assert_eq!(out.stderr, "");
    let hb: serde_json::Value =
        serde_json::from_str(&status(&r, ID1, "heartbeat").unwrap()).unwrap();
    assert_eq!(hb["from"], "198.51.100.2");
    assert_eq!(hb["port"], 40022);
    assert!((hb["received"].as_i64().unwrap() - phonehome_plumbing::clock::now()).abs() < 10);
    assert_eq!(hb["report_error"], serde_json::Value::Null);
    let rep: serde_json::Value = serde_json::from_str(&status(&r, ID1, "report").unwrap()).unwrap();
    assert_eq!(rep["report"]["uptime_secs"], 7200);
    // list-devices sees it online, with its requests and report.
    let list = r.run("list-devices", &["--json"]).ok().json();
    let d = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == ID1)
        .unwrap()
        .clone();
    assert_eq!(d["state"], "online");
    assert_eq!(d["seen_by"], "gate");
    assert_eq!(d["requested"], serde_json::json!(["22:22100", "80:22101"]));
    assert_eq!(d["report"]["agent_version"], "0.1.0");
}

#[test]
fn expired_requests_are_not_served() {
    let r = setup();
    let path = r.path(&format!("var/lib/phonehome/requests/{}.json", ID1));
    let now = phonehome_plumbing::clock::now();
    std::fs::write(
        &path,
        format!(r#"{{"device":"{}","requests":[{{"local":22,"remote":22100,"created":1,"expires":2}},{{"local":80,"remote":22101,"created":1,"expires":{}}}]}}"#, ID1, now + 100),
    )
    .unwrap();
    assert_eq!(
        r.gate(Some("poll"), REPORT.as_bytes()).ok().stdout,
        "80:22101\n"
    );
}

#[test]
fn only_poll_is_accepted() {
    let r = setup();
    for cmd in [
        None,
        Some(""),
        Some("sh"),
        Some("poll; sh"),
        Some("poll "),
        Some("internal-sftp"),
        Some("/bin/sh -c id"),
    ] {
        let out = r.gate(cmd, REPORT.as_bytes()).fails(1, "only runs `poll`");
        assert_eq!(out.stdout, "");
    }
    assert!(
        status(&r, ID1, "heartbeat").is_none(),
        "a refused command is no heartbeat"
    );
}

#[test]
fn a_non_device_uid_is_refused() {
    let r = Root::new();
    r.add(ID1, &key(0));
    // The test's uid maps to root in this root's passwd: not a device.
    r.gate(Some("poll"), REPORT.as_bytes())
        .fails(1, "not a phonehome device account");
}

#[test]
fn threat_03_identity_comes_from_the_uid_only() {
    let r = setup();
    // A report claiming to be the other device, and an environment pointing elsewhere.
    let forged = REPORT.replace(
        "\"protocol\":1",
        &format!(
            "\"protocol\":1,\"device\":\"{}\",\"account\":\"device{}\"",
            ID2, ID2
        ),
    );
    let mut c = std::process::Command::new(bin_path("phonehome-gate"));
    c.arg("--root")
        .arg(&r.dir)
        .env("PHONEHOME_ROOT", "/nonexistent")
        .env("USER", format!("device{}", ID2))
        .env("LOGNAME", format!("device{}", ID2))
        .env("SSH_ORIGINAL_COMMAND", "poll");
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(forged.as_bytes())
        .unwrap();
    let out = Out::new("gate".into(), child.wait_with_output().unwrap()).ok();
    assert_eq!(
        out.stdout, "22:22100\n80:22101\n",
        "answered as device 1, the uid's"
    );
    assert!(status(&r, ID1, "heartbeat").is_some());
    assert!(
        status(&r, ID2, "heartbeat").is_none(),
        "the other device's records untouched"
    );
    assert!(status(&r, ID2, "report").is_none());
}

#[test]
fn threat_04_hostile_reports_are_rejected_but_the_heartbeat_counts() {
    let r = setup();
    r.gate(Some("poll"), REPORT.as_bytes()).ok();
    let good = status(&r, ID1, "report").unwrap();
    let mut huge = REPORT.as_bytes().to_vec();
    huge.resize(MAX_STATUS_BYTES * 4, b' ');
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage".to_vec(), "not valid JSON"),
        (b"\xff\xfe\x00\x01".to_vec(), "not valid JSON"),
        (huge, "larger than"),
        (br#"{"protocol":1,"agent_version":"1","tunnels":[{"local":0,"remote":1,"state":"running"}]}"#.to_vec(), "invalid tunnel"),
        (format!(r#"{{"protocol":1,"agent_version":"1","last_error":"{}"}}"#, "x".repeat(100_000)).into_bytes(), "larger than"),
        (br#"{"protocol":1,"agent_version":"1","load1":-1}"#.to_vec(), "invalid load"),
        (b"".to_vec(), "not valid JSON"),
    ];
    for (input, why) in cases {
        let out = r.gate(Some("poll"), &input).ok();
        // No valid report tells it the agent's protocol: the current framing.
        assert_eq!(out.stdout, FRAMED, "still answered");
        assert!(
            out.stderr.contains("status report refused") && out.stderr.contains(why),
            "{:?}: {}",
            why,
            out.stderr
        );
        let hb: serde_json::Value =
            serde_json::from_str(&status(&r, ID1, "heartbeat").unwrap()).unwrap();
        assert!(hb["report_error"].as_str().unwrap().contains(why), "{}", hb);
        assert!(hb["report_error"].as_str().unwrap().len() <= 200);
        assert_eq!(
            status(&r, ID1, "report").unwrap(),
            good,
            "the last good report is kept"
        );
    }
    let mut files: Vec<_> = std::fs::read_dir(r.path(&format!("var/lib/phonehome/status/{}", ID1)))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["status.json", "status.lock"],
        "nothing else written (the status file and its lock)"
    );
}

#[test]
fn threat_21_symlinks_in_the_device_writable_dir_are_not_followed() {
    let r = setup();
    let victim = r.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    let dir = r.path(&format!("var/lib/phonehome/status/{}", ID1));
    std::os::unix::fs::symlink(&victim, dir.join("status.json")).unwrap();
    // list-devices (as root) does not read through the planted links.
    let list = r.run("list-devices", &["--json"]).ok();
    assert!(!list.stdout.contains("precious"));
    assert!(list.stdout.contains("symbolic link"), "{}", list.stdout);
    // The gate replaces the links with files and never writes through them.
    r.gate(Some("poll"), REPORT.as_bytes()).ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(dir.join("status.json"))
        .unwrap()
        .file_type()
        .is_file());
    // A symlink planted at a lock file is not followed either.
    let lock = r.path(&format!("var/lib/phonehome/locks/{}.lock", ID2));
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    r.run("forward-device-port", &[ID2, "22:22103"])
        .fails(1, "symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

/// A client that never closes stdin (a hung or hostile agent) does not hold the session:
/// the gate gives up on the report after STATUS_READ_TIMEOUT, still counts the heartbeat
/// and still answers with the requests.
#[test]
fn stdin_never_closed_still_answers_after_the_read_timeout() {
    let r = setup();
    let mut child = r.gate_process(1).spawn().unwrap();
    // Held open, never written, until the gate has answered.
    let held_stdin = child.stdin.take().unwrap();
    let out = Out::new(
        "phonehome-gate, stdin held open".into(),
        child.wait_with_output().unwrap(),
    );
    drop(held_stdin);
    let out = out.ok();
    assert_eq!(out.stdout, FRAMED);
    assert!(
        out.stderr.contains("no status report within 1 s"),
        "{}",
        out.stderr
    );
    let hb: serde_json::Value =
        serde_json::from_str(&status(&r, ID1, "heartbeat").unwrap()).unwrap();
    assert!(
        hb["report_error"]
            .as_str()
            .unwrap()
            .contains("no status report within"),
        "{}",
        hb
    );
    assert!(status(&r, ID1, "report").is_none(), "no report recorded");
}

#[test]
fn threat_34_the_gate_announces_itself_to_agents_that_understand() {
    let r = setup();
    let out = r.gate(Some("poll"), REPORT_2.as_bytes()).ok();
    assert_eq!(out.stdout, FRAMED);
    let inbox = phonehome_protocol::parse_answer(out.stdout.as_bytes()).unwrap();
    assert_eq!(inbox.requests.len(), 2);
    // An old agent keeps getting what it parses.
    let out = r.gate(Some("poll"), REPORT.as_bytes()).ok();
    assert_eq!(out.stdout, "22:22100\n80:22101\n");
    // Only root's argv sets the read timeout, within bounds.
    let mut c = std::process::Command::new(bin_path("phonehome-gate"));
    c.args(["--read-timeout", "0"])
        .env("SSH_ORIGINAL_COMMAND", "poll");
    Out::new("gate --read-timeout 0".into(), c.output().unwrap()).fails(2, "--read-timeout");
}

#[test]
fn threat_25_a_report_with_terminal_controls_is_refused_and_never_shown() {
    let r = setup();
    let hostile = r#"{"protocol":2,"agent_version":"0.2\u001b]0;owned\u0007\u001b[2J\u009b31m\u202e","uptime_secs":1}"#;
    let out = r.gate(Some("poll"), hostile.as_bytes()).ok();
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    assert!(status(&r, ID1, "report").is_none(), "not stored");
    // A record written before the rule (or by hand) still never reaches the terminal.
    r.set_report(ID1, &format!(r#"{{"received":1,"report":{}}}"#, hostile));
    let table = r.run("list-devices", &[]).ok().stdout;
    for c in table.chars() {
        assert!(
            !phonehome_plumbing::text::is_unsafe_char(c) || c == '\n',
            "{:?} reached the table: {:?}",
            c,
            table
        );
    }
    assert!(table.contains("0.2?]0;owned??[2J?31m?"), "{}", table);
}
