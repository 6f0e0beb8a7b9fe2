//! The SO_REUSEPORT listening group: one socket per worker on the same address.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{SocketAddr, TcpListener};

/// Binds `n` listening sockets on `addr` with SO_REUSEPORT; `transparent` also asks for
/// IP_TRANSPARENT, which TPROXY rules need (it takes CAP_NET_ADMIN: without it a
/// warning says so, and REDIRECT rules still work).
///
/// The kernel would happily let a second process join the group and take a share of the
/// connections, so first a socket WITHOUT SO_REUSEPORT checks that nobody holds the port.
pub fn bind_group(
    addr: SocketAddr,
    n: usize,
    transparent: bool,
) -> Result<Vec<TcpListener>, String> {
    let mut addr = addr;
    {
        let probe = new_socket(addr).map_err(|e| format!("cannot create socket: {e}"))?;
        // SO_REUSEADDR only lets us pass TIME_WAIT leftovers; it never shares a live listener
        let _ = probe.set_reuse_address(true);
        probe.bind(&SockAddr::from(addr)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("cannot listen on {addr}: address already in use by another process")
            } else {
                format!("cannot listen on {addr}: {e}")
            }
        })?;
        if addr.port() == 0 {
            addr = probe
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or("cannot read the chosen port")?;
        }
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = new_socket(addr).map_err(|e| format!("cannot create socket: {e}"))?;
        let _ = s.set_reuse_address(true);
        s.set_reuse_port(true)
            .map_err(|e| format!("SO_REUSEPORT unavailable: {e}"))?;
        if transparent {
            let r = match addr {
                SocketAddr::V4(_) => s.set_ip_transparent(true),
                SocketAddr::V6(_) => set_ipv6_transparent(&s),
            };
            if let Err(e) = r {
                if out.is_empty() {
                    tracing::warn!(
                        "transparent mode: IP_TRANSPARENT refused ({e}): TPROXY rules will not \
                         reach luring (it needs CAP_NET_ADMIN); REDIRECT rules still work"
                    );
                }
            }
        }
        s.bind(&SockAddr::from(addr))
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        s.listen(4096)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        s.set_nonblocking(true)
            .map_err(|e| format!("cannot set non-blocking: {e}"))?;
        out.push(s.into());
    }
    Ok(out)
}

/// IPV6_TRANSPARENT, which socket2 only offers for IPv4.
fn set_ipv6_transparent(s: &Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from `on`, which outlives the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_IPV6,
            libc::IPV6_TRANSPARENT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn new_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_port_held_by_another_socket() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_group(held.local_addr().unwrap(), 2, false).unwrap_err();
        assert!(err.contains("already in use"), "{err}");
    }

    #[test]
    fn ephemeral_group_shares_one_port() {
        let g = bind_group("127.0.0.1:0".parse().unwrap(), 3, false).unwrap();
        let ports: Vec<u16> = g.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0));
    }
}
