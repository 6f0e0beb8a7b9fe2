//! Upstream connections: name resolution, connect with timeout, and the per-worker
//! keep-alive pool keyed by (scheme, host, port).

use crate::io::{Backend, Stream};
use crate::proxy::tls::Alpn;
use bytes::BytesMut;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Pool key. Cheap to clone (shared strings): a connection keeps the key of its last
/// request and reuses it while requests go to the same place.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// "http" or "https".
    pub scheme: Rc<str>,
    /// Host as named by the request.
    pub host: Rc<str>,
    /// Port.
    pub port: u16,
}

impl Key {
    /// The key of a request to `authority` ("host[:port]") with `scheme`.
    pub fn new(scheme: &str, authority: &str) -> Key {
        let (host, port) = crate::http::host_port_of(scheme, authority);
        Key {
            scheme: scheme.into(),
            host: host.into(),
            port,
        }
    }
}

/// A connection to an upstream, with its read buffer.
pub struct Upstream {
    /// The socket.
    pub stream: Stream,
    /// Bytes read but not yet consumed.
    pub buf: BytesMut,
    /// Peer address.
    pub addr: SocketAddr,
    /// True when taken from the pool (so a failure before any response byte may be retried).
    pub reused: bool,
    /// Handshake details of a new TLS connection (for tls.on_handshake).
    pub tls_info: Option<crate::tls::TlsInfo>,
}

/// Why an upstream could not be reached; the text goes into the 502/504 body.
#[derive(Debug)]
pub enum ConnectError {
    /// Name did not resolve (502).
    Resolve(String),
    /// Connect failed (502).
    Connect(String),
    /// Connect timed out (504).
    Timeout(String),
}

struct Idle {
    stream: Stream,
    /// Kept so the next exchange reads into the spare capacity left by this one.
    buf: BytesMut,
    addr: SocketAddr,
    since: Instant,
}

/// Per-worker pool of idle upstream connections (no locks: one worker owns it).
pub struct Pool {
    idle: RefCell<FxHashMap<Key, Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// An empty pool.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: RefCell::new(FxHashMap::default()),
            max_idle,
            idle_timeout,
        }
    }

    /// Takes the most recently used idle connection for `key`, if one is fresh enough.
    /// With `probe`, each candidate is first checked with
    /// a non-blocking peek and skipped when the upstream has closed it meanwhile: a
    /// request that cannot be sent twice gets no retry, so it should not meet a stale
    /// connection.
    pub fn take(&self, key: &Key, probe: bool) -> Option<Upstream> {
        let mut map = self.idle.borrow_mut();
        let list = map.get_mut(key)?;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < self.idle_timeout && (!probe || i.stream.is_idle_and_open()) {
                return Some(Upstream {
                    stream: i.stream,
                    buf: i.buf,
                    addr: i.addr,
                    reused: true,
                    tls_info: None,
                });
            }
            i.stream.shutdown(Shutdown::Both);
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly.
    pub fn put(&self, key: Key, up: Upstream) {
        if !up.buf.is_empty() || self.max_idle == 0 {
            // unsolicited bytes after a complete response: the connection is out of sync
            up.stream.shutdown(Shutdown::Both);
            return;
        }
        let mut map = self.idle.borrow_mut();
        let list = map.entry(key).or_default();
        if list.len() >= self.max_idle {
            let old = list.remove(0);
            old.stream.shutdown(Shutdown::Both);
        }
        list.push(Idle {
            stream: up.stream,
            buf: up.buf,
            addr: up.addr,
            since: Instant::now(),
        });
    }

    /// Number of idle connections (all keys).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Closes expired idle connections now and then, for the worker's lifetime.
    pub async fn reap_forever(&self) {
        let period =
            (self.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::time::sleep(period).await;
            let mut map = self.idle.borrow_mut();
            for list in map.values_mut() {
                list.retain(|i| {
                    let keep = i.since.elapsed() < self.idle_timeout;
                    if !keep {
                        i.stream.shutdown(Shutdown::Both);
                    }
                    keep
                });
            }
            map.retain(|_, l| !l.is_empty());
        }
    }
}

/// Resolves `host` without blocking the worker: literals and "localhost" directly,
/// other names on tokio's blocking pool.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addrs) => addrs.next().ok_or_else(|| {
            ConnectError::Resolve(format!("cannot resolve host '{host}': no address"))
        }),
        Err(e) => Err(ConnectError::Resolve(format!(
            "cannot resolve host '{host}': {e}"
        ))),
    }
}

/// Opens a new connection to `host:port` within `timeout`, with TLS when `tls` is given.
pub async fn connect(
    backend: Backend,
    host: &str,
    port: u16,
    timeout: Duration,
    tls: Option<&crate::proxy::tls::WorkerTls>,
) -> Result<Upstream, ConnectError> {
    connect_offering(backend, host, port, timeout, tls, Alpn::Http1).await
}

/// [`connect`] offering `alpn` in the TLS handshake.
pub async fn connect_offering(
    backend: Backend,
    host: &str,
    port: u16,
    timeout: Duration,
    tls: Option<&crate::proxy::tls::WorkerTls>,
    alpn: Alpn,
) -> Result<Upstream, ConnectError> {
    let fut = async {
        let addr = resolve(host, port).await?;
        let mut stream = Stream::connect(backend, addr).await.map_err(|e| {
            ConnectError::Connect(format!(
                "cannot connect to upstream {addr}: {}",
                describe(&e)
            ))
        })?;
        let tls_info = match tls {
            Some(t) => Some(
                t.connect(&mut stream, host, alpn, timeout)
                    .await
                    .map_err(ConnectError::Connect)?,
            ),
            None => None,
        };
        Ok(Upstream {
            stream,
            buf: BytesMut::new(),
            addr,
            reused: false,
            tls_info,
        })
    };
    // a timed-out io_uring connect op keeps its own socket; it is closed when the op ends
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(format!(
            "upstream {host}:{port} did not accept the connection within {timeout:?}"
        ))),
    }
}

/// Runs the TLS client handshake over `up`, a plain connection already open to `host`
/// (a CONNECT tunnel's), within `timeout`.
pub async fn secure(
    mut up: Upstream,
    host: &str,
    timeout: Duration,
    tls: &crate::proxy::tls::WorkerTls,
    alpn: Alpn,
) -> Result<Upstream, ConnectError> {
    match tokio::time::timeout(timeout, tls.connect(&mut up.stream, host, alpn, timeout)).await {
        Ok(Ok(info)) => {
            up.tls_info = Some(info);
            Ok(up)
        }
        Ok(Err(t)) => {
            up.stream.shutdown(Shutdown::Both);
            Err(ConnectError::Connect(t))
        }
        Err(_) => {
            up.stream.shutdown(Shutdown::Both);
            Err(ConnectError::Timeout(format!(
                "upstream {host} did not finish the TLS handshake within {timeout:?}"
            )))
        }
    }
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}
