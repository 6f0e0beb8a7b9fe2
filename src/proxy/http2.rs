//! HTTP/2 toward clients: every client stream is one exchange that runs the same
//! request and response events as HTTP/1 (hooks, pipeline steps, RESPOND, DROP as
//! RST_STREAM CANCEL). Streams run as tasks of their own on the worker, so a slow
//! stream never holds up another; bodies stream frame by frame under h2's flow control
//! unless a hook reads them.
//!
//! Upstream, a stream goes as a stream of one h2 connection when the upstream speaks
//! h2 (end to end: trailers and gRPC pass as they are), or is translated to an
//! HTTP/1.1 request through the worker's pool (reverse mode in front of an HTTP/1.1
//! upstream, and requests a hook re-routed). When h2 is offered: docs/decisions.md,
//! "HTTP/2".

use crate::http::{Body, Headers, Request, Response, Version};
use crate::io::PollStream;
use crate::plugin::{ConnInfo, Engine, Event, Phase, Step, Suspended};
use crate::proto::http1::{response_body_kind, BodyDecoder, BodyKind};
use crate::proxy::body_relay::{self, Buffered};
use crate::proxy::http1::read_response_head;
use crate::proxy::respond;
use crate::proxy::sse;
use crate::proxy::upstream::{self, ConnectError, Key, Upstream};
use crate::proxy::worker::{Counters, Worker};
use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use std::cell::Cell;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Fields that are meaningful on one HTTP/1 connection only and must not appear in
/// HTTP/2 (RFC 9113 section 8.2.2); `te` is allowed with the value "trailers" only.
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "te",
];

/// Streams a client may open at once on one connection (as nginx's default).
const MAX_STREAMS: u32 = 128;

/// What every stream of one client connection shares.
struct Session {
    w: Rc<Worker>,
    info: ConnInfo,
    /// "https" (intercepted TLS) or the reverse upstream's scheme.
    scheme: String,
    /// The authority requests go to unless a hook re-routes them.
    authority: String,
    /// Path prefix of a reverse upstream.
    path_prefix: String,
    /// Where the session's upstream is; a request re-routed elsewhere goes over HTTP/1.1.
    key: Key,
    /// How this session's requests reach the upstream.
    upstream: UpstreamConn,
    /// The h2c connection of [`UpstreamConn::Http1OrH2c`], once made.
    /// The flag turns false when that connection ends.
    h2c: std::cell::RefCell<Option<H2c>>,
    /// Streams in progress, and when the last one ended (idle timeout).
    open: Cell<usize>,
    last_end: Cell<Instant>,
}

/// A lazily made h2c upstream connection and whether it is still open.
type H2c = (h2::client::SendRequest<Bytes>, Rc<Cell<bool>>);

/// How an h2 session reaches its upstream.
enum UpstreamConn {
    /// One h2 connection; every client stream is a stream of it.
    H2(h2::client::SendRequest<Bytes>),
    /// HTTP/1.1 per request, through the worker's pool.
    Http1,
    /// A plaintext upstream that may speak h2c: gRPC requests (which need h2 end to
    /// end) go over one h2c connection made when the first one comes, the rest over
    /// HTTP/1.1.
    Http1OrH2c,
    /// Neither: every stream gets a 502 with this reason.
    Failed(String),
}

/// The upstream a session relays to.
pub enum Via {
    /// An upstream connection that speaks h2 (TLS that chose h2, or h2c).
    H2(Box<Upstream>),
    /// HTTP/1.1 through the pool (an upstream without h2).
    Http1,
    /// A plaintext upstream: h2c for gRPC, HTTP/1.1 for the rest.
    Http1OrH2c,
    /// None could be had: why.
    Failed(String),
}

/// Where an h2 session's requests go.
pub struct Target {
    /// "https" or "http".
    pub scheme: String,
    /// host[:port] as requests name it.
    pub authority: String,
    /// Path prefix (reverse mode).
    pub path_prefix: String,
}

/// Serves an h2 client connection (TLS that chose h2, or h2c with prior knowledge),
/// relaying its streams as `via` says: over one h2 upstream connection, or over
/// HTTP/1.1 through the pool; without an upstream every stream is answered 502 with
/// the reason. `early` holds client bytes already read. Returns (bytes in, bytes out)
/// on the client side.
pub async fn serve(
    w: Rc<Worker>,
    client: &crate::io::Stream,
    early: BytesMut,
    info: &ConnInfo,
    via: Via,
    target: Target,
) -> (u64, u64) {
    let mut cio = PollStream::new(client, early);
    match via {
        Via::H2(up) => {
            let Upstream { stream, buf, .. } = *up;
            let uio = Some(PollStream::new(&stream, buf));
            run(w, &mut cio, uio, UpstreamConn::Http1, info, target).await;
            stream.shutdown(Shutdown::Both);
        }
        Via::Http1 => run(w, &mut cio, None, UpstreamConn::Http1, info, target).await,
        Via::Http1OrH2c => run(w, &mut cio, None, UpstreamConn::Http1OrH2c, info, target).await,
        Via::Failed(why) => run(w, &mut cio, None, UpstreamConn::Failed(why), info, target).await,
    }
    (cio.bytes_read, cio.bytes_written)
}

/// Receive windows both sides of luring offer: larger than the protocol's 64 KiB, so
/// one stream is not limited to 64 KiB per round trip, and small enough that what a
/// connection can make luring hold (data is released only once forwarded) stays at
/// 1 MiB in each direction.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;

/// `uio` is the h2 upstream connection when there is one (then `otherwise` is unused).
async fn run(
    w: Rc<Worker>,
    cio: &mut PollStream<'_>,
    uio: Option<PollStream<'_>>,
    otherwise: UpstreamConn,
    info: &ConnInfo,
    target: Target,
) {
    let conn = info.conn_id;
    let (upstream, up_conn) = match uio {
        Some(uio) => match h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .handshake::<_, Bytes>(uio)
            .await
        {
            Ok((send, conn)) => (UpstreamConn::H2(send), Some(conn)),
            Err(e) => (
                UpstreamConn::Failed(format!("HTTP/2 handshake with the upstream failed: {e}")),
                None,
            ),
        },
        None => (otherwise, None),
    };
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
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
    let key = Key::new(&target.scheme, &target.authority);
    let session = Rc::new(Session {
        w: w.clone(),
        info: info.clone(),
        scheme: target.scheme,
        authority: target.authority,
        path_prefix: target.path_prefix,
        key,
        upstream,
        h2c: Default::default(),
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
                Some(Ok((req, tx))) => {
                    Counters::bump(&w.counters.requests);
                    session.open.set(session.open.get() + 1);
                    let s = session.clone();
                    crate::io::spawn(async move {
                        let mut reply = Reply { tx, status: 0, bytes: 0 };
                        if s.w.cfg.access_log {
                            let t0 = Instant::now();
                            let line = format!("{} {} HTTP/2.0", req.method(), req.uri());
                            exchange(&s, req, &mut reply).await;
                            s.access_log(&line, &reply, t0);
                        } else {
                            exchange(&s, req, &mut reply).await;
                        }
                        s.open.set(s.open.get() - 1);
                        s.last_end.set(Instant::now());
                    });
                }
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
                if session.open.get() > 0 {
                    idle_timer.as_mut().reset(now + idle);
                } else if session.last_end.get().elapsed() >= idle {
                    srv.graceful_shutdown();
                    closing = true;
                } else {
                    let since = session.last_end.get().elapsed();
                    idle_timer.as_mut().reset(now + idle.saturating_sub(since));
                }
            }
        }
    }
}

impl Session {
    /// One access log line per stream, in the HTTP/1 layout.
    fn access_log(&self, line: &str, reply: &Reply, t0: Instant) {
        let status = match reply.status {
            0 => "-".to_string(),
            s => s.to_string(),
        };
        tracing::info!(
            target: "luring::access",
            "{} \"{line}\" {status} {} {:.1}ms host={}://{} conn={}",
            self.info.client_addr,
            reply.bytes,
            t0.elapsed().as_secs_f64() * 1e3,
            self.scheme,
            self.authority,
            self.info.conn_id,
        );
    }

    /// The h2c connection to the session's upstream, made on first use; its driver
    /// runs as a task of its own and ends when the last handle is gone.
    async fn h2c_sender(&self) -> Result<h2::client::SendRequest<Bytes>, String> {
        if let Some((up, alive)) = self.h2c.borrow().as_ref() {
            if alive.get() {
                return Ok(up.clone());
            }
        }
        let (host, port) = crate::http::host_port_of(&self.scheme, &self.authority);
        let t = self.w.timeouts.connect;
        let up = match upstream::connect(self.w.backend, &host, port, t, None).await {
            Ok(u) => u,
            Err(ConnectError::Timeout(t) | ConnectError::Resolve(t) | ConnectError::Connect(t)) => {
                return Err(t)
            }
        };
        let stream = Rc::new(up.stream);
        let io = PollStream::new(stream.clone(), up.buf);
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| format!("h2c handshake with the upstream failed: {e}"))?;
        let conn_id = self.info.conn_id;
        let alive = Rc::new(Cell::new(true));
        let flag = alive.clone();
        crate::io::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(conn = conn_id, "upstream h2c connection ended: {e}");
            }
            // the next gRPC request of the session makes a new connection
            flag.set(false);
            stream.shutdown(Shutdown::Both);
        });
        *self.h2c.borrow_mut() = Some((send.clone(), alive));
        Ok(send)
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The outcome of a message event.
enum Decision {
    Forward,
    Drop,
    Respond(Response),
    Failed(String),
}

/// A body as it arrives on one stream.
struct Incoming {
    rx: RecvStream,
    /// Bytes read for a hook that then found the body over the limit; sent first.
    prefix: Option<Bytes>,
}

/// One stream: request event, then the exchange with the upstream over h2 or HTTP/1.1.
async fn exchange(s: &Session, req: http::Request<RecvStream>, respond: &mut Reply) {
    let (parts, rx) = req.into_parts();
    let ended = rx.is_end_stream();
    let mut req = match to_request(s, parts) {
        Ok(r) => r,
        Err((status, text)) => return respond.fail(status, &text),
    };
    let flow_id = s.w.next_conn_id();
    let engine = s.w.engine();
    let engine = engine.as_deref();
    let mut body = Incoming { rx, prefix: None };
    if ended {
        req.body = Body::Full(Bytes::new());
    }
    let te_trailers = req.headers.has_token("te", "trailers");
    let is_head = req.method.as_ref() == b"HEAD";
    let mut src = Source::H2(&mut body);
    match message_event(s, engine, flow_id, Message::Request(&mut req), &mut src).await {
        Decision::Forward => {}
        Decision::Drop => {
            tracing::debug!(conn = s.info.conn_id, "HTTP/2 stream reset by plugin");
            respond.send_reset(Reason::CANCEL);
            return;
        }
        Decision::Respond(r) => {
            respond.answer(r, is_head);
            return discard(body);
        }
        Decision::Failed(why) => return respond.fail(400, &why),
    }
    let ex = Exchange {
        s,
        engine,
        flow_id,
        is_head,
        te_trailers,
    };
    // a request a hook re-routed leaves this session's upstream: HTTP/1.1 to its own
    match &s.upstream {
        _ if Key::new(&req.scheme, &req.authority) != s.key => {
            ex.via_http1(req, body, respond).await
        }
        UpstreamConn::H2(up) => ex.via_h2(up.clone(), req, body, respond).await,
        UpstreamConn::Http1OrH2c if is_grpc(&req.headers) => match s.h2c_sender().await {
            Ok(up) => ex.via_h2(up, req, body, respond).await,
            Err(why) => respond.fail(502, &why),
        },
        UpstreamConn::Http1 | UpstreamConn::Http1OrH2c => ex.via_http1(req, body, respond).await,
        UpstreamConn::Failed(why) => respond.fail(502, why),
    }
}

/// How much of a request body nobody wants is read and dropped, and for how long, so
/// a client still uploading sees the answer instead of a reset (many clients, curl 7.x
/// among them, report RST_STREAM NO_ERROR during an upload as an error); past either
/// limit the stream is reset.
const DISCARD_MAX: u64 = 64 * 1024 * 1024;
const DISCARD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the rest of a request body that was answered without it, and drops it.
fn discard(mut body: Incoming) {
    if body.rx.is_end_stream() {
        return;
    }
    crate::io::spawn(async move {
        let mut seen = 0u64;
        let drain = async {
            while let Some(Ok(chunk)) = body.rx.data().await {
                seen += chunk.len() as u64;
                let _ = body.rx.flow_control().release_capacity(chunk.len());
                if seen > DISCARD_MAX {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_WAIT, drain).await;
    });
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
struct Exchange<'a> {
    s: &'a Session,
    engine: Option<&'a Engine>,
    flow_id: u64,
    is_head: bool,
    /// The client sent `te: trailers` (gRPC servers want it; the pipeline strips TE as
    /// hop-by-hop, and h2 allows this one value).
    te_trailers: bool,
}

impl Exchange<'_> {
    /// Relays the request as a stream of the session's h2 upstream connection.
    async fn via_h2(
        &self,
        upstream: h2::client::SendRequest<Bytes>,
        mut req: Request,
        mut body: Incoming,
        respond: &mut Reply,
    ) {
        if self.te_trailers {
            req.headers.set("te", "trailers");
        }
        if let Body::Full(b) = &req.body {
            set_length(&mut req.headers, b);
        }
        let head = match upstream_head(&req) {
            Ok(h) => h,
            Err(why) => return respond.fail(502, &why),
        };
        let mut sender = match upstream.ready().await {
            Ok(x) => x,
            Err(e) => return respond.fail(502, &format!("upstream HTTP/2 connection: {e}")),
        };
        let no_body = matches!(&req.body, Body::Full(b) if b.is_empty()) && req.trailers.is_none();
        let (resp_fut, mut tx) = match sender.send_request(head, no_body) {
            Ok(x) => x,
            Err(e) => return respond.fail(502, &format!("upstream refused the stream: {e}")),
        };
        let full = match std::mem::replace(&mut req.body, Body::Streaming) {
            Body::Full(b) => Some(b),
            _ => None,
        };
        let trailers = req.trailers.take();
        let upload = crate::io::spawn(async move {
            let r = match full {
                Some(_) if no_body => Ok(0),
                Some(b) => send_full(&mut tx, b, trailers.as_ref()).await,
                None => relay_rest(&mut body, &mut tx, None).await,
            };
            if r.is_err() {
                tx.send_reset(Reason::CANCEL);
            }
            r
        });
        let timeout = self.s.w.timeouts.upstream;
        let resp = match tokio::time::timeout(timeout, resp_fut).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                upload.abort();
                return match e.reason() {
                    // the upstream reset the stream: the client's stream is reset the same way
                    Some(reason) if e.is_remote() => respond.send_reset(reason),
                    _ => respond.fail(502, &format!("upstream: {e}")),
                };
            }
            Err(_) => {
                upload.abort();
                return respond.fail(504, &format!("upstream did not respond within {timeout:?}"));
            }
        };
        let (rparts, rrx) = resp.into_parts();
        let ended = rrx.is_end_stream();
        let resp = Response {
            status: rparts.status.as_u16(),
            reason: String::new(),
            version: Version::Http2,
            headers: from_header_map(&rparts.headers),
            body: if ended {
                Body::Full(Bytes::new())
            } else {
                Body::Streaming
            },
            trailers: None,
        };
        let mut rbody = Incoming {
            rx: rrx,
            prefix: None,
        };
        self.respond(&req, resp, Source::H2(&mut rbody), respond)
            .await;
        let _ = upload.await;
    }

    /// Relays the request over HTTP/1.1 (a pooled or new connection to its authority),
    /// and the HTTP/1 response back as h2.
    async fn via_http1(&self, mut req: Request, mut body: Incoming, respond: &mut Reply) {
        let s = self.s;
        let key = Key::new(&req.scheme, &req.authority);
        let mut up = match s.w.pool.take(&key, true) {
            Some(u) => u,
            None => {
                let tls = (&*key.scheme == "https").then_some(&s.w.tls);
                let t = s.w.timeouts.connect;
                match upstream::connect(s.w.backend, &key.host, key.port, t, tls).await {
                    Ok(u) => {
                        if let Some(info) = &u.tls_info {
                            crate::proxy::fire_tls_hook(&s.w, &s.info, info);
                        }
                        u
                    }
                    Err(ConnectError::Timeout(t)) => return respond.fail(504, &t),
                    Err(ConnectError::Resolve(t) | ConnectError::Connect(t)) => {
                        return respond.fail(502, &t)
                    }
                }
            }
        };
        // the body is sent at once, so nothing waits for a 100 Continue
        req.headers.remove("expect");
        // framing: a body held whole goes with its length; a streamed one keeps the
        // client's content-length, or is chunked; an empty one gets no field at all
        let kind = match (&req.body, content_length(&req.headers)) {
            (Body::Full(b), _) if b.is_empty() && req.trailers.is_none() => BodyKind::Empty,
            (Body::Full(b), _) => BodyKind::Length(b.len() as u64),
            (_, Some(n)) if body.prefix.is_none() => BodyKind::Length(n),
            _ => BodyKind::Chunked,
        };
        if kind == BodyKind::Empty {
            req.headers.remove("content-length");
            req.headers.remove("transfer-encoding");
        } else {
            respond::fix_framing(
                &mut req.headers,
                &req.body,
                req.trailers.as_ref(),
                kind,
                true,
            );
        }
        let mut head = BytesMut::with_capacity(256 + req.headers.len() * 48);
        respond::request_head(&mut req, &mut head);
        let full = match std::mem::replace(&mut req.body, Body::Streaming) {
            Body::Full(b) => Some(b),
            _ => None,
        };
        let trailers = req.trailers.take();
        let chunked = kind == BodyKind::Chunked;
        let timeout = s.w.timeouts.upstream;
        let limits = s.w.upstream_limits;
        let (got, upload_complete) = {
            let Upstream {
                stream: ups,
                buf: upbuf,
                ..
            } = &mut up;
            let ups: &crate::io::Stream = ups;
            let upload = async {
                match full {
                    Some(b) => {
                        let mut parts = vec![head.freeze()];
                        if !b.is_empty() || trailers.is_some() {
                            let chunked = respond::full_needs_chunked(trailers.as_ref(), true);
                            parts.push(if chunked {
                                respond::full_body_wire(&b, trailers.as_ref(), true)
                            } else {
                                b
                            });
                        }
                        ups.write_all_vectored(parts)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    None => upload_http1(ups, head.freeze(), &mut body, chunked).await,
                }
            };
            // the upstream is watched while the body goes, so an early answer (413, 401...)
            // reaches the client; no deadline while a long upload runs
            let response = read_response_head(ups, upbuf, &limits, None);
            tokio::pin!(upload);
            tokio::pin!(response);
            tokio::select! {
                biased;
                r = &mut response => (Some(r), false),
                u = &mut upload => {
                    let waited = tokio::time::timeout(timeout, &mut response).await;
                    match (u, waited) {
                        (Ok(()), Ok(r)) => (Some(r), true),
                        (Ok(()), Err(_)) => (None, true),
                        // the upstream stopped taking the body: it may have answered already
                        (Err(_), Ok(r @ Ok(_))) => (Some(r), false),
                        (Err(why), _) => {
                            ups.shutdown(Shutdown::Both);
                            return respond.fail(502, &format!("sending the request upstream: {why}"));
                        }
                    }
                }
            }
        };
        if !upload_complete {
            discard(body);
        }
        let rhead = match got {
            Some(Ok((_interim, h))) => h,
            Some(Err(e)) => {
                up.stream.shutdown(Shutdown::Both);
                let (status, text) = e.status_text(timeout);
                return respond.fail(status, &text);
            }
            None => {
                up.stream.shutdown(Shutdown::Both);
                return respond.fail(504, &format!("upstream did not respond within {timeout:?}"));
            }
        };
        let rkind = match response_body_kind(&req.method, &rhead) {
            Ok(k) if rhead.status != 101 => k,
            Ok(_) => {
                up.stream.shutdown(Shutdown::Both);
                return respond.fail(502, "upstream switched protocols on an HTTP/2 request");
            }
            Err(e) => {
                up.stream.shutdown(Shutdown::Both);
                return respond.fail(502, &format!("bad response framing from upstream: {e}"));
            }
        };
        let reusable = upload_complete
            && rhead.version == Version::Http11
            && !rhead.headers.has_token("connection", "close")
            && rkind != BodyKind::CloseDelimited;
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
        let src = Source::Http1 {
            up: &mut up,
            dec: &mut dec,
            kind: rkind,
            timeout: s.w.timeouts.upstream,
        };
        let complete = self.respond(&req, resp, src, respond).await;
        if reusable && complete && dec.is_done() {
            s.w.pool.put(key, up);
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
        respond: &mut Reply,
    ) -> bool {
        let s = self.s;
        let msg = Message::Response(req, &mut resp);
        match message_event(s, self.engine, self.flow_id, msg, &mut src).await {
            Decision::Forward => {}
            Decision::Drop => {
                respond.send_reset(Reason::CANCEL);
                return false;
            }
            Decision::Respond(r) => {
                respond.answer(r, self.is_head);
                return false;
            }
            Decision::Failed(why) => {
                respond.fail(502, &format!("upstream body: {why}"));
                return false;
            }
        }
        let full = match std::mem::replace(&mut resp.body, Body::Streaming) {
            Body::Full(b) => Some(b),
            _ => None,
        };
        // an event stream with sse.on_event hooks: events may change length
        let mut sse_rw = None;
        if full.is_none() && !self.is_head && sse::applies(self.engine, resp.status, &resp.headers)
        {
            if let Some(e) = self.engine {
                resp.headers.remove("content-length");
                sse_rw = Some(sse::Rewriter::new(
                    e,
                    &s.info,
                    self.flow_id,
                    s.w.cfg.max_plugin_body,
                ));
            }
        }
        // a HEAD or 304 response keeps the length of the body it does not carry
        if let Some(b) = full
            .as_ref()
            .filter(|_| !self.is_head && resp.status != 304)
        {
            set_length(&mut resp.headers, b);
        }
        let trailers = resp.trailers.take();
        let end_now =
            self.is_head || matches!(&full, Some(b) if b.is_empty() && trailers.is_none());
        let mut tx = match respond.send_response(response_head(&resp), end_now) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::debug!(conn = s.info.conn_id, "client stream gone: {e}");
                return false;
            }
        };
        if end_now {
            return full.is_some() || src.is_done();
        }
        let r = match full {
            Some(b) => send_full(&mut tx, b, trailers.as_ref()).await,
            None => src.relay(&mut tx, sse_rw.as_mut()).await,
        };
        match r {
            Ok(n) => {
                respond.bytes += n;
                true
            }
            Err(e) => {
                tracing::debug!(conn = s.info.conn_id, "HTTP/2 response relay ended: {e}");
                tx.send_reset(Reason::INTERNAL_ERROR);
                false
            }
        }
    }
}

/// The client's Content-Length, when it is one valid number.
fn content_length(h: &Headers) -> Option<u64> {
    let mut all = h.get_all("content-length");
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Writes a request head and then an h2 request body to an HTTP/1 upstream, chunked
/// when `chunked` (trailers then go in the last chunk).
async fn upload_http1(
    up: &crate::io::Stream,
    head: Bytes,
    body: &mut Incoming,
    chunked: bool,
) -> Result<(), String> {
    let frame = |data: Bytes| -> Bytes {
        if !chunked {
            return data;
        }
        let mut out = BytesMut::with_capacity(data.len() + 16);
        crate::proto::http1::encode_chunk(&data, &mut out);
        out.freeze()
    };
    let mut parts = vec![head];
    if let Some(p) = body.prefix.take() {
        parts.push(frame(p));
    }
    up.write_all_vectored(parts)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(chunk) = body.rx.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let len = chunk.len();
        up.write_all(frame(chunk))
            .await
            .map_err(|e| e.to_string())?;
        let _ = body.rx.flow_control().release_capacity(len);
    }
    let trailers = body.rx.trailers().await.map_err(|e| e.to_string())?;
    if chunked {
        let mut out = BytesMut::new();
        let t = trailers.as_ref().map(from_header_map);
        crate::proto::http1::encode_last_chunk(t.as_ref(), &mut out);
        up.write_all(out.freeze())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where a body comes from: an h2 stream, or an HTTP/1 upstream connection.
enum Source<'a> {
    H2(&'a mut Incoming),
    Http1 {
        up: &'a mut Upstream,
        dec: &'a mut BodyDecoder,
        kind: BodyKind,
        timeout: std::time::Duration,
    },
}

impl Source<'_> {
    /// Reads the whole body for a hook: Full with its trailers, or TooLarge (what was
    /// read is kept to be sent first).
    async fn buffer(&mut self, limit: usize) -> Result<(Body, Option<Headers>), String> {
        match self {
            Source::H2(body) => buffer(body, limit).await,
            Source::Http1 {
                up,
                dec,
                kind,
                timeout,
            } => {
                let got =
                    body_relay::buffer_body(&up.stream, &mut up.buf, dec, *kind, limit, *timeout)
                        .await?;
                match got {
                    Buffered::Complete(b, t) => Ok((Body::Full(b), t)),
                    Buffered::TooLarge(wire) => {
                        // decoded again from the body's first byte when it is relayed
                        let mut again = wire;
                        again.extend_from_slice(&up.buf);
                        up.buf = again;
                        **dec = BodyDecoder::new(*kind);
                        Ok((Body::TooLarge, None))
                    }
                }
            }
        }
    }

    /// Whether the body has been read to its end.
    fn is_done(&self) -> bool {
        match self {
            Source::H2(body) => body.rx.is_end_stream(),
            Source::Http1 { dec, .. } => dec.is_done(),
        }
    }

    /// Relays the rest of the body (and trailers) to the client, ending the stream;
    /// through the SSE layer's `rw` when given.
    async fn relay(
        &mut self,
        tx: &mut SendStream<Bytes>,
        rw: Option<&mut sse::Rewriter<'_>>,
    ) -> Result<u64, h2::Error> {
        match self {
            Source::H2(body) => relay_rest(body, tx, rw).await,
            Source::Http1 {
                up, dec, timeout, ..
            } => relay_http1(up, dec, *timeout, tx, rw).await,
        }
    }
}

/// Relays an HTTP/1 body to an h2 stream: framing removed, trailers as h2 trailers.
async fn relay_http1(
    up: &mut Upstream,
    dec: &mut BodyDecoder,
    timeout: std::time::Duration,
    tx: &mut SendStream<Bytes>,
    mut rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<u64, h2::Error> {
    let broken = || h2::Error::from(Reason::INTERNAL_ERROR);
    let mut n = 0;
    loop {
        if !up.buf.is_empty() {
            let d = dec.decode(&mut up.buf).map_err(|_| broken())?;
            for piece in d.data {
                let piece = rewrite(&mut rw, piece);
                n += piece.len() as u64;
                send_data(tx, piece, false).await?;
            }
            if d.done {
                n += send_rest(tx, rw).await?;
                match d.trailers {
                    Some(t) => tx.send_trailers(to_header_map(&t, false))?,
                    None => tx.send_data(Bytes::new(), true)?,
                }
                return Ok(n);
            }
        } else if dec.is_done() {
            n += send_rest(tx, rw).await?;
            tx.send_data(Bytes::new(), true)?;
            return Ok(n);
        }
        match body_relay::read_some(&up.stream, &mut up.buf, timeout).await {
            Ok(0) => {
                dec.eof().map_err(|_| broken())?;
                n += send_rest(tx, rw).await?;
                tx.send_data(Bytes::new(), true)?;
                return Ok(n);
            }
            Ok(_) => {}
            Err(_) => return Err(broken()),
        }
    }
}

/// A message event of a stream: the message, and how the engine and the pipeline
/// steps are called on it.
enum Message<'a> {
    Request(&'a mut Request),
    Response(&'a Request, &'a mut Response),
}

impl Message<'_> {
    fn event(&self) -> Event {
        match self {
            Message::Request(_) => Event::HttpRequest,
            Message::Response(..) => Event::HttpResponse,
        }
    }

    fn pipeline(&mut self, s: &Session) {
        match self {
            Message::Request(req) => s.w.pipeline.on_request(req),
            Message::Response(req, resp) => s.w.pipeline.on_response(req, resp),
        }
    }

    fn call(&mut self, e: &Engine, phase: Phase, s: &Session, flow_id: u64) -> Step {
        match self {
            Message::Request(req) => e.http_request(phase, &s.info, flow_id, req),
            Message::Response(req, resp) => e.http_response(phase, &s.info, flow_id, req, resp),
        }
    }

    fn resume(&mut self, e: &Engine, susp: Suspended, s: &Session, flow_id: u64) -> Step {
        match self {
            Message::Request(req) => e.resume_request(susp, &s.info, flow_id, req),
            Message::Response(req, resp) => e.resume_response(susp, &s.info, flow_id, req, resp),
        }
    }

    /// The body and trailers a hook that reads the body fills.
    fn body(&mut self) -> (&mut Body, &mut Option<Headers>) {
        match self {
            Message::Request(req) => (&mut req.body, &mut req.trailers),
            Message::Response(_, resp) => (&mut resp.body, &mut resp.trailers),
        }
    }
}

/// pre_pipeline hooks, the pipeline steps, post_pipeline hooks; a hook that reads a
/// streaming body gets it from `src`.
async fn message_event(
    s: &Session,
    engine: Option<&Engine>,
    flow_id: u64,
    mut msg: Message<'_>,
    src: &mut Source<'_>,
) -> Decision {
    let hooked = engine.filter(|e| e.has(msg.event()));
    for phase in [Phase::PrePipeline, Phase::PostPipeline] {
        if matches!(phase, Phase::PostPipeline) {
            msg.pipeline(s);
        }
        let Some(e) = hooked else { continue };
        let mut step = msg.call(e, phase, s, flow_id);
        loop {
            match step {
                Step::Continue => break,
                Step::Drop => return Decision::Drop,
                Step::Respond(r) => return Decision::Respond(r),
                Step::NeedBody(susp) => {
                    let (body, trailers) = msg.body();
                    if matches!(body, Body::Streaming) {
                        match src.buffer(s.w.cfg.max_plugin_body).await {
                            Ok((b, t)) => {
                                *body = b;
                                *trailers = t;
                            }
                            Err(why) => return Decision::Failed(why),
                        }
                    }
                    step = msg.resume(e, susp, s, flow_id);
                }
            }
        }
    }
    Decision::Forward
}

/// Reads an h2 body for a hook: Full with its trailers, or TooLarge with what was read
/// kept in `prefix` to be sent first.
async fn buffer(body: &mut Incoming, limit: usize) -> Result<(Body, Option<Headers>), String> {
    let mut got = BytesMut::new();
    while let Some(chunk) = body.rx.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.rx.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
        if got.len() > limit {
            body.prefix = Some(got.freeze());
            return Ok((Body::TooLarge, None));
        }
    }
    let trailers = body.rx.trailers().await.map_err(|e| e.to_string())?;
    Ok((
        Body::Full(got.freeze()),
        trailers.as_ref().map(from_header_map),
    ))
}

/// Sends `data` as flow control allows, ending the stream after it when `end`.
async fn send_data(
    tx: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        if end {
            tx.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let cap = match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
            Some(r) => r?,
            None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
        };
        if cap == 0 {
            continue;
        }
        let piece = data.split_to(cap.min(data.len()));
        tx.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

/// Sends a whole body and its trailers, ending the stream.
async fn send_full(
    tx: &mut SendStream<Bytes>,
    b: Bytes,
    trailers: Option<&Headers>,
) -> Result<u64, h2::Error> {
    let n = b.len() as u64;
    match trailers {
        Some(t) => {
            send_data(tx, b, false).await?;
            tx.send_trailers(to_header_map(t, false))?;
        }
        None => send_data(tx, b, true).await?,
    }
    Ok(n)
}

/// Relays what is left of a body: the part a hook read before finding it too large,
/// then the rest as it arrives.
async fn relay_rest(
    body: &mut Incoming,
    tx: &mut SendStream<Bytes>,
    mut rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<u64, h2::Error> {
    let mut n = 0;
    if let Some(p) = body.prefix.take() {
        let p = rewrite(&mut rw, p);
        n += p.len() as u64;
        send_data(tx, p, false).await?;
    }
    Ok(n + pump(&mut body.rx, tx, rw).await?)
}

/// The SSE layer's output for `piece`, or `piece` itself without one.
fn rewrite(rw: &mut Option<&mut sse::Rewriter<'_>>, piece: Bytes) -> Bytes {
    match rw {
        Some(r) => r.feed(&piece).freeze(),
        None => piece,
    }
}

/// What the SSE layer still holds when the body ends (an unfinished last block).
async fn send_rest(
    tx: &mut SendStream<Bytes>,
    rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<u64, h2::Error> {
    let Some(r) = rw else { return Ok(0) };
    let rest = r.finish();
    let n = rest.len() as u64;
    send_data(tx, rest, false).await?;
    Ok(n)
}

/// Relays a body frame by frame, then its trailers; the receive window opens only as
/// the other side takes the data, so a slow reader slows the sender.
async fn pump(
    rx: &mut RecvStream,
    tx: &mut SendStream<Bytes>,
    mut rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<u64, h2::Error> {
    let mut n = 0;
    while let Some(chunk) = rx.data().await {
        let chunk = chunk?;
        let len = chunk.len();
        let out = rewrite(&mut rw, chunk);
        n += out.len() as u64;
        send_data(tx, out, false).await?;
        let _ = rx.flow_control().release_capacity(len);
    }
    n += send_rest(tx, rw).await?;
    match rx.trailers().await? {
        Some(t) => tx.send_trailers(t)?,
        None => tx.send_data(Bytes::new(), true)?,
    }
    Ok(n)
}

/// Content-Length for a body held whole (a hook may have replaced it): h2 peers reset a
/// stream whose data does not match it. An empty body without the field stays without.
fn set_length(h: &mut Headers, body: &Bytes) {
    if !body.is_empty() || h.contains("content-length") {
        h.set("content-length", body.len().to_string());
    }
}

/// The version-agnostic request of an h2 stream, routed as this session routes.
fn to_request(s: &Session, parts: http::request::Parts) -> Result<Request, (u16, String)> {
    if parts.method == http::Method::CONNECT {
        return Err((501, "CONNECT over HTTP/2 is not supported".into()));
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = if s.path_prefix.is_empty() {
        path
    } else {
        format!("{}{}", s.path_prefix, path)
    };
    // hooks and pipeline steps see the client's :authority as Host, as an HTTP/1
    // request carries it (it goes back into :authority upstream)
    let mut headers = from_header_map(&parts.headers);
    if let Some(a) = parts.uri.authority().filter(|_| !headers.contains("host")) {
        headers.add("host", a.as_str().to_string());
    }
    Ok(Request {
        method: Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
        scheme: s.scheme.clone(),
        authority: s.authority.clone(),
        path: Some(path),
        version: Version::Http2,
        headers,
        body: Body::Streaming,
        trailers: None,
        timestamp_start: now_unix(),
    })
}

/// The h2 head of a request going upstream; `Host` (set by the pipeline) becomes the
/// `:authority`.
fn upstream_head(req: &Request) -> Result<http::Request<()>, String> {
    let authority = req
        .headers
        .get("host")
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_else(|| req.authority.clone());
    let path = req.path.as_deref().unwrap_or("/");
    let uri = format!("{}://{}{}", req.scheme, authority, path);
    let mut b = http::Request::builder()
        .method(req.method.as_ref())
        .uri(uri)
        .version(http::Version::HTTP_2);
    if let Some(h) = b.headers_mut() {
        *h = to_header_map(&req.headers, true);
    }
    b.body(())
        .map_err(|e| format!("cannot send the request over HTTP/2: {e}"))
}

/// The h2 head of a response going to the client.
fn response_head(resp: &Response) -> http::Response<()> {
    let mut r = http::Response::new(());
    *r.status_mut() =
        http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    *r.headers_mut() = to_header_map(&resp.headers, true);
    r
}

fn from_header_map(map: &http::HeaderMap) -> Headers {
    let mut h = Headers::with_capacity(map.len());
    for (name, value) in map {
        h.push_wire(
            Bytes::copy_from_slice(name.as_str().as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
    }
    h
}

/// Header fields in h2 form: names lower-cased; fields h2 forbids dropped when `head`
/// (`te: trailers` is the one connection field h2 keeps).
fn to_header_map(h: &Headers, head: bool) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(h.len());
    for f in h.iter() {
        let Ok(name) = http::HeaderName::from_bytes(&f.name) else {
            continue;
        };
        if head
            && CONNECTION_SPECIFIC.contains(&name.as_str())
            && !(name == http::header::TE && f.value.as_ref() == b"trailers")
        {
            continue;
        }
        if let Ok(v) = http::HeaderValue::from_maybe_shared(f.value.clone()) {
            map.append(name, v);
        }
    }
    map
}

/// The client side of one stream, remembering what was answered (for the access log).
struct Reply {
    tx: h2::server::SendResponse<Bytes>,
    /// Status sent (0: none, e.g. the stream was reset).
    status: u16,
    /// Body bytes sent.
    bytes: u64,
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

    fn send_reset(&mut self, reason: Reason) {
        self.tx.send_reset(reason);
    }

    /// Answers the stream with a response a plugin made.
    fn answer(&mut self, mut r: Response, is_head: bool) {
        let body = match std::mem::replace(&mut r.body, Body::Streaming) {
            Body::Full(b) => b,
            _ => Bytes::new(),
        };
        // 204 and 304 carry no body (RFC 9110 sections 15.3.5 and 15.4.5)
        let bodiless = matches!(r.status, 204 | 304);
        if r.status == 204 {
            r.headers.remove("content-length");
        } else if !bodiless {
            r.headers.set("content-length", body.len().to_string());
        }
        let end = is_head || bodiless || (body.is_empty() && r.trailers.is_none());
        let Ok(mut tx) = self.send_response(response_head(&r), end) else {
            return;
        };
        if end {
            return;
        }
        self.bytes += body.len() as u64;
        // a plugin's body is small; it is queued at once and flows as the window allows
        let trailers = r.trailers.take();
        crate::io::spawn(async move {
            let _ = send_full(&mut tx, body, trailers.as_ref()).await;
        });
    }

    /// Answers the stream with an error naming the reason, as the HTTP/1 side does.
    fn fail(&mut self, status: u16, text: &str) {
        tracing::debug!("HTTP/2 stream answered {status}: {text}");
        let mut headers = Headers::new();
        headers.add("content-type", "text/plain; charset=utf-8");
        let r = Response {
            status,
            reason: String::new(),
            version: Version::Http2,
            headers,
            body: Body::Full(Bytes::from(format!("luring: {text}\n"))),
            trailers: None,
        };
        self.answer(r, false);
    }
}
