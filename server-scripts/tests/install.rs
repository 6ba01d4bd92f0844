//! install-server.sh under a temp root: what it creates, with which modes, and that a
//! drop-in sshd rejects is never left behind (a fake sshd on PATH rejects it).

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn install(root: &std::path::Path, path_prefix: Option<&std::path::Path>) -> Out {
    let bin_dir = bin_path("phonehome-gate").parent().unwrap().to_path_buf();
    let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/install-server.sh"));
    c.arg("--root").arg(root).arg("--bin-dir").arg(&bin_dir);
    if let Some(p) = path_prefix {
        c.env(
            "PATH",
            format!("{}:{}", p.display(), std::env::var("PATH").unwrap()),
        );
    }
    Out::new("install-server.sh".into(), c.output().unwrap())
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn installs_under_a_root_and_the_tools_work_there() {
    if unsafe_free_getuid() != 0 || !std::path::Path::new("/usr/sbin/sshd").exists() {
        eprintln!("SKIPPED: needs root and sshd");
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
        ("var/lib/phonehome/devices", 0o700),
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
            "ForceCommand {d}/usr/local/lib/phonehome/phonehome-gate --root {d}",
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
