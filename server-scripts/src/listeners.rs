//! Who listens on which TCP port, with the owning uid. forward-device-port uses it
//! twice: a remote port held by any listener is refused, and `--wait` succeeds only when
//! the port is listened on by the device's uid alone (sshd reports a forward as
//! successful even when another process already holds 127.0.0.1 of that port);
//! list-devices and watch-devices show which tunnels are open.
//!
//! Asked of the kernel through sock_diag netlink for LISTEN sockets only (what `ss -l`
//! does): `/proc/net/tcp` lists every established connection too, and walks the whole
//! connection hash table to do so — about 10 ms on an idle 24 GiB machine, and one line
//! per connection on a server whose devices hold sessions. `/proc/net/tcp{,6}` (state
//! 0A) remains the fallback where netlink is refused.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    pub uid: u32,
}

const TCP_LISTEN: &str = "0A";

fn parse_addr(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => {
            let n = u32::from_str_radix(hex, 16).ok()?;
            // /proc prints the address as the host-order u32 of the network bytes.
            Some(IpAddr::V4(Ipv4Addr::from(n.to_ne_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Parse the text of /proc/net/tcp or tcp6 into its LISTEN sockets.
pub fn parse(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[3] != TCP_LISTEN {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            Some(Listener {
                addr: parse_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                uid: f[7].parse().ok()?,
            })
        })
        .collect()
}

/// Every LISTEN socket of this network namespace.
pub fn all() -> Vec<Listener> {
    from_netlink().unwrap_or_else(|e| {
        log::debug!("sock_diag: {}; reading /proc/net/tcp instead", e);
        from_proc()
    })
}

fn from_netlink() -> std::io::Result<Vec<Listener>> {
    Ok(phonehome_plumbing::sockdiag::tcp_listeners()?
        .into_iter()
        .map(|l| Listener {
            addr: l.addr,
            port: l.port,
            uid: l.uid,
        })
        .collect())
}

fn from_proc() -> Vec<Listener> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse(&t))
        .collect()
}

pub fn on_port(port: u16) -> Vec<Listener> {
    all().into_iter().filter(|l| l.port == port).collect()
}

/// Every LISTEN socket, looked up by port and by uid in constant time: a fleet's rows
/// ask for each device and each request, and a server holding thousands of tunnels has
/// thousands of sockets.
#[derive(Debug, Default)]
pub struct Index {
    by_port: HashMap<u16, Vec<Listener>>,
    /// The loopback ports of each uid, sorted, without repeats.
    loopback_by_uid: HashMap<u32, Vec<u16>>,
}

impl Index {
    pub fn new(all: Vec<Listener>) -> Index {
        let mut ix = Index::default();
        for l in all {
            if l.addr.is_loopback() {
                ix.loopback_by_uid.entry(l.uid).or_default().push(l.port);
            }
            ix.by_port.entry(l.port).or_default().push(l);
        }
        for ports in ix.loopback_by_uid.values_mut() {
            ports.sort_unstable();
            ports.dedup();
        }
        ix
    }

    /// The listeners on `port`.
    pub fn on_port(&self, port: u16) -> &[Listener] {
        self.by_port.get(&port).map_or(&[], Vec::as_slice)
    }

    /// The loopback ports `uid` listens on, sorted.
    pub fn loopback_ports(&self, uid: u32) -> &[u16] {
        self.loopback_by_uid.get(&uid).map_or(&[], Vec::as_slice)
    }
}

/// The tunnel on `port` is up and the device's own: some listener on 127.0.0.1 or ::1,
/// and every listener on the port belongs to `uid`.
pub fn held_only_by(listeners: &[Listener], uid: u32) -> bool {
    listeners.iter().any(|l| l.addr.is_loopback()) && listeners.iter().all(|l| l.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2694 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 123 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 124 1 0 100 0 0 10 0
   2: 0100007F:2694 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1001        0 125 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2694 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 126 1 0 100 0 0 10 0
";

    #[test]
    fn parses_proc_net_tcp() {
        let l = parse(TCP);
        assert_eq!(l.len(), 2, "the established socket is not a listener");
        assert_eq!(l[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(l[0].port, 9876);
        assert_eq!(l[0].uid, 1001);
        assert_eq!(l[1].port, 22);
        let l6 = parse(TCP6);
        assert_eq!(l6[0].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(l6[0].port, 9876);
    }

    #[test]
    fn ownership_rule() {
        let mut l: Vec<Listener> = parse(TCP).into_iter().filter(|l| l.port == 9876).collect();
        l.extend(parse(TCP6));
        assert!(held_only_by(&l, 1001));
        assert!(!held_only_by(&l, 1002));
        l.push(Listener {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 9876,
            uid: 0,
        });
        assert!(
            !held_only_by(&l, 1001),
            "another owner on 0.0.0.0 spoils it"
        );
        assert!(!held_only_by(&[], 1001));
    }

    /// The index answers as the list it was made of: by port (every owner, every
    /// address) and by uid (loopback only, sorted, each port once).
    #[test]
    fn the_index_answers_as_the_list() {
        let mut all = parse(TCP);
        all.extend(parse(TCP6));
        all.push(Listener {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 2000,
            uid: 1001,
        });
        let ix = Index::new(all.clone());
        for port in [22, 2000, 9876, 1] {
            let want: Vec<Listener> = all.iter().filter(|l| l.port == port).copied().collect();
            assert_eq!(ix.on_port(port), want.as_slice(), "port {}", port);
        }
        assert_eq!(ix.loopback_ports(1001), &[2000, 9876]);
        assert_eq!(ix.loopback_ports(0), &[] as &[u16], "22 is on 0.0.0.0");
        assert_eq!(ix.loopback_ports(7), &[] as &[u16]);
    }

    #[test]
    fn sees_a_real_listener() {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let found = on_port(port);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].uid, phonehome_plumbing::process::getuid());
        assert_eq!(found[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    /// sock_diag and /proc/net/tcp agree on this test's listeners (v4 and v6), and an
    /// established connection is not one. (Other tests bind ports at the same time:
    /// only this test's own ports are compared.)
    #[test]
    fn netlink_agrees_with_proc() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let _conn = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let mut ours = vec![v4.local_addr().unwrap().port()];
        ours.extend(v6.iter().map(|s| s.local_addr().unwrap().port()));
        let mine = |l: &Listener| ours.contains(&l.port);
        let mut nl: Vec<Listener> = from_netlink()
            .expect("sock_diag answers here")
            .into_iter()
            .filter(mine)
            .collect();
        let mut proc: Vec<Listener> = from_proc().into_iter().filter(mine).collect();
        let key = |l: &Listener| (l.port, l.addr, l.uid);
        nl.sort_by_key(key);
        proc.sort_by_key(key);
        assert_eq!(nl, proc);
        assert_eq!(nl.len(), ours.len(), "{:?}", nl);
        assert!(nl.iter().all(|l| l.addr.is_loopback()));
    }
}
