//! Sending one event to one webhook: the body in the webhook's format, the signature,
//! and the HTTP request with ureq over rustls (ring), with connect and total timeouts,
//! no redirects followed, and the receiver's answer read bounded. TLS trusts the CA
//! file of the line (`ca=`) or else the system's CA bundle (`SSL_CERT_FILE`, or the
//! usual places of Debian, Fedora/RHEL, SUSE, Alpine); nothing is compiled in.
//!
//! Every failure becomes one line that says what is wrong (TLS and why, connection
//! refused, HTTP status and the first line of the body), with the URL's secret parts
//! masked and the receiver's text made terminal-safe: a receiver is not trusted with
//! our terminal or our logs.

use crate::events::{Event, Kind};
use crate::webhook::{Format, Webhook};
use hmac::{Hmac, Mac};
use phonehome_plumbing::files::{self, Follow};
use phonehome_plumbing::text::for_terminal;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take in all (connect, TLS, send, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of a receiver's answer is read (for its first line).
const MAX_ANSWER_BYTES: u64 = 4096;
/// Largest CA or secret file read.
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;
const MAX_SECRET_BYTES: u64 = 4096;
/// Where Linux distributions keep their CA bundle (the places Go's crypto/x509 tries).
const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
/// The signature header, as GitHub's `X-Hub-Signature-256`: `sha256=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "X-Phonehome-Signature-256";

/// Why an event did not get through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The line's files: the CA file, the secret, the system bundle.
    Setup(String),
    Tls(String),
    Connect(String),
    Timeout(String),
    /// The receiver answered, but not with 2xx.
    Status {
        code: u16,
        first_line: String,
    },
    Other(String),
}

impl Failure {
    /// Worth another try within the same run (it may pass in a second).
    pub fn transient(&self) -> bool {
        match self {
            Failure::Connect(_) | Failure::Timeout(_) => true,
            Failure::Status { code, .. } => *code == 408 || *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Setup(m) | Failure::Other(m) => f.write_str(m),
            Failure::Tls(m) => write!(f, "TLS failure: {}", m),
            Failure::Connect(m) => write!(f, "cannot connect: {}", m),
            Failure::Timeout(m) => write!(f, "timed out: {}", m),
            Failure::Status { code, first_line } if (300..400).contains(code) => {
                write!(
                f,
                "HTTP {}: a redirect, which is not followed: put the final URL in server.conf{}",
                code,
                if first_line.is_empty() { String::new() } else { format!(" ({})", first_line) }
            )
            }
            Failure::Status { code, first_line } => {
                write!(f, "HTTP {}", code)?;
                if !first_line.is_empty() {
                    write!(f, ": {}", first_line)?;
                }
                Ok(())
            }
        }
    }
}

/// A webhook ready to send: its HTTP agent (TLS roots loaded) and its secret.
pub struct Sender {
    hook: Webhook,
    agent: ureq::Agent,
    secret: Option<Vec<u8>>,
    user_agent: String,
}

impl Sender {
    pub fn new(hook: &Webhook) -> Result<Sender, Failure> {
        let secret = hook.secret.as_deref().map(read_secret).transpose()?;
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT));
        if hook.url.is_https() {
            config = config.tls_config(tls_config(hook.ca.as_deref())?);
        }
        Ok(Sender {
            hook: hook.clone(),
            agent: config.build().into(),
            secret,
            user_agent: format!("phonehome-watch/{}", crate::cli::VERSION),
        })
    }

    pub fn hook(&self) -> &Webhook {
        &self.hook
    }

    /// Send `ev` once; `Ok(status)` when the receiver took it (2xx).
    pub fn send(&self, ev: &Event) -> Result<u16, Failure> {
        let (content_type, body, headers) = render(self.hook.format, ev);
        let mut req = self
            .agent
            .post(self.hook.url.for_request())
            .header("Content-Type", content_type)
            .header("User-Agent", &self.user_agent)
            .header("X-Phonehome-Event", ev.event.as_str())
            .header("X-Phonehome-Delivery", &ev.id);
        for (name, value) in &headers {
            req = req.header(*name, value);
        }
        if let Some(auth) = self.hook.url.basic_auth() {
            req = req.header("Authorization", &auth);
        }
        if let Some(key) = &self.secret {
            req = req.header(SIGNATURE_HEADER, &signature(key, &body));
        }
        let mut resp = req.send(&body[..]).map_err(|e| self.failure(e))?;
        let code = resp.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(code);
        }
        let mut answer = Vec::new();
        let _ = resp
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer);
        Err(Failure::Status {
            code,
            first_line: first_line(&answer),
        })
    }

    fn failure(&self, e: ureq::Error) -> Failure {
        let mask = |s: String| for_terminal(&self.hook.mask(&s), 300);
        match e {
            ureq::Error::Rustls(t) => Failure::Tls(mask(tls_reason(&t))),
            ureq::Error::Tls(t) => Failure::Tls(mask(t.to_string())),
            ureq::Error::Timeout(t) => Failure::Timeout(mask(t.to_string())),
            ureq::Error::HostNotFound => {
                Failure::Connect(format!("host {} not found (DNS)", self.hook.url.host()))
            }
            ureq::Error::ConnectionFailed => Failure::Connect("connection failed".into()),
            ureq::Error::Io(io) => {
                if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return Failure::Tls(mask(tls_reason(t)));
                }
                match io.kind() {
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        Failure::Timeout(mask(io.to_string()))
                    }
                    std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof => Failure::Connect(mask(io.to_string())),
                    _ => Failure::Other(mask(io.to_string())),
                }
            }
            other => Failure::Other(mask(other.to_string())),
        }
    }
}

/// A rustls error with what it usually means for a webhook.
fn tls_reason(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    let hint = match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            ": the receiver's certificate is not signed by a CA this server trusts (set ca=FILE on the webhook line, or install the CA in the system's store)"
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            ": the receiver's certificate does not name the URL's host"
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            ": the receiver's certificate has expired (or this server's clock is wrong)"
        }
        _ => "",
    };
    format!("{}{}", e, hint)
}

/// The first non-empty line of a receiver's answer, terminal-safe and short.
fn first_line(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    for_terminal(line, 200)
}

/// The root CAs: the line's CA file, else the system's bundle.
fn tls_config(ca: Option<&std::path::Path>) -> Result<ureq::tls::TlsConfig, Failure> {
    let (path, pem) = match ca {
        Some(p) => {
            let pem = read_file(p, MAX_PEM_BYTES)
                .map_err(|e| Failure::Setup(format!("ca={}: {}", p.display(), e)))?;
            (p.to_path_buf(), pem)
        }
        None => system_bundle()?,
    };
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Failure::Setup(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build())
}

fn system_bundle() -> Result<(std::path::PathBuf, Vec<u8>), Failure> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from));
    for p in candidates {
        if let Ok(pem) = read_file(&p, MAX_PEM_BYTES) {
            return Ok((p, pem));
        }
    }
    Err(Failure::Setup(format!(
        "no system CA bundle found (looked at $SSL_CERT_FILE and {}): install ca-certificates, or give ca=FILE on the webhook line",
        SYSTEM_BUNDLES.join(", ")
    )))
}

fn read_file(p: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    files::read_bounded(p, max)?.ok_or_else(|| std::io::ErrorKind::NotFound.into())
}

/// The secret of a `secret=` file: readable by its owner only (the owner being the
/// user running watch-devices), one line, not empty.
fn read_secret(p: &std::path::Path) -> Result<Vec<u8>, Failure> {
    use std::os::unix::fs::MetadataExt;
    let bad = |m: String| Failure::Setup(format!("secret={}: {}", p.display(), m));
    let f = files::open_regular(p, Follow::No).map_err(|e| bad(e.to_string()))?;
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if meta.mode() & 0o077 != 0 || meta.uid() != phonehome_plumbing::process::geteuid() {
        return Err(bad(format!(
            "must be owned by {} and readable by it alone (it is uid {}, mode {:04o}): chown root and chmod 600 it",
            if phonehome_plumbing::process::geteuid() == 0 { "root".to_string() } else { "this user".to_string() },
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    let data = read_file(p, MAX_SECRET_BYTES).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8_lossy(&data);
    let key = text.trim_end_matches(['\n', '\r']);
    if key.is_empty() || key.contains('\n') {
        return Err(bad("must hold the secret on one line".into()));
    }
    Ok(key.as_bytes().to_vec())
}

/// `sha256=<hex>` of HMAC-SHA256(key, body).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{:02x}", b)).collect();
    format!("sha256={}", hex)
}

/// The content type, body and extra headers of `ev` in `format`.
pub fn render(format: Format, ev: &Event) -> (&'static str, Vec<u8>, Vec<(&'static str, String)>) {
    match format {
        Format::Json => (
            "application/json",
            serde_json::to_vec(ev).expect("an event serialises"),
            Vec::new(),
        ),
        Format::Slack => {
            let text = format!("*{}* {}", ev.event.as_str(), slack_escape(&ev.message));
            let body = serde_json::json!({ "text": text });
            (
                "application/json",
                body.to_string().into_bytes(),
                Vec::new(),
            )
        }
        Format::Ntfy => {
            // Headers carry only what we made: the kind, the id and alias (checked
            // names), never device text.
            let title = format!("{}: {}", ev.event.as_str(), ev.subject());
            let headers = vec![
                ("Title", title),
                ("Priority", ev.event.priority().to_string()),
                ("Tags", ntfy_tag(ev.event).to_string()),
            ];
            (
                "text/plain; charset=utf-8",
                ev.message.clone().into_bytes(),
                headers,
            )
        }
    }
}

/// Slack's three control characters in message text: `<@U…>`, `<!channel>` and
/// `<http://…|link>` come only from `<`, so a device cannot mention or link anyone.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ntfy_tag(k: Kind) -> &'static str {
    match k.priority() {
        4.. => "warning",
        3 => "white_check_mark",
        _ => "information_source",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Draft;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn threat_40_device_text_cannot_mention_or_link_in_slack() {
        let ev = Draft::new(
            Kind::AgentError,
            "device x reports: <!channel> see <http://evil.example|here> & more".into(),
        )
        .into_event("i".into(), 0, "srv");
        let (_, body, _) = render(Format::Slack, &ev);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(!text.contains('<') && !text.contains('>'), "{}", text);
        assert!(
            text.contains("&lt;!channel&gt;") && text.contains("&amp; more"),
            "{}",
            text
        );
        let (ct, body, headers) = render(Format::Ntfy, &ev);
        assert!(ct.starts_with("text/plain"));
        assert_eq!(body, ev.message.as_bytes());
        assert!(
            headers.iter().all(|(_, v)| !v.contains("evil")),
            "{:?}",
            headers
        );
        assert!(headers.contains(&("Priority", "4".to_string())));
    }

    #[test]
    fn failures_say_what_is_wrong() {
        let s = Failure::Status {
            code: 503,
            first_line: first_line(b"\n  maintenance \x1b[2J until 10:00\nsecond line"),
        };
        assert_eq!(s.to_string(), "HTTP 503: maintenance ?[2J until 10:00");
        assert!(s.transient());
        assert!(!Failure::Status {
            code: 404,
            first_line: String::new()
        }
        .transient());
        let r = Failure::Status {
            code: 302,
            first_line: String::new(),
        };
        assert!(r.to_string().contains("not followed"), "{}", r);
    }

    #[test]
    fn a_secret_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = phonehome_plumbing::tempdir::TempDir::new("secret");
        let p = t.join("s");
        std::fs::write(&p, "k3y\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{}", e);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&p).unwrap(), b"k3y");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret(&p).is_err());
    }
}
