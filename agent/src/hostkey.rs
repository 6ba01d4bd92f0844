//! Pinned server host keys: `TYPE BASE64` values from flags or the known-hosts file,
//! checked strictly (a known key type whose base64 blob really encodes that type), and
//! written out in the two known_hosts dialects the clients read: OpenSSH
//! (`[host]:port` when the port is not 22) and dbclient (`host`, no port ever).

use std::fmt;

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Longest base64 blob accepted (an RSA 16384 key is about 2,800 characters).
const MAX_KEY_BASE64: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub key_type: String,
    pub base64: String,
}

impl HostKey {
    /// Parse `TYPE BASE64`, exactly two words, nothing else (no host, options or comment).
    pub fn parse(s: &str) -> Result<HostKey, String> {
        let words: Vec<&str> = s.split_ascii_whitespace().collect();
        let bad = |why: &str| {
            format!(
                "invalid host key {:?}: {}; expected 'TYPE BASE64', e.g. 'ssh-ed25519 AAAAC3Nza...'",
                shorten(s),
                why
            )
        };
        if words.len() != 2 || s.chars().any(|c| c.is_control() && c != ' ' && c != '\t') {
            return Err(bad("not two words"));
        }
        let (key_type, b64) = (words[0], words[1]);
        if !KEY_TYPES.contains(&key_type) {
            return Err(bad("unknown key type"));
        }
        if b64.len() > MAX_KEY_BASE64 {
            return Err(bad("key too long"));
        }
        let blob = decode_base64(b64).ok_or_else(|| bad("not base64"))?;
        if blob_type(&blob) != Some(key_type.as_bytes()) {
            return Err(bad("the key data is not of that type"));
        }
        Ok(HostKey {
            key_type: key_type.to_string(),
            base64: b64.to_string(),
        })
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key_type, self.base64)
    }
}

/// The pinned keys with exact repeats dropped, refusing two different keys of one type:
/// dbclient compares the server's key with the first pinned key of that type only and
/// gives up on a mismatch, so a second key of a type would never be tried.
pub fn one_per_type(keys: &[HostKey]) -> Result<Vec<HostKey>, String> {
    let mut out: Vec<HostKey> = Vec::new();
    for k in keys {
        match out.iter().find(|o| o.key_type == k.key_type) {
            Some(o) if o == k => {}
            Some(_) => {
                return Err(format!(
                    "two different {} host keys are pinned: dbclient only tries the first key of a type, so pin one key per type (the server's current one, as add-device prints it)",
                    k.key_type
                ))
            }
            None => out.push(k.clone()),
        }
    }
    Ok(out)
}

/// The host field OpenSSH uses for `host` on `port`.
pub fn openssh_host_field(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{}]:{}", host, port)
    }
}

/// Keys pinned for `host`:`port` in a known-hosts file. Lines are `TYPE BASE64` or
/// `HOSTS TYPE BASE64`; with a host field, only lines naming this server count (plain
/// `host`, or `[host]:port`, comma lists allowed). Hashed, marker and bad lines are
/// errors naming the line: a pin file must be exactly what it seems.
pub fn parse_known_hosts(text: &str, host: &str, port: u16) -> Result<Vec<HostKey>, String> {
    let wanted = openssh_host_field(host, port);
    let mut keys = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let key_text = match words.len() {
            2 => line.to_string(),
            3 => {
                if !words[0].split(',').any(|h| h == wanted) {
                    continue;
                }
                format!("{} {}", words[1], words[2])
            }
            _ => {
                return Err(format!(
                    "line {}: expected `[HOST] TYPE BASE64` (no options, markers or comments)",
                    i + 1
                ))
            }
        };
        keys.push(HostKey::parse(&key_text).map_err(|e| format!("line {}: {}", i + 1, e))?);
    }
    Ok(keys)
}

/// known_hosts text for OpenSSH's `UserKnownHostsFile`.
pub fn openssh_known_hosts(host: &str, port: u16, keys: &[HostKey]) -> String {
    let field = openssh_host_field(host, port);
    keys.iter().map(|k| format!("{} {}\n", field, k)).collect()
}

/// known_hosts text for dbclient's `$HOME/.ssh/known_hosts` (it matches the bare host).
pub fn dbclient_known_hosts(host: &str, keys: &[HostKey]) -> String {
    keys.iter().map(|k| format!("{} {}\n", host, k)).collect()
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// The key type string an ssh public key blob starts with (uint32 length + bytes).
fn blob_type(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    blob.get(4..4 + len)
}

/// Standard base64 with padding, strict: no whitespace, no junk.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() % 4 != 0 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let chunks = b.len() / 4;
    for (n, c) in b.chunks(4).enumerate() {
        let pad = c.iter().rev().take_while(|x| **x == b'=').count();
        if pad > 2 || (pad > 0 && n + 1 != chunks) {
            return None;
        }
        let mut acc = 0u32;
        for (j, x) in c.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { val(*x)? };
            acc = acc << 6 | v;
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A real ed25519 public key (from ssh-keygen) for tests.
    pub const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPepv9pZfZuENxTlzREuAc0gKIGOohaJfmKJFDgf2KiK";

    #[test]
    fn base64_decodes_strictly() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGV5").unwrap(), b"hey");
        for bad in ["", "a", "aGk", "aG=k", "a=Gk", "aGk=aGk=", "aG k", "aGk!"] {
            assert!(decode_base64(bad).is_none(), "{:?}", bad);
        }
    }

    #[test]
    fn host_keys_are_two_checked_words() {
        let k = HostKey::parse(ED25519).unwrap();
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(k.to_string(), ED25519);
        let b64 = ED25519.split(' ').nth(1).unwrap();
        for bad in [
            "ssh-ed25519".to_string(),
            format!("{} comment", ED25519),
            format!("host {}", ED25519),
            format!("ssh-rsa {}", b64),
            format!("ssh-ed25519 {}!", b64),
            format!("ssh-ed25519 {}\nssh-ed25519 {}", b64, b64),
            format!("command=\"x\" ssh-ed25519 {}", b64),
            "ssh-dss AAAAB3NzaC1kc3M=".to_string(),
        ] {
            assert!(HostKey::parse(&bad).is_err(), "{:?} accepted", bad);
        }
    }

    #[test]
    fn known_hosts_files_select_this_server() {
        let b64 = ED25519.split(' ').nth(1).unwrap();
        let text = format!(
            "# pins\n{k}\nother.example {k}\n[srv.example]:2222 {k}\nsrv.example,1.2.3.4 {k}\n",
            k = ED25519
        );
        assert_eq!(
            parse_known_hosts(&text, "srv.example", 2222).unwrap().len(),
            2
        );
        assert_eq!(
            parse_known_hosts(&text, "srv.example", 22).unwrap().len(),
            2
        );
        assert_eq!(parse_known_hosts(&text, "nowhere", 22).unwrap().len(), 1);
        let e =
            parse_known_hosts(&format!("@revoked * ssh-ed25519 {}\n", b64), "h", 22).unwrap_err();
        assert!(e.starts_with("line 1:"), "{}", e);
        let e = parse_known_hosts("h ssh-ed25519 AAAA\n", "h", 22).unwrap_err();
        assert!(e.starts_with("line 1:"), "{}", e);
    }

    #[test]
    fn one_key_per_type() {
        let k = HostKey::parse(ED25519).unwrap();
        assert_eq!(
            one_per_type(&[k.clone(), k.clone()]).unwrap(),
            vec![k.clone()]
        );
        let mut other = k.clone();
        other.base64 =
            "AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB".into();
        let e = one_per_type(&[k, other]).unwrap_err();
        assert!(e.contains("two different ssh-ed25519 host keys"), "{}", e);
    }

    #[test]
    fn known_hosts_dialects() {
        let k = vec![HostKey::parse(ED25519).unwrap()];
        assert_eq!(openssh_known_hosts("h", 22, &k), format!("h {}\n", ED25519));
        assert_eq!(
            openssh_known_hosts("h", 2222, &k),
            format!("[h]:2222 {}\n", ED25519)
        );
        assert_eq!(dbclient_known_hosts("h", &k), format!("h {}\n", ED25519));
    }
}
