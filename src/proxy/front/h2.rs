//! The HTTP/2 client front: every client stream is one exchange, run as a task of its
//! own on the worker so a slow stream never holds up another. DROP resets the stream
//! (RST_STREAM CANCEL) and the connection lives on; bodies stream frame by frame under
//! h2's flow control unless a hook reads them.
//!
//! Upstream, a stream goes as a stream of one h2 connection when the upstream speaks
//! h2 (end to end: trailers and gRPC pass as they are), or as an HTTP/1.1 request
//! through the worker's pool (reverse mode in front of an HTTP/1.1 upstream, and
//! requests a hook re-routed). When h2 is offered: docs/decisions.md, "HTTP/2".

use crate::flows::capture::{BodyTap, Capture};
use crate::http::{Body, Headers, Request, Response};
use crate::io::PollStream;
use crate::plugin::ConnInfo;
use crate::proto::http1::{response_body_kind, BodyDecoder, BodyKind};
use crate::proxy::body_relay::{self, H1Body};
use crate::proxy::exchange::log::{sent_status, AccessRecord};
use crate::proxy::exchange::recording;
use crate::proxy::exchange::route::{self, Target2};
use crate::proxy::exchange::{self, reply, rules, Decision, Flow, Message, Source};
use crate::proxy::grpc;
use crate::proxy::h1_wire;
use crate::proxy::h2_stream::{self, Incoming};
use crate::proxy::sse;
use crate::proxy::upstream::h1::{self as up1, Upload, Waits};
use crate::proxy::upstream::h2::{self as up2, StreamError};
use crate::proxy::upstream::{self, Key, Upstream};
use crate::proxy::worker::{Counters, Worker};
use crate::proxy::worker_tls::Alpn;
use crate::proxy::{grpc_web, grpc_web_h2};
use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use std::cell::Cell;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Instant;

/// Streams a client may open at once on one connection (as nginx's default).
const MAX_STREAMS: u32 = 128;

/// How an h2 session reaches its upstream.
pub enum Via {
    /// An upstream connection that speaks h2 (TLS that chose h2, or h2c).
    H2(Box<Upstream>),
    /// HTTP/1.1 through the pool (an upstream without h2).
    Http1,
    /// A plaintext upstream that may speak h2c: gRPC requests (which need h2 end to
    /// end) go over one h2c connection made when the first one comes, the rest over
    /// HTTP/1.1.
    Http1OrH2c,
    /// None could be had: every stream gets a 502 with this reason.
    Failed(String),
}

/// How a running session reaches its upstream.
enum UpstreamConn {
    H2(h2::client::SendRequest<Bytes>),
    Http1,
    Http1OrH2c,
    Failed(String),
}

/// What every stream of one client connection shares.
struct Session {
    w: Rc<Worker>,
    info: ConnInfo,
    /// Where requests go unless a hook re-routes them.
    target: Target2,
    /// The pool key of `target`: a request re-routed elsewhere goes over HTTP/1.1.
    key: Key,
    upstream: UpstreamConn,
    /// The h2c connection of [`UpstreamConn::Http1OrH2c`], once made.
    h2c: up2::Lazy,
    /// Streams in progress, and when the last one ended (idle timeout).
    open: Cell<usize>,
    last_end: Cell<Instant>,
}

/// Serves an h2 client connection (TLS that chose h2, or h2c with prior knowledge),
/// relaying its streams as `via` says. `early` holds client bytes already read.
pub async fn serve(
    w: Rc<Worker>,
    client: &crate::io::Stream,
    early: BytesMut,
    info: &ConnInfo,
    via: Via,
    target: Target2,
) {
    let mut cio = PollStream::new(client, early);
    match via {
        Via::H2(up) => {
            let Upstream { stream, buf, .. } = *up;
            let uio = PollStream::new(&stream, buf);
            match up2::handshake(uio).await {
                Ok((send, conn)) => {
                    let up = UpstreamConn::H2(send);
                    run(w, &mut cio, up, Some(conn), info, target).await;
                }
                Err(e) => {
                    let why = format!("HTTP/2 handshake with the upstream failed: {e}");
                    run(w, &mut cio, UpstreamConn::Failed(why), None, info, target).await;
                }
            }
            stream.shutdown(Shutdown::Both);
        }
        Via::Http1 => run(w, &mut cio, UpstreamConn::Http1, None, info, target).await,
        Via::Http1OrH2c => run(w, &mut cio, UpstreamConn::Http1OrH2c, None, info, target).await,
        Via::Failed(why) => run(w, &mut cio, UpstreamConn::Failed(why), None, info, target).await,
    }
}

/// The h2 upstream connection's driver, when the session has one.
type UpDriver<'a> = h2::client::Connection<PollStream<'a>, Bytes>;

async fn run(
    w: Rc<Worker>,
    cio: &mut PollStream<'_>,
    upstream: UpstreamConn,
    up_conn: Option<UpDriver<'_>>,
    info: &ConnInfo,
    target: Target2,
) {
    let conn = info.conn_id;
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .initial_window_size(up2::STREAM_WINDOW)
        .initial_connection_window_size(up2::CONN_WINDOW)
        .max_header_list_size(w.cfg.max_head_size as u32)
        .handshake::<_, Bytes>(cio);
    // a client that never sends its preface is cut off like a slow HTTP/1 head
    let mut srv = match tokio::time::timeout(w.timeouts.head, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(conn, "client HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(conn, "client HTTP/2 preface timed out");
            return;
        }
    };
    let session = Rc::new(Session {
        w: w.clone(),
        info: info.clone(),
        key: Key::new(&target.scheme, &target.authority),
        target,
        upstream,
        h2c: up2::Lazy::default(),
        open: Cell::new(0),
        last_end: Cell::new(Instant::now()),
    });
    let up_conn = async move {
        match up_conn {
            Some(c) => c.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(up_conn);
    let mut upstream_open = true;
    let mut closing = false;
    let mut drain = w.draining.subscribe();
    let idle = w.timeouts.idle;
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            next = srv.accept() => match next {
                Some(Ok((req, tx))) => spawn_stream(&session, req, tx),
                Some(Err(e)) => {
                    tracing::debug!(conn, "client HTTP/2 connection ended: {e}");
                    break;
                }
                None => break,
            },
            r = &mut up_conn, if upstream_open => {
                upstream_open = false;
                if let Err(e) = r {
                    tracing::info!(conn, "upstream HTTP/2 connection ended: {e}");
                }
                // new streams could not be served: tell the client to open a new connection
                srv.graceful_shutdown();
                closing = true;
            }
            _ = drain.changed(), if !closing => {
                srv.graceful_shutdown();
                closing = true;
            }
            // one wake-up per idle period: the timer moves to a period after the last
            // stream ended, or a period from now while streams are open
            _ = &mut idle_timer, if !closing => {
                let now = tokio::time::Instant::now();
                let since = session.last_end.get().elapsed();
                if session.open.get() > 0 {
                    idle_timer.as_mut().reset(now + idle);
                } else if since >= idle {
                    srv.graceful_shutdown();
                    closing = true;
                } else {
                    idle_timer.as_mut().reset(now + idle.saturating_sub(since));
                }
            }
        }
    }
}

/// Runs one client stream as a task of its own.
fn spawn_stream(
    session: &Rc<Session>,
    req: http::Request<RecvStream>,
    tx: h2::server::SendResponse<Bytes>,
) {
    Counters::bump(&session.w.counters.requests);
    session.open.set(session.open.get() + 1);
    let s = session.clone();
    crate::io::spawn(async move {
        let mut reply = Reply {
            tx,
            status: 0,
            bytes: 0,
            rec: None,
        };
        if s.w.cfg.access_log {
            let record = AccessRecord::http(
                req.method().as_str().as_bytes(),
                req.uri().to_string().as_bytes(),
                "HTTP/2.0",
                &s.target.scheme,
                s.target.authority.as_bytes(),
            );
            stream(&s, req, &mut reply).await;
            let status = sent_status(reply.status);
            record.finish(s.info.client_addr, status, reply.bytes, s.info.conn_id);
        } else {
            stream(&s, req, &mut reply).await;
        }
        recording::finish(&s.w, &s.info, reply.rec.take());
        s.open.set(s.open.get() - 1);
        s.last_end.set(Instant::now());
    });
}

/// One stream: the request event, then the exchange with the upstream over h2 or
/// HTTP/1.1.
async fn stream(s: &Session, req: http::Request<RecvStream>, reply: &mut Reply) {
    let mut call = None;
    exchange_stream(s, req, reply, &mut call).await;
    // a call that ended without its trailers (reset, refused, failed upstream)
    if let Some(c) = call {
        c.end_abnormally("the call ended without a status");
    }
}

/// [`stream`]'s exchange; `call` is set when the gRPC layer takes the stream.
async fn exchange_stream(
    s: &Session,
    req: http::Request<RecvStream>,
    reply: &mut Reply,
    call: &mut Option<Rc<grpc::Call>>,
) {
    let (parts, rx) = req.into_parts();
    let mut req = match route::h2_request(&parts, &s.target) {
        Ok(r) => r,
        Err((status, text)) => return reply.fail(status, &text),
    };
    if rx.is_end_stream() {
        req.body = Body::Full(Bytes::new());
    }
    let engine = s.w.engine();
    let f = Flow {
        w: &s.w,
        info: &s.info,
        engine: engine.as_deref(),
        id: s.w.next_conn_id(),
    };
    let max = s.w.cfg.max_grpc_message;
    *call = grpc::Call::of(engine.as_ref(), &req, &s.info, f.id, max);
    let mut body = Incoming::new(rx);
    let te_trailers = req.headers.has_token("te", "trailers");
    let is_head = req.method.as_ref() == b"HEAD";
    let msg = Message::Request {
        req: &mut req,
        upgrade: None,
        grpc: call.as_ref().map(|c| &c.start),
    };
    let decision = exchange::event!(&f, msg, &mut Source::H2(&mut body));
    reply.rec = recording::start(&f, &req, reply.tx.stream_id().as_u32());
    match decision {
        Decision::Forward => {}
        Decision::Drop => {
            tracing::debug!(conn = s.info.conn_id, "HTTP/2 stream reset by plugin");
            reply.record(|r| r.error("dropped by plugin"));
            return reply.tx.send_reset(Reason::CANCEL);
        }
        Decision::Respond(r) => {
            let r = match call.as_ref() {
                Some(c) => grpc_web::respond_call(c, r),
                None => r,
            };
            reply.answer(r, is_head);
            return h2_stream::discard(body);
        }
        Decision::Failed(why) => return reply.fail(400, &why),
    }
    if let Some(g) = grpc_web::gateway(&s.w.cfg, &s.w.mode, &req) {
        return gateway(s, &f, g, req, body, reply, call.take()).await;
    }
    let ex = Stream {
        s,
        f,
        is_head,
        te_trailers,
        call: call.clone(),
    };
    // a request a hook re-routed leaves this session's upstream: HTTP/1.1 to its own
    match &s.upstream {
        _ if Key::new(&req.scheme, &req.authority) != s.key => ex.via_h1(req, body, reply).await,
        UpstreamConn::H2(up) => ex.via_h2(up.clone(), req, body, reply).await,
        UpstreamConn::Http1OrH2c if is_grpc(&req.headers) => {
            let (host, port) = (&s.key.host, s.key.port);
            let t = s.w.timeouts.connect;
            let connect = async {
                upstream::connect(s.w.backend, host, port, t, None)
                    .await
                    .map_err(|e| e.text().to_string())
            };
            match s.h2c.sender(connect, s.info.conn_id).await {
                Ok(up) => ex.via_h2(up, req, body, reply).await,
                Err(why) => reply.fail(502, &why),
            }
        }
        UpstreamConn::Http1 | UpstreamConn::Http1OrH2c => ex.via_h1(req, body, reply).await,
        UpstreamConn::Failed(why) => reply.fail(502, why),
    }
}

/// `--grpc-web`: a preflight answered, or a gRPC-web call over the session's h2
/// upstream (h2c made on first use for a plaintext upstream).
async fn gateway(
    s: &Session,
    f: &Flow<'_>,
    g: grpc_web::Gateway,
    req: Request,
    body: Incoming,
    reply: &mut Reply,
    call: Option<Rc<grpc::Call>>,
) {
    let protocol = match g {
        grpc_web::Gateway::Preflight(r) => return reply.answer(r, false),
        grpc_web::Gateway::Call(p) => p,
    };
    let up = match &s.upstream {
        UpstreamConn::H2(up) => up.clone(),
        UpstreamConn::Http1OrH2c => {
            let (host, port) = (&s.key.host, s.key.port);
            let t = s.w.timeouts.connect;
            let connect = async {
                upstream::connect(s.w.backend, host, port, t, None)
                    .await
                    .map_err(|e| e.text().to_string())
            };
            match s.h2c.sender(connect, s.info.conn_id).await {
                Ok(up) => up,
                Err(why) => return reply.fail(502, &why),
            }
        }
        UpstreamConn::Http1 => return reply.fail(502, "the upstream does not speak HTTP/2"),
        UpstreamConn::Failed(why) => return reply.fail(502, why),
    };
    match grpc_web_h2::call(f, up, req, body, &mut reply.tx, call, protocol).await {
        grpc_web_h2::Done::Answer(r) => reply.answer(r, false),
        grpc_web_h2::Done::Sent(status, n) => {
            reply.status = status;
            reply.bytes += n;
        }
        grpc_web_h2::Done::Reset => {}
    }
}

/// Whether a request is a gRPC call, which needs h2 end to end (gRPC-web does not).
fn is_grpc(h: &Headers) -> bool {
    h.get("content-type").is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct == b"application/grpc"
            || ct.starts_with(b"application/grpc+")
            || ct.starts_with(b"application/grpc;")
    })
}

/// What one stream's exchange with the upstream needs to know.
struct Stream<'a> {
    s: &'a Session,
    f: Flow<'a>,
    is_head: bool,
    /// The client sent `te: trailers` (the pipeline strips TE as hop-by-hop).
    te_trailers: bool,
    /// The gRPC call, when the gRPC layer takes the stream.
    call: Option<Rc<grpc::Call>>,
}

impl Stream<'_> {
    /// Relays the request as a stream of an h2 upstream connection.
    async fn via_h2(
        &self,
        upstream: h2::client::SendRequest<Bytes>,
        mut req: Request,
        mut body: Incoming,
        reply: &mut Reply,
    ) {
        let started = match up2::start(upstream, &mut req, self.te_trailers).await {
            Ok(s) => s,
            Err(e) => return reply.stream_error(e),
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
        body.tap = reply.rec.as_ref().map(|r| r.new_tap());
        let mut up_dir = match (&self.call, &full) {
            (Some(c), None) => {
                Some(c.direction(true, req.headers.get("grpc-encoding").map(|v| &v[..])))
            }
            _ => None,
        };
        let upload = crate::io::spawn(async move {
            let r = match (full, up_dir.as_mut()) {
                (Some(_), _) if no_body => Ok(()),
                (Some(b), _) => h2_stream::send_full(&mut tx, b, trailers.as_ref())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                (None, Some(dir)) => match grpc::relay(&mut body, &mut tx, dir).await {
                    Ok(grpc::Relayed::Cancelled(..)) => Err("cancelled by a hook".into()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                (None, None) => h2_stream::relay_rest(&mut body, &mut tx, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if r.is_err() {
                // also what a hook's msg:cancel sends the upstream
                tx.send_reset(Reason::CANCEL);
            }
            (r, body.tap)
        });
        let (resp, rx) = match up2::response(response, self.s.w.timeouts.upstream).await {
            Ok(r) => r,
            Err(e) => {
                upload.abort();
                if let Some((status, message)) = self.call.as_ref().and_then(|c| c.cancelled()) {
                    return reply.grpc_status(self.call.as_deref(), status, &message);
                }
                return reply.stream_error(e);
            }
        };
        let mut rbody = Incoming::new(rx);
        rbody.tap = reply.rec.as_ref().map(|r| r.new_tap());
        self.respond(&req, resp, Source::H2(&mut rbody), reply)
            .await;
        reply.put_tap(true, rbody.tap);
        if let Ok((r, tap)) = upload.await {
            reply.put_tap(false, tap);
            if let Err(why) = r {
                reply.record(|c| c.error(format!("request body: {why}")));
            }
        }
    }

    /// Relays the request over HTTP/1.1 (a pooled or new connection to its authority),
    /// and the HTTP/1 response back as h2.
    async fn via_h1(&self, mut req: Request, mut body: Incoming, reply: &mut Reply) {
        let w = &*self.s.w;
        let key = Key::new(&req.scheme, &req.authority);
        let mut up = match upstream::reuse(w, &key, true) {
            Some(u) => u,
            None => match upstream::open(w, &self.s.info, &key, Alpn::Http1, None).await {
                Ok(u) => u,
                Err(e) => {
                    let (status, text) = e.answer();
                    return reply.fail(status, &text);
                }
            },
        };
        if let Some(k) = self.call.as_ref().filter(|k| k.protocol().is_web()) {
            let max = w.cfg.max_plugin_body;
            let r = grpc_web::hook_request(&mut Source::H2(&mut body), &mut req, k, max).await;
            if let Err((status, message)) = r {
                return reply.answer(grpc_web::cancelled_reply(k, status, &message), false);
            }
        }
        body.tap = reply.rec.as_ref().map(|r| r.new_tap());
        let (head, upload) = h1_request(&mut req, &mut body);
        let deadline = crate::io::Deadline::new();
        let waits = Waits {
            upstream: w.timeouts.upstream,
            deadline: &deadline,
            limits: &w.upstream_limits,
        };
        let answer = match upload {
            Ok(parts) => up1::send_ready(&mut up, head, parts, waits).await,
            Err(streamed) => up1::send_streaming(&mut up, head, streamed, waits).await,
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                up.stream.shutdown(Shutdown::Both);
                let (status, text) = match e {
                    up1::SendError::Upstream(e) => e.answer(w.timeouts.upstream),
                    up1::SendError::Client(why) | up1::SendError::BadBody(why) => {
                        (502, format!("sending the request upstream: {why}"))
                    }
                };
                return reply.fail(status, &text);
            }
        };
        let upload_complete = answer.complete;
        reply.put_tap(false, body.tap.take());
        if !upload_complete {
            h2_stream::discard(body);
        }
        let rhead = answer.head;
        let rkind = match response_body_kind(&req.method, &rhead) {
            Ok(k) if rhead.status != 101 => k,
            Ok(_) => {
                up.stream.shutdown(Shutdown::Both);
                return reply.fail(502, "upstream switched protocols on an HTTP/2 request");
            }
            Err(e) => {
                up.stream.shutdown(Shutdown::Both);
                return reply.fail(502, &format!("bad response framing from upstream: {e}"));
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
        if reusable && complete && dec.is_done() {
            w.pool.put(key, up);
        } else {
            up.stream.shutdown(Shutdown::Both);
        }
    }

    /// The response event, then the response to the client, its body from `src`.
    /// Returns whether the upstream's body was read to its end.
    async fn respond(
        &self,
        req: &Request,
        mut resp: Response,
        mut src: Source<'_>,
        reply: &mut Reply,
    ) -> bool {
        let s = self.s;
        let msg = Message::Response(req, &mut resp);
        match exchange::event!(&self.f, msg, &mut src) {
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
                let max = s.w.cfg.max_plugin_body;
                sse_rw = Some(sse::Rewriter::new(e, &s.info, self.f.id, max));
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
        let mut tx = match reply.send_response(h2_stream::response_head(&resp), end_now) {
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
            (None, Source::H2(body)) => h2_stream::relay_rest(body, &mut tx, sse_rw.as_mut()).await,
            (None, Source::H1 { mut body, .. }) => {
                relay_h1(&mut body, &mut tx, sse_rw.as_mut()).await
            }
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
fn h1_request<'b>(req: &mut Request, body: &'b mut Incoming) -> (BytesMut, H1Upload<'b>) {
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
                if let Some(t) = src.tap.as_deref_mut() {
                    t.see(&piece);
                }
                let piece = h2_stream::rewrite(&mut rw, piece);
                n += piece.len() as u64;
                h2_stream::send_data(tx, piece, false).await?;
            }
            if d.done {
                n += h2_stream::send_rest(tx, rw).await?;
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
            n += h2_stream::send_rest(tx, rw).await?;
            tx.send_data(Bytes::new(), true)?;
            return Ok(n);
        }
        match body_relay::read_some(src.stream, src.buf, src.timeout).await {
            Ok(0) => {
                src.dec.eof().map_err(|_| broken())?;
                n += h2_stream::send_rest(tx, rw).await?;
                tx.send_data(Bytes::new(), true)?;
                return Ok(n);
            }
            Ok(_) => {}
            Err(_) => return Err(broken()),
        }
    }
}

/// The client side of one stream, remembering what was answered (for the access log).
struct Reply {
    tx: h2::server::SendResponse<Bytes>,
    /// Status sent (0: none, e.g. the stream was reset).
    status: u16,
    /// Body bytes sent.
    bytes: u64,
    /// The recording of this stream's exchange, with `--record`.
    rec: Option<Box<Capture>>,
}

impl Reply {
    fn send_response(
        &mut self,
        head: http::Response<()>,
        end: bool,
    ) -> Result<SendStream<Bytes>, h2::Error> {
        let status = head.status().as_u16();
        let tx = self.tx.send_response(head, end)?;
        self.status = status;
        Ok(tx)
    }

    /// Answers a gRPC call with only a status (a hook's cancel before any response).
    fn grpc_status(&mut self, call: Option<&grpc::Call>, status: u32, message: &str) {
        if let Some(c) = call {
            return self.answer(grpc_web::cancelled_reply(c, status, message), false);
        }
        let st = crate::proto::grpc::Status::new(status, message);
        let mut headers = Headers::new();
        for (name, value) in crate::proto::grpc::trailers_only::<&str, &str>(&st, &[]) {
            headers.add(name, value);
        }
        if let Some(c) = call {
            c.end(st, Vec::new());
        }
        let r = Response {
            status: 200,
            reason: String::new(),
            version: crate::http::Version::Http2,
            headers,
            body: Body::Full(Bytes::new()),
            trailers: None,
        };
        self.answer(r, false);
    }

    /// Updates the recording of this stream, when there is one.
    fn record(&mut self, f: impl FnOnce(&mut Capture)) {
        if let Some(c) = self.rec.as_mut() {
            f(c);
        }
    }

    /// Hands back a body tap to the recording.
    fn put_tap(&mut self, resp: bool, tap: Option<BodyTap>) {
        if let (Some(c), Some(t)) = (self.rec.as_mut(), tap) {
            c.put_tap(resp, t);
        }
    }

    /// Answers the stream with a response luring makes (a plugin's, an error).
    fn answer(&mut self, mut r: Response, is_head: bool) {
        let body = reply::prepare(&mut r, is_head);
        if let Some(c) = self.rec.as_mut() {
            let mut shown = r.clone();
            shown.body = Body::Full(body.clone());
            c.response(&shown, true);
        }
        // a trailers-only gRPC answer carries no content-length (it has no DATA)
        if body.is_empty() && r.headers.contains("grpc-status") {
            r.headers.remove("content-length");
        }
        let trailers = r
            .trailers
            .take()
            .filter(|_| !is_head && !reply::bodiless(r.status));
        let end = body.is_empty() && trailers.is_none();
        let Ok(mut tx) = self.send_response(h2_stream::response_head(&r), end) else {
            return;
        };
        if end {
            return;
        }
        self.bytes += body.len() as u64;
        // a plugin's body is small; it is queued at once and flows as the window allows
        crate::io::spawn(async move {
            let _ = h2_stream::send_full(&mut tx, body, trailers.as_ref()).await;
        });
    }

    /// Answers the stream with an error naming the reason, as the HTTP/1 front does.
    fn fail(&mut self, status: u16, text: &str) {
        tracing::info!("HTTP/2 stream answered {status}: {text}");
        self.record(|c| c.error(text));
        self.answer(reply::error(status, text), false);
    }

    /// Answers an upstream stream's failure: the same reset, or an error.
    fn stream_error(&mut self, e: StreamError) {
        match e {
            StreamError::Reset(reason) => self.tx.send_reset(reason),
            StreamError::Answer(status, text) => self.fail(status, &text),
        }
    }
}
