//! The start-up warnings of a listener other hosts can reach: luring forwards for
//! anyone who can connect, so on a non-loopback address without `--proxy-auth` it is an
//! open proxy; its metrics port has no authentication at all.

use crate::config::Mode;
use std::net::SocketAddr;

/// The warning for the main listener on `addr`, if any: a mode where clients name the
/// destination (regular, upstream, socks5) on a non-loopback address without
/// `--proxy-auth`. Reverse mode serves one upstream, and a transparent listener takes
/// only connections the kernel redirected (one made to luring itself is refused as a
/// loop): neither forwards where a stranger asks.
pub fn listener_warning(addr: SocketAddr, mode: &Mode, proxy_auth: bool) -> Option<String> {
    if addr.ip().is_loopback() || proxy_auth || matches!(mode, Mode::Reverse(_) | Mode::Transparent)
    {
        return None;
    }
    Some(format!(
        "warning: listening on {addr}, which is not a loopback address, without \
         --proxy-auth: anyone who can reach it can use luring as an open proxy (to any \
         host, with luring's address), and clients that trust luring's CA are intercepted \
         by it; set --proxy-auth USER:PASS, limit what is intercepted with --allow-hosts / \
         --ignore-hosts, and firewall the port to the clients that should use it"
    ))
}

/// The warning for the metrics listener on `addr`, if any.
pub fn metrics_warning(addr: SocketAddr) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "warning: metrics on {addr}, which is not a loopback address: /metrics and \
         /healthz have no authentication and describe luring's traffic and plugins; \
         bind them to 127.0.0.1 or firewall the port"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reachable_unauthenticated_forwarding_listeners_warn() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let w = listener_warning(any, &Mode::Regular, false).unwrap();
        assert!(
            w.contains("open proxy") && w.contains("--proxy-auth"),
            "{w}"
        );
        assert!(listener_warning(any, &Mode::Socks5, false).is_some());
        assert!(listener_warning(any, &Mode::Transparent, false).is_none());
        assert!(listener_warning(any, &Mode::Regular, true).is_none());
        assert!(listener_warning(lo, &Mode::Regular, false).is_none());
        assert!(listener_warning(lo6, &Mode::Regular, false).is_none());
        assert!(metrics_warning(any).unwrap().contains("no authentication"));
        assert!(metrics_warning(lo).is_none());
    }
}
