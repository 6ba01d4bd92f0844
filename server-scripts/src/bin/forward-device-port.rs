//! `forward-device-port`: see phonehome_server::cmd::forward.
#![forbid(unsafe_code)]

fn main() {
    phonehome_server::cli::main("forward-device-port", phonehome_server::cmd::forward::run)
}
