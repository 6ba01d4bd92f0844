//! The held session, the agent's side (protocol 3). The once-a-minute login stays; the
//! agent offers to keep it open until its next tick (`offer`), and when the gate grants
//! it (`phonehome-inbox 3 hold=SECS`), it keeps reading frames: each is the whole
//! request set, reconciled at once, so a tunnel starts within a second of the admin's
//! request. What happens to each tunnel goes back over the same session as outcome
//! lines (starting, failed with the client's own words, stopped), and a tunnel that
//! dies meanwhile is reported the moment its pidfd says so; it is restarted at the next
//! frame or tick, as before.
//!
//! The session ends when the next tick asks (`rundir::END_HOLD_SIGNAL`: one login, one
//! heartbeat a minute, never two sessions), when the gate ends it, or past the granted
//! hold and `HOLD_GRACE_SECS`; a gate that breaks the framing or sends more than
//! `MAX_HELD_FRAMES` frames is cut off. An older gate, which reads the report until the
//! end of stdin, gets its end of stdin after `answer_wait` and answers as it always did;
//! the agent remembers (`LastPoll::gate_protocol`) and stops offering.

use crate::config::Settings;
use crate::last_poll::LastPoll;
use crate::report::clean;
use crate::rundir::{self, RunDir, END_HOLD_SIGNAL};
use crate::ssh::{PollError, PollSession};
use crate::tunnels;
use phonehome_plumbing::process::{self, Event, Handle};
use phonehome_plumbing::watch;
use phonehome_protocol::{
    parse_frame, AnswerError, Frame, Inbox, Outcome, OutcomeState, PortPair, HOLD_ANSWER_WAIT_SECS,
    HOLD_GRACE_SECS, HOLD_PROTOCOL, MAX_HELD_FRAMES, MAX_HOLD_SECS, MIN_HOLD_SECS,
};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the client gets to end once stdin is closed at the end of a held session.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often tunnels are looked at where the kernel has no pidfds to wait on.
const NO_PIDFD_LOOK: Duration = Duration::from_secs(1);

/// The seconds this poll offers to hold its session: what is left of the interval
/// since the tick started, if holding is on, at least `MIN_HOLD_SECS` is left, and the
/// gate last seen is not one that cannot hold.
pub fn offer(settings: &Settings, previous: Option<&LastPoll>, tick: Instant) -> Option<u64> {
    if !settings.hold {
        return None;
    }
    if previous
        .and_then(|p| p.gate_protocol)
        .is_some_and(|v| v < HOLD_PROTOCOL)
    {
        return None;
    }
    let left = settings.interval.saturating_sub(tick.elapsed().as_secs());
    (left >= MIN_HOLD_SECS).then_some(left.min(MAX_HOLD_SECS))
}

/// Why no first frame came.
pub enum FirstError {
    /// The login or the client failed.
    Ssh(PollError),
    /// Something answered that is not the gate, or not all of it.
    Answer(AnswerError),
}

/// How long an agent that offered a hold waits for the first frame before it closes
/// stdin: `HOLD_ANSWER_WAIT_SECS`, or half the poll's timeout if that is shorter (the
/// login must not be killed before an older gate has had its end of stdin).
pub fn answer_wait(timeout: Duration) -> Duration {
    Duration::from_secs(HOLD_ANSWER_WAIT_SECS).min(timeout / 2)
}

/// The gate's first frame. `offered`: stdin was left open for a hold; when nothing has
/// come after `wait` (`answer_wait`), the gate reads until the end of stdin (it is
/// older than protocol 3), so stdin is closed and the answer still comes. The session
/// comes back when the frame grants a hold; else it is finished here.
pub fn first_frame(
    mut s: PollSession,
    offered: bool,
    wait: Duration,
) -> Result<(Frame, Option<PollSession>), FirstError> {
    let close_at = Instant::now() + wait;
    let far = Instant::now() + Duration::from_secs(MAX_HOLD_SECS);
    loop {
        match parse_frame(s.stdout()) {
            Ok(Some((frame, used))) => {
                s.stdout().drain(..used);
                if frame.hold.is_some() && offered {
                    return Ok((frame, Some(s)));
                }
                return finish_after(s, frame);
            }
            Ok(None) => {}
            Err(e) => return Err(fail(s, e)),
        }
        let until = if offered && s.stdin_open() {
            close_at
        } else {
            far
        };
        match s.wait(until, &[]).map_err(FirstError::Ssh)? {
            Event::Timeout if s.stdin_open() => {
                log::debug!(
                    "no answer within {:?}: the gate reads until the end of stdin (older than protocol {}); closing it",
                    wait,
                    HOLD_PROTOCOL
                );
                s.close_stdin();
            }
            Event::Done => {
                if let Ok(Some(_)) = parse_frame(s.stdout()) {
                    continue;
                }
                let rest = s.finish().map_err(FirstError::Ssh)?;
                let e = match phonehome_protocol::parse_answer(&rest) {
                    Err(e) => e,
                    Ok(_) => AnswerError::Unterminated,
                };
                return Err(FirstError::Answer(e));
            }
            _ => {}
        }
    }
}

/// A frame without a hold: the client ends; bytes after the frame are reported.
fn finish_after(
    s: PollSession,
    mut frame: Frame,
) -> Result<(Frame, Option<PollSession>), FirstError> {
    let rest = s.finish().map_err(FirstError::Ssh)?;
    if !rest.is_empty() {
        frame.inbox.rejected.push(phonehome_protocol::RejectedLine {
            line: 0,
            reason: format!("{} bytes after the end line were ignored", rest.len()),
        });
    }
    Ok((frame, None))
}

/// The answer is not the gate's: but a failed login says more, so it comes first.
fn fail(s: PollSession, e: AnswerError) -> FirstError {
    let mut s = s;
    s.close_stdin();
    s.set_deadline(Instant::now() + CLOSE_GRACE);
    match s.finish() {
        Err(p @ PollError::Failed(_)) => FirstError::Ssh(p),
        _ => FirstError::Answer(e),
    }
}

/// Why a held session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The hold granted (and its grace) is over.
    TimeUp,
    /// The next tick (or `stop`) asked.
    Asked,
    /// The gate ended it, or the connection went away.
    ByGate,
    /// The gate broke the framing, or the session could not be followed.
    Broken(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::TimeUp => f.write_str("its time was up"),
            Ended::Asked => f.write_str("the next tick asked"),
            Ended::ByGate => f.write_str("the gate ended it"),
            Ended::Broken(why) => write!(f, "cut off: {}", why),
        }
    }
}

/// What a held session did.
pub struct Summary {
    pub frames: u32,
    pub secs: u64,
    pub ended: Ended,
}

/// A tunnel the session watches, to report it the moment it dies.
struct Watched {
    pair: PortPair,
    handle: Handle,
}

/// Hold the session: `first` are the outcomes of the first frame's reconcile;
/// `on_frame` reconciles each later frame and returns its outcomes.
pub fn serve(
    mut s: PollSession,
    granted: u64,
    run: &RunDir,
    lock: &File,
    first: Vec<Outcome>,
    on_frame: &mut dyn FnMut(&Inbox) -> Vec<Outcome>,
) -> Summary {
    let started = Instant::now();
    let signal = match ask_to_end_pipe() {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("not holding the session: {}", e);
            return end(s, started, 1, Ended::Broken(e));
        }
    };
    rundir::mark(lock, true);
    let end_at = started + Duration::from_secs(granted + HOLD_GRACE_SECS);
    s.set_deadline(end_at + CLOSE_GRACE);
    log::info!("holding the session for up to {} s", granted);
    send(&mut s, &first);
    let mut watched = watch_tunnels(&mut s, run, &first);
    let mut frames = 1u32;
    let ended = loop {
        match take_frame(&mut s, &mut frames) {
            Ok(Some(frame)) => {
                let outcomes = on_frame(&frame.inbox);
                send(&mut s, &outcomes);
                watched = watch_tunnels(&mut s, run, &outcomes);
                continue;
            }
            Ok(None) => {}
            Err(why) => break Ended::Broken(why),
        }
        match wait(&mut s, &signal, &watched, end_at) {
            Ok(Woke::Output) => {}
            Ok(Woke::Asked) => break Ended::Asked,
            Ok(Woke::Died(i)) => report_death(&mut s, run, &mut watched, i),
            Ok(Woke::Look) => {
                if let Some(i) = watched.iter().position(|w| w.handle.has_exited()) {
                    report_death(&mut s, run, &mut watched, i);
                }
            }
            Ok(Woke::TimeUp) => break Ended::TimeUp,
            Ok(Woke::Done) => {
                if parse_frame(s.stdout()).is_ok_and(|f| f.is_some()) {
                    continue;
                }
                break Ended::ByGate;
            }
            Err(e) => break Ended::Broken(e.to_string()),
        }
    };
    end(s, started, frames, ended)
}

/// The pipe the end-of-hold signal writes to (installed once per process).
fn ask_to_end_pipe() -> Result<OwnedFd, String> {
    process::notify_on(END_HOLD_SIGNAL)
        .map_err(|e| format!("cannot catch the signal that ends a held session: {}", e))
}

/// The next complete frame, if one has come; an error when the gate breaks the rules.
fn take_frame(s: &mut PollSession, frames: &mut u32) -> Result<Option<Frame>, String> {
    let (frame, used) = match parse_frame(s.stdout()) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(AnswerError::NotFromGate) => {
            let out = s.stdout();
            let shown = String::from_utf8_lossy(&out[..out.len().min(32)]).into_owned();
            return Err(
                AnswerError::BetweenFrames(phonehome_plumbing::text::quoted(&shown, 32))
                    .to_string(),
            );
        }
        Err(e) => return Err(e.to_string()),
    };
    s.stdout().drain(..used);
    *frames += 1;
    if frame.hold.is_some() {
        return Err("the gate granted a hold again in the middle of a held session".into());
    }
    if *frames as usize > MAX_HELD_FRAMES {
        return Err(format!(
            "the gate sent more than {} frames in one session",
            MAX_HELD_FRAMES
        ));
    }
    log::info!(
        "held session: frame {} with {} request(s)",
        frames,
        frame.inbox.requests.len()
    );
    Ok(Some(frame))
}

/// What woke the held session.
enum Woke {
    Output,
    Asked,
    /// The watched tunnel at this index exited.
    Died(usize),
    /// Time to look at tunnels without a pidfd.
    Look,
    TimeUp,
    Done,
}

fn wait(
    s: &mut PollSession,
    signal: &OwnedFd,
    watched: &[Watched],
    end_at: Instant,
) -> Result<Woke, PollError> {
    let mut fds: Vec<BorrowedFd<'_>> = vec![signal.as_fd()];
    let mut which = Vec::new();
    for (i, w) in watched.iter().enumerate() {
        if let Some(fd) = w.handle.pidfd() {
            fds.push(fd);
            which.push(i);
        }
    }
    let look = which.len() < watched.len();
    let until = if look {
        end_at.min(Instant::now() + NO_PIDFD_LOOK)
    } else {
        end_at
    };
    Ok(match s.wait(until, &fds)? {
        Event::Output => Woke::Output,
        Event::Ready(0) => {
            let _ = watch::read_some(signal.as_fd(), 64);
            Woke::Asked
        }
        Event::Ready(i) => Woke::Died(which[i - 1]),
        Event::Timeout if Instant::now() >= end_at => Woke::TimeUp,
        Event::Timeout => Woke::Look,
        Event::Done => Woke::Done,
    })
}

/// The running tunnels, to watch; a tunnel just started (`outcomes` say starting and
/// no failure) that is not running any more died before it could be watched: said now.
fn watch_tunnels(s: &mut PollSession, run: &RunDir, outcomes: &[Outcome]) -> Vec<Watched> {
    let running = tunnels::running(run);
    let failed = |p: PortPair| {
        outcomes
            .iter()
            .any(|o| o.pair == p && o.state == OutcomeState::Failed)
    };
    for o in outcomes
        .iter()
        .filter(|o| o.state == OutcomeState::Starting)
    {
        if !failed(o.pair) && !running.iter().any(|(p, _)| *p == o.pair) {
            report_dead(s, run, o.pair, "at once");
        }
    }
    running
        .into_iter()
        .map(|(pair, handle)| Watched { pair, handle })
        .collect()
}

/// A watched tunnel died: tell the gate why, now, and stop watching it.
fn report_death(s: &mut PollSession, run: &RunDir, watched: &mut Vec<Watched>, i: usize) {
    let w = watched.remove(i);
    report_dead(s, run, w.pair, "during the held session");
}

/// Log why the tunnel of `pair` died (`when`: its moment) and send the gate that reason.
fn report_dead(s: &mut PollSession, run: &RunDir, pair: PortPair, when: &str) {
    let reason = tunnels::death_reason(run, pair);
    log::warn!("tunnel {} died {}: {}", pair, when, reason);
    send(
        s,
        &[Outcome {
            pair,
            state: OutcomeState::Failed,
            reason: Some(reason),
        }],
    );
}

/// Send outcome lines to the gate (their reasons cleaned as a report's strings are).
pub fn send(s: &mut PollSession, outcomes: &[Outcome]) {
    for o in outcomes {
        let o = Outcome {
            reason: o.reason.as_deref().map(clean),
            ..o.clone()
        };
        s.send(o.render().as_bytes());
    }
}

/// End the session: close stdin (the gate ends), give the client `CLOSE_GRACE`.
fn end(mut s: PollSession, started: Instant, frames: u32, ended: Ended) -> Summary {
    s.close_stdin();
    s.set_deadline(Instant::now() + CLOSE_GRACE);
    let secs = started.elapsed().as_secs();
    match (&ended, s.finish()) {
        (Ended::Broken(why), _) => log::warn!("held session cut off after {} s: {}", secs, why),
        (_, Err(e)) => log::warn!("held session ended after {} s: {}", secs, e),
        (_, Ok(_)) => log::info!(
            "held session ended after {} s ({} frame(s)): {}",
            secs,
            frames,
            ended
        ),
    }
    Summary {
        frames,
        secs,
        ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_gate_gets_its_end_of_stdin_before_the_poll_is_killed() {
        let d = |s| Duration::from_secs(s);
        assert_eq!(answer_wait(d(30)), d(HOLD_ANSWER_WAIT_SECS));
        assert_eq!(answer_wait(d(6)), d(3));
        assert!(answer_wait(d(1)) < d(1));
    }

    #[test]
    fn the_offer_is_what_is_left_of_the_interval() {
        let s = Settings::default();
        let now = Instant::now();
        assert_eq!(offer(&s, None, now), Some(60));
        let late = now - Duration::from_secs(50);
        assert_eq!(offer(&s, None, late), Some(10));
        let too_late = now - Duration::from_secs(57);
        assert_eq!(
            offer(&s, None, too_late),
            None,
            "less than MIN_HOLD_SECS left"
        );
        let off = Settings {
            hold: false,
            ..Settings::default()
        };
        assert_eq!(offer(&off, None, now), None);
        let old_gate = LastPoll {
            gate_protocol: Some(2),
            ..LastPoll::default()
        };
        assert_eq!(
            offer(&s, Some(&old_gate), now),
            None,
            "an older gate waits for EOF"
        );
        let new_gate = LastPoll {
            gate_protocol: Some(3),
            ..LastPoll::default()
        };
        assert_eq!(offer(&s, Some(&new_gate), now), Some(60));
    }
}
