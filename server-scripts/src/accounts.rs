//! Unix accounts of devices: read `<root>/etc/passwd` and `<root>/etc/group` directly
//! (not NSS: the root may be a prefix), and create or delete accounts with shadow's
//! `useradd` / `userdel`, passing `--prefix <root>` when the root is not `/`.

use crate::error::{Error, Result};
use crate::paths::Paths;
use std::process::Command;

/// Largest passwd or group file read.
const MAX_DB_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

fn read_db(path: &std::path::Path) -> Result<String> {
    let data = crate::atomic::read_bounded(path, MAX_DB_BYTES)?.ok_or_else(|| {
        Error::new(format!(
            "{} does not exist; is the root right?",
            path.display()
        ))
    })?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

pub fn parse_passwd_line(line: &str) -> Option<Account> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 7 {
        return None;
    }
    Some(Account {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].to_string(),
        shell: f[6].to_string(),
    })
}

pub fn all(paths: &Paths) -> Result<Vec<Account>> {
    Ok(read_db(&paths.passwd())?
        .lines()
        .filter_map(parse_passwd_line)
        .collect())
}

pub fn by_name(paths: &Paths, name: &str) -> Result<Option<Account>> {
    Ok(all(paths)?.into_iter().find(|a| a.name == name))
}

/// The first account with this uid, as getpwuid would answer.
pub fn by_uid(paths: &Paths, uid: u32) -> Result<Option<Account>> {
    Ok(all(paths)?.into_iter().find(|a| a.uid == uid))
}

/// The gid of group `name`, if it exists.
pub fn group_gid(paths: &Paths, name: &str) -> Result<Option<u32>> {
    Ok(read_db(&paths.group())?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() == 4 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    }))
}

/// Run a command, turning a failure into one line naming it and its stderr.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{:?}", cmd).replace('"', "");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("cannot run `{}`: {}", shown, e)))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::new(format!(
        "`{}` failed ({}): {}",
        shown,
        out.status,
        stderr.trim().replace('\n', "; ")
    )))
}

fn with_prefix(paths: &Paths, program: &str) -> Command {
    let mut cmd = Command::new(program);
    if !paths.is_system() {
        cmd.arg("--prefix").arg(paths.root());
    }
    cmd
}

/// `useradd`: shell /bin/sh (sshd runs the forced command through it), primary group
/// the device group, password field `*` (locked for passwords, open for keys even with
/// `UsePAM no`), no home created (the home is the status directory, made by the caller).
pub fn create(paths: &Paths, name: &str, group: &str, home: &str) -> Result<()> {
    run(with_prefix(paths, "useradd")
        .args([
            "-M",
            "-N",
            "-s",
            "/bin/sh",
            "-p",
            "*",
            "-c",
            "phonehome device",
        ])
        .args(["-g", group, "-d", home, name]))
}

pub fn delete(paths: &Paths, name: &str) -> Result<()> {
    run(with_prefix(paths, "userdel").arg(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        let a = parse_passwd_line("device6466b34bde54:x:1001:998:phonehome device:/var/lib/phonehome/status/6466b34bde54:/bin/sh").unwrap();
        assert_eq!((a.uid, a.gid), (1001, 998));
        assert_eq!(a.shell, "/bin/sh");
        assert!(parse_passwd_line("broken:x:1").is_none());
        assert!(parse_passwd_line("a:x:notanumber:1:::").is_none());
    }
}
