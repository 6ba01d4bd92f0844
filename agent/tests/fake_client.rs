//! The built `phonehome` against a fake ssh client on PATH: what it sends, what it runs,
//! and how it handles a hostile or broken server, hangs, deaths and overlaps.
//! docs/THREATS.md cases 11–19, 34 and 35 are the tests named `threat_NN_...`.

mod common;
use common::*;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn words(s: &str) -> Vec<String> {
    s.split(' ').map(String::from).collect()
}

fn expected_tunnel_argv(f: &Fake, local: u16, remote: u16) -> Vec<String> {
    let mut v = words(&format!(
        "-i {} -T -K 30 -o ExitOnForwardFailure=yes -p 2222 -N -R localhost:{}:127.0.0.1:{} device{}@127.0.0.1",
        f.dir.join("id_dropbear").display(),
        remote,
        local,
        DEVICE
    ));
    v.retain(|s| !s.is_empty());
    v
}

fn running_tunnels(f: &Fake) -> Vec<u32> {
    f.tunnel_pids().into_iter().filter(|p| alive(*p)).collect()
}

#[test]
fn poll_sends_the_report_runs_exact_argv_and_opens_the_tunnel() {
    let f = Fake::new("basic");
    f.set("inbox", "22:9876\n");
    let out = f.poll();
    assert_ok(&out);

    let polls = f.poll_argvs();
    assert_eq!(polls.len(), 1);
    assert_eq!(
        polls[0],
        words(&format!(
            "-i {} -T -K 30 -o ExitOnForwardFailure=yes -p 2222 device{}@127.0.0.1 poll",
            f.dir.join("id_dropbear").display(),
            DEVICE
        ))
    );
    let report = &f.reports()[0];
    assert_eq!(report["protocol"], phonehome_protocol::PROTOCOL_VERSION);
    assert_eq!(report["client"], "dbclient 2022.83");
    assert!(report["uptime_secs"].as_u64().is_some());
    assert!(report["load1"].as_f64().is_some());

    assert!(wait_for(Duration::from_secs(5), || f.tunnel_argvs().len() == 1));
    assert_eq!(f.tunnel_argvs()[0], expected_tunnel_argv(&f, 22, 9876));
    assert_eq!(running_tunnels(&f).len(), 1);
    // The pinned key reached dbclient's known_hosts, without a port.
    assert_eq!(
        fs::read_to_string(f.run_dir().join("home/.ssh/known_hosts")).unwrap(),
        format!("127.0.0.1 {}\n", HOST_KEY)
    );

    let st = f.status_json();
    assert_eq!(st["last_poll"]["ok"], true);
    assert_eq!(st["tunnels"][0]["state"], "running");
    assert_eq!(st["tunnels"][0]["remote"], 9876);

    // A second tick leaves a healthy tunnel alone and reports it running.
    assert_ok(&f.poll());
    assert_eq!(f.tunnel_argvs().len(), 1);
    assert_eq!(f.reports()[1]["tunnels"][0]["state"], "running");

    // `stop` ends it.
    assert_ok(&run(f.cmd("stop")));
    assert!(running_tunnels(&f).is_empty());
    assert_eq!(f.status_json()["tunnels"].as_array().unwrap().len(), 0);
}

#[test]
fn status_text_shows_outcome_and_errors() {
    let f = Fake::new("status");
    f.set("inbox", "22:9876\nbogus\n");
    assert_ok(&f.poll());
    let out = run(f.cmd("status"));
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last poll: ok"), "{}", text);
    assert!(text.contains("requests: 22:9876"), "{}", text);
    assert!(text.contains("refused inbox line 2"), "{}", text);
    assert!(text.contains("tunnel 22:9876 running (pid"), "{}", text);
}

#[test]
fn threat_11_garbage_inbox_is_reported_and_never_executed() {
    let f = Fake::new("t11");
    let marker = f.dir.join("pwned");
    let inbox = format!(
        "$(touch {m})\n`touch {m}`\n22:9876;touch {m}\n22:9876\r\n\u{feff}80:8080\n22:98\u{0}76\n22:9876\n22:9876\n0:1\n65536:1\n{long}\n443:9443\n",
        m = marker.display(),
        long = "1".repeat(200)
    );
    f.set("inbox", &inbox);
    let out = f.poll();
    assert_ok(&out);
    assert!(!marker.exists(), "an inbox line was executed");
    assert!(wait_for(Duration::from_secs(5), || f.tunnel_argvs().len() == 2));
    let mut remotes: Vec<String> = f
        .tunnel_argvs()
        .iter()
        .map(|a| a[a.len() - 2].clone())
        .collect();
    remotes.sort();
    assert_eq!(
        remotes,
        vec![
            "localhost:9443:127.0.0.1:443",
            "localhost:9876:127.0.0.1:22"
        ]
    );

    // The refused lines travel in the next report, never executed.
    assert_ok(&f.poll());
    assert!(!marker.exists());
    let errors = f.reports()[1]["inbox_errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 10, "{:#?}", errors);
    let joined = serde_json::to_string(&errors).unwrap();
    for want in [
        "line 1:",
        "carriage return",
        "byte order mark",
        "NUL",
        "duplicate",
        "longer than",
    ] {
        assert!(joined.contains(want), "{} missing in {}", want, joined);
    }
    // Non-UTF-8 garbage too.
    fs::write(
        f.dir.join("inbox"),
        b"\xff\xfe\x00garbage\n22:9876\n443:9443\n",
    )
    .unwrap();
    assert_ok(&f.poll());
    assert_ok(&f.poll());
    let r = f.reports();
    assert!(serde_json::to_string(&r[3]["inbox_errors"])
        .unwrap()
        .contains("inbox line 1"));
    assert_eq!(
        f.tunnel_argvs().len(),
        2,
        "valid requests keep their tunnels"
    );
}

#[test]
fn threat_12_nothing_from_the_server_reaches_an_ssh_option() {
    let f = Fake::new("t12");
    f.set(
        "inbox",
        "22:9876 -oProxyCommand=sh\n-R1:2\n22:9876,evil@host\n22:localhost:9876\n2222:2223\n",
    );
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || f.tunnel_argvs().len() == 1));
    // The only tunnel is exactly the well-formed request; every other argv is ours.
    assert_eq!(f.tunnel_argvs(), vec![expected_tunnel_argv(&f, 2222, 2223)]);
    for argv in f.poll_argvs().iter().chain(f.tunnel_argvs().iter()) {
        for a in argv {
            assert!(
                !a.contains("ProxyCommand") && !a.contains("evil") && a != "-y",
                "{}",
                a
            );
        }
    }
    // Settings that could smuggle an option or a multihop are refused before any ssh runs.
    for (flag, value) in [
        ("--server", "-oProxyCommand=touch /tmp/x"),
        ("--server", "a,b"),
        ("--server", "u@h"),
        ("--server", "h/22"),
        ("--server", "h^22"),
        ("--server", "a b"),
        ("--account", "-oProxyCommand=x"),
        ("--account", "root@evil"),
        ("--port", "22 -v"),
    ] {
        let mut c = f.cmd("poll");
        c.args([flag, value]);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2), "{} {}", flag, value);
        assert!(stderr(&out).contains(&flag[2..]), "{}", stderr(&out));
    }
    assert_eq!(f.poll_argvs().len(), 1, "no ssh ran for a refused setting");
}

#[test]
fn threat_13_a_tunnel_that_dies_is_reopened_within_one_poll() {
    let f = Fake::new("t13");
    f.set("inbox", "22:9876\n");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    let first = running_tunnels(&f)[0];
    Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || !alive(first)));

    assert_ok(&f.poll());
    let report = &f.reports()[1];
    assert_eq!(report["tunnels"][0]["state"], "failed");
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    let second = running_tunnels(&f)[0];
    assert_ne!(first, second);
    assert_eq!(f.status_json()["tunnels"][0]["restarts"], 1);

    // A stopped (SIGSTOP) client forwards nothing: killed and reopened too.
    Command::new("kill")
        .args(["-STOP", &second.to_string()])
        .status()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || fs::read_to_string(
        format!("/proc/{}/stat", second)
    )
    .map(|s| s.contains(") T "))
    .unwrap_or(false)));
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || !alive(second)));
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    assert_ne!(running_tunnels(&f)[0], second);
    let st = f.status_json();
    assert_eq!(st["tunnels"][0]["restarts"], 2);
    assert!(st["tunnels"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("SIGSTOP"));
}

#[test]
fn threat_14_a_refused_forward_reaches_the_next_report_and_is_retried() {
    let f = Fake::new("t14");
    f.set("inbox", "22:9876\n");
    f.set("tunnel-mode", "fail");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || f.tunnel_argvs().len() == 1));
    let pid = f.tunnel_pids()[0];
    assert!(wait_for(Duration::from_secs(5), || !alive(pid)));

    assert_ok(&f.poll());
    let t = &f.reports()[1]["tunnels"][0];
    assert_eq!(t["state"], "failed");
    let err = t["last_error"].as_str().unwrap();
    assert!(
        err.contains("refused the port forward") && err.contains("listen port 9876"),
        "{}",
        err
    );
    // Retried on that poll, and the error stays visible in `status`.
    assert!(wait_for(Duration::from_secs(5), || f.tunnel_argvs().len() == 2));
    assert!(f.status_json()["tunnels"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("9876"));
}

#[test]
fn threat_15_unreachable_server_fails_fast_and_the_next_poll_recovers() {
    let f = Fake::new("t15");
    for (stderr_text, want) in [
        ("dbclient: Exited: Failed connecting to '127.0.0.1' port 2222: Connection refused\n", "connection refused"),
        ("dbclient: Exited: Error resolving 'nowhere.invalid' port '22'. Name or service not known\n", "cannot resolve"),
        ("dbclient: Exited: Failed connecting to '10.9.9.9' port 22: No route to host\n", "no route"),
    ] {
        f.set("poll-mode", "fail");
        f.set("poll-stderr", stderr_text);
        let start = Instant::now();
        let out = f.poll();
        assert_eq!(out.status.code(), Some(1));
        assert!(start.elapsed() < Duration::from_secs(8));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
        let st = f.status_json();
        assert_eq!(st["last_poll"]["ok"], false);
        assert!(st["last_poll"]["error"].as_str().unwrap().contains(want));
    }
    f.set("poll-mode", "ok");
    f.set("inbox", "22:9876\n");
    assert_ok(&f.poll());
    // The failure is in the report of the poll that recovered.
    let r = f.reports();
    assert!(r.last().unwrap()["last_error"]
        .as_str()
        .unwrap()
        .contains("no route"));
    assert_eq!(f.status_json()["last_poll"]["ok"], true);
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
}

#[test]
fn threat_16_a_host_key_prompt_never_hangs() {
    let f = Fake::new("t16");
    // dbclient 2022.83 spins on an unknown host key: the poll is killed at --timeout.
    f.set("poll-mode", "hostkey");
    let mut c = f.cmd("poll");
    c.args(["--timeout", "1"]);
    let start = Instant::now();
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(8));
    let e = f.status_json()["last_poll"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("timed out") && e.contains("host key"), "{}", e);
    let poll_pid: u32 = f.records("polls", "argv")[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!alive(poll_pid), "the hung client was left running");

    // A tunnel stuck at the prompt is killed and reported on the next poll.
    f.set("poll-mode", "ok");
    f.set("tunnel-mode", "hostkey");
    f.set("inbox", "22:9876\n");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    let stuck = running_tunnels(&f)[0];
    assert!(wait_for(Duration::from_secs(5), || fs::read_to_string(
        f.run_dir().join("tunnels/22-9876.log")
    )
    .map(|s| s.contains("trusted hosts"))
    .unwrap_or(false)));
    f.set("tunnel-mode", "up");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || !alive(stuck)));
    let reports = f.reports();
    let t = &reports.last().unwrap()["tunnels"][0];
    assert_eq!(t["state"], "failed");
    assert!(
        t["last_error"].as_str().unwrap().contains("host key"),
        "{}",
        t
    );
}

#[test]
fn threat_17_overlapping_ticks_the_second_exits_quietly() {
    let f = Fake::new("t17");
    f.set("poll-mode", "slow");
    f.set("inbox", "22:9876\n");
    let mut first = f.cmd("poll");
    let mut first = first
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || f.poll_argvs().len() == 1));
    let start = Instant::now();
    let second = f.poll();
    assert_ok(&second);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the second tick waited"
    );
    assert!(
        stderr(&second).trim().is_empty(),
        "not quiet: {}",
        stderr(&second)
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(f.poll_argvs().len(), 1, "two polls ran");
    assert!(wait_for(Duration::from_secs(5), || f.tunnel_argvs().len() == 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        f.tunnel_argvs().len(),
        1,
        "two tunnel processes for one request"
    );
}

#[test]
fn threat_18_a_killed_agent_leaves_no_lock_and_no_orphan() {
    let f = Fake::new("t18");
    f.set("poll-mode", "hang");
    let mut agent = f
        .cmd("poll")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || f.poll_argvs().len() == 1));
    let client: u32 = f.records("polls", "argv")[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || !alive(client)),
        "the poll's ssh outlived the agent"
    );

    f.set("poll-mode", "ok");
    f.set("inbox", "22:9876\n");
    let out = f.poll();
    assert_ok(&out);
    assert_eq!(f.poll_argvs().len(), 2, "the next tick was blocked");

    // After a reboot the run dir's records name processes that no longer exist (or
    // whose pid now belongs to someone else): they are restarted, never signalled.
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    let rec_path = f.run_dir().join("tunnels/22-9876.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    let old = rec["pid"].as_u64().unwrap() as u32;
    Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    rec["pid"] = stranger.id().into();
    fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    assert_ok(&f.poll());
    assert!(
        alive(stranger.id()),
        "a stranger with the recorded pid was killed"
    );
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

#[test]
fn threat_19_withdrawn_or_expired_requests_close_and_the_agent_follows_the_inbox_only() {
    let f = Fake::new("t19");
    f.set("inbox", "22:9876\n80:8080\n");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 2));
    // A device clock far off (before NTP) changes nothing: no expiry is evaluated here.
    let rec_path = f.run_dir().join("tunnels/22-9876.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    rec["started_at"] = 0.into();
    fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    assert_ok(&f.poll());
    assert_eq!(
        f.tunnel_argvs().len(),
        2,
        "a still-requested tunnel was touched"
    );

    // The server drops 80:8080 (withdrawn, or expired by its clock): closed on this poll.
    f.set("inbox", "22:9876\n");
    let pids_before = running_tunnels(&f);
    assert_ok(&f.poll());
    let st = f.status_json();
    let tunnels = st["tunnels"].as_array().unwrap();
    assert_eq!(tunnels.len(), 1);
    assert_eq!(tunnels[0]["remote"], 9876);
    assert_eq!(running_tunnels(&f).len(), 1);
    assert!(pids_before.iter().filter(|p| !alive(**p)).count() == 1);
    assert!(!f.run_dir().join("tunnels/80-8080.json").exists());

    f.set("inbox", "");
    assert_ok(&f.poll());
    assert!(running_tunnels(&f).is_empty());
    assert_eq!(
        f.status_json()["last_poll"]["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_hung_ssh_is_killed_at_the_timeout_with_a_clear_error() {
    let f = Fake::new("hang");
    f.set("poll-mode", "hang");
    let mut c = f.cmd("poll");
    c.args(["--timeout", "1"]);
    let start = Instant::now();
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(
        stderr(&out).contains("poll timed out after 1 s and was killed"),
        "{}",
        stderr(&out)
    );
    let client: u32 = f.records("polls", "argv")[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!alive(client), "leftover ssh process");
}

#[test]
fn a_pid_reused_by_another_process_is_not_killed_by_stop() {
    let f = Fake::new("reuse");
    f.set("inbox", "22:9876\n");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    let real = running_tunnels(&f)[0];
    Command::new("kill")
        .args(["-TERM", &real.to_string()])
        .status()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || !alive(real)));

    // Someone else now has "our" pid: same pid, other start time and argv.
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    let rec_path = f.run_dir().join("tunnels/22-9876.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    rec["pid"] = stranger.id().into();
    fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    assert_eq!(f.status_json()["tunnels"][0]["state"], "failed");
    assert_ok(&run(f.cmd("stop")));
    assert!(
        alive(stranger.id()),
        "stop killed a process that is not its tunnel"
    );
    assert!(!rec_path.exists());
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

#[test]
fn setup_writes_config_and_known_hosts_that_poll_then_uses() {
    let f = Fake::new("setup");
    let conf = f.dir.join("etc/phonehome.conf");
    let known = f.dir.join("etc/known_hosts");
    let mut c = Command::new(BIN);
    c.args(["setup", "--config", conf.to_str().unwrap(), "--server", "127.0.0.1", "--port", "2222"])
        .args(["--account", &format!("device{}", DEVICE), "--host-key", HOST_KEY])
        .args(["--host-key", "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBGLDVQ/jzMSrbe9YsdkDJZG8DivVbRSNvtN5mVEpCNVMag3mMzDJZ/AJzMnb5SgwywYCnp5mlioQeWEVrOpjP9I="])
        .args(["--known-hosts", known.to_str().unwrap(), "--key", f.dir.join("id_dropbear").to_str().unwrap()])
        .args(["--device-id", DEVICE, "--run-dir", f.run_dir().to_str().unwrap(), "--client", "dbclient"]);
    let out = run(c);
    assert_ok(&out);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&known).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let k = fs::read_to_string(&known).unwrap();
    assert_eq!(k.lines().count(), 2);
    assert!(
        k.starts_with(&format!("[127.0.0.1]:2222 {}\n", HOST_KEY)),
        "{}",
        k
    );
    let text = fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("server = 127.0.0.1\n") && !text.contains("host-key"),
        "{}",
        text
    );

    // A poll with only --config uses both files.
    f.set("inbox", "22:9876\n");
    let mut c = Command::new(BIN);
    c.env(
        "PATH",
        format!("{}:/usr/bin:/bin", f.dir.join("bin").display()),
    )
    .args([
        "poll",
        "--config",
        conf.to_str().unwrap(),
        "--log",
        "stderr",
    ]);
    assert_ok(&run(c));
    assert_eq!(f.poll_argvs().len(), 1);
    assert_eq!(
        fs::read_to_string(f.run_dir().join("home/.ssh/known_hosts"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    // Bad host keys: refused, nothing written.
    let other = f.dir.join("other.conf");
    for bad in ["ssh-ed25519", "ssh-ed25519 AAAA", "command=\"x\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPepv9pZfZuENxTlzREuAc0gKIGOohaJfmKJFDgf2KiK"] {
        let mut c = Command::new(BIN);
        c.args(["setup", "--config", other.to_str().unwrap(), "--server", "h", "--host-key", bad]);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("host key"), "{}", stderr(&out));
        assert!(!other.exists());
    }
    let mut c = Command::new(BIN);
    c.args([
        "setup",
        "--config",
        other.to_str().unwrap(),
        "--server",
        "h",
    ]);
    assert_eq!(run(c).status.code(), Some(2));
    assert!(!other.exists());
}

#[test]
fn config_file_errors_name_the_line_and_exit_2() {
    let f = Fake::new("conf");
    let conf = f.dir.join("bad.conf");
    fs::write(&conf, "# ok\nserver = 127.0.0.1\nfrobnicate = yes\n").unwrap();
    let out = run({
        let mut c = Command::new(BIN);
        c.args(["poll", "--config", conf.to_str().unwrap()]);
        c
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("line 3") && stderr(&out).contains("frobnicate"),
        "{}",
        stderr(&out)
    );
    let out = run({
        let mut c = Command::new(BIN);
        c.args([
            "id",
            "--config",
            f.dir.join("missing.conf").to_str().unwrap(),
        ]);
        c
    });
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing explicit config file is an error"
    );
    // Version and help on every command.
    let out = run({
        let mut c = Command::new(BIN);
        c.arg("--version");
        c
    });
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("phonehome {}", env!("CARGO_PKG_VERSION"))
    );
    for cmd in ["poll", "id", "status", "stop", "setup"] {
        let out = run({
            let mut c = Command::new(BIN);
            c.args([cmd, "--help"]);
            c
        });
        assert_ok(&out);
        assert!(String::from_utf8_lossy(&out.stdout)
            .contains(&format!("Usage: phonehome [OPTIONS] {}", cmd)));
    }
    let out = run({
        let mut c = Command::new(BIN);
        c.args(["id", "--device-id", "64:66:B3:4B:DE:54"]);
        c
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "6466b34bde54\n");
}

#[test]
fn failures_before_the_login_are_clear_and_recorded() {
    let f = Fake::new("early");
    // No private key yet: exit 1, the reason logged and kept for `status`.
    fs::remove_file(f.dir.join("id_dropbear")).unwrap();
    let out = f.poll();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("private key") && stderr(&out).contains("dropbearkey"),
        "{}",
        stderr(&out)
    );
    assert!(f.status_json()["last_poll"]["error"]
        .as_str()
        .unwrap()
        .contains("private key"));
    assert!(f.poll_argvs().is_empty());

    // No client on PATH.
    fs::write(f.dir.join("id_dropbear"), "k").unwrap();
    let mut c = f.cmd("poll");
    c.env("PATH", "/nonexistent");
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no ssh client found"),
        "{}",
        stderr(&out)
    );

    // A run dir that cannot be created.
    let out = run(bare_poll(&[
        "--host-key",
        HOST_KEY,
        "--run-dir",
        "/proc/phonehome-nope",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot create the run dir"),
        "{}",
        stderr(&out)
    );

    // No pinned host key at all: a configuration error.
    let out = run(bare_poll(&["--known-hosts", "/nonexistent"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--host-key"), "{}", stderr(&out));
}

/// `phonehome poll` with no config file, a server and a device id, logging to stderr,
/// plus `extra`: for failures that happen before any client is run.
fn bare_poll(extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "poll",
        "--config",
        "/dev/null",
        "--server",
        "h",
        "--device-id",
        DEVICE,
        "--log",
        "stderr",
    ])
    .args(extra);
    c
}

#[test]
fn threat_34_an_answer_without_the_gate_is_a_failed_poll() {
    let f = Fake::new("nogate");
    f.set("inbox", "22:9876\n");
    // A client that gave up at a password prompt (dbclient, Debian's sshd and an
    // account the server does not know) exits 0 with no answer; an old gate answers
    // bare lines. Neither is the gate's answer.
    for mode in ["nogate", "raw"] {
        f.set("poll-mode", mode);
        let out = f.poll();
        assert_eq!(out.status.code(), Some(1), "{}: {}", mode, stderr(&out));
        let st = f.status_json();
        let err = st["last_poll"]["error"].as_str().unwrap().to_string();
        assert!(
            err.contains("did not come from the phonehome gate")
                && err.contains("add-device 6466b34bde54")
                && err.contains("device6466b34bde54"),
            "{}: {}",
            mode,
            err
        );
        assert_eq!(st["last_poll"]["ok"], false);
        assert!(f.tunnel_argvs().is_empty(), "{}: nothing acted on", mode);
    }
    // The gate again: ok, and the error goes out with the next report.
    f.set("poll-mode", "ok");
    assert_ok(&f.poll());
    let reports = f.reports();
    assert!(reports.last().unwrap()["last_error"]
        .as_str()
        .unwrap()
        .contains("phonehome gate"));
}

/// What a tick killed between spawning a tunnel and recording it leaves behind: the
/// record written just before the spawn ("starting", pid 0) and the process, started
/// exactly as the agent starts it (same argv, HOME, its own session).
fn leave_an_unrecorded_tunnel(f: &Fake, local: u16, remote: u16) -> std::process::Child {
    let mut argv = vec![f.dir.join("bin/dbclient").display().to_string()];
    argv.extend(expected_tunnel_argv(f, local, remote));
    let run = f.run_dir();
    fs::create_dir_all(run.join("tunnels")).unwrap();
    fs::create_dir_all(run.join("home/.ssh")).unwrap();
    let record = serde_json::json!({
        "local": local, "remote": remote, "pid": 0, "start_time": 0, "argv": argv,
        "started_at": 1, "restarts": 0, "last_error": null,
    });
    fs::write(
        run.join(format!("tunnels/{}-{}.json", local, remote)),
        record.to_string(),
    )
    .unwrap();
    let child = Command::new("setsid")
        .args(&argv)
        .env("HOME", run.join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(f)
        .len()
        == 1));
    child
}

#[test]
fn threat_35_a_tunnel_started_but_not_recorded_is_adopted_not_doubled() {
    let f = Fake::new("adopt");
    let mut orphan = leave_an_unrecorded_tunnel(&f, 22, 9876);
    let pid = running_tunnels(&f)[0];
    // Still requested: adopted, not started a second time (it would find the port held).
    f.set("inbox", "22:9876\n");
    assert_ok(&f.poll());
    assert_eq!(running_tunnels(&f), vec![pid], "exactly the orphan runs");
    let st = f.status_json();
    assert_eq!(st["tunnels"][0]["pid"], pid);
    assert_eq!(st["tunnels"][0]["state"], "running");
    // Withdrawn: the adopted process is the one stopped.
    f.set("inbox", "");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || !alive(pid)));
    let _ = orphan.wait();

    // Withdrawn while the tick was dead: found and stopped all the same.
    let f = Fake::new("adopt-withdrawn");
    let mut orphan = leave_an_unrecorded_tunnel(&f, 80, 8080);
    let pid = running_tunnels(&f)[0];
    assert_ok(&f.poll());
    assert!(
        wait_for(Duration::from_secs(5), || !alive(pid)),
        "the orphan still holds its port"
    );
    assert_eq!(f.status_json()["tunnels"].as_array().unwrap().len(), 0);
    let _ = orphan.wait();

    // Killed before the spawn: the record alone; the next tick just starts it.
    let f = Fake::new("adopt-none");
    let run = f.run_dir();
    fs::create_dir_all(run.join("tunnels")).unwrap();
    fs::write(
        run.join("tunnels/22-9876.json"),
        serde_json::json!({"local": 22, "remote": 9876, "pid": 0, "start_time": 0,
            "argv": ["x"], "started_at": 1, "restarts": 0, "last_error": null})
        .to_string(),
    )
    .unwrap();
    f.set("inbox", "22:9876\n");
    assert_ok(&f.poll());
    assert!(wait_for(Duration::from_secs(5), || running_tunnels(&f)
        .len()
        == 1));
    assert_eq!(f.status_json()["tunnels"][0]["state"], "running");
}

/// A dropbear-format and an OpenSSH-format private key, as far as the agent looks
/// (their first bytes tell the format; the fake client never reads them).
const DROPBEAR_KEY: &[u8] = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x40fake";
const OPENSSH_KEY: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n";

/// The setup line as add-device prints it (server, port, account, host keys: no --key,
/// no --client), plus the test's own paths, into `etc/phonehome.conf` of the temp dir.
fn setup_as_printed(f: &Fake) -> std::path::PathBuf {
    let etc = f.dir.join("etc");
    fs::create_dir_all(&etc).unwrap();
    let conf = etc.join("phonehome.conf");
    let mut c = Command::new(BIN);
    c.args(["setup", "--server", "127.0.0.1", "--port", "2222"])
        .args([
            "--account",
            &format!("device{}", DEVICE),
            "--host-key",
            HOST_KEY,
        ])
        .args(["--config", conf.to_str().unwrap()])
        .args(["--known-hosts", etc.join("known_hosts").to_str().unwrap()])
        .args(["--device-id", DEVICE, "--log", "stderr"])
        .args(["--run-dir", f.run_dir().to_str().unwrap()])
        .env("PATH", "/nonexistent");
    assert_ok(&run(c));
    conf
}

/// `phonehome poll --config CONF` with only the fake clients in `dirs` on PATH.
fn poll_with_clients(f: &Fake, conf: &std::path::Path, dirs: &[&str]) -> std::process::Output {
    poll_with_clients_and(f, conf, dirs, &[])
}

fn poll_with_clients_and(
    f: &Fake,
    conf: &std::path::Path,
    dirs: &[&str],
    extra: &[&str],
) -> std::process::Output {
    let path: Vec<String> = dirs
        .iter()
        .map(|d| f.dir.join(d).display().to_string())
        .collect();
    let mut c = Command::new(BIN);
    c.args(["poll", "--config", conf.to_str().unwrap()])
        .args(extra)
        .env("PATH", path.join(":"))
        .stdin(Stdio::null());
    run(c)
}

/// Which client ran the last poll (OpenSSH's argv starts with -F) and with which key.
fn last_poll_client_and_key(f: &Fake) -> (&'static str, String) {
    let argv = f.poll_argvs().pop().expect("no poll ran");
    let key = argv[argv.iter().position(|a| a == "-i").unwrap() + 1].clone();
    (if argv[0] == "-F" { "ssh" } else { "dbclient" }, key)
}

#[test]
fn the_setup_line_works_unedited_with_either_client() {
    // Issue 13: the same printed line on an OpenSSH-only box, on OpenWrt (dbclient) and
    // on a box with both; the agent pairs the client with the key it can read.
    let f = Fake::new("either");
    let conf = setup_as_printed(&f);
    let etc = f.dir.join("etc");
    let text = fs::read_to_string(&conf).unwrap();
    assert!(
        !text.contains("key =") && !text.contains("client ="),
        "{}",
        text
    );

    // An OpenSSH-only box with no key yet: what was looked for, and how to make one.
    let out = poll_with_clients(&f, &conf, &["ssh-bin"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let k = etc.display();
    assert!(
        err.contains(&format!(
            "no private key found: looked for {k}/id_ed25519, {k}/id_ecdsa, {k}/id_rsa"
        )) && err.contains(&format!("ssh-keygen -t ed25519 -N '' -f {k}/id_ed25519"))
            && !err.contains("id_dropbear"),
        "{}",
        err
    );
    assert!(f.poll_argvs().is_empty(), "no client ran without a key");

    // With its key: ssh and id_ed25519.
    fs::write(etc.join("id_ed25519"), OPENSSH_KEY).unwrap();
    assert_ok(&poll_with_clients(&f, &conf, &["ssh-bin"]));
    assert_eq!(
        last_poll_client_and_key(&f),
        ("ssh", format!("{k}/id_ed25519"))
    );
    assert!(f.status_json()["last_poll"]["client"]
        .as_str()
        .unwrap()
        .starts_with("ssh OpenSSH_9.2p1"));

    // dbclient on PATH too, but only the OpenSSH key: still ssh.
    assert_ok(&poll_with_clients(&f, &conf, &["bin", "ssh-bin"]));
    assert_eq!(last_poll_client_and_key(&f).0, "ssh");

    // OpenWrt: dbclient only, and its dropbear key.
    fs::write(etc.join("id_dropbear"), DROPBEAR_KEY).unwrap();
    assert_ok(&poll_with_clients(&f, &conf, &["bin"]));
    assert_eq!(
        last_poll_client_and_key(&f),
        ("dbclient", format!("{k}/id_dropbear"))
    );
}

#[test]
fn a_key_and_a_client_that_do_not_match_say_so() {
    let f = Fake::new("mismatch");
    let conf = setup_as_printed(&f);
    let etc = f.dir.join("etc");
    // A dropbear key on a box without dbclient.
    fs::write(etc.join("id_dropbear"), DROPBEAR_KEY).unwrap();
    let out = poll_with_clients(&f, &conf, &["ssh-bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "is in dropbear format, which only dbclient reads, and dbclient is not on PATH"
        ) && stderr(&out).contains("dropbearconvert dropbear openssh"),
        "{}",
        stderr(&out)
    );
    // Explicit choices win, and a --key that dbclient cannot read is said to be so.
    let mine = f.dir.join("mine");
    fs::write(&mine, OPENSSH_KEY).unwrap();
    let key = ["--key", mine.to_str().unwrap()];
    let out = poll_with_clients_and(
        &f,
        &conf,
        &["bin", "ssh-bin"],
        &[&key[..], &["--client", "dbclient"]].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "private key {} is in OpenSSH format, which dbclient cannot read: use --client ssh",
            mine.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(f.poll_argvs().is_empty());
    // The same key with the client left to the agent: the client that reads it.
    assert_ok(&poll_with_clients_and(&f, &conf, &["bin", "ssh-bin"], &key));
    assert_eq!(
        last_poll_client_and_key(&f),
        ("ssh", mine.display().to_string())
    );
    // setup says which pair the poll will use, or why there is none.
    let mut c = Command::new(BIN);
    c.args([
        "setup",
        "--config",
        conf.to_str().unwrap(),
        "--server",
        "127.0.0.1",
    ])
    .args([
        "--host-key",
        HOST_KEY,
        "--known-hosts",
        etc.join("kh").to_str().unwrap(),
    ])
    .env("PATH", f.dir.join("bin").display().to_string());
    let out = run(c);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "client {}, key {}/id_dropbear",
            f.dir.join("bin/dbclient").display(),
            etc.display()
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_readme_help_is_the_real_one() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```\nUsage: phonehome [OPTIONS] COMMAND")
        .expect("agent/README.md has no --help block")
        + 4;
    let len = readme[start..].find("```").unwrap();
    let out = run({
        let mut c = Command::new(BIN);
        c.arg("--help");
        c
    });
    assert_ok(&out);
    assert_eq!(
        &readme[start..start + len],
        String::from_utf8_lossy(&out.stdout),
        "agent/README.md's usage block differs from `phonehome --help`: paste the real one"
    );
}
