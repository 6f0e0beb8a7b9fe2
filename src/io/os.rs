//! Small calls on descriptors that the std library does not wrap.

use std::os::fd::{AsRawFd, RawFd};

/// Takes an exclusive advisory lock on `file` (flock), held until the file is closed.
pub fn lock_exclusive(file: &std::fs::File) {
    // SAFETY: flock on a descriptor the caller owns; no memory is passed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
}

/// Shuts a listening socket down so a pending accept returns at once.
///
/// The caller must own `fd` and keep it open until the accept loop has ended.
pub fn shutdown_listener(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor the caller owns and keeps open; no memory is passed.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// The address a redirected connection was really for, and whether the kernel
/// redirected it: the NAT original destination (iptables/nftables REDIRECT,
/// `SO_ORIGINAL_DST`, IPv4 and IPv6; true), else the local address (false; under
/// TPROXY that is the original destination).
/// Whether the peer of a connected socket has closed or reset it, without reading:
/// a non-blocking MSG_PEEK sees end of stream (0) or an error; bytes waiting, or none
/// yet, mean the peer is still there.
pub fn peer_gone(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv writes at most one byte into `b`, which outlives the call.
    let r = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match r {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN | libc::EINTR)
        ),
    }
}

pub fn original_dst(fd: RawFd) -> std::io::Result<(std::net::SocketAddr, bool)> {
    // SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv4.h, ..._ipv6.h)
    const SO_ORIGINAL_DST: libc::c_int = 80;
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    for level in [libc::SOL_IP, libc::SOL_IPV6] {
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `ss`, which outlives the call.
        let r = unsafe {
            libc::getsockopt(
                fd,
                level,
                SO_ORIGINAL_DST,
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if r == 0 {
            return sockaddr_of(&ss).map(|a| (a, true));
        }
    }
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above, getsockname into a storage-sized buffer.
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sockaddr_of(&ss).map(|a| (a, false))
}

fn sockaddr_of(ss: &libc::sockaddr_storage) -> std::io::Result<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Ok(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Ok(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        f => Err(std::io::Error::other(format!("address family {f}"))),
    }
}

/// One descriptor held back for the moment the process runs out of them (EMFILE): the
/// worker gives it up to accept the connections waiting in the backlog and refuse
/// them at once, instead of leaving them queued with no answer while every accept
/// fails.
pub struct FdReserve(Option<std::fs::File>);

impl Default for FdReserve {
    fn default() -> FdReserve {
        FdReserve(std::fs::File::open("/dev/null").ok())
    }
}

impl FdReserve {
    /// Frees the reserve, accepts up to `max` waiting connections on the non-blocking
    /// listening socket `listen_fd`, writes `answer` to each without waiting and
    /// closes it, then takes the reserve back. Returns how many were refused.
    pub fn refuse_waiting(&mut self, listen_fd: RawFd, answer: &[u8], max: usize) -> usize {
        use std::os::fd::{FromRawFd, OwnedFd};
        self.0 = None;
        let mut refused = 0;
        while refused < max {
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            // SAFETY: accept4 on a listening descriptor the caller owns, without an
            // address buffer (both pointers null).
            let fd = unsafe {
                libc::accept4(listen_fd, std::ptr::null_mut(), std::ptr::null_mut(), flags)
            };
            if fd < 0 {
                break;
            }
            // SAFETY: accept4 just returned this descriptor and nothing else owns it.
            let conn = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: send(2) reads `answer.len()` bytes from a live slice; a full socket
            // buffer or a gone peer only makes the answer shorter or absent.
            unsafe {
                libc::send(
                    conn.as_raw_fd(),
                    answer.as_ptr().cast(),
                    answer.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            drop(conn);
            refused += 1;
        }
        self.0 = std::fs::File::open("/dev/null").ok();
        refused
    }
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does at start):
/// soft limits are often 1024, far below what `--max-connections` allows. Returns the
/// limit in force afterwards, or None if it cannot be read.
pub fn raise_nofile() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads `raised`, which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn reserve_refuses_waiting_connections_up_to_max() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let mut clients: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut reserve = FdReserve::default();
        assert!(reserve.0.is_some());
        assert_eq!(reserve.refuse_waiting(l.as_raw_fd(), b"busy", 2), 2);
        assert_eq!(reserve.refuse_waiting(l.as_raw_fd(), b"busy", 2), 1);
        assert_eq!(reserve.refuse_waiting(l.as_raw_fd(), b"busy", 2), 0);
        assert!(reserve.0.is_some(), "the reserve is taken back");
        for c in &mut clients {
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            assert_eq!(got, b"busy");
        }
    }
}
