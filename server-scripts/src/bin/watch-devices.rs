//! `watch-devices`: see phonehome_server::cmd::watch.
#![forbid(unsafe_code)]

fn main() {
    phonehome_server::cli::main("watch-devices", phonehome_server::cmd::watch::run)
}
