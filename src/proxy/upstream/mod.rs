//! Upstream connections: name resolution, connect with timeout, TLS over an open
//! connection; the keep-alive pool in [`pool`], and the HTTP legs by upstream version.

pub mod connect;
pub mod h1;
pub mod h2;
pub mod pool;

pub use connect::{connect, connect_offering, secure, Chain, ConnectError, Upstream};
pub use pool::{Key, Pool};

use crate::proxy::worker::{Counters, Worker};
use crate::proxy::worker_tls::Alpn;
use std::net::Shutdown;

/// The plain connection an accepted tunnel opened: the first TLS connection to the same
/// host and port is made over it instead of a new socket.
pub struct Spare {
    /// Host the tunnel named.
    pub host: String,
    /// Port the tunnel named.
    pub port: u16,
    /// The connection.
    pub up: Upstream,
}

/// An idle pooled connection for `key` (see [`Pool::take`]), counted as a reuse.
pub fn reuse(w: &Worker, key: &Key) -> Option<Upstream> {
    let up = w.pool.take(key)?;
    Counters::bump(&w.counters.upstream_reuses);
    Some(up)
}

/// A plain connection to `host:port` for bytes that go as they are (a CONNECT or
/// SOCKS5 tunnel): direct, or through the chained proxy's CONNECT.
pub async fn dial(w: &Worker, host: &str, port: u16) -> Result<Upstream, ConnectError> {
    let t = w.timeouts.connect;
    match &w.chain {
        Some(c) => c.tunnel(w.backend, host, port, t).await,
        None => connect(w.backend, host, port, t, None).await,
    }
}

/// A new connection for `key` (TLS offering `alpn` for https), over the tunnel's
/// `spare` connection when it goes to the same place; counted. Callers go through
/// `hooks::open_upstream`, which fires tls.on_handshake.
pub async fn open(
    w: &Worker,
    key: &Key,
    alpn: Alpn,
    spare: Option<Spare>,
) -> Result<Upstream, ConnectError> {
    Counters::bump(&w.counters.upstream_connects);
    let timeout = w.timeouts.connect;
    let https = &*key.scheme == "https";
    let up = match spare {
        Some(s) if https && *s.host == *key.host && s.port == key.port => {
            secure(s.up, &key.host, timeout, &w.tls, alpn).await?
        }
        other => {
            if let Some(s) = other {
                s.up.stream.shutdown(Shutdown::Both);
            }
            match &w.chain {
                // TLS through the chained proxy's CONNECT; plain HTTP to the proxy itself
                Some(c) if https => {
                    let t = c.tunnel(w.backend, &key.host, key.port, timeout).await?;
                    secure(t, &key.host, timeout, &w.tls, alpn).await?
                }
                Some(c) => c.connect(w.backend, timeout).await?,
                None => {
                    let tls = https.then_some(&w.tls);
                    connect_offering(w.backend, &key.host, key.port, timeout, tls, alpn).await?
                }
            }
        }
    };
    Ok(up)
}
