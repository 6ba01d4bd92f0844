//! The drop-in and the generated key lines against the real OpenSSH sshd (Debian's
//! sshd_config, our drop-in, a device account), in a private mount namespace: see
//! tests/sshd_dropin.sh. Needs root, unshare and openssh-server; says so and skips
//! otherwise.

mod common;
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn real_sshd_enforces_the_drop_in_and_key_lines() {
    if !common::root_and_sshd() {
        return;
    }
    let bin_dir = common::bin_path("phonehome-gate")
        .parent()
        .unwrap()
        .to_path_buf();
    let tmp = phonehome_plumbing::tempdir::TempDir::new("sshd-dropin");
    let work = tmp.path();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sshd_dropin.sh");
    let (sshd_port, rport, other) = (free_port(), free_port(), free_port());
    let out = Command::new("unshare")
        // A pid namespace too: remove-device kills by uid, and must only see this test's
        // processes; --kill-child ends everything if the test is killed.
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "bash",
            script,
        ])
        .arg(&bin_dir)
        .arg(work)
        .args([sshd_port.to_string(), rport.to_string(), other.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    drop(tmp);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{}", stdout, stderr);
    assert_eq!(stdout.matches("PASS").count(), 15, "{}\n{}", stdout, stderr);
}
