//! `remove-device <id|alias>`: revoke a device at once. In this order, under its lock:
//! its fingerprint appended to `revoked` (so a full disk fails before anything changes),
//! its key file removed (no new login), every process of its uid ended (open tunnels
//! cut), the account deleted, the registry record and the requests removed. The gate's
//! records in `status/<id>/` stay, so the heartbeat history remains readable.

use crate::accounts;
use crate::cli;
use crate::error::{Error, Result};
use crate::lock;
use crate::paths::Paths;
use crate::procs;
use crate::registry;
use crate::timefmt;

const NAME: &str = "remove-device";
const ABOUT: &str = "Revoke a device: its key stops working at once, its open tunnels are cut, its
account is deleted. Its heartbeat history (status directory) is kept.";

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, &e)),
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = cli::base_options();
    let Some(m) = cli::parse(
        NAME,
        &opts,
        args,
        "remove-device [OPTIONS] <ID|ALIAS>",
        ABOUT,
    )?
    else {
        return Ok(());
    };
    if m.free.len() != 1 {
        return Err(Error::usage(
            "expected one device id or alias, e.g. remove-device 6466b34bde54",
        ));
    }
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    cli::require_root(NAME)?;
    let rec = registry::find(&paths, &m.free[0])?;
    let id = rec.device_id()?;
    let _registry_lock = lock::registry(&paths)?;
    let _device_lock = lock::device(&paths, &id)?;

    registry::revoke(&paths, &rec, timefmt::now())?;
    remove_if_present(&paths.key_file(&id))?;
    let account = id.account();
    let mut ended = 0;
    if let Some(acct) = accounts::by_name(&paths, &account)? {
        ended = procs::kill_uid(acct.uid)?;
        accounts::delete(&paths, &account)?;
    }
    remove_if_present(&paths.requests(&id))?;
    remove_if_present(&paths.device_record(&id))?;
    println!(
        "removed device {}: key {} revoked, {} process(es) ended, account {} deleted; history kept in {}",
        rec.label(),
        rec.fingerprint,
        ended,
        account,
        paths.status(&id).display()
    );
    Ok(())
}
