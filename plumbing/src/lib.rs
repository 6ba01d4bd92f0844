//! The plumbing the phonehome agent and the server tools share: one home for each
//! low-level concern, so that the two sides cannot drift apart.
//!
//! - [`files`]: atomic writes that never follow a symlink, bounded reads of regular
//!   files only, directories;
//! - [`lock`]: flock, retried on EINTR;
//! - [`process`]: signals, pidfds, `/proc`, process groups and sessions, the one
//!   process runner (stdin fed or closed, output bounded, always reaped), also driven
//!   step by step for a held poll ([`process::Session`]);
//! - [`watch`]: waiting on several descriptors at once, bounded reads of what they
//!   hold, a directory's changes (inotify);
//! - [`clock`]: the time, calendar arithmetic and its formats;
//! - [`text`]: strict base64, shell quoting, and the terminal-safe sanitiser every
//!   device- or log-supplied string goes through before a person sees it;
//! - [`settings`]: the `name = value` file format both sides' config files use;
//! - [`sockdiag`]: the listening TCP sockets, from the kernel;
//! - [`spawn`]: a child started without fork(2) that dies with its parent (the poll);
//! - [`tempdir`]: private temp directories for tests;
//! - [`threads`]: how many threads can run, and items mapped on scoped threads in order.
//!
//! std and libc only, `io::Result` everywhere: the callers add the context (which
//! file, which command) that makes an error worth reading. `unsafe` lives in
//! [`process`], [`spawn`], [`lock`], [`clock`], [`watch`], [`sockdiag`] and
//! `files::free_bytes` and `files::Dir::read_bounded` only, each call commented.
#![deny(unsafe_code)]

pub mod clock;
pub mod files;
pub mod lock;
pub mod process;
pub mod settings;
pub mod sockdiag;
pub mod spawn;
pub mod tempdir;
pub mod text;
pub mod threads;
pub mod watch;
