//! The kernel's own list of listening TCP sockets, through sock_diag netlink
//! (`linux/inet_diag.h`), as `ss -l` asks for it: only LISTEN sockets are dumped, so the
//! cost does not grow with the connections a server holds (`/proc/net/tcp` walks and
//! prints them all). Requests and replies are built and read as bytes in the kernel's
//! layout; nothing here trusts a length it has not checked.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const TCP_LISTEN: u32 = 10;
/// `struct nlmsghdr`.
const HEADER: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, the socket id (ports,
/// addresses, interface, cookie: 48 bytes), expires, queues, uid, inode.
const MSG: usize = 72;

/// The dump request for the LISTEN TCP sockets of `family`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + 56);
    r.extend_from_slice(&((HEADER + 56) as u32).to_ne_bytes());
    r.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r.extend_from_slice(&seq.to_ne_bytes());
    r.extend_from_slice(&0u32.to_ne_bytes());
    // struct inet_diag_req_v2: family, protocol, extensions, pad, states, socket id.
    r.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    r.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    r.extend_from_slice(&[0u8; 48]);
    r
}

/// A LISTEN socket as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub addr: IpAddr,
    pub port: u16,
    /// The owner's uid.
    pub uid: u32,
    /// The socket's inode: `/proc/PID/fd/N` links to `socket:[inode]`.
    pub inode: u32,
}

/// One `inet_diag_msg`: address, port, owner, inode.
fn listener(m: &[u8]) -> Option<Listening> {
    let m = m.get(..MSG)?;
    let port = u16::from_be_bytes([m[4], m[5]]);
    let src: [u8; 16] = m[8..24].try_into().ok()?;
    let addr = match i32::from(m[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(src)),
        _ => return None,
    };
    let uid = u32::from_ne_bytes(m[64..68].try_into().ok()?);
    let inode = u32::from_ne_bytes(m[68..72].try_into().ok()?);
    Some(Listening {
        addr,
        port,
        uid,
        inode,
    })
}

/// Every LISTEN TCP socket of this network namespace, IPv4 and IPv6.
pub fn tcp_listeners() -> io::Result<Vec<Listening>> {
    // SAFETY: plain socket(2) arguments; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor socket(2) just returned, owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        let req = request(family, seq);
        // SAFETY: a live socket and a buffer of the length given; the kernel is
        // the destination when no address is given to a netlink socket.
        let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        'dump: loop {
            // SAFETY: a live socket and a buffer of the length given.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            if rest.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink ended the dump early",
                ));
            }
            while rest.len() >= HEADER {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < HEADER || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a truncated netlink message",
                    ));
                }
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => {
                        let errno = rest
                            .get(HEADER..HEADER + 4)
                            .map_or(0, |e| i32::from_ne_bytes(e.try_into().expect("4 bytes")));
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    SOCK_DIAG_BY_FAMILY => out.extend(listener(&rest[HEADER..len])),
                    _ => {}
                }
                // Messages are 4-byte aligned; the last may end without its padding.
                rest = rest.get((len + 3) & !3..).unwrap_or_default();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A socket this test listens on is listed with its port, owner and the inode its
    /// descriptor links to.
    #[test]
    fn lists_a_real_listener_with_its_inode() {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", sock.as_raw_fd())).unwrap();
        let found: Vec<Listening> = tcp_listeners()
            .unwrap()
            .into_iter()
            .filter(|l| l.port == port)
            .collect();
        assert_eq!(found.len(), 1, "{:?}", found);
        assert_eq!(found[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(found[0].uid, crate::process::getuid());
        assert_eq!(
            link.to_str().unwrap(),
            format!("socket:[{}]", found[0].inode)
        );
    }
}
