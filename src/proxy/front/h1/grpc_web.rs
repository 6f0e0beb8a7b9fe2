//! `--grpc-web` on the HTTP/1 front: a gRPC-web call (its request body read whole, as
//! every gRPC-web client sends it) goes to the upstream as a native gRPC stream over h2
//! (h2c, or TLS that chose h2), and the response comes back as a gRPC-web body, chunked,
//! with the upstream's trailers as its last frame. CORS preflights are answered here.

use super::over_h2;
use super::state::*;
use crate::http::{Body, Request, Version};
use crate::proto::http1::{encode_chunk, encode_last_chunk};
use crate::proxy::conn::client::ClientConn;
use crate::proxy::exchange::{self, Decision, Message, Source};
use crate::proxy::grpc::Call;
use crate::proxy::grpc_web::{self as gw, Gateway, WebBody};
use crate::proxy::h1_wire;
use crate::proxy::h2_stream::{self, Incoming};
use crate::proxy::upstream::h2 as up2;
use crate::proxy::upstream::Key;
use bytes::{Bytes, BytesMut};
use std::rc::Rc;

/// The exchange's hooks, its call (when hooked) and the upstream's pool key.
pub(super) struct Gw<'e> {
    pub(super) hooks: Hooks<'e>,
    pub(super) call: Option<Rc<Call>>,
    pub(super) key: Key,
}

/// Answers a preflight, or runs a call through the gateway.
pub(super) async fn serve(
    c: &mut ClientConn,
    gw: Gw<'_>,
    g: Gateway,
    mut req: Request,
    asked: &mut Asked,
) -> Next {
    let protocol = match g {
        Gateway::Preflight(r) => {
            let close = !asked.keep_alive || !asked.dec.is_done();
            return answer(c, r, asked, close).await;
        }
        Gateway::Call(p) => p,
    };
    let body = match whole_body(c, &mut req, asked).await {
        Ok(b) => b,
        Err(next) => return next,
    };
    let body = match &gw.call {
        Some(k) if k.hooks_data() => {
            let mut dir = k.direction(true, req.headers.get("grpc-encoding").map(|v| &v[..]));
            match dir.feed_all(body).await {
                Ok(b) => b,
                Err(crate::proxy::grpc::CallError::Cancelled(status, message)) => {
                    let r = gw::cancelled_reply(k, status, &message);
                    return answer(c, r, asked, !asked.keep_alive).await;
                }
                Err(crate::proxy::grpc::CallError::Framing(why)) => {
                    return fail(c, 400, &format!("bad gRPC-web request body: {why}")).await;
                }
            }
        }
        _ => body,
    };
    let origin = req.headers.get("origin").cloned();
    if let Err(why) = gw::to_grpc_request(&mut req, protocol, body) {
        return fail(c, 400, &format!("bad gRPC-web request body: {why}")).await;
    }
    let upstream = match over_h2::sender(c, &gw.key).await {
        Ok(s) => s,
        Err(why) => return fail(c, 502, &why).await,
    };
    let started = match up2::start(upstream, &mut req, true).await {
        Ok(s) => s,
        Err(e) => return fail(c, 502, &e.to_string()).await,
    };
    let up2::Started {
        response,
        body: mut tx,
        no_body,
    } = started;
    if let Body::Full(b) = std::mem::replace(&mut req.body, Body::Streaming) {
        if !no_body && h2_stream::send_full(&mut tx, b, None).await.is_err() {
            return fail(c, 502, "upstream refused the request body").await;
        }
    }
    let (mut resp, rx) = match up2::response(response, c.w.timeouts.upstream).await {
        Ok(r) => r,
        Err(e) => return fail(c, 502, &e.to_string()).await,
    };
    gw::from_grpc_response(&mut resp, protocol, origin.as_ref());
    let mut incoming = Incoming::new(rx);
    let msg = Message::Response(&req, &mut resp);
    match exchange::event!(&flow!(c, gw.hooks), msg, &mut Source::H2(&mut incoming)) {
        Decision::Forward => {}
        Decision::Respond(r) => {
            let r = match &gw.call {
                Some(k) => gw::respond_call(k, r),
                None => r,
            };
            return answer(c, r, asked, !asked.keep_alive).await;
        }
        Decision::Drop => return Next::Close,
        Decision::Failed(why) => return fail(c, 502, &format!("upstream body: {why}")).await,
    }
    let dir = gw.call.as_ref().map(|k| {
        let enc = resp.headers.get("grpc-encoding").map(|v| &v[..]);
        k.direction(false, enc)
    });
    let mut out = WebBody::new(protocol, dir);
    relay(c, resp, incoming, asked, &mut out).await
}

/// The request body, whole (what the client sent, framing removed).
async fn whole_body(
    c: &mut ClientConn,
    req: &mut Request,
    asked: &mut Asked,
) -> Result<Bytes, Next> {
    if let Body::Full(b) = &req.body {
        return Ok(b.clone());
    }
    let mut src = client_body(
        &mut c.io,
        &mut asked.dec,
        &mut asked.owe_continue,
        c.w.timeouts.body,
    );
    // a gRPC-web request holds one message (unary and server-streaming calls)
    let limit = c.w.cfg.max_grpc_message.saturating_mul(4) / 3 + 64;
    match src.buffer(limit).await {
        Ok((Body::Full(b), _)) => Ok(b),
        Ok(_) => Err(fail(c, 413, "gRPC-web request body over --max-grpc-message").await),
        Err(why) => Err(fail(c, 400, &format!("reading the request body: {why}")).await),
    }
}

/// The response head, then the upstream's DATA as gRPC-web and its trailers as the
/// last frame; chunked for HTTP/1.1, ending with the connection for HTTP/1.0.
async fn relay(
    c: &mut ClientConn,
    mut resp: crate::http::Response,
    mut body: Incoming,
    asked: &mut Asked,
    out: &mut WebBody,
) -> Next {
    let chunked = asked.version == Version::Http11;
    if !chunked {
        asked.keep_alive = false;
    }
    let close = !asked.keep_alive || c.w.is_draining();
    resp.headers.remove("content-length");
    resp.headers.remove("transfer-encoding");
    if chunked {
        resp.headers.set("transfer-encoding", "chunked");
    }
    resp.body = Body::Streaming;
    let mut wire = BytesMut::with_capacity(256 + resp.headers.len() * 48);
    h1_wire::response_head(&mut resp, close, asked.version, &mut wire);
    c.io.status.set(resp.status);
    let frame = |piece: &[u8], wire: &mut BytesMut| match chunked {
        true if piece.is_empty() => {}
        true => encode_chunk(piece, wire),
        false => wire.extend_from_slice(piece),
    };
    let ended = body.rx.is_end_stream();
    while let Some(chunk) = (!ended).then_some(()).and(body.rx.data().await) {
        let Ok(chunk) = chunk else {
            tracing::debug!(conn = c.info.conn_id, "upstream gRPC stream failed");
            return Next::Close;
        };
        let len = chunk.len();
        let (bytes, cancelled) = match out.data(chunk).await {
            Ok(x) => x,
            Err(why) => {
                tracing::info!(conn = c.info.conn_id, "gRPC response: {why}");
                return Next::Close;
            }
        };
        frame(&bytes, &mut wire);
        if cancelled {
            // the upstream's stream is reset when its handles are dropped
            if chunked {
                encode_last_chunk(None, &mut wire);
            }
            let ok = c.io.send(vec![wire.freeze()]).await;
            return if ok && !close {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        if !c.io.send(vec![wire.split().freeze()]).await {
            return Next::Close;
        }
        let _ = body.rx.flow_control().release_capacity(len);
    }
    let trailers = match body.rx.trailers().await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(conn = c.info.conn_id, "upstream gRPC trailers: {e}");
            return Next::Close;
        }
    };
    let fields = gw::trailer_fields(trailers.as_ref(), &resp.headers);
    match out.end(&fields).await {
        Ok(tail) => frame(&tail, &mut wire),
        Err(why) => {
            tracing::info!(conn = c.info.conn_id, "gRPC response: {why}");
            return Next::Close;
        }
    }
    if chunked {
        encode_last_chunk(None, &mut wire);
    }
    if c.io.send(vec![wire.freeze()]).await && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}
