//! The layer stack per connection: drives the sans-IO codecs in proto/ over io/ streams
//! and calls the plugin engine at the hook points.
//!
//! Hook points (the one interface the plugin engine fills): connection.on_connect and
//! on_disconnect here, http.on_request / http.on_response in [`http1`], raw.on_chunk in
//! [`tunnel`]. Each is guarded by `Engine::has`, so with no plugin (or none on that
//! event) nothing is built and no Lua runs.

pub mod body_relay;
pub mod byte_tunnel;
pub mod http1;
pub mod http2;
pub mod pipeline;
pub mod respond;
pub mod socks5;
pub mod sse;
pub mod upstream;
pub mod worker;
pub mod worker_tls;
pub mod ws;

use crate::io::Stream;
use crate::plugin::{ConnInfo, ConnStats, Event, Step};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Instant;
use worker::Worker;

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
    };
    if let Some(e) = w.engine() {
        if e.has(Event::ConnectionConnect) {
            if let Step::Drop = e.on_connect(&info) {
                tracing::debug!(conn = info.conn_id, %peer, "dropped by connection.on_connect");
                stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    tracing::trace!(conn = info.conn_id, %peer, "accepted");
    let mut conn = http1::ClientConn::new(w.clone(), stream, info);
    conn.run().await;
    conn.linger().await;
    if let Some(e) = w.engine() {
        if e.has(Event::ConnectionDisconnect) {
            let stats = ConnStats {
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                bytes_in: conn.bytes_in,
                bytes_out: conn.bytes_out,
            };
            e.on_disconnect(&conn.info, &stats);
        }
    }
}

/// Fires tls.on_handshake when a plugin hooks it.
pub(crate) fn fire_tls_hook(w: &Worker, conn: &ConnInfo, info: &crate::tls::TlsInfo) {
    let Some(e) = w.engine() else { return };
    if !e.has(Event::TlsHandshake) {
        return;
    }
    let dict = crate::plugin::TlsInfo {
        side: info.side.as_str(),
        sni: info.sni.clone(),
        alpn: info.alpn.clone(),
        version_name: info.version_name.map(str::to_string),
        cipher_name: info.cipher_name.clone(),
        peer_cert_subject: info.peer_cert_subject.clone(),
        client_fingerprint: info.client_fingerprint.clone(),
        ja3: info.ja3.clone(),
        ja3_string: info.ja3_string.clone(),
    };
    e.tls_handshake(conn, &dict);
}
