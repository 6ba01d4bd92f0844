//! The contract between the phonehome agent (on the device) and the server tools.
//!
//! Both sides link this crate so that neither re-implements the grammar of an inbox
//! line, the shape of the status report, what a device id or an alias may look like,
//! or the limits that bound every message. Everything that crosses the ssh connection
//! is defined here and nowhere else.
#![forbid(unsafe_code)]

mod id;
mod inbox;
mod status;

pub use id::{validate_alias, DeviceId};
pub use inbox::{parse_inbox, parse_port, render_inbox, Inbox, PortPair, RejectedLine};
pub use status::{StatusReport, TunnelState, TunnelStatus};

/// Version of the poll protocol; the agent sends it in every status report.
pub const PROTOCOL_VERSION: u32 = 1;

/// The only command a device login may ask the gate to run (`ssh device<id>@server poll`).
pub const POLL_COMMAND: &str = "poll";

/// Unix account of a device on the server: `device` + its 12-hex-digit id.
pub const ACCOUNT_PREFIX: &str = "device";

/// How often cron runs the agent in production.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 60;

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
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
