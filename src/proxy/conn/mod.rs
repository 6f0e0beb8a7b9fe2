//! The connection driver: what runs on one accepted client connection, as a loop over
//! layers. Each layer runs until it ends the connection or hands it to the next one,
//! and says which as a [`Layer`] value: the HTTP/1 front hands over an accepted CONNECT
//! tunnel, a tunnel hands over TLS to intercept or HTTP inside it, TLS hands over
//! HTTP/1 or HTTP/2 as ALPN decided (mitmproxy calls this next_layer).

pub mod auth;
pub mod client;
mod detect;
mod socks5;
mod tls_start;

pub use client::{ClientConn, ClientIo};

use crate::config::Mode;
use crate::flows::capture::RawTap;
use crate::io::{Deadline, Stream};
use crate::plugin::{ConnInfo, ConnStats, Engine, Event, Step};
use crate::proto::client_hello::ClientHello;
use crate::proxy::byte_tunnel;
use crate::proxy::exchange::recording;
use crate::proxy::exchange::route::Target2;
use crate::proxy::front::h1::{self, H1Route, Outcome, Tunnel};
use crate::proxy::front::h2::{self, Via};
use crate::proxy::hook_io;
use crate::proxy::upstream::{self, Spare, Upstream};
use crate::proxy::worker::Worker;
use std::cell::RefCell;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

/// The next layer of a connection, or its end.
pub enum Layer {
    /// HTTP/1 requests, routed by the mode or to a tunnel's target (boxed, as `Tls`: this
    /// value lives in every connection's task; see `serve`).
    Http1(Box<H1Route>),
    /// An accepted CONNECT or SOCKS5 tunnel: who speaks first decides what is inside.
    Tunnel(Box<Tunnel>),
    /// TLS to terminate.
    Tls(Box<TlsStart>),
    /// HTTP/2 from the client, relayed as `via` says.
    Http2(Via, Target2),
    /// Bytes relayed unchanged to `host:port` (raw.on_chunk sees them).
    Relay(String, u16),
    /// The connection is over.
    Done,
}

/// A client's TLS to terminate.
pub struct TlsStart {
    /// The ClientHello, still in the client buffer.
    pub hello: ClientHello,
    /// The name the leaf certificate is for when the client sends no SNI.
    pub host: String,
    /// The tunnel's target; None in reverse mode (requests go to the upstream).
    pub authority: Option<String>,
    /// The plain connection the tunnel opened, for the first TLS connection upstream.
    pub spare: Option<Spare>,
}

/// Keeps the worker's open-connection count right however the connection task ends.
struct ActiveGuard(Rc<Worker>);

impl ActiveGuard {
    fn new(w: &Rc<Worker>) -> Self {
        w.active.set(w.active.get() + 1);
        ActiveGuard(w.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

/// Serves one accepted client connection to its end.
pub async fn serve(w: Rc<Worker>, stream: Stream, peer: SocketAddr) {
    let _active = ActiveGuard::new(&w);
    let started = Instant::now();
    let info = ConnInfo {
        conn_id: w.next_conn_id(),
        client_addr: peer,
        server_addr: None,
        sni: None,
        listener_name: w.listener_name.clone(),
        worker: w.index,
        tls: None,
    };
    if let Some(e) = w.engine().filter(|e| e.has(Event::ConnectionConnect)) {
        let step = e.on_connect(&info);
        let settle = hook_io::settle(&w, &e, step, |s| e.resume_event(s, &info, None, &mut ()));
        let step = Box::pin(settle).await;
        if let Step::Drop = step {
            tracing::debug!(conn = info.conn_id, %peer, "dropped by connection.on_connect");
            stream.shutdown(Shutdown::Both);
            return;
        }
    }
    tracing::trace!(conn = info.conn_id, %peer, "accepted");
    let send_timeout = w.timeouts.send;
    let mut c = ClientConn {
        w: w.clone(),
        info,
        fd: stream.raw_fd(),
        io: ClientIo::new(stream, send_timeout),
        requests: 0,
        upstream_deadline: Deadline::new(),
        tunnel_log: None,
    };
    // Every layer but HTTP/1 is awaited in a box of its own (once per connection):
    // this task's future is as large as its largest inline await, and every idle
    // keep-alive connection holds it (docs/perf.md, "Idle connections"). A reverse
    // proxy's plain HTTP/1 clients are told apart first, without a box.
    let mut layer = match detect::reverse_plain(&mut c).await {
        Some(layer) => layer,
        None => Box::pin(first_layer(&mut c)).await,
    };
    loop {
        layer = match layer {
            Layer::Http1(route) => match h1::serve(&mut c, route).await {
                Outcome::Close => Layer::Done,
                Outcome::Tunnel(t) => Layer::Tunnel(t),
            },
            Layer::Tunnel(t) => Box::pin(detect::inside_tunnel(&mut c, t)).await,
            Layer::Tls(start) => Box::pin(tls_start::terminate(&mut c, start)).await,
            Layer::Http2(via, target) => {
                Box::pin(c.serve_h2(via, target)).await;
                Layer::Done
            }
            Layer::Relay(host, port) => {
                crate::metrics::request(crate::metrics::Proto::Raw, None, None);
                Box::pin(c.relay_raw(&host, port)).await;
                Layer::Done
            }
            Layer::Done => break,
        }
    }
    if let Some(t) = c.tunnel_log.take() {
        let bytes = c.io.stream.bytes_moved().1 - t.written_before;
        t.record
            .finish(c.info.client_addr, t.status, bytes, c.info.conn_id);
    }
    // the usual end (a whole exchange, nothing unread) needs no future, and no box
    let (bytes_in, bytes_out) = match c.io.close_at_once() {
        Some(moved) => moved,
        None => Box::pin(c.io.linger()).await,
    };
    crate::metrics::client_bytes(bytes_in, bytes_out);
    if let Some(e) = w.engine().filter(|e| e.has(Event::ConnectionDisconnect)) {
        let (upstream_bytes_in, upstream_bytes_out) = c.io.upstream_moved.get();
        let stats = ConnStats {
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            bytes_in,
            bytes_out,
            upstream_bytes_in,
            upstream_bytes_out,
            error: c.io.error.take(),
        };
        let step = e.on_disconnect(&c.info, &stats);
        Box::pin(hook_io::settle(&c.w, &e, step, |s| {
            e.resume_event(s, &c.info, None, &mut ())
        }))
        .await;
    }
}

/// The connection's first layer, by mode: a SOCKS5 handshake, what a reverse proxy's
/// client opens with (TLS, h2c, HTTP/1), or HTTP/1 for a forward proxy.
async fn first_layer(c: &mut ClientConn) -> Layer {
    match &c.w.mode {
        Mode::Regular | Mode::Upstream(_) => Layer::Http1(Box::default()),
        Mode::Socks5 => socks5::serve(c).await,
        Mode::Reverse(_) => detect::reverse(c).await,
        Mode::Transparent => detect::transparent(c).await,
    }
}

impl ClientConn {
    /// Relays raw bytes between the client and `up` until both directions end (the
    /// bytes either side sent early go first), then closes `up`.
    pub async fn relay_both_ways(
        &mut self,
        mut up: Upstream,
        engine: Option<&Engine>,
        raw: Option<&RefCell<RawTap>>,
    ) -> byte_tunnel::TunnelStats {
        let idle = self.w.timeouts.tunnel;
        let peers = self.io.peers(&mut up);
        let stats =
            byte_tunnel::run(&self.w, peers, engine, &self.info, [None, None], idle, raw).await;
        up.stream.shutdown(Shutdown::Both);
        self.io.count_upstream(&up);
        stats
    }

    /// Relays the connection's bytes to `host:port` unchanged, both ways (raw.on_chunk
    /// sees them), the client's bytes read so far first.
    async fn relay_raw(&mut self, host: &str, port: u16) {
        let up = match upstream::dial(&self.w, host, port).await {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(conn = self.info.conn_id, "{}", e.text());
                return;
            }
        };
        self.info.server_addr = Some(up.addr);
        let engine = self.w.engine();
        let start_ns = crate::flows::record::now_ns();
        let raw = recording::raw_tap(&self.w);
        let stats = self
            .relay_both_ways(up, engine.as_deref(), raw.as_ref())
            .await;
        let target = crate::http::authority_of(host, port);
        let end = recording::TunnelEnd {
            kind: "raw",
            target: &target,
            start_ns,
            stats,
            raw,
        };
        recording::tunnel(&self.w, &self.info, end);
    }

    /// Serves the rest of the connection with the HTTP/2 front, relaying as `via` says.
    async fn serve_h2(&mut self, via: Via, target: Target2) {
        if let Via::H2(u) = &via {
            self.info.server_addr = Some(u.addr);
        }
        let early = std::mem::take(&mut self.io.buf);
        let w = self.w.clone();
        let (r, wr) = h2::serve(w, &self.io.stream, early, &self.info, via, target).await;
        let (r0, w0) = self.io.upstream_moved.get();
        self.io.upstream_moved.set((r0 + r, w0 + wr));
    }
}
