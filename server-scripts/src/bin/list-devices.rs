//! `list-devices`: see phonehome_server::cmd::list.
#![forbid(unsafe_code)]

fn main() {
    phonehome_server::cli::main("list-devices", phonehome_server::cmd::list::run)
}
