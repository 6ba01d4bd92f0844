//! add-device and remove-device through the built binaries under a temp root.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn add_device_creates_account_record_and_key_file() {
    let r = Root::new();
    let out = r
        .run(
            "add-device",
            &[
                ID1,
                &format!("{} admin@laptop", key(0)),
                "--name",
                "kitchen",
            ],
        )
        .ok();
    assert!(
        out.stdout
            .contains(&format!("added device {} (kitchen)", ID1)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(FP1));
    // The line for the device pins every host key of the server.
    let setup = out
        .stdout
        .lines()
        .find(|l| l.contains("phonehome setup"))
        .unwrap();
    assert!(
        setup.contains("--server ph.example.org --port 22 --account device6466b34bde54"),
        "{}",
        setup
    );
    assert!(
        setup.contains(&format!("--host-key '{}'", key(3))),
        "{}",
        setup
    );
    assert!(
        setup.contains(&format!("--host-key '{}'", key(2))),
        "{}",
        setup
    );

    let line = r
        .read("etc/passwd")
        .lines()
        .find(|l| l.starts_with("device6466b34bde54:"))
        .unwrap()
        .to_string();
    let f: Vec<&str> = line.split(':').collect();
    assert_eq!(f[2].parse::<u32>().unwrap(), r.uid_min);
    assert_eq!(f[3], "60999", "primary group is the device group");
    assert_eq!(
        f[5],
        r.path(&format!("var/lib/phonehome/status/{}", ID1))
            .display()
            .to_string()
    );
    assert_eq!(f[6], "/bin/sh");
    assert!(
        r.read("etc/shadow").contains("device6466b34bde54:*:"),
        "password field *"
    );

    let keyfile = r.read(&format!("etc/phonehome/authorized_keys/device{}", ID1));
    assert_eq!(
        keyfile,
        format!("restrict,command=\"{}\" {}\n", r.gate_command(), key(0))
    );
    let meta =
        std::fs::metadata(r.path(&format!("etc/phonehome/authorized_keys/device{}", ID1))).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let rec = r.record(ID1).unwrap();
    assert_eq!(rec["key"], key(0));
    assert_eq!(rec["fingerprint"], FP1);
    assert_eq!(rec["alias"], "kitchen");
    let status = std::fs::metadata(r.path(&format!("var/lib/phonehome/status/{}", ID1))).unwrap();
    assert_eq!(status.uid(), r.uid_min);
    assert_eq!(status.permissions().mode() & 0o777, 0o700);

    // MAC notation is accepted and normalised; the second device gets the next uid.
    r.add("02:42:AC:11:00:02", &key(1));
    assert_eq!(r.uid_of(ID2), r.uid_min + 1);
}

#[test]
fn add_device_refuses_bad_input_and_changes_nothing() {
    let r = Root::new();
    r.add(ID1, &key(0));
    let before = snapshot(&r.dir);
    r.run("add-device", &["6466b34bde5", &key(1)])
        .fails(2, "invalid device id");
    r.run("add-device", &[ID2, "ssh-ed25519 AAAA"])
        .fails(2, "invalid public key");
    r.run("add-device", &[ID2, &key(4)]).fails(2, "1024 bits");
    r.run("add-device", &[ID2])
        .fails(2, "expected a device id and a public key");
    r.run("add-device", &[ID1, &key(1)])
        .fails(1, "already registered");
    r.run("add-device", &[ID2, &key(1), "--name", "Kitchen"])
        .fails(2, "invalid alias");
    r.run("add-device", &["--bogus"])
        .fails(2, "Unrecognized option");
    assert_eq!(snapshot(&r.dir), before);
}

#[test]
fn add_device_takes_only_the_key_types_the_devices_sshd_checks() {
    let r = Root::new();
    // What install-server.sh writes when the devices' sshd is built without OpenSSL.
    r.set_conf("device_key_types = ssh-ed25519\n");
    let before = snapshot(&r.dir);
    for rsa_or_ecdsa in [key(1), key(2), key(5)] {
        let out = r
            .run("add-device", &[ID1, &rsa_or_ecdsa])
            .fails(2, "takes ssh-ed25519 device keys only");
        assert!(
            out.stderr.contains("dropbearkey -t ed25519"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(
        snapshot(&r.dir),
        before,
        "nothing written for a refused key"
    );
    r.add(ID1, &key(0));
    // By default every type is taken.
    let other = Root::new();
    other.add(ID1, &key(1));
    other.add(ID2, &key(2));
}

/// install-server.sh writes device_key_types under the registry lock: an add-device that
/// passed its first check before that write reads the setting again under the lock.
#[test]
fn add_device_checks_the_key_type_again_under_the_registry_lock() {
    let r = Root::new();
    let conf = r.read("etc/phonehome/server.conf");
    let before = snapshot(&r.dir);
    let (held, lock_path) = hold_registry_lock(&r);
    let add = start("add-device (RSA)", r.cmd("add-device").args([ID1, &key(1)]));
    wait_for_a_waiter(&lock_path);
    r.set_conf("device_key_types = ssh-ed25519\n");
    drop(held);
    add.finish().fails(2, "takes ssh-ed25519 device keys only");
    std::fs::write(r.path("etc/phonehome/server.conf"), conf).unwrap();
    assert_eq!(snapshot(&r.dir), before, "no account, no file");
}

#[test]
fn add_device_needs_the_device_group() {
    let r = Root::new();
    std::fs::write(r.path("etc/group"), "root:x:0:\n").unwrap();
    r.run("add-device", &[ID1, &key(0)])
        .fails(1, "install.sh server");
    assert!(!r.read("etc/passwd").contains("device"));
}

#[test]
fn threat_09_names_and_aliases_are_strict() {
    let r = Root::new();
    let before = snapshot(&r.dir);
    for bad_id in [
        "6466b34bde54\n",
        "\"6466b34bde54",
        "6466b34bde5*",
        "6466b34bde5?",
        "6466b34bde54,",
        "!6466b34bde5",
        "6466b34bdé54",
        "../etc/passwd",
    ] {
        r.run("add-device", &[bad_id, &key(0)])
            .fails(2, "invalid device id");
    }
    for bad_alias in [
        "a\nb",
        "a\"b",
        "a*",
        "a?",
        "a,b",
        "!a",
        "routér",
        "A",
        "1abc",
        &"a".repeat(31),
    ] {
        r.run("add-device", &[ID1, &key(0), "--name", bad_alias])
            .fails(2, "invalid alias");
    }
    assert_eq!(snapshot(&r.dir), before);
    assert!(!r.read("etc/passwd").contains("device"));
}

#[test]
fn threat_10_one_key_per_device_no_options() {
    let r = Root::new();
    r.add(ID1, &key(0));
    // The same key (even with another comment or extra spaces) for a second device.
    r.run("add-device", &[ID2, &format!("{}   other-comment", key(0))])
        .fails(1, "already registered for device 6466b34bde54");
    let body = key(0).split(' ').nth(1).unwrap().to_string();
    for hostile in [
        format!("{}\n{}", key(1), key(2)),
        format!("ssh-ed25519\t{}", body),
        format!("restrict,port-forwarding {}", key(1)),
        format!("command=\"/bin/sh\" {}", key(1)),
        format!("no-pty {}", key(1)),
    ] {
        let out = r.run("add-device", &[ID2, &hostile]);
        assert_eq!(out.code, 2, "{:?}: {}", hostile, out.stderr);
    }
    assert!(!r.read("etc/passwd").contains(&format!("device{}", ID2)));
    // A comment is stripped: the key file holds `type base64` only.
    r.add(ID2, &format!("{} a comment with \"quotes\"", key(3)));
    let kf = r.read(&format!("etc/phonehome/authorized_keys/device{}", ID2));
    assert!(kf.ends_with(&format!("\" {}\n", key(3))), "{}", kf);
    assert!(!kf.contains("comment"));
}

#[test]
fn remove_device_revokes_kills_and_keeps_history() {
    let r = Root::new();
    r.run("add-device", &[ID1, &key(0), "--name", "kitchen"])
        .ok();
    r.run("forward-device-port", &[ID1, "22:21001"]).ok();
    let uid = r.uid_of(ID1);
    // A process running as the device (an sshd session holding a tunnel, say).
    let mut victim = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={}", uid),
            "--regid=60999",
            "--clear-groups",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    r.set_heartbeat(ID1, r#"{"received":1795304990,"from":"198.51.100.2"}"#);

    let out = r.run("remove-device", &["kitchen"]).ok();
    assert!(out.stdout.contains("1 process(es) ended"), "{}", out.stdout);
    let status = victim.wait().unwrap();
    assert!(
        !status.success(),
        "the device's process was killed: {:?}",
        status
    );

    assert!(!r
        .path(&format!("etc/phonehome/authorized_keys/device{}", ID1))
        .exists());
    assert!(r
        .read("var/lib/phonehome/revoked")
        .starts_with(&format!("{} {} ", FP1, ID1)));
    assert!(!r.read("etc/passwd").contains("device6466b34bde54"));
    assert!(r.record(ID1).is_none());
    assert!(!r
        .path(&format!("var/lib/phonehome/requests/{}.json", ID1))
        .exists());
    assert!(r.status(ID1).is_some(), "history kept");

    // list-devices still shows its history, as removed.
    let list = r.run("list-devices", &["--json"]).ok().json();
    let dev = &list["devices"][0];
    assert_eq!(dev["id"], ID1);
    assert_eq!(dev["state"], "removed");
    assert_eq!(dev["last_seen_unix"], 1795304990);

    // The revoked key cannot come back silently; --force takes it.
    r.run("remove-device", &[ID1]).fails(1, "unknown device");
    r.run("add-device", &[ID1, &key(0)]).fails(1, "was revoked");
    r.run("add-device", &[ID1, &key(0), "--force"]).ok();
}
