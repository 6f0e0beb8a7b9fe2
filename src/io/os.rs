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
