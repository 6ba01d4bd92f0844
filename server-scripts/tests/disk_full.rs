//! THREATS 20, disk full: see tests/disk_full.sh, run in a private mount namespace
//! where each temp root sits on a small, full tmpfs. Needs root and unshare.

mod common;
use common::*;

#[test]
fn threat_20_disk_full_leaves_everything_intact() {
    if unsafe_free_getuid() != 0 {
        eprintln!("SKIPPED: needs root for unshare --mount and tmpfs");
        return;
    }
    let r = Root::new();
    r.add(ID1, &key(0));
    r.run("forward-device-port", &[ID1, "22:23001"]).ok();
    r.set_heartbeat(ID1, r#"{"received":1000}"#);
    let g = Root::new();
    g.add(ID1, &key(0));
    g.run("forward-device-port", &[ID1, "22:23002"]).ok();
    g.impersonate(ID1);
    let bin_dir = bin_path("phonehome-gate").parent().unwrap().to_path_buf();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/disk_full.sh");
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", script])
        .arg(&bin_dir)
        .arg(&r.dir)
        .arg(&g.dir)
        .args([ID1, "23002"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{}", stdout);
    assert!(out.status.success(), "{}\n{}", stdout, stderr);
    assert_eq!(stdout.matches("PASS").count(), 6, "{}\n{}", stdout, stderr);
    // Outside the namespace the roots were never touched.
    assert!(r
        .read("etc/phonehome/authorized_keys/device6466b34bde54")
        .contains("localhost:23001"));
    assert!(!r.path("filler").exists());
}
