//! An HTTP/1 client's request over an h2 upstream connection, for upstreams that speak
//! only h2 (nghttpd, some gRPC servers). Such an upstream accepts TLS without agreeing
//! to http/1.1 and then answers an HTTP/1.1 request with its h2 preface or hangs up;
//! luring then remembers it (per worker) and carries this and later requests to it as
//! streams of one h2 connection, the response framed back as HTTP/1.

use super::state::*;
use crate::http::{Body, Headers, Request, Response, Version};
use crate::proto::detect::is_h2_settings_frame;
use crate::proto::http1::{encode_chunk, encode_last_chunk, BodyKind};
use crate::proxy::body_relay::{self, H1Body, RelayError};
use crate::proxy::conn::client::ClientConn;
use crate::proxy::exchange::reply::FlowError;
use crate::proxy::exchange::{self, reply, rules, Decision, Message, Source};

use crate::proxy::h1_wire;
use crate::proxy::h2_stream::{self, Incoming};
use crate::proxy::sse;
use crate::proxy::upstream::h1::RespError;
use crate::proxy::upstream::h2::{self as up2, StreamError};
use crate::proxy::upstream::{Key, Upstream};
use crate::proxy::worker_tls::{self, Alpn};
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::SendStream;

/// Whether a failed HTTP/1 attempt shows an upstream that speaks only h2: TLS agreed
/// to no ALPN protocol, and it answered with an h2 SETTINGS frame or hung up.
pub(super) fn speaks_only_h2(up: &Upstream, e: &RespError) -> bool {
    let no_alpn = up.tls_info.as_ref().is_some_and(|t| t.alpn.is_none());
    no_alpn && (matches!(e, RespError::Closed) || is_h2_settings_frame(&up.buf))
}

/// Whether `key` is an upstream known to speak only h2.
pub(super) fn known(c: &ClientConn, key: &Key) -> bool {
    c.w.h2_only.borrow().contains_key(key)
}

/// Remembers `key` as an upstream that speaks only h2.
pub(super) fn remember(c: &ClientConn, key: &Key) {
    tracing::info!(
        conn = c.info.conn_id,
        "{}://{}:{} speaks only HTTP/2: HTTP/1.1 requests to it go over h2",
        key.scheme,
        key.host,
        key.port
    );
    c.w.h2_only.borrow_mut().entry(key.clone()).or_default();
}

/// The worker's h2 connection to `key`, made now (TLS offering h2) if none is open.
pub(super) async fn sender(c: &ClientConn, key: &Key) -> Result<SendRequest<Bytes>, String> {
    let lazy =
        c.w.h2_only
            .borrow_mut()
            .entry(key.clone())
            .or_default()
            .clone();
    let connect = async {
        let up = crate::proxy::hooks::open_upstream(&c.w, &c.info, key, Alpn::H2OrHttp1, None)
            .await
            .map_err(|e| e.text().to_string())?;
        if worker_tls::chose_h2(&up.stream) || up.tls_info.is_none() {
            return Ok(up);
        }
        Err(format!("{}:{} did not agree to h2", key.host, key.port))
    };
    let max = up2::header_list_limit(c.w.cfg.max_head_size);
    lazy.sender(connect, c.info.conn_id, max).await
}

/// Sends `req` as a stream of the upstream's h2 connection, its body from the client,
/// then runs the response event and streams the response back as HTTP/1.
pub(super) async fn exchange(
    c: &mut ClientConn,
    hooks: Hooks<'_>,
    req: &mut Request,
    asked: &mut Asked,
    key: &Key,
) -> Next {
    req.headers.remove("expect");
    // a request the upstream did not process goes again (see up2::RESENDS)
    let mut resends = up2::RESENDS;
    let (resp, rx) = loop {
        let upstream = match sender(c, key).await {
            Ok(s) => s,
            Err(why) => return fail(c, 502, &why).await,
        };
        let started = match up2::start(upstream, req, false).await {
            // the connection stopped taking streams since it was chosen (the sender is
            // then made again)
            Err(StreamError::NotSent(_)) if resends > 0 => {
                resends -= 1;
                continue;
            }
            r => r,
        };
        let up2::Started {
            response,
            body: mut tx,
            no_body,
        } = match started {
            Ok(s) => s,
            Err(e) => return fail_flow(c, hooks, req, flow_error(e)).await,
        };
        let streamed = !matches!(req.body, Body::Full(_)) && !asked.dec.is_done();
        if streamed && std::mem::take(&mut asked.owe_continue) {
            let _ = c.io.write(Bytes::from_static(reply::CONTINUE_100)).await;
        }
        let full = match std::mem::replace(&mut req.body, Body::Streaming) {
            Body::Full(b) => Some(b),
            _ => None,
        };
        let trailers = req.trailers.take();
        // a body held whole, or none, can go again
        let kept = (trailers.is_none() && !streamed && resends > 0)
            .then(|| full.clone().map_or(Body::Streaming, Body::Full));
        tokio::pin!(response);
        let t = c.w.timeouts.upstream;
        let mut up_tap = c.io.new_tap();
        let got = {
            let mut src = H1Body {
                stream: &c.io.stream,
                buf: &mut c.io.buf,
                dec: &mut asked.dec,
                timeout: c.w.timeouts.body,
                tap: up_tap.as_mut(),
            };
            let body = match (full, streamed) {
                (Some(b), _) => Upload::Full(b, trailers),
                (None, true) => Upload::Client(&mut src),
                (None, false) => Upload::Empty,
            };
            let upload = upload(body, &mut tx, no_body);
            tokio::pin!(upload);
            // no deadline while the upload runs: a long upload is not a slow upstream
            tokio::select! {
                biased;
                r = &mut response => Ok((Some(r), false)),
                u = &mut upload => match u {
                    Ok(()) => Ok((tokio::time::timeout(t, &mut response).await.ok(), true)),
                    Err(RelayError::Sink(_)) => Ok((Some(response.await), false)),
                    Err(e) => Err(e),
                },
            }
        };
        c.io.put_tap(false, up_tap);
        let got = match got {
            Ok(got) => got,
            Err(RelayError::Malformed(why)) => {
                return fail(c, 400, &format!("bad request body: {why}")).await;
            }
            Err(e) => {
                tracing::debug!(conn = c.info.conn_id, "client failed during upload: {e:?}");
                return Next::Close;
            }
        };
        match got {
            (Some(r), complete) => match up2::response_of(r) {
                Ok(r) => {
                    asked.keep_alive &= complete;
                    break r;
                }
                Err(StreamError::Reset(h2::Reason::REFUSED_STREAM)) if let Some(body) = kept => {
                    resends -= 1;
                    req.body = body;
                }
                Err(e) => return fail_flow(c, hooks, req, flow_error(e)).await,
            },
            (None, _) => {
                let why = format!("upstream did not respond within {t:?}");
                let e = up2::StreamError::Answer(504, why);
                return fail_flow(c, hooks, req, flow_error(e)).await;
            }
        }
    };
    let mut body = Incoming::new(rx);
    body.tap = c.io.new_tap();
    let next = respond(c, hooks, req, asked, resp, &mut body).await;
    c.io.put_tap(true, body.tap);
    next
}

/// The answer for a failed upstream stream (a reset becomes a 502 on HTTP/1).
fn flow_error(e: StreamError) -> FlowError {
    match e {
        StreamError::Reset(_) | StreamError::NotSent(_) => FlowError {
            status: 502,
            text: e.to_string(),
            reason: "upstream reset".into(),
        },
        e => e
            .flow_error()
            .unwrap_or_else(|| FlowError::bad_response("upstream stream failed")),
    }
}

/// The request body as it goes to the h2 stream.
enum Upload<'a, 'b> {
    /// Held whole (a hook read or replaced it), with its trailers.
    Full(Bytes, Option<Headers>),
    /// Streaming from the client, framing removed.
    Client(&'a mut H1Body<'b>),
    /// None.
    Empty,
}

/// Sends the request body on `tx`, ending the stream (unless the request had no body
/// and the stream is already ended).
async fn upload(
    body: Upload<'_, '_>,
    tx: &mut SendStream<Bytes>,
    no_body: bool,
) -> Result<(), RelayError> {
    let sink = |e: h2::Error| RelayError::Sink(std::io::Error::other(e));
    match body {
        Upload::Full(_, _) if no_body => Ok(()),
        Upload::Full(b, t) => h2_stream::send_full(tx, b, t.as_ref())
            .await
            .map(|_| ())
            .map_err(sink),
        Upload::Empty if no_body => Ok(()),
        Upload::Empty => tx.send_data(Bytes::new(), true).map_err(sink),
        Upload::Client(src) => loop {
            if !src.buf.is_empty() {
                let d = src
                    .dec
                    .decode(src.buf)
                    .map_err(|e| RelayError::Malformed(e.to_string()))?;
                for piece in d.data {
                    if let Some(t) = src.tap.as_deref_mut() {
                        t.see(&piece);
                    }
                    h2_stream::send_data(tx, piece, false).await.map_err(sink)?;
                }
                if d.done {
                    if let (Some(tap), Some(t)) = (src.tap.as_deref_mut(), d.trailers.as_ref()) {
                        tap.set_trailers(t.clone());
                    }
                    return match d.trailers {
                        Some(t) => tx
                            .send_trailers(h2_stream::to_header_map(&t, false))
                            .map_err(sink),
                        None => tx.send_data(Bytes::new(), true).map_err(sink),
                    };
                }
            } else if src.dec.is_done() {
                return tx.send_data(Bytes::new(), true).map_err(sink);
            }
            match body_relay::read_some(src.stream, src.buf, src.timeout).await {
                Ok(0) => {
                    src.dec
                        .eof()
                        .map_err(|e| RelayError::Source(e.to_string()))?;
                }
                Ok(_) => {}
                Err(e) => return Err(RelayError::Source(e.to_string())),
            }
        },
    }
}

/// The response event, then the response to the HTTP/1 client.
async fn respond(
    c: &mut ClientConn,
    hooks: Hooks<'_>,
    req: &Request,
    asked: &mut Asked,
    mut resp: Response,
    body: &mut Incoming,
) -> Next {
    let msg = Message::Response(req, &mut resp);
    let decision = exchange::event!(&flow!(c, hooks), msg, &mut Source::H2(body));
    match decision {
        Decision::Forward => {}
        Decision::Respond(r) => return answer(c, r, asked, !asked.keep_alive).await,
        Decision::Drop => return Next::Close,
        Decision::Failed(why) => {
            return fail(c, 502, &format!("reading the upstream body: {why}")).await;
        }
    }
    c.io.record(|r| r.response(&resp, false));
    let chunked_ok = asked.version == Version::Http11;
    let streaming = !matches!(resp.body, Body::Full(_));
    let mut rw = match (hooks.engine, streaming && !asked.is_head) {
        (Some(e), true) if sse::applies(hooks.engine, resp.status, &resp.headers) => {
            Some(sse::Rewriter::new(&c.w, e, &c.info, hooks.id))
        }
        _ => None,
    };
    // a body of known length passes as it is; anything else is chunked (or, for an
    // HTTP/1.0 client, ends with the connection)
    let known = rules::content_length(&resp.headers).filter(|_| rw.is_none());
    let kind = match known {
        _ if asked.is_head || reply::bodiless(resp.status) => BodyKind::Empty,
        Some(n) => BodyKind::Length(n),
        None if chunked_ok => BodyKind::Chunked,
        None => {
            asked.keep_alive = false;
            BodyKind::CloseDelimited
        }
    };
    let close = !asked.keep_alive || c.w.is_draining();
    let full = match std::mem::replace(&mut resp.body, Body::Streaming) {
        Body::Full(b) => Some(b),
        other => {
            resp.body = other;
            None
        }
    };
    if let Some(b) = &full {
        resp.body = Body::Full(b.clone());
    }
    h1_wire::fix_framing(
        &mut resp.headers,
        &resp.body,
        resp.trailers.as_ref(),
        kind,
        chunked_ok,
    );
    let mut head = BytesMut::with_capacity(256 + resp.headers.len() * 48);
    h1_wire::response_head(&mut resp, close, asked.version, &mut head);
    c.io.status.set(resp.status);
    let ctype = || resp.headers.get("content-type").map(|v| &v[..]);
    c.io.event_stream.set(crate::metrics::event_stream(ctype));
    let sent = match full {
        Some(b) => {
            let mut parts = vec![head.freeze()];
            if !asked.is_head {
                parts.push(h1_wire::full_body_wire(
                    &b,
                    resp.trailers.as_ref(),
                    chunked_ok,
                ));
            }
            c.io.send(parts).await
        }
        None if kind == BodyKind::Empty => c.io.send(vec![head.freeze()]).await,
        None => {
            let chunked = kind == BodyKind::Chunked;
            match relay_to_h1(c, body, head, chunked, rw.as_mut()).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(conn = c.info.conn_id, "response body relay ended: {e}");
                    false
                }
            }
        }
    };
    if sent && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Relays an h2 response body to the HTTP/1 client after `head`: chunked (trailers in
/// the last chunk) when `chunked`, else as it comes; through the SSE layer's `rw`.
async fn relay_to_h1(
    c: &ClientConn,
    body: &mut Incoming,
    head: BytesMut,
    chunked: bool,
    mut rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<(), String> {
    let frame = |piece: &[u8], out: &mut BytesMut| match chunked {
        true if piece.is_empty() => {}
        true => encode_chunk(piece, out),
        false => out.extend_from_slice(piece),
    };
    let mut out = head;
    while let Some(chunk) = body.rx.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let len = chunk.len();
        let piece = match rw.as_deref_mut() {
            Some(r) => r.feed(&chunk).await.freeze(),
            None => chunk,
        };
        body.see(&piece);
        frame(&piece, &mut out);
        if !c.io.send(vec![out.split().freeze()]).await {
            return Err("client went away".into());
        }
        let _ = body.rx.flow_control().release_capacity(len);
    }
    if let Some(r) = rw {
        let rest = r.finish();
        body.see(&rest);
        frame(&rest, &mut out);
    }
    let trailers = body.rx.trailers().await.map_err(|e| e.to_string())?;
    if let Some(t) = &trailers {
        body.see_trailers(t);
    }
    if chunked {
        let t = trailers.as_ref().map(h2_stream::from_header_map);
        encode_last_chunk(t.as_ref(), &mut out);
    }
    match c.io.send(vec![out.freeze()]).await {
        true => Ok(()),
        false => Err("client went away".into()),
    }
}
