//! `add-device <id> <public-key-line> [--name ALIAS]`: enrol a device. Validates the id
//! and the key, refuses a key already used by another device (or revoked, unless
//! --force), creates the locked-down account, records the device and writes its key
//! file, then prints the one command that configures the agent on the device.

use crate::accounts;
use crate::atomic;
use crate::cli;
use crate::config::ServerConf;
use crate::error::{Error, Result};
use crate::keys::{self, PublicKey};
use crate::lock;
use crate::paths::Paths;
use crate::registry::{self, DeviceRecord};
use crate::timefmt;
use phonehome_protocol::{validate_alias, DeviceId};

const NAME: &str = "add-device";
const ABOUT: &str =
    "Enrol a device: create its account device<ID>, record its public key and write its
key file. ID is the device's MAC (as `phonehome id` prints it); the key is one line
`TYPE BASE64 [comment]` (dropbearkey -y / id_*.pub). A key already registered for
another device is refused; a revoked key is refused unless --force.";

pub fn run(args: &[String]) -> Result<()> {
    let mut opts = cli::base_options();
    opts.optopt(
        "n",
        "name",
        "a human alias: a-z, 0-9 and -, up to 30 characters",
        "ALIAS",
    );
    opts.optflag(
        "",
        "force",
        "accept a key that was revoked by remove-device",
    );
    let Some(m) = cli::parse(
        NAME,
        &opts,
        args,
        "add-device [OPTIONS] <ID> <PUBLIC-KEY-LINE>",
        ABOUT,
    )?
    else {
        return Ok(());
    };
    if m.free.len() != 2 {
        return Err(Error::usage(
            "expected a device id and a public key line, e.g. add-device 6466b34bde54 \"ssh-ed25519 AAAA...\"",
        ));
    }
    let id = registry::parse_id_arg(&m.free[0])?;
    let key = PublicKey::parse(&m.free[1])?;
    let alias = m.opt_str("name");
    if let Some(a) = &alias {
        validate_alias(a)?;
    }
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    let conf = ServerConf::load(&paths)?;
    cli::require_root(NAME)?;
    let gid = accounts::group_gid(&paths, &conf.device_group)?.ok_or_else(|| {
        Error::new(format!(
            "group {} does not exist under {}: run `install.sh server` first",
            conf.device_group,
            paths.root().display()
        ))
    })?;

    let _registry_lock = lock::registry(&paths)?;
    let _device_lock = lock::device(&paths, &id)?;
    if let Some(rec) = registry::load(&paths, &id)? {
        return Err(Error::new(format!(
            "device {} is already registered (key {}); run remove-device {} first to replace it",
            rec.label(),
            rec.fingerprint,
            id
        )));
    }
    let fp = key.fingerprint();
    for other in registry::list(&paths)? {
        if other.fingerprint == fp {
            return Err(Error::new(format!(
                "this key ({}) is already registered for device {}: every device needs its own key",
                fp,
                other.label()
            )));
        }
        if alias.is_some() && other.alias == alias {
            return Err(Error::usage(format!(
                "alias {} is already used by device {}; choose another --name",
                alias.as_deref().unwrap_or_default(),
                other.id
            )));
        }
    }
    if !m.opt_present("force") && registry::revoked(&paths)?.contains(&fp) {
        return Err(Error::new(format!(
            "this key ({}) was revoked by remove-device: generate a new key on the device, or pass --force",
            fp
        )));
    }

    let account = id.account();
    // The home is the status directory, as a real path (prefixed under a test root).
    let home = paths.status(&id).display().to_string();
    let existing = accounts::by_name(&paths, &account)?;
    if let Some(a) = &existing {
        if a.gid != gid {
            return Err(Error::new(format!(
                "account {} exists but is not in group {}: it is not a phonehome device account; remove it or pick another id",
                account, conf.device_group
            )));
        }
    }
    // Every file is written (and fsynced) before the account exists, so that a full
    // disk fails here, with nothing changed.
    let pending = prepare_files(&paths, &conf, &id, &key, alias.clone())?;
    if existing.is_none() {
        accounts::create(&paths, &account, &conf.device_group, &home)?;
    }
    let result = make_status_dir(&paths, &id, &account).and_then(|()| atomic::commit_all(pending));
    if let Err(e) = result {
        if existing.is_none() {
            let _ = accounts::delete(&paths, &account);
        }
        return Err(e);
    }

    println!(
        "added device {}{}: account {}, key {} {}",
        id,
        alias.map(|a| format!(" ({})", a)).unwrap_or_default(),
        account,
        key.kind,
        fp
    );
    let host_keys = server_host_keys(&paths);
    if host_keys.is_empty() {
        eprintln!(
            "{}: warning: no host keys found in {}; add --host-key 'TYPE BASE64' for each of the server's host keys",
            NAME,
            paths.ssh_dir().display()
        );
    }
    println!("On the device, run:");
    let mut line = format!(
        "  phonehome setup --server {} --port {} --account {}",
        cli::shell_quote(&conf.server_host),
        conf.server_port,
        account
    );
    for k in host_keys {
        line.push_str(&format!(" --host-key {}", cli::shell_quote(&k)));
    }
    println!("{}", line);
    Ok(())
}

/// The status directory is the account's home and the gate's only writable place.
fn make_status_dir(paths: &Paths, id: &DeviceId, account: &str) -> Result<()> {
    let acct = accounts::by_name(paths, account)?.ok_or_else(|| {
        Error::new(format!(
            "account {} was not created; check useradd",
            account
        ))
    })?;
    atomic::ensure_dir(&paths.status_dir(), 0o755)?;
    let status = paths.status(id);
    atomic::ensure_dir(&status, 0o700)?;
    std::os::unix::fs::lchown(&status, Some(acct.uid), Some(acct.gid))
        .map_err(|e| Error::io("hand over", &status, &e))
}

/// The registry record, an empty requests file and the key file, written but not renamed.
fn prepare_files(
    paths: &Paths,
    conf: &ServerConf,
    id: &DeviceId,
    key: &PublicKey,
    alias: Option<String>,
) -> Result<Vec<atomic::Pending>> {
    atomic::ensure_dir(&paths.devices_dir(), 0o700)?;
    atomic::ensure_dir(&paths.keys_dir(), 0o755)?;
    atomic::ensure_dir(&paths.requests_dir(), 0o755)?;
    let rec = DeviceRecord {
        id: id.to_string(),
        alias,
        key: key.canonical(),
        fingerprint: key.fingerprint(),
        created: timefmt::now(),
    };
    // A new device starts with no requests, whatever an earlier one with this id left.
    let requests = atomic::prepare(
        &paths.requests(id),
        &crate::requests::file_bytes(id, &[]),
        0o644,
        true,
    )?;
    let record = atomic::prepare(
        &paths.device_record(id),
        &registry::record_bytes(&rec),
        0o600,
        true,
    )?;
    let line = keys::key_line(&rec.key, &keys::gate_command(&conf.gate, paths), &[]);
    let keyfile = atomic::prepare(&paths.key_file(id), line.as_bytes(), 0o644, true)?;
    Ok(vec![requests, record, keyfile])
}

/// The server's host public keys, canonical `TYPE BASE64`, from `etc/ssh/ssh_host_*_key.pub`.
pub fn server_host_keys(paths: &Paths) -> Vec<String> {
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
    names
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| {
            let mut w = t.split_whitespace();
            let (kind, b64) = (w.next()?, w.next()?);
            crate::base64::decode(b64)?;
            Some(format!("{} {}", kind, b64))
        })
        .collect()
}
