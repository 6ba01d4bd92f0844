//! Unix accounts of devices: `<root>/etc/passwd` and `<root>/etc/group` read directly
//! (not NSS: the root may be a prefix) into maps by name and by uid, and accounts
//! created or deleted with shadow's `useradd` / `userdel` (`--prefix <root>` when the
//! root is not `/`), through the one process runner.

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::store;
use phonehome_plumbing::process::{self, CommandError, Limits};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

/// Largest passwd or group file read.
const MAX_DB_BYTES: u64 = 64 * 1024 * 1024;
/// How long useradd or userdel may take.
const ACCOUNT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// userdel's exit status when the user is still logged in (shadow's E_USER_BUSY).
pub const USERDEL_BUSY: i32 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// The passwd file, looked up by name or uid in constant time.
#[derive(Debug, Default)]
pub struct Db {
    by_name: HashMap<String, Account>,
    /// The first account of each uid, as getpwuid answers.
    by_uid: HashMap<u32, String>,
}

impl Db {
    pub fn load(paths: &Paths) -> Result<Db> {
        Ok(Db::parse(&read_db(&paths.passwd())?))
    }

    pub fn parse(text: &str) -> Db {
        // Sized for its lines at once: a fleet's passwd would otherwise regrow the
        // tables a dozen times.
        let lines = text.bytes().filter(|b| *b == b'\n').count() + 1;
        let mut db = Db {
            by_name: HashMap::with_capacity(lines),
            by_uid: HashMap::with_capacity(lines),
        };
        for a in text.lines().filter_map(parse_passwd_line) {
            db.by_uid.entry(a.uid).or_insert_with(|| a.name.clone());
            db.by_name.entry(a.name.clone()).or_insert(a);
        }
        db
    }

    pub fn by_name(&self, name: &str) -> Option<&Account> {
        self.by_name.get(name)
    }

    pub fn by_uid(&self, uid: u32) -> Option<&Account> {
        self.by_uid.get(&uid).and_then(|n| self.by_name.get(n))
    }
}

fn read_db(path: &std::path::Path) -> Result<String> {
    let data = store::read(path, MAX_DB_BYTES)?.ok_or_else(|| {
        Error::new(format!(
            "{} does not exist; is the root right?",
            path.display()
        ))
    })?;
    // Valid UTF-8 is taken as it is; only a broken file pays for the lossy copy.
    Ok(String::from_utf8(data)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The 7 fields of a passwd line, or `None` if it has another number of fields (a
/// fleet's passwd has a line per device: no vector per line).
fn fields7(line: &str) -> Option<[&str; 7]> {
    let mut f = [""; 7];
    let mut parts = line.split(':');
    for slot in &mut f {
        *slot = parts.next()?;
    }
    parts.next().is_none().then_some(f)
}

pub fn parse_passwd_line(line: &str) -> Option<Account> {
    let [name, _, uid, gid, _, home, shell] = fields7(line)?;
    Some(Account {
        name: name.to_string(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home: home.to_string(),
        shell: shell.to_string(),
    })
}

/// One account by name (a fresh read of the passwd file).
pub fn by_name(paths: &Paths, name: &str) -> Result<Option<Account>> {
    Ok(Db::load(paths)?.by_name(name).cloned())
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

fn with_prefix(paths: &Paths, program: &str) -> Command {
    let mut cmd = Command::new(program);
    if !paths.is_system() {
        cmd.arg("--prefix").arg(paths.root());
    }
    cmd
}

fn run(cmd: &mut Command) -> std::result::Result<(), CommandError> {
    let limits = Limits {
        timeout: ACCOUNT_COMMAND_TIMEOUT,
        max_stdout: 16 * 1024,
        max_stderr: 16 * 1024,
    };
    process::run_checked(cmd, b"", &limits).map(drop)
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
        .args(["-g", group, "-d", home, name]))?;
    log::info!("created account {}", name);
    Ok(())
}

/// `userdel NAME`; the error keeps userdel's exit status (see [`USERDEL_BUSY`]).
pub fn delete(paths: &Paths, name: &str) -> std::result::Result<(), CommandError> {
    run(with_prefix(paths, "userdel").arg(name))?;
    log::info!("deleted account {}", name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_and_lookups() {
        let a = parse_passwd_line("device6466b34bde54:x:1001:998:phonehome device:/var/lib/phonehome/status/6466b34bde54:/bin/sh").unwrap();
        assert_eq!((a.uid, a.gid), (1001, 998));
        assert_eq!(a.shell, "/bin/sh");
        assert!(parse_passwd_line("broken:x:1").is_none());
        assert!(parse_passwd_line("a:x:notanumber:1:::").is_none());
        let db = Db::parse(
            "root:x:0:0::/root:/bin/sh\nalias:x:0:0::/:/bin/sh\nd1:x:1001:9::/:/bin/sh\nbroken\n",
        );
        assert_eq!(
            db.by_uid(0).unwrap().name,
            "root",
            "the first account of a uid"
        );
        assert_eq!(db.by_name("d1").unwrap().uid, 1001);
        assert!(db.by_name("nobody").is_none());
    }
}
