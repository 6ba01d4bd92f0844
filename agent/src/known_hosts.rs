//! Pinned server host keys: from `--host-key 'TYPE BASE64'` values or the known-hosts
//! file (bounded, strict), and the two known_hosts dialects the clients read: OpenSSH
//! (`[host]:port` when the port is not 22) and dbclient (`host`, never a port). A key
//! is checked by value, with the same rules the server uses when it prints it
//! (`phonehome_protocol::sshkey`): a key cut short at a base64 boundary is refused
//! here, at setup, not at the next poll.

use crate::failure::Failure;
use phonehome_plumbing::files;
use phonehome_protocol::sshkey::PublicKey;

/// Largest known-hosts file read; a pin file holds a few lines.
pub const MAX_KNOWN_HOSTS_BYTES: u64 = 64 * 1024;

/// Parse one pinned key `TYPE BASE64`: exactly two words, nothing else.
pub fn parse_host_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::parse(s, false).map_err(|e| {
        format!(
            "invalid host key {}: {}; expected 'TYPE BASE64', e.g. 'ssh-ed25519 AAAAC3Nza...', as add-device prints it",
            phonehome_plumbing::text::quoted(s, 40),
            e
        )
    })
}

/// The pinned keys with exact repeats dropped, refusing two different keys of one type:
/// dbclient compares the server's key with the first pinned key of that type only and
/// gives up on a mismatch, so a second key of a type would never be tried.
pub fn one_per_type(keys: &[PublicKey]) -> Result<Vec<PublicKey>, String> {
    let mut out: Vec<PublicKey> = Vec::new();
    for k in keys {
        match out.iter().find(|o| o.key_type() == k.key_type()) {
            Some(o) if o == k => {}
            Some(_) => {
                return Err(format!(
                    "two different {} host keys are pinned: dbclient only tries the first key of a type, so pin one key per type (the server's current one, as add-device prints it)",
                    k.key_type().name()
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
pub fn parse_known_hosts(text: &str, host: &str, port: u16) -> Result<Vec<PublicKey>, String> {
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
        keys.push(parse_host_key(&key_text).map_err(|e| format!("line {}: {}", i + 1, e))?);
    }
    Ok(keys)
}

/// The pinned keys for `host`:`port`: the `--host-key` values if any were given, else
/// the known-hosts `file`.
pub fn pinned(
    given: &[PublicKey],
    file: &std::path::Path,
    host: &str,
    port: u16,
) -> Result<Vec<PublicKey>, Failure> {
    if !given.is_empty() {
        return one_per_type(given).map_err(Failure::Config);
    }
    let path = file;
    let advice = "pass --host-key 'TYPE BASE64' or run `phonehome setup`";
    let data = files::read_bounded(path, MAX_KNOWN_HOSTS_BYTES)
        .and_then(|d| d.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)))
        .map_err(|e| {
            Failure::Config(format!(
                "cannot read the pinned host keys in {}: {}; {}",
                path.display(),
                e,
                advice
            ))
        })?;
    let keys = parse_known_hosts(&String::from_utf8_lossy(&data), host, port)
        .and_then(|keys| one_per_type(&keys))
        .map_err(|e| Failure::Config(format!("{}: {}", path.display(), e)))?;
    if keys.is_empty() {
        return Err(Failure::Config(format!(
            "{} pins no host key for {}: {}",
            path.display(),
            host,
            advice
        )));
    }
    Ok(keys)
}

/// known_hosts text for OpenSSH's `UserKnownHostsFile`.
pub fn openssh_text(host: &str, port: u16, keys: &[PublicKey]) -> String {
    let field = openssh_host_field(host, port);
    keys.iter().map(|k| format!("{} {}\n", field, k)).collect()
}

/// known_hosts text for dbclient's `$HOME/.ssh/known_hosts` (it matches the bare host).
pub fn dbclient_text(host: &str, keys: &[PublicKey]) -> String {
    keys.iter().map(|k| format!("{} {}\n", host, k)).collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A real ed25519 public key (from ssh-keygen) for tests.
    pub const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPepv9pZfZuENxTlzREuAc0gKIGOohaJfmKJFDgf2KiK";

    #[test]
    fn host_keys_are_two_checked_words() {
        let k = parse_host_key(ED25519).unwrap();
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
            // Cut at a base64 boundary: it decodes, to a key too short (issue 13).
            format!("ssh-ed25519 {}", &b64[..b64.len() - 4]),
        ] {
            assert!(parse_host_key(&bad).is_err(), "{:?} accepted", bad);
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
        let k = parse_host_key(ED25519).unwrap();
        assert_eq!(
            one_per_type(&[k.clone(), k.clone()]).unwrap(),
            vec![k.clone()]
        );
        let other = parse_host_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILo/7f/t4SCsY5esYWH66w/Gi0LLPrSxIn3ov9YeZW0s",
        )
        .unwrap();
        let e = one_per_type(&[k, other]).unwrap_err();
        assert!(e.contains("two different ssh-ed25519 host keys"), "{}", e);
    }

    #[test]
    fn dialects() {
        let k = vec![parse_host_key(ED25519).unwrap()];
        assert_eq!(openssh_text("h", 22, &k), format!("h {}\n", ED25519));
        assert_eq!(
            openssh_text("h", 2222, &k),
            format!("[h]:2222 {}\n", ED25519)
        );
        assert_eq!(dbclient_text("h", &k), format!("h {}\n", ED25519));
    }

    #[test]
    fn threat_37_an_endless_known_hosts_file_is_refused() {
        let dir = phonehome_plumbing::tempdir::TempDir::new("kh");
        let zero = pinned(&[], std::path::Path::new("/dev/zero"), "h", 22);
        assert!(matches!(zero, Err(Failure::Config(e)) if e.contains("not a regular file")));
        let big = dir.join("kh");
        std::fs::write(&big, format!("{}\n", ED25519).repeat(1000)).unwrap();
        let e = pinned(&[], &big, "h", 22);
        assert!(matches!(e, Err(Failure::Config(e)) if e.contains("larger than")));
    }
}
