//! Terminating a client's TLS: the upstream reached ahead of the handshake when its
//! answer shapes the handshake (ALPN follows the upstream; `--upstream-cert` copies its
//! names), the handshake with a leaf for the client's name, then HTTP/1 or HTTP/2 as
//! ALPN chose.

use super::{ClientConn, Layer, TlsStart};
use crate::config::Mode;
use crate::proto::client_hello::ClientHello;
use crate::proxy::exchange::reply::FlowError;
use crate::proxy::exchange::route::{Intercept, Target2};
use crate::proxy::front::h1::H1Route;
use crate::proxy::front::h2::Via;
use crate::proxy::upstream::{Key, Spare, Upstream};
use crate::proxy::worker_tls::{self, Alpn, Offer};
use std::net::Shutdown;

/// Connects to `authority` before the client's TLS handshake, over TLS offering
/// `alpn` when `scheme` is https, over the tunnel's `spare` connection when given.
/// A failure is logged and returned as the answer the first request gets.
pub(super) async fn connect_ahead(
    c: &mut ClientConn,
    scheme: &str,
    authority: &str,
    alpn: Alpn,
    spare: Option<Spare>,
) -> Result<Upstream, FlowError> {
    let key = Key::new(scheme, authority);
    match crate::proxy::hooks::open_upstream(&c.w, &c.info, &key, alpn, spare).await {
        Ok(up) => Ok(up),
        Err(e) => {
            let e = e.flow_error();
            tracing::info!(
                conn = c.info.conn_id,
                "connecting ahead to {authority}: {}",
                e.text
            );
            Err(e)
        }
    }
}

/// What the upstream reached ahead of the handshake decided.
struct Ahead {
    /// How an h2 session would reach the upstream (None: the client gets HTTP/1.1).
    via: Option<Via>,
    /// The upstream certificate's names, for the leaf.
    sans: Option<Vec<String>>,
    /// The early connect failed: the first request reports it.
    failed: Option<(Key, FlowError)>,
    /// The tunnel's plain connection, still unused.
    spare: Option<Spare>,
}

/// Reaches the upstream ahead of the handshake when the client offers h2 (ALPN
/// follows the upstream) or `--upstream-cert` needs its names.
async fn reach_ahead(
    c: &mut ClientConn,
    start: &mut TlsStart,
    scheme: &str,
    target: &str,
    reverse: bool,
) -> Ahead {
    let client_h2 = c.w.cfg.http2 && offers_h2(&start.hello);
    let want_sans = !reverse && c.w.cfg.upstream_cert;
    let mut ahead = Ahead {
        via: None,
        sans: None,
        failed: None,
        spare: None,
    };
    if scheme != "https" || !(client_h2 || want_sans) {
        // a plaintext reverse upstream: h2c for gRPC, HTTP/1.1 for the rest
        if client_h2 {
            ahead.via = Some(Via::Http1OrH2c);
        }
        ahead.spare = start.spare.take();
        return ahead;
    }
    let alpn = if client_h2 {
        Alpn::H2OrHttp1
    } else {
        Alpn::Http1
    };
    match connect_ahead(c, scheme, target, alpn, start.spare.take()).await {
        Ok(up) => {
            if want_sans {
                ahead.sans = Some(worker_tls::peer_sans(&up.stream));
            }
            if client_h2 && worker_tls::chose_h2(&up.stream) {
                ahead.via = Some(Via::H2(Box::new(up)));
            } else {
                // the first request takes it from the pool
                c.w.pool.put_unused(Key::new(scheme, target), up);
                ahead.via = (client_h2 && reverse).then_some(Via::Http1);
            }
        }
        Err(e) => {
            // the client's streams will be answered 502 with the reason
            ahead.via = match client_h2 {
                true if !speaks_http1(&start.hello) => Some(Via::Failed(e.clone())),
                _ => (client_h2 && reverse).then_some(Via::Http1),
            };
            ahead.failed = Some((Key::new(scheme, target), e));
        }
    }
    ahead
}

/// Terminates the client's TLS; later requests on this connection go to the tunnel's
/// target over TLS (reverse mode: the upstream). A client offering h2 is offered h2
/// when it can be served: intercepting, when the upstream (reached ahead of the
/// handshake) chose h2 too, so ALPN follows the upstream; in reverse mode always,
/// over h2 when the upstream has it (h2c for gRPC calls to a plaintext upstream) and
/// HTTP/1.1 otherwise. A client that speaks only h2 and cannot be served so is relayed
/// to the upstream untouched.
pub(super) async fn terminate(c: &mut ClientConn, start: Box<TlsStart>) -> Layer {
    let mut start = *start;
    let w = c.w.clone();
    // where this connection's requests go, and with what path prefix
    let (scheme, target, prefix) = match (&start.authority, &w.mode) {
        (None, Mode::Reverse(up)) => (up.scheme.clone(), up.authority(), up.path_prefix.clone()),
        (a, _) => {
            let a = a.as_deref().unwrap_or(&start.host);
            (
                "https".into(),
                Intercept::new("https", a).authority,
                String::new(),
            )
        }
    };
    let reverse = start.authority.is_none();
    let ahead = reach_ahead(c, &mut start, &scheme, &target, reverse).await;
    if !speaks_http1(&start.hello) && ahead.via.is_none() && scheme == "https" {
        let (up_host, up_port) = crate::http::host_port_of(&scheme, &target);
        tracing::info!(
            conn = c.info.conn_id,
            "the client offers ALPN {} without http/1.1, and h2 cannot be served to it \
             (--no-http2, or {target} did not choose h2); relayed unchanged",
            alpn_list(&start.hello)
        );
        return Layer::Relay(up_host, up_port);
    }
    let offer = Offer {
        upstream_sans: ahead.sans.as_deref(),
        alpn: match ahead.via {
            Some(_) => Alpn::H2OrHttp1,
            None => Alpn::Http1,
        },
    };
    let head_timeout = w.timeouts.head;
    let io = &mut c.io;
    let accepted = w
        .tls
        .accept(
            &mut io.stream,
            &mut io.buf,
            &start.hello,
            &start.host,
            offer,
            head_timeout,
        )
        .await;
    let acc = match accepted {
        Ok(acc) => acc,
        Err(why) => {
            if let Some(Via::H2(up)) = ahead.via {
                up.stream.shutdown(Shutdown::Both);
            }
            tracing::info!(
                conn = c.info.conn_id,
                "TLS interception of {}: {why}",
                start.host
            );
            return Layer::Done;
        }
    };
    c.info.sni = Some(acc.server_name);
    if w.recorder.is_some() {
        c.info.tls = Some(std::rc::Rc::new(crate::proxy::hooks::dict_of(&acc.info)));
    }
    crate::proxy::hooks::tls_handshake(&w, &c.info, &acc.info).await;
    if let Some(via) = ahead.via {
        if worker_tls::chose_h2(&c.io.stream) {
            let target = Target2 {
                scheme,
                authority: target,
                path_prefix: prefix,
            };
            return Layer::Http2(via, target);
        }
        if let Via::H2(up) = via {
            up.stream.shutdown(Shutdown::Both);
        }
    }
    Layer::Http1(Box::new(H1Route {
        intercept: start.authority.map(|a| Intercept::new("https", &a)),
        ahead_failed: ahead.failed,
        spare: ahead.spare,
    }))
}

/// Whether luring can serve the client's TLS: it offers no ALPN, or http/1.1 among it.
fn speaks_http1(hello: &ClientHello) -> bool {
    hello.alpn.is_empty() || hello.alpn.iter().any(|p| p.as_slice() == b"http/1.1")
}

/// Whether the client offers h2 in its ALPN.
fn offers_h2(hello: &ClientHello) -> bool {
    hello.alpn.iter().any(|p| p.as_slice() == b"h2")
}

/// The client's ALPN offer, for logs.
fn alpn_list(hello: &ClientHello) -> String {
    let names: Vec<_> = hello
        .alpn
        .iter()
        .map(|p| String::from_utf8_lossy(p))
        .collect();
    names.join(",")
}
