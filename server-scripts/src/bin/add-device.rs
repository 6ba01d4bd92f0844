//! `add-device`: see phonehome_server::cmd::add_device.
#![forbid(unsafe_code)]

fn main() {
    phonehome_server::cli::main("add-device", phonehome_server::cmd::add_device::run)
}
