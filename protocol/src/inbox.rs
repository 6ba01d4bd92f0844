//! The inbox: the gate's answer to a poll, one `local:remote` request per line, as in
//! ET Phone Home. The grammar is deliberately tiny and strict: a line the agent does
//! not understand exactly is reported back and skipped, never guessed at, and nothing
//! in it ever reaches a shell or an ssh option.
//!
//! Since protocol 2 the answer is framed: a first line `phonehome-inbox 2` that says
//! the gate itself answered (an sshd that lets an unknown account log in some other
//! way, or a password prompt a client gives up on, produces no such line), the
//! request lines, and a last line `end` that says nothing was cut off.
//! A report with protocol 1 (an older agent) gets the bare lines it knows.
//!
//! Protocol 3 adds the held session (`session.rs` has the other direction): the first
//! frame's header may say `phonehome-inbox 3 hold=SECS`, and then more frames follow on
//! the same stdout, each the whole request set again (never a difference: a frame is
//! enough on its own), until the gate ends the session. [`parse_frame`] takes them one
//! at a time from a stream; [`parse_answer`] takes a whole classic answer.

use crate::{
    Invalid, HOLD_PROTOCOL, MAX_HOLD_SECS, MAX_INBOX_BYTES, MAX_INBOX_LINE, MAX_REQUESTS,
    PROTOCOL_VERSION,
};
use phonehome_plumbing::text::quoted;
use std::fmt;

/// The first word of a framed answer; the protocol version follows it.
pub const ANSWER_HEADER: &str = "phonehome-inbox";
/// The last line of a framed answer.
pub const ANSWER_END: &str = "end";
/// The header's attribute that grants a held session (`hold=SECS`, protocol 3).
pub const HOLD_ATTRIBUTE: &str = "hold=";
/// The oldest framed protocol an agent of this version still reads.
pub const OLDEST_FRAMED: u32 = 2;
/// Longest header line considered (a real one is under 32 bytes).
const MAX_HEADER_LINE: usize = 64;

/// One tunnel request: the device's `local` port reachable as the server's loopback
/// port `remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortPair {
    pub local: u16,
    pub remote: u16,
}

impl PortPair {
    /// Parse `local:remote` exactly: two ports, one colon, nothing around them.
    pub fn parse(s: &str) -> Result<PortPair, Invalid> {
        let (l, r) = s.split_once(':').ok_or_else(|| {
            Invalid(format!(
                "invalid port pair {}: expected LOCAL:REMOTE, e.g. 22:9876",
                shown(s)
            ))
        })?;
        let with_pair = |e: Invalid| Invalid(format!("invalid port pair {}: {}", shown(s), e));
        Ok(PortPair {
            local: parse_port(l).map_err(with_pair)?,
            remote: parse_port(r).map_err(with_pair)?,
        })
    }
}

impl fmt::Display for PortPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.local, self.remote)
    }
}

/// A TCP port written in canonical decimal: 1–65535, digits only, no sign, no spaces,
/// no leading zero (so that `022` cannot be read as octal by anyone downstream).
pub fn parse_port(s: &str) -> Result<u16, Invalid> {
    let canonical = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0');
    match s.parse::<u32>() {
        Ok(n) if canonical && (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(Invalid(format!(
            "invalid port {}: expected a number from 1 to 65535 without leading zeros",
            shown(s)
        ))),
    }
}

/// A line of the inbox that was not honoured, and why (1-based line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for RejectedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inbox line {}: {}", self.line, self.reason)
    }
}

/// What the agent takes from an inbox: the requests to honour and the lines refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbox {
    pub requests: Vec<PortPair>,
    pub rejected: Vec<RejectedLine>,
}

/// Parse the gate's answer. Never fails: every line is either a request or a
/// rejection. Limits: `MAX_INBOX_BYTES` in all (the rest is ignored and reported),
/// `MAX_INBOX_LINE` per line, `MAX_REQUESTS` requests; a remote port may appear once.
pub fn parse_inbox(data: &[u8]) -> Inbox {
    let mut inbox = Inbox::default();
    let (data, truncated) = if data.len() > MAX_INBOX_BYTES {
        (&data[..MAX_INBOX_BYTES], true)
    } else {
        (data, false)
    };
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    if data.is_empty() && !truncated {
        return inbox;
    }
    let mut lines = data.split(|b| *b == b'\n').enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let line = i + 1;
        let last_and_cut = truncated && lines.peek().is_none();
        if last_and_cut {
            break;
        }
        match check_line(raw, &inbox.requests) {
            Ok(pair) => inbox.requests.push(pair),
            Err(reason) => inbox.rejected.push(RejectedLine { line, reason }),
        }
    }
    if truncated {
        inbox.rejected.push(RejectedLine {
            line: data.split(|b| *b == b'\n').count(),
            reason: format!(
                "inbox larger than {} bytes: the rest was ignored",
                MAX_INBOX_BYTES
            ),
        });
    }
    inbox
}

fn check_line(raw: &[u8], accepted: &[PortPair]) -> Result<PortPair, String> {
    if raw.len() > MAX_INBOX_LINE {
        return Err(format!("longer than {} bytes", MAX_INBOX_LINE));
    }
    if raw.is_empty() {
        return Err("empty line".into());
    }
    if raw.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    if raw.ends_with(b"\r") {
        return Err("ends with a carriage return (CRLF line ending)".into());
    }
    if raw.starts_with("\u{feff}".as_bytes()) {
        return Err("starts with a byte order mark".into());
    }
    let text = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_string())?;
    let pair = PortPair::parse(text).map_err(|e| e.0)?;
    if let Some(dup) = accepted.iter().find(|p| p.remote == pair.remote) {
        return Err(if *dup == pair {
            format!("duplicate request {}", pair)
        } else {
            format!("remote port {} already requested as {}", pair.remote, dup)
        });
    }
    if accepted.len() >= MAX_REQUESTS {
        return Err(format!("more than {} requests", MAX_REQUESTS));
    }
    Ok(pair)
}

/// The gate's side, protocol 1: one `local:remote` line per request.
pub fn render_inbox(requests: &[PortPair]) -> String {
    requests.iter().map(|p| format!("{}\n", p)).collect()
}

/// The gate's side, protocol 2: header, requests, end marker.
pub fn render_answer(requests: &[PortPair]) -> String {
    render_frame(2, None, requests)
}

/// The gate's side: one frame of `version` (2 or more), the first frame of a held
/// session carrying its `hold` (protocol 3 and later only).
pub fn render_frame(version: u32, hold: Option<u64>, requests: &[PortPair]) -> String {
    let hold = match hold {
        Some(secs) if version >= HOLD_PROTOCOL => format!(" {}{}", HOLD_ATTRIBUTE, secs),
        _ => String::new(),
    };
    format!(
        "{} {}{}\n{}{}\n",
        ANSWER_HEADER,
        version,
        hold,
        render_inbox(requests),
        ANSWER_END
    )
}

/// One frame of the gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The protocol of its header (2, or 3 from a gate that can hold).
    pub version: u32,
    /// The first frame of a held session: how long the gate keeps it open (seconds).
    pub hold: Option<u64>,
    pub inbox: Inbox,
}

/// Why an answer is not one the gate gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// No `phonehome-inbox` first line: something other than the gate answered.
    NotFromGate,
    /// A gate speaking another protocol version.
    Version(String),
    /// No `end` line: the answer was cut off.
    Unterminated,
    /// A header of a known version with something else on it (a hold attribute that
    /// is not `hold=SECS` within the limits, or one on a protocol 2 frame).
    BadHeader(String),
    /// Bytes between two frames of a held session that start no frame.
    BetweenFrames(String),
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::NotFromGate => {
                write!(f, "the answer did not come from the phonehome gate")
            }
            AnswerError::Version(v) => write!(
                f,
                "the gate speaks protocol {} and this agent {}",
                v, PROTOCOL_VERSION
            ),
            AnswerError::Unterminated => write!(f, "the gate's answer was cut off (no end line)"),
            AnswerError::BadHeader(h) => write!(f, "the gate's answer has a bad header {}", h),
            AnswerError::BetweenFrames(b) => {
                write!(f, "the gate sent {} between two frames", b)
            }
        }
    }
}

/// The header line: its version and hold, or why it is none of ours.
fn parse_header(line: &[u8]) -> Result<(u32, Option<u64>), AnswerError> {
    let line = std::str::from_utf8(line).map_err(|_| AnswerError::NotFromGate)?;
    let rest = line
        .strip_prefix(ANSWER_HEADER)
        .and_then(|v| v.strip_prefix(' '))
        .ok_or(AnswerError::NotFromGate)?;
    let (version, attribute) = match rest.split_once(' ') {
        Some((v, a)) => (v, Some(a)),
        None => (rest, None),
    };
    let known = version
        .parse::<u32>()
        .ok()
        .filter(|v| (OLDEST_FRAMED..=PROTOCOL_VERSION).contains(v) && *v.to_string() == *version)
        .ok_or_else(|| AnswerError::Version(quoted(version, 16)))?;
    let hold = match attribute {
        None => None,
        Some(a) => Some(
            a.strip_prefix(HOLD_ATTRIBUTE)
                .filter(|_| known >= HOLD_PROTOCOL)
                .and_then(parse_secs)
                .filter(|n| (1..=MAX_HOLD_SECS).contains(n))
                .ok_or_else(|| AnswerError::BadHeader(quoted(line, 48)))?,
        ),
    };
    Ok((known, hold))
}

/// Seconds in canonical decimal (digits only, no leading zero), as ports are.
fn parse_secs(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 9
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0');
    canonical.then(|| s.parse().ok()).flatten()
}

/// Length of the body before the first `end` line of `rest` (what follows a header),
/// if there is one.
fn body_len(rest: &[u8]) -> Option<usize> {
    let end = format!("{}\n", ANSWER_END);
    if rest.starts_with(end.as_bytes()) {
        return Some(0);
    }
    let marker = format!("\n{}", end);
    rest.windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .map(|i| i + 1)
}

/// Take one frame from the start of `data` (a held session's stdout as it arrives):
/// `Ok(None)` while it is still incomplete, else the frame and how many bytes it took.
/// What does not start with a header is an error at once, however little has come.
pub fn parse_frame(data: &[u8]) -> Result<Option<(Frame, usize)>, AnswerError> {
    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
        let prefix = format!("{} ", ANSWER_HEADER);
        let could_be = data.len() < MAX_HEADER_LINE
            && (prefix.as_bytes().starts_with(data) || data.starts_with(prefix.as_bytes()));
        return if could_be {
            Ok(None)
        } else {
            Err(AnswerError::NotFromGate)
        };
    };
    let (version, hold) = parse_header(&data[..nl])?;
    let rest = &data[nl + 1..];
    let Some(body) = body_len(rest) else {
        return Ok(None);
    };
    let frame = Frame {
        version,
        hold,
        inbox: parse_inbox(&rest[..body]),
    };
    Ok(Some((frame, nl + 1 + body + ANSWER_END.len() + 1)))
}

/// Parse a whole framed answer (protocol 2 or 3, not held): its requests and refused
/// lines. Bytes after the end line are reported and ignored.
pub fn parse_answer(data: &[u8]) -> Result<Inbox, AnswerError> {
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or(data);
    parse_header(first_line)?;
    let (frame, used) = parse_frame(data)?.ok_or(AnswerError::Unterminated)?;
    let mut inbox = frame.inbox;
    let after = data.len() - used;
    if after > 0 {
        inbox.rejected.push(RejectedLine {
            line: 0,
            reason: format!("{} bytes after the end line were ignored", after),
        });
    }
    Ok(inbox)
}

/// A user-supplied value quoted for an error message, escaped and cut short so that
/// control characters and floods never reach a terminal or a log verbatim.
fn shown(s: &str) -> String {
    quoted(s, 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(local: u16, remote: u16) -> PortPair {
        PortPair { local, remote }
    }

    #[test]
    fn ports_are_canonical_decimal() {
        assert_eq!(parse_port("1"), Ok(1));
        assert_eq!(parse_port("22"), Ok(22));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in [
            "", "0", "65536", "99999", "022", "00022", "+22", "-1", " 22", "22 ", "2 2", "0x16",
            "22.0", "٢٢", "100000",
        ] {
            assert!(parse_port(bad).is_err(), "{:?} accepted", bad);
        }
    }

    #[test]
    fn pair_grammar() {
        assert_eq!(PortPair::parse("22:9876"), Ok(pair(22, 9876)));
        assert_eq!(pair(22, 9876).to_string(), "22:9876");
        for bad in [
            "22",
            "22:",
            ":9876",
            "22:9876:1",
            "22::9876",
            " 22:9876",
            "22 :9876",
            "a:b",
        ] {
            assert!(PortPair::parse(bad).is_err(), "{:?} accepted", bad);
        }
        let e = PortPair::parse("22:0").unwrap_err().to_string();
        assert!(e.contains("\"22:0\"") && e.contains("1 to 65535"), "{}", e);
    }

    #[test]
    fn empty_inbox_means_no_requests() {
        assert_eq!(parse_inbox(b""), Inbox::default());
        assert_eq!(parse_inbox(b"\n"), Inbox::default());
        assert_eq!(
            parse_inbox(b"\n\n").rejected.len(),
            2,
            "both blank lines are reported"
        );
    }

    #[test]
    fn good_lines_are_requests_in_order() {
        let inbox = parse_inbox(b"22:9876\n80:8765\n");
        assert_eq!(inbox.requests, vec![pair(22, 9876), pair(80, 8765)]);
        assert!(inbox.rejected.is_empty());
        // The final newline is optional.
        assert_eq!(parse_inbox(b"22:9876").requests, vec![pair(22, 9876)]);
        assert_eq!(parse_inbox(render_inbox(&inbox.requests).as_bytes()), inbox);
    }

    #[test]
    fn hostile_lines_are_reported_never_honoured() {
        let data: &[u8] = b"22:9876\r\n\xef\xbb\xbf80:8080\n22:98\x0076\n\xff\xfe:1\n22:9876\n23:9876\n\
                            22:9876 -oProxyCommand=sh\n22:9876;reboot\n$(reboot):1\n-R1:2\n\n443:9443\n";
        let inbox = parse_inbox(data);
        assert_eq!(inbox.requests, vec![pair(22, 9876), pair(443, 9443)]);
        let reasons: Vec<(usize, &str)> = inbox
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 10, "{:#?}", reasons);
        assert!(reasons[0].1.contains("carriage return"));
        assert!(reasons[1].1.contains("byte order mark"));
        assert!(reasons[2].1.contains("NUL"));
        assert!(reasons[3].1.contains("UTF-8"));
        // Line 5 is the first valid 22:9876 (line 1 had a CR): accepted.
        assert_eq!(
            reasons[4],
            (6, "remote port 9876 already requested as 22:9876")
        );
        assert_eq!(reasons[9], (11, "empty line"));
    }

    #[test]
    fn duplicate_is_reported() {
        let inbox = parse_inbox(b"22:9876\n22:9876\n");
        assert_eq!(inbox.requests.len(), 1);
        assert_eq!(inbox.rejected[0].reason, "duplicate request 22:9876");
        assert_eq!(inbox.rejected[0].line, 2);
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("{}\n22:9876\n", "1".repeat(MAX_INBOX_LINE + 1));
        let inbox = parse_inbox(long.as_bytes());
        assert_eq!(inbox.requests, vec![pair(22, 9876)]);
        assert!(inbox.rejected[0].reason.starts_with("longer than"));

        let many: String = (0..MAX_REQUESTS as u16 + 3)
            .map(|i| format!("22:{}\n", 10000 + i))
            .collect();
        let inbox = parse_inbox(many.as_bytes());
        assert_eq!(inbox.requests.len(), MAX_REQUESTS);
        assert_eq!(inbox.rejected.len(), 3);

        let huge = "22:9876\n".repeat(MAX_INBOX_BYTES);
        let inbox = parse_inbox(huge.as_bytes());
        assert_eq!(inbox.requests, vec![pair(22, 9876)]);
        assert!(inbox
            .rejected
            .last()
            .unwrap()
            .reason
            .contains("rest was ignored"));
    }

    #[test]
    fn framed_answers() {
        let reqs = [pair(22, 9876), pair(80, 8080)];
        let text = render_answer(&reqs);
        assert_eq!(text, "phonehome-inbox 2\n22:9876\n80:8080\nend\n");
        assert_eq!(parse_answer(text.as_bytes()).unwrap().requests, reqs);
        let v3 = render_frame(3, None, &reqs);
        assert_eq!(v3, "phonehome-inbox 3\n22:9876\n80:8080\nend\n");
        assert_eq!(parse_answer(v3.as_bytes()).unwrap().requests, reqs);
        let empty = render_answer(&[]);
        assert_eq!(parse_answer(empty.as_bytes()).unwrap(), Inbox::default());
        // Threat 34: what an sshd answers without the gate, or a client that gave up.
        for other in [
            &b""[..],
            b"\n",
            b"22:9876\n",
            b"Welcome!\n",
            b"phonehome-inbox\n",
        ] {
            assert_eq!(
                parse_answer(other),
                Err(AnswerError::NotFromGate),
                "{:?}",
                other
            );
        }
        for (v, shown) in [
            ("9", "\"9\""),
            ("1", "\"1\""),
            ("03", "\"03\""),
            ("+3", "\"+3\""),
        ] {
            assert_eq!(
                parse_answer(format!("phonehome-inbox {}\nend\n", v).as_bytes()),
                Err(AnswerError::Version(shown.into()))
            );
        }
        let cut = "phonehome-inbox 2\n22:9876\n80:80";
        assert_eq!(parse_answer(cut.as_bytes()), Err(AnswerError::Unterminated));
        let trailing = format!("{}junk\n", empty);
        let inbox = parse_answer(trailing.as_bytes()).unwrap();
        assert!(inbox.requests.is_empty());
        assert!(inbox.rejected[0].reason.contains("after the end line"));
        // Hostile lines inside a frame are refused as before.
        let hostile = "phonehome-inbox 3\n22:9876;reboot\nend\n";
        assert_eq!(parse_answer(hostile.as_bytes()).unwrap().rejected.len(), 1);
    }

    #[test]
    fn held_frames_come_one_at_a_time() {
        let first = render_frame(3, Some(55), &[pair(22, 9876)]);
        assert_eq!(first, "phonehome-inbox 3 hold=55\n22:9876\nend\n");
        let second = render_frame(3, None, &[]);
        let stream = format!("{}{}", first, second);
        // Every prefix short of a whole frame is incomplete, never an error.
        for cut in 0..first.len() {
            assert_eq!(
                parse_frame(&stream.as_bytes()[..cut]),
                Ok(None),
                "cut at {}",
                cut
            );
        }
        let (f, used) = parse_frame(stream.as_bytes()).unwrap().unwrap();
        assert_eq!(used, first.len());
        assert_eq!((f.version, f.hold), (3, Some(55)));
        assert_eq!(f.inbox.requests, [pair(22, 9876)]);
        let (f, used) = parse_frame(&stream.as_bytes()[used..]).unwrap().unwrap();
        assert_eq!((f.version, f.hold, used), (3, None, second.len()));
        assert!(f.inbox.requests.is_empty());
        // A frame of protocol 2 (an older gate) is read as such.
        let (f, _) = parse_frame(render_answer(&[pair(1, 2)]).as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!((f.version, f.hold), (2, None));
        // render_frame never puts a hold on a protocol 2 frame.
        assert_eq!(render_frame(2, Some(9), &[]), "phonehome-inbox 2\nend\n");
    }

    #[test]
    fn threat_45_hostile_frames_are_refused() {
        for bad in [
            "phonehome-inbox 2 hold=55\nend\n",
            "phonehome-inbox 3 hold=0\nend\n",
            "phonehome-inbox 3 hold=055\nend\n",
            "phonehome-inbox 3 hold=3601\nend\n",
            "phonehome-inbox 3 hold=55 more\nend\n",
            "phonehome-inbox 3 hold=\nend\n",
            "phonehome-inbox 3 hold=-1\nend\n",
            "phonehome-inbox 3 keep=55\nend\n",
            "phonehome-inbox 3  hold=55\nend\n",
        ] {
            assert!(
                matches!(parse_frame(bad.as_bytes()), Err(AnswerError::BadHeader(_))),
                "{:?}: {:?}",
                bad,
                parse_frame(bad.as_bytes())
            );
        }
        // Something that cannot become a header is refused before its line ends.
        assert_eq!(parse_frame(b"22:9876"), Err(AnswerError::NotFromGate));
        assert_eq!(
            parse_frame(b"phonehome-inboX"),
            Err(AnswerError::NotFromGate)
        );
        let long = "phonehome-inbox 3".to_string() + &" ".repeat(100);
        assert_eq!(parse_frame(long.as_bytes()), Err(AnswerError::NotFromGate));
        assert_eq!(parse_frame(b"phonehome-in"), Ok(None));
        // `end` inside a frame ends it: the rest is the next frame's problem.
        let (f, used) = parse_frame(b"phonehome-inbox 3\n22:9876\nend\n80:80\nend\n")
            .unwrap()
            .unwrap();
        assert_eq!((f.inbox.requests.len(), used), (1, 30));
        assert_eq!(parse_frame(b"80:80\nend\n"), Err(AnswerError::NotFromGate));
    }

    #[test]
    fn errors_escape_what_they_quote() {
        let e = PortPair::parse("22:\u{1b}[2J").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{}", e);
        let e = parse_port(&"9".repeat(100)).unwrap_err().to_string();
        assert!(e.len() < 160, "{}", e);
    }
}
