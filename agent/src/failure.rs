//! Why a command could not do its job, and the exit status that says so: 0 done,
//! 1 failed (the reason is logged and, for a poll, kept for the next report), 2 bad
//! settings or usage.

/// Exit status of success (an overlapping tick that skipped quietly included).
pub const EXIT_OK: i32 = 0;
/// Exit status of a failed poll or command.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of a usage or configuration error.
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Bad settings: exit 2.
    Config(String),
    /// The poll (or the command) failed: exit 1.
    Failed(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) => EXIT_USAGE,
            Failure::Failed(_) => EXIT_FAILED,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Config(m) | Failure::Failed(m) => f.write_str(m),
        }
    }
}
