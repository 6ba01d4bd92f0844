//! The built `phonehome` against a REAL OpenSSH sshd on 127.0.0.1, with the real
//! dropbear `dbclient` and the real OpenSSH `ssh`: poll, open a tunnel, talk through it,
//! withdraw it, see it closed; plus the failures a real server produces (unknown host
//! key, refused key, refused connection, refused forward). The sshd is a throwaway one
//! (own config, host key, authorized_keys and gate script in a temp dir) in a pid
//! namespace of its own, killed with every process it forked by a Drop guard even when
//! a test panics. Needs root (sshd must switch users; unshare).
//!
//! `PHONEHOME_TEST_DBCLIENT=/path/to/dbclient` runs the dbclient tests with that binary
//! (the dropbear matrix of `./install.sh test` runs them with every release routers
//! ship) instead of the one on PATH; the tests then check that it is the one that ran.

mod common;
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "these tests start a real sshd on 127.0.0.1 and must run as root (CI does): run `cargo test` as root"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {}", cmd, e));
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The dbclient these tests must use: `$PHONEHOME_TEST_DBCLIENT` if set, else the one
/// on PATH (`None`).
fn chosen_dbclient() -> Option<PathBuf> {
    let path = std::env::var_os("PHONEHOME_TEST_DBCLIENT")?;
    let path = PathBuf::from(path);
    assert!(
        path.is_absolute() && path.is_file(),
        "PHONEHOME_TEST_DBCLIENT={} is not an absolute path to a file",
        path.display()
    );
    Some(path)
}

/// What the agent must report as its client when `$PHONEHOME_TEST_DBCLIENT` is set:
/// `dbclient YYYY.NN` from that binary's own `-V`.
fn chosen_dbclient_description() -> Option<String> {
    let path = chosen_dbclient()?;
    let out = Command::new(&path).arg("-V").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let version = text
        .split("Dropbear v")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{} -V said {:?}", path.display(), text));
    Some(format!("dbclient {}", version))
}

/// sshd as the first process of a pid namespace of its own. sshd forks a process for
/// each connection (which re-executes sshd and reads the host key and the log's path
/// again), and those outlive a killed listener: one could start after the temp dir was
/// removed ("Couldn't open logfile" in CI) or recreate the log in it and leave the dir
/// behind. When the namespace's first process dies the kernel kills every other one,
/// and `unshare` exits only once they are all gone. A test killed outright takes it
/// along: `unshare` dies with the test's thread, and `--kill-child` kills sshd with it.
struct NsSshd {
    unshare: Child,
}

impl NsSshd {
    fn start(args: &[&str]) -> NsSshd {
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--kill-child", "/usr/sbin/sshd"])
            .args(args)
            .stdin(Stdio::null());
        phonehome_plumbing::process::die_with_parent(&mut cmd);
        NsSshd {
            unshare: cmd.spawn().expect("start unshare --pid /usr/sbin/sshd"),
        }
    }

    /// The namespace's first process: sshd, the child `unshare` forked.
    fn sshd_pid(&self) -> Option<u32> {
        let pid = self.unshare.id();
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// How sshd ended, if it did (unshare exits with its status).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.unshare.try_wait().ok().flatten()
    }

    /// End sshd, and with it every process of its namespace; wait until they are gone.
    /// SIGTERM first: sshd exits on it, and `unshare` then exits quietly, where a child
    /// killed outright makes it fail to re-raise SIGKILL on itself ("sigprocmask unblock
    /// failed"). SIGKILL if sshd has not gone within a few seconds.
    fn stop(mut self) {
        use phonehome_plumbing::process::{SIGKILL, SIGTERM};
        match self
            .sshd_pid()
            .and_then(|pid| phonehome_plumbing::process::Handle::open(pid).ok())
        {
            Some(sshd) => {
                let _ = sshd.signal(SIGTERM);
                if !sshd.wait_exit(Duration::from_secs(5)) {
                    let _ = sshd.signal(SIGKILL);
                }
            }
            None => {
                let _ = self.unshare.kill();
            }
        }
        let _ = self.unshare.wait();
    }
}

/// A throwaway sshd and the device side of the test.
struct Server {
    dir: TempDir,
    sshd: Option<NsSshd>,
    port: u16,
    /// The remote port the device key may listen on.
    granted: u16,
    host_key: String,
}

impl Server {
    fn start(tag: &str) -> Server {
        Server::start_with(
            tag,
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
        )
    }

    /// `auth`: the sshd_config lines of the authentication methods offered.
    fn start_with(tag: &str, auth: &str) -> Server {
        require_root();
        let dir = TempDir::new(tag);
        let d = dir.path().to_str().unwrap().to_string();
        fs::create_dir_all("/run/sshd").unwrap();
        sh(Command::new("ssh-keygen").args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &format!("{}/host_ed25519", d),
        ]));
        sh(Command::new("ssh-keygen").args([
            "-q",
            "-t",
            "ecdsa",
            "-N",
            "",
            "-f",
            &format!("{}/ecdsa", d),
        ]));
        let host_pub = fs::read_to_string(format!("{}/host_ed25519.pub", d)).unwrap();
        let host_key = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");

        // The device key, made the way a router makes it, plus an OpenSSH copy.
        sh(Command::new("dropbearkey").args([
            "-t",
            "ed25519",
            "-f",
            &format!("{}/id_dropbear", d),
        ]));
        sh(Command::new("dropbearconvert").args([
            "dropbear",
            "openssh",
            &format!("{}/id_dropbear", d),
            &format!("{}/id_openssh", d),
        ]));
        let pubkey =
            sh(Command::new("dropbearkey").args(["-y", "-f", &format!("{}/id_dropbear", d)]));
        let pubkey = pubkey
            .lines()
            .find(|l| l.starts_with("ssh-ed25519 "))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");

        // The gate: saves the status report (its line, as the real gate reads it) and
        // the command, answers with the inbox, framed as the real gate frames it.
        write_exec(
            &dir.join("gate"),
            &format!(
                "#!/bin/sh\nIFS= read -r report; printf '%s\\n' \"$report\" > {d}/status.tmp && mv {d}/status.tmp {d}/status.json\nprintf '%s\\n' \"$SSH_ORIGINAL_COMMAND\" > {d}/command\necho 'phonehome-inbox {v}'\ncat {d}/inbox 2>/dev/null\necho end\nexit 0\n",
                d = d,
                v = phonehome_protocol::PROTOCOL_VERSION
            ),
        );
        let granted = free_port();
        fs::write(
            dir.join("authorized_keys"),
            format!(
                "restrict,port-forwarding,permitlisten=\"localhost:{}\",command=\"{}/gate\" {}\n",
                granted, d, pubkey
            ),
        )
        .unwrap();
        fs::write(dir.join("empty.conf"), "").unwrap();
        fs::create_dir_all(dir.join("bin")).unwrap();
        if let Some(dbclient) = chosen_dbclient() {
            std::os::unix::fs::symlink(dbclient, dir.join("bin/dbclient")).unwrap();
        }

        let port = free_port();
        let conf = dir.join("sshd_config");
        fs::write(
            &conf,
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host_ed25519\nPidFile none\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n\
                 {auth}AllowTcpForwarding remote\n\
                 AllowStreamLocalForwarding no\nPermitOpen none\nClientAliveInterval 5\nClientAliveCountMax 2\nLogLevel VERBOSE\n"
            ),
        )
        .unwrap();
        sh(Command::new("/usr/sbin/sshd").args(["-t", "-f", conf.to_str().unwrap()]));
        let sshd = NsSshd::start(&[
            "-D",
            "-f",
            conf.to_str().unwrap(),
            "-E",
            dir.join("sshd.log").to_str().unwrap(),
        ]);
        let mut s = Server {
            dir,
            sshd: Some(sshd),
            port,
            granted,
            host_key,
        };
        let up = wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !up {
            s.dump();
            panic!("sshd did not start listening on 127.0.0.1:{}", port);
        }
        s
    }

    fn sshd_log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The processes of this sshd's pid namespace that listen on TCP `port`: the
    /// listening sockets' inodes (sock_diag), matched against those processes' file
    /// descriptors.
    fn sshd_listeners_on(&self, port: u16) -> Vec<u32> {
        let inodes: Vec<String> = phonehome_plumbing::sockdiag::tcp_listeners()
            .expect("sock_diag answers")
            .into_iter()
            .filter(|l| l.port == port)
            .map(|l| format!("socket:[{}]", l.inode))
            .collect();
        let sshd = self
            .sshd
            .as_ref()
            .and_then(NsSshd::sshd_pid)
            .expect("sshd runs");
        let ns = fs::read_link(format!("/proc/{sshd}/ns/pid")).expect("sshd's pid namespace");
        let mut pids = vec![];
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() != Some(&ns) {
                continue;
            }
            let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let listens = fds.flatten().any(|fd| {
                fs::read_link(fd.path())
                    .map(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
                    .unwrap_or(false)
            });
            if listens {
                pids.push(pid);
            }
        }
        pids
    }

    fn set_inbox(&self, text: &str) {
        fs::write(self.dir.join("inbox"), text).unwrap();
    }

    fn dump(&mut self) {
        if let Some(st) = self.sshd.as_mut().and_then(NsSshd::exited) {
            eprintln!("sshd exited: {}", st);
        }
        eprintln!(
            "--- sshd log\n{}---",
            fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
        );
    }

    fn agent(&self, command: &str, client: &str) -> Command {
        self.agent_as(command, client, "root")
    }

    fn agent_as(&self, command: &str, client: &str, account: &str) -> Command {
        let key = if client == "ssh" {
            "id_openssh"
        } else {
            "id_dropbear"
        };
        let mut c = Command::new(BIN);
        // The chosen dbclient, if any, comes first on PATH.
        c.env(
            "PATH",
            format!(
                "{}:{}",
                self.dir.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        c.arg(command)
            .args(["--config", self.dir.join("empty.conf").to_str().unwrap()])
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--account",
                account,
            ])
            .args(["--key", self.dir.join(key).to_str().unwrap()])
            .args(["--client", client, "--device-id", DEVICE, "--log", "stderr"])
            .args([
                "--run-dir",
                self.dir.join(&format!("run-{}", client)).to_str().unwrap(),
            ])
            .stdin(Stdio::null());
        c
    }

    fn poll(&self, client: &str, host_key: &str) -> std::process::Output {
        let mut c = self.agent("poll", client);
        c.args(["--host-key", host_key, "--timeout", "10"]);
        let out = run(c);
        if !out.status.success() {
            eprintln!(
                "--- sshd log\n{}---",
                fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
        }
        out
    }

    /// The chosen dbclient (`$PHONEHOME_TEST_DBCLIENT`) is the one the last poll used.
    fn assert_chosen_client(&self, client: &str) {
        if let (Some(expected), "dbclient") = (chosen_dbclient_description(), client) {
            assert_eq!(
                self.status(client)["last_poll"]["client"].as_str(),
                Some(expected.as_str())
            );
        }
    }

    fn report(&self) -> phonehome_protocol::StatusReport {
        phonehome_protocol::StatusReport::from_device(
            &fs::read(self.dir.join("status.json")).unwrap(),
        )
        .unwrap()
    }

    fn status(&self, client: &str) -> serde_json::Value {
        let mut c = self.agent("status", client);
        c.arg("--json");
        let out = run(c);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for client in ["dbclient", "ssh"] {
            if self.dir.join(&format!("run-{}", client)).exists() {
                let _ = self
                    .agent("stop", client)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(sshd) = self.sshd.take() {
            sshd.stop();
        }
        if std::thread::panicking() {
            self.dump();
        }
    }
}

/// A TCP echo service on the device's loopback; the tunnel's target.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn echo_through(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    if s.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
}

fn full_cycle(client: &str) {
    let srv = Server::start(&format!("real-{}", client));
    srv.set_inbox("");
    let out = srv.poll(client, &srv.host_key);
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(srv.dir.join("command")).unwrap(),
        "poll\n"
    );
    let report = srv.report();
    assert_eq!(report.protocol, phonehome_protocol::PROTOCOL_VERSION);
    let expected_client = if client == "ssh" {
        "ssh OpenSSH_"
    } else {
        "dbclient 20"
    };
    assert!(
        report
            .client
            .as_deref()
            .unwrap()
            .starts_with(expected_client),
        "{:?}",
        report.client
    );
    if client == "dbclient" {
        if let Some(expected) = chosen_dbclient_description() {
            assert_eq!(report.client.as_deref(), Some(expected.as_str()));
        }
    }
    assert!(report.tunnels.is_empty());

    // Ask for a tunnel to the echo service: it appears on the server's loopback.
    let echo = echo_server();
    srv.set_inbox(&format!("{}:{}\n", echo, srv.granted));
    assert_ok(&srv.poll(client, &srv.host_key));
    assert!(
        wait_for(Duration::from_secs(10), || echo_through(srv.granted)),
        "no echo through 127.0.0.1:{} on the server",
        srv.granted
    );
    assert_ok(&srv.poll(client, &srv.host_key));
    let report = srv.report();
    assert_eq!(report.tunnels.len(), 1);
    assert_eq!(
        report.tunnels[0].state,
        phonehome_protocol::TunnelState::Running
    );
    assert_eq!(srv.status(client)["tunnels"][0]["state"], "running");
    assert!(
        !srv.sshd_listeners_on(srv.granted).is_empty(),
        "the tunnel's port is not sshd's"
    );

    // Withdraw: the next poll closes it and sshd stops listening on the port.
    srv.set_inbox("");
    assert_ok(&srv.poll(client, &srv.host_key));
    assert!(
        wait_for(Duration::from_secs(10), || srv
            .sshd_listeners_on(srv.granted)
            .is_empty()),
        "the withdrawn tunnel's port is still open"
    );
    assert_eq!(srv.status(client)["tunnels"].as_array().unwrap().len(), 0);
}

/// Issue 13: no --key and no --client, as the setup line leaves them. Each key dir holds
/// one key; with both real clients on PATH the agent pairs it with the one that reads
/// it, and the login works.
#[test]
fn real_clients_are_paired_with_the_key_they_can_read() {
    let srv = Server::start("real-auto");
    srv.set_inbox("");
    for (name, made_as, client) in [
        ("id_ed25519", "id_openssh", "ssh OpenSSH_"),
        ("id_dropbear", "id_dropbear", "dbclient 20"),
    ] {
        let keys = srv.dir.join(&format!("keys-{}", name));
        fs::create_dir_all(&keys).unwrap();
        fs::copy(srv.dir.join(made_as), keys.join(name)).unwrap();
        fs::write(keys.join("phonehome.conf"), "").unwrap();
        let mut c = Command::new(BIN);
        c.args([
            "poll",
            "--config",
            keys.join("phonehome.conf").to_str().unwrap(),
        ])
        .args(["--server", "127.0.0.1", "--port", &srv.port.to_string()])
        .args([
            "--account",
            "root",
            "--device-id",
            DEVICE,
            "--log",
            "stderr",
        ])
        .args(["--host-key", &srv.host_key, "--timeout", "10"])
        .args([
            "--run-dir",
            srv.dir.join(&format!("run-{}", name)).to_str().unwrap(),
        ])
        // The dropbear matrix's dbclient (PHONEHOME_TEST_DBCLIENT), if any, first.
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", srv.dir.join("bin").display()),
        )
        .stdin(Stdio::null());
        assert_ok(&run(c));
        let expected = match (client, chosen_dbclient_description()) {
            ("dbclient 20", Some(chosen)) => chosen,
            _ => client.to_string(),
        };
        let report = srv.report();
        assert!(
            report.client.as_deref().unwrap().starts_with(&expected),
            "{}: {:?}",
            name,
            report.client
        );
    }
}

#[test]
fn real_sshd_with_dbclient_poll_tunnel_withdraw() {
    full_cycle("dbclient");
}

#[test]
fn real_sshd_with_openssh_poll_tunnel_withdraw() {
    full_cycle("ssh");
}

#[test]
fn threat_16_real_clients_refuse_an_unknown_host_key_without_hanging() {
    let srv = Server::start("real-hostkey");
    srv.set_inbox("");
    // A different key of the same type pinned (a changed key), and a key of another type
    // only (dbclient 2022.83 then asks "Do you want to continue connecting?").
    let other_type = fs::read_to_string(srv.dir.join("ecdsa.pub")).unwrap();
    let other_type: String = other_type
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    for (client, wrong) in [
        ("dbclient", HOST_KEY),
        ("ssh", HOST_KEY),
        ("dbclient", other_type.as_str()),
        ("ssh", other_type.as_str()),
    ] {
        let start = Instant::now();
        let out = srv.poll(client, wrong);
        assert_eq!(out.status.code(), Some(1), "{}", client);
        assert!(start.elapsed() < Duration::from_secs(15), "{} hung", client);
        let err = srv.status(client)["last_poll"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(err.contains("host key"), "{}: {}", client, err);
        srv.assert_chosen_client(client);
        assert!(
            !srv.dir.join("command").exists(),
            "{} logged in despite the wrong host key",
            client
        );
    }
}

#[test]
fn threat_15_real_clients_report_refused_connections_and_refused_keys() {
    let mut srv = Server::start("real-refused");
    srv.set_inbox("");
    // A key the server does not know.
    fs::write(srv.dir.join("authorized_keys"), "").unwrap();
    for client in ["dbclient", "ssh"] {
        let out = srv.poll(client, &srv.host_key.clone());
        assert_eq!(out.status.code(), Some(1));
        let err = srv.status(client)["last_poll"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            err.contains("refused this device's key"),
            "{}: {}",
            client,
            err
        );
        srv.assert_chosen_client(client);
    }
    // Nothing listening.
    srv.sshd.take().expect("sshd runs").stop();
    for client in ["dbclient", "ssh"] {
        let start = Instant::now();
        let out = srv.poll(client, &srv.host_key.clone());
        assert_eq!(out.status.code(), Some(1));
        assert!(start.elapsed() < Duration::from_secs(5));
        let err = srv.status(client)["last_poll"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(err.contains("connection refused"), "{}: {}", client, err);
        srv.assert_chosen_client(client);
    }
}

#[test]
fn threat_14_real_forward_refused_by_the_server_is_reported() {
    let srv = Server::start("real-forward");
    let echo = echo_server();
    // A port the key may not listen on (permitlisten grants only `granted`).
    let other = free_port();
    srv.set_inbox(&format!("{}:{}\n", echo, other));
    for client in ["dbclient", "ssh"] {
        assert_ok(&srv.poll(client, &srv.host_key));
        let run_dir: PathBuf = srv.dir.join(&format!("run-{}", client));
        let rec: serde_json::Value = serde_json::from_slice(
            &fs::read(run_dir.join(format!("tunnels/{}-{}.json", echo, other))).unwrap(),
        )
        .unwrap();
        let pid = rec["pid"].as_u64().unwrap() as u32;
        assert!(
            wait_for(Duration::from_secs(10), || !alive(pid)),
            "{}: the refused tunnel kept running: /proc/{pid}/stat {:?}, cmdline {:?}, its log {:?}",
            client,
            fs::read_to_string(format!("/proc/{pid}/stat")),
            cmdline(pid),
            fs::read_to_string(run_dir.join(format!("tunnels/{}-{}.log", echo, other))),
        );
        assert_ok(&srv.poll(client, &srv.host_key));
        let report = srv.report();
        assert_eq!(
            report.tunnels[0].state,
            phonehome_protocol::TunnelState::Failed
        );
        let err = report.tunnels[0].last_error.clone().unwrap();
        assert!(
            err.contains("refused the port forward"),
            "{}: {}",
            client,
            err
        );
        // No tunnel on `other`: sshd refused it and listens there with none of its
        // processes. (Not "nothing accepts a connection there": a parallel test may bind
        // the port once free_port has let it go, or a connect may pick it as its own
        // source port and meet itself.)
        assert!(
            srv.sshd_log().contains(&format!(
                "remote forward to host localhost port {other}, but the request was denied"
            )),
            "{}: sshd did not log the refusal",
            client
        );
        assert_eq!(
            srv.sshd_listeners_on(other),
            Vec::<u32>::new(),
            "{}",
            client
        );
        srv.assert_chosen_client(client);
    }
}

#[test]
fn threat_34_an_account_the_server_does_not_know_is_never_an_ok_poll() {
    // Debian's default: password authentication offered, to unknown users too.
    // dbclient without a terminal gives up at the prompt and exits 0; the agent must
    // still see that the gate never answered.
    let srv = Server::start_with(
        "real-unknown",
        "PasswordAuthentication yes\nKbdInteractiveAuthentication yes\n",
    );
    srv.set_inbox("");
    for client in ["dbclient", "ssh"] {
        let mut c = srv.agent_as("poll", client, "device000000000bad");
        c.args(["--host-key", &srv.host_key, "--timeout", "10"]);
        let out = run(c);
        assert_eq!(out.status.code(), Some(1), "{}: {}", client, stderr(&out));
        let mut c = srv.agent_as("status", client, "device000000000bad");
        c.arg("--json");
        let st: serde_json::Value = serde_json::from_slice(&run(c).stdout).unwrap();
        assert_eq!(st["last_poll"]["ok"], false, "{}", client);
        let err = st["last_poll"]["error"].as_str().unwrap().to_string();
        assert!(
            err.contains("did not come from the phonehome gate")
                || err.contains("refused this device's key"),
            "{}: {}",
            client,
            err
        );
        assert!(
            !srv.dir.join("command").exists(),
            "{}: the gate ran",
            client
        );
    }
}
