//! Lifecycle hooks fired from more than one layer.

use crate::plugin::{ConnInfo, Event};
use crate::proxy::hook_io;
use crate::proxy::upstream::{self, ConnectError, Key, Spare, Upstream};
use crate::proxy::worker::Worker;
use crate::proxy::worker_tls::Alpn;

/// Opens an upstream connection for `key` (see `upstream::open`), then fires
/// tls.on_handshake for its TLS side, if any. Here and not in `upstream`, so the
/// upstream layer never calls up into hooks (whose waits use upstream connections).
pub async fn open_upstream(
    w: &Worker,
    info: &ConnInfo,
    key: &Key,
    alpn: Alpn,
    spare: Option<Spare>,
) -> Result<Upstream, ConnectError> {
    let up = upstream::open(w, key, alpn, spare).await?;
    if let Some(t) = &up.tls_info {
        tls_handshake(w, info, t).await;
    }
    Ok(up)
}

/// Fires tls.on_handshake when a plugin hooks it.
pub async fn tls_handshake(w: &Worker, conn: &ConnInfo, info: &crate::tls::TlsInfo) {
    let Some(e) = w.engine() else { return };
    if !e.has(Event::TlsHandshake) {
        return;
    }
    let step = e.tls_handshake(conn, &dict_of(info));
    hook_io::settle(w, &e, step, |s| e.resume_event(s, conn, None, &mut ())).await;
}

/// The handshake as hooks (and the flow recorder) see it.
pub fn dict_of(info: &crate::tls::TlsInfo) -> crate::plugin::TlsInfo {
    crate::plugin::TlsInfo {
        side: info.side.as_str(),
        sni: info.sni.clone(),
        alpn: info.alpn.clone(),
        version_name: info.version_name.map(str::to_string),
        cipher_name: info.cipher_name.clone(),
        peer_cert_subject: info.peer_cert_subject.clone(),
        client_fingerprint: info.client_fingerprint.clone(),
        ja3: info.ja3.clone(),
        ja3_string: info.ja3_string.clone(),
    }
}
