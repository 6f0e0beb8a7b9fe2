//! `--grpc-web` on the HTTP/2 front: one client stream's gRPC-web call as a native gRPC
//! stream of the upstream's h2 connection, the answer re-emitted as a gRPC-web body
//! whose last DATA is the trailer frame (gRPC-web clients read no h2 trailers).

use crate::http::{Body, Request, Response};
use crate::proto::grpc::Protocol;
use crate::proxy::exchange::{self, Decision, Flow, Message, Source};
use crate::proxy::grpc::{Call, CallError};
use crate::proxy::grpc_web::{self as gw, WebBody};
use crate::proxy::h2_stream::{self, Incoming};
use crate::proxy::upstream::h2::{self as up2, StreamError};
use bytes::Bytes;
use h2::client::SendRequest;
use h2::server::SendResponse;
use h2::Reason;
use std::rc::Rc;

/// How a gateway call ended, for the front's bookkeeping.
pub enum Done {
    /// The front answers with this (an error, a hook's answer).
    Answer(Response),
    /// A response went out: its status and the body bytes sent.
    Sent(u16, u64),
    /// The stream was reset.
    Reset,
}

/// Runs one gRPC-web call made as `protocol` through `upstream`.
pub async fn call(
    f: &Flow<'_>,
    upstream: SendRequest<Bytes>,
    mut req: Request,
    mut body: Incoming,
    tx: &mut SendResponse<Bytes>,
    call: Option<Rc<Call>>,
    protocol: Protocol,
) -> Done {
    let whole = match std::mem::replace(&mut req.body, Body::Streaming) {
        Body::Full(b) => b,
        _ => {
            let limit = f.w.cfg.max_grpc_message.saturating_mul(4) / 3 + 64;
            match Source::H2(&mut body).buffer(limit).await {
                Ok((Body::Full(b), _)) => b,
                Ok(_) => return fail(413, "gRPC-web request body over --max-grpc-message"),
                Err(why) => return fail(400, &format!("reading the request body: {why}")),
            }
        }
    };
    let whole = match &call {
        Some(k) if k.hooks_data() => {
            let mut dir = k.direction(true, req.headers.get("grpc-encoding").map(|v| &v[..]));
            match dir.feed_all(whole).await {
                Ok(b) => b,
                Err(CallError::Cancelled(s, m)) => {
                    return Done::Answer(gw::cancelled_reply(k, s, &m))
                }
                Err(CallError::Framing(why)) => {
                    return fail(400, &format!("bad gRPC-web body: {why}"))
                }
            }
        }
        _ => whole,
    };
    let origin = req.headers.get("origin").cloned();
    if let Err(why) = gw::to_grpc_request(&mut req, protocol, whole) {
        return fail(400, &format!("bad gRPC-web request body: {why}"));
    }
    let up2::Started {
        response,
        body: mut up_tx,
        no_body,
    } = match up2::start(upstream, &mut req, true).await {
        Ok(s) => s,
        Err(e) => return stream_error(e),
    };
    if let Body::Full(b) = std::mem::replace(&mut req.body, Body::Streaming) {
        if !no_body && h2_stream::send_full(&mut up_tx, b, None).await.is_err() {
            return fail(502, "upstream refused the request body");
        }
    }
    let (mut resp, rx) = match up2::response(response, f.w.timeouts.upstream).await {
        Ok(r) => r,
        Err(e) => return stream_error(e),
    };
    gw::from_grpc_response(&mut resp, protocol, origin.as_ref());
    let mut incoming = Incoming::new(rx);
    let msg = Message::Response(&req, &mut resp);
    match exchange::event!(f, msg, &mut Source::H2(&mut incoming)) {
        Decision::Forward => {}
        Decision::Respond(r) => {
            return Done::Answer(match &call {
                Some(k) => gw::respond_call(k, r),
                None => r,
            })
        }
        Decision::Drop => {
            tx.send_reset(Reason::CANCEL);
            return Done::Reset;
        }
        Decision::Failed(why) => return fail(502, &format!("upstream body: {why}")),
    }
    let dir = call.as_ref().map(|k| {
        let enc = resp.headers.get("grpc-encoding").map(|v| &v[..]);
        k.direction(false, enc)
    });
    let mut out = WebBody::new(protocol, dir);
    relay(tx, resp, incoming, &mut out).await
}

/// The response head, the upstream's DATA as gRPC-web, its trailers as the last frame.
async fn relay(
    tx: &mut SendResponse<Bytes>,
    mut resp: Response,
    mut body: Incoming,
    out: &mut WebBody,
) -> Done {
    let status = resp.status;
    let mut stx = match tx.send_response(h2_stream::response_head(&mut resp), false) {
        Ok(s) => s,
        Err(_) => return Done::Reset,
    };
    let mut n = 0u64;
    let ended = body.rx.is_end_stream();
    while let Some(chunk) = (!ended).then_some(()).and(body.rx.data().await) {
        let Ok(chunk) = chunk else {
            stx.send_reset(Reason::INTERNAL_ERROR);
            return Done::Sent(status, n);
        };
        let len = chunk.len();
        let Ok((bytes, cancelled)) = out.data(chunk).await else {
            stx.send_reset(Reason::INTERNAL_ERROR);
            return Done::Sent(status, n);
        };
        n += bytes.len() as u64;
        if h2_stream::send_data(&mut stx, bytes, cancelled)
            .await
            .is_err()
            || cancelled
        {
            return Done::Sent(status, n);
        }
        let _ = body.rx.flow_control().release_capacity(len);
    }
    let trailers = body.rx.trailers().await.ok().flatten();
    let fields = gw::trailer_fields(trailers.as_ref(), &resp.headers);
    match out.end(&fields).await {
        Ok(tail) => {
            n += tail.len() as u64;
            let _ = h2_stream::send_data(&mut stx, tail, true).await;
        }
        Err(_) => stx.send_reset(Reason::INTERNAL_ERROR),
    }
    Done::Sent(status, n)
}

/// An error answer naming the reason.
fn fail(status: u16, text: &str) -> Done {
    tracing::info!("gRPC-web gateway answered {status}: {text}");
    Done::Answer(crate::proxy::exchange::reply::error(status, text))
}

/// An upstream stream's failure as an answer.
fn stream_error(e: StreamError) -> Done {
    match e {
        StreamError::Answer(status, text) => fail(status, &text),
        e => fail(502, &e.to_string()),
    }
}
