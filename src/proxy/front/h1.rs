//! The HTTP/1 client front: read a request head, run the exchange (request event,
//! upstream leg, response event), stream the response back, and repeat while both
//! sides keep the connection alive. A CONNECT that succeeds, or an upgrade, ends
//! HTTP on the connection: that is handed back to the connection driver.

use crate::http::{Body, Request, RequestHead, Response, ResponseHead, Version};
use crate::plugin::Engine;
use crate::proto::http1::{
    parse_request_head, request_body_kind, response_body_kind, BodyDecoder, BodyKind, HeadError,
};
use crate::proxy::body_relay::{self, H1Body};
use crate::proxy::conn::auth;
use crate::proxy::conn::client::ClientConn;
use crate::proxy::exchange::log::{sent_status, AccessRecord, TunnelLog};
use crate::proxy::exchange::route::{self, Intercept};
use crate::proxy::exchange::{self, reply, rules, Decision, Flow, Message, Source};
use crate::proxy::h1_wire;
use crate::proxy::upstream::h1::{self as up1, Answer, SendError, Upload, Waits};
use crate::proxy::upstream::{self, Key, Spare, Upstream};
use crate::proxy::worker::Counters;
use crate::proxy::worker_tls::Alpn;
use crate::proxy::{sse, ws};
use bytes::{Bytes, BytesMut};
use std::net::Shutdown;
use tokio::sync::watch;

/// Where this connection's requests go, beyond what the mode says.
#[derive(Default)]
pub struct H1Route {
    /// Inside an intercepted tunnel: its target.
    pub intercept: Option<Intercept>,
    /// A connection made ahead of the client's TLS handshake failed: the first request
    /// to that upstream gets this answer instead of a second try.
    pub ahead_failed: Option<(Key, u16, String)>,
    /// The plain connection the tunnel opened, for the first TLS connection upstream.
    pub spare: Option<Spare>,
}

/// An accepted CONNECT (its 200 sent): the tunnel's target and upstream connection.
pub struct Tunnel {
    /// Host the client named.
    pub host: String,
    /// Port the client named.
    pub port: u16,
    /// host:port as the client named it.
    pub authority: String,
    /// The connection to the target.
    pub up: Upstream,
}

/// How the HTTP/1 front ended.
pub enum Outcome {
    /// The connection is over.
    Close,
    /// A CONNECT was accepted: the tunnel goes on in the driver.
    Tunnel(Box<Tunnel>),
}

/// What happens after one exchange.
enum Next {
    KeepAlive,
    Close,
    Tunnel(Box<Tunnel>),
}

/// The front's state across the connection's exchanges.
struct Front {
    route: H1Route,
    /// The pool key of the last request, with the scheme and authority it was made for.
    last_key: Option<(String, String, Key)>,
}

/// Serves HTTP/1 requests on the connection until it ends or becomes a tunnel.
pub async fn serve(c: &mut ClientConn, route: H1Route) -> Outcome {
    let mut front = Front {
        route,
        last_key: None,
    };
    let mut drain = c.w.draining.subscribe();
    loop {
        if c.w.is_draining() && c.io.buf.is_empty() {
            return Outcome::Close;
        }
        let Some(head) = read_head(c, &mut drain).await else {
            return Outcome::Close;
        };
        c.requests += 1;
        Counters::bump(&c.w.counters.requests);
        let next = if c.w.cfg.access_log {
            logged_exchange(c, &mut front, head).await
        } else {
            exchange(c, &mut front, head).await
        };
        match next {
            Next::KeepAlive => {}
            Next::Close => return Outcome::Close,
            Next::Tunnel(t) => return Outcome::Tunnel(t),
        }
    }
}

/// [`exchange`] followed by its access-log line.
async fn logged_exchange(c: &mut ClientConn, front: &mut Front, head: RequestHead) -> Next {
    let scheme = front.route.intercept.as_ref().map_or("", |i| i.scheme);
    let host = head.headers.get("host").cloned().unwrap_or_default();
    let record = AccessRecord::http(
        &head.method,
        &head.target,
        head.version.as_str(),
        scheme,
        &host,
    );
    c.io.status.set(0);
    let sent0 = c.io.sent.get();
    let written_before = c.io.stream.bytes_moved().1;
    let next = exchange(c, front, head).await;
    if let Next::Tunnel(_) = next {
        // one line per tunnel, when it ends, with all it carried
        c.tunnel_log = Some(TunnelLog {
            record,
            status: sent_status(c.io.status.get()),
            written_before,
        });
        return next;
    }
    let sent = c.io.sent.get() - sent0;
    let status = sent_status(c.io.status.get());
    record.finish(c.info.client_addr, status, sent, c.info.conn_id);
    next
}

/// Reads one request head. None: the connection is over (EOF, timeout, bad head
/// answered, drain).
async fn read_head(c: &mut ClientConn, drain: &mut watch::Receiver<bool>) -> Option<RequestHead> {
    let t = c.w.timeouts;
    let conn = c.info.conn_id;
    let io = &mut c.io;
    let mut started = c.requests == 0 || !io.buf.is_empty();
    io.read_deadline.arm(if started { t.head } else { t.idle });
    loop {
        if !io.buf.is_empty() {
            match parse_request_head(&io.buf, &c.w.limits) {
                Ok(Some((head, n))) => {
                    let _ = io.buf.split_to(n);
                    return Some(head);
                }
                Ok(None) => {}
                Err(e @ (HeadError::TooLarge(_) | HeadError::TooManyHeaders(_))) => {
                    io.fail(conn, 431, &format!("request head rejected: {e}"))
                        .await;
                    return None;
                }
                Err(e) => {
                    io.fail(conn, 400, &format!("bad request: {e}")).await;
                    return None;
                }
            }
            if !started {
                started = true;
                io.read_deadline.arm(t.head);
            }
        }
        if io.buf.capacity() - io.buf.len() < 1024 {
            io.buf.reserve(8 * 1024);
        }
        let idle = io.buf.is_empty();
        let b = std::mem::take(&mut io.buf);
        let read = io.read_deadline.limit(io.stream.read(b));
        tokio::select! {
            r = read => match r {
                Ok((Ok(n), b)) if n > 0 => io.buf = b,
                Ok((Ok(_), _)) => return None,
                Ok((Err(e), _)) => {
                    tracing::debug!(conn, "client read failed: {e}");
                    return None;
                }
                Err(_) => {
                    // dropped io_uring read: shut down so it completes (see io docs)
                    if idle {
                        io.stream.shutdown(Shutdown::Both);
                    } else {
                        io.fail(conn, 408, "request head not received in time").await;
                    }
                    return None;
                }
            },
            _ = drain.changed(), if idle => {
                io.stream.shutdown(Shutdown::Both);
                return None;
            }
        }
    }
}

/// What the client said about its connection and body in one request.
struct Asked {
    version: Version,
    keep_alive: bool,
    is_head: bool,
    /// The protocol an upgrade asks for.
    upgrade: Option<Bytes>,
    /// The request body's framing state.
    dec: BodyDecoder,
    /// The client waits for `100 Continue` before its body.
    owe_continue: bool,
}

/// The plugin engine and flow id of the exchange in progress.
#[derive(Clone, Copy)]
struct Hooks<'e> {
    engine: Option<&'e Engine>,
    id: u64,
}

/// The flow of the exchange in progress; the fields are borrowed one by one so the
/// client's buffer stays free for the body source.
macro_rules! flow {
    ($c:expr, $hooks:expr) => {
        Flow {
            w: &$c.w,
            info: &$c.info,
            engine: $hooks.engine,
            id: $hooks.id,
        }
    };
}

/// One request/response exchange.
async fn exchange(c: &mut ClientConn, front: &mut Front, head: RequestHead) -> Next {
    let conn = c.info.conn_id;
    let kind = match request_body_kind(&head) {
        Ok(k) => k,
        Err(e) => return fail(c, 400, &format!("bad request: {e}")).await,
    };
    let mut asked = Asked {
        version: head.version,
        keep_alive: rules::client_keep_alive(head.version, &head.headers),
        is_head: head.is_head(),
        upgrade: rules::upgrade_requested(head.version, &head.headers),
        dec: BodyDecoder::new(kind),
        owe_continue: head.headers.has_token("expect", "100-continue"),
    };
    if let Some(expected) = &c.w.cfg.proxy_auth {
        // only the forward proxy's own requests: a tunnel was authorised by its CONNECT
        let ok = front.route.intercept.is_some()
            || head
                .headers
                .get("proxy-authorization")
                .is_some_and(|v| auth::basic_credentials_match(v, expected));
        if !ok {
            c.io.status.set(407);
            tracing::info!(conn, "407: no valid proxy credentials");
            let _ = c.io.write(auth::proxy_auth_required()).await;
            return Next::Close;
        }
    }
    let mut req = match route::h1_request(head, &c.w.mode, front.route.intercept.as_ref()) {
        Ok(r) => r,
        Err((status, text)) => return fail(c, status, &text).await,
    };
    let engine = c.w.engine();
    let hooks = Hooks {
        engine: engine.as_deref(),
        id: c.w.next_conn_id(),
    };
    let decision = {
        let mut src = Source::H1 {
            body: H1Body {
                stream: &c.io.stream,
                buf: &mut c.io.buf,
                dec: &mut asked.dec,
                timeout: c.w.timeouts.idle,
            },
            owe_continue: Some(&mut asked.owe_continue),
        };
        let msg = Message::Request {
            req: &mut req,
            upgrade: asked.upgrade.as_ref(),
        };
        exchange::message_event(&flow!(c, hooks), msg, &mut src).await
    };
    match decision {
        Decision::Forward => {}
        Decision::Drop => {
            tracing::debug!(conn, "request dropped by plugin");
            return Next::Close;
        }
        Decision::Respond(resp) => {
            // a request body left unread would be taken for the next request
            let close = !asked.keep_alive || !asked.dec.is_done();
            return answer(c, resp, &asked, close).await;
        }
        Decision::Failed(why) => return fail(c, 400, &why).await,
    }
    if req.method.as_ref() == b"CONNECT" {
        return tunnel(c, req).await;
    }
    // a plugin that replaced the body without reading it leaves the client's body unread
    if matches!(req.body, Body::Full(_)) && !asked.dec.is_done() {
        asked.keep_alive = false;
    }
    let key = front.key_for(&req);
    let (up, answer) = match send(c, front, &key, &mut req, &mut asked).await {
        Ok(x) => x,
        Err(next) => return next,
    };
    if !answer.complete {
        // the upstream answered before taking the whole body
        asked.keep_alive = false;
    }
    let done = Done {
        key,
        upload_complete: answer.complete,
    };
    respond(c, hooks, &req, &mut asked, answer.head, up, done).await
}

impl Front {
    /// The pool key for `req`: the last one again while requests go to the same place,
    /// which on a keep-alive connection is nearly always.
    fn key_for(&mut self, req: &Request) -> Key {
        if let Some((scheme, authority, key)) = &self.last_key {
            if *scheme == req.scheme && *authority == req.authority {
                return key.clone();
            }
        }
        let key = Key::new(&req.scheme, &req.authority);
        self.last_key = Some((req.scheme.clone(), req.authority.clone(), key.clone()));
        key
    }
}

/// An upstream connection for `key`: pooled on the first attempt, else new (reporting
/// a failed early connect once instead of trying again).
async fn acquire(
    c: &mut ClientConn,
    front: &mut Front,
    key: &Key,
    probe: bool,
    attempt: u32,
) -> Result<Upstream, Next> {
    if attempt == 1 {
        if let Some(up) = upstream::reuse(&c.w, key, probe) {
            return Ok(up);
        }
    }
    if let Some((k, status, text)) = front.route.ahead_failed.take() {
        if k == *key {
            return Err(fail(c, status, &text).await);
        }
    }
    let spare = front.route.spare.take();
    match upstream::open(&c.w, &c.info, key, Alpn::Http1, spare).await {
        Ok(up) => Ok(up),
        Err(e) => {
            let (status, text) = e.answer();
            Err(fail(c, status, &text).await)
        }
    }
}

/// Sends the request upstream and reads the final response head, on a pooled
/// connection first; a request that failed on a reused connection before any answer is
/// sent again on a new one when that is safe.
async fn send(
    c: &mut ClientConn,
    front: &mut Front,
    key: &Key,
    req: &mut Request,
    asked: &mut Asked,
) -> Result<(Upstream, Answer), Next> {
    let retryable = rules::retryable(req, asked.dec.is_done());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut up = acquire(c, front, key, !retryable, attempt).await?;
        c.info.server_addr = Some(up.addr);
        let head = request_head(req, asked.dec.kind());
        let streamed = !matches!(req.body, Body::Full(_)) && !asked.dec.is_done();
        if streamed && asked.owe_continue && !asked.dec.is_done() {
            asked.owe_continue = false;
            if !c.io.write(Bytes::from_static(reply::CONTINUE_100)).await {
                up.stream.shutdown(Shutdown::Both);
                return Err(Next::Close);
            }
        }
        let upload = match (streamed, &req.body) {
            (true, _) => Upload::H1(H1Body {
                stream: &c.io.stream,
                buf: &mut c.io.buf,
                dec: &mut asked.dec,
                timeout: c.w.timeouts.idle,
            }),
            (false, Body::Full(b)) => Upload::Ready(vec![h1_wire::full_body_wire(
                b,
                req.trailers.as_ref(),
                true,
            )]),
            (false, _) => Upload::Ready(Vec::new()),
        };
        let waits = Waits {
            upstream: c.w.timeouts.upstream,
            deadline: &c.upstream_deadline,
            limits: &c.w.upstream_limits,
        };
        let e = match up1::send_and_receive(&mut up, head, upload, waits).await {
            Ok(answer) => {
                if req.version == Version::Http11 && !interim(c, &answer.interim).await {
                    up.stream.shutdown(Shutdown::Both);
                    return Err(Next::Close);
                }
                return Ok((up, answer));
            }
            Err(e) => e,
        };
        up.stream.shutdown(Shutdown::Both);
        match e {
            SendError::Client(why) => {
                tracing::debug!(conn = c.info.conn_id, "client failed during upload: {why}");
                return Err(Next::Close);
            }
            SendError::BadBody(why) => {
                return Err(fail(c, 400, &format!("bad request body: {why}")).await);
            }
            SendError::Upstream(up1::RespError::Closed)
                if up.reused && retryable && attempt == 1 => {}
            SendError::Upstream(e) => {
                let (status, mut text) = e.answer(c.w.timeouts.upstream);
                // an h2-only server (nghttpd, some gRPC servers) accepts TLS without
                // agreeing to http/1.1 and then hangs up on an HTTP/1.1 request
                let no_alpn = up.tls_info.as_ref().is_some_and(|t| t.alpn.is_none());
                if matches!(e, up1::RespError::Closed) && no_alpn {
                    text.push_str(
                        " (it agreed to no ALPN protocol when offered http/1.1: it may \
                         speak HTTP/2 only, which an HTTP/1.1 client cannot be relayed to)",
                    );
                }
                return Err(fail(c, status, &text).await);
            }
        }
    }
}

/// The request head as it goes upstream, its framing fields fixed for a body of `kind`.
fn request_head(req: &mut Request, kind: BodyKind) -> BytesMut {
    // luring answers Expect itself (as nginx does), so the upstream never waits on it
    req.headers.remove("expect");
    h1_wire::fix_framing(
        &mut req.headers,
        &req.body,
        req.trailers.as_ref(),
        kind,
        true,
    );
    let mut head = BytesMut::with_capacity(256 + req.headers.len() * 48);
    h1_wire::request_head(req, &mut head);
    head
}

/// Passes interim (1xx) responses on; false when the client went away.
async fn interim(c: &ClientConn, heads: &[ResponseHead]) -> bool {
    for h in heads {
        let mut out = BytesMut::new();
        crate::proto::http1::encode_response_head(h, &mut out);
        if !c.io.write(out.freeze()).await {
            return false;
        }
    }
    true
}

/// What decides whether the upstream connection goes back to the pool.
struct Done {
    key: Key,
    /// The whole request body went upstream.
    upload_complete: bool,
}

/// The response: a 101 hands the connection to the upgrade; otherwise the response
/// event, then the response streamed to the client.
async fn respond(
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

/// Writes a response luring makes (a plugin's RESPOND) and says what happens next.
async fn answer(c: &ClientConn, resp: Response, asked: &Asked, close: bool) -> Next {
    let close = close || c.w.is_draining();
    c.io.status.set(resp.status);
    let wire = reply::h1_bytes(resp, asked.is_head, close, asked.version);
    if !c.io.write(wire).await || close {
        return Next::Close;
    }
    Next::KeepAlive
}

/// Answers with an error and closes.
async fn fail(c: &ClientConn, status: u16, text: &str) -> Next {
    c.io.fail(c.info.conn_id, status, text).await;
    Next::Close
}

/// CONNECT: connect to the target and answer 200; the tunnel goes on in the driver.
async fn tunnel(c: &mut ClientConn, req: Request) -> Next {
    let host = req.host();
    let port = req.port();
    let t = c.w.timeouts.connect;
    let up = match upstream::connect(c.w.backend, &host, port, t, None).await {
        Ok(u) => u,
        Err(e) => {
            let (status, text) = e.answer();
            return fail(c, status, &text).await;
        }
    };
    c.info.server_addr = Some(up.addr);
    c.io.status.set(200);
    let established = Bytes::from_static(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    if !c.io.write(established).await {
        up.stream.shutdown(Shutdown::Both);
        return Next::Close;
    }
    Next::Tunnel(Box::new(Tunnel {
        host,
        port,
        authority: req.authority,
        up,
    }))
}
