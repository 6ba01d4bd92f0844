//! Which private key and which ssh client go together. dropbear's `dbclient` reads only
//! dropbear's key format; OpenSSH's `ssh` only its own (and PEM). So that the one setup
//! line `add-device` prints works unedited on OpenWrt (dbclient, `id_dropbear`) and on
//! any Linux box (ssh, `id_ed25519`), the agent finds the key that matches its client
//! and the client that matches its key. An explicit `--key` or `--client` wins; a
//! failure is data ([`IdentityError`]) whose text names every file and program looked
//! for and what to do. Nothing here starts a process: `ssh.rs` does that.

use crate::client::{find_on_path, Kind};
use crate::config::ClientChoice;
use phonehome_plumbing::files::{self, Follow};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The key file names each client looks for in the key directory, in order.
pub fn key_names(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Dbclient => &["id_dropbear"],
        Kind::Ssh => &["id_ed25519", "id_ecdsa", "id_rsa"],
    }
}

/// A private key's format, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// dropbear's own: a binary blob starting with the key type as an ssh string.
    Dropbear,
    /// `-----BEGIN OPENSSH PRIVATE KEY-----`, or PEM (RSA, EC, PKCS#8).
    OpenSsh,
    /// Neither: left for the client to judge.
    Unknown,
}

impl KeyFormat {
    /// The client that reads this format, if it is known.
    pub fn reader(self) -> Option<Kind> {
        match self {
            KeyFormat::Dropbear => Some(Kind::Dbclient),
            KeyFormat::OpenSsh => Some(Kind::Ssh),
            KeyFormat::Unknown => None,
        }
    }
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFormat::Dropbear => "dropbear",
            KeyFormat::OpenSsh => "OpenSSH",
            KeyFormat::Unknown => "an unknown",
        })
    }
}

/// How many bytes of a key file are read to tell its format.
pub const KEY_HEAD_BYTES: u64 = 64;

/// The format of a private key from its first bytes.
pub fn key_format(head: &[u8]) -> KeyFormat {
    if head.starts_with(b"-----BEGIN ") {
        return KeyFormat::OpenSsh;
    }
    // dropbear: a big-endian u32 length, then the key type ("ssh-ed25519", "ssh-rsa",
    // "ecdsa-sha2-nistp256", ...).
    if head.len() >= 4 {
        let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let name = head.get(4..4 + n).unwrap_or(&[]);
        if (7..=32).contains(&n) && (name.starts_with(b"ssh-") || name.starts_with(b"ecdsa-")) {
            return KeyFormat::Dropbear;
        }
    }
    KeyFormat::Unknown
}

/// What is at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Missing,
    Present(KeyFormat),
    /// It exists but cannot be read as a file (a directory, no permission, ...).
    Unreadable(String),
}

/// Look at a key file: missing, its format, or why it cannot be read. Follows a
/// symlink, as the clients do.
pub fn key_state(path: &Path) -> KeyState {
    match files::open_regular(path, Follow::Yes) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyState::Missing,
        Err(e) => KeyState::Unreadable(e.to_string()),
        Ok(f) => {
            let mut head = Vec::new();
            match f.take(KEY_HEAD_BYTES).read_to_end(&mut head) {
                Ok(_) => KeyState::Present(key_format(&head)),
                Err(e) => KeyState::Unreadable(e.to_string()),
            }
        }
    }
}

/// The client and key a login uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: Kind,
    pub program: PathBuf,
    pub key: PathBuf,
}

/// Why no client and key could be paired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// None of these clients is on PATH.
    NoClient {
        looked_for: Vec<Kind>,
    },
    /// The key given with `--key` does not exist; `kind` is the client that would use it.
    KeyMissing {
        key: PathBuf,
        kind: Kind,
    },
    /// No key of the candidates exists.
    NoKey {
        looked_for: Vec<PathBuf>,
        /// The client whose key to create (the chosen one, else the first on PATH).
        kind: Kind,
        key_dir: PathBuf,
    },
    /// The key's format is one that `using` (the client asked for) cannot read, or, with
    /// `using` None (auto), one whose reader is not on PATH.
    Mismatch {
        key: PathBuf,
        format: KeyFormat,
        using: Option<Kind>,
    },
    Unreadable {
        key: PathBuf,
        error: String,
    },
}

/// The command that makes a key `kind` reads at `key`.
fn make_key(kind: Kind, key: &Path) -> String {
    match kind {
        Kind::Dbclient => format!("dropbearkey -t ed25519 -f {}", key.display()),
        Kind::Ssh => format!("ssh-keygen -t ed25519 -N '' -f {}", key.display()),
    }
}

/// The command that converts `key` of `format` into the other format.
fn convert(key: &Path, format: KeyFormat) -> String {
    match format {
        KeyFormat::Dropbear => format!(
            "dropbearconvert dropbear openssh {k} {k}.openssh",
            k = key.display()
        ),
        _ => format!(
            "dropbearconvert openssh dropbear {k} {k}.dropbear",
            k = key.display()
        ),
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REGISTER: &str = "and register its public key on the server (add-device)";
        match self {
            IdentityError::NoClient { looked_for } => write!(
                f,
                "no ssh client found: {} not on PATH; install dropbear's dbclient or openssh-client, or set --client",
                looked_for.iter().map(|k| k.name()).collect::<Vec<_>>().join(" or ")
            ),
            IdentityError::KeyMissing { key, kind } => write!(
                f,
                "private key {} not found: create it with `{}` {}, or give --key the key you registered",
                key.display(),
                make_key(*kind, key),
                REGISTER
            ),
            IdentityError::NoKey { looked_for, kind, key_dir } => {
                let names: Vec<String> = looked_for.iter().map(|p| p.display().to_string()).collect();
                let name = key_names(*kind)[0];
                write!(
                    f,
                    "no private key found: looked for {}; create one for {} with `{}` {}, or give --key FILE",
                    names.join(", "),
                    kind.name(),
                    make_key(*kind, &key_dir.join(name)),
                    REGISTER
                )
            }
            IdentityError::Mismatch { key, format, using: Some(kind) } => {
                let other = format.reader().map_or("another client", |r| r.name());
                write!(
                    f,
                    "private key {} is in {} format, which {} cannot read: use --client {}, or convert the key with `{}` and give --key the new file",
                    key.display(),
                    format,
                    kind.name(),
                    other,
                    convert(key, *format)
                )
            }
            IdentityError::Mismatch { key, format, using: None } => {
                let reader = format.reader().unwrap_or(Kind::Dbclient);
                write!(
                    f,
                    "private key {} is in {} format, which only {} reads, and {} is not on PATH: install {}, or convert the key with `{}` and give --key the new file",
                    key.display(),
                    format,
                    reader.name(),
                    reader.name(),
                    reader.package(),
                    convert(key, *format)
                )
            }
            IdentityError::Unreadable { key, error } => {
                write!(f, "cannot read private key {}: {}", key.display(), error)
            }
        }
    }
}

/// The system as `decide` sees it: where each client is, and what is at a key path.
pub struct System<'a> {
    pub client: &'a dyn Fn(Kind) -> Option<PathBuf>,
    pub key: &'a dyn Fn(&Path) -> KeyState,
}

/// Pair a client with a key on the real system: clients from `path_env`, keys from
/// the file system; `key` is `--key` if given, `key_dir` where candidates are looked for.
pub fn choose(
    choice: ClientChoice,
    key: Option<&Path>,
    key_dir: &Path,
    path_env: Option<&str>,
) -> Result<Identity, IdentityError> {
    let client = |k: Kind| find_on_path(k.name(), path_env);
    decide(
        choice,
        key,
        key_dir,
        &System {
            client: &client,
            key: &key_state,
        },
    )
}

/// The pairing rules, on a `System` (pure, so that every case is tested):
/// - `--client` and `--key` both given: used as given, unless the key's format is one
///   that client cannot read (it would fail at the login with a vaguer message).
/// - `--client` only: its key names in `key_dir`, the first that exists.
/// - `--key` only: the client that reads its format; an unknown format, the first on PATH.
/// - neither: each client on PATH in the order of `Kind::ALL`, with its first key in
///   `key_dir` that it can read.
pub fn decide(
    choice: ClientChoice,
    key: Option<&Path>,
    key_dir: &Path,
    sys: &System,
) -> Result<Identity, IdentityError> {
    let clients = Clients::on_path(choice, sys)?;
    match key {
        Some(key) => clients.for_key(key, sys),
        None => clients.by_key_names(key_dir, sys),
    }
}

/// The clients that may be used and are on PATH, in order of preference.
struct Clients {
    found: Vec<(Kind, PathBuf)>,
    /// `--client` named one.
    explicit: bool,
}

impl Clients {
    fn on_path(choice: ClientChoice, sys: &System) -> Result<Clients, IdentityError> {
        let wanted: Vec<Kind> = match choice {
            ClientChoice::Auto => Kind::ALL.to_vec(),
            ClientChoice::Dbclient => vec![Kind::Dbclient],
            ClientChoice::Ssh => vec![Kind::Ssh],
        };
        let found: Vec<(Kind, PathBuf)> = wanted
            .iter()
            .filter_map(|k| (sys.client)(*k).map(|p| (*k, p)))
            .collect();
        if found.is_empty() {
            return Err(IdentityError::NoClient { looked_for: wanted });
        }
        Ok(Clients {
            found,
            explicit: choice != ClientChoice::Auto,
        })
    }

    fn first(&self) -> Kind {
        self.found[0].0
    }

    /// `kind` with `key`, if that client may be used and is on PATH.
    fn pair(&self, kind: Kind, key: &Path) -> Option<Identity> {
        self.found
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, program)| Identity {
                kind,
                program: program.clone(),
                key: key.to_path_buf(),
            })
    }

    /// The explicit client, for an error about it.
    fn using(&self) -> Option<Kind> {
        self.explicit.then(|| self.first())
    }

    /// `--key` given: the client follows its format.
    fn for_key(&self, key: &Path, sys: &System) -> Result<Identity, IdentityError> {
        let Some(format) = format_of(sys, key)? else {
            return Err(IdentityError::KeyMissing {
                key: key.to_path_buf(),
                kind: self.first(),
            });
        };
        self.pair(format.reader().unwrap_or(self.first()), key)
            .ok_or(IdentityError::Mismatch {
                key: key.to_path_buf(),
                format,
                using: self.using(),
            })
    }

    /// No key given: each client with its own key names in `key_dir`; a key in the other
    /// client's format goes to that client if it is here (and allowed).
    fn by_key_names(&self, key_dir: &Path, sys: &System) -> Result<Identity, IdentityError> {
        let mut looked_for = Vec::new();
        let mut mismatch = None;
        for (kind, _) in &self.found {
            for name in key_names(*kind) {
                let path = key_dir.join(name);
                let Some(format) = format_of(sys, &path)? else {
                    looked_for.push(path);
                    continue;
                };
                if let Some(id) = self.pair(format.reader().unwrap_or(*kind), &path) {
                    return Ok(id);
                }
                looked_for.push(path.clone());
                mismatch.get_or_insert(IdentityError::Mismatch {
                    key: path,
                    format,
                    using: self.explicit.then_some(*kind),
                });
            }
        }
        if mismatch.is_none() && !self.explicit {
            mismatch = self.key_of_an_absent_client(key_dir, sys)?;
        }
        Err(mismatch.unwrap_or(IdentityError::NoKey {
            looked_for,
            kind: self.first(),
            key_dir: key_dir.to_path_buf(),
        }))
    }

    /// Auto found nothing: a key of a client that is not here says more than "no key".
    fn key_of_an_absent_client(
        &self,
        key_dir: &Path,
        sys: &System,
    ) -> Result<Option<IdentityError>, IdentityError> {
        for kind in Kind::ALL
            .iter()
            .filter(|k| !self.found.iter().any(|(f, _)| f == *k))
        {
            for name in key_names(*kind) {
                let path = key_dir.join(name);
                if let Some(format) = format_of(sys, &path)? {
                    // An unknown format named for the absent client is taken as its.
                    let format = match (format, kind) {
                        (KeyFormat::Unknown, Kind::Dbclient) => KeyFormat::Dropbear,
                        (KeyFormat::Unknown, Kind::Ssh) => KeyFormat::OpenSsh,
                        (f, _) => f,
                    };
                    return Ok(Some(IdentityError::Mismatch {
                        key: path,
                        format,
                        using: None,
                    }));
                }
            }
        }
        Ok(None)
    }
}

/// The format of the key at `path`, None if there is none.
fn format_of(sys: &System, path: &Path) -> Result<Option<KeyFormat>, IdentityError> {
    match (sys.key)(path) {
        KeyState::Missing => Ok(None),
        KeyState::Present(f) => Ok(Some(f)),
        KeyState::Unreadable(error) => Err(IdentityError::Unreadable {
            key: path.to_path_buf(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DROPBEAR_ED25519: &[u8] = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x40";
    const OPENSSH: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r";

    #[test]
    fn formats_are_told_from_the_first_bytes() {
        assert_eq!(key_format(DROPBEAR_ED25519), KeyFormat::Dropbear);
        assert_eq!(
            key_format(b"\x00\x00\x00\x07ssh-rsa\x00\x00\x00\x03"),
            KeyFormat::Dropbear
        );
        assert_eq!(
            key_format(b"\x00\x00\x00\x13ecdsa-sha2-nistp256\x00"),
            KeyFormat::Dropbear
        );
        assert_eq!(key_format(OPENSSH), KeyFormat::OpenSsh);
        assert_eq!(
            key_format(b"-----BEGIN RSA PRIVATE KEY-----\n"),
            KeyFormat::OpenSsh
        );
        for unknown in [
            &b""[..],
            b"not a real key\n",
            b"\x00\x00\x00\x0bxxx-ed25519",
            b"\x00\x00\x00\xffssh-ed25519",
            b"\x00\x00\x00\x0bssh-",
            b"PuTTY-User-Key-File-3: ssh-ed25519",
        ] {
            assert_eq!(key_format(unknown), KeyFormat::Unknown, "{:?}", unknown);
        }
    }

    /// A fake system: the clients on PATH and the key files by name in /k.
    struct Fake {
        clients: Vec<Kind>,
        keys: HashMap<PathBuf, KeyState>,
    }

    fn sys(clients: &[Kind], keys: &[(&str, KeyState)]) -> Fake {
        Fake {
            clients: clients.to_vec(),
            keys: keys
                .iter()
                .map(|(n, s)| (Path::new("/k").join(n), s.clone()))
                .collect(),
        }
    }

    impl Fake {
        fn decide(
            &self,
            choice: ClientChoice,
            key: Option<&str>,
        ) -> Result<Identity, IdentityError> {
            let client = |k: Kind| {
                self.clients
                    .contains(&k)
                    .then(|| PathBuf::from(format!("/usr/bin/{}", k.name())))
            };
            let key_state = |p: &Path| self.keys.get(p).cloned().unwrap_or(KeyState::Missing);
            decide(
                choice,
                key.map(Path::new),
                Path::new("/k"),
                &System {
                    client: &client,
                    key: &key_state,
                },
            )
        }
    }

    fn ok(r: Result<Identity, IdentityError>) -> (Kind, String) {
        let id = r.unwrap_or_else(|e| panic!("{}", e));
        assert_eq!(
            id.program,
            PathBuf::from(format!("/usr/bin/{}", id.kind.name()))
        );
        (id.kind, id.key.display().to_string())
    }

    fn err(r: Result<Identity, IdentityError>) -> String {
        r.expect_err("an identity was chosen").to_string()
    }

    use ClientChoice::{Auto, Dbclient as Db, Ssh};
    use KeyFormat::{Dropbear, OpenSsh, Unknown};
    use KeyState::Present;
    const BOTH: &[Kind] = &[Kind::Dbclient, Kind::Ssh];
    const DB: &[Kind] = &[Kind::Dbclient];
    const SSH: &[Kind] = &[Kind::Ssh];

    #[test]
    fn auto_finds_the_key_that_matches_the_client() {
        // OpenWrt: dbclient and its key.
        let s = sys(DB, &[("id_dropbear", Present(Dropbear))]);
        assert_eq!(
            ok(s.decide(Auto, None)),
            (Kind::Dbclient, "/k/id_dropbear".into())
        );
        // A Linux box with OpenSSH only: its key.
        let s = sys(SSH, &[("id_ed25519", Present(OpenSsh))]);
        assert_eq!(
            ok(s.decide(Auto, None)),
            (Kind::Ssh, "/k/id_ed25519".into())
        );
        let s = sys(SSH, &[("id_rsa", Present(OpenSsh))]);
        assert_eq!(ok(s.decide(Auto, None)), (Kind::Ssh, "/k/id_rsa".into()));
        // Both clients, only an OpenSSH key: ssh.
        let s = sys(BOTH, &[("id_ed25519", Present(OpenSsh))]);
        assert_eq!(
            ok(s.decide(Auto, None)),
            (Kind::Ssh, "/k/id_ed25519".into())
        );
        // Both clients and both keys: dbclient first, as before.
        let s = sys(
            BOTH,
            &[
                ("id_dropbear", Present(Dropbear)),
                ("id_ed25519", Present(OpenSsh)),
            ],
        );
        assert_eq!(
            ok(s.decide(Auto, None)),
            (Kind::Dbclient, "/k/id_dropbear".into())
        );
        // A key named id_dropbear in OpenSSH format (the OpenWrt package makes one when
        // only ssh-keygen exists): the client that reads it.
        let s = sys(BOTH, &[("id_dropbear", Present(OpenSsh))]);
        assert_eq!(
            ok(s.decide(Auto, None)),
            (Kind::Ssh, "/k/id_dropbear".into())
        );
        // An unrecognised format: the client it is named for decides.
        let s = sys(BOTH, &[("id_ecdsa", Present(Unknown))]);
        assert_eq!(ok(s.decide(Auto, None)), (Kind::Ssh, "/k/id_ecdsa".into()));
    }

    #[test]
    fn auto_finds_the_client_that_matches_the_key() {
        let s = sys(BOTH, &[("mine", Present(OpenSsh))]);
        assert_eq!(
            ok(s.decide(Auto, Some("/k/mine"))),
            (Kind::Ssh, "/k/mine".into())
        );
        let s = sys(BOTH, &[("mine", Present(Dropbear))]);
        assert_eq!(
            ok(s.decide(Auto, Some("/k/mine"))),
            (Kind::Dbclient, "/k/mine".into())
        );
        // Unknown format: the first client on PATH, as before.
        let s = sys(BOTH, &[("mine", Present(Unknown))]);
        assert_eq!(
            ok(s.decide(Auto, Some("/k/mine"))),
            (Kind::Dbclient, "/k/mine".into())
        );
        let s = sys(SSH, &[("mine", Present(Unknown))]);
        assert_eq!(
            ok(s.decide(Auto, Some("/k/mine"))),
            (Kind::Ssh, "/k/mine".into())
        );
    }

    #[test]
    fn explicit_choices_win() {
        // --client with its key names only.
        let s = sys(
            BOTH,
            &[
                ("id_dropbear", Present(Dropbear)),
                ("id_ed25519", Present(OpenSsh)),
            ],
        );
        assert_eq!(ok(s.decide(Ssh, None)), (Kind::Ssh, "/k/id_ed25519".into()));
        assert_eq!(
            ok(s.decide(Db, None)),
            (Kind::Dbclient, "/k/id_dropbear".into())
        );
        // Both given, an unknown format: as given.
        let s = sys(BOTH, &[("x", Present(Unknown))]);
        assert_eq!(ok(s.decide(Ssh, Some("/k/x"))), (Kind::Ssh, "/k/x".into()));
        assert_eq!(
            ok(s.decide(Db, Some("/k/x"))),
            (Kind::Dbclient, "/k/x".into())
        );
    }

    #[test]
    fn errors_say_what_was_looked_for_and_what_to_do() {
        // The case: an OpenSSH-only box with no key yet.
        let e = err(sys(SSH, &[]).decide(Auto, None));
        assert!(
            e.contains("no private key found: looked for /k/id_ed25519, /k/id_ecdsa, /k/id_rsa")
                && e.contains("ssh-keygen -t ed25519 -N '' -f /k/id_ed25519")
                && e.contains("--key"),
            "{}",
            e
        );
        let e = err(sys(BOTH, &[]).decide(Auto, None));
        assert!(
            e.contains("/k/id_dropbear, /k/id_ed25519, /k/id_ecdsa, /k/id_rsa")
                && e.contains("dropbearkey -t ed25519 -f /k/id_dropbear"),
            "{}",
            e
        );
        // A dropbear key and no dbclient.
        let e = err(sys(SSH, &[("id_dropbear", Present(Dropbear))]).decide(Auto, None));
        assert!(
            e.contains("/k/id_dropbear is in dropbear format, which only dbclient reads, and dbclient is not on PATH")
                && e.contains("dropbearconvert dropbear openssh /k/id_dropbear /k/id_dropbear.openssh"),
            "{}",
            e
        );
        let e = err(sys(SSH, &[("mine", Present(Dropbear))]).decide(Auto, Some("/k/mine")));
        assert!(e.contains("only dbclient reads"), "{}", e);
        // An OpenSSH key and dbclient asked for.
        let e = err(sys(BOTH, &[("mine", Present(OpenSsh))]).decide(Db, Some("/k/mine")));
        assert!(
            e.contains(
                "/k/mine is in OpenSSH format, which dbclient cannot read: use --client ssh"
            ) && e.contains("dropbearconvert openssh dropbear /k/mine /k/mine.dropbear"),
            "{}",
            e
        );
        let e = err(sys(DB, &[("id_dropbear", Present(OpenSsh))]).decide(Db, None));
        assert!(e.contains("which dbclient cannot read"), "{}", e);
        // --client ssh with only a dropbear key: no key for ssh.
        let e = err(sys(BOTH, &[("id_dropbear", Present(Dropbear))]).decide(Ssh, None));
        assert!(
            e.contains("looked for /k/id_ed25519, /k/id_ecdsa, /k/id_rsa"),
            "{}",
            e
        );
        // A key given that does not exist, for each client.
        let e = err(sys(DB, &[]).decide(Auto, Some("/k/gone")));
        assert!(
            e.contains(
                "private key /k/gone not found: create it with `dropbearkey -t ed25519 -f /k/gone`"
            ),
            "{}",
            e
        );
        let e = err(sys(SSH, &[]).decide(Ssh, Some("/k/gone")));
        assert!(
            e.contains("ssh-keygen -t ed25519 -N '' -f /k/gone"),
            "{}",
            e
        );
        // No client.
        let e = err(sys(&[], &[]).decide(Auto, None));
        assert!(
            e.contains("no ssh client found: dbclient or ssh not on PATH"),
            "{}",
            e
        );
        let e = err(sys(DB, &[]).decide(Ssh, None));
        assert!(e.contains("no ssh client found: ssh not on PATH"), "{}", e);
        // A key path that is not a readable file.
        let bad = KeyState::Unreadable("not a regular file".into());
        let e = err(sys(BOTH, &[("id_dropbear", bad)]).decide(Auto, None));
        assert!(
            e.contains("cannot read private key /k/id_dropbear: not a regular file"),
            "{}",
            e
        );
    }

    #[test]
    fn key_state_reads_the_real_files() {
        let t = phonehome_plumbing::tempdir::TempDir::new("key-state");
        assert_eq!(key_state(&t.join("none")), KeyState::Missing);
        std::fs::write(t.join("db"), DROPBEAR_ED25519).unwrap();
        assert_eq!(key_state(&t.join("db")), Present(Dropbear));
        std::fs::write(t.join("o"), OPENSSH).unwrap();
        std::os::unix::fs::symlink(t.join("o"), t.join("link")).unwrap();
        assert_eq!(
            key_state(&t.join("link")),
            Present(OpenSsh),
            "a symlink is followed"
        );
        assert!(matches!(key_state(t.path()), KeyState::Unreadable(_)));
    }
}
