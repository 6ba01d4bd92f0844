//! `add-device <id> <public-key-line> [--name ALIAS]`: enrol a device. Validates the id
//! and the key (by value: `keys`), refuses a key already used by another device (or
//! revoked, unless --force), creates the locked-down account, records the device and
//! writes its key file, then prints the one command that configures the agent on the
//! device. `add-device --print-setup <id|alias>` prints that command again, any time.

use crate::accounts;
use crate::cli::{self, Out};
use crate::config::ServerConf;
use crate::error::{Error, Result};
use crate::keys::{self, fingerprint};
use crate::lock;
use crate::paths::Paths;
use crate::registry::{self, DeviceRecord};
use crate::say;
use crate::store;
use phonehome_plumbing::clock;
use phonehome_plumbing::files::Pending;
use phonehome_plumbing::text::shell_quote;
use phonehome_protocol::sshkey::PublicKey;
use phonehome_protocol::{validate_alias, DeviceId};

const NAME: &str = "add-device";
const ABOUT: &str =
    "Enrol a device: create its account device<ID>, record its public key and write its
key file. ID is the device's MAC (as `phonehome id` prints it); the key is one line
`TYPE BASE64 [comment]` (dropbearkey -y / id_*.pub). A key already registered for
another device is refused; a revoked key is refused unless --force. With
--print-setup, print the device's `phonehome setup` line again.";

/// What the admin asked for.
struct Request {
    id: DeviceId,
    key: PublicKey,
    alias: Option<String>,
    force: bool,
}

pub fn run(args: &[String], out: &mut Out) -> Result<()> {
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
    opts.optflag(
        "",
        "print-setup",
        "print the setup line of an enrolled device again",
    );
    let synopsis = "add-device [OPTIONS] <ID> <PUBLIC-KEY-LINE>\n       add-device [OPTIONS] --print-setup <ID|ALIAS>";
    let Some(m) = cli::parse(out, NAME, &opts, args, synopsis, ABOUT)? else {
        return Ok(());
    };
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    if m.opt_present("print-setup") {
        let [name] = m.free.as_slice() else {
            return Err(Error::usage("--print-setup takes one device id or alias"));
        };
        let conf = ServerConf::load(&paths)?;
        let rec = registry::find(&paths, name)?;
        return print_setup(out, &paths, &conf, &rec.id);
    }
    let [id, key] = m.free.as_slice() else {
        return Err(Error::usage(
            "expected a device id and a public key line, e.g. add-device 6466b34bde54 \"ssh-ed25519 AAAA...\"",
        ));
    };
    let req = Request {
        id: registry::parse_id_arg(id)?,
        key: keys::parse_device_key(key)?,
        alias: m.opt_str("name"),
        force: m.opt_present("force"),
    };
    if let Some(a) = &req.alias {
        validate_alias(a)?;
    }
    let conf = ServerConf::load(&paths)?;
    check_key_type(&paths, &conf, &req.key)?;
    cli::require_root(NAME)?;
    enrol(&paths, &conf, &req)?;
    say!(
        out,
        "added device {}{}: account {}, key {} {}",
        req.id,
        req.alias
            .as_deref()
            .map(|a| format!(" ({})", a))
            .unwrap_or_default(),
        req.id.account(),
        req.key.key_type().name(),
        fingerprint(&req.key)
    )?;
    print_setup(out, &paths, &conf, &req.id)
}

/// A key of a type the devices' sshd checks (`device_key_types`: an sshd built without
/// OpenSSL checks Ed25519 signatures only); else the device could never log in.
fn check_key_type(paths: &Paths, conf: &ServerConf, key: &PublicKey) -> Result<()> {
    if conf.device_key_types.contains(&key.key_type()) {
        return Ok(());
    }
    let names: Vec<&str> = conf.device_key_types.iter().map(|t| t.name()).collect();
    Err(Error::usage(format!(
        "this server takes {} device keys only (device_key_types in {}; install-server.sh sets it when the devices' sshd is built without OpenSSL), not {}; make an ed25519 key on the device (dropbearkey -t ed25519 -f KEYFILE, or ssh-keygen -t ed25519) and add that",
        names.join(", "),
        paths.conf().display(),
        key.key_type().name()
    )))
}

/// Check the request against the registry, then create the account and the files.
fn enrol(paths: &Paths, conf: &ServerConf, req: &Request) -> Result<()> {
    let gid = accounts::group_gid(paths, &conf.device_group)?.ok_or_else(|| {
        Error::new(format!(
            "group {} does not exist under {}: run `install.sh server` first",
            conf.device_group,
            paths.root().display()
        ))
    })?;
    let _registry_lock = lock::registry(paths)?;
    // install-server.sh changes device_key_types under this lock: read it again here.
    check_key_type(paths, &ServerConf::load(paths)?, &req.key)?;
    let _device_lock = lock::device(paths, &req.id)?;
    check_registry(paths, req)?;
    let account = req.id.account();
    let existing = accounts::by_name(paths, &account)?;
    if existing.as_ref().is_some_and(|a| a.gid != gid) {
        return Err(Error::new(format!(
            "account {} exists but is not in group {}: it is not a phonehome device account; remove it or pick another id",
            account, conf.device_group
        )));
    }
    // Every file is written (and fsynced) before the account exists, so that a full
    // disk fails here, with nothing changed.
    let pending = prepare_files(paths, conf, req)?;
    if existing.is_none() {
        // The home is the status directory, as a real path (prefixed under a test root).
        accounts::create(
            paths,
            &account,
            &conf.device_group,
            &paths.status(&req.id).display().to_string(),
        )?;
    }
    let result = make_status_dir(paths, &req.id).and_then(|()| store::commit_all(pending));
    if result.is_err() && existing.is_none() {
        let _ = accounts::delete(paths, &account);
    }
    result
}

/// Not registered yet, a key of its own, an alias of its own, not revoked.
fn check_registry(paths: &Paths, req: &Request) -> Result<()> {
    if let Some(rec) = registry::load(paths, &req.id)? {
        return Err(Error::new(format!(
            "device {} is already registered (key {}); `add-device --print-setup {}` prints its setup line, `remove-device {}` replaces it",
            rec.label(),
            rec.fingerprint,
            req.id,
            req.id
        )));
    }
    let fp = fingerprint(&req.key);
    for other in registry::list(paths)? {
        if other.fingerprint == fp {
            return Err(Error::new(format!(
                "this key ({}) is already registered for device {}: every device needs its own key",
                fp,
                other.label()
            )));
        }
        if req.alias.is_some() && other.alias == req.alias {
            return Err(Error::usage(format!(
                "alias {} is already used by device {}; choose another --name",
                req.alias.as_deref().unwrap_or_default(),
                other.id
            )));
        }
    }
    if !req.force && registry::revoked(paths)?.contains(&fp) {
        return Err(Error::new(format!(
            "this key ({}) was revoked by remove-device: generate a new key on the device, or pass --force",
            fp
        )));
    }
    Ok(())
}

/// The status directory is the account's home and the gate's only writable place.
fn make_status_dir(paths: &Paths, id: &DeviceId) -> Result<()> {
    let account = id.account();
    let acct = accounts::by_name(paths, &account)?.ok_or_else(|| {
        Error::new(format!(
            "account {} was not created; check useradd",
            account
        ))
    })?;
    store::ensure_dir(&paths.status_dir(), 0o755)?;
    let status = paths.status(id);
    store::ensure_dir(&status, 0o700)?;
    std::os::unix::fs::lchown(&status, Some(acct.uid), Some(acct.gid))
        .map_err(|e| Error::io("hand over", &status, e))
}

/// The registry with the device and its key file, written but not renamed; committed
/// in this order, the key file (the grant of a login) last. Any requests file an
/// earlier device of this id left is removed first: a new device starts with none.
fn prepare_files(paths: &Paths, conf: &ServerConf, req: &Request) -> Result<Vec<Pending>> {
    store::ensure_dir(&paths.keys_dir(), 0o755)?;
    store::remove(&paths.requests(&req.id))?;
    let rec = DeviceRecord {
        id: req.id.clone(),
        alias: req.alias.clone(),
        key: req.key.to_string(),
        fingerprint: fingerprint(&req.key),
        created: clock::now(),
    };
    let line = keys::key_line(&rec.key, &keys::gate_command(&conf.gate, paths), &[]);
    let keyfile = store::prepare(&paths.key_file(&req.id), line.as_bytes(), 0o644)?;
    Ok(vec![registry::prepare_with(paths, rec)?, keyfile])
}

/// The line that configures the agent: every host key the agent accepts, one per type.
fn print_setup(out: &mut Out, paths: &Paths, conf: &ServerConf, id: &DeviceId) -> Result<()> {
    let host_keys = keys::server_host_keys(paths);
    if host_keys.is_empty() {
        log::warn!(
            "no usable host keys in {}: add --host-key 'TYPE BASE64' for each of the server's host keys",
            paths.ssh_dir().display()
        );
    }
    if let Some(why) = unreachable_host(&conf.server_host) {
        log::warn!(
            "server_host = {} in {} {}: devices will not reach it; set server_host to the public name or address, then `add-device --print-setup {}`",
            conf.server_host,
            paths.conf().display(),
            why,
            id
        );
    }
    say!(out, "On the device, run:")?;
    let mut line = format!(
        "  phonehome setup --server {} --port {} --account {}",
        shell_quote(&conf.server_host),
        conf.server_port,
        id.account()
    );
    for k in host_keys {
        line.push_str(&format!(" --host-key {}", shell_quote(&k.to_string())));
    }
    say!(out, "{}", line)
}

/// Why `host` looks unreachable from outside, if it does: a bare host name (no
/// domain), a loopback, private, link-local or unspecified address.
pub fn unreachable_host(host: &str) -> Option<&'static str> {
    use std::net::IpAddr;
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) if a.is_loopback() => Some("is a loopback address"),
        Ok(IpAddr::V4(a))
            if a.is_private()
                || a.is_link_local()
                || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64) =>
        {
            Some("is a private address (fine only if every device is on that network)")
        }
        Ok(IpAddr::V4(a)) if a.is_unspecified() => Some("is the unspecified address"),
        Ok(IpAddr::V6(a)) if a.is_loopback() || a.is_unspecified() => Some("is a loopback address"),
        Ok(IpAddr::V6(a))
            if (a.segments()[0] & 0xfe00) == 0xfc00 || (a.segments()[0] & 0xffc0) == 0xfe80 =>
        {
            Some("is a private address (fine only if every device is on that network)")
        }
        Ok(_) => None,
        Err(_) if host == "localhost" || host.ends_with(".localhost") => {
            Some("is this machine itself")
        }
        Err(_) if !host.contains('.') => {
            Some("is a bare host name that other networks cannot resolve")
        }
        Err(_)
            if host.ends_with(".local")
                || host.ends_with(".lan")
                || host.ends_with(".internal") =>
        {
            Some("is a local name that other networks cannot resolve")
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_look_unreachable() {
        for bad in [
            "myserver",
            "localhost",
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "box.local",
            "0.0.0.0",
        ] {
            assert!(unreachable_host(bad).is_some(), "{}", bad);
        }
        for ok in ["ph.example.org", "198.51.100.1", "2001:db8::1"] {
            assert!(unreachable_host(ok).is_none(), "{}", ok);
        }
    }
}
