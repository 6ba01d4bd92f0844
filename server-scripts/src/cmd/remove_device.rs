//! `remove-device <id|alias>`: revoke a device at once. Under the registry lock and the
//! device's lock, in this order: its fingerprint appended to `revoked` (so a full disk
//! fails before anything changes), its key file removed (no new login), every process
//! of its uid ended (open tunnels cut), the account deleted, then the requests and the
//! registry record. A login that was already past authentication when the key file
//! went can still start a session; `userdel` then refuses ("currently used by
//! process"), so the processes are ended again and userdel retried. If the account
//! still cannot be deleted, the registry record stays and the error says what is left
//! and that running remove-device again finishes the job. The gate's records in
//! `status/<id>/` stay, so the heartbeat history remains readable.

use crate::accounts::{self, Account, USERDEL_BUSY};
use crate::cli::{self, Out};
use crate::error::{Error, Result};
use crate::lock;
use crate::paths::Paths;
use crate::registry::{self, DeviceRecord};
use crate::say;
use crate::store;
use phonehome_plumbing::clock;
use phonehome_plumbing::process::{self, SIGKILL, SIGTERM};
use std::time::Duration;

const NAME: &str = "remove-device";
const ABOUT: &str = "Revoke a device: its key stops working at once, its open tunnels are cut, its
account is deleted. Its heartbeat history (status directory) is kept.";

/// How long the device's processes get to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How often userdel is tried while sessions that were authenticating go away.
const USERDEL_ATTEMPTS: usize = 5;

pub fn run(args: &[String], out: &mut Out) -> Result<()> {
    let opts = cli::base_options();
    let synopsis = "remove-device [OPTIONS] <ID|ALIAS>";
    let Some(m) = cli::parse(out, NAME, &opts, args, synopsis, ABOUT)? else {
        return Ok(());
    };
    if m.free.len() != 1 {
        return Err(Error::usage(
            "expected one device id or alias, e.g. remove-device 6466b34bde54",
        ));
    }
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    cli::require_root(NAME)?;
    let _registry_lock = lock::registry(&paths)?;
    // Looked up under the lock: a concurrent remove-device finished first is "unknown".
    let rec = registry::find(&paths, &m.free[0])?;
    let _device_lock = lock::device(&paths, &rec.id)?;
    let ended = remove(&paths, &rec)?;
    say!(
        out,
        "removed device {}: key {} revoked, {} process(es) ended, account {} deleted; history kept in {}",
        rec.label(),
        rec.fingerprint,
        ended,
        rec.id.account(),
        paths.status(&rec.id).display()
    )
}

/// Everything but the history goes; returns how many processes were ended.
fn remove(paths: &Paths, rec: &DeviceRecord) -> Result<usize> {
    let id = &rec.id;
    registry::revoke(paths, rec, clock::now())?;
    store::remove(&paths.key_file(id))?;
    log::info!("revoked {} and removed its key file", rec.fingerprint);
    let ended = match accounts::by_name(paths, &id.account())? {
        Some(acct) => delete_account(paths, rec, &acct)?,
        None => 0,
    };
    store::remove(&paths.requests(id))?;
    store::commit_all(vec![registry::prepare_without(paths, id)?])?;
    log::info!("removed the requests and the registry record of {}", id);
    Ok(ended)
}

/// End every process of the account, then delete it; again while userdel finds it busy.
fn delete_account(paths: &Paths, rec: &DeviceRecord, acct: &Account) -> Result<usize> {
    if acct.uid == 0 {
        return Err(Error::new(format!(
            "account {} has uid 0: it is not a phonehome device account; nothing was deleted, fix the account by hand",
            acct.name
        )));
    }
    let mut ended = 0;
    let mut last = None;
    for _ in 0..USERDEL_ATTEMPTS {
        ended += end_processes(acct)?;
        match accounts::delete(paths, &acct.name) {
            Ok(()) => {
                // A session that began between the last kill and userdel.
                end_processes(acct)?;
                return Ok(ended);
            }
            Err(e) if e.exit_code() == Some(USERDEL_BUSY) => last = Some(e),
            Err(e) => return Err(left_behind(rec, &acct.name, &e.to_string())),
        }
    }
    let why = last.map(|e| e.to_string()).unwrap_or_default();
    Err(left_behind(rec, &acct.name, &why))
}

/// SIGTERM every process of the account, SIGKILL what is left after a grace period.
/// Returns how many there were.
fn end_processes(acct: &Account) -> Result<usize> {
    let found = process::pids_of_uid(acct.uid).len();
    if found == 0 {
        return Ok(0);
    }
    let signal = |sig| {
        process::kill_uid(acct.uid, acct.gid, sig).map_err(|e| {
            Error::new(format!(
                "cannot signal the processes of {} (uid {}): {}",
                acct.name, acct.uid, e
            ))
        })
    };
    signal(SIGTERM)?;
    let until = std::time::Instant::now() + TERM_GRACE;
    while std::time::Instant::now() < until && !process::pids_of_uid(acct.uid).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !process::pids_of_uid(acct.uid).is_empty() {
        signal(SIGKILL)?;
    }
    log::info!("ended {} process(es) of {}", found, acct.name);
    Ok(found)
}

/// What remains after a failed account deletion, and how to finish.
fn left_behind(rec: &DeviceRecord, account: &str, why: &str) -> Error {
    Error::new(format!(
        "device {}: its key is revoked and removed and its processes were ended, but account {} could not be deleted ({}); the account, the requests and the registry record are left: run remove-device {} again to finish",
        rec.label(),
        account,
        why,
        rec.id
    ))
}
