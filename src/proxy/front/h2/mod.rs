//! The HTTP/2 client front: every client stream is one exchange, run as a task of its
//! own on the worker so a slow stream never holds up another. DROP resets the stream
//! (RST_STREAM CANCEL) and the connection lives on; bodies stream frame by frame under
//! h2's flow control unless a hook reads them.
//!
//! Upstream, a stream goes as a stream of the session's h2 connection when the upstream
//! speaks h2 (end to end: trailers and gRPC pass as they are), or as an HTTP/1.1
//! request through the worker's pool (reverse mode in front of an HTTP/1.1 upstream,
//! and requests a hook re-routed). When h2 is offered: docs/decisions.md, "HTTP/2".
//! The session's upstream connection may end before the client's (a GOAWAY after so
//! many requests): the session then makes another (`Session::h2_upstream`).

mod answer;
mod metered;
mod stream;

use crate::http::{Body, Headers, Request};
use crate::io::PollStream;
use crate::plugin::ConnInfo;
use crate::proxy::exchange::log::{sent_status, AccessRecord};
use crate::proxy::exchange::recording;
use crate::proxy::exchange::reply::FlowError;
use crate::proxy::exchange::route::{self, Target2};
use crate::proxy::exchange::{Decision, Flow, Message, Source};
use crate::proxy::grpc;
use crate::proxy::h2_stream::{self, Incoming};
use crate::proxy::recycled::Recycled;
use crate::proxy::upstream::h2::{self as up2};
use crate::proxy::upstream::{self, Key, Upstream};
use crate::proxy::worker::{Counters, Worker};
use crate::proxy::{grpc_web, grpc_web_h2};
use answer::Reply;
use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream};
use metered::Metered;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;
use stream::Stream;
use tokio::sync::Notify;
use tokio::time::Timeout;

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
    /// None could be had: every stream gets this answer (through http.on_response).
    Failed(FlowError),
}

/// How a running session reaches its upstream.
enum UpstreamConn {
    H2(h2::client::SendRequest<Bytes>),
    Http1,
    Http1OrH2c,
    Failed(FlowError),
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
    /// An h2 connection the session makes itself: the h2c connection of
    /// [`UpstreamConn::Http1OrH2c`], once made, or the one that takes over from an
    /// [`UpstreamConn::H2`] connection that stopped taking streams.
    h2c: up2::Lazy,
    /// Streams in progress, and when the last one ended (idle timeout).
    open: Cell<usize>,
    last_end: Cell<Instant>,
    /// Bytes read from and written to HTTP/1.1 upstream legs (connection.on_disconnect).
    upstream_moved: Cell<(u64, u64)>,
    /// The upstream chose HTTP/1.1 when its h2 connection was made again.
    fell_back: Cell<bool>,
    /// The accept loop, parked while `open` is at the limit: woken when a stream ends.
    parked: RefCell<Option<Waker>>,
}

impl Session {
    /// Adds what `up` moved for this connection's streams.
    fn count_upstream(&self, up: &Upstream) {
        let ((r, w), (r0, w0)) = (up.moved(), self.upstream_moved.get());
        self.upstream_moved.set((r0 + r, w0 + w));
    }

    /// The session's h2c connection to a plaintext upstream, made on first use (gRPC
    /// calls need h2 end to end).
    async fn h2c_sender(&self) -> Result<h2::client::SendRequest<Bytes>, FlowError> {
        let (host, port) = (&self.key.host, self.key.port);
        let t = self.w.timeouts.connect;
        let connect = async {
            upstream::connect(self.w.backend, host, port, t, None)
                .await
                .map_err(|e| e.flow_error())
        };
        self.made_h2(connect).await
    }

    /// The session's own h2 connection (`h2c`), made over what `connect` opens when
    /// none that takes streams is open. A failure keeps its `msg.error` reason.
    async fn made_h2<F>(&self, connect: F) -> Result<h2::client::SendRequest<Bytes>, FlowError>
    where
        F: Future<Output = Result<Upstream, FlowError>>,
    {
        let failed = Cell::new(None);
        let connect = async {
            connect.await.map_err(|f| {
                let text = f.text.clone();
                failed.set(Some(f));
                text
            })
        };
        let max = up2::header_list_limit(self.w.cfg.max_head_size);
        let made = self.h2c.sender(connect, self.info.conn_id, max).await;
        made.map_err(|why| {
            failed
                .take()
                .unwrap_or_else(|| FlowError::bad_response(why))
        })
    }

    /// The h2 connection a stream to the session's upstream goes on. The connection
    /// the session began with serves while it takes streams; once the upstream sent
    /// GOAWAY (nginx does after 1,000 requests by default) or the connection failed, a
    /// new one is made and shared by the streams after it, so the client's connection
    /// outlives its upstream's. An upstream that then chooses HTTP/1.1 gets the
    /// streams over HTTP/1.1.
    async fn h2_upstream(&self) -> H2Upstream {
        let up = match &self.upstream {
            UpstreamConn::H2(up) => match up2::taking_streams(up) {
                Some(up) => return H2Upstream::H2(up),
                None if self.fell_back.get() => return H2Upstream::Http1,
                // the connection an earlier stream made, checked first (boxing the
                // future that makes one copies all of it), else a new one: boxed, as
                // below, or its handshake would make this future several KiB
                None => match self.h2c.usable() {
                    Some(up) => Ok(up),
                    None => Box::pin(self.renewed_h2()).await,
                },
            },
            UpstreamConn::Http1OrH2c => match self.h2c.usable() {
                Some(up) => Ok(up),
                None => Box::pin(self.h2c_sender()).await,
            },
            UpstreamConn::Http1 => return H2Upstream::Http1,
            UpstreamConn::Failed(e) => Err(e.clone()),
        };
        match up {
            Ok(up) => H2Upstream::H2(up),
            Err(_) if self.fell_back.get() => H2Upstream::Http1,
            Err(e) => H2Upstream::Failed(e),
        }
    }

    /// A new connection to the upstream of [`UpstreamConn::H2`] (TLS offering h2, or
    /// h2c for a plaintext one), made through `h2c`.
    async fn renewed_h2(&self) -> Result<h2::client::SendRequest<Bytes>, FlowError> {
        let connect = async {
            tracing::debug!(
                conn = self.info.conn_id,
                "upstream HTTP/2 connection takes no new streams: making another"
            );
            let alpn = crate::proxy::worker_tls::Alpn::H2OrHttp1;
            let opened =
                crate::proxy::hooks::open_upstream(&self.w, &self.info, &self.key, alpn, None);
            let up = opened.await.map_err(|e| e.flow_error())?;
            if up.tls_info.is_some() && !crate::proxy::worker_tls::chose_h2(&up.stream) {
                // the first stream over HTTP/1.1 takes it from the pool
                self.w.pool.put_unused(self.key.clone(), up);
                self.fell_back.set(true);
                return Err(FlowError::bad_response("the upstream chose HTTP/1.1"));
            }
            Ok(up)
        };
        self.made_h2(connect).await
    }
}

/// How a stream reaches the session's upstream over h2 (see [`Session::h2_upstream`]).
enum H2Upstream {
    H2(h2::client::SendRequest<Bytes>),
    /// The upstream now speaks HTTP/1.1 only.
    Http1,
    /// No connection could be had: the stream's answer, through http.on_response.
    Failed(FlowError),
}

/// Serves an h2 client connection (TLS that chose h2, or h2c with prior knowledge),
/// relaying its streams as `via` says. `early` holds client bytes already read.
/// Returns the bytes read from and written to upstreams for it (streams still running
/// when the client connection ended, and a lazily made h2c connection, not counted).
pub async fn serve(
    w: Rc<Worker>,
    client: &crate::io::Stream,
    early: BytesMut,
    info: &ConnInfo,
    via: Via,
    target: Target2,
) -> (u64, u64) {
    let mut cio = PollStream::new(client, early);
    let upstream = match via {
        // boxed: the upstream's stream and handshake would otherwise take room in every
        // session's future, which an idle connection holds (docs/perf.md, "Idle HTTP/2
        // connections")
        Via::H2(up) => return Box::pin(serve_via_h2(w, &mut cio, up, info, target)).await,
        Via::Http1 => UpstreamConn::Http1,
        Via::Http1OrH2c => UpstreamConn::Http1OrH2c,
        Via::Failed(why) => UpstreamConn::Failed(why),
    };
    run(w, &mut cio, upstream, None, info, target).await
}

/// [`serve`] over an upstream connection that speaks h2, which this session drives.
async fn serve_via_h2(
    w: Rc<Worker>,
    cio: &mut PollStream<'_>,
    up: Box<Upstream>,
    info: &ConnInfo,
    target: Target2,
) -> (u64, u64) {
    let Upstream {
        stream, buf, base, ..
    } = *up;
    let uio = PollStream::new(&stream, buf);
    let limit = up2::header_list_limit(w.cfg.max_head_size);
    let made = up2::handshake(uio, limit).await;
    let legs = match made {
        Ok((send, conn)) => {
            let up = UpstreamConn::H2(send);
            run(w, cio, up, Some((Box::pin(conn), &stream)), info, target).await
        }
        Err(e) => {
            let why = format!("HTTP/2 handshake with the upstream failed: {e}");
            let f = FlowError::bad_response(why);
            run(w, cio, UpstreamConn::Failed(f), None, info, target).await
        }
    };
    stream.shutdown(Shutdown::Both);
    let (r, wr) = stream.bytes_moved();
    (legs.0 + r - base.0, legs.1 + wr - base.1)
}

/// `exchange::event!` for an h2 stream: a hooked event (which may wait on I/O) is given
/// up when the client resets the stream or its connection ends first (None); its
/// waiting hook is then abandoned and the cosockets it opened are closed.
macro_rules! stream_event {
    ($f:expr, $msg:expr, $src:expr, $tx:expr) => {{
        let (msg, f) = ($msg, $f);
        if msg.hooked(f) {
            let tx = $tx;
            tokio::select! {
                biased;
                d = $crate::proxy::exchange::message_event(f, msg, $src) => Some(d),
                _ = std::future::poll_fn(|cx| tx.poll_reset(cx)) => None,
            }
        } else {
            Some(msg.without_hooks(f))
        }
    }};
}
pub(super) use stream_event;

/// The h2 upstream connection's driver, when the session has one (boxed, as only
/// sessions in front of an h2 upstream have one).
type UpDriver<'a> = Pin<Box<h2::client::Connection<PollStream<'a>, Bytes>>>;

/// The client connection's h2 handshake with every limit set, given up after the
/// head timeout. Made here rather than in [`run`] so that neither the builder nor the
/// handshake outlives the handshake in `run`'s future.
fn accept<'a, 'b>(
    w: &Worker,
    cio: &'a mut PollStream<'b>,
    flood: Rc<Notify>,
    conn: u64,
) -> Timeout<h2::server::Handshake<Metered<&'a mut PollStream<'b>>, Bytes>> {
    let max_streams = w.cfg.h2_max_concurrent_streams;
    let io = Metered::new(cio, w.cfg.h2_control_frame_budget, flood, conn);
    // every limit is set here, defaults included: docs/security.md, "HTTP/2 floods"
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .initial_window_size(up2::STREAM_WINDOW)
        .initial_connection_window_size(up2::CONN_WINDOW)
        .max_frame_size(up2::MAX_FRAME)
        .header_table_size(up2::HEADER_TABLE)
        .max_header_list_size(up2::header_list_limit(w.cfg.max_head_size))
        .max_pending_accept_reset_streams(up2::PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(up2::LOCAL_ERROR_RESETS))
        .max_send_buffer_size(up2::SEND_BUFFER)
        .data_frame_budget(up2::DATA_FRAME_BUDGET)
        // locally reset streams remembered: twice the streams a client may open (as
        // h2 0.4.21 derives it), for 5 s
        .max_concurrent_reset_streams(2 * max_streams as usize)
        .reset_stream_duration(up2::RESET_STREAM_MEMORY)
        .handshake::<_, Bytes>(io);
    // a client that never sends its preface is cut off like a slow HTTP/1 head
    tokio::time::timeout(w.timeouts.head, handshake)
}

async fn run(
    w: Rc<Worker>,
    cio: &mut PollStream<'_>,
    upstream: UpstreamConn,
    mut up_conn: Option<(UpDriver<'_>, &crate::io::Stream)>,
    info: &ConnInfo,
    target: Target2,
) -> (u64, u64) {
    let conn = info.conn_id;
    let max_streams = w.cfg.h2_max_concurrent_streams;
    let flood = Rc::new(Notify::new());
    let mut srv = match accept(&w, cio, flood.clone(), conn).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(conn, "client HTTP/2 handshake failed: {e}");
            return (0, 0);
        }
        Err(_) => {
            tracing::debug!(conn, "client HTTP/2 preface timed out");
            return (0, 0);
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
        upstream_moved: Cell::new((0, 0)),
        fell_back: Cell::new(false),
        parked: RefCell::new(None),
    });
    let mut closing = false;
    let mut drain = w.draining.subscribe();
    let idle = w.timeouts.idle;
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            // no more streams are taken while as many as a client may open are still
            // being worked on: streams the client reset (rapid reset) then wait in h2's
            // queue, where h2 bounds them; the connection is still driven meanwhile
            next = std::future::poll_fn(|cx| {
                if session.open.get() < max_streams as usize {
                    return srv.poll_accept(cx);
                }
                *session.parked.borrow_mut() = Some(cx.waker().clone());
                match srv.poll_closed(cx) {
                    Poll::Ready(r) => Poll::Ready(r.err().map(Err)),
                    Poll::Pending => Poll::Pending,
                }
            }) => match next {
                Some(Ok((req, tx))) => spawn_stream(&session, req, tx),
                Some(Err(e)) => {
                    tracing::debug!(conn, "client HTTP/2 connection ended: {e}");
                    break;
                }
                None => break,
            },
            r = std::future::poll_fn(|cx| match up_conn.as_mut() {
                Some((c, _)) => c.as_mut().poll(cx),
                None => Poll::Pending,
            }), if up_conn.is_some() => {
                // its socket goes now, not when the client's connection ends
                if let Some((driver, stream)) = up_conn.take() {
                    drop(driver);
                    stream.shutdown(Shutdown::Both);
                }
                // the client's connection goes on: new streams go on a new upstream
                // connection (Session::h2_upstream)
                match r {
                    Ok(()) => tracing::debug!(conn, "upstream HTTP/2 connection ended"),
                    Err(e) => tracing::info!(conn, "upstream HTTP/2 connection ended: {e}"),
                }
            }
            _ = flood.notified(), if !closing => {
                srv.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
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
    session.upstream_moved.get()
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
    // made straight into a recycled block: boxing the finished future copied all of it
    // (about 9 KB, though a fresh one holds only its captures) on every stream, and the
    // task then holds only the block's pointer
    let fut = Recycled::new(move || async move {
        // what the protocol label needs is read only when metrics are on
        let m = crate::metrics::clock().map(|t0| {
            let ctype = req.headers().get(http::header::CONTENT_TYPE);
            (t0, ctype.map(|v| Bytes::copy_from_slice(v.as_bytes())))
        });
        let mut reply = Reply {
            tx,
            status: 0,
            event_stream: false,
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
        if let Some((t0, ctype)) = m {
            let sse = reply.event_stream;
            let proto = crate::metrics::http_proto(true, ctype.as_deref(), reply.status, sse);
            crate::metrics::request(proto, sent_status(reply.status), Some(t0));
        }
        recording::finish(&s.w, &s.info, reply.rec.take());
        s.open.set(s.open.get() - 1);
        s.last_end.set(Instant::now());
        if let Some(w) = s.parked.take() {
            w.wake();
        }
    });
    crate::io::spawn(fut);
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
    if let Err(why) = crate::proto::h2_fields::check_request(&parts) {
        tracing::info!(conn = s.info.conn_id, "malformed HTTP/2 request: {why}");
        return reply.tx.send_reset(Reason::PROTOCOL_ERROR);
    }
    let mut req = match route::h2_request(parts, &s.target) {
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
        client_fd: None,
    };
    *call = grpc::Call::of(&s.w, engine.as_ref(), &req, &s.info, f.id);
    let mut body = Incoming::new(rx);
    let te_trailers = req.headers.has_token("te", "trailers");
    let is_head = req.method.as_ref() == b"HEAD";
    let msg = Message::Request {
        req: &mut req,
        upgrade: None,
        grpc: call.as_ref().map(|c| &c.start),
    };
    let mut src = Source::H2(&mut body);
    let decision = stream_event!(&f, msg, &mut src, &mut reply.tx);
    let Some(decision) = decision else {
        tracing::debug!(
            conn = s.info.conn_id,
            "stream reset while its request hooks ran"
        );
        return;
    };
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
        return Box::pin(gateway(s, &f, g, req, body, reply, call.take())).await;
    }
    let ex = Stream {
        s,
        f,
        is_head,
        te_trailers,
        call: call.clone(),
    };
    // the worker's cached key: building one anew cost two allocations and a parse
    let key = s.w.pool_key(&req.scheme, &req.authority);
    // a request a hook re-routed leaves this session's upstream: HTTP/1.1 to its own.
    // The HTTP/1.1 leg and the gateway are boxed: inline they would more than double
    // the future of every stream (about 11 KB), which is copied as each level starts.
    match &s.upstream {
        _ if key != s.key => Box::pin(ex.via_h1(req, body, reply, key)).await,
        UpstreamConn::H2(_) => ex.via_session_h2(req, body, reply, up2::RESENDS).await,
        UpstreamConn::Http1OrH2c if is_grpc(&req.headers) => {
            ex.via_session_h2(req, body, reply, up2::RESENDS).await
        }
        UpstreamConn::Http1 | UpstreamConn::Http1OrH2c => {
            Box::pin(ex.via_h1(req, body, reply, key)).await
        }
        UpstreamConn::Failed(e) => ex.fail_flow(&req, reply, e.clone()).await,
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
    let up = match s.h2_upstream().await {
        H2Upstream::H2(up) => up,
        H2Upstream::Http1 => return reply.fail(502, "the upstream does not speak HTTP/2"),
        H2Upstream::Failed(e) => return reply.fail(e.status, &e.text),
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
