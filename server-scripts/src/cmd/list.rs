//! `list-devices`: every device with alias, last seen (the newer of sshd's log and the
//! gate's heartbeat), source address, online / stale / offline, requested and open
//! tunnels, agent version, uptime and current error; columns for people, `--json` for
//! scripts. It names the heartbeat sources it read, says "no log data" instead of
//! guessing, never calls a device offline without a readable source, and flags the
//! case where every device went quiet at once (the server or its network is the likely
//! cause, not the devices). Every device- or log-supplied string goes through
//! `for_terminal` before it reaches the table. It only reads: listing changes nothing.

use crate::cli::{self, Out};
use crate::error::Result;
use crate::fleet::{self, Fleet, Row, Sources, State};
use crate::logscan;
use crate::paths::Paths;
use crate::say;
use phonehome_plumbing::clock::{format_iso, format_utc, push_age};
use phonehome_plumbing::text::{for_terminal, push_for_terminal};

const NAME: &str = "list-devices";
const ABOUT: &str =
    "Show every device: when it last called in (sshd's log and the gate's records), from
where, whether it is online (seen within 2 polls + 15 s), stale (within max(1 h, 10
polls)) or offline, its requested and open tunnels and what it last reported.
Logs: --log FILE (repeatable, .gz recognised), else <root>/var/log/auth.log* and
secure*, else journald (root / only); only lines of this server's own host names
(log_hosts in server.conf) count.";

/// Longest device-supplied text in a table cell.
const MAX_CELL: usize = 60;

pub fn run(args: &[String], out: &mut Out) -> Result<()> {
    let mut opts = cli::base_options();
    opts.optflag("j", "json", "print JSON for scripts");
    opts.optflag(
        "",
        "prometheus",
        "print node_exporter textfile metrics (device up, last seen, tunnels, agent)",
    );
    cli::log_option(&mut opts);
    opts.optflag(
        "",
        "no-cache",
        "read every log whole, without the cursors of earlier runs (and keep none)",
    );
    let Some(m) = cli::parse(out, NAME, &opts, args, "list-devices [OPTIONS]", ABOUT)? else {
        return Ok(());
    };
    let paths = Paths::resolve(m.opt_str("root").as_deref())?;
    let explicit = fleet::explicit_logs(&m.opt_strs("log"))?;
    let fleet = fleet::read(&paths, &explicit, !m.opt_present("no-cache"))?;
    if m.opt_present("prometheus") {
        let text = crate::metrics::render(&crate::metrics::snapshot(&paths, &fleet), None);
        return out.text(&text);
    }
    let Fleet {
        devices,
        src,
        mut rows,
        removed,
    } = fleet;
    rows.extend(removed);
    let future = devices
        .iter()
        .filter(|d| matches!(fleet::log_login(&src, d), Some(Err(()))))
        .count();
    let notes = notes(&paths, &src, &rows, future);
    let mut sources = vec!["gate records".to_string()];
    sources.extend(src.scan.read.iter().cloned());
    let printed = if m.opt_present("json") {
        print_json(out, &rows, &sources, &notes, src.now)
    } else {
        print_table(out, &rows, src.now).and_then(|()| {
            say!(out, "heartbeat sources: {}", sources.join(", "))?;
            for n in &notes {
                say!(out, "note: {}", n)?;
            }
            Ok(())
        })
    };
    // The process ends here: freeing a large fleet's rows, accounts and log findings
    // one allocation at a time took longer than printing them.
    std::mem::forget((devices, src, rows));
    printed
}

/// The requests of a row as `local:remote`.
fn requested(r: &Row) -> Vec<String> {
    r.requests.iter().map(|q| q.pair().to_string()).collect()
}

/// `future`: devices whose only logins in the log are dated in the future.
fn notes(paths: &Paths, src: &Sources, rows: &[Row], future: usize) -> Vec<String> {
    let scan = &src.scan;
    let mut notes = Vec::new();
    if !src.gate_writable {
        notes.push(format!(
            "the disk holding {} is full: the gate cannot record heartbeats, so they may be missing",
            paths.state().display()
        ));
    }
    if scan.read.is_empty() {
        let tried = if scan.failed.is_empty() {
            "no sshd log was found".to_string()
        } else {
            format!("no sshd log could be read ({})", scan.failed.join("; "))
        };
        notes.push(format!(
            "no log data: {}; heartbeats come from the gate's records only (to add sshd's log: install rsyslog for /var/log/auth.log, or pass --log FILE)",
            for_terminal(&tried, 400)
        ));
    } else {
        for f in &scan.failed {
            notes.push(format!("could not read {}", for_terminal(f, 200)));
        }
    }
    if scan.hits.skipped_long > 0 {
        notes.push(format!(
            "{} over-long log line(s) skipped",
            scan.hits.skipped_long
        ));
    }
    if scan.hits.skipped_foreign > 0 {
        notes.push(format!(
            "{} device login(s) logged by other hosts ignored (this server logs as: {}; set log_hosts in {} if that is wrong)",
            scan.hits.skipped_foreign,
            src.conf.log_hosts.join(" "),
            paths.conf().display()
        ));
    }
    if future > 0 {
        notes.push(format!(
            "{} device(s) have only logins dated more than {} s in the future in the log: ignored",
            future,
            logscan::MAX_CLOCK_SKEW_SECS
        ));
    }
    if let Some(w) = all_went_quiet(rows, src.conf.online_window(), src.now) {
        notes.push(w);
    }
    notes
}

/// Every device went quiet within one poll window of each other: the server or its
/// network is the likely cause.
pub fn all_went_quiet_times(last_seen: &[i64], window: i64, now: i64) -> Option<(i64, i64)> {
    if last_seen.len() < 2 || last_seen.iter().any(|t| now - t <= window) {
        return None;
    }
    let (lo, hi) = (*last_seen.iter().min()?, *last_seen.iter().max()?);
    (hi - lo <= window).then_some((lo, hi))
}

fn all_went_quiet(rows: &[Row], window: i64, now: i64) -> Option<String> {
    let active: Vec<&Row> = rows.iter().filter(|r| r.state != State::Removed).collect();
    if active.iter().any(|r| r.last_seen.is_none()) {
        return None;
    }
    let times: Vec<i64> = active.iter().filter_map(|r| r.last_seen).collect();
    let (lo, hi) = all_went_quiet_times(&times, window, now)?;
    Some(format!(
        "all {} devices stopped calling in at the same time ({} to {}): the server, its sshd or its network is the likely cause, not the devices",
        times.len(),
        format_utc(lo),
        format_utc(hi)
    ))
}

/// The table's cells, every row's one after another in one string, and the widest
/// cell of each column: 10,000 rows of ten `String`s, each allocated and freed, had cost
/// more than reading the fleet.
struct Table {
    text: String,
    /// Where each cell ends in `text`, and its width in characters.
    ends: Vec<(usize, usize)>,
    widths: Vec<usize>,
}

impl Table {
    fn new(columns: usize) -> Table {
        Table {
            text: String::new(),
            ends: Vec::new(),
            widths: vec![0; columns],
        }
    }

    /// Add the next cell, written by `write` (an empty cell reads `-`).
    fn cell(&mut self, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        if self.text.len() == start {
            self.text.push('-');
        }
        let width = self.text[start..].chars().count();
        let column = self.ends.len() % self.widths.len();
        self.widths[column] = self.widths[column].max(width);
        self.ends.push((self.text.len(), width));
    }

    fn text_cell(&mut self, s: &str) {
        self.cell(|t| t.push_str(s));
    }

    /// A cell of device-supplied text, made terminal-safe.
    fn safe_cell(&mut self, s: &str) {
        self.cell(|t| push_for_terminal(t, s, MAX_CELL));
    }

    /// The rows, padded, each given to `line` without trailing spaces.
    fn lines(&self, mut line: impl FnMut(&str) -> Result<()>) -> Result<()> {
        let columns = self.widths.len();
        let mut out = String::new();
        let mut start = 0;
        for row in self.ends.chunks(columns) {
            out.clear();
            for (c, &(end, width)) in row.iter().enumerate() {
                if c > 0 {
                    out.push_str("  ");
                }
                out.push_str(&self.text[start..end]);
                start = end;
                let mut pad = self.widths[c] - width;
                while pad > 0 {
                    let n = pad.min(SPACES.len());
                    out.push_str(&SPACES[..n]);
                    pad -= n;
                }
            }
            line(out.trim_end())?;
        }
        Ok(())
    }
}

const SPACES: &str = "                                ";

/// Append `items` joined by commas.
fn push_joined<T: std::fmt::Display>(t: &mut String, items: impl Iterator<Item = T>) {
    use std::fmt::Write;
    for (i, x) in items.enumerate() {
        if i > 0 {
            t.push(',');
        }
        let _ = write!(t, "{}", x);
    }
}

/// The cells of a row; every device-supplied string made terminal-safe.
fn cells(table: &mut Table, r: &Row, now: i64) {
    use std::fmt::Write;
    let rep = r.report.as_ref().map(|s| &s.report);
    table.text_cell(r.id.as_str());
    table.text_cell(r.alias.as_deref().unwrap_or(""));
    table.text_cell(r.state.as_str());
    table.cell(|t| {
        if let Some(s) = r.last_seen {
            push_age(t, now - s)
        }
    });
    table.safe_cell(r.from.as_deref().unwrap_or(""));
    table.cell(|t| push_joined(t, r.requests.iter().map(|q| q.pair())));
    table.cell(|t| push_joined(t, r.open.iter()));
    table.safe_cell(rep.map_or("", |r| r.agent_version.as_str()));
    table.cell(|t| {
        if let Some(u) = rep.and_then(|r| r.uptime_secs) {
            let _ = write!(t, "{}h", u / 3600);
        }
    });
    table.safe_cell(r.error.as_deref().unwrap_or(""));
}

fn print_table(out: &mut Out, rows: &[Row], now: i64) -> Result<()> {
    let header = [
        "DEVICE",
        "ALIAS",
        "STATE",
        "LAST SEEN",
        "FROM",
        "REQUESTED",
        "OPEN",
        "AGENT",
        "UPTIME",
        "LAST ERROR",
    ];
    let mut table = Table::new(header.len());
    for h in header {
        table.text_cell(h);
    }
    for r in rows {
        cells(&mut table, r, now);
    }
    table.lines(|line| say!(out, "{}", line))?;
    if rows.is_empty() {
        say!(out, "(no devices: add one with add-device)")?;
    }
    Ok(())
}

fn print_json(
    out: &mut Out,
    rows: &[Row],
    sources: &[String],
    notes: &[String],
    now: i64,
) -> Result<()> {
    let devices: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "alias": r.alias, "state": r.state.as_str(),
                "last_seen": r.last_seen.map(format_iso), "last_seen_unix": r.last_seen,
                "age_secs": r.last_seen.map(|t| (now - t).max(0)), "seen_by": r.seen_by, "from": r.from,
                "requested": requested(r), "open": r.open,
                "report": r.report.as_ref().map(|s| &s.report),
                "report_received": r.report.as_ref().map(|s| format_iso(s.received)),
                "last_error": r.error,
                "previous_poll_error": r.report.as_ref().and_then(|s| s.report.last_error.clone()),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "now": format_iso(now), "devices": devices, "sources": sources, "notes": notes,
    });
    say!(
        out,
        "{}",
        serde_json::to_string_pretty(&doc).expect("JSON always serialises")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_at_once_detection() {
        let now = 100_000;
        assert!(all_went_quiet_times(&[now - 5000, now - 5010, now - 4990], 135, now).is_some());
        assert!(
            all_went_quiet_times(&[now - 5000, now - 9000], 135, now).is_none(),
            "spread out"
        );
        assert!(
            all_went_quiet_times(&[now - 5000, now - 10], 135, now).is_none(),
            "one online"
        );
        assert!(
            all_went_quiet_times(&[now - 5000], 135, now).is_none(),
            "one device"
        );
    }
}
