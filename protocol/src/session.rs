//! The held session's other direction: what the agent tells the gate on the same
//! stdin after its status report, while the session lasts. One line per tunnel event,
//! so that the server (and `forward-device-port --wait`) learns within a second that
//! the device picked a request up, or why its tunnel failed, instead of at the next
//! poll's report.
//!
//! ```text
//! tunnel 22:9876 starting          the device is opening it (it heard the request)
//! tunnel 22:9876 failed REASON     its ssh exited: the client's own last words
//! tunnel 22:9876 stopped           withdrawn, the device closed it
//! ```
//!
//! The gate takes these from a device it does not trust: every line is at most
//! `MAX_OUTCOME_LINE` bytes, strict in its grammar, and its reason passes the same
//! text check as every string of a status report (`check_text`: no control
//! characters, no bidi overrides). A line that breaks the rules ends the held session.

use crate::{check_text, Invalid, PortPair, MAX_OUTCOME_LINE, MAX_TEXT_LEN};
use phonehome_plumbing::text::quoted;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The first word of every outcome line.
pub const OUTCOME_WORD: &str = "tunnel";

/// What happened to a tunnel during a held session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeState {
    /// The device heard the request and is starting the tunnel.
    Starting,
    /// The tunnel's ssh exited (or could not be started).
    Failed,
    /// The request was withdrawn and the device stopped the tunnel.
    Stopped,
}

impl OutcomeState {
    fn word(self) -> &'static str {
        match self {
            OutcomeState::Starting => "starting",
            OutcomeState::Failed => "failed",
            OutcomeState::Stopped => "stopped",
        }
    }
}

/// One outcome line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub pair: PortPair,
    pub state: OutcomeState,
    /// Why it failed (only with `Failed`).
    pub reason: Option<String>,
}

impl Outcome {
    /// The line, newline included. A reason is cut to `MAX_TEXT_LEN` bytes; the
    /// caller passes text that `check_text` accepts (the agent cleans it first).
    pub fn render(&self) -> String {
        let reason = match (&self.reason, self.state) {
            (Some(r), OutcomeState::Failed) if !r.is_empty() => {
                format!(" {}", crate::truncate_text(r, MAX_TEXT_LEN))
            }
            _ => String::new(),
        };
        format!(
            "{} {} {}{}\n",
            OUTCOME_WORD,
            self.pair,
            self.state.word(),
            reason
        )
    }

    /// Parse one line (without its newline), strictly.
    pub fn parse(line: &[u8]) -> Result<Outcome, Invalid> {
        let bad = |why: &str| {
            Invalid(format!(
                "outcome line {}: {}",
                quoted(&String::from_utf8_lossy(line), 48),
                why
            ))
        };
        if line.len() > MAX_OUTCOME_LINE {
            return Err(bad(&format!("longer than {} bytes", MAX_OUTCOME_LINE)));
        }
        let text = std::str::from_utf8(line).map_err(|_| bad("not valid UTF-8"))?;
        let mut words = text.splitn(4, ' ');
        if words.next() != Some(OUTCOME_WORD) {
            return Err(bad("expected `tunnel LOCAL:REMOTE STATE`"));
        }
        let pair = PortPair::parse(words.next().unwrap_or("")).map_err(|e| bad(&e.0))?;
        let state = match words.next() {
            Some("starting") => OutcomeState::Starting,
            Some("failed") => OutcomeState::Failed,
            Some("stopped") => OutcomeState::Stopped,
            _ => return Err(bad("the state is not starting, failed or stopped")),
        };
        let reason = words.next().map(str::to_string);
        match (&reason, state) {
            (Some(r), _) if r.is_empty() => return Err(bad("ends with a space")),
            (Some(r), OutcomeState::Failed) => {
                check_text("a tunnel's reason", r, MAX_TEXT_LEN).map_err(|e| bad(&e.0))?
            }
            (Some(_), _) => return Err(bad("only a failure has a reason")),
            (None, _) => {}
        }
        Ok(Outcome {
            pair,
            state,
            reason,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> PortPair {
        PortPair {
            local: 22,
            remote: 9876,
        }
    }

    #[test]
    fn outcomes_round_trip() {
        for (state, reason) in [
            (OutcomeState::Starting, None),
            (OutcomeState::Stopped, None),
            (OutcomeState::Failed, None),
            (
                OutcomeState::Failed,
                Some("remote port forwarding failed for listen port 9876"),
            ),
        ] {
            let o = Outcome {
                pair: pair(),
                state,
                reason: reason.map(String::from),
            };
            let line = o.render();
            assert!(line.ends_with('\n') && line.starts_with("tunnel 22:9876 "));
            assert_eq!(Outcome::parse(line.trim_end().as_bytes()), Ok(o));
        }
        let long = Outcome {
            pair: pair(),
            state: OutcomeState::Failed,
            reason: Some("x".repeat(3 * MAX_TEXT_LEN)),
        };
        Outcome::parse(long.render().trim_end().as_bytes()).unwrap();
    }

    #[test]
    fn threat_46_hostile_outcome_lines_are_refused() {
        for bad in [
            &b""[..],
            b"tunnel",
            b"tunnel 22:9876",
            b"tunnel 22:9876 exploded",
            b"tunnel 22:09876 starting",
            b"tunnel 22:0 failed",
            b"tunnel  22:9876 starting",
            b"tunnel 22:9876 starting now",
            b"tunnel 22:9876 stopped because",
            b"Tunnel 22:9876 starting",
            b"tunnel 22:9876 starting\r",
            b"tunnel 22:9876 failed \x1b]0;owned\x07",
            b"tunnel 22:9876 failed \xe2\x80\xae reversed",
            b"tunnel 22:9876 failed \xff\xfe",
            b"tunnel 22:9876 failed a\tb",
            b"tunnel 22:9876 failed ",
            b"tunnel 22:9876 starting ",
        ] {
            assert!(
                Outcome::parse(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let flood = format!("tunnel 22:9876 failed {}", "x".repeat(MAX_OUTCOME_LINE));
        let e = Outcome::parse(flood.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("longer than") && e.len() < 200, "{}", e);
    }
}
