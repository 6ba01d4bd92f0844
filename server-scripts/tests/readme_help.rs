//! The `--help` blocks of server-scripts/README.md are each command's real `--help`,
//! so that a reader who compares them finds them equal (issue 13 found them so, and
//! later changes let them drift).

mod common;
use common::*;
use std::process::Command;

/// The fenced block of `readme` that starts with `first_line`.
fn block<'a>(readme: &'a str, first_line: &str) -> Option<&'a str> {
    let start = readme.find(&format!("```\n{}", first_line))? + 4;
    let len = readme[start..].find("```")?;
    Some(&readme[start..start + len])
}

#[test]
fn every_help_in_the_readme_is_the_real_one() {
    let readme = include_str!("../README.md");
    for cmd in [
        "add-device",
        "remove-device",
        "forward-device-port",
        "list-devices",
    ] {
        let out = Command::new(bin_path(cmd)).arg("--help").output().unwrap();
        let help = Out::new(format!("{} --help", cmd), out).ok().stdout;
        let documented = block(readme, &format!("Usage: {}", cmd))
            .unwrap_or_else(|| panic!("server-scripts/README.md has no --help block of {}", cmd));
        assert_eq!(
            documented, help,
            "server-scripts/README.md's block differs from `{} --help`: paste the real one",
            cmd
        );
    }
}
