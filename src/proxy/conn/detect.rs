//! Next-layer detection by peeking at the first bytes: what a reverse proxy's client
//! opens with (TLS, the h2c preface, HTTP/1), and who speaks first inside an accepted
//! tunnel (a ClientHello to intercept, HTTP, h2c, or a server-first protocol to relay).

use super::{tls_start, ClientConn, Layer, TlsStart};
use crate::config::Mode;
use crate::io::Stream;
use crate::plugin::Event;
use crate::proto::detect::{is_h2_settings_frame, starts_like_h2_preface, H2_PREFACE};
use crate::proxy::body_relay::{self, READ_BUF};
use crate::proxy::byte_tunnel::{self, Peers, PendingRead};
use crate::proxy::exchange::recording;
use crate::proxy::exchange::route::{Intercept, Target2};
use crate::proxy::front::h1::{H1Route, Tunnel};
use crate::proxy::front::h2::Via;
use crate::proxy::upstream::{Key, Spare};
use crate::proxy::worker_tls::{Alpn, WorkerTls};
use bytes::BytesMut;
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

/// How long a new tunnel waits for the client's first bytes before it also reads the
/// upstream (for server-first protocols: SMTP, SSH banners...).
const CLIENT_FIRST_WAIT: Duration = Duration::from_millis(50);

/// In reverse mode, the first bytes of a connection when they show plain HTTP/1
/// (neither a TLS ClientHello nor the start of the h2c preface): its layer is then
/// known without [`reverse`], whose future is several KiB (a box per connection: an
/// allocation and a copy of it). None: [`reverse`] decides, with the bytes read so far
/// in the client buffer.
pub(super) async fn reverse_plain(c: &mut ClientConn) -> Option<Layer> {
    if !matches!(c.w.mode, Mode::Reverse(_)) {
        return None;
    }
    let io = &mut c.io;
    if io.buf.is_empty() {
        // Into the 2 KiB the connection came with, as read_client_hello reads. By the
        // time an accept's completion is seen the client has usually sent its request:
        // a non-blocking recv takes it without an io_uring read (or, on epoll, a wait
        // for readiness), and without a timer for the head timeout.
        let got = match io.stream.recv_now(&mut io.buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                io.read_deadline.arm(c.w.timeouts.head);
                let deadline = &io.read_deadline;
                body_relay::read_spare_by(&io.stream, &mut io.buf, deadline, usize::MAX).await
            }
            r => r,
        };
        match got {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                tracing::debug!(
                    conn = c.info.conn_id,
                    "client closed before sending anything"
                );
                return Some(Layer::Done);
            }
            Err(e) => {
                tracing::debug!(conn = c.info.conn_id, "reading the first bytes: {e}");
                return Some(Layer::Done);
            }
        }
    }
    let buf = &io.buf[..];
    let h2c = H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]);
    let tls = crate::proto::client_hello::is_tls_client_hello_start(buf) != Some(false);
    (!h2c && !tls).then(|| Layer::Http1(Box::default()))
}

/// Reverse mode terminates TLS from clients and accepts plaintext too: HTTP/1, or h2c
/// with prior knowledge (served by the HTTP/2 front, or relayed with `--no-http2`).
pub(super) async fn reverse(c: &mut ClientConn) -> Layer {
    let w = c.w.clone();
    let Mode::Reverse(up) = &w.mode else {
        return Layer::Done;
    };
    let tls_up = up.scheme == "https";
    c.io.read_deadline.arm(w.timeouts.head);
    match WorkerTls::read_client_hello(&c.io.stream, &mut c.io.buf, &c.io.read_deadline).await {
        Ok(Some(hello)) => Layer::Tls(Box::new(TlsStart {
            hello,
            host: up.host.clone(),
            // requests keep going to the configured upstream: no intercept authority
            authority: None,
            spare: None,
        })),
        Ok(None) if (w.cfg.http2 || !tls_up) && h2c_preface(c).await => {
            if !w.cfg.http2 {
                tracing::info!(
                    conn = c.info.conn_id,
                    "HTTP/2 with prior knowledge; relayed to the upstream unchanged \
                     (--no-http2)"
                );
                return Layer::Relay(up.host.clone(), up.port);
            }
            let target = Target2 {
                scheme: up.scheme.clone(),
                authority: up.authority(),
                path_prefix: up.path_prefix.clone(),
            };
            if tls_up {
                return h2_prior_knowledge(c, target).await;
            }
            // h2c for gRPC, HTTP/1.1 for the rest
            Layer::Http2(Via::Http1OrH2c, target)
        }
        Ok(None) => Layer::Http1(Box::default()),
        Err(why) => {
            tracing::debug!(conn = c.info.conn_id, "{why}");
            Layer::Done
        }
    }
}

/// Whether the client opened with the HTTP/2 connection preface (h2c with prior
/// knowledge, as gRPC's plaintext channels do); reads until that is known.
async fn h2c_preface(c: &mut ClientConn) -> bool {
    // still the head timeout reverse() armed for the ClientHello
    let buf = &mut c.io.buf;
    while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        match body_relay::read_some_by(&c.io.stream, buf, &c.io.read_deadline, usize::MAX).await {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
    }
    buf.starts_with(H2_PREFACE)
}

/// HTTP/2 with prior knowledge (h2c) from the client: served by the HTTP/2 front, over
/// plaintext h2c to an http upstream (a tunnel's target: the client chose h2c with it),
/// or over TLS to an https one (h2 when it chooses h2, else HTTP/1.1).
async fn h2_prior_knowledge(c: &mut ClientConn, target: Target2) -> Layer {
    let (scheme, authority) = (target.scheme.as_str(), target.authority.as_str());
    let via = match tls_start::connect_ahead(c, scheme, authority, Alpn::H2OrHttp1, None).await {
        Ok(u) if scheme == "http" || crate::proxy::worker_tls::chose_h2(&u.stream) => {
            Via::H2(Box::new(u))
        }
        Ok(u) => {
            c.w.pool.put_unused(Key::new(scheme, authority), u);
            Via::Http1
        }
        Err(e) => Via::Failed(e),
    };
    Layer::Http2(via, target)
}

/// Client and upstream bytes that came first in a new tunnel.
#[derive(Default)]
struct FirstBytes {
    client: BytesMut,
    upstream: BytesMut,
}

/// Reads in flight when the tunnel's layer is chosen, client's then upstream's (an
/// io_uring read cannot be cancelled: it is handed to the relay).
type Pending<'a> = [Option<PendingRead<'a>>; 2];

/// Reads who speaks first: the client within [`CLIENT_FIRST_WAIT`], else whichever
/// side does, into `first`. False when either side closed first.
async fn first_bytes<'a>(
    client: &'a Stream,
    upstream: &'a Stream,
    first: &mut FirstBytes,
    pending: &mut Pending<'a>,
) -> bool {
    // Most tunnels carry a client-first protocol (TLS, HTTP). Waiting for the client a
    // moment before reading the upstream leaves no upstream read in flight when it
    // speaks, so plain HTTP inside can reuse this connection.
    let mut client_read: PendingRead<'_> =
        Box::pin(client.read(BytesMut::with_capacity(16 * 1024)));
    if let Ok((res, b)) = tokio::time::timeout(CLIENT_FIRST_WAIT, &mut client_read).await {
        first.client = b;
        return matches!(res, Ok(n) if n > 0);
    }
    let mut upstream_read: PendingRead<'_> =
        Box::pin(upstream.read(BytesMut::with_capacity(READ_BUF)));
    tokio::select! {
        (res, b) = &mut client_read => {
            first.client = b;
            pending[1] = Some(upstream_read);
            matches!(res, Ok(n) if n > 0)
        }
        (res, b) = &mut upstream_read => {
            first.upstream = b;
            pending[0] = Some(client_read);
            matches!(res, Ok(n) if n > 0)
        }
    }
}

/// Transparent mode: the connection was redirected here; it goes on as a tunnel to
/// its original destination. A connection for luring's own listener is refused (a
/// redirect rule that also catches luring's upstream traffic would loop forever).
pub(super) async fn transparent(c: &mut ClientConn) -> Layer {
    let conn = c.info.conn_id;
    let (dst, redirected) = match c.io.stream.raw_fd().map(crate::io::os::original_dst) {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            tracing::info!(conn, "transparent: no original destination: {e}");
            return Layer::Done;
        }
        None => return Layer::Done,
    };
    // Without a NAT redirect the destination is the local address: under a TPROXY
    // rule that is the address the client asked for, and only a connection made to
    // luring's own listener (directly, or a rule that loops) ends at luring itself.
    if c.w.listen_addr.is_some_and(|l| is_own_listener(l, dst)) {
        tracing::warn!(
            conn,
            "transparent: a connection for luring's own listener {dst} (not redirected, \
             or a redirect loop: exclude luring's own traffic from the rule); refused"
        );
        return Layer::Done;
    }
    tracing::trace!(conn, %dst, redirected, "transparent: original destination");
    let host = dst.ip().to_string();
    let up = match crate::proxy::upstream::dial(&c.w, &host, dst.port()).await {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(conn, "transparent: {}", e.text());
            return Layer::Done;
        }
    };
    c.info.server_addr = Some(up.addr);
    Layer::Tunnel(Box::new(Tunnel {
        authority: crate::http::authority_of(&host, dst.port()),
        host,
        port: dst.port(),
        up,
        by_sni: true,
    }))
}

/// An accepted tunnel, its upstream connected: who speaks first decides between TLS
/// interception, HTTP inside the tunnel, and a relay of the bytes as they are.
pub(super) async fn inside_tunnel(c: &mut ClientConn, t: Box<Tunnel>) -> Layer {
    let t = *t;
    let w = c.w.clone();
    let engine = w.engine();
    let engine = engine.as_deref();
    let mut first = FirstBytes {
        client: std::mem::take(&mut c.io.buf),
        upstream: BytesMut::new(),
    };
    let mut pending: Pending<'_> = [None, None];
    if first.client.is_empty()
        && !first_bytes(&c.io.stream, &t.up.stream, &mut first, &mut pending).await
    {
        drop(pending);
        c.io.stream.shutdown(Shutdown::Both);
        t.up.stream.shutdown(Shutdown::Both);
        return Layer::Done;
    }
    // An h2c server may send its SETTINGS before the client's preface arrives: that is
    // not a server-first protocol, so the client's bytes decide.
    if w.cfg.http2 && is_h2_settings_frame(&first.upstream) {
        if let Some(mut client_read) = pending[0].take() {
            match tokio::time::timeout(w.timeouts.head, &mut client_read).await {
                Ok((Ok(n), b)) if n > 0 => first.client = b,
                Ok(_) => {
                    t.up.stream.shutdown(Shutdown::Both);
                    return Layer::Done;
                }
                Err(_) => pending[0] = Some(client_read),
            }
        }
    }
    let (host, port) = (t.host.as_str(), t.port);
    let client_first = pending[0].is_none();
    let upstream_idle = pending[1].is_none() && t.up.buf.is_empty() && first.upstream.is_empty();
    let hooks_raw = engine.is_some_and(|e| e.has(Event::RawChunk));
    let early = &first.client;
    if client_first && crate::proto::client_hello::is_tls_client_hello_start(early) != Some(false) {
        c.io.read_deadline.arm(w.timeouts.head);
        let deadline = &c.io.read_deadline;
        match WorkerTls::read_client_hello(&c.io.stream, &mut first.client, deadline).await {
            // the passthrough rules see both names, as in mitmproxy
            Ok(Some(hello)) if w.tls.intercepts_any(host, hello.sni.as_deref(), port) => {
                drop(pending);
                // a transparent connection's target is an address: the SNI names it
                let (name, authority) = match hello.sni.clone().filter(|_| t.by_sni) {
                    Some(sni) => (sni.clone(), crate::http::authority_of(&sni, port)),
                    None => (t.host, t.authority),
                };
                let spare = match upstream_idle {
                    true => Some(Spare {
                        host: name.clone(),
                        port,
                        up: t.up,
                    }),
                    false => {
                        t.up.stream.shutdown(Shutdown::Both);
                        None
                    }
                };
                c.io.buf = first.client;
                return Layer::Tls(Box::new(TlsStart {
                    hello,
                    host: name,
                    authority: Some(authority),
                    spare,
                }));
            }
            // ignored host: the buffered ClientHello is relayed as it came
            Ok(Some(_)) | Ok(None) => {}
            Err(why) => {
                tracing::info!(conn = c.info.conn_id, "tunnel to {host}:{port}: {why}");
                drop(pending);
                t.up.stream.shutdown(Shutdown::Both);
                return Layer::Done;
            }
        }
    } else if client_first
        && crate::proto::http1::looks_like_request_start(early)
        && w.tls.intercepts_any(host, None, port)
        && !hooks_raw
    {
        // plain HTTP inside the tunnel (curl --proxytunnel, ws:// through a proxy) is
        // served like intercepted HTTPS, so hooks see its requests; a plugin that
        // registered raw.on_chunk gets the tunnel's bytes instead, as the hook surface
        // says of a tunnel that is not TLS-intercepted
        drop(pending);
        if upstream_idle {
            // the first request goes over the connection the tunnel opened
            w.pool.put_unused(Key::new("http", &t.authority), t.up);
        } else {
            t.up.stream.shutdown(Shutdown::Both);
        }
        c.io.buf = first.client;
        return Layer::Http1(Box::new(H1Route {
            intercept: Some(Intercept::new("http", &t.authority)),
            ..H1Route::default()
        }));
    } else if client_first
        && w.cfg.http2
        && starts_like_h2_preface(early)
        && !hooks_raw
        && w.tls.intercepts_any(host, None, port)
    {
        // h2c with prior knowledge inside the tunnel (gRPC over an insecure channel
        // through a proxy): served by the HTTP/2 front, as plain HTTP/1 is
        drop(pending);
        t.up.stream.shutdown(Shutdown::Both);
        c.io.buf = first.client;
        let target = Target2 {
            scheme: "http".into(),
            authority: Intercept::new("http", &t.authority).authority,
            path_prefix: String::new(),
        };
        return h2_prior_knowledge(c, target).await;
    }
    relay(c, &t, first, pending).await
}

/// Relays a tunnel's bytes as they are, those read while deciding first.
async fn relay(c: &ClientConn, t: &Tunnel, mut first: FirstBytes, pending: Pending<'_>) -> Layer {
    crate::metrics::request(crate::metrics::Proto::Raw, None, None);
    first.upstream.extend_from_slice(&t.up.buf);
    let peers = Peers {
        client: &c.io.stream,
        client_early: first.client,
        upstream: &t.up.stream,
        upstream_early: first.upstream,
    };
    let engine = c.w.engine();
    let idle = c.w.timeouts.tunnel;
    let start_ns = crate::flows::record::now_ns();
    let raw = recording::raw_tap(&c.w);
    let e = engine.as_deref();
    let stats = byte_tunnel::run(&c.w, peers, e, &c.info, pending, idle, raw.as_ref()).await;
    t.up.stream.shutdown(Shutdown::Both);
    c.io.count_upstream(&t.up);
    let end = recording::TunnelEnd {
        kind: "tunnel",
        target: &t.authority,
        start_ns,
        stats,
        raw,
    };
    recording::tunnel(&c.w, &c.info, end);
    Layer::Done
}

/// Whether `dst` is the listener `l` itself: its address, or, for a wildcard listener,
/// its port on any address of this host (a TPROXY'd connection for a remote host that
/// happens to use the same port is not).
fn is_own_listener(l: SocketAddr, dst: SocketAddr) -> bool {
    if l.port() != dst.port() {
        return false;
    }
    if l.ip() == dst.ip() {
        return true;
    }
    // only the local addresses of this host can be bound without IP_FREEBIND
    l.ip().is_unspecified() && std::net::UdpSocket::bind(SocketAddr::new(dst.ip(), 0)).is_ok()
}
