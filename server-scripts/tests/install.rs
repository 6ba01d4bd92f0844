//! install-server.sh under a temp root: what it creates, with which modes, and that a
//! drop-in sshd rejects is never left behind (a fake sshd on PATH rejects it).

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn install(root: &std::path::Path, path_prefix: Option<&std::path::Path>) -> Out {
    install_with(root, path_prefix, &[])
}

fn install_with(
    root: &std::path::Path,
    path_prefix: Option<&std::path::Path>,
    args: &[&str],
) -> Out {
    let out = install_cmd(root, path_prefix, args).output().unwrap();
    Out::new("install-server.sh".into(), out)
}

fn install_cmd(
    root: &std::path::Path,
    path_prefix: Option<&std::path::Path>,
    args: &[&str],
) -> Command {
    let bin_dir = bin_path("phonehome-gate").parent().unwrap().to_path_buf();
    let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/install-server.sh"));
    c.arg("--root")
        .arg(root)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(args);
    if let Some(p) = path_prefix {
        c.env(
            "PATH",
            format!("{}:{}", p.display(), std::env::var("PATH").unwrap()),
        );
    }
    c
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn installs_under_a_root_and_the_tools_work_there() {
    if !root_and_sshd() {
        return;
    }
    let r = Root::new();
    std::fs::remove_file(r.path("etc/phonehome/server.conf")).unwrap();
    std::fs::write(r.path("etc/group"), "root:x:0:\n").unwrap();
    std::fs::create_dir_all(r.path("etc/cron.d")).unwrap();
    let out = install(&r.dir, None).ok();
    assert!(out.stdout.contains("sshd -t: ok"), "{}", out.stdout);
    assert!(r.read("etc/group").contains("phonehome-devices:"));
    let conf = r.read("etc/phonehome/server.conf");
    assert!(
        conf.contains(&format!(
            "gate = {}/usr/local/lib/phonehome/phonehome-gate",
            r.dir.display()
        )),
        "{}",
        conf
    );
    for (rel, m) in [
        ("etc/phonehome/server.conf", 0o644),
        ("etc/phonehome/authorized_keys", 0o755),
        ("var/lib/phonehome/locks", 0o700),
        ("var/lib/phonehome/requests", 0o755),
        ("var/lib/phonehome/status", 0o755),
        ("var/lib/phonehome/revoked", 0o600),
        ("etc/ssh/sshd_config.d/phonehome.conf", 0o644),
        ("usr/local/bin/add-device", 0o755),
        ("usr/local/lib/phonehome/phonehome-gate", 0o755),
        ("etc/cron.d/phonehome", 0o644),
        ("usr/local/bin/watch-devices", 0o755),
        ("var/lib/phonehome/watch", 0o700),
    ] {
        assert_eq!(mode(&r.path(rel)), m, "{}", rel);
    }
    let cron = r.read("etc/cron.d/phonehome");
    assert!(
        cron.contains(&format!(
            "* * * * * root {d}/usr/local/bin/watch-devices --once --root {d} >/dev/null",
            d = r.dir.display()
        )),
        "{}",
        cron
    );
    let dropin = r.read("etc/ssh/sshd_config.d/phonehome.conf");
    for want in [
        "Match Group phonehome-devices",
        &format!(
            "AuthorizedKeysFile {}/etc/phonehome/authorized_keys/%u",
            r.dir.display()
        ),
        &format!(
            "ForceCommand exec {d}/usr/local/lib/phonehome/phonehome-gate --root {d}",
            d = r.dir.display()
        ),
        "AllowTcpForwarding remote",
        "PermitOpen none",
        "AllowStreamLocalForwarding no",
        "PermitTTY no",
        "ClientAliveInterval 15",
    ] {
        assert!(dropin.contains(want), "missing {:?}", want);
    }
    assert!(!dropin.contains("permitopen=\"none\""));
    // The installed tools work against this root; the key line names the installed gate.
    std::fs::write(
        r.path("etc/login.defs"),
        format!("UID_MIN {}\nUID_MAX {}\n", r.uid_min, r.uid_min + 49),
    )
    .unwrap();
    let add = Command::new(r.path("usr/local/bin/add-device"))
        .args(["--root", r.dir.to_str().unwrap(), ID1, &key(0)])
        .output()
        .unwrap();
    Out::new("installed add-device".into(), add).ok();
    assert!(r
        .read(&format!("etc/phonehome/authorized_keys/device{}", ID1))
        .contains(&format!(
            "command=\"{d}/usr/local/lib/phonehome/phonehome-gate --root {d}\"",
            d = r.dir.display()
        )));
    // Re-running keeps server.conf as the admin left it.
    std::fs::write(
        r.path("etc/phonehome/server.conf"),
        format!("{}admin_user = alice\n", conf),
    )
    .unwrap();
    install(&r.dir, None).ok();
    assert!(r
        .read("etc/phonehome/server.conf")
        .contains("admin_user = alice"));
}

/// Issue 13: `install.sh server --host NAME --port N` makes add-device print a setup
/// line that points at that server; on an existing server.conf only those two lines
/// change, and the installer says what they held.
#[test]
fn host_and_port_reach_server_conf_and_the_setup_line() {
    if !root_and_sshd() {
        return;
    }
    let r = Root::new();
    let conf = r.path("etc/phonehome/server.conf");
    std::fs::remove_file(&conf).unwrap();
    let setup_line = |r: &Root| {
        let out = Command::new(bin_path("add-device"))
            .args(["--root", r.dir.to_str().unwrap(), "--print-setup", ID1])
            .output()
            .unwrap();
        Out::new("add-device --print-setup".into(), out).ok().stdout
    };

    // A new server.conf without --host: this machine's name, and a note saying so.
    let out = install_with(&r.dir, None, &["--no-reload"]).ok();
    assert!(
        out.stderr
            .contains("server_host is this machine's own name")
            && out.stderr.contains("--host NAME"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(&conf).unwrap();

    // A new server.conf with --host and --port.
    let out = install_with(
        &r.dir,
        None,
        &["--host", "ph.example.net", "--port", "2222"],
    )
    .ok();
    assert!(
        out.stdout
            .contains("server_host = ph.example.net, server_port = 2222"),
        "{}",
        out.stdout
    );
    let text = r.read("etc/phonehome/server.conf");
    assert!(
        text.contains("\nserver_host = ph.example.net\n")
            && text.contains("\nserver_port = 2222\n"),
        "{}",
        text
    );
    Command::new(bin_path("add-device"))
        .args(["--root", r.dir.to_str().unwrap(), ID1, &key(0)])
        .output()
        .unwrap();
    assert!(
        setup_line(&r).contains("phonehome setup --server ph.example.net --port 2222 --account"),
        "{}",
        setup_line(&r)
    );

    // Again without them: the file is kept as it is, and its values are shown.
    std::fs::write(&conf, format!("{}# the admin's own note\n", text)).unwrap();
    let before = r.read("etc/phonehome/server.conf");
    let out = install_with(&r.dir, None, &[]).ok();
    assert!(
        out.stdout.contains(
            "server_host = ph.example.net, server_port = 2222 (change them with --host NAME"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(r.read("etc/phonehome/server.conf"), before);

    // A new --host: that line changes, and nothing else; the setup line follows.
    let out = install_with(&r.dir, None, &["--host", "198.51.100.7"]).ok();
    assert!(
        out.stdout
            .contains("server_host = 198.51.100.7 (was: ph.example.net)")
            && out.stdout.contains("add-device --print-setup"),
        "{}",
        out.stdout
    );
    assert_eq!(
        r.read("etc/phonehome/server.conf"),
        before.replace("server_host = ph.example.net", "server_host = 198.51.100.7")
    );
    assert!(setup_line(&r).contains("--server 198.51.100.7 --port 2222 "));
    let out = install_with(&r.dir, None, &["--host", "198.51.100.7"]).ok();
    assert!(
        out.stdout
            .contains("server_host = 198.51.100.7 (unchanged)"),
        "{}",
        out.stdout
    );

    // Bad values: one clear line, nothing changed.
    let now = r.read("etc/phonehome/server.conf");
    for (args, needle) in [
        (&["--host"][..], "--host needs a value"),
        (&["--port"][..], "--port needs a value"),
        (
            &["--host", "-oProxyCommand=x"][..],
            "invalid --host '-oProxyCommand=x'",
        ),
        (&["--host", "ph.example.org:22"][..], "invalid --host"),
        (&["--host", "a b"][..], "invalid --host"),
        (&["--port", "0"][..], "invalid --port '0'"),
        (&["--port", "65536"][..], "invalid --port"),
        (&["--port", "22x"][..], "invalid --port"),
    ] {
        install_with(&r.dir, None, args).fails(1, needle);
    }
    assert_eq!(r.read("etc/phonehome/server.conf"), now);
}

#[test]
fn help_is_the_header_and_nothing_else() {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/install-server.sh"))
        .arg("--help")
        .output()
        .unwrap();
    let out = Out::new("install-server.sh --help".into(), out).ok();
    assert!(out
        .stdout
        .starts_with("install-server.sh: the logic of `install.sh server`."));
    assert!(out.stdout.contains("--host NAME") && out.stdout.contains("--port N"));
    assert!(
        !out.stdout.contains("set -eu") && !out.stdout.contains('#'),
        "{}",
        out.stdout
    );
}

#[test]
fn a_drop_in_sshd_rejects_is_never_left_behind() {
    if unsafe_free_getuid() != 0 {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let r = Root::new();
    let fake = r.path("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("sshd"),
        "#!/bin/sh\necho 'Bad configuration option: nonsense' >&2\nexit 255\n",
    )
    .unwrap();
    std::fs::set_permissions(fake.join("sshd"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dropin = r.path("etc/ssh/sshd_config.d/phonehome.conf");
    // No previous drop-in: the new one is removed.
    install(&r.dir, Some(&fake)).fails(
        1,
        "sshd rejected the drop-in, previous configuration restored: Bad configuration option",
    );
    assert!(!dropin.exists());
    // A previous drop-in: restored byte for byte.
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(&dropin, "# the old one\n").unwrap();
    install(&r.dir, Some(&fake)).fails(1, "sshd rejected the drop-in");
    assert_eq!(
        r.read("etc/ssh/sshd_config.d/phonehome.conf"),
        "# the old one\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dropin.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{:?}", leftovers);
}

#[test]
fn device_sshd_is_a_lean_instance_for_devices_only() {
    if !root_and_sshd() {
        return;
    }
    let r = Root::new();
    std::fs::remove_file(r.path("etc/phonehome/server.conf")).unwrap();
    std::fs::remove_file(r.path("etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
    let out = install_with(&r.dir, None, &["--device-sshd", "2222", "--no-reload"]).ok();
    assert!(
        out.stdout.contains("sshd_config (sshd -t: ok)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("configured, not started"),
        "{}",
        out.stdout
    );
    // Devices are sent to it; the admin's sshd and its drop-in stay as they were.
    assert!(r
        .read("etc/phonehome/server.conf")
        .contains("server_port = 2222\n"));
    let conf = r.read("etc/phonehome/sshd_config");
    for want in [
        "Port 2222\n",
        "UsePAM no\n",
        "PrintMotd no\n",
        &format!("HostKey {}/etc/ssh/ssh_host_ed25519_key\n", r.dir.display()),
        "AllowGroups phonehome-devices\n",
        "AuthenticationMethods publickey\n",
        &format!("ForceCommand exec {}\n", r.gate_command()),
        "AllowTcpForwarding remote\n",
        "PermitOpen none\n",
        "AllowStreamLocalForwarding no\n",
        "PermitTTY no\n",
        "ClientAliveInterval 15\n",
    ] {
        assert!(conf.contains(want), "missing {:?} in\n{}", want, conf);
    }
    assert_eq!(
        conf.matches("HostKey ").count(),
        1,
        "the ed25519 host key only"
    );
    // Lean: curve25519 (ML-KEM too where sshd has it), never sntrup761; no compression.
    assert!(conf.contains("Compression no\n"), "{}", conf);
    let kex = conf
        .lines()
        .find(|l| l.starts_with("KexAlgorithms "))
        .unwrap_or_else(|| panic!("no KexAlgorithms in\n{}", conf));
    assert!(kex.contains("curve25519-sha256"), "{}", kex);
    assert!(!kex.contains("sntrup"), "{}", kex);
    assert!(
        r.path("etc/ssh/ssh_host_ed25519_key").exists(),
        "made when missing"
    );
    let dropin = r.read("etc/ssh/sshd_config.d/phonehome.conf");
    assert!(dropin.contains("Match Group phonehome-devices"));
    // Bad or clashing values are refused before anything changes.
    for (args, why) in [
        (&["--device-sshd", "22"][..], "the admin's sshd has port 22"),
        (&["--device-sshd", "0"][..], "invalid --device-sshd"),
        (&["--device-sshd", "2222", "--port", "2223"][..], "disagree"),
    ] {
        install_with(&r.dir, None, args).fails(1, why);
    }
}

/// A stand-in for build-sshd.sh's output: `-V` says what a build without OpenSSL says,
/// everything else goes to the system's sshd (argument-level only: the real build is
/// exercised end to end by tests/e2e, stage "the devices' sshd without OpenSSL").
fn fake_sshd_build(dir: &std::path::Path) -> std::path::PathBuf {
    let build = dir.join("device-sshd");
    std::fs::create_dir_all(build.join("sbin")).unwrap();
    let sshd = build.join("sbin/sshd");
    std::fs::write(
        &sshd,
        // As a build without PAM (build-sshd.sh's --without-pam) answers install-server.sh's
        // probe; everything else goes to the system's sshd.
        "#!/bin/sh\n[ \"$1\" != -V ] || { echo 'OpenSSH_9.2, without OpenSSL' >&2; exit 0; }\ncase \" $* \" in *' UsePAM=no '*) echo 'command-line line 0: Unsupported option UsePAM' >&2; exit 0;; esac\nexec /usr/sbin/sshd \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&sshd, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(build.join("debian-version"), "1:9.2p1-2+deb12u10\n").unwrap();
    build
}

/// The key check and the device_key_types line are made under add-device's registry
/// lock: a device enrolled while install-server.sh waits for that lock is checked too.
#[test]
fn device_sshd_build_checks_the_device_keys_under_the_registry_lock() {
    if !root_and_sshd() {
        return;
    }
    let r = Root::new();
    let tmp = phonehome_plumbing::tempdir::TempDir::new("sshd-build");
    let build = fake_sshd_build(tmp.path());
    r.add(ID1, &key(0));
    // An RSA device's key file, as add-device writes it (made in another root).
    let other = Root::new();
    other.add(ID2, &key(1));
    let rsa_file = format!("etc/phonehome/authorized_keys/device{}", ID2);

    let (held, lock_path) = hold_registry_lock(&r);
    let install = start(
        "install-server.sh",
        &mut install_cmd(
            &r.dir,
            None,
            &[
                "--device-sshd",
                "2222",
                "--device-sshd-build",
                build.to_str().unwrap(),
                "--no-reload",
            ],
        ),
    );
    wait_for_a_waiter(&lock_path);
    // What an add-device holding the lock finishes meanwhile.
    std::fs::copy(other.path(&rsa_file), r.path(&rsa_file)).unwrap();
    drop(held);
    let out = install.finish().fails(1, "ssh-ed25519 device keys only");
    assert!(
        out.stderr.contains(&format!("device{} (ssh-rsa)", ID2)),
        "{}",
        out.stderr
    );
    assert!(!r
        .read("etc/phonehome/server.conf")
        .contains("device_key_types"));
}

#[test]
fn device_sshd_build_without_openssl_takes_ed25519_device_keys_only() {
    if !root_and_sshd() {
        return;
    }
    let r = Root::new();
    std::fs::create_dir_all(r.path("etc/apt/apt.conf.d")).unwrap();
    let tmp = phonehome_plumbing::tempdir::TempDir::new("sshd-build");
    let build = fake_sshd_build(tmp.path());
    let build = build.to_str().unwrap();
    let args = [
        "--device-sshd",
        "2222",
        "--device-sshd-build",
        build,
        "--no-reload",
    ];
    install_with(&r.dir, None, &["--device-sshd-build", build]).fails(1, "needs --device-sshd");
    // An enrolled device with an RSA key could no longer log in: refused, nothing changed.
    r.add(ID1, &key(0));
    r.add(ID2, &key(1));
    let before = snapshot(&r.dir);
    let out = install_with(&r.dir, None, &args).fails(1, "ssh-ed25519 device keys only");
    assert!(
        out.stderr.contains(&format!("device{} (ssh-rsa)", ID2)) && !out.stderr.contains(ID1),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(&r.dir), before, "nothing changed");

    r.run("remove-device", &[ID2]).ok();
    let out = install_with(&r.dir, None, &args).ok();
    let installed = r.path("usr/local/lib/phonehome/openssh/sbin/sshd");
    assert!(
        out.stdout
            .contains(&format!("{} -D -f", installed.display())),
        "the devices' sshd runs the build: {}",
        out.stdout
    );
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(
        r.read("usr/local/lib/phonehome/openssh/debian-version"),
        "1:9.2p1-2+deb12u10\n"
    );
    assert!(r
        .read("etc/phonehome/server.conf")
        .contains("device_key_types = ssh-ed25519\n"));
    let conf = r.read("etc/phonehome/sshd_config");
    assert!(
        conf.contains("# UsePAM: this sshd is built without PAM") && !conf.contains("UsePAM no"),
        "a build without PAM gets no UsePAM line: {}",
        conf
    );
    r.run("add-device", &[ID2, &key(2)])
        .fails(2, "takes ssh-ed25519 device keys only");
    r.add(ID2, &key(3));

    // apt warns after dpkg when openssh-server is no longer the source of the build.
    let check = r.path("usr/local/lib/phonehome/openssh/check-version");
    let hook = r.read("etc/apt/apt.conf.d/80phonehome-sshd");
    assert!(
        hook.contains(&format!(
            "DPkg::Post-Invoke {{ \"[ ! -x {c} ] || {c}\"; }};",
            c = check.display()
        )),
        "{}",
        hook
    );
    let logged = tmp.path().join("logger.args");
    std::fs::write(
        tmp.path().join("logger"),
        format!("#!/bin/sh\necho \"$*\" >>{}\n", logged.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        tmp.path().join("logger"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let run_check = || {
        Command::new(&check)
            .env("PATH", format!("{}:/usr/bin:/bin", tmp.path().display()))
            .output()
            .unwrap()
    };
    let installed_version = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "openssh-server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap());
    if let Some(v) = installed_version {
        let version_file = r.path("usr/local/lib/phonehome/openssh/debian-version");
        std::fs::write(&version_file, format!("{}\n", v)).unwrap();
        let same = run_check();
        assert!(
            same.status.success() && same.stderr.is_empty(),
            "{:?}",
            same
        );
        assert!(!logged.exists(), "nothing to say while the versions agree");
        std::fs::write(&version_file, "1:9.2p1-2+deb12u1\n").unwrap();
        let newer = run_check();
        let err = String::from_utf8_lossy(&newer.stderr);
        assert!(newer.status.success(), "never fails dpkg: {:?}", newer);
        assert!(
            err.contains(&format!(
                "built from openssh 1:9.2p1-2+deb12u1, openssh-server is now {}",
                v
            )) && err.contains("--device-sshd-without-openssl"),
            "{}",
            err
        );
        let args = std::fs::read_to_string(&logged).unwrap();
        assert!(
            args.starts_with("-p auth.warning -t phonehome "),
            "{}",
            args
        );
    }

    // Back on the system's sshd: every key type again.
    let out = install_with(&r.dir, None, &["--device-sshd", "2222", "--no-reload"]).ok();
    assert!(
        out.stdout
            .contains("device_key_types = all (was: ssh-ed25519)"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&installed.display().to_string()),
        "{}",
        out.stdout
    );
    assert!(
        !r.path("etc/apt/apt.conf.d/80phonehome-sshd").exists(),
        "no warning hook left"
    );
    assert!(r
        .read("etc/phonehome/sshd_config")
        .lines()
        .any(|l| l.trim() == "UsePAM no"));
}
