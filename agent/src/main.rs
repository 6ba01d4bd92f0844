//! phonehome: the device agent. `main` only hands the arguments to `cli` and exits with
//! the status it returns; see docs/ARCHITECTURE.md for the commands and options.
// No unsafe code: what needs libc lives in the shared phonehome-plumbing crate.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod commands;
mod config;
mod device_id;
mod failure;
mod hold;
mod identity;
mod known_hosts;
mod last_poll;
mod logging;
mod poll;
mod reconcile;
mod report;
mod rundir;
mod setup;
mod ssh;
mod ssh_error;
mod tunnels;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::run(&args));
}
