//! One stream's exchange with the upstream: over h2 (a stream of the session's upstream
//! connection) or HTTP/1.1 (a pooled connection), then the response back to the client.

use super::{stream_event, H2Upstream, Reply, Session};
use crate::http::{Body, Request, Response};
use crate::proto::http1::{response_body_kind, BodyDecoder, BodyKind};
use crate::proxy::body_relay::{self, H1Body};
use crate::proxy::exchange::reply::FlowError;
use crate::proxy::exchange::{self, rules, Decision, Flow, Message, Source};
use crate::proxy::grpc;
use crate::proxy::grpc_web;
use crate::proxy::h1_wire;
use crate::proxy::h2_relay;
use crate::proxy::h2_stream::{self, Incoming};
use crate::proxy::sse;
use crate::proxy::upstream::h1::{self as up1, Upload, Waits};
use crate::proxy::upstream::h2::{self as up2};
use crate::proxy::upstream::{self, Key, Upstream};
use crate::proxy::worker_tls::Alpn;
use bytes::{Bytes, BytesMut};
use h2::{Reason, SendStream};
use std::net::Shutdown;
use std::rc::Rc;

/// Why an exchange ended without an answer, as recorded.
const CLIENT_RESET: &str = "the client reset the stream";

/// What one stream's exchange with the upstream needs to know.
pub(super) struct Stream<'a> {
    pub(super) s: &'a Session,
    pub(super) f: Flow<'a>,
    pub(super) is_head: bool,
    /// The client sent `te: trailers` (the pipeline strips TE as hop-by-hop).
    pub(super) te_trailers: bool,
    /// The gRPC call, when the gRPC layer takes the stream.
    pub(super) call: Option<Rc<grpc::Call>>,
}

impl Stream<'_> {
    /// Relays the request over h2 to the session's upstream ([`Session::h2_upstream`]).
    /// A request the upstream did not process (its connection took no new stream, or
    /// refused this one: REFUSED_STREAM, or above a GOAWAY's last stream) goes again,
    /// up to `resends` times, when nothing of its body has been lost: RFC 9113 8.7
    /// makes that safe.
    pub(super) async fn via_session_h2(
        &self,
        req: Request,
        body: Incoming,
        reply: &mut Reply,
        resends: u8,
    ) {
        match self.s.h2_upstream().await {
            H2Upstream::H2(up) => self.via_h2(up, req, body, reply, resends).await,
            H2Upstream::Http1 => {
                // only a request to the session's own upstream comes this way
                let key = self.s.key.clone();
                Box::pin(self.via_h1(req, body, reply, key)).await
            }
            H2Upstream::Failed(e) => self.fail_flow(&req, reply, e).await,
        }
    }

    /// Relays the request as a stream of an h2 upstream connection.
    async fn via_h2(
        &self,
        upstream: h2::client::SendRequest<Bytes>,
        mut req: Request,
        mut body: Incoming,
        reply: &mut Reply,
        resends: u8,
    ) {
        let again = resends.checked_sub(1);
        let started = match reply
            .unless_reset(up2::start(upstream, &mut req, self.te_trailers))
            .await
        {
            None => return reply.record(|c| c.error(CLIENT_RESET)),
            Some(Ok(s)) => s,
            Some(Err(up2::StreamError::NotSent(why))) if let Some(left) = again => {
                tracing::debug!(
                    conn = self.s.info.conn_id,
                    "sending the stream again: {why}"
                );
                return Box::pin(self.via_session_h2(req, body, reply, left)).await;
            }
            Some(Err(e)) => return Box::pin(self.stream_failed(&req, reply, e)).await,
        };
        let up2::Started {
            response,
            body: mut tx,
            no_body,
        } = started;
        let full = match std::mem::replace(&mut req.body, Body::Streaming) {
            Body::Full(b) => Some(b),
            _ => None,
        };
        let trailers = req.trailers.take();
        // a body held whole can be sent again if the upstream does not process it
        let resend = match (&full, &trailers, again) {
            (Some(b), None, Some(left)) => Some((b.clone(), left)),
            _ => None,
        };
        body.tap = reply.rec.as_ref().map(|r| r.new_tap());
        let mut up_dir = match (&self.call, &full) {
            (Some(c), None) => {
                Some(c.direction(true, req.headers.get("grpc-encoding").map(|v| &v[..])))
            }
            _ => None,
        };
        let upload = if no_body && full.is_some() {
            // the request ended with its head (most requests): no task to send nothing
            UploadTask::Done(body)
        } else {
            // told to stop when the upstream failed before taking the whole body: the
            // body comes back to be read and dropped, so the client still gets the
            // answer whole
            let stop = Rc::new(tokio::sync::Notify::new());
            let stopped = stop.clone();
            let task = crate::io::spawn(async move {
                let work = async {
                    match (full, up_dir.as_mut()) {
                        (Some(b), _) => h2_stream::send_full(&mut tx, b, trailers.as_ref())
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        (None, Some(dir)) => match grpc::relay(&mut body, &mut tx, dir).await {
                            Ok(grpc::Relayed::Cancelled(..)) => Err("cancelled by a hook".into()),
                            Ok(_) => Ok(()),
                            Err(e) => Err(e),
                        },
                        (None, None) => h2_relay::relay_rest(&mut body, &mut tx, None)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    }
                };
                let r = tokio::select! {
                    r = work => r,
                    _ = stopped.notified() => Err("the upstream failed first".to_string()),
                };
                if r.is_err() {
                    // also what a hook's msg:cancel sends the upstream
                    tx.send_reset(Reason::CANCEL);
                }
                (r, body)
            });
            UploadTask::Running(task, stop)
        };
        let waited = reply
            .unless_reset(up2::response(response, self.s.w.timeouts.upstream))
            .await;
        let Some(waited) = waited else {
            // the upstream's stream is reset (CANCEL) as its handles are dropped
            upload.abort();
            return reply.record(|c| c.error(CLIENT_RESET));
        };
        let (resp, rx) = match waited {
            Ok(r) => r,
            Err(e) => {
                upload.stop();
                let mut body = upload.finish().await.map(|(_, b)| b);
                let refused = matches!(e, up2::StreamError::Reset(Reason::REFUSED_STREAM));
                if let (true, Some((full, left))) = (refused, resend) {
                    if let Some(b) = body.take() {
                        tracing::debug!(
                            conn = self.s.info.conn_id,
                            "upstream refused the stream: sending it again"
                        );
                        req.body = Body::Full(full);
                        return Box::pin(self.via_session_h2(req, b, reply, left)).await;
                    }
                }
                match self.call.as_ref().and_then(|c| c.cancelled()) {
                    Some((status, message)) => {
                        reply.grpc_status(self.call.as_deref(), status, &message)
                    }
                    None => Box::pin(self.stream_failed(&req, reply, e)).await,
                }
                if let Some(b) = body {
                    h2_stream::discard(b);
                }
                return;
            }
        };
        let mut rbody = Incoming::new(rx);
        rbody.tap = reply.rec.as_ref().map(|r| r.new_tap());
        self.respond(&req, resp, Source::H2(&mut rbody), reply)
            .await;
        reply.put_tap(true, rbody.tap);
        if let Some((r, body)) = upload.finish().await {
            reply.put_tap(false, body.tap);
            if let Err(why) = r {
                reply.record(|c| c.error(format!("request body: {why}")));
            }
        }
    }

    /// Answers a stream whose upstream failed: a reset passes on as one; an answer
    /// goes through [`Stream::fail_flow`].
    async fn stream_failed(&self, req: &Request, reply: &mut Reply, e: up2::StreamError) {
        if let Some(reason) = e.reset_reason() {
            reply.record(|c| c.error(format!("upstream reset the stream: {reason}")));
            return reply.tx.send_reset(reason);
        }
        if let Some(f) = e.flow_error() {
            self.fail_flow(req, reply, f).await;
        }
    }

    /// Answers a flow that failed upstream: luring's error response goes through
    /// http.on_response first (`msg.error` says why), so a hook can log it, change it
    /// or answer with its own page.
    pub(super) async fn fail_flow(&self, req: &Request, reply: &mut Reply, e: FlowError) {
        tracing::info!("HTTP/2 stream answered {}: {}", e.status, e.text);
        let mut resp = e.response();
        let msg = Message::Response(req, &mut resp);
        match exchange::event!(&self.f, msg, &mut Source::Whole) {
            Decision::Drop => return reply.tx.send_reset(Reason::CANCEL),
            Decision::Respond(r) => resp = r,
            Decision::Forward | Decision::Failed(_) => {}
        }
        reply.record(|c| c.error(e.text.as_str()));
        reply.answer(resp, self.is_head);
    }

    /// Relays the request over HTTP/1.1 (a pooled or new connection to `key`, its
    /// authority's), and the HTTP/1 response back as h2.
    pub(super) async fn via_h1(
        &self,
        mut req: Request,
        mut body: Incoming,
        reply: &mut Reply,
        key: Key,
    ) {
        let w = &*self.s.w;
        let mut up = match upstream::reuse(w, &key) {
            Some(u) => u,
            None => {
                let opened =
                    crate::proxy::hooks::open_upstream(w, &self.s.info, &key, Alpn::Http1, None);
                // boxed: a new connection is rare beside the pool's, and inline its
                // handshake's future would be most of this one's size
                let opened = Box::pin(opened);
                match reply.unless_reset(opened).await {
                    None => return reply.record(|c| c.error(CLIENT_RESET)),
                    Some(Ok(u)) => u,
                    Some(Err(e)) => return self.fail_flow(&req, reply, e.flow_error()).await,
                }
            }
        };
        if let Some(k) = self.call.as_ref().filter(|k| k.protocol().is_web()) {
            let max = w.cfg.max_plugin_body;
            let r = grpc_web::hook_request(&mut Source::H2(&mut body), &mut req, k, max).await;
            if let Err((status, message)) = r {
                return reply.answer(grpc_web::cancelled_reply(k, status, &message), false);
            }
        }
        body.tap = reply.rec.as_ref().map(|r| r.new_tap());
        let (mut head, upload) = h1_request(&mut req, &mut body, w.timeouts.body);
        if let (true, Some(chain)) = (up.via_chain, &w.chain) {
            h1_wire::to_proxy_form(&mut head, &req, chain.auth.as_deref());
        }
        let deadline = crate::io::Deadline::new();
        let waits = Waits {
            upstream: w.timeouts.upstream,
            deadline: &deadline,
            limits: &w.upstream_limits,
            // the h2 client takes the head as fields
            wire: false,
        };
        let sent = async {
            match upload {
                Ok(parts) => up1::send_ready(&mut up, head, parts, waits).await,
                Err(streamed) => {
                    Box::pin(up1::send_streaming(&mut up, head, streamed, waits)).await
                }
            }
        };
        let Some(answer) = reply.unless_reset(sent).await else {
            // the upstream connection is mid-exchange: closed, never pooled
            up.stream.shutdown(Shutdown::Both);
            return reply.record(|c| c.error(CLIENT_RESET));
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                up.stream.shutdown(Shutdown::Both);
                let f = match e {
                    up1::SendError::Upstream(e) => e.flow_error(w.timeouts.upstream),
                    // the client's stream failed or stalled (past --body-timeout)
                    up1::SendError::Client(why) => {
                        return reply.fail(408, &format!("reading the request body: {why}"));
                    }
                    up1::SendError::BadBody(why) => {
                        let text = format!("sending the request upstream: {why}");
                        return reply.fail(502, &text);
                    }
                };
                return self.fail_flow(&req, reply, f).await;
            }
        };
        let upload_complete = answer.complete;
        reply.put_tap(false, body.tap.take());
        if !upload_complete {
            h2_stream::discard(body);
        }
        let rhead = match answer.head.into_head() {
            Ok(h) => h,
            Err(e) => {
                up.stream.shutdown(Shutdown::Both);
                let f = FlowError::bad_response(format!("bad response from upstream: {e}"));
                return self.fail_flow(&req, reply, f).await;
            }
        };
        let rkind = match response_body_kind(&req.method, &rhead) {
            Ok(k) if rhead.status != 101 => k,
            Ok(_) => {
                up.stream.shutdown(Shutdown::Both);
                let f = FlowError::bad_response("upstream switched protocols on an HTTP/2 request");
                return self.fail_flow(&req, reply, f).await;
            }
            Err(e) => {
                up.stream.shutdown(Shutdown::Both);
                let f = FlowError::bad_response(format!("bad response framing from upstream: {e}"));
                return self.fail_flow(&req, reply, f).await;
            }
        };
        let reusable =
            upload_complete && rules::upstream_keeps_alive(rhead.version, &rhead.headers, rkind);
        let resp = Response {
            status: rhead.status,
            reason: String::from_utf8_lossy(&rhead.reason).into_owned(),
            version: rhead.version,
            headers: rhead.headers,
            body: if rkind == BodyKind::Empty {
                Body::Full(Bytes::new())
            } else {
                Body::Streaming
            },
            trailers: None,
            error: None,
        };
        let mut dec = BodyDecoder::new(rkind);
        let Upstream { stream, buf, .. } = &mut up;
        let mut tap = reply.rec.as_ref().map(|r| r.new_tap());
        let src = Source::H1 {
            body: H1Body {
                stream,
                buf,
                dec: &mut dec,
                timeout: w.timeouts.upstream,
                tap: tap.as_mut(),
            },
            owe_continue: None,
        };
        let complete = self.respond(&req, resp, src, reply).await;
        reply.put_tap(true, tap);
        self.s.count_upstream(&up);
        if reusable && complete && dec.is_done() {
            w.pool.put(key, up);
        } else {
            up.stream.shutdown(Shutdown::Both);
        }
    }

    /// The response event, then the response to the client, its body from `src`.
    /// Returns whether the upstream's body was read to its end.
    pub(super) async fn respond(
        &self,
        req: &Request,
        mut resp: Response,
        mut src: Source<'_>,
        reply: &mut Reply,
    ) -> bool {
        let s = self.s;
        let msg = Message::Response(req, &mut resp);
        let Some(decision) = stream_event!(&self.f, msg, &mut src, &mut reply.tx) else {
            tracing::debug!(
                conn = s.info.conn_id,
                "stream reset while its response hooks ran"
            );
            return false;
        };
        match decision {
            Decision::Forward => {}
            Decision::Drop => {
                reply.tx.send_reset(Reason::CANCEL);
                return false;
            }
            Decision::Respond(r) => {
                let r = match self.call.as_ref() {
                    Some(c) => grpc_web::respond_call(c, r),
                    None => r,
                };
                reply.answer(r, self.is_head);
                return false;
            }
            Decision::Failed(why) => {
                reply.fail(502, &format!("upstream body: {why}"));
                return false;
            }
        }
        reply.record(|r| r.response(&resp, false));
        let full = match std::mem::replace(&mut resp.body, Body::Streaming) {
            Body::Full(b) => Some(b),
            _ => None,
        };
        // an event stream with sse.on_event hooks: events may change length
        let mut sse_rw = None;
        let engine = self.f.engine;
        if full.is_none() && !self.is_head && sse::applies(engine, resp.status, &resp.headers) {
            if let Some(e) = engine {
                resp.headers.remove("content-length");
                sse_rw = Some(sse::Rewriter::new(&s.w, e, &s.info, self.f.id));
            }
        }
        // a HEAD or 304 response keeps the length of the body it does not carry
        if let Some(b) = full
            .as_ref()
            .filter(|_| !self.is_head && resp.status != 304)
        {
            h2_stream::set_length(&mut resp.headers, b);
        }
        let trailers = resp.trailers.take();
        let end_now =
            self.is_head || matches!(&full, Some(b) if b.is_empty() && trailers.is_none());
        let mut tx = match reply.send_response(h2_stream::response_head(&mut resp), end_now) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::debug!(conn = s.info.conn_id, "client stream gone: {e}");
                return false;
            }
        };
        if end_now {
            // a trailers-only gRPC answer: its status is in the headers
            if let Some(c) = self
                .call
                .as_ref()
                .filter(|_| resp.headers.contains("grpc-status"))
            {
                c.end_with(&resp.headers);
            }
            return full.is_some() || src.is_done();
        }
        if let (Some(c), None, Source::H2(body)) = (&self.call, &full, &mut src) {
            let encoding = resp.headers.get("grpc-encoding").map(|v| &v[..]);
            let mut dir = c.direction(false, encoding);
            return match grpc::relay(body, &mut tx, &mut dir).await {
                Ok(grpc::Relayed::Trailers(t)) => {
                    c.end_with(&h2_stream::from_header_map(&t));
                    true
                }
                Ok(grpc::Relayed::End) => true,
                Ok(grpc::Relayed::Cancelled(status, message)) => {
                    // the client gets the hook's status; the upstream's stream is reset
                    // when its handles are dropped
                    grpc_web::send_status(&mut tx, c, status, &message);
                    false
                }
                // a hook cancelled a client message: the upload reset the upstream, and
                // the client gets the hook's status
                Err(_) if c.cancelled().is_some() => {
                    let (status, message) = c.cancelled().unwrap_or_default();
                    grpc_web::send_status(&mut tx, c, status, &message);
                    false
                }
                Err(e) => {
                    tracing::debug!(conn = s.info.conn_id, "gRPC response relay ended: {e}");
                    tx.send_reset(Reason::INTERNAL_ERROR);
                    false
                }
            };
        }
        let web = match (&self.call, &full, &src) {
            (Some(c), None, Source::H1 { .. }) => grpc_web::response_direction(c, &resp),
            _ => None,
        };
        if let (Some(mut dir), Source::H1 { body, .. }) = (web, &mut src) {
            let r = grpc_web::relay_h1_to_h2(body, &mut tx, &mut dir).await;
            return r.map(|n| reply.bytes += n).is_ok() && body.dec.is_done();
        }
        let r = match (full, src) {
            (Some(b), _) => h2_stream::send_full(&mut tx, b, trailers.as_ref()).await,
            (None, Source::H2(body)) => h2_relay::relay_rest(body, &mut tx, sse_rw.as_mut()).await,
            (None, Source::H1 { mut body, .. }) => {
                relay_h1(&mut body, &mut tx, sse_rw.as_mut()).await
            }
            (None, Source::Whole) => h2_stream::send_full(&mut tx, Bytes::new(), None).await,
        };
        match r {
            Ok(n) => {
                reply.bytes += n;
                true
            }
            Err(e) => {
                tracing::debug!(conn = s.info.conn_id, "HTTP/2 response relay ended: {e}");
                reply.record(|r| r.error(format!("response body: {e}")));
                tx.send_reset(Reason::INTERNAL_ERROR);
                false
            }
        }
    }
}

/// The body goes as these buffers (Ok), or streams (Err).
type H1Upload<'b> = Result<Vec<Bytes>, Upload<'b>>;

/// The HTTP/1 request head of an h2 stream going to an HTTP/1.1 upstream, and how its
/// body goes: with its length when known, chunked otherwise, none when empty.
fn h1_request<'b>(
    req: &mut Request,
    body: &'b mut Incoming,
    timeout: std::time::Duration,
) -> (BytesMut, H1Upload<'b>) {
    let partly_read = body.prefix.is_some();
    let kind = rules::h1_request_kind(&req.body, req.trailers.is_some(), &req.headers, partly_read);
    let head = h1_wire::upstream_request_head(req, kind);
    let trailers = req.trailers.take();
    let upload = match std::mem::replace(&mut req.body, Body::Streaming) {
        Body::Full(b) if b.is_empty() && trailers.is_none() => Ok(Vec::new()),
        Body::Full(b) => {
            let chunked = h1_wire::full_needs_chunked(trailers.as_ref(), true);
            let wire = match chunked {
                true => h1_wire::full_body_wire(&b, trailers.as_ref(), true),
                false => b,
            };
            Ok(vec![wire])
        }
        _ => Err(Upload::H2 {
            body,
            chunked: kind == BodyKind::Chunked,
            timeout,
        }),
    };
    (head, upload)
}

/// Relays an HTTP/1 body to an h2 stream: framing removed, trailers as h2 trailers.
async fn relay_h1(
    src: &mut H1Body<'_>,
    tx: &mut SendStream<Bytes>,
    mut rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<u64, h2::Error> {
    let broken = || h2::Error::from(Reason::INTERNAL_ERROR);
    let mut n = 0;
    loop {
        if !src.buf.is_empty() {
            let d = src.dec.decode(src.buf).map_err(|_| broken())?;
            for piece in d.data {
                let piece = h2_relay::rewrite(&mut rw, piece).await;
                if let Some(t) = src.tap.as_deref_mut() {
                    t.see(&piece);
                }
                n += piece.len() as u64;
                h2_stream::send_data(tx, piece, false).await?;
            }
            if d.done {
                n += h2_relay::send_rest(tx, rw, src.tap.as_deref_mut()).await?;
                if let (Some(tap), Some(t)) = (src.tap.as_deref_mut(), d.trailers.as_ref()) {
                    tap.set_trailers(t.clone());
                }
                match d.trailers {
                    Some(t) => tx.send_trailers(h2_stream::to_header_map(&t, false))?,
                    None => tx.send_data(Bytes::new(), true)?,
                }
                return Ok(n);
            }
        } else if src.dec.is_done() {
            n += h2_relay::send_rest(tx, rw, src.tap.as_deref_mut()).await?;
            tx.send_data(Bytes::new(), true)?;
            return Ok(n);
        }
        match body_relay::read_some(src.stream, src.buf, src.timeout).await {
            Ok(0) => {
                src.dec.eof().map_err(|_| broken())?;
                n += h2_relay::send_rest(tx, rw, src.tap.as_deref_mut()).await?;
                tx.send_data(Bytes::new(), true)?;
                return Ok(n);
            }
            Ok(_) => {}
            Err(_) => return Err(broken()),
        }
    }
}

/// How an h2 request's body goes upstream.
// Not boxed: the body stream sits in the stream's future either way, and a box would
// cost the allocation this saves.
#[allow(clippy::large_enum_variant)]
enum UploadTask {
    /// Nothing to send: the request ended with its head. The client's body stream,
    /// already at its end.
    Done(Incoming),
    /// A task relays it, and hands the client's body stream back with its outcome;
    /// told through the `Notify` to stop sending.
    Running(
        tokio::task::JoinHandle<(Result<(), String>, Incoming)>,
        Rc<tokio::sync::Notify>,
    ),
}

impl UploadTask {
    /// Drops the relay (the client reset the stream).
    fn abort(&self) {
        if let UploadTask::Running(t, _) = self {
            t.abort();
        }
    }

    /// Tells the relay to stop sending and hand the body stream back.
    fn stop(&self) {
        if let UploadTask::Running(_, stop) = self {
            stop.notify_one();
        }
    }

    /// The upload's outcome and the client's body stream; None when it was aborted.
    async fn finish(self) -> Option<(Result<(), String>, Incoming)> {
        match self {
            UploadTask::Done(body) => Some((Ok(()), body)),
            UploadTask::Running(t, _) => t.await.ok(),
        }
    }
}
