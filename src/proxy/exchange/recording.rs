//! The recorder's side of an exchange: where a flow's capture starts and where it is
//! handed to the recorder. Without `--record` both are a check of one Option.

use super::Flow;
use crate::flows::capture::{Capture, Ids, RawTap};
use crate::flows::record::{now_ns, TlsRec, TunnelFlow};
use crate::http::Request;
use crate::plugin::ConnInfo;
use crate::proxy::byte_tunnel::TunnelStats;
use crate::proxy::worker::Worker;
use std::cell::RefCell;

/// Starts recording `req` (as it goes upstream) when the worker records; `stream` is
/// the HTTP/2 stream id, 0 on HTTP/1.
pub fn start(f: &Flow<'_>, req: &Request, stream: u32) -> Option<Box<Capture>> {
    let r = f.w.recorder.as_ref()?;
    let ids = Ids {
        id: f.id,
        conn: f.info.conn_id,
        stream,
    };
    let mut c = Capture::start(ids, req, r.max_body, r.redact);
    c.client_tls = tls_of(f.info);
    c.client = Some(f.info.client_addr);
    c.mode = f.w.mode.name();
    Some(c)
}

/// Hands a finished flow to the recorder, with what plugins noted about it.
pub fn finish(w: &Worker, info: &ConnInfo, cap: Option<Box<Capture>>) {
    if let (Some(r), Some(mut c)) = (w.recorder.as_ref(), cap) {
        c.server = info.server_addr;
        if let Some(n) = w.engine().and_then(|e| e.take_flow_notes(c.id)) {
            c.notes = n.notes;
            c.skip = n.skip;
        }
        r.http(c);
    }
}

/// The recorder's copy of a tunnel's bytes, with `--record-raw`.
pub fn raw_tap(w: &Worker) -> Option<RefCell<RawTap>> {
    w.recorder
        .as_ref()
        .filter(|r| r.raw)
        .map(|r| RefCell::new(RawTap::new(r.max_body)))
}

/// A tunnel relayed as opaque bytes, as it ended.
pub struct TunnelEnd<'a> {
    /// "tunnel" for CONNECT and SOCKS5 tunnels luring does not intercept, "raw" for
    /// relays it chose itself.
    pub kind: &'a str,
    /// host:port.
    pub target: &'a str,
    /// When the relay began (Unix nanoseconds).
    pub start_ns: u64,
    /// Bytes each way.
    pub stats: TunnelStats,
    /// Its bytes, with `--record-raw`.
    pub raw: Option<RefCell<RawTap>>,
}

/// Records a tunnel that ended.
pub fn tunnel(w: &Worker, info: &ConnInfo, t: TunnelEnd<'_>) {
    let Some(r) = w.recorder.as_ref() else { return };
    let (kind, target, start_ns, s) = (t.kind, t.target, t.start_ns, t.stats);
    r.tunnel(TunnelFlow {
        id: w.next_conn_id(),
        conn: info.conn_id,
        client: info.client_addr.to_string(),
        server: info.server_addr.map(|a| a.to_string()).unwrap_or_default(),
        target: target.to_string(),
        kind: kind.to_string(),
        client_tls: tls_of(info),
        start: start_ns,
        end: now_ns(),
        bytes_up: s.up,
        bytes_down: s.down,
        chunks: t.raw.map(|r| r.into_inner().chunks).unwrap_or_default(),
        ..Default::default()
    });
}

/// The client-side TLS facts of a connection: the whole handshake when luring
/// terminated TLS, else the SNI it read (a passthrough tunnel's ClientHello).
fn tls_of(info: &ConnInfo) -> Option<TlsRec> {
    match &info.tls {
        Some(t) => Some(TlsRec {
            sni: t.sni.clone().unwrap_or_default(),
            alpn: t.alpn.clone().unwrap_or_default(),
            version: t.version_name.clone().unwrap_or_default(),
            ja4: t.client_fingerprint.clone().unwrap_or_default(),
        }),
        None => info.sni.as_ref().map(|sni| TlsRec {
            sni: sni.clone(),
            ..Default::default()
        }),
    }
}
