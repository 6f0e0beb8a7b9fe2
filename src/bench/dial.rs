//! The driver's connections: plain TCP, TLS (SNI from the recorded host), and TLS
//! inside a CONNECT tunnel through a forward proxy. An endpoint says how to reach one
//! kind of connection; every endpoint of a target is made once, before the run, so a
//! request only carries the endpoint's index.

use bytes::Bytes;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How to open one kind of connection to the target.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// TLS with this server name (SNI; an IP address is verified but not sent).
    pub tls: Option<ServerName<'static>>,
    /// A CONNECT request sent to the forward proxy first.
    pub tunnel: Option<Bytes>,
    /// HTTP/2 in a tunnel (ALPN h2), for requests recorded over HTTP/2.
    pub h2: bool,
}

impl Endpoint {
    /// A plain TCP connection to the target.
    pub fn plain() -> Endpoint {
        Endpoint {
            tls: None,
            tunnel: None,
            h2: false,
        }
    }
}

/// The server name of a recorded authority (`host[:port]`, `[v6]:port`).
pub fn server_name(authority: &str) -> Result<ServerName<'static>, String> {
    let host = host_of(authority);
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))
}

/// The host part of `host[:port]` without IPv6 brackets.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The CONNECT request for `authority`, port 443 added when it has none.
pub fn connect_request(authority: &str) -> Bytes {
    let has_port = match authority.rsplit_once(':') {
        Some((h, p)) => !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && !h.is_empty(),
        None => false,
    } && !authority.ends_with(']');
    let hp = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    Bytes::from(format!("CONNECT {hp} HTTP/1.1\r\nHost: {hp}\r\n\r\n"))
}

/// TLS client settings of `luring bench run`.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA files trusted (`--cacert`), besides the public roots.
    pub cacert: Vec<PathBuf>,
    /// Accept any certificate (`--insecure`).
    pub insecure: bool,
}

impl ClientTls {
    /// A connector offering `alpn`, with luring's upstream verifier (the public roots,
    /// the `--cacert` files, a CA file trusted as a server certificate too).
    pub fn connector(&self, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsConnector, String> {
        let f = crate::tls::ClientTlsFactory::new(&crate::tls::UpstreamTlsOptions {
            insecure: self.insecure,
            extra_ca_files: self.cacert.clone(),
            native_roots: false,
            client_certs: Vec::new(),
        })
        .map_err(|e| e.to_string())?;
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(tokio_rustls::TlsConnector::from(f.config_for("", &alpn)))
    }
}

/// One target's ways to connect.
pub struct Dialer {
    /// The target's (or forward proxy's) address.
    pub addr: SocketAddr,
    /// The endpoints, indexed by `Prepared::endpoint`.
    pub endpoints: Vec<Endpoint>,
    /// The TLS client of the endpoints that have a server name (ALPN as the
    /// target's scheme says).
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// The TLS client of the `h2` endpoints (ALPN h2).
    pub tls_h2: Option<tokio_rustls::TlsConnector>,
}

/// A connection to a target: plain or TLS (sessions are resumed by rustls' cache).
pub enum Conn {
    /// TCP.
    Plain(TcpStream),
    /// TLS over TCP (directly or inside a CONNECT tunnel).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// The TLS handshake chose h2 (ALPN).
    pub fn is_h2(&self) -> bool {
        match self {
            Conn::Plain(_) => false,
            Conn::Tls(t) => t.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl Dialer {
    /// Opens a connection of endpoint `ep`: TCP, the CONNECT exchange, the TLS
    /// handshake, as the endpoint says. The error is the kind counted.
    pub async fn dial(&self, ep: u32) -> Result<Conn, &'static str> {
        let e = &self.endpoints[ep as usize];
        let mut s = TcpStream::connect(self.addr).await.map_err(|_| "connect")?;
        let _ = s.set_nodelay(true);
        if let Some(req) = &e.tunnel {
            tunnel(&mut s, req).await?;
        }
        let connector = if e.h2 { &self.tls_h2 } else { &self.tls };
        match (&e.tls, connector) {
            (Some(name), Some(tls)) => {
                let t = tls.connect(name.clone(), s).await.map_err(|_| "tls")?;
                Ok(Conn::Tls(Box::new(t)))
            }
            _ => Ok(Conn::Plain(s)),
        }
    }
}

/// Sends a CONNECT request and reads the proxy's answer head (nothing follows it
/// before the client speaks, so reading up to the empty line takes nothing more).
async fn tunnel(s: &mut TcpStream, req: &[u8]) -> Result<(), &'static str> {
    s.write_all(req).await.map_err(|_| "connect")?;
    let mut head = [0u8; 4096];
    let mut n = 0;
    loop {
        if n == head.len() {
            return Err("tunnel");
        }
        let k = s.read(&mut head[n..]).await.map_err(|_| "tunnel")?;
        if k == 0 {
            return Err("tunnel");
        }
        n += k;
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(&head[..n]) {
            Ok(httparse::Status::Complete(used)) if used == n => {
                return match r.code {
                    Some(c) if (200..300).contains(&c) => Ok(()),
                    _ => Err("tunnel"),
                };
            }
            Ok(httparse::Status::Partial) => {}
            _ => return Err("tunnel"),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A worker's open HTTP/1.1 connections, by endpoint; a handful at most, so a scan
/// is the cheapest lookup.
#[derive(Default)]
pub struct Conns {
    open: Vec<(u32, Conn)>,
}

/// Most connections one worker keeps open (one per endpoint it used lately).
const MAX_OPEN: usize = 8;

impl Conns {
    /// Takes the open connection of endpoint `ep`, if any.
    pub fn take(&mut self, ep: u32) -> Option<Conn> {
        let i = self.open.iter().position(|(e, _)| *e == ep)?;
        // kept in order of last use, so that the first is the one to close
        Some(self.open.remove(i).1)
    }

    /// Keeps `c` for endpoint `ep`, closing the least recently used beyond the cap.
    pub fn put(&mut self, ep: u32, c: Conn) {
        if self.open.len() >= MAX_OPEN {
            self.open.remove(0);
        }
        self.open.push((ep, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_connect_lines() {
        assert_eq!(host_of("shop.example"), "shop.example");
        assert_eq!(host_of("shop.example:8443"), "shop.example");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(
            &connect_request("a.example")[..],
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
        );
        assert_eq!(
            &connect_request("127.0.0.1:9")[..],
            b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
        );
        assert_eq!(
            &connect_request("[::1]")[..],
            b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"
        );
        assert!(matches!(
            server_name("127.0.0.1:5").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("shop.example").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad name:1").is_err());
    }
}
