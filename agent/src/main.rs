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

/// On musl (every router build), dlmalloc instead of musl's allocator. mallocng hands a
/// page back to the kernel for nearly every buffer a poll frees and maps a fresh one for
/// the next: 36 mmap and munmap calls a poll, each with its page fault and TLB flush,
/// against 9 with dlmalloc (Rust's own allocator on wasm), which keeps freed memory for
/// reuse. It cut the agent's own CPU per poll by a sixth (x86_64, static musl; figures
/// in agent/README.md). glibc's allocator reuses memory already.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::run(&args));
}
