//! One module per command; each exposes `run(args)`, called by its `src/bin/*.rs`.

pub mod add_device;
pub mod forward;
pub mod gate;
pub mod list;
pub mod remove_device;
pub mod watch;
