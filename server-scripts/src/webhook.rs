//! A `webhook = URL [options]` line of server.conf: where watch-devices sends events,
//! in which format, signed with which secret, trusting which CA. Parsed strictly (an
//! error names the line and what to change) and held so that the secret parts of a URL
//! — user and password, and a path or query that often is the token itself (Slack's
//! `/services/T…/B…/…`, ntfy's topic) — never reach output or logs: `Debug` and
//! [`Url::redacted`] show scheme, host and port only.
//!
//! ```text
//! webhook = https://hooks.slack.com/services/T0/B0/XXXX format=slack
//! webhook = https://ntfy.example.org/phonehome format=ntfy
//! webhook = https://alerts.example.org/hook secret=/etc/phonehome/hook.secret ca=/etc/phonehome/ca.pem
//! webhook = http://127.0.0.1:9000/hook
//! webhook = http://alerts.lan:9000/hook insecure-http
//! ```
//! Plain `http://` is allowed to a loopback host only, unless the line says
//! `insecure-http`: events and signatures would otherwise cross the network in clear.

use crate::paths::is_safe_path;
use phonehome_plumbing::text::quoted;
use std::net::IpAddr;
use std::path::PathBuf;

/// How an event is put into the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event as JSON (`id`, `time`, `event`, `device`, `message`, `details`).
    Json,
    /// Slack's incoming webhooks: `{"text": ...}`.
    Slack,
    /// ntfy: the message as the body, `Title`, `Priority` and `Tags` headers.
    Ntfy,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::Ntfy => "ntfy",
        }
    }
}

/// A webhook URL, split. Never printed whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    https: bool,
    /// `user[:password]`, percent-encoded as written.
    userinfo: Option<String>,
    /// As written (an IPv6 address in brackets).
    host: String,
    port: Option<u16>,
    /// Path and query, starting with `/`.
    rest: String,
    /// The whole URL as written: the outbox is named after its hash.
    full: String,
}

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Characters a URL may hold as written here: printable ASCII, not those RFC 3986
/// excludes (space, quotes, angle brackets, backslash, ^, `, braces, |).
fn url_char_ok(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"\"<>\\^`{|}".contains(&b)
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(
                "the URL must start with https:// (or http:// to a loopback address)".into(),
            );
        };
        if let Some(bad) = s.bytes().find(|b| !url_char_ok(*b)) {
            return Err(format!(
                "the URL holds a character that must be percent-encoded ({})",
                quoted(&char::from(bad).to_string(), 4)
            ));
        }
        if s.contains('#') {
            return Err("the URL has a #fragment, which is never sent: remove it".into());
        }
        let cut = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(cut);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(authority[..i].to_string()), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let rest = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{}", p),
            p => p.to_string(),
        };
        Ok(Url {
            https,
            userinfo,
            host,
            port,
            rest,
            full: s.to_string(),
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host as written (brackets around an IPv6 address).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `localhost` or a loopback address: plain http stays on this machine.
    pub fn is_loopback(&self) -> bool {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
    }

    /// What may be shown: `https://host:port/…` (no user, password, path or query).
    pub fn redacted(&self) -> String {
        let port = self.port.map(|p| format!(":{}", p)).unwrap_or_default();
        let tail = if self.rest == "/" { "/" } else { "/…" };
        format!(
            "{}://{}{}{}",
            if self.https { "https" } else { "http" },
            self.host,
            port,
            tail
        )
    }

    /// The URL to request: without the user and password (sent as a header instead).
    pub fn for_request(&self) -> String {
        let port = self.port.map(|p| format!(":{}", p)).unwrap_or_default();
        format!(
            "{}://{}{}{}",
            if self.https { "https" } else { "http" },
            self.host,
            port,
            self.rest
        )
    }

    /// `Authorization: Basic ...` for a URL with `user:password@`.
    pub fn basic_auth(&self) -> Option<String> {
        let raw = percent_decode(self.userinfo.as_deref()?);
        Some(format!(
            "Basic {}",
            phonehome_plumbing::text::base64_encode(&raw, true)
        ))
    }

    /// The strings of this URL that must never be shown: the whole URL, its user
    /// information, and its path and query (unless the path is just `/`).
    pub fn secrets(&self) -> Vec<String> {
        let mut s = vec![self.full.clone(), self.for_request()];
        if let Some(u) = &self.userinfo {
            s.push(u.clone());
            s.push(String::from_utf8_lossy(&percent_decode(u)).into_owned());
        }
        if self.rest != "/" {
            s.push(self.rest.clone());
        }
        s.retain(|x| x.len() >= 2);
        // Longest first, so that a part inside a longer secret is not left half-masked.
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        s
    }

    /// A short, stable name for this URL (its outbox directory): 16 hex digits of the
    /// SHA-256 of the URL as written.
    pub fn key(&self) -> String {
        use sha2::Digest;
        let d = sha2::Sha256::digest(self.full.as_bytes());
        d.iter().take(8).map(|b| format!("{:02x}", b)).collect()
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let end = r
            .find(']')
            .ok_or("the URL's IPv6 address lacks its closing ]")?;
        r[..end]
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| "the URL's host is not a valid IPv6 address".to_string())?;
        let after = &r[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :PORT after the ]")?),
        };
        (format!("[{}]", &r[..end]), port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if !host.starts_with('[') && phonehome_protocol::validate_host(&host).is_err() {
        return Err("the URL's host is not a valid host name or IP address".into());
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            phonehome_protocol::parse_port(p)
                .map_err(|_| "the URL's port must be a number from 1 to 65535".to_string())?,
        ),
    };
    Ok((host, port))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// One webhook line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its line in server.conf (how it is named in messages: "webhook on line 12").
    pub line: usize,
    pub url: Url,
    pub format: Format,
    /// A root-only file holding the HMAC-SHA256 key of the signature header.
    pub secret: Option<PathBuf>,
    /// A PEM file of the CA(s) to trust instead of the system's.
    pub ca: Option<PathBuf>,
    pub insecure_http: bool,
}

impl Webhook {
    /// Parse the value of a `webhook =` line (number `line`).
    pub fn parse(value: &str, line: usize) -> Result<Webhook, String> {
        let mut words = value.split_whitespace();
        let url = Url::parse(words.next().ok_or("expected a URL")?)?;
        let mut hook = Webhook {
            line,
            url,
            format: Format::Json,
            secret: None,
            ca: None,
            insecure_http: false,
        };
        let mut seen: Vec<&str> = Vec::new();
        for w in words {
            let (name, v) = w.split_once('=').unwrap_or((w, ""));
            if seen.contains(&name) {
                return Err(format!("{} is given twice", quoted(name, 20)));
            }
            seen.push(name);
            hook.option(name, v)?;
        }
        hook.check()?;
        Ok(hook)
    }

    fn option(&mut self, name: &str, v: &str) -> Result<(), String> {
        let path = |v: &str| {
            if is_safe_path(v) {
                Ok(PathBuf::from(v))
            } else {
                Err(format!(
                    "{}= needs an absolute path of letters, digits and / . _ - +, not {}",
                    name,
                    quoted(v, 60)
                ))
            }
        };
        match (name, v) {
            ("format", "json") => self.format = Format::Json,
            ("format", "slack") => self.format = Format::Slack,
            ("format", "ntfy") => self.format = Format::Ntfy,
            ("format", other) => {
                return Err(format!(
                    "format={} is not one of json, slack, ntfy",
                    quoted(other, 20)
                ))
            }
            ("secret", v) => self.secret = Some(path(v)?),
            ("ca", v) => self.ca = Some(path(v)?),
            ("insecure-http", "") => self.insecure_http = true,
            _ => {
                return Err(format!(
                    "unknown option {}: expected format=json|slack|ntfy, secret=FILE, ca=FILE or insecure-http",
                    quoted(name, 30)
                ))
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        if self.url.is_https() {
            if self.insecure_http {
                return Err("insecure-http is for http:// URLs; this one is https://".into());
            }
        } else {
            if !self.url.is_loopback() && !self.insecure_http {
                return Err(format!(
                    "plain http:// to {} would send events and signatures unencrypted: use https://, or add insecure-http to the line",
                    self.url.host
                ));
            }
            if self.ca.is_some() {
                return Err("ca= applies to https:// URLs only".into());
            }
        }
        Ok(())
    }

    /// How the webhook is named to people: its line and its redacted URL.
    pub fn label(&self) -> String {
        format!("webhook on line {} ({})", self.line, self.url.redacted())
    }

    /// `text` with every secret part of the URL masked: for error messages that a
    /// library may have filled with the URL.
    pub fn mask(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in self.url.secrets() {
            t = t.replace(&s, "…");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_of_the_docs() {
        let h = Webhook::parse(
            "https://hooks.slack.com/services/T0/B0/XXXX format=slack",
            3,
        )
        .unwrap();
        assert_eq!(h.format, Format::Slack);
        assert_eq!(h.url.redacted(), "https://hooks.slack.com/…");
        assert_eq!(
            h.url.for_request(),
            "https://hooks.slack.com/services/T0/B0/XXXX"
        );
        let h = Webhook::parse(
            "https://alerts.example.org:8443/hook secret=/etc/phonehome/hook.secret ca=/etc/phonehome/ca.pem",
            1,
        )
        .unwrap();
        assert_eq!(
            h.secret.unwrap(),
            PathBuf::from("/etc/phonehome/hook.secret")
        );
        assert_eq!(h.url.redacted(), "https://alerts.example.org:8443/…");
        let h = Webhook::parse("http://127.0.0.1:9000", 1).unwrap();
        assert_eq!(h.url.for_request(), "http://127.0.0.1:9000/");
        assert!(Webhook::parse("http://[::1]:9000/x", 1)
            .unwrap()
            .url
            .is_loopback());
        assert!(Webhook::parse("http://alerts.lan/x insecure-http", 1).is_ok());
        let h = Webhook::parse("https://ntfy.sh?x=1 format=ntfy", 1).unwrap();
        assert_eq!(h.url.for_request(), "https://ntfy.sh/?x=1");
    }

    #[test]
    fn refuses_what_is_wrong_with_a_reason() {
        for (line, why) in [
            ("", "expected a URL"),
            ("ftp://x/", "must start with https://"),
            ("https:///x", "no host"),
            ("https://a b/", "unknown option"),
            ("https://example.org/a\"b", "percent-encoded"),
            ("https://example.org/x#frag", "fragment"),
            ("https://example.org:0/", "port"),
            ("https://example.org:99999/", "port"),
            ("https://exa_mple.org/", "host"),
            ("https://[::1/", "closing ]"),
            ("http://alerts.example.org/hook", "insecure-http"),
            ("https://example.org/ insecure-http", "https://"),
            ("http://127.0.0.1/ ca=/etc/ca.pem", "https:// URLs only"),
            ("https://example.org/ format=xml", "not one of"),
            ("https://example.org/ format=json format=json", "twice"),
            ("https://example.org/ secret=relative", "absolute path"),
            ("https://example.org/ colour=blue", "unknown option"),
        ] {
            let e = Webhook::parse(line, 1).unwrap_err();
            assert!(e.contains(why), "{:?}: {}", line, e);
        }
    }

    #[test]
    fn threat_38_url_credentials_never_shown() {
        let h = Webhook::parse(
            "https://alice:s3cr%40t@ntfy.example.org/topic-7f3a?auth=tok123 format=ntfy",
            1,
        )
        .unwrap();
        assert_eq!(
            h.url.for_request(),
            "https://ntfy.example.org/topic-7f3a?auth=tok123"
        );
        assert_eq!(
            h.url.basic_auth().unwrap(),
            format!(
                "Basic {}",
                phonehome_plumbing::text::base64_encode(b"alice:s3cr@t", true)
            )
        );
        let shown = format!("{:?} {}", h, h.label());
        for secret in ["alice", "s3cr", "topic-7f3a", "tok123"] {
            assert!(!shown.contains(secret), "{} in {}", secret, shown);
        }
        let masked = h.mask(
            "error: https://ntfy.example.org/topic-7f3a?auth=tok123 failed for alice:s3cr%40t",
        );
        for secret in ["alice", "s3cr", "topic-7f3a", "tok123"] {
            assert!(!masked.contains(secret), "{} in {}", secret, masked);
        }
    }
}
