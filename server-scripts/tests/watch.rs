//! watch-devices through its built binary, under a temp root, against a webhook
//! receiver on 127.0.0.1 run by the test (plain HTTP: loopback is allowed without
//! insecure-http; TLS and the signature are checked end to end in tests/e2e/watch.sh):
//! events queued while the receiver is down arrive in order, once, when it is back; a
//! full queue drops the oldest and says how many; --check says what is wrong; URL
//! secrets never show; two runs at once never send an event twice.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    /// Answer after this many milliseconds.
    Slow(u64),
    /// 302 to this port of 127.0.0.1.
    Redirect(u16),
    /// 500 with escape sequences and megabytes of body.
    Huge,
    /// Take the request, never answer.
    Silent,
}

/// A request the receiver took: its headers (lower-case names) and body.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, got: Arc<Mutex<Vec<Got>>>, mode: Mode) -> Receiver {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    serve(c, &g, mode);
                }
            }
        });
        Receiver {
            port,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Close the port: the receiver is down.
    fn down(mut self) -> (u16, Arc<Mutex<Vec<Got>>>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.thread.take().unwrap().join().unwrap();
        (self.port, self.got.clone())
    }
}

fn serve(c: TcpStream, got: &Mutex<Vec<Got>>, mode: Mode) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut first = String::new();
    if r.read_line(&mut first).is_err() || first.is_empty() {
        return;
    }
    let path = first.split(' ').nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    got.lock().unwrap().push(Got {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    let redirect;
    let answer: &[u8] = match mode {
        Mode::Redirect(port) => {
            redirect = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                port
            );
            redirect.as_bytes()
        }
        Mode::Huge => {
            let mut a = b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n\x1b]0;pwned\x07 it broke\n".to_vec();
            a.extend(std::iter::repeat(b'x').take(8 << 20));
            let _ = (&c).write_all(&a);
            return;
        }
        Mode::Silent => {
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(25));
                drop(c);
            });
            return;
        }
        Mode::Fail => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 24\r\nConnection: close\r\n\r\nmaintenance until 10:00\n",
        Mode::Slow(ms) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
        }
        Mode::Ok => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
    };
    let _ = (&c).write_all(answer);
}

fn root_with_hook(url: &str, extra: &str) -> Root {
    let r = Root::new();
    r.set_conf(&format!(
        "webhook = {}\nwebhook_retry_max = 1\n{}",
        url, extra
    ));
    r
}

fn once(r: &Root) -> Out {
    r.run("watch-devices", &["--once"]).ok()
}

/// The events a receiver got, as (event, device).
fn events(got: &Mutex<Vec<Got>>) -> Vec<(String, String)> {
    got.lock()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g.body["event"].as_str().unwrap_or("?").to_string(),
                g.body["device"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

/// The sequence numbers of the ids a receiver got, in arrival order.
fn seqs(got: &Mutex<Vec<Got>>) -> Vec<u64> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|g| g.body["id"].as_str()?.rsplit('-').next()?.parse().ok())
        .collect()
}

const ID3: &str = "020000000302";
const ID4: &str = "020000000402";

#[test]
fn threat_42_a_receiver_down_for_a_while_gets_everything_in_order_once() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let rx = Receiver::start(0, got.clone(), Mode::Ok);
    let (port, _) = rx.down();
    let r = root_with_hook(&format!("http://127.0.0.1:{}/hook", port), "");
    let first = once(&r);
    assert!(first.stdout.contains("first run"), "{}", first.stdout);
    r.add(ID1, &key(0));
    let o = once(&r);
    assert!(o.stdout.contains("device.added"), "{}", o.stdout);
    assert!(o.stdout.contains("FAILED: cannot connect"), "{}", o.stdout);
    assert!(o.stdout.contains("1 event(s) kept"), "{}", o.stdout);
    // Meanwhile: a heartbeat (device.online) and a second device.
    let now = phonehome_plumbing::clock::now();
    r.set_heartbeat(
        ID1,
        &format!(r#"{{"received": {}, "from": "198.51.100.2"}}"#, now),
    );
    r.add(ID2, &key(3));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = once(&r);
    assert!(o.stdout.contains("3 event(s) kept"), "{}", o.stdout);
    // Back up: everything, in order, once.
    let rx = Receiver::start(port, got.clone(), Mode::Ok);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = once(&r);
    assert!(o.stdout.contains("3 event(s) delivered"), "{}", o.stdout);
    assert_eq!(
        events(&got),
        [
            ("device.added".to_string(), ID1.to_string()),
            // One run's events go by device id.
            ("device.added".to_string(), ID2.to_string()),
            ("device.online".to_string(), ID1.to_string()),
        ]
    );
    let s = seqs(&got);
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeat: {:?}",
        s
    );
    let g = got.lock().unwrap()[0].clone();
    assert_eq!(g.path, "/hook");
    assert_eq!(g.header("x-phonehome-event"), Some("device.added"));
    assert_eq!(g.header("x-phonehome-delivery"), g.body["id"].as_str());
    assert_eq!(g.body["server"], "ph.example.org");
    assert!(g.body["time"].as_str().unwrap().ends_with('Z'));
    // Nothing is sent twice, and the counters say what happened.
    once(&r);
    assert_eq!(got.lock().unwrap().len(), 3);
    let m = r.run("list-devices", &["--prometheus"]).ok().stdout;
    for line in [
        "phonehome_webhook_queued_events{line=\"5\",host=\"127.0.0.1\"} 0".to_string(),
        "phonehome_webhook_delivered_events_total{line=\"5\",host=\"127.0.0.1\"} 3".to_string(),
        format!("phonehome_device_up{{device=\"{}\",alias=\"\"}} 1", ID1),
        format!("phonehome_device_up{{device=\"{}\",alias=\"\"}} 0", ID2),
    ] {
        assert!(m.lines().any(|l| l == line), "{} not in\n{}", line, m);
    }
    assert!(
        m.contains("phonehome_webhook_delivery_failures_total{line=\"5\",host=\"127.0.0.1\"} "),
        "{}",
        m
    );
    drop(rx.down());
}

#[test]
fn threat_42_a_full_queue_drops_the_oldest_and_counts_them() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let (port, _) = Receiver::start(0, got.clone(), Mode::Ok).down();
    let r = root_with_hook(
        &format!("http://127.0.0.1:{}/", port),
        "webhook_queue = 3\n",
    );
    once(&r);
    for (id, k) in [(ID1, 0), (ID2, 3), (ID3, 2), (ID4, 1)] {
        r.add(id, &key(k));
    }
    let o = once(&r);
    assert!(
        o.stdout.contains("queue full, 2 oldest event(s) dropped"),
        "{}",
        o.stdout
    );
    r.run("remove-device", &[ID1]).ok();
    r.run("remove-device", &[ID2]).ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    once(&r);
    let rx = Receiver::start(port, got.clone(), Mode::Ok);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    once(&r);
    let e = events(&got);
    assert_eq!(e.len(), 3, "{:?}", e);
    assert_eq!(e[0].0, "watch.dropped");
    assert_eq!(
        got.lock().unwrap()[0].body["details"]["count"],
        4,
        "{:?}",
        e
    );
    assert_eq!(
        e[1..],
        [
            ("device.removed".to_string(), ID2.to_string()),
            ("device.removed".to_string(), ID1.to_string())
        ]
    );
    let m = r.run("list-devices", &["--prometheus"]).ok().stdout;
    assert!(
        m.contains("phonehome_webhook_dropped_events_total{line=\"5\",host=\"127.0.0.1\"} 4"),
        "{}",
        m
    );
    drop(rx.down());
}

#[test]
fn check_says_what_is_wrong() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let rx = Receiver::start(0, got.clone(), Mode::Fail);
    let (down, _) = Receiver::start(0, Arc::new(Mutex::new(Vec::new())), Mode::Ok).down();
    let r = root_with_hook(&rx.url("/ok"), "");
    let bad_ca = r.path("etc/phonehome/ca.pem");
    std::fs::write(&bad_ca, "not a certificate\n").unwrap();
    let secret = r.path("etc/phonehome/hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    r.set_conf(&format!(
        "webhook = http://127.0.0.1:{}/down format=slack\nwebhook = https://localhost:{}/x ca={}\nwebhook = {} secret={}\n",
        down,
        down,
        bad_ca.display(),
        rx.url("/signed"),
        secret.display()
    ));
    let o = r.run("watch-devices", &["--check"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    for want in [
        "format json: FAILED: HTTP 503: maintenance until 10:00",
        "format slack: FAILED: cannot connect",
        "holds no PEM certificate",
        "must be owned by root and readable by it alone",
    ] {
        assert!(o.stdout.contains(want), "{:?} not in\n{}", want, o.stdout);
    }
    assert!(o.stderr.contains("4 problem(s) found"), "{}", o.stderr);
    let test = got.lock().unwrap()[0].clone();
    assert_eq!(test.body["event"], "watch.test");
    // A bad line is named by its number.
    r.set_conf("webhook = http://alerts.example.org/x\n");
    let o = r.run("watch-devices", &["--check"]);
    assert!(
        o.stderr.contains(": webhook: plain http://"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("server.conf: line 10:"), "{}", o.stderr);
    drop(rx.down());
}

#[test]
fn threat_38_url_credentials_and_secrets_never_in_output_or_state() {
    let (port, _) = Receiver::start(0, Arc::new(Mutex::new(Vec::new())), Mode::Ok).down();
    let r = root_with_hook(
        &format!(
            "http://alice:pw-7f3a@127.0.0.1:{}/topic-c0ffee?auth=tok-9e1d",
            port
        ),
        "",
    );
    let secret = r.path("etc/phonehome/hook.secret");
    std::fs::write(&secret, "hmac-b7e2\n").unwrap();
    r.set_conf(&format!(
        "webhook = http://127.0.0.1:{}/other-e5a1 secret={}\n",
        port,
        secret.display()
    ));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    once(&r);
    r.add(ID1, &key(0));
    let outs = [
        once(&r),
        r.run("watch-devices", &["--check"]),
        r.run("watch-devices", &["--once", "-v"]),
        r.run("list-devices", &["--prometheus"]),
    ];
    let mut shown: String = outs
        .iter()
        .map(|o| format!("{}{}", o.stdout, o.stderr))
        .collect();
    assert!(shown.contains("cannot connect"), "{}", shown);
    for (path, data) in snapshot(&r.path("var/lib/phonehome/watch")) {
        if path.file_name().is_some_and(|n| n == "meta.json") {
            shown.push_str(&String::from_utf8_lossy(&data));
        }
    }
    for secret in [
        "alice",
        "pw-7f3a",
        "topic-c0ffee",
        "tok-9e1d",
        "other-e5a1",
        "hmac-b7e2",
    ] {
        assert!(!shown.contains(secret), "{} shown in:\n{}", secret, shown);
    }
}

#[test]
fn threat_43_two_runs_at_once_never_send_an_event_twice() {
    let got = Arc::new(Mutex::new(Vec::new()));
    // A slow receiver: the first run is still delivering when the second starts.
    let rx = Receiver::start(0, got.clone(), Mode::Slow(150));
    let r = root_with_hook(&rx.url("/"), "");
    once(&r);
    for (id, k) in [(ID1, 0), (ID2, 3), (ID3, 2)] {
        r.add(id, &key(k));
    }
    let a = r.cmd("watch-devices").arg("--once").spawn().unwrap();
    let b = r.cmd("watch-devices").arg("--once").spawn().unwrap();
    for mut c in [a, b] {
        assert!(c.wait().unwrap().success());
    }
    once(&r);
    let ids: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|g| g.body["id"].as_str().unwrap().to_string())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), 3, "{:?}", ids);
    assert_eq!(unique.len(), ids.len(), "an event sent twice: {:?}", ids);
    drop(rx.down());
}

#[test]
fn threat_39_a_hostile_receiver_is_bounded() {
    let elsewhere = Arc::new(Mutex::new(Vec::new()));
    let target = Receiver::start(0, elsewhere.clone(), Mode::Ok);
    let redirect = Receiver::start(
        0,
        Arc::new(Mutex::new(Vec::new())),
        Mode::Redirect(target.port),
    );
    let huge = Receiver::start(0, Arc::new(Mutex::new(Vec::new())), Mode::Huge);
    let silent = Receiver::start(0, Arc::new(Mutex::new(Vec::new())), Mode::Silent);
    let r = root_with_hook(&redirect.url("/r"), "");
    r.set_conf(&format!(
        "webhook = {} format=slack\nwebhook = {} format=ntfy\n",
        huge.url("/h"),
        silent.url("/s")
    ));
    let t0 = std::time::Instant::now();
    let o = r.run("watch-devices", &["--check"]);
    let took = t0.elapsed();
    assert_eq!(o.code, 1, "{}", o.stdout);
    for want in [
        "format json: FAILED: HTTP 302: a redirect, which is not followed",
        "format slack: FAILED: HTTP 500: ?]0;pwned? it broke",
        "format ntfy: FAILED: timed out",
    ] {
        assert!(o.stdout.contains(want), "{:?} not in\n{}", want, o.stdout);
    }
    assert!(
        !o.stdout.contains('\u{1b}') && o.stdout.len() < 4000,
        "{}",
        o.stdout
    );
    assert!(
        elsewhere.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
    assert!(
        took.as_secs() < 40,
        "the silent receiver held --check for {:?}",
        took
    );
    drop(target.down());
}
