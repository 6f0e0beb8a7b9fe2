//! The response half of an HTTP/1 exchange with an HTTP/1 upstream: a 101 hands the
//! connection to the upgrade; otherwise the response event, then the response
//! streamed to the client with its framing made right for the client's version.

use super::state::*;
use crate::http::{Body, Request, Response, ResponseHead, Version};
use crate::proto::http1::{response_body_kind, BodyDecoder};
use crate::proxy::body_relay::{self, H1Body};
use crate::proxy::conn::client::ClientConn;
use crate::proxy::exchange::{self, rules, Decision, Message, Source};
use crate::proxy::h1_wire;
use crate::proxy::upstream::{Key, Upstream};
use crate::proxy::{sse, ws};
use bytes::BytesMut;
use std::net::Shutdown;

/// What decides whether the upstream connection goes back to the pool.
pub(super) struct Done {
    pub(super) key: Key,
    /// The whole request body went upstream.
    pub(super) upload_complete: bool,
}

/// The response: a 101 hands the connection to the upgrade; otherwise the response
/// event, then the response streamed to the client.
pub(super) async fn respond(
    c: &mut ClientConn,
    hooks: Hooks<'_>,
    req: &Request,
    asked: &mut Asked,
    rhead: ResponseHead,
    mut up: Upstream,
    done: Done,
) -> Next {
    if rhead.status == 101 {
        if asked.upgrade.is_some() && done.upload_complete && asked.dec.is_done() {
            let websocket = asked
                .upgrade
                .as_ref()
                .is_some_and(|p| p.eq_ignore_ascii_case(b"websocket"));
            return switch_protocols(c, rhead, up, hooks, websocket).await;
        }
        up.stream.shutdown(Shutdown::Both);
        return fail(c, 502, "upstream switched protocols without being asked to").await;
    }
    let rkind = match response_body_kind(&req.method, &rhead) {
        Ok(k) => k,
        Err(e) => {
            up.stream.shutdown(Shutdown::Both);
            let text = format!("bad response framing from upstream: {e}");
            return fail(c, 502, &text).await;
        }
    };
    let reusable = rules::upstream_keeps_alive(rhead.version, &rhead.headers, rkind);
    let mut resp = Response {
        status: rhead.status,
        reason: String::from_utf8_lossy(&rhead.reason).into_owned(),
        version: rhead.version,
        headers: rhead.headers,
        body: Body::Streaming,
        trailers: None,
    };
    let mut rdec = BodyDecoder::new(rkind);
    let decision = {
        let Upstream { stream, buf, .. } = &mut up;
        let mut src = Source::H1 {
            body: H1Body {
                stream,
                buf,
                dec: &mut rdec,
                timeout: c.w.timeouts.upstream,
            },
            owe_continue: None,
        };
        let msg = Message::Response(req, &mut resp);
        exchange::message_event(&flow!(c, hooks), msg, &mut src).await
    };
    match decision {
        Decision::Forward => {}
        Decision::Respond(r) => {
            up.stream.shutdown(Shutdown::Both);
            return answer(c, r, asked, !asked.keep_alive).await;
        }
        Decision::Drop => {
            up.stream.shutdown(Shutdown::Both);
            return Next::Close;
        }
        Decision::Failed(why) => {
            up.stream.shutdown(Shutdown::Both);
            return fail(c, 502, &format!("reading the upstream body: {why}")).await;
        }
    }
    let sse = sse_rewriter(c, hooks, &resp, asked.is_head);
    let commit = commit(c, &mut resp, &mut up, &mut rdec, asked, sse).await;
    let clean = commit.is_some();
    let upstream_done = commit.unwrap_or(false);
    if reusable && upstream_done && done.upload_complete && asked.dec.is_done() {
        c.w.pool.put(done.key, up);
    } else {
        up.stream.shutdown(Shutdown::Both);
    }
    if clean && asked.keep_alive && !c.w.is_draining() {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// The SSE layer for an event stream a plugin hooks.
fn sse_rewriter<'e>(
    c: &ClientConn,
    hooks: Hooks<'e>,
    resp: &Response,
    is_head: bool,
) -> Option<sse::Rewriter<'e>> {
    let engine = hooks.engine;
    let streaming = matches!(resp.body, Body::Streaming);
    if !streaming || is_head || !sse::applies(engine, resp.status, &resp.headers) {
        return None;
    }
    let max = c.w.cfg.max_plugin_body;
    engine.map(|e| sse::Rewriter::new(e, &c.info, hooks.id, max))
}

/// Writes the response head and body to the client. Some(upstream body read to its
/// end) when it all went out; None when the connection must close.
async fn commit(
    c: &mut ClientConn,
    resp: &mut Response,
    up: &mut Upstream,
    rdec: &mut BodyDecoder,
    asked: &mut Asked,
    mut sse: Option<sse::Rewriter<'_>>,
) -> Option<bool> {
    let chunked_ok = asked.version == Version::Http11;
    let framing = rules::response_framing(rdec.kind(), asked.version, sse.is_some());
    let streaming = !matches!(resp.body, Body::Full(_));
    if streaming && !framing.keep_alive {
        asked.keep_alive = false;
    }
    let out_kind = if streaming { framing.kind } else { rdec.kind() };
    let close = !asked.keep_alive || c.w.is_draining();
    h1_wire::fix_framing(
        &mut resp.headers,
        &resp.body,
        resp.trailers.as_ref(),
        out_kind,
        chunked_ok,
    );
    // room for a small body already read, which body_relay::body copies behind the head
    let body_ready = up.buf.len().min(body_relay::COALESCE_MAX);
    let mut head = BytesMut::with_capacity(256 + resp.headers.len() * 48 + body_ready);
    h1_wire::response_head(resp, close, asked.version, &mut head);
    c.io.status.set(resp.status);
    let Upstream { stream, buf, .. } = up;
    let mut src = H1Body {
        stream,
        buf,
        dec: rdec,
        timeout: c.w.timeouts.upstream,
    };
    let r = match (
        std::mem::replace(&mut resp.body, Body::Streaming),
        sse.as_mut(),
    ) {
        (Body::Full(b), _) => {
            let mut parts = vec![head.freeze()];
            if !asked.is_head {
                parts.push(h1_wire::full_body_wire(
                    &b,
                    resp.trailers.as_ref(),
                    chunked_ok,
                ));
            }
            let upstream_done = src.dec.is_done();
            return c.io.send(parts).await.then_some(upstream_done);
        }
        (_, Some(rw)) => sse::relay_http1(&mut src, c.io.sink(), head, chunked_ok, rw).await,
        (_, None) => {
            body_relay::body(&mut src, c.io.sink(), Some(head), framing.output, None).await
        }
    };
    match r {
        Ok(n) => {
            c.io.sent.set(c.io.sent.get() + n);
            Some(true)
        }
        Err(e) => {
            tracing::info!(conn = c.info.conn_id, "response body relay ended: {e:?}");
            None
        }
    }
}

/// The upstream agreed to an upgrade: pass its 101 on, then relay both directions, as
/// WebSocket frames when a plugin hooks them, else as raw bytes (raw.on_chunk sees
/// them), until either side closes.
async fn switch_protocols(
    c: &mut ClientConn,
    mut rhead: ResponseHead,
    up: Upstream,
    hooks: Hooks<'_>,
    websocket: bool,
) -> Next {
    let engine = hooks.engine;
    let proto = rhead.headers.get("upgrade").cloned();
    crate::proxy::exchange::pipeline::strip_hop_by_hop(&mut rhead.headers);
    if let Some(p) = proto {
        rhead.headers.set("upgrade", p);
    }
    rhead.headers.set("connection", "upgrade");
    rhead.version = Version::Http11;
    c.io.status.set(101);
    let mut wire = BytesMut::with_capacity(256);
    crate::proto::http1::encode_response_head(&rhead, &mut wire);
    if !c.io.write(wire.freeze()).await {
        up.stream.shutdown(Shutdown::Both);
        return Next::Close;
    }
    let accepted_ws = rhead
        .headers
        .get("upgrade")
        .is_some_and(|p| p.eq_ignore_ascii_case(b"websocket"));
    match engine.filter(|&e| websocket && accepted_ws && ws::wants(Some(e))) {
        Some(e) => {
            let mut up = up;
            let peers = c.io.peers(&mut up);
            let max = c.w.cfg.max_plugin_body;
            ws::relay(peers, e, &c.info, hooks.id, c.w.timeouts.tunnel, max).await;
            up.stream.shutdown(Shutdown::Both);
        }
        None => c.relay_both_ways(up, engine).await,
    }
    Next::Close
}
