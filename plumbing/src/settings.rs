//! The `name = value` file format of both sides' config files (the agent's
//! `phonehome.conf`, the server's `server.conf`): `#` comments and blank lines skipped,
//! every other line `name = value`, names checked against the caller's list, a name
//! set twice refused unless the caller allows it to repeat. What a value may be is the
//! caller's business; errors name the line, because a typo in a security setting must
//! not pass silently.

/// One setting with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub line: usize,
    pub name: String,
    pub value: String,
}

/// A line that is not a valid setting; `Display` is `line N: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

/// Split `text` into settings. `known`: the names allowed; `repeatable`: those of them
/// that may appear more than once.
pub fn parse(text: &str, known: &[&str], repeatable: &[&str]) -> Result<Vec<Setting>, LineError> {
    let mut out: Vec<Setting> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| LineError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (name, value) = trimmed.split_once('=').ok_or_else(|| {
            err(format!(
                "expected `name = value`, found {}",
                crate::text::quoted(trimmed, 40)
            ))
        })?;
        let (name, value) = (name.trim(), value.trim());
        if !known.contains(&name) {
            return Err(err(format!(
                "unknown setting {}",
                crate::text::quoted(name, 40)
            )));
        }
        if !repeatable.contains(&name) {
            if let Some(first) = out.iter().find(|s| s.name == name) {
                return Err(err(format!(
                    "{} is already set on line {}",
                    name, first.line
                )));
            }
        }
        out.push(Setting {
            line,
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["server", "port", "host-key"];

    #[test]
    fn lines_comments_and_repeats() {
        let text = "# comment\n\n server = example.org \nport=2222\nhost-key = ssh-ed25519 AAAA\nhost-key = x y\n";
        let s = parse(text, KNOWN, &["host-key"]).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            Setting {
                line: 3,
                name: "server".into(),
                value: "example.org".into()
            }
        );
        assert_eq!(s[3].line, 6);
        assert_eq!(s[3].value, "x y");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("server = a\nfrobnicate = 1\n", KNOWN, &[]).unwrap_err();
        assert_eq!(e.to_string(), "line 2: unknown setting \"frobnicate\"");
        let e = parse("server a\n", KNOWN, &[]).unwrap_err();
        assert!(
            e.to_string().starts_with("line 1: expected `name = value`"),
            "{}",
            e
        );
        let e = parse("port = 1\n\nport = 2\n", KNOWN, &[]).unwrap_err();
        assert_eq!(e.to_string(), "line 3: port is already set on line 1");
        let e = parse("\u{1b}[2J = 1\n", KNOWN, &[]).unwrap_err();
        assert!(!e.to_string().contains('\u{1b}'));
    }
}
