//! phonehome: the device agent. `main` only hands the arguments to `cli` and exits with
//! the status it returns; see docs/ARCHITECTURE.md for the commands and options.
// Unsafe code is refused everywhere but `sys`, the one small module that calls libc.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod config;
mod device_id;
mod files;
mod hostkey;
mod logging;
mod poll;
mod reconcile;
mod report;
mod setup;
mod ssh;
mod state;
mod sys;
mod tunnels;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::run(&args));
}
