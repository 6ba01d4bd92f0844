//! Device public keys on the server: what an admin pastes, validated by value
//! (`phonehome_protocol::sshkey`, the rules the agent uses for host keys too), the
//! OpenSSH fingerprint of the canonical key (the one sshd logs), and the generated
//! authorized_keys line of a device.
//!
//! The key line grants exactly the requested listen ports. With no request it is
//! `restrict,command="<gate>"` (restrict alone disables forwarding: `port-forwarding`
//! without a permitlisten would allow listening on any port). `permitopen="none"` is
//! never written: it is invalid in authorized_keys and would disable the key; `-L` is
//! stopped by `PermitOpen none` in the sshd_config drop-in.

use crate::error::{Error, Result};
use crate::paths::Paths;
use phonehome_plumbing::text::base64_encode;
use phonehome_protocol::sshkey::{KeyType, PublicKey};
use sha2::{Digest, Sha256};

/// A device key from an admin's line `TYPE BASE64 [comment]` (comment dropped).
pub fn parse_device_key(line: &str) -> Result<PublicKey> {
    PublicKey::parse(line, true).map_err(|e| {
        Error::usage(format!(
            "invalid public key: {}; give one line `TYPE BASE64 [comment]` as in id_ed25519.pub or `dropbearkey -y` output",
            e
        ))
    })
}

/// `SHA256:` + unpadded base64 of SHA-256 of the canonical blob, as sshd logs it.
pub fn fingerprint(key: &PublicKey) -> String {
    format!(
        "SHA256:{}",
        base64_encode(&Sha256::digest(key.blob()), false)
    )
}

/// The forced command written into a key line: the gate, with `--root` when the tools
/// run under a prefix (so that a test sshd serves the test's state).
pub fn gate_command(gate: &str, root: &Paths) -> String {
    if root.is_system() {
        gate.to_string()
    } else {
        format!("{} --root {}", gate, root.root().display())
    }
}

/// The authorized_keys line of a device granting exactly `listen_ports`.
pub fn key_line(key: &str, gate_command: &str, listen_ports: &[u16]) -> String {
    let mut opts = String::from("restrict");
    if !listen_ports.is_empty() {
        opts.push_str(",port-forwarding");
        for p in listen_ports {
            opts.push_str(&format!(",permitlisten=\"localhost:{}\"", p));
        }
    }
    format!("{},command=\"{}\" {}\n", opts, gate_command, key)
}

/// The listen ports a key line grants (what `key_line` wrote), to check a key file
/// against the requests.
pub fn granted_ports(line: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = line
        .split(',')
        .filter_map(|o| o.strip_prefix("permitlisten=\"localhost:"))
        .filter_map(|p| p.split('"').next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports
}

/// The server's host keys, canonical `TYPE BASE64`, from `etc/ssh/ssh_host_*_key.pub`:
/// only keys the agent accepts (the same rules), one per type.
pub fn server_host_keys(paths: &Paths) -> Vec<PublicKey> {
    let Ok(entries) = std::fs::read_dir(paths.ssh_dir()) else {
        return Vec::new();
    };
    let mut names: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ssh_host_") && n.ends_with("_key.pub"))
        })
        .collect();
    names.sort();
    let mut keys: Vec<PublicKey> = Vec::new();
    for p in names {
        let Ok(Some(data)) = crate::store::read(&p, 64 * 1024) else {
            continue;
        };
        match PublicKey::parse(String::from_utf8_lossy(&data).trim(), true) {
            Ok(k) if !keys.iter().any(|o| o.key_type() == k.key_type()) => keys.push(k),
            Ok(_) => {}
            Err(e) => log::warn!("host key {} left out: {}", p.display(), e),
        }
    }
    keys.sort_by_key(|k| KeyType::ALL.iter().position(|t| *t == k.key_type()));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with ssh-keygen / dropbearkey; fingerprints as `ssh-keygen -lf` prints.
    pub const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILo/7f/t4SCsY5esYWH66w/Gi0LLPrSxIn3ov9YeZW0s";

    #[test]
    fn normalises_and_fingerprints() {
        let k = parse_device_key(&format!("{}  admin@laptop extra words", ED25519)).unwrap();
        assert_eq!(k.to_string(), ED25519);
        assert_eq!(
            fingerprint(&k),
            "SHA256:PtMtRWVHKuGrzuX9RFxdUS3m8k7hxmSwH+iceMIwDeM"
        );
    }

    #[test]
    fn every_type_matches_ssh_keygen() {
        let keys = include_str!("../tests/fixtures/keys.pub");
        let fps = include_str!("../tests/fixtures/keys.fp");
        for (line, fp) in keys.lines().zip(fps.lines()) {
            let weak_rsa = line.starts_with("ssh-rsa") && line.len() < 300;
            match parse_device_key(line) {
                Ok(k) => assert_eq!(fingerprint(&k), fp, "{}", line),
                Err(e) => assert!(
                    weak_rsa && e.to_string().contains("1024 bits"),
                    "{}: {}",
                    line,
                    e
                ),
            }
        }
    }

    #[test]
    fn key_lines_and_their_grants() {
        let root = Paths::new(std::path::Path::new("/")).unwrap();
        let cmd = gate_command("/usr/local/lib/phonehome/phonehome-gate", &root);
        let none = key_line("ssh-ed25519 AAAA", &cmd, &[]);
        assert_eq!(
            none,
            "restrict,command=\"/usr/local/lib/phonehome/phonehome-gate\" ssh-ed25519 AAAA\n"
        );
        assert!(granted_ports(&none).is_empty());
        let two = key_line("ssh-ed25519 AAAA", &cmd, &[9876, 20001]);
        assert_eq!(
            two,
            "restrict,port-forwarding,permitlisten=\"localhost:9876\",permitlisten=\"localhost:20001\",\
             command=\"/usr/local/lib/phonehome/phonehome-gate\" ssh-ed25519 AAAA\n"
        );
        assert_eq!(granted_ports(&two), vec![9876, 20001]);
        let tmp = Paths::new(std::path::Path::new("/tmp/r")).unwrap();
        assert_eq!(gate_command("/g", &tmp), "/g --root /tmp/r");
    }
}
