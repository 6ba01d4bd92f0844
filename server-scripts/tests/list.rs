//! list-devices through its built binary: the log formats (fixtures), forged lines,
//! rotated and gzipped files, invalid UTF-8, huge lines, states, and the disk-full case.

mod common;
use common::*;
use phonehome_plumbing::clock::unix_from_civil;
use std::io::Write;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{}", env!("CARGO_MANIFEST_DIR"), name)
}

fn two_devices() -> Root {
    let r = Root::new();
    r.add(ID1, &key(0));
    r.add(ID2, &key(3));
    r
}

fn device(list: &serde_json::Value, id: &str) -> serde_json::Value {
    list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("{} not in {}", id, list))
        .clone()
}

/// The most recent `month day h:m:s` (UTC, as TZ=UTC in the runner) not in the future.
fn syslog_time(mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    let now = phonehome_plumbing::clock::now();
    let (y, _, _) = phonehome_plumbing::clock::civil_from_days(now.div_euclid(86400));
    let t = unix_from_civil(y, mo, d, h, mi, s);
    if t <= now + 86400 {
        t
    } else {
        unix_from_civil(y - 1, mo, d, h, mi, s)
    }
}

fn last_seen(r: &Root, args: &[&str], id: &str) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    device(&r.run("list-devices", &a).ok().json(), id)["last_seen_unix"].clone()
}

#[test]
fn debian_auth_log_counts_only_real_logins() {
    let r = two_devices();
    let f = fixture("auth.log");
    assert_eq!(
        last_seen(&r, &["--log", &f], ID1),
        syslog_time(11, 20, 10, 0, 1)
    );
    // Every line naming device 2 is forged, from another program, untagged, with another
    // key, for another user, failed or with trailing text: none counts.
    assert_eq!(last_seen(&r, &["--log", &f], ID2), serde_json::Value::Null);
    let d = device(
        &r.run("list-devices", &["--json", "--log", &f]).ok().json(),
        ID2,
    );
    assert_eq!(d["state"], "never-seen");
}

#[test]
fn rhel_secure_and_default_sources() {
    let r = two_devices();
    std::fs::create_dir_all(r.path("var/log")).unwrap();
    std::fs::copy(fixture("secure"), r.path("var/log/secure")).unwrap();
    let list = r.run("list-devices", &["--json"]).ok().json();
    assert_eq!(
        device(&list, ID2)["last_seen_unix"],
        syslog_time(11, 21, 8, 0, 0)
    );
    assert_eq!(device(&list, ID2)["from"], "192.0.2.7");
    assert_eq!(
        device(&list, ID1)["last_seen_unix"],
        syslog_time(11, 21, 7, 59, 0)
    );
    assert!(
        list["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().ends_with("var/log/secure")),
        "{}",
        list["sources"]
    );
}

#[test]
fn iso_timestamps_and_sshd_session() {
    let r = two_devices();
    let f = fixture("short-iso.log");
    assert_eq!(
        last_seen(&r, &["--log", &f], ID1),
        unix_from_civil(2026, 11, 21, 9, 30, 0)
    );
    assert_eq!(
        last_seen(&r, &["--log", &f], ID2),
        unix_from_civil(2026, 11, 21, 9, 31, 0)
    );
}

#[test]
fn journald_json_export() {
    let r = two_devices();
    let f = fixture("journal.json");
    // The _COMM=logger entry claiming SYSLOG_IDENTIFIER=sshd is later but does not count,
    // nor does a later message given as bytes: journald writes a message so only when it
    // is not printable UTF-8, which sshd never logs (it escapes such bytes itself).
    assert_eq!(
        last_seen(&r, &["--log", &f], ID1),
        unix_from_civil(2026, 11, 21, 10, 0, 0)
    );
    assert_eq!(
        last_seen(&r, &["--log", &f], ID2),
        unix_from_civil(2026, 11, 21, 10, 15, 0)
    );
}

#[test]
fn rotated_gzip_and_the_newest_of_all_sources() {
    let r = two_devices();
    let log = r.path("var/log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::copy(fixture("auth.log"), log.join("auth.log.1")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(log.join("auth.log.2.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(format!("Nov 21 06:00:00 srv sshd[5]: Accepted publickey for device{} from 198.51.100.9 port 1 ssh2: ED25519 {}\n", ID1, FP1).as_bytes()).unwrap();
    gz.finish().unwrap();
    std::fs::write(log.join("auth.log"), b"").unwrap();
    let list = r.run("list-devices", &["--json"]).ok().json();
    assert_eq!(
        device(&list, ID1)["last_seen_unix"],
        syslog_time(11, 21, 6, 0, 0)
    );
    assert_eq!(device(&list, ID1)["from"], "198.51.100.9");
    assert_eq!(
        list["sources"].as_array().unwrap().len(),
        4,
        "gate + 3 files: {}",
        list["sources"]
    );
}

#[test]
fn threat_22_invalid_utf8_huge_lines_and_forgeries() {
    let r = two_devices();
    let path = r.path("big.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(b"\xff\xfe\xfd garbage \x00\x01\n").unwrap();
    // A 5 MB line that ends with a perfect heartbeat sentence: skipped as over-long.
    f.write_all(b"Nov 21 05:00:00 srv sshd[1]: ").unwrap();
    f.write_all(&vec![b'A'; 5_000_000]).unwrap();
    f.write_all(
        format!(
            " Accepted publickey for device{} from 1.2.3.4 port 1 ssh2: ED25519 {}\n",
            ID2, FP4
        )
        .as_bytes(),
    )
    .unwrap();
    // A pre-auth username that is the whole sentence.
    let sentence = format!(
        "Accepted publickey for device{} from 1.2.3.4 port 1 ssh2: ED25519 {}",
        ID2, FP4
    );
    writeln!(
        f,
        "Nov 21 05:00:01 srv sshd[2]: Invalid user {} from 203.0.113.5 port 4242",
        sentence
    )
    .unwrap();
    writeln!(f, "Nov 21 05:00:02 srv sshd[2]: Connection closed by invalid user {} 203.0.113.5 port 4242 [preauth]", sentence).unwrap();
    writeln!(
        f,
        "Nov 21 05:00:03 srv sshd[2]: input_userauth_request: invalid user {} [preauth]",
        sentence
    )
    .unwrap();
    // Valid lines with invalid UTF-8 around them.
    f.write_all(b"Nov 21 05:00:04 srv sshd[3]: \xc3\x28 Accepted publickey\n")
        .unwrap();
    writeln!(f, "Nov 21 05:00:05 srv sshd[4]: Accepted publickey for device{} from 198.51.100.2 port 2 ssh2: ED25519 {}", ID1, FP1).unwrap();
    for i in 0..20_000 {
        writeln!(f, "Nov 21 05:01:00 srv sshd[{}]: Received disconnect from 198.51.100.2 port 2:11: disconnected by user", i).unwrap();
    }
    drop(f);
    let list = r
        .run("list-devices", &["--json", "--log", path.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(
        device(&list, ID2)["last_seen_unix"],
        serde_json::Value::Null,
        "no forged heartbeat"
    );
    assert_eq!(
        device(&list, ID1)["last_seen_unix"],
        syslog_time(11, 21, 5, 0, 5)
    );
    assert!(
        list["notes"]
            .to_string()
            .contains("1 over-long log line(s) skipped"),
        "{}",
        list["notes"]
    );
}

#[test]
fn no_log_data_is_said_never_offline() {
    let r = two_devices();
    // Device 1 called in long ago (gate record), device 2 never did; no sshd log exists.
    r.set_heartbeat(ID1, r#"{"received":1000}"#);
    let out = r.run("list-devices", &[]).ok();
    assert!(out.stdout.contains("note: no log data"), "{}", out.stdout);
    assert!(
        out.stdout.contains("heartbeat sources: gate records"),
        "{}",
        out.stdout
    );
    // One hint of what to configure, not a note per source tried.
    let notes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("note:"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", out.stdout);
    assert!(notes[0].contains("--log FILE"), "{}", notes[0]);
    // A log named on the command line must exist: a clear error, not a note.
    r.run(
        "list-devices",
        &["--json", "--log", "/nonexistent/auth.log"],
    )
    .fails(2, "--log /nonexistent/auth.log: No such file or directory");
}

#[test]
fn threat_31_a_log_that_is_a_fifo_or_a_device_is_refused_at_once() {
    let r = two_devices();
    let fifo = r.path("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let start = std::time::Instant::now();
    for bad in [fifo.to_str().unwrap(), "/dev/zero"] {
        r.run("list-devices", &["--log", bad])
            .fails(2, "not a regular file");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn threat_32_output_errors_are_one_line_and_a_closed_pipe_is_quiet() {
    let r = two_devices();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = r
        .cmd("list-devices")
        .arg("--json")
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", err);
    assert_eq!(
        err.trim(),
        "list-devices: cannot write the output: No space left on device (os error 28): the disk is full, free some space and retry"
    );
    // `| head -c1`: the reader goes away; no panic, no message, exit 0.
    let mut child = r
        .cmd("list-devices")
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn states_from_age() {
    let r = two_devices();
    let now = phonehome_plumbing::clock::now();
    // poll_interval = 2 in the test root: online within 19 s, stale within 1 h.
    r.set_heartbeat(ID1, &format!(r#"{{"received":{}}}"#, now - 3));
    r.set_heartbeat(ID2, &format!(r#"{{"received":{}}}"#, now - 600));
    let list = r.run("list-devices", &["--json"]).ok().json();
    assert_eq!(device(&list, ID1)["state"], "online");
    assert_eq!(device(&list, ID2)["state"], "stale");
    r.set_heartbeat(ID2, &format!(r#"{{"received":{}}}"#, now - 86400 * 3));
    assert_eq!(
        device(&r.run("list-devices", &["--json"]).ok().json(), ID2)["state"],
        "offline"
    );
    let table = r.run("list-devices", &[]).ok().stdout;
    assert!(table.starts_with("DEVICE "), "{}", table);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(ID1) && l.contains("online")),
        "{}",
        table
    );
}

#[test]
fn threat_23_everything_went_stale_at_once() {
    let r = two_devices();
    r.add("0242ac110003", &key(2));
    let now = phonehome_plumbing::clock::now();
    for (id, ago) in [(ID1, 900), (ID2, 905), ("0242ac110003", 898)] {
        r.set_heartbeat(id, &format!(r#"{{"received":{}}}"#, now - ago));
    }
    let out = r.run("list-devices", &[]).ok();
    assert!(
        out.stdout
            .contains("all 3 devices stopped calling in at the same time"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("the server, its sshd or its network is the likely cause"));
    // One device still online: no such note.
    r.set_heartbeat(ID1, &format!(r#"{{"received":{}}}"#, now));
    assert!(!r
        .run("list-devices", &[])
        .ok()
        .stdout
        .contains("stopped calling in"));
}

/// What a listing concluded, without the fields that move with the clock.
fn conclusions(out: &Out) -> Vec<serde_json::Value> {
    let v = out.json();
    let mut c: Vec<serde_json::Value> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            serde_json::json!([
                d["id"],
                d["state"],
                d["last_seen_unix"],
                d["seen_by"],
                d["from"]
            ])
        })
        .collect();
    c.push(v["notes"].clone());
    c
}

fn accepted(r: &Root, path: &str, t: i64, id: &str, fp: &str, from: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(r.path(path))
        .unwrap();
    let ts = phonehome_plumbing::clock::format_iso(t);
    writeln!(
        f,
        "{} srv sshd[9]: Accepted publickey for device{} from {} port 40022 ssh2: ED25519 {}",
        ts, id, from, fp
    )
    .unwrap();
    writeln!(
        f,
        "{} srv sshd[9]: Received disconnect from {} port 40022:11: disconnected by user",
        ts, from
    )
    .unwrap();
}

#[test]
fn incremental_listing_equals_a_full_scan_and_changes_no_state() {
    let r = two_devices();
    std::fs::create_dir_all(r.path("var/log")).unwrap();
    let now = phonehome_plumbing::clock::now();
    let state_before = snapshot(&r.path("var/lib/phonehome"));
    let both = |step: &str, reuse: bool| {
        let inc = r.run("list-devices", &["--json", "-v"]).ok();
        let full = r.run("list-devices", &["--json", "--no-cache"]).ok();
        assert_eq!(conclusions(&inc), conclusions(&full), "{}", step);
        let reused: u64 = inc
            .stderr
            .split(" bytes known from earlier runs")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: {}", step, inc.stderr));
        assert_eq!(reused > 0, reuse, "{}: {}", step, inc.stderr);
        conclusions(&inc)
    };
    accepted(&r, "var/log/auth.log", now - 900, ID1, FP1, "192.0.2.1");
    // An earlier release's JSON cache is not read, and is removed.
    let old_cache = r.path("var/cache/phonehome/logscan.json");
    std::fs::create_dir_all(old_cache.parent().unwrap()).unwrap();
    std::fs::write(&old_cache, r#"{"format":5,"hosts":[],"files":[]}"#).unwrap();
    both("first run", false);
    assert!(!old_cache.exists());
    // Appended: only the new bytes are read, the answer moves on.
    accepted(&r, "var/log/auth.log", now - 600, ID2, FP4, "192.0.2.2");
    let c = both("appended", true);
    // Rows by id: [0] is device 2, [1] device 1.
    assert_eq!(c[0][2], now - 600, "{:?}", c);
    // Rotated by rename, and a new file.
    std::fs::rename(r.path("var/log/auth.log"), r.path("var/log/auth.log.1")).unwrap();
    accepted(&r, "var/log/auth.log", now - 300, ID1, FP1, "192.0.2.3");
    let c = both("rotated", true);
    assert_eq!(c[1][4], "192.0.2.3");
    // The older one gzipped (a new file), then copytruncate of the current one.
    let gz = std::process::Command::new("gzip")
        .arg(r.path("var/log/auth.log.1"))
        .status()
        .unwrap();
    assert!(gz.success());
    std::fs::rename(
        r.path("var/log/auth.log.1.gz"),
        r.path("var/log/auth.log.2.gz"),
    )
    .unwrap();
    std::fs::copy(r.path("var/log/auth.log"), r.path("var/log/auth.log.1")).unwrap();
    std::fs::write(r.path("var/log/auth.log"), "").unwrap();
    accepted(&r, "var/log/auth.log", now - 120, ID2, FP4, "192.0.2.4");
    // Every file is new or shrank: all read again, nothing reused.
    let c = both("copytruncate", false);
    assert_eq!(c[0][2], now - 120, "{:?}", c);
    // A line rewritten before the cursor: that file is read whole again.
    let text = r.read("var/log/auth.log").replace("192.0.2.4", "192.0.2.5");
    std::fs::write(r.path("var/log/auth.log"), text).unwrap();
    let c = both("rewritten", true);
    assert_eq!(c[0][4], "192.0.2.5");
    // Another host's line appended counts as foreign in both.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(r.path("var/log/auth.log"))
        .unwrap();
    use std::io::Write;
    writeln!(f, "{} elsewhere sshd[9]: Accepted publickey for device{} from 192.0.2.9 port 1 ssh2: ED25519 {}", phonehome_plumbing::clock::format_iso(now - 60), ID1, FP1).unwrap();
    drop(f);
    both("foreign", true);
    // Listing wrote nothing in the state directory; the cursors are in the cache.
    assert_eq!(snapshot(&r.path("var/lib/phonehome")), state_before);
    let cache = r.path("var/cache/phonehome/logscan.bin");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
