//! Where log lines go: syslog on the device (datagrams to /dev/log, ident `phonehome`,
//! what OpenWrt's `logread` shows), stderr when run by hand. Stderr uses simplelog;
//! syslog is a few lines of our own instead of another crate.

use crate::config::LogTarget;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::IsTerminal;
use std::os::unix::net::UnixDatagram;

const SYSLOG_SOCKET: &str = "/dev/log";
/// LOG_DAEMON.
const FACILITY: u8 = 3;
/// Longest message sent to syslog (busybox syslogd and logd cut around 1 KiB anyway).
const MAX_SYSLOG_MESSAGE: usize = 1000;

struct Syslog {
    socket: UnixDatagram,
    level: LevelFilter,
}

impl Log for Syslog {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            let msg = syslog_line(r.level(), std::process::id(), &r.args().to_string());
            let _ = self.socket.send(msg.as_bytes());
        }
    }
    fn flush(&self) {}
}

/// `<PRI>phonehome[PID]: message`: no timestamp (syslogd and OpenWrt's logd add the
/// receive time), control characters replaced, bounded.
pub fn syslog_line(level: Level, pid: u32, message: &str) -> String {
    let severity = match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "<{}>phonehome[{}]: {}",
        FACILITY * 8 + severity,
        pid,
        phonehome_protocol::truncate_text(&clean, MAX_SYSLOG_MESSAGE)
    )
}

/// Install the logger. `auto` is stderr on a terminal, else syslog; syslog without a
/// /dev/log falls back to stderr silently.
pub fn init(target: LogTarget, verbose: bool) {
    let level = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let want_syslog = match target {
        LogTarget::Syslog => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => !std::io::stderr().is_terminal(),
    };
    if want_syslog {
        if let Ok(socket) =
            UnixDatagram::unbound().and_then(|s| s.connect(SYSLOG_SOCKET).map(|_| s))
        {
            if log::set_boxed_logger(Box::new(Syslog { socket, level })).is_ok() {
                log::set_max_level(level);
            }
            return;
        }
    }
    let config = simplelog::ConfigBuilder::new()
        .set_time_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let _ = simplelog::WriteLogger::init(level, config, std::io::stderr());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines() {
        assert_eq!(
            syslog_line(Level::Error, 42, "poll failed"),
            "<27>phonehome[42]: poll failed"
        );
        assert_eq!(syslog_line(Level::Info, 1, "a\nb"), "<30>phonehome[1]: a b");
        assert!(syslog_line(Level::Debug, 1, &"x".repeat(5000)).len() < 1100);
    }

    #[test]
    fn datagrams_reach_a_socket() {
        let dir = phonehome_plumbing::tempdir::TempDir::new("log");
        let path = dir.join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.connect(&path).unwrap();
        let logger = Syslog {
            socket: client,
            level: LevelFilter::Info,
        };
        logger.log(
            &Record::builder()
                .level(Level::Warn)
                .args(format_args!("hello"))
                .build(),
        );
        logger.log(
            &Record::builder()
                .level(Level::Debug)
                .args(format_args!("hidden"))
                .build(),
        );
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("]: hello"));
        server.set_nonblocking(true).unwrap();
        assert!(
            server.recv(&mut buf).is_err(),
            "debug line sent at info level"
        );
    }
}
