//! HTTP/2 inside intercepted TLS: the client speaks h2 to luring, luring speaks h2 to
//! the upstream over one connection, and every stream is one exchange that runs the
//! same request and response events as HTTP/1 (hooks, pipeline steps, RESPOND, DROP as
//! RST_STREAM CANCEL). Streams run as tasks of their own on the worker, so a slow
//! stream never holds up another; bodies stream frame by frame under h2's flow control
//! unless a hook reads them.
//!
//! ALPN decides when this layer runs (docs/decisions.md, "HTTP/2"): luring offers h2 to
//! a client only after the upstream agreed to h2, so no h2 <-> HTTP/1 translation is
//! needed and gRPC's trailers pass end to end.

use crate::http::{Body, Headers, Request, Response, Version};
use crate::io::PollStream;
use crate::plugin::{ConnInfo, Engine, Event, Phase, Step};
use crate::proxy::upstream::{Key, Upstream};
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
    /// Where the one upstream connection goes; a request re-routed elsewhere gets a 502.
    key: Key,
    /// The upstream connection, or why there is none (each stream gets a 502 saying so).
    upstream: Result<h2::client::SendRequest<Bytes>, String>,
    /// Streams in progress, and when the last one ended (idle timeout).
    open: Cell<usize>,
    last_end: Cell<Instant>,
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
/// relaying its streams over `up`, an upstream connection that speaks h2 too; when
/// there is none, every stream is answered 502 with the reason. `early` holds client
/// bytes already read. Returns (bytes in, bytes out) on the client side.
pub async fn serve(
    w: Rc<Worker>,
    client: &crate::io::Stream,
    early: BytesMut,
    info: &ConnInfo,
    up: Result<Upstream, String>,
    target: Target,
) -> (u64, u64) {
    let mut cio = PollStream::new(client, early);
    match up {
        Ok(Upstream { stream, buf, .. }) => {
            run(w, &mut cio, Ok(PollStream::new(&stream, buf)), info, target).await;
            stream.shutdown(Shutdown::Both);
        }
        Err(why) => run(w, &mut cio, Err(why), info, target).await,
    }
    (cio.bytes_read, cio.bytes_written)
}

/// Settings both sides of luring offer: windows larger than the protocol's 64 KiB
/// default, so one stream is not limited to 64 KiB per round trip.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONN_WINDOW: u32 = 4 * 1024 * 1024;

async fn run(
    w: Rc<Worker>,
    cio: &mut PollStream<'_>,
    uio: Result<PollStream<'_>, String>,
    info: &ConnInfo,
    target: Target,
) {
    let conn = info.conn_id;
    let (upstream, up_conn) = match uio {
        Ok(uio) => match h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .handshake::<_, Bytes>(uio)
            .await
        {
            Ok((send, conn)) => (Ok(send), Some(conn)),
            Err(e) => (
                Err(format!("HTTP/2 handshake with the upstream failed: {e}")),
                None,
            ),
        },
        Err(why) => (Err(why), None),
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

/// One stream: request event, upstream exchange, response event, response back.
async fn exchange(s: &Session, req: http::Request<RecvStream>, respond: &mut Reply) {
    let (parts, rx) = req.into_parts();
    let ended = rx.is_end_stream();
    let mut req = match to_request(s, parts) {
        Ok(r) => r,
        Err((status, text)) => return respond.fail(status, &text),
    };
    let is_head = req.method.as_ref() == b"HEAD";
    let flow_id = s.w.next_conn_id();
    let engine = s.w.engine();
    let engine = engine.as_deref();
    let mut body = Incoming { rx, prefix: None };
    if ended {
        req.body = Body::Full(Bytes::new());
    }
    let te_trailers = req.headers.has_token("te", "trailers");
    match request_event(s, engine, flow_id, &mut req, &mut body).await {
        Decision::Forward => {}
        Decision::Drop => {
            tracing::debug!(conn = s.info.conn_id, "HTTP/2 stream reset by plugin");
            respond.send_reset(Reason::CANCEL);
            return;
        }
        Decision::Respond(r) => return respond.answer(r, is_head),
        Decision::Failed(why) => return respond.fail(400, &why),
    }
    if Key::new(&req.scheme, &req.authority) != s.key {
        return respond.fail(
            502,
            &format!(
                "an HTTP/2 request cannot be re-routed to {}://{} (its connection goes to {}://{})",
                req.scheme, req.authority, s.scheme, s.authority
            ),
        );
    }
    if te_trailers {
        req.headers.set("te", "trailers");
    }

    if let Body::Full(b) = &req.body {
        set_length(&mut req.headers, b);
    }
    let head = match upstream_head(&req) {
        Ok(h) => h,
        Err(why) => return respond.fail(502, &why),
    };
    let upstream = match &s.upstream {
        Ok(u) => u.clone(),
        Err(why) => return respond.fail(502, why),
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
    let upload = {
        let full = match std::mem::replace(&mut req.body, Body::Streaming) {
            Body::Full(b) => Some(b),
            _ => None,
        };
        let trailers = req.trailers.take();
        async move {
            let r = match full {
                Some(_) if no_body => Ok(0),
                Some(b) => send_full(&mut tx, b, trailers.as_ref()).await,
                None => relay_rest(&mut body, &mut tx).await,
            };
            if r.is_err() {
                tx.send_reset(Reason::CANCEL);
            }
            r
        }
    };
    let upload = crate::io::spawn(upload);
    let timeout = s.w.timeouts.upstream;
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
    let mut resp = Response {
        status: rparts.status.as_u16(),
        reason: rparts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .to_string(),
        version: Version::Http2,
        headers: from_header_map(&rparts.headers),
        body: Body::Streaming,
        trailers: None,
    };
    let ended = rrx.is_end_stream();
    if ended {
        resp.body = Body::Full(Bytes::new());
    }
    let mut rbody = Incoming {
        rx: rrx,
        prefix: None,
    };
    match response_event(s, engine, flow_id, &req, &mut resp, &mut rbody).await {
        Decision::Forward => {}
        Decision::Drop => return respond.send_reset(Reason::CANCEL),
        Decision::Respond(r) => return respond.answer(r, is_head),
        Decision::Failed(why) => return respond.fail(502, &format!("upstream body: {why}")),
    }
    let full = match std::mem::replace(&mut resp.body, Body::Streaming) {
        Body::Full(b) => Some(b),
        _ => None,
    };
    // a HEAD or 304 response keeps the length of the body it does not carry
    if let Some(b) = full.as_ref().filter(|_| !is_head && resp.status != 304) {
        set_length(&mut resp.headers, b);
    }
    let trailers = resp.trailers.take();
    let end_now = is_head || matches!(&full, Some(b) if b.is_empty() && trailers.is_none());
    let mut tx = match respond.send_response(response_head(&resp), end_now) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::debug!(conn = s.info.conn_id, "client stream gone: {e}");
            return;
        }
    };
    if end_now {
        return;
    }
    let r = match full {
        Some(b) => send_full(&mut tx, b, trailers.as_ref()).await,
        None => relay_rest(&mut rbody, &mut tx).await,
    };
    match r {
        Ok(n) => respond.bytes += n,
        Err(e) => {
            tracing::debug!(conn = s.info.conn_id, "HTTP/2 response relay ended: {e}");
            tx.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
        }
    }
    let _ = upload.await;
}

/// pre_pipeline hooks, the pipeline steps, post_pipeline hooks, for a request.
async fn request_event(
    s: &Session,
    engine: Option<&Engine>,
    flow_id: u64,
    req: &mut Request,
    body: &mut Incoming,
) -> Decision {
    let hooked = engine.filter(|e| e.has(Event::HttpRequest));
    for phase in [Phase::PrePipeline, Phase::PostPipeline] {
        if matches!(phase, Phase::PostPipeline) {
            s.w.pipeline.on_request(req);
        }
        let Some(e) = hooked else { continue };
        let mut step = e.http_request(phase, &s.info, flow_id, req);
        loop {
            match step {
                Step::Continue => break,
                Step::Drop => return Decision::Drop,
                Step::Respond(r) => return Decision::Respond(r),
                Step::NeedBody(susp) => {
                    if matches!(req.body, Body::Streaming) {
                        match buffer(body, s.w.cfg.max_plugin_body).await {
                            Ok((b, t)) => {
                                req.body = b;
                                req.trailers = t;
                            }
                            Err(why) => return Decision::Failed(why),
                        }
                    }
                    step = e.resume_request(susp, &s.info, flow_id, req);
                }
            }
        }
    }
    Decision::Forward
}

/// pre_pipeline hooks, the pipeline steps, post_pipeline hooks, for a response.
async fn response_event(
    s: &Session,
    engine: Option<&Engine>,
    flow_id: u64,
    req: &Request,
    resp: &mut Response,
    body: &mut Incoming,
) -> Decision {
    let hooked = engine.filter(|e| e.has(Event::HttpResponse));
    for phase in [Phase::PrePipeline, Phase::PostPipeline] {
        if matches!(phase, Phase::PostPipeline) {
            s.w.pipeline.on_response(req, resp);
        }
        let Some(e) = hooked else { continue };
        let mut step = e.http_response(phase, &s.info, flow_id, req, resp);
        loop {
            match step {
                Step::Continue => break,
                Step::Drop => return Decision::Drop,
                Step::Respond(r) => return Decision::Respond(r),
                Step::NeedBody(susp) => {
                    if matches!(resp.body, Body::Streaming) {
                        match buffer(body, s.w.cfg.max_plugin_body).await {
                            Ok((b, t)) => {
                                resp.body = b;
                                resp.trailers = t;
                            }
                            Err(why) => return Decision::Failed(why),
                        }
                    }
                    step = e.resume_response(susp, &s.info, flow_id, req, resp);
                }
            }
        }
    }
    Decision::Forward
}

/// Reads a body for a hook: Full with its trailers, or TooLarge with what was read kept
/// in `prefix` to be sent first.
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
async fn relay_rest(body: &mut Incoming, tx: &mut SendStream<Bytes>) -> Result<u64, h2::Error> {
    let mut n = 0;
    if let Some(p) = body.prefix.take() {
        n += p.len() as u64;
        send_data(tx, p, false).await?;
    }
    Ok(n + pump(&mut body.rx, tx).await?)
}

/// Relays a body frame by frame, then its trailers; the receive window opens only as
/// the other side takes the data, so a slow reader slows the sender.
async fn pump(rx: &mut RecvStream, tx: &mut SendStream<Bytes>) -> Result<u64, h2::Error> {
    let mut n = 0;
    while let Some(chunk) = rx.data().await {
        let chunk = chunk?;
        let len = chunk.len();
        n += len as u64;
        send_data(tx, chunk, false).await?;
        let _ = rx.flow_control().release_capacity(len);
    }
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
        r.headers.set("content-length", body.len().to_string());
        let end = is_head || (body.is_empty() && r.trailers.is_none());
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
