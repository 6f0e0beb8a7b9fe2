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
    /// The socket's byte counts when this holder got it (a pooled connection carries
    /// earlier clients' bytes).
    pub base: (u64, u64),
    /// A plain connection to the chained proxy (`--mode upstream:URL`): requests on it
    /// go in absolute-form with the proxy's credentials.
    pub via_chain: bool,
}

impl Upstream {
    /// Bytes read from and written to the upstream since this holder got it.
    pub fn moved(&self) -> (u64, u64) {
        let (r, w) = self.stream.bytes_moved();
        (r - self.base.0, w - self.base.1)
    }
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
    /// The TLS handshake with the upstream failed (502).
    Tls(String),
}

impl ConnectError {
    /// The status and text of the answer a client gets for it.
    pub fn answer(self) -> (u16, String) {
        match self {
            ConnectError::Timeout(t) => (504, t),
            ConnectError::Resolve(t) | ConnectError::Connect(t) | ConnectError::Tls(t) => (502, t),
        }
    }

    /// The answer, with the reason hooks see as `msg.error` (spec section 4).
    pub fn flow_error(self) -> crate::proxy::exchange::reply::FlowError {
        let reason = match &self {
            ConnectError::Resolve(t) => format!("dns: {}", t.rsplit(": ").next().unwrap_or(t)),
            ConnectError::Connect(t) if t.ends_with("connection refused") => {
                "connect refused".into()
            }
            ConnectError::Connect(t) => {
                format!("connect failed: {}", t.rsplit(": ").next().unwrap_or(t))
            }
            ConnectError::Timeout(_) => "connect timeout".into(),
            ConnectError::Tls(t) => format!("upstream tls: {}", t.rsplit(": ").next().unwrap_or(t)),
        };
        let (status, text) = self.answer();
        crate::proxy::exchange::reply::FlowError {
            status,
            text,
            reason,
        }
    }

    /// The text alone.
    pub fn text(&self) -> &str {
        match self {
            ConnectError::Timeout(t)
            | ConnectError::Resolve(t)
            | ConnectError::Connect(t)
            | ConnectError::Tls(t) => t,
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
                        ConnectError::Tls(e)
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
            base: (0, 0),
            via_chain: false,
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
            Err(ConnectError::Tls(t))
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

/// The HTTP proxy every upstream connection goes through (`--mode upstream:URL`).
#[derive(Clone, Debug)]
pub struct Chain {
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The `Proxy-Authorization` value for `--upstream-auth USER:PASS`.
    pub auth: Option<String>,
}

impl Chain {
    /// The chain of a config in upstream mode.
    pub fn of(cfg: &crate::config::Config, mode: &crate::config::Mode) -> Option<Chain> {
        let crate::config::Mode::Upstream(u) = mode else {
            return None;
        };
        let auth = cfg.upstream_auth.as_ref().map(|a| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        });
        Some(Chain {
            host: u.host.clone(),
            port: u.port,
            auth,
        })
    }

    /// A plain connection to the proxy itself, for absolute-form requests.
    pub async fn connect(
        &self,
        backend: Backend,
        timeout: Duration,
    ) -> Result<Upstream, ConnectError> {
        let mut up = connect(backend, &self.host, self.port, timeout, None)
            .await
            .map_err(|e| self.relabel(e))?;
        up.via_chain = true;
        Ok(up)
    }

    /// A tunnel to `host:port` through the proxy (CONNECT), ready for TLS or bytes.
    pub async fn tunnel(
        &self,
        backend: Backend,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Upstream, ConnectError> {
        let mut up = connect(backend, &self.host, self.port, timeout, None)
            .await
            .map_err(|e| self.relabel(e))?;
        let authority = crate::http::authority_of(host, port);
        let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(a) = &self.auth {
            head.push_str(&format!("Proxy-Authorization: {a}\r\n"));
        }
        head.push_str("\r\n");
        let asked = async {
            up.stream
                .write_all(bytes::Bytes::from(head))
                .await
                .map_err(|e| format!("writing CONNECT: {e}"))?;
            let limits = crate::proto::http1::Limits::default();
            super::h1::read_response_head(&up.stream, &mut up.buf, &limits, None)
                .await
                .map(|(_, h)| h.status)
                .map_err(|e| format!("{e:?}"))
        };
        let status = match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(s)) => s,
            Ok(Err(why)) => {
                up.stream.shutdown(Shutdown::Both);
                return Err(ConnectError::Connect(format!(
                    "upstream proxy {}:{} did not answer CONNECT {authority}: {why}",
                    self.host, self.port
                )));
            }
            Err(_) => {
                up.stream.shutdown(Shutdown::Both);
                return Err(ConnectError::Timeout(format!(
                    "upstream proxy {}:{} did not answer CONNECT {authority} within {timeout:?}",
                    self.host, self.port
                )));
            }
        };
        if !(200..300).contains(&status) {
            up.stream.shutdown(Shutdown::Both);
            let hint = if status == 407 {
                " (it wants credentials: --upstream-auth)"
            } else {
                ""
            };
            return Err(ConnectError::Connect(format!(
                "upstream proxy {}:{} answered {status} to CONNECT {authority}{hint}",
                self.host, self.port
            )));
        }
        Ok(up)
    }

    fn relabel(&self, e: ConnectError) -> ConnectError {
        let name = format!("upstream proxy {}:{}", self.host, self.port);
        match e {
            ConnectError::Resolve(t) => ConnectError::Resolve(format!("{name}: {t}")),
            ConnectError::Connect(t) => ConnectError::Connect(format!("{name}: {t}")),
            ConnectError::Timeout(t) => ConnectError::Timeout(format!("{name}: {t}")),
            ConnectError::Tls(t) => ConnectError::Tls(format!("{name}: {t}")),
        }
    }
}
