//! Device public keys: parsing an admin-supplied key line into the one canonical form
//! `TYPE BASE64` (options, comments and control characters refused or stripped), the
//! OpenSSH fingerprint, and the generated authorized_keys line of a device.
//!
//! The key line grants exactly the requested listen ports. With no request it is
//! `restrict,command="<gate>"` (restrict alone disables forwarding: `port-forwarding`
//! without a permitlisten would allow listening on any port). `permitopen="none"` is
//! never written: it is invalid in authorized_keys and would disable the key; `-L` is
//! stopped by `PermitOpen none` in the sshd_config drop-in.

use crate::base64;
use crate::error::{Error, Result};
use crate::sha256::sha256;

/// Longest key line accepted (an RSA 16384 key is about 2.8 KB of base64).
pub const MAX_KEY_LINE: usize = 8 * 1024;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Key types a device may use. ssh-rsa means RSA keys signed with rsa-sha2-256/512
/// (OpenSSH >= 8.8 refuses SHA-1 signatures; dropbear 2022.83 does rsa-sha2-256).
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    pub base64: String,
    blob: Vec<u8>,
}

/// Reads SSH wire-format strings (u32 length + bytes) from a key blob.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        if self.0.len() < 4 {
            return None;
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if n > rest.len() {
            return None;
        }
        let (s, tail) = rest.split_at(n);
        self.0 = tail;
        Some(s)
    }
}

fn bad(why: &str) -> Error {
    Error::usage(format!(
        "invalid public key: {}; give one line `TYPE BASE64 [comment]` as in id_ed25519.pub or `dropbearkey -y` output",
        why
    ))
}

impl PublicKey {
    /// Parse `TYPE BASE64 [comment]`. Refused: control characters (newline, tab, CR,
    /// NUL), leading options (`restrict,command=...`), unknown types, base64 that does
    /// not decode or whose embedded type differs, malformed or weak key material.
    pub fn parse(line: &str) -> Result<PublicKey> {
        if line.len() > MAX_KEY_LINE {
            return Err(bad(&format!("longer than {} bytes", MAX_KEY_LINE)));
        }
        if line.chars().any(|c| c.is_control()) {
            return Err(bad("it contains a newline, tab or other control character"));
        }
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        let kind = words.next().ok_or_else(|| bad("it is empty"))?;
        if !KEY_TYPES.contains(&kind) {
            if kind.contains('=') || kind.contains(',') || kind.contains('"') {
                return Err(bad(
                    "key options are not accepted (the key line is generated)",
                ));
            }
            return Err(bad(&format!(
                "unsupported key type {:?} (use {})",
                kind.chars().take(40).collect::<String>(),
                KEY_TYPES.join(", ")
            )));
        }
        let b64 = words
            .next()
            .ok_or_else(|| bad("no base64 after the key type"))?;
        let blob = base64::decode(b64).ok_or_else(|| bad("the key data is not valid base64"))?;
        check_blob(kind, &blob)?;
        Ok(PublicKey {
            kind: kind.to_string(),
            base64: b64.to_string(),
            blob,
        })
    }

    /// `SHA256:` + unpadded base64 of SHA-256 of the key blob, as sshd logs it.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", base64::encode(&sha256(&self.blob), false))
    }

    /// The canonical form stored and written: `TYPE BASE64`.
    pub fn canonical(&self) -> String {
        format!("{} {}", self.kind, self.base64)
    }
}

fn check_blob(kind: &str, blob: &[u8]) -> Result<()> {
    let mut w = Wire(blob);
    let embedded = w.string().ok_or_else(|| bad("the key data is truncated"))?;
    if embedded != kind.as_bytes() {
        return Err(bad(&format!(
            "the key data says {:?} but the line says {}",
            String::from_utf8_lossy(embedded),
            kind
        )));
    }
    let ok = match kind {
        "ssh-ed25519" => w.string().map(|k| k.len()) == Some(32),
        "ssh-rsa" => {
            let e = w.string();
            let n = w.string();
            match (e, n) {
                (Some(e), Some(n)) if !e.is_empty() => {
                    let n = n.strip_prefix(&[0u8][..]).unwrap_or(n);
                    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                    if bits < MIN_RSA_BITS {
                        return Err(bad(&format!(
                            "RSA key of {} bits, at least {} are required",
                            bits, MIN_RSA_BITS
                        )));
                    }
                    true
                }
                _ => false,
            }
        }
        _ => {
            // ecdsa-sha2-<curve>: the curve name, then an uncompressed point.
            let curve = kind.trim_start_matches("ecdsa-sha2-");
            w.string() == Some(curve.as_bytes())
                && w.string().is_some_and(|p| p.first() == Some(&4))
        }
    };
    if !ok || !w.0.is_empty() {
        return Err(bad(&format!(
            "the key data is not a well-formed {} key",
            kind
        )));
    }
    Ok(())
}

/// The forced command written into a key line: the gate, with `--root` when the tools
/// run under a prefix (so that a test sshd serves the test's state).
pub fn gate_command(gate: &str, root: &crate::paths::Paths) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with ssh-keygen / dropbearkey; fingerprints as `ssh-keygen -lf` prints.
    pub const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILo/7f/t4SCsY5esYWH66w/Gi0LLPrSxIn3ov9YeZW0s";

    #[test]
    fn normalises_and_fingerprints() {
        let k = PublicKey::parse(&format!("{}  admin@laptop extra words", ED25519)).unwrap();
        assert_eq!(k.canonical(), ED25519);
        assert_eq!(
            k.fingerprint(),
            "SHA256:PtMtRWVHKuGrzuX9RFxdUS3m8k7hxmSwH+iceMIwDeM"
        );
    }

    #[test]
    fn every_type_matches_ssh_keygen() {
        let keys = include_str!("../tests/fixtures/keys.pub");
        let fps = include_str!("../tests/fixtures/keys.fp");
        for (line, fp) in keys.lines().zip(fps.lines()) {
            let weak_rsa = line.starts_with("ssh-rsa") && line.len() < 300;
            match PublicKey::parse(line) {
                Ok(k) => assert_eq!(k.fingerprint(), fp, "{}", line),
                Err(e) => assert!(weak_rsa && e.msg.contains("1024 bits"), "{}: {}", line, e),
            }
        }
    }

    #[test]
    fn refuses_hostile_lines() {
        let body = ED25519.split(' ').nth(1).unwrap();
        for bad in [
            format!("{}\nssh-ed25519 {}", ED25519, body),
            format!("ssh-ed25519\t{}", body),
            format!("restrict,command=\"/bin/sh\" {}", ED25519),
            format!("command=\"x\" {}", ED25519),
            format!("ssh-dss {}", body),
            format!("ssh-rsa {}", body),
            "ssh-ed25519".to_string(),
            "ssh-ed25519 AAAA".to_string(),
            "ssh-ed25519 not-base64!".to_string(),
            String::new(),
            format!("{}\r", ED25519),
            format!("{}\0", ED25519),
        ] {
            assert!(PublicKey::parse(&bad).is_err(), "{:?}", bad);
        }
        let mut truncated = ED25519.to_string();
        truncated.truncate(ED25519.len() - 4);
        assert!(PublicKey::parse(&truncated).is_err());
    }

    #[test]
    fn key_lines() {
        let root = crate::paths::Paths::new(std::path::Path::new("/")).unwrap();
        let cmd = gate_command("/usr/local/lib/phonehome/phonehome-gate", &root);
        assert_eq!(
            key_line("ssh-ed25519 AAAA", &cmd, &[]),
            "restrict,command=\"/usr/local/lib/phonehome/phonehome-gate\" ssh-ed25519 AAAA\n"
        );
        assert_eq!(
            key_line("ssh-ed25519 AAAA", &cmd, &[9876, 20001]),
            "restrict,port-forwarding,permitlisten=\"localhost:9876\",permitlisten=\"localhost:20001\",\
             command=\"/usr/local/lib/phonehome/phonehome-gate\" ssh-ed25519 AAAA\n"
        );
        let tmp = crate::paths::Paths::new(std::path::Path::new("/tmp/r")).unwrap();
        assert_eq!(gate_command("/g", &tmp), "/g --root /tmp/r");
    }
}
