//! The contract between the phonehome agent (on the device) and the server tools.
//!
//! Both sides link this crate so that neither re-implements the grammar of an inbox
//! line, the shape of the status report, what a device id or an alias may look like,
//! or the limits that bound every message. Everything that crosses the ssh connection
//! is defined here and nowhere else.
#![forbid(unsafe_code)]

mod id;
mod inbox;
mod names;
mod session;
pub mod sshkey;
mod status;

pub use id::{validate_alias, DeviceId};
pub use inbox::{
    parse_answer, parse_frame, parse_inbox, parse_port, render_answer, render_frame, render_inbox,
    AnswerError, Frame, Inbox, PortPair, RejectedLine, ANSWER_END, ANSWER_HEADER, HOLD_ATTRIBUTE,
    OLDEST_FRAMED,
};
pub use names::{check_text, is_unix_name, validate_account, validate_host, MAX_UNIX_NAME};
pub use session::{Outcome, OutcomeState, OUTCOME_WORD};
pub use status::{StatusReport, TunnelState, TunnelStatus};

/// Version of the poll protocol; the agent sends it in every status report, and the
/// gate answers in the framing of that version (1: bare lines; 2: framed, see
/// `parse_answer`; 3: framed, and the session may be held, see `HOLD_PROTOCOL`).
pub const PROTOCOL_VERSION: u32 = 3;

/// The first protocol with held sessions. An agent of it ends its report with a
/// newline and may leave stdin open (`StatusReport::hold` says for how long at most);
/// its gate reads the report up to that newline, not up to the end of stdin, and may
/// answer `phonehome-inbox 3 hold=SECS`: then it keeps the session open up to SECS,
/// sends the whole request set again each time it changes, and reads the agent's
/// outcome lines (`Outcome`) until the agent closes stdin or the time is up.
pub const HOLD_PROTOCOL: u32 = 3;

/// Shortest hold worth a session: an agent with less time left before its next tick
/// does not offer to hold, and a gate never grants less.
pub const MIN_HOLD_SECS: u64 = 5;

/// Longest hold a gate may be configured with, or an agent may offer.
pub const MAX_HOLD_SECS: u64 = 3600;

/// How long an agent that offered to hold waits for the first frame before it closes
/// stdin anyway: a gate older than `HOLD_PROTOCOL` reads the report until the end of
/// stdin and must get it within its own `GATE_READ_TIMEOUT_SECS`.
pub const HOLD_ANSWER_WAIT_SECS: u64 = GATE_READ_TIMEOUT_SECS - 2;

/// How long past the hold it granted the gate may take to end the session before the
/// agent ends it itself.
pub const HOLD_GRACE_SECS: u64 = 3;

/// Most frames an agent takes in one held session; a gate that sends more is cut off.
pub const MAX_HELD_FRAMES: usize = 64;

/// Longest outcome line the gate reads (a reason of `MAX_TEXT_LEN` and the rest).
pub const MAX_OUTCOME_LINE: usize = MAX_TEXT_LEN + 32;

/// Most outcome lines a gate takes in one held session; more ends the session.
pub const MAX_OUTCOMES: usize = 512;

/// The only command a device login may ask the gate to run (`ssh device<id>@server poll`).
pub const POLL_COMMAND: &str = "poll";

/// Unix account of a device on the server: `device` + its 12-hex-digit id.
pub const ACCOUNT_PREFIX: &str = "device";

/// How often cron runs the agent in production.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 60;

/// How long the gate waits for the status report on stdin before it answers without
/// it (a client that never closes stdin must not hold the session). The agent writes
/// the report and closes stdin at once, well within it.
pub const GATE_READ_TIMEOUT_SECS: u64 = 10;

/// The agent's default hard limit for one poll's ssh: the login, the report, the
/// answer. Longer than the gate's read timeout, so the gate always answers first.
pub const DEFAULT_POLL_TIMEOUT_SECS: u64 = 30;

/// The default ssh keepalive interval of the agent's connections; the server's
/// `ClientAliveInterval` (install-server.sh) frees the port of a dead tunnel.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 30;

/// Longest `agent_version` in a status report.
pub const MAX_VERSION_LEN: usize = 64;

/// Largest status report the gate reads from a device's stdin; more is rejected.
pub const MAX_STATUS_BYTES: usize = 16 * 1024;

/// Largest inbox (the gate's answer) the agent reads; the rest is ignored and reported.
pub const MAX_INBOX_BYTES: usize = 8 * 1024;

/// Longest inbox line considered at all (a valid one is at most 11 bytes).
pub const MAX_INBOX_LINE: usize = 64;

/// Most tunnels one device holds at once; requests past it are rejected.
pub const MAX_REQUESTS: usize = 32;

/// Longest error or free-text string carried in a status report (bytes).
pub const MAX_TEXT_LEN: usize = 512;

/// Most inbox errors carried in one status report.
pub const MAX_REPORTED_ERRORS: usize = 16;

/// Longest alias of a device in the server registry.
pub const MAX_ALIAS_LEN: usize = 30;

/// A value that is not what the protocol allows, with a message fit for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Cut `s` to at most `max` bytes on a char boundary (for error strings in reports).
pub fn truncate_text(s: &str, max: usize) -> String {
    phonehome_plumbing::text::truncate(s, max).to_string()
}
