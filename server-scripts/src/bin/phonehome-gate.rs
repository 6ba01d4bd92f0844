//! `phonehome-gate`: see phonehome_server::cmd::gate.
#![forbid(unsafe_code)]

fn main() {
    phonehome_server::cli::main("phonehome-gate", phonehome_server::cmd::gate::run)
}
