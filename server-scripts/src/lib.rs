//! The phonehome server tools: one library shared by the commands `add-device`,
//! `remove-device`, `forward-device-port`, `list-devices` and the gate
//! `phonehome-gate` (the forced command of every device login).
//!
//! Every path sits under a root prefix (`PHONEHOME_ROOT` or `--root DIR`, default `/`)
//! so that the tools can be run and tested without touching the host's `/etc` and `/var`.
//! The grammar of what crosses the wire (ids, ports, inbox, status report) comes from
//! `phonehome_protocol`; this crate only stores, checks and serves it.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod deliver;
pub mod detect;
pub mod duration;
pub mod error;
pub mod events;
pub mod fleet;
pub mod gate_status;
pub mod hold;
pub mod keys;
pub mod listeners;
pub mod lock;
pub mod logcache;
pub mod logscan;
pub mod metrics;
pub mod outbox;
pub mod paths;
pub mod registry;
pub mod requests;
pub mod store;
pub mod wait;
pub mod watch;
pub mod watch_state;
pub mod webhook;

pub use error::Error;
