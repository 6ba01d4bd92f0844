//! `remove-device`: see phonehome_server::cmd::remove_device.
#![forbid(unsafe_code)]

fn main() {
    phonehome_server::cli::main("remove-device", phonehome_server::cmd::remove_device::run)
}
