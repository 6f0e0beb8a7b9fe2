//! Reaching an upstream: name resolution, connect with timeout, TLS over a new or an
//! already open connection.

use crate::io::{Backend, Stream};
use crate::metrics::{self, UpstreamFailure as Failure};
use crate::proxy::worker_tls::{Alpn, WorkerTls};
use bytes::BytesMut;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::time::Duration;

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
    pub tls_info: Option<Box<crate::tls::TlsInfo>>,
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

impl ConnectError {
    /// The status and text of the answer a client gets for it.
    pub fn answer(self) -> (u16, String) {
        match self {
            ConnectError::Timeout(t) => (504, t),
            ConnectError::Resolve(t) | ConnectError::Connect(t) => (502, t),
        }
    }

    /// The text alone.
    pub fn text(&self) -> &str {
        match self {
            ConnectError::Timeout(t) | ConnectError::Resolve(t) | ConnectError::Connect(t) => t,
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

/// A timeout error, counted.
fn timed_out(text: String) -> ConnectError {
    metrics::upstream_failed(Failure::Timeout);
    ConnectError::Timeout(text)
}

/// Opens a new connection to `host:port` within `timeout`, with TLS when `tls` is given.
pub async fn connect(
    backend: Backend,
    host: &str,
    port: u16,
    timeout: Duration,
    tls: Option<&WorkerTls>,
) -> Result<Upstream, ConnectError> {
    connect_offering(backend, host, port, timeout, tls, Alpn::Http1).await
}

/// [`connect`] offering `alpn` in the TLS handshake.
pub async fn connect_offering(
    backend: Backend,
    host: &str,
    port: u16,
    timeout: Duration,
    tls: Option<&WorkerTls>,
    alpn: Alpn,
) -> Result<Upstream, ConnectError> {
    let fut = async {
        let addr = resolve(host, port)
            .await
            .inspect_err(|_| metrics::upstream_failed(Failure::Dns))?;
        let mut stream = Stream::connect(backend, addr).await.map_err(|e| {
            metrics::upstream_failed(Failure::Refused);
            ConnectError::Connect(format!(
                "cannot connect to upstream {addr}: {}",
                describe(&e)
            ))
        })?;
        let tls_info = match tls {
            Some(t) => Some(Box::new(
                t.connect(&mut stream, host, alpn, timeout)
                    .await
                    .map_err(|e| {
                        metrics::upstream_failed(Failure::Tls);
                        ConnectError::Connect(e)
                    })?,
            )),
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
        Err(_) => Err(timed_out(format!(
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
    tls: &WorkerTls,
    alpn: Alpn,
) -> Result<Upstream, ConnectError> {
    match tokio::time::timeout(timeout, tls.connect(&mut up.stream, host, alpn, timeout)).await {
        Ok(Ok(info)) => {
            up.tls_info = Some(Box::new(info));
            Ok(up)
        }
        Ok(Err(t)) => {
            up.stream.shutdown(Shutdown::Both);
            metrics::upstream_failed(Failure::Tls);
            Err(ConnectError::Connect(t))
        }
        Err(_) => {
            up.stream.shutdown(Shutdown::Both);
            Err(timed_out(format!(
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
