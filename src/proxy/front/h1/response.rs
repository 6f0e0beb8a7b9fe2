//! The response half of an HTTP/1 exchange with an HTTP/1 upstream: a 101 hands the
//! connection to the upgrade; otherwise the response event, then the response
//! streamed to the client with its framing made right for the client's version.

use super::state::*;
use crate::http::{Body, Request, Response, ResponseHead, Version};
use crate::proto::http1::{response_body_kind, BodyDecoder, ParsedResponse, WireHead};
use crate::proxy::body_relay::{self, H1Body, Output, RelayError};
use crate::proxy::conn::client::ClientConn;
use crate::proxy::exchange::reply::FlowError;
use crate::proxy::exchange::{self, rules, Decision, Message, Source};
use crate::proxy::h1_wire;
use crate::proxy::upstream::{Key, Upstream};
use crate::proxy::{sse, ws};
use bytes::BytesMut;
use std::net::Shutdown;

/// The response: a 101 hands the connection to the upgrade; otherwise the response
/// event, then the response streamed to the client.
pub(super) async fn respond(c: &mut ClientConn, sent: Sent) -> Next {
    let Sent {
        engine,
        id,
        req,
        mut asked,
        rhead,
        mut up,
        key,
        upload_complete,
        grpc,
    } = sent;
    let hooks = Hooks {
        engine: engine.as_deref(),
        id,
    };
    let asked = &mut asked;
    let req = &req;
    let rhead = match rhead {
        ParsedResponse::Head(h) => h,
        ParsedResponse::Wire(w) => match wire_out(c, &w, req, asked) {
            // nothing reads the head: its bytes go on, then the body (awaited here for
            // the reason given below)
            Ok(Some(out)) => {
                let WireOut {
                    head,
                    output,
                    mut rdec,
                    reusable,
                } = out;
                let Upstream { stream, buf, .. } = &mut up;
                let mut src = H1Body {
                    stream,
                    buf,
                    dec: &mut rdec,
                    timeout: c.w.timeouts.upstream,
                    tap: None,
                };
                let r = body_relay::body(&mut src, c.io.sink(), Some(head), output, None).await;
                let clean = relayed(c, r, None);
                let pool = reusable && rdec.is_done() && upload_complete;
                return finish(c, clean, up, key, pool, asked);
            }
            Ok(None) => match w.into_head() {
                Ok(h) => h,
                Err(e) => {
                    up.stream.shutdown(Shutdown::Both);
                    let e = FlowError::bad_response(format!("bad response from upstream: {e}"));
                    return fail_flow(c, hooks, req, e).await;
                }
            },
            Err(text) => {
                up.stream.shutdown(Shutdown::Both);
                return fail_flow(c, hooks, req, FlowError::bad_response(text)).await;
            }
        },
    };
    if rhead.status == 101 {
        let ok = asked.upgrade.is_some() && upload_complete && asked.dec.is_done();
        let asked = ok.then_some(&*asked);
        return Box::pin(upgrade(c, rhead, up, hooks, req, asked)).await;
    }
    let (mut resp, mut rdec, reusable) = match response_of(req, rhead) {
        Ok(r) => r,
        Err(text) => {
            up.stream.shutdown(Shutdown::Both);
            return fail_flow(c, hooks, req, FlowError::bad_response(text)).await;
        }
    };
    let decision = {
        let Upstream { stream, buf, .. } = &mut up;
        let mut src = Source::H1 {
            body: H1Body {
                stream,
                buf,
                dec: &mut rdec,
                timeout: c.w.timeouts.upstream,
                tap: None,
            },
            owe_continue: None,
        };
        let msg = Message::Response(req, &mut resp);
        exchange::event!(&flow!(c, hooks), msg, &mut src)
    };
    if !matches!(decision, Decision::Forward) {
        up.stream.shutdown(Shutdown::Both);
        return Box::pin(not_forwarded(c, decision, grpc.as_deref(), asked)).await;
    }
    c.io.record(|r| r.response(&resp, false));
    let mut sse = sse_rewriter(c, hooks, &resp, asked.is_head);
    // a gRPC-web answer to a hooked call: its messages through grpc-web.on_data
    let mut web = grpc
        .as_ref()
        .filter(|_| !asked.is_head)
        .and_then(|k| crate::proxy::grpc_web::response_direction(k, &resp));
    let ready = up.buf.len();
    let rewritten = sse.is_some() || web.is_some();
    let (head, output) = response_head(c, &mut resp, &rdec, ready, asked, rewritten);
    let chunked_ok = asked.version == Version::Http11;
    let Upstream { stream, buf, .. } = &mut up;
    let mut rec = c.io.rec.take();
    let mut src = H1Body {
        stream,
        buf,
        dec: &mut rdec,
        timeout: c.w.timeouts.upstream,
        tap: rec.as_mut().map(|r| &mut r.resp_body),
    };
    // the body relay is awaited here, not in a function of its own: its future is large,
    // and every level it is handed through copies it once per request
    let r = match (
        std::mem::replace(&mut resp.body, Body::Streaming),
        sse.as_mut(),
    ) {
        (Body::Full(b), _) => {
            let mut parts = vec![head.freeze()];
            if !asked.is_head {
                let trailers = resp.trailers.as_ref();
                parts.push(h1_wire::full_body_wire(&b, trailers, chunked_ok));
            }
            // ClientIo::send counts what it writes
            match c.io.send(parts).await {
                true => Ok(0),
                false => Err(RelayError::Source("client went away".into())),
            }
        }
        (_, Some(rw)) => {
            Box::pin(sse::relay_http1(
                &mut src,
                c.io.sink(),
                head,
                chunked_ok,
                rw,
            ))
            .await
        }
        (_, None) => match web.as_mut() {
            Some(dir) => {
                let sink = c.io.sink();
                Box::pin(crate::proxy::grpc_web::relay_h1(
                    &mut src, sink, head, chunked_ok, dir,
                ))
                .await
            }
            None => body_relay::body(&mut src, c.io.sink(), Some(head), output, None).await,
        },
    };
    let clean = relayed(c, r, rec.as_deref_mut());
    c.io.rec.set(rec);
    finish(
        c,
        clean,
        up,
        key,
        reusable && rdec.is_done() && upload_complete,
        asked,
    )
}

/// After the response went (whole when `clean`): the upstream connection back to the
/// pool when `pool` says it is in sync (and the client's body was read whole), and
/// what the client connection does next.
fn finish(c: &ClientConn, clean: bool, up: Upstream, key: Key, pool: bool, asked: &Asked) -> Next {
    c.io.count_upstream(&up);
    if pool && clean && asked.dec.is_done() {
        c.w.pool.put(key, up);
    } else {
        up.stream.shutdown(Shutdown::Both);
    }
    if clean && asked.keep_alive && !c.w.is_draining() {
        Next::KeepAlive
    } else {
        c.io.ended_whole.set(clean && asked.dec.is_done());
        Next::Close
    }
}

/// A head relayed as bytes, and how its body goes.
struct WireOut {
    head: BytesMut,
    output: Output,
    rdec: BodyDecoder,
    /// The upstream connection can carry another request after this response.
    reusable: bool,
}

/// The client's head made from the upstream's bytes (see proto::http1::WireHead), as
/// [`response_head`] makes it from the field list. `Ok(None)`: the bytes cannot stand
/// for the fields, take the field list; Err: the response's framing is broken.
fn wire_out(
    c: &ClientConn,
    w: &WireHead,
    req: &Request,
    asked: &mut Asked,
) -> Result<Option<WireOut>, String> {
    let kind = w
        .kind(&req.method)
        .map_err(|e| format!("bad response framing from upstream: {e}"))?;
    let framing = rules::response_framing(kind, asked.version, false);
    let keep_alive = asked.keep_alive && framing.keep_alive;
    let close = !keep_alive || c.w.is_draining();
    let chunked_ok = asked.version == Version::Http11;
    // no room for the body already read: it goes as a second iovec of the same write,
    // and the head's buffer stays small (an allocator's fast size class)
    let mut head = BytesMut::with_capacity(w.wire_len() + 32);
    if !w.encode_for_client(framing.kind, chunked_ok, close, asked.version, &mut head) {
        return Ok(None);
    }
    asked.keep_alive = keep_alive;
    c.io.status.set(w.status);
    let ctype = || w.first(b"content-type");
    c.io.event_stream.set(crate::metrics::event_stream(ctype));
    Ok(Some(WireOut {
        head,
        output: framing.output,
        rdec: BodyDecoder::new(kind),
        reusable: w.keeps_alive(kind),
    }))
}

/// A 101: the upgrade the client asked for (`asked`) goes on; one it did not ask for
/// is a bad response.
async fn upgrade(
    c: &mut ClientConn,
    rhead: ResponseHead,
    up: Upstream,
    hooks: Hooks<'_>,
    req: &Request,
    asked: Option<&Asked>,
) -> Next {
    let Some(asked) = asked else {
        up.stream.shutdown(Shutdown::Both);
        let e = FlowError::bad_response("upstream switched protocols without being asked to");
        return fail_flow(c, hooks, req, e).await;
    };
    let websocket = asked
        .upgrade
        .as_ref()
        .is_some_and(|p| p.eq_ignore_ascii_case(b"websocket"));
    switch_protocols(c, rhead, up, hooks, websocket).await
}

/// The response event answered for the upstream (a plugin's RESPOND or DROP, or a body
/// that could not be read for it): the client gets that instead.
async fn not_forwarded(
    c: &mut ClientConn,
    d: Decision,
    grpc: Option<&crate::proxy::grpc::Call>,
    asked: &mut Asked,
) -> Next {
    match d {
        Decision::Respond(r) => {
            let r = match grpc {
                Some(k) => crate::proxy::grpc_web::respond_call(k, r),
                None => r,
            };
            answer(c, r, asked, !asked.keep_alive).await
        }
        Decision::Failed(why) => fail(c, 502, &format!("reading the upstream body: {why}")).await,
        Decision::Drop | Decision::Forward => Next::Close,
    }
}

/// Counts a finished body relay; false (and the error noted) when it broke off.
fn relayed(
    c: &ClientConn,
    r: Result<u64, RelayError>,
    rec: Option<&mut crate::flows::capture::Capture>,
) -> bool {
    match r {
        Ok(n) => {
            c.io.sent.set(c.io.sent.get() + n);
            true
        }
        Err(e) => {
            tracing::info!(conn = c.info.conn_id, "response body relay ended: {e:?}");
            c.io.failed(&format!("response body: {e}"));
            if let Some(r) = rec {
                r.error(format!("response body: {e}"));
            }
            false
        }
    }
}

/// The response an upstream head starts, its body decoder, and whether the upstream
/// connection can be pooled again after it; Err: its framing is broken.
fn response_of(
    req: &Request,
    rhead: ResponseHead,
) -> Result<(Response, BodyDecoder, bool), String> {
    let rkind = response_body_kind(&req.method, &rhead)
        .map_err(|e| format!("bad response framing from upstream: {e}"))?;
    let reusable = rules::upstream_keeps_alive(rhead.version, &rhead.headers, rkind);
    let resp = Response {
        status: rhead.status,
        reason: String::from_utf8_lossy(&rhead.reason).into_owned(),
        version: rhead.version,
        headers: rhead.headers,
        body: Body::Streaming,
        trailers: None,
        error: None,
    };
    Ok((resp, BodyDecoder::new(rkind), reusable))
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
    engine.map(|e| sse::Rewriter::new(&c.w, e, &c.info, hooks.id))
}

/// The response head for the client, its framing fields made right for the client's
/// version and how the body goes (also whether the connection can stay open).
fn response_head(
    c: &ClientConn,
    resp: &mut Response,
    rdec: &BodyDecoder,
    ready: usize,
    asked: &mut Asked,
    rewritten: bool,
) -> (BytesMut, Output) {
    let chunked_ok = asked.version == Version::Http11;
    let framing = rules::response_framing(rdec.kind(), asked.version, rewritten);
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
    let body_ready = ready.min(body_relay::COALESCE_MAX);
    let mut head = BytesMut::with_capacity(256 + resp.headers.len() * 48 + body_ready);
    h1_wire::response_head(resp, close, asked.version, &mut head);
    c.io.status.set(resp.status);
    let ctype = || resp.headers.get("content-type").map(|v| &v[..]);
    c.io.event_stream.set(crate::metrics::event_stream(ctype));
    (head, framing.output)
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
    let recorded = c.w.recorder.is_some();
    c.io.record(|r| r.switched(&rhead));
    if websocket && accepted_ws && (ws::wants(engine) || recorded) {
        let mut up = up;
        let rec = c.io.rec.take();
        let peers = c.io.peers(&mut up);
        let hooks_on = engine.filter(|&e| ws::wants(Some(e)));
        let (_, rec) = ws::relay(&c.w, peers, hooks_on, &c.info, hooks.id, rec).await;
        c.io.rec.set(rec);
        up.stream.shutdown(Shutdown::Both);
        c.io.count_upstream(&up);
    } else {
        let _ = c.relay_both_ways(up, engine, None).await;
    }
    Next::Close
}
