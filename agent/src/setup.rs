//! `phonehome setup`: turn the one line printed by the server's `add-device` into the
//! config file and the pinned known_hosts file of a generic Linux device. Every value
//! was validated by `config` before it gets here; files are written atomically. It
//! says which client and key the poll will use (`identity`), or why there are none.

use crate::config::{Settings, DEFAULT_CONFIG};
use crate::device_id;
use crate::failure::Failure;
use crate::identity;
use crate::known_hosts;
use phonehome_plumbing::files;
use std::path::Path;

/// `given`: the options given as flags, in order (name without `--`, value).
pub fn setup(settings: &Settings, given: &[(String, String)]) -> Result<(), Failure> {
    let host = settings.server().map_err(Failure::Config)?;
    if settings.host_keys.is_empty() {
        return Err(Failure::Config(
            "setup needs the server's host key: pass --host-key 'TYPE BASE64' (repeatable), as printed by add-device".into(),
        ));
    }
    let config_path = given
        .iter()
        .find(|(n, _)| n == "config")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_CONFIG);
    let mut config = String::from("# phonehome agent settings, written by `phonehome setup`.\n# One `name = value` per line; each is also a flag --name.\n");
    for (name, value) in given {
        if name != "config" && name != "host-key" {
            config.push_str(&format!("{} = {}\n", name, value));
        }
    }
    let keys = known_hosts::one_per_type(&settings.host_keys).map_err(Failure::Config)?;
    let known = known_hosts::openssh_text(host, settings.port, &keys);
    write(&settings.known_hosts, known.as_bytes(), 0o644)?;
    write(Path::new(config_path), config.as_bytes(), 0o600)?;
    println!(
        "wrote {} and {}",
        config_path,
        settings.known_hosts.display()
    );
    if let Ok(id) = device_id::of(settings) {
        println!(
            "device id {}, account {}",
            id,
            settings.account.clone().unwrap_or_else(|| id.account())
        );
    }
    // What the poll will use, or why it cannot log in yet.
    let path_env = std::env::var("PATH").ok();
    match identity::choose(
        settings.client,
        settings.key.as_deref(),
        &settings.key_dir,
        path_env.as_deref(),
    ) {
        Ok(id) => println!("client {}, key {}", id.program.display(), id.key.display()),
        Err(e) => println!("note: {}", e),
    }
    println!("next: run `phonehome poll` once by hand, then every minute from cron");
    Ok(())
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::ensure_dir(dir, 0o755)
            .map_err(|e| Failure::Failed(format!("cannot create {}: {}", dir.display(), e)))?;
    }
    files::write(path, data, mode, true)
        .map_err(|e| Failure::Failed(format!("cannot write {}: {}", path.display(), e)))
}
