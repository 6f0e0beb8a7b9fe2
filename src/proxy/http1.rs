//! HTTP/1.1 client connections: read a request, run the request event, forward it
//! upstream (or open a tunnel), run the response event, stream the response back;
//! repeat while both sides keep the connection alive.

use crate::config::Mode;
use crate::http::{Body, Request, RequestHead, Response, Target, Version};
use crate::io::{Deadline, Stream};
use crate::plugin::{ConnInfo, Engine, Event, Phase, Socks5Info, Step};
use crate::proto::client_hello::ClientHello;
use crate::proto::detect::{is_h2_settings_frame, starts_like_h2_preface, H2_PREFACE as PREFACE};
use crate::proto::http1::{
    parse_request_head, parse_response_head, request_body_kind, response_body_kind, BodyDecoder,
    BodyKind, HeadError,
};
use crate::proto::socks5::{self as socks5_proto, Reply};
use crate::proxy::body_relay::{self, Buffered, Output, RelayError};
use crate::proxy::byte_tunnel::PendingRead;
use crate::proxy::http2;
use crate::proxy::respond::{
    self, basic_credentials_match, error_response, proxy_auth_required, CONTINUE_100,
};
use crate::proxy::socks5;
use crate::proxy::sse;
use crate::proxy::upstream::{self, ConnectError, Key, Upstream};
use crate::proxy::worker::{Counters, Worker};
use crate::proxy::worker_tls::{Alpn, Offer, WorkerTls};
use crate::proxy::ws;
use bytes::{Bytes, BytesMut};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// What happens to the client connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// The outcome of a message event (hooks + pipeline).
enum Decision {
    Forward,
    Drop,
    Respond(Response),
    /// Reading the body for a hook failed; the text says why.
    Failed(String),
}

/// The request body as it is being handled.
struct ReqBody {
    kind: BodyKind,
    dec: BodyDecoder,
    /// Wire bytes read for a plugin that then found the body too large.
    prefix: Option<BytesMut>,
    /// The client asked for `100 Continue` and has not been sent it yet.
    owe_continue: bool,
}

/// One client connection speaking HTTP/1.x.
pub struct ClientConn {
    w: Rc<Worker>,
    /// The client socket.
    pub stream: Stream,
    /// Context handed to hooks.
    pub info: ConnInfo,
    buf: BytesMut,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Inside an intercepted CONNECT tunnel: where its requests go.
    intercept: Option<Intercept>,
    /// Status sent for the current exchange (0: none), for the access log.
    status: u16,
    /// Limits reads from the client (head and idle timeouts).
    client_deadline: Deadline,
    /// Limits waiting for upstream response heads.
    upstream_deadline: Deadline,
    /// Limits writes to a client that stops reading (`--send-timeout`).
    send_deadline: Deadline,
    /// The pool key of the last request, with the scheme and authority it was made for.
    last_key: Option<(String, String, Key)>,
    /// A connection made ahead of the client's TLS handshake failed: the first request
    /// to that upstream gets this status and reason.
    ahead_failed: Option<(Key, u16, String)>,
    /// The plain connection an intercepted tunnel opened (host, port): the first TLS
    /// connection to that upstream is made over it instead of a new socket.
    spare: Option<(String, u16, Upstream)>,
}

/// The target of an intercepted CONNECT tunnel's requests.
struct Intercept {
    /// "https" after TLS interception, "http" for plain HTTP inside the tunnel.
    scheme: &'static str,
    /// host[:port], the scheme's default port left out.
    authority: String,
}

impl Intercept {
    fn new(scheme: &'static str, authority: &str) -> Intercept {
        let default = if scheme == "https" { ":443" } else { ":80" };
        Intercept {
            scheme,
            authority: authority
                .strip_suffix(default)
                .unwrap_or(authority)
                .to_string(),
        }
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ClientConn {
    /// Wraps an accepted stream.
    pub fn new(w: Rc<Worker>, stream: Stream, info: ConnInfo) -> ClientConn {
        ClientConn {
            w,
            stream,
            info,
            buf: BytesMut::with_capacity(8 * 1024),
            bytes_in: 0,
            bytes_out: 0,
            intercept: None,
            status: 0,
            client_deadline: Deadline::new(),
            upstream_deadline: Deadline::new(),
            send_deadline: Deadline::new(),
            last_key: None,
            ahead_failed: None,
            spare: None,
        }
    }

    /// Serves requests until either side ends the connection.
    pub async fn run(&mut self) {
        let w = self.w.clone();
        if let Mode::Reverse(up) = &w.mode {
            // reverse mode terminates TLS from clients and accepts plaintext too
            let (host, port, tls_up) = (up.host.clone(), up.port, up.scheme == "https");
            let t = self.w.timeouts.head;
            match WorkerTls::read_client_hello(&self.stream, &mut self.buf, t).await {
                Ok(Some(hello)) => {
                    // requests keep going to the configured upstream: no intercept authority
                    if self.start_tls(&hello, &host, None).await == Next::Close {
                        return;
                    }
                }
                Ok(None) if (self.w.cfg.http2 || !tls_up) && self.h2c_preface().await => {
                    if self.w.cfg.http2 {
                        let authority = up.authority();
                        if tls_up {
                            self.serve_h2_prior_knowledge("https", &authority, &up.path_prefix)
                                .await;
                        } else {
                            // h2c for gRPC, HTTP/1.1 for the rest
                            let target = http2::Target {
                                scheme: "http".into(),
                                authority,
                                path_prefix: up.path_prefix.clone(),
                            };
                            self.serve_h2(http2::Via::Http1OrH2c, target).await;
                        }
                        return;
                    }
                    tracing::info!(
                        conn = self.info.conn_id,
                        "HTTP/2 with prior knowledge; relayed to the upstream unchanged \
                         (--no-http2)"
                    );
                    return self.relay_raw(&host, port).await;
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::debug!(conn = self.info.conn_id, "{why}");
                    return;
                }
            }
        }
        if let Mode::Socks5 = w.mode {
            if self.socks5_tunnel().await == Next::Close {
                return;
            }
        }
        let mut drain = self.w.draining.subscribe();
        let mut first = true;
        loop {
            if self.w.is_draining() && self.buf.is_empty() {
                return;
            }
            let Some(head) = self.read_head(first, &mut drain).await else {
                return;
            };
            first = false;
            Counters::bump(&self.w.counters.requests);
            let next = if self.w.cfg.access_log {
                self.logged_exchange(head).await
            } else {
                self.exchange(head).await
            };
            if next == Next::Close {
                return;
            }
        }
    }

    /// Whether the client opened with the HTTP/2 connection preface (h2c with prior
    /// knowledge, as gRPC's plaintext channels do); reads until that is known.
    async fn h2c_preface(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + self.w.timeouts.head;
        while self.buf.len() < PREFACE.len() && PREFACE.starts_with(&self.buf) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match body_relay::read_some(&self.stream, &mut self.buf, left).await {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
        }
        self.buf.starts_with(PREFACE)
    }

    /// Relays the connection's bytes to the reverse upstream unchanged, both ways
    /// (raw.on_chunk sees them), the client's bytes read so far first.
    async fn relay_raw(&mut self, host: &str, port: u16) {
        let up = match upstream::connect(self.w.backend, host, port, self.w.timeouts.connect, None)
            .await
        {
            Ok(u) => u,
            Err(ConnectError::Timeout(t) | ConnectError::Resolve(t) | ConnectError::Connect(t)) => {
                tracing::info!(conn = self.info.conn_id, "{t}");
                return;
            }
        };
        self.info.server_addr = Some(up.addr);
        let engine = self.w.engine();
        self.relay_both_ways(up, engine.as_deref()).await;
    }

    /// Relays raw bytes between the client and `up` until both directions end (the
    /// bytes either side sent early go first), then closes `up`.
    async fn relay_both_ways(&mut self, mut up: Upstream, engine: Option<&Engine>) {
        let client_early = std::mem::take(&mut self.buf);
        let upstream_early = std::mem::take(&mut up.buf);
        let stats = crate::proxy::byte_tunnel::run(
            &self.stream,
            client_early,
            &up.stream,
            upstream_early,
            engine,
            &self.info,
            [None, None],
            self.w.timeouts.tunnel,
        )
        .await;
        self.bytes_in += stats.up;
        self.bytes_out += stats.down;
        up.stream.shutdown(Shutdown::Both);
    }

    /// [`Self::exchange`] followed by one access log line: client, request line, status
    /// ("-" when none was sent), bytes sent to the client, milliseconds.
    async fn logged_exchange(&mut self, head: RequestHead) -> Next {
        let t0 = std::time::Instant::now();
        let line = format!(
            "{} {} {}",
            String::from_utf8_lossy(&head.method),
            String::from_utf8_lossy(&head.target),
            head.version.as_str()
        );
        let host = head.headers.get("host").cloned();
        let out0 = self.bytes_out;
        let scheme = self.intercept.as_ref().map_or("", |i| i.scheme);
        self.status = 0;
        let next = self.exchange(head).await;
        let status = match self.status {
            0 => "-".to_string(),
            s => s.to_string(),
        };
        tracing::info!(
            target: "luring::access",
            "{} \"{line}\" {status} {} {:.1}ms host={}{}{} conn={}",
            self.info.client_addr,
            self.bytes_out - out0,
            t0.elapsed().as_secs_f64() * 1e3,
            scheme,
            if scheme.is_empty() { "" } else { "://" },
            host.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
            self.info.conn_id,
        );
        next
    }

    /// Closes gracefully: send FIN, then read and discard what the client still sends
    /// (bounded), so an unread request body does not turn our close into a reset that
    /// would destroy the response in flight (nginx's lingering close).
    pub async fn linger(&mut self) {
        self.stream.close_write().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut budget: usize = 64 * 1024 * 1024;
        let mut buf = BytesMut::with_capacity(body_relay::READ_BUF);
        while budget > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            buf.clear();
            match body_relay::read_some(&self.stream, &mut buf, left).await {
                Ok(n) if n > 0 => budget = budget.saturating_sub(n),
                _ => break,
            }
        }
        self.stream.shutdown(Shutdown::Both);
    }

    async fn write(&mut self, b: Bytes) -> bool {
        self.send_parts(vec![b]).await
    }

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

    /// Writes to the client within `--send-timeout`; false when that failed.
    async fn send_parts(&mut self, parts: Vec<Bytes>) -> bool {
        self.bytes_out += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        let limit = Some((&self.send_deadline, self.w.timeouts.send));
        match body_relay::send(&self.stream, parts, limit).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(conn = self.info.conn_id, "client write failed: {e}");
                false
            }
        }
    }

    /// Answers with an error and closes.
    async fn fail(&mut self, status: u16, text: &str) -> Next {
        self.status = status;
        tracing::info!(conn = self.info.conn_id, status, "{text}");
        let _ = self.write(error_response(status, text)).await;
        Next::Close
    }

    /// Reads one request head. None: the connection is over (EOF, timeout, bad head
    /// answered, drain).
    async fn read_head(
        &mut self,
        first: bool,
        drain: &mut watch::Receiver<bool>,
    ) -> Option<RequestHead> {
        let t = self.w.timeouts;
        let mut started = first || !self.buf.is_empty();
        self.client_deadline
            .arm(if started { t.head } else { t.idle });
        loop {
            if !self.buf.is_empty() {
                match parse_request_head(&self.buf, &self.w.limits) {
                    Ok(Some((head, n))) => {
                        let _ = self.buf.split_to(n);
                        return Some(head);
                    }
                    Ok(None) => {}
                    Err(e @ (HeadError::TooLarge(_) | HeadError::TooManyHeaders(_))) => {
                        self.fail(431, &format!("request head rejected: {e}")).await;
                        return None;
                    }
                    Err(e) => {
                        self.fail(400, &format!("bad request: {e}")).await;
                        return None;
                    }
                }
                if !started {
                    started = true;
                    self.client_deadline.arm(t.head);
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            let idle = self.buf.is_empty();
            let b = std::mem::take(&mut self.buf);
            let read = self.client_deadline.limit(self.stream.read(b));
            tokio::select! {
                r = read => match r {
                    Ok((Ok(n), b)) if n > 0 => {
                        self.buf = b;
                        self.bytes_in += n as u64;
                    }
                    Ok((Ok(_), _)) => return None,
                    Ok((Err(e), _)) => {
                        tracing::debug!(conn = self.info.conn_id, "client read failed: {e}");
                        return None;
                    }
                    Err(_) => {
                        // dropped io_uring read: shut down so it completes (see io docs)
                        if idle {
                            self.stream.shutdown(Shutdown::Both);
                        } else {
                            self.fail(408, "request head not received in time").await;
                        }
                        return None;
                    }
                },
                _ = drain.changed(), if idle => {
                    self.stream.shutdown(Shutdown::Both);
                    return None;
                }
            }
        }
    }

    /// Turns a parsed head into the version-agnostic request for this mode.
    fn to_request(&self, head: RequestHead) -> Result<Request, (u16, String)> {
        let RequestHead {
            method,
            target,
            version,
            headers,
        } = head;
        // RFC 9112 section 3.2: two Host lines make the target ambiguous between hops
        if headers.get_all("host").nth(1).is_some() {
            return Err((400, "more than one Host header".into()));
        }
        let mut req = Request {
            method,
            scheme: String::new(),
            authority: String::new(),
            path: None,
            version,
            headers,
            body: Body::Streaming,
            trailers: None,
            timestamp_start: now_unix(),
        };
        let is_connect = req.method.as_ref() == b"CONNECT";
        if let Some(Intercept { scheme, authority }) = &self.intercept {
            if is_connect {
                return Err((405, "CONNECT inside an intercepted tunnel".into()));
            }
            let path = if target.starts_with(b"/") || target.as_ref() == b"*" {
                String::from_utf8(target.to_vec())
                    .map_err(|_| (400, "request target is not UTF-8".to_string()))?
            } else {
                Target::parse_absolute(&target)
                    .ok_or((400, "bad request target".to_string()))?
                    .path
            };
            req.scheme = (*scheme).into();
            req.authority = authority.clone();
            req.path = Some(path);
            return Ok(req);
        }
        match &self.w.mode {
            Mode::Regular if is_connect => {
                let t = Target::parse_authority(&target)
                    .ok_or((400, "CONNECT target must be host:port".to_string()))?;
                req.authority = t.authority();
            }
            Mode::Regular => {
                let t = Target::parse_absolute(&target).ok_or_else(|| {
                    if target.starts_with(b"/") {
                        (
                            400,
                            "a forward proxy needs an absolute URI (http://host/path)".to_string(),
                        )
                    } else {
                        (400, "bad request target".to_string())
                    }
                })?;
                if t.scheme != "http" {
                    return Err((
                        501,
                        format!("{}:// requests without CONNECT are not supported", t.scheme),
                    ));
                }
                req.authority = if t.port == 80 {
                    Target {
                        port: 0,
                        ..t.clone()
                    }
                    .authority()
                    .trim_end_matches(":0")
                    .to_string()
                } else {
                    t.authority()
                };
                req.scheme = t.scheme;
                req.path = Some(t.path);
            }
            // every request of a SOCKS5 connection comes through its (intercepted) tunnel
            Mode::Socks5 => {
                return Err((400, "not a request inside a SOCKS5 tunnel".into()));
            }
            Mode::Reverse(_) if is_connect => {
                return Err((405, "CONNECT is not accepted by a reverse proxy".into()));
            }
            Mode::Reverse(up) => {
                let path = if target.starts_with(b"/") {
                    String::from_utf8(target.to_vec())
                        .map_err(|_| (400, "request target is not UTF-8".to_string()))?
                } else if target.as_ref() == b"*" {
                    "*".to_string()
                } else {
                    Target::parse_absolute(&target)
                        .ok_or((400, "bad request target".to_string()))?
                        .path
                };
                if version == Version::Http11 && !req.headers.contains("host") {
                    return Err((400, "HTTP/1.1 request without Host".into()));
                }
                req.scheme = up.scheme.clone();
                req.authority = up.authority();
                req.path = Some(if up.path_prefix.is_empty() {
                    path
                } else {
                    format!("{}{}", up.path_prefix, path)
                });
            }
        }
        Ok(req)
    }

    /// One request/response exchange.
    async fn exchange(&mut self, head: RequestHead) -> Next {
        let kind = match request_body_kind(&head) {
            Ok(k) => k,
            Err(e) => return self.fail(400, &format!("bad request: {e}")).await,
        };
        let client_version = head.version;
        // HTTP/1.0 keeps the connection only when asked to (RFC 9112 section 9.3), as
        // ab -k and old clients do
        let mut keep_alive = match client_version {
            Version::Http11 => !head.headers.has_token("connection", "close"),
            _ => head.headers.has_token("connection", "keep-alive"),
        };
        let expects_continue = head.headers.has_token("expect", "100-continue");
        let is_head = head.is_head();
        // a protocol upgrade (WebSocket...) the client asks for; the pipeline strips
        // Upgrade and Connection as hop-by-hop, so they are put back below. h2c is not
        // passed on (as mitmproxy does): the exchange stays HTTP/1.1, visible to hooks.
        let upgrade = match head.headers.get("upgrade") {
            Some(p)
                if client_version == Version::Http11
                    && head.headers.has_token("connection", "upgrade")
                    && !head.headers.has_token("upgrade", "h2c") =>
            {
                Some(p.clone())
            }
            _ => None,
        };
        if let Some(expected) = &self.w.cfg.proxy_auth {
            // only the forward proxy's own requests: a tunnel was authorised by its CONNECT
            let ok = self.intercept.is_some()
                || head
                    .headers
                    .get("proxy-authorization")
                    .is_some_and(|v| basic_credentials_match(v, expected));
            if !ok {
                self.status = 407;
                tracing::info!(conn = self.info.conn_id, "407: no valid proxy credentials");
                let _ = self.write(proxy_auth_required()).await;
                return Next::Close;
            }
        }
        let mut req = match self.to_request(head) {
            Ok(r) => r,
            Err((status, text)) => return self.fail(status, &text).await,
        };
        let flow_id = self.w.next_conn_id();
        let engine = self.w.engine();
        let engine = engine.as_deref();
        let mut body = ReqBody {
            kind,
            dec: BodyDecoder::new(kind),
            prefix: None,
            owe_continue: expects_continue,
        };

        let websocket = upgrade
            .as_ref()
            .is_some_and(|p| p.as_ref().eq_ignore_ascii_case(b"websocket"));
        match self
            .request_event(engine, flow_id, &mut req, &mut body, upgrade.as_ref())
            .await
        {
            Decision::Forward => {}
            Decision::Drop => {
                tracing::debug!(conn = self.info.conn_id, "request dropped by plugin");
                return Next::Close;
            }
            Decision::Respond(resp) => {
                // a request body left unread would be taken for the next request
                let close = !keep_alive || !body.dec.is_done();
                return self.answer(&resp, is_head, close, client_version).await;
            }
            Decision::Failed(why) => return self.fail(400, &why).await,
        }
        if req.method.as_ref() == b"CONNECT" {
            return self.tunnel(req, engine).await;
        }
        // a plugin that replaced the body without reading it leaves the client's body unread
        if matches!(req.body, Body::Full(_)) && !body.dec.is_done() {
            keep_alive = false;
        }

        let key = self.key_for(&req);
        // a request that failed on a reused connection before any answer is sent again
        // only when that is safe: the body is at hand and the method idempotent
        let retryable =
            is_idempotent(&req) && (matches!(req.body, Body::Full(_)) || body.dec.is_done());
        let mut attempt = 0;
        let mut upload_complete = true;
        let (mut up, rhead) = loop {
            attempt += 1;
            let mut up = match self.w.pool.take(&key, !retryable) {
                Some(u) if attempt == 1 => {
                    Counters::bump(&self.w.counters.upstream_reuses);
                    u
                }
                _ => {
                    if let Some((k, status, text)) = self.ahead_failed.take() {
                        if k == key {
                            return self.fail(status, &text).await;
                        }
                    }
                    Counters::bump(&self.w.counters.upstream_connects);
                    let https = &*key.scheme == "https";
                    match self
                        .open_upstream(&key.host, key.port, https, Alpn::Http1)
                        .await
                    {
                        Ok(u) => {
                            if let Some(info) = &u.tls_info {
                                crate::proxy::fire_tls_hook(&self.w, &self.info, info);
                            }
                            u
                        }
                        Err(ConnectError::Timeout(t)) => return self.fail(504, &t).await,
                        Err(ConnectError::Resolve(t) | ConnectError::Connect(t)) => {
                            return self.fail(502, &t).await
                        }
                    }
                }
            };
            self.info.server_addr = Some(up.addr);
            match self.send_and_receive(&mut req, &mut body, &mut up).await {
                Ok((h, complete)) => {
                    if !complete {
                        // the upstream answered before taking the whole body
                        upload_complete = false;
                        keep_alive = false;
                    }
                    break (up, h);
                }
                Err(SendError::Client(why)) => {
                    tracing::debug!(
                        conn = self.info.conn_id,
                        "client failed during upload: {why}"
                    );
                    up.stream.shutdown(Shutdown::Both);
                    return Next::Close;
                }
                Err(SendError::BadBody(why)) => {
                    return self.fail(400, &format!("bad request body: {why}")).await;
                }
                Err(SendError::Upstream(RespError::Closed))
                    if up.reused && retryable && attempt == 1 =>
                {
                    continue
                }
                Err(SendError::Upstream(e)) => {
                    up.stream.shutdown(Shutdown::Both);
                    let (status, mut text) = e.status_text(self.w.timeouts.upstream);
                    // an h2-only server (nghttpd, some gRPC servers) accepts TLS without
                    // agreeing to http/1.1 and then hangs up on an HTTP/1.1 request
                    let no_alpn = up.tls_info.as_ref().is_some_and(|t| t.alpn.is_none());
                    if matches!(e, RespError::Closed) && no_alpn {
                        text.push_str(
                            " (it agreed to no ALPN protocol when offered http/1.1: it may \
                             speak HTTP/2 only, which an HTTP/1.1 client cannot be relayed to)",
                        );
                    }
                    return self.fail(status, &text).await;
                }
            }
        };

        if rhead.status == 101 {
            if upgrade.is_some() && upload_complete && body.dec.is_done() {
                return self
                    .switch_protocols(rhead, up, engine, flow_id, websocket)
                    .await;
            }
            up.stream.shutdown(Shutdown::Both);
            return self
                .fail(502, "upstream switched protocols without being asked to")
                .await;
        }
        let rkind = match response_body_kind(&req.method, &rhead) {
            Ok(k) => k,
            Err(e) => {
                up.stream.shutdown(Shutdown::Both);
                return self
                    .fail(502, &format!("bad response framing from upstream: {e}"))
                    .await;
            }
        };
        let upstream_reusable = rhead.version == Version::Http11
            && !rhead.headers.has_token("connection", "close")
            && rkind != BodyKind::CloseDelimited;
        let mut resp = Response {
            status: rhead.status,
            reason: String::from_utf8_lossy(&rhead.reason).into_owned(),
            version: rhead.version,
            headers: rhead.headers,
            body: Body::Streaming,
            trailers: None,
        };
        let mut rdec = BodyDecoder::new(rkind);
        let mut rprefix = None;
        match self
            .response_event(
                engine,
                flow_id,
                &req,
                &mut resp,
                &mut up,
                &mut rdec,
                rkind,
                &mut rprefix,
            )
            .await
        {
            Decision::Forward => {}
            Decision::Respond(r) => {
                up.stream.shutdown(Shutdown::Both);
                return self.answer(&r, is_head, !keep_alive, client_version).await;
            }
            Decision::Drop => {
                up.stream.shutdown(Shutdown::Both);
                return Next::Close;
            }
            Decision::Failed(why) => {
                up.stream.shutdown(Shutdown::Both);
                return self
                    .fail(502, &format!("reading the upstream body: {why}"))
                    .await;
            }
        }

        // commit the response
        let chunked_ok = client_version == Version::Http11;
        let streaming = !matches!(resp.body, Body::Full(_));
        let mut output = Output::Verbatim;
        if streaming && rkind == BodyKind::Chunked && !chunked_ok {
            output = Output::Decoded;
            keep_alive = false;
        }
        if streaming && rkind == BodyKind::CloseDelimited {
            keep_alive = false;
        }
        // an event stream with sse.on_event hooks: events change length, so the body
        // goes out chunked (or to the connection's end for an HTTP/1.0 client)
        let mut sse_rw = None;
        let mut out_kind = rkind;
        if streaming
            && !is_head
            && rprefix.is_none()
            && sse::applies(engine, resp.status, &resp.headers)
        {
            if let Some(e) = engine {
                sse_rw = Some(sse::Rewriter::new(
                    e,
                    &self.info,
                    flow_id,
                    self.w.cfg.max_plugin_body,
                ));
                out_kind = if chunked_ok {
                    BodyKind::Chunked
                } else {
                    keep_alive = false;
                    BodyKind::CloseDelimited
                };
            }
        }
        let close = !keep_alive || self.w.is_draining();
        respond::fix_framing(
            &mut resp.headers,
            &resp.body,
            resp.trailers.as_ref(),
            out_kind,
            chunked_ok,
        );
        // room for a small body already read, which body_relay::body copies behind the head
        let body_ready = up.buf.len().min(body_relay::COALESCE_MAX);
        let mut head_buf = BytesMut::with_capacity(256 + resp.headers.len() * 48 + body_ready);
        respond::response_head(&mut resp, close, client_version, &mut head_buf);
        self.status = resp.status;
        let upstream_done;
        match (
            std::mem::replace(&mut resp.body, Body::Streaming),
            sse_rw.as_mut(),
        ) {
            (Body::Full(b), _) => {
                upstream_done = rdec.is_done();
                let parts = if is_head {
                    vec![head_buf.freeze()]
                } else {
                    vec![
                        head_buf.freeze(),
                        respond::full_body_wire(&b, resp.trailers.as_ref(), chunked_ok),
                    ]
                };
                if !self.send_parts(parts).await {
                    up.stream.shutdown(Shutdown::Both);
                    return Next::Close;
                }
            }
            (_, Some(rw)) => {
                let r = sse::relay_http1(
                    &up.stream,
                    &mut up.buf,
                    &self.stream,
                    &mut rdec,
                    head_buf,
                    chunked_ok,
                    rw,
                    self.w.timeouts.upstream,
                    Some((&self.send_deadline, self.w.timeouts.send)),
                )
                .await;
                match r {
                    Ok(n) => self.bytes_out += n,
                    Err(e) => {
                        tracing::info!(conn = self.info.conn_id, "event stream relay ended: {e:?}");
                        up.stream.shutdown(Shutdown::Both);
                        return Next::Close;
                    }
                }
                upstream_done = true;
            }
            (_, None) => {
                if let Some(p) = rprefix.take() {
                    head_buf.extend_from_slice(&p);
                }
                let r = body_relay::body(
                    &up.stream,
                    &mut up.buf,
                    &self.stream,
                    &mut rdec,
                    Some(head_buf),
                    output,
                    self.w.timeouts.upstream,
                    Some((&self.send_deadline, self.w.timeouts.send)),
                    None,
                )
                .await;
                match r {
                    Ok(n) => self.bytes_out += n,
                    Err(e) => {
                        tracing::info!(
                            conn = self.info.conn_id,
                            "response body relay ended: {e:?}"
                        );
                        up.stream.shutdown(Shutdown::Both);
                        return Next::Close;
                    }
                }
                upstream_done = true;
            }
        }
        if upstream_reusable && upstream_done && upload_complete && body.dec.is_done() {
            self.w.pool.put(key, up);
        } else {
            up.stream.shutdown(Shutdown::Both);
        }
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// The upstream agreed to an upgrade: pass its 101 on, then relay both directions
    /// as raw bytes (raw.on_chunk sees them) until either side closes. The ws layer will
    /// take over WebSocket here when it lands.
    async fn switch_protocols(
        &mut self,
        mut rhead: crate::http::ResponseHead,
        mut up: Upstream,
        engine: Option<&Engine>,
        flow_id: u64,
        websocket: bool,
    ) -> Next {
        let proto = rhead.headers.get("upgrade").cloned();
        crate::proxy::pipeline::strip_hop_by_hop(&mut rhead.headers);
        if let Some(p) = proto {
            rhead.headers.set("upgrade", p);
        }
        rhead.headers.set("connection", "upgrade");
        rhead.version = Version::Http11;
        self.status = 101;
        let mut wire = BytesMut::with_capacity(256);
        crate::proto::http1::encode_response_head(&rhead, &mut wire);
        if !self.write(wire.freeze()).await {
            up.stream.shutdown(Shutdown::Both);
            return Next::Close;
        }
        let accepted_ws = rhead
            .headers
            .get("upgrade")
            .is_some_and(|p| p.as_ref().eq_ignore_ascii_case(b"websocket"));
        match engine.filter(|&e| websocket && accepted_ws && ws::wants(Some(e))) {
            Some(e) => {
                let stats = ws::relay(
                    &self.stream,
                    std::mem::take(&mut self.buf),
                    &up.stream,
                    std::mem::take(&mut up.buf),
                    e,
                    &self.info,
                    flow_id,
                    self.w.timeouts.tunnel,
                    self.w.cfg.max_plugin_body,
                )
                .await;
                self.bytes_in += stats.up;
                self.bytes_out += stats.down;
                up.stream.shutdown(Shutdown::Both);
            }
            None => self.relay_both_ways(up, engine).await,
        }
        Next::Close
    }

    /// Writes a response made by a plugin (RESPOND) and says what happens next.
    async fn answer(
        &mut self,
        resp: &Response,
        is_head: bool,
        close: bool,
        client: Version,
    ) -> Next {
        let close = close || self.w.is_draining();
        self.status = resp.status;
        let wire = respond::synthesized(resp, is_head, close, client);
        if !self.write(wire).await || close {
            return Next::Close;
        }
        Next::KeepAlive
    }

    /// Sends `100 Continue` once if the client is waiting for it before its body.
    async fn pay_continue(&mut self, body: &mut ReqBody) -> bool {
        if body.owe_continue && !body.dec.is_done() {
            body.owe_continue = false;
            return self.write(Bytes::from_static(CONTINUE_100)).await;
        }
        true
    }

    /// pre_pipeline hooks, the pipeline steps, post_pipeline hooks.
    async fn request_event(
        &mut self,
        engine: Option<&Engine>,
        flow_id: u64,
        req: &mut Request,
        body: &mut ReqBody,
        upgrade: Option<&Bytes>,
    ) -> Decision {
        let websocket = upgrade.is_some_and(|p| p.as_ref().eq_ignore_ascii_case(b"websocket"));
        // a WebSocket handshake runs ws.on_upgrade after http.on_request in each phase
        let events: &[Event] = if websocket {
            &[Event::HttpRequest, Event::WsUpgrade]
        } else {
            &[Event::HttpRequest]
        };
        for phase in [Phase::PrePipeline, Phase::PostPipeline] {
            if matches!(phase, Phase::PostPipeline) {
                self.w.pipeline.on_request(req);
                if let Some(p) = upgrade {
                    // the pipeline strips Upgrade and Connection as hop-by-hop; an upgrade
                    // needs them on the next hop, and post_pipeline sees what is sent
                    req.headers.set("connection", "upgrade");
                    req.headers.set("upgrade", p.clone());
                    // message hooks read payloads, and luring does not inflate
                    if websocket && ws::reads_payloads(engine) {
                        req.headers.remove("sec-websocket-extensions");
                    }
                }
            }
            let Some(e) = engine else { continue };
            for &ev in events.iter().filter(|&&ev| e.has(ev)) {
                let mut step = match ev {
                    Event::WsUpgrade => e.ws_upgrade(phase, &self.info, flow_id, req),
                    _ => e.http_request(phase, &self.info, flow_id, req),
                };
                loop {
                    match step {
                        Step::Continue => break,
                        Step::Drop => return Decision::Drop,
                        Step::Respond(r) => return Decision::Respond(r),
                        Step::NeedBody(s) => {
                            if let Err(why) = self.fill_request_body(req, body).await {
                                return Decision::Failed(why);
                            }
                            step = e.resume_request(s, &self.info, flow_id, req);
                        }
                    }
                }
            }
        }
        Decision::Forward
    }

    async fn fill_request_body(
        &mut self,
        req: &mut Request,
        body: &mut ReqBody,
    ) -> Result<(), String> {
        if !matches!(req.body, Body::Streaming) {
            return Ok(());
        }
        if !self.pay_continue(body).await {
            return Err("client went away".into());
        }
        let got = body_relay::buffer_body(
            &self.stream,
            &mut self.buf,
            &mut body.dec,
            body.kind,
            self.w.cfg.max_plugin_body,
            self.w.timeouts.idle,
        )
        .await?;
        match got {
            Buffered::Complete(b, trailers) => {
                self.bytes_in += b.len() as u64;
                req.body = Body::Full(b);
                req.trailers = trailers;
            }
            Buffered::TooLarge(prefix) => {
                self.bytes_in += prefix.len() as u64;
                body.prefix = Some(prefix);
                req.body = Body::TooLarge;
            }
        }
        Ok(())
    }

    /// Writes the request upstream and reads the final response head. A streamed body is
    /// uploaded while the upstream is watched, so an early final response (413, 401...)
    /// reaches the client even when it holds its body back. Returns the head and whether
    /// the whole request body went upstream.
    async fn send_and_receive(
        &mut self,
        req: &mut Request,
        body: &mut ReqBody,
        up: &mut Upstream,
    ) -> Result<(crate::http::ResponseHead, bool), SendError> {
        // luring answers Expect itself (as nginx does), so the upstream never waits on it
        req.headers.remove("expect");
        respond::fix_framing(
            &mut req.headers,
            &req.body,
            req.trailers.as_ref(),
            body.kind,
            true,
        );
        let mut head = BytesMut::with_capacity(256 + req.headers.len() * 48);
        respond::request_head(req, &mut head);
        let limits = self.w.upstream_limits;
        let t = self.w.timeouts;
        let streamed = !matches!(req.body, Body::Full(_)) && !body.dec.is_done();
        let (interim, result) = if !streamed {
            let parts = match &req.body {
                Body::Full(b) => vec![
                    head.freeze(),
                    respond::full_body_wire(b, req.trailers.as_ref(), true),
                ],
                _ => {
                    if let Some(p) = body.prefix.take() {
                        head.extend_from_slice(&p);
                    }
                    vec![head.freeze()]
                }
            };
            if let Err(e) = up.stream.write_all_vectored(parts).await {
                tracing::debug!(conn = self.info.conn_id, "upstream write failed: {e}");
                return Err(SendError::Upstream(RespError::Closed));
            }
            self.upstream_deadline.arm(t.upstream);
            let limit = Some(&self.upstream_deadline);
            let r = read_response_head(&up.stream, &mut up.buf, &limits, limit).await;
            match r {
                Ok((interim, h)) => (interim, Ok((h, true))),
                Err(e) => return Err(SendError::Upstream(e)),
            }
        } else {
            if let Some(p) = body.prefix.take() {
                head.extend_from_slice(&p);
            }
            if !self.pay_continue(body).await {
                return Err(SendError::Client("client went away".into()));
            }
            let Upstream {
                stream: ups,
                buf: upbuf,
                ..
            } = up;
            let body_read = std::cell::Cell::new(false);
            let upload = body_relay::body(
                &self.stream,
                &mut self.buf,
                ups,
                &mut body.dec,
                Some(head),
                Output::Verbatim,
                t.idle,
                None,
                Some(&body_read),
            );
            // no deadline while the upload runs: a long upload is not a slow upstream
            let response = read_response_head(ups, upbuf, &limits, None);
            tokio::pin!(upload);
            tokio::pin!(response);
            let mut uploaded = 0;
            let outcome = tokio::select! {
                biased;
                r = &mut response => {
                    // the upstream answered first; if the client's body was read whole the
                    // connection stays in sync once the last write lands
                    let mut complete = false;
                    if body_read.get() {
                        if let Ok(Ok(n)) = tokio::time::timeout(t.upstream, &mut upload).await {
                            uploaded = n;
                            complete = true;
                        }
                    }
                    r.map(|(i, h)| (i, h, complete))
                }
                u = &mut upload => match u {
                    Ok(n) => {
                        uploaded = n;
                        match tokio::time::timeout(t.upstream, &mut response).await {
                            Ok(r) => r.map(|(i, h)| (i, h, true)),
                            Err(_) => {
                                ups.shutdown(Shutdown::Both);
                                Err(RespError::Timeout)
                            }
                        }
                    }
                    Err(RelayError::Source(why)) => {
                        ups.shutdown(Shutdown::Both);
                        return Err(SendError::Client(why));
                    }
                    Err(RelayError::Malformed(why)) => {
                        ups.shutdown(Shutdown::Both);
                        return Err(SendError::BadBody(why));
                    }
                    // the upstream stopped reading; it may have answered already
                    Err(RelayError::Sink(_)) => response.await.map(|(i, h)| (i, h, false)),
                },
            };
            self.bytes_in += uploaded;
            match outcome {
                Ok((interim, h, complete)) => (interim, Ok((h, complete))),
                Err(e) => return Err(SendError::Upstream(e)),
            }
        };
        if req.version == Version::Http11 {
            for h in interim {
                let mut out = BytesMut::new();
                crate::proto::http1::encode_response_head(&h, &mut out);
                if !self.write(out.freeze()).await {
                    return Err(SendError::Client("client went away".into()));
                }
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn response_event(
        &mut self,
        engine: Option<&Engine>,
        flow_id: u64,
        req: &Request,
        resp: &mut Response,
        up: &mut Upstream,
        dec: &mut BodyDecoder,
        kind: BodyKind,
        prefix: &mut Option<BytesMut>,
    ) -> Decision {
        let hooked = engine.filter(|e| e.has(Event::HttpResponse));
        for phase in [Phase::PrePipeline, Phase::PostPipeline] {
            if matches!(phase, Phase::PostPipeline) {
                self.w.pipeline.on_response(req, resp);
            }
            let Some(e) = hooked else { continue };
            let mut step = e.http_response(phase, &self.info, flow_id, req, resp);
            loop {
                match step {
                    Step::Continue => break,
                    Step::Drop => return Decision::Drop,
                    Step::Respond(r) => return Decision::Respond(r),
                    Step::NeedBody(s) => {
                        if matches!(resp.body, Body::Streaming) {
                            match body_relay::buffer_body(
                                &up.stream,
                                &mut up.buf,
                                dec,
                                kind,
                                self.w.cfg.max_plugin_body,
                                self.w.timeouts.upstream,
                            )
                            .await
                            {
                                Ok(Buffered::Complete(b, t)) => {
                                    resp.body = Body::Full(b);
                                    resp.trailers = t;
                                }
                                Ok(Buffered::TooLarge(p)) => {
                                    *prefix = Some(p);
                                    resp.body = Body::TooLarge;
                                }
                                Err(why) => return Decision::Failed(why),
                            }
                        }
                        step = e.resume_response(s, &self.info, flow_id, req, resp);
                    }
                }
            }
        }
        Decision::Forward
    }

    /// CONNECT: answer 200, then intercept TLS inside the tunnel (the requests then
    /// arrive on this same connection), or relay the bytes both ways unchanged.
    async fn tunnel(&mut self, req: Request, engine: Option<&Engine>) -> Next {
        let host = req.host();
        let port = req.port();
        let up = match upstream::connect(self.w.backend, &host, port, self.w.timeouts.connect, None)
            .await
        {
            Ok(u) => u,
            Err(ConnectError::Timeout(t)) => return self.fail(504, &t).await,
            Err(ConnectError::Resolve(t) | ConnectError::Connect(t)) => {
                return self.fail(502, &t).await
            }
        };
        self.info.server_addr = Some(up.addr);
        self.status = 200;
        if !self
            .write(Bytes::from_static(
                b"HTTP/1.1 200 Connection Established\r\n\r\n",
            ))
            .await
        {
            up.stream.shutdown(Shutdown::Both);
            return Next::Close;
        }
        self.tunnel_established(&host, port, &req.authority, up, engine)
            .await
    }

    /// SOCKS5 mode: the handshake, socks5.on_connect, the connect and its reply; then
    /// the connection goes on as an accepted CONNECT tunnel to the requested target.
    async fn socks5_tunnel(&mut self) -> Next {
        let accepted = match socks5::handshake(&self.w, &self.stream, &mut self.buf).await {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(conn = self.info.conn_id, "{why}");
                return Next::Close;
            }
        };
        if !self.w.cfg.access_log {
            return self.socks5_connect(&accepted).await.0;
        }
        let t0 = Instant::now();
        let out0 = self.bytes_out;
        let (next, reply) = self.socks5_connect(&accepted).await;
        // one line per tunnel, as for CONNECT; the status is the SOCKS5 reply code
        tracing::info!(
            target: "luring::access",
            "{} \"SOCKS5 CONNECT {}\" {} {} {:.1}ms user={} conn={}",
            self.info.client_addr,
            accepted.req.target(),
            reply.map_or("-".to_string(), |r| r.code().to_string()),
            self.bytes_out - out0,
            t0.elapsed().as_secs_f64() * 1e3,
            accepted.username.as_deref().unwrap_or("-"),
            self.info.conn_id,
        );
        next
    }

    /// socks5.on_connect, the connect and its reply, then the tunnel; also the reply
    /// sent (None: dropped by a hook, or the client left).
    async fn socks5_connect(&mut self, accepted: &socks5::Accepted) -> (Next, Option<Reply>) {
        let engine = self.w.engine();
        let engine = engine.as_deref();
        if let Some(e) = engine.filter(|e| e.has(Event::Socks5Connect)) {
            let dict = Socks5Info {
                target_addr: accepted.req.target(),
                username: accepted.username.clone(),
            };
            if let Step::Drop = e.socks5_connect(&self.info, &dict) {
                tracing::debug!(conn = self.info.conn_id, "dropped by socks5.on_connect");
                self.stream.shutdown(Shutdown::Both);
                return (Next::Close, None);
            }
        }
        let host = accepted.req.host_text();
        let port = accepted.req.port;
        let up = match upstream::connect(self.w.backend, &host, port, self.w.timeouts.connect, None)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                let (ConnectError::Timeout(t)
                | ConnectError::Resolve(t)
                | ConnectError::Connect(t)) = &e;
                tracing::info!(
                    conn = self.info.conn_id,
                    "SOCKS5 {}: {t}",
                    accepted.req.target()
                );
                let code = socks5::reply_for(&e);
                let reply = socks5_proto::reply(code, socks5::UNSPECIFIED);
                self.write(Bytes::from(reply)).await;
                return (Next::Close, Some(code));
            }
        };
        self.info.server_addr = Some(up.addr);
        let ok = socks5_proto::reply(Reply::Succeeded, socks5::UNSPECIFIED);
        if !self.write(Bytes::from(ok)).await {
            up.stream.shutdown(Shutdown::Both);
            return (Next::Close, None);
        }
        let authority = crate::http::authority_of(&host, port);
        let next = self
            .tunnel_established(&host, port, &authority, up, engine)
            .await;
        (next, Some(Reply::Succeeded))
    }

    /// An accepted tunnel to `host:port` (`authority`), its upstream connected: who
    /// speaks first decides between TLS interception, HTTP inside the tunnel, and a
    /// relay of the bytes as they are.
    async fn tunnel_established(
        &mut self,
        host: &str,
        port: u16,
        authority: &str,
        up: Upstream,
        engine: Option<&Engine>,
    ) -> Next {
        let mut early = std::mem::take(&mut self.buf);
        let mut pending: [Option<PendingRead<'_>>; 2] = [None, None];
        let mut upstream_early = BytesMut::new();
        if self.intercept.is_none() {
            // Who speaks first decides: a client ClientHello is intercepted; a server
            // greeting (SMTP, SSH...) means a plain relay. Neither read can be cancelled,
            // so the one still in flight is handed to the relay.
            if early.is_empty() {
                // Most tunnels carry a client-first protocol (TLS, HTTP). Waiting for the
                // client a moment before reading the upstream leaves no upstream read in
                // flight when it speaks, so plain HTTP inside can reuse this connection.
                let mut client_read: PendingRead<'_> =
                    Box::pin(self.stream.read(BytesMut::with_capacity(16 * 1024)));
                match tokio::time::timeout(CLIENT_FIRST_WAIT, &mut client_read).await {
                    Ok((res, b)) => {
                        early = b;
                        if !matches!(res, Ok(n) if n > 0) {
                            up.stream.shutdown(Shutdown::Both);
                            return Next::Close;
                        }
                    }
                    Err(_) => {
                        let mut upstream_read: PendingRead<'_> = Box::pin(
                            up.stream
                                .read(BytesMut::with_capacity(body_relay::READ_BUF)),
                        );
                        tokio::select! {
                            (res, b) = &mut client_read => {
                                early = b;
                                if !matches!(res, Ok(n) if n > 0) {
                                    up.stream.shutdown(Shutdown::Both);
                                    return Next::Close;
                                }
                                pending[1] = Some(upstream_read);
                            }
                            (res, b) = &mut upstream_read => {
                                upstream_early = b;
                                if !matches!(res, Ok(n) if n > 0) {
                                    self.stream.shutdown(Shutdown::Both);
                                    return Next::Close;
                                }
                                pending[0] = Some(client_read);
                            }
                        }
                    }
                }
            }
            // An h2c server may send its SETTINGS before the client's preface arrives:
            // that is not a server-first protocol, so the client's bytes decide.
            if self.w.cfg.http2 && is_h2_settings_frame(&upstream_early) {
                if let Some(mut client_read) = pending[0].take() {
                    let wait = self.w.timeouts.head;
                    match tokio::time::timeout(wait, &mut client_read).await {
                        Ok((Ok(n), b)) if n > 0 => early = b,
                        Ok(_) => {
                            up.stream.shutdown(Shutdown::Both);
                            return Next::Close;
                        }
                        Err(_) => pending[0] = Some(client_read),
                    }
                }
            }
            if pending[0].is_none()
                && crate::proto::client_hello::is_tls_client_hello_start(&early) != Some(false)
            {
                let head_timeout = self.w.timeouts.head;
                match WorkerTls::read_client_hello(&self.stream, &mut early, head_timeout).await {
                    // the passthrough rules see both names, as in mitmproxy
                    Ok(Some(hello))
                        if self.w.tls.intercepts_any(host, hello.sni.as_deref(), port) =>
                    {
                        let idle = pending[1].is_none() && up.buf.is_empty();
                        drop(pending);
                        if idle && upstream_early.is_empty() {
                            self.spare = Some((host.to_string(), port, up));
                        } else {
                            up.stream.shutdown(Shutdown::Both);
                        }
                        self.buf = early;
                        return self
                            .start_tls(&hello, host, Some(authority.to_string()))
                            .await;
                    }
                    // ignored host: the buffered ClientHello is relayed as it came
                    Ok(Some(_)) | Ok(None) => {}
                    Err(why) => {
                        tracing::info!(conn = self.info.conn_id, "tunnel to {host}:{port}: {why}");
                        drop(pending);
                        up.stream.shutdown(Shutdown::Both);
                        return Next::Close;
                    }
                }
            } else if pending[0].is_none()
                && crate::proto::http1::looks_like_request_start(&early)
                && self.w.tls.intercepts_any(host, None, port)
                && !engine.is_some_and(|e| e.has(Event::RawChunk))
            {
                // plain HTTP inside the tunnel (curl --proxytunnel, ws:// through a proxy)
                // is served like intercepted HTTPS, so hooks see its requests; a plugin
                // that registered raw.on_chunk gets the tunnel's bytes instead, as the
                // hook surface says of a tunnel that is not TLS-intercepted
                let idle = pending[1].is_none() && up.buf.is_empty() && upstream_early.is_empty();
                drop(pending);
                if idle {
                    // the first request goes over the connection the tunnel opened
                    self.w.pool.put(Key::new("http", authority), up);
                } else {
                    up.stream.shutdown(Shutdown::Both);
                }
                self.buf = early;
                self.intercept = Some(Intercept::new("http", authority));
                return Next::KeepAlive;
            } else if pending[0].is_none()
                && self.w.cfg.http2
                && starts_like_h2_preface(&early)
                && self.w.tls.intercepts_any(host, None, port)
                && !engine.is_some_and(|e| e.has(Event::RawChunk))
            {
                // h2c with prior knowledge inside the tunnel (gRPC over an insecure
                // channel through a proxy): served by the HTTP/2 layer, as plain HTTP/1 is
                drop(pending);
                up.stream.shutdown(Shutdown::Both);
                self.buf = early;
                let authority = Intercept::new("http", authority).authority;
                return self.serve_h2_prior_knowledge("http", &authority, "").await;
            }
        }
        upstream_early.extend_from_slice(&up.buf);
        let stats = crate::proxy::byte_tunnel::run(
            &self.stream,
            early,
            &up.stream,
            upstream_early,
            engine,
            &self.info,
            pending,
            self.w.timeouts.tunnel,
        )
        .await;
        self.bytes_in += stats.up;
        self.bytes_out += stats.down;
        up.stream.shutdown(Shutdown::Both);
        Next::Close
    }

    /// Connects to `authority` before the client's TLS handshake, over TLS offering
    /// `alpn` when `scheme` is https (`--upstream-cert` needs the upstream's names for
    /// the leaf; offering h2 to the client needs to know the upstream agreed to it).
    /// On failure the first request to that upstream reports the error.
    async fn connect_ahead(
        &mut self,
        scheme: &str,
        authority: &str,
        alpn: Alpn,
    ) -> Result<Upstream, String> {
        let (host, port) = crate::http::host_port_of(scheme, authority);
        match self
            .open_upstream(&host, port, scheme == "https", alpn)
            .await
        {
            Ok(up) => {
                if let Some(info) = &up.tls_info {
                    crate::proxy::fire_tls_hook(&self.w, &self.info, info);
                }
                Ok(up)
            }
            Err(e) => {
                let (status, text) = match e {
                    ConnectError::Timeout(t) => (504, t),
                    ConnectError::Resolve(t) | ConnectError::Connect(t) => (502, t),
                };
                tracing::info!(
                    conn = self.info.conn_id,
                    "connecting ahead to {authority}: {text}"
                );
                // the first request reports this instead of waiting for a second failure
                self.ahead_failed = Some((Key::new(scheme, authority), status, text.clone()));
                Err(text)
            }
        }
    }

    /// A new connection to `host:port` (TLS offering `alpn` when `https`): over the
    /// tunnel's spare plain connection when it goes there, else over a new socket.
    async fn open_upstream(
        &mut self,
        host: &str,
        port: u16,
        https: bool,
        alpn: Alpn,
    ) -> Result<Upstream, ConnectError> {
        let timeout = self.w.timeouts.connect;
        if https {
            if let Some((h, p, up)) = self.spare.take() {
                if h == host && p == port {
                    return upstream::secure(up, host, timeout, &self.w.tls, alpn).await;
                }
                up.stream.shutdown(Shutdown::Both);
            }
        }
        let tls = https.then_some(&self.w.tls);
        upstream::connect_offering(self.w.backend, host, port, timeout, tls, alpn).await
    }

    /// Serves the rest of the connection with the HTTP/2 layer, relaying as `via` says.
    async fn serve_h2(&mut self, via: http2::Via, target: http2::Target) -> Next {
        if let http2::Via::H2(u) = &via {
            self.info.server_addr = Some(u.addr);
        }
        let early = std::mem::take(&mut self.buf);
        let w = self.w.clone();
        let (i, o) = http2::serve(w, &self.stream, early, &self.info, via, target).await;
        self.bytes_in += i;
        self.bytes_out += o;
        Next::Close
    }

    /// HTTP/2 with prior knowledge (h2c) from the client: served by the HTTP/2 layer,
    /// over plaintext h2c to an http upstream (a tunnel's target: the client chose h2c
    /// with it), or over TLS to an https one (h2 when it chooses h2, else HTTP/1.1).
    async fn serve_h2_prior_knowledge(
        &mut self,
        scheme: &str,
        authority: &str,
        path_prefix: &str,
    ) -> Next {
        let via = match self.connect_ahead(scheme, authority, Alpn::H2OrHttp1).await {
            Ok(u) if scheme == "http" || crate::proxy::worker_tls::chose_h2(&u.stream) => {
                http2::Via::H2(Box::new(u))
            }
            Ok(u) => {
                self.w.pool.put(Key::new(scheme, authority), u);
                http2::Via::Http1
            }
            Err(e) => http2::Via::Failed(e),
        };
        let target = http2::Target {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            path_prefix: path_prefix.to_string(),
        };
        self.serve_h2(via, target).await
    }

    /// Terminates the client's TLS; later requests on this connection go to
    /// `authority` over TLS (reverse mode: the upstream). A client offering h2 is
    /// offered h2 when it can be served: intercepting, when the upstream (reached
    /// ahead of the handshake) chose h2 too, so ALPN follows the upstream; in reverse
    /// mode always, over h2 when the upstream has it (h2c for gRPC calls to a
    /// plaintext upstream) and HTTP/1.1 otherwise. A client that speaks only h2 and
    /// cannot be served so is relayed to the upstream untouched.
    async fn start_tls(
        &mut self,
        hello: &ClientHello,
        host: &str,
        authority: Option<String>,
    ) -> Next {
        let head_timeout = self.w.timeouts.head;
        let w = self.w.clone();
        // where this connection's requests go, and with what path prefix
        let (scheme, target, prefix) = match (&authority, &w.mode) {
            (None, Mode::Reverse(up)) => {
                (up.scheme.as_str(), up.authority(), up.path_prefix.as_str())
            }
            (a, _) => (
                "https",
                Intercept::new("https", a.as_deref().unwrap_or(host)).authority,
                "",
            ),
        };
        let reverse = authority.is_none();
        let h2_only = !speaks_http1(hello);
        let client_h2 = w.cfg.http2 && offers_h2(hello);
        let want_sans = !reverse && w.cfg.upstream_cert;
        let mut sans = None;
        let mut via = None;
        if scheme == "https" && (client_h2 || want_sans) {
            let alpn = if client_h2 {
                Alpn::H2OrHttp1
            } else {
                Alpn::Http1
            };
            match self.connect_ahead(scheme, &target, alpn).await {
                Ok(up) => {
                    if want_sans {
                        sans = Some(crate::proxy::worker_tls::peer_sans(&up.stream));
                    }
                    if client_h2 && crate::proxy::worker_tls::chose_h2(&up.stream) {
                        via = Some(http2::Via::H2(Box::new(up)));
                    } else {
                        // the first request takes it from the pool
                        self.w.pool.put(Key::new(scheme, &target), up);
                        via = (client_h2 && reverse).then_some(http2::Via::Http1);
                    }
                }
                // the client's streams will be answered 502 with the reason
                Err(why) if client_h2 && h2_only => via = Some(http2::Via::Failed(why)),
                Err(_) => via = (client_h2 && reverse).then_some(http2::Via::Http1),
            }
        } else if client_h2 {
            // a plaintext reverse upstream: h2c for gRPC, HTTP/1.1 for the rest
            via = Some(http2::Via::Http1OrH2c);
        }
        if h2_only && via.is_none() && scheme == "https" {
            let (up_host, up_port) = crate::http::host_port_of(scheme, &target);
            tracing::info!(
                conn = self.info.conn_id,
                "the client offers ALPN {} without http/1.1, and h2 cannot be served to it \
                 (--no-http2, or {target} did not choose h2); relayed unchanged",
                alpn_list(hello)
            );
            self.relay_raw(&up_host, up_port).await;
            return Next::Close;
        }
        let alpn = if via.is_some() {
            Alpn::H2OrHttp1
        } else {
            Alpn::Http1
        };
        let offer = Offer {
            upstream_sans: sans.as_deref(),
            alpn,
        };
        let accepted = w
            .tls
            .accept(
                &mut self.stream,
                &mut self.buf,
                hello,
                host,
                offer,
                head_timeout,
            )
            .await;
        let acc = match accepted {
            Ok(acc) => acc,
            Err(why) => {
                if let Some(http2::Via::H2(up)) = via {
                    up.stream.shutdown(Shutdown::Both);
                }
                tracing::info!(
                    conn = self.info.conn_id,
                    "TLS interception of {host}: {why}"
                );
                return Next::Close;
            }
        };
        self.info.sni = Some(acc.server_name);
        crate::proxy::fire_tls_hook(&self.w, &self.info, &acc.info);
        if let Some(via) = via {
            if crate::proxy::worker_tls::chose_h2(&self.stream) {
                let target = http2::Target {
                    scheme: scheme.to_string(),
                    authority: target,
                    path_prefix: prefix.to_string(),
                };
                return self.serve_h2(via, target).await;
            }
            if let http2::Via::H2(up) = via {
                up.stream.shutdown(Shutdown::Both);
            }
        }
        self.intercept = authority.map(|a| Intercept::new("https", &a));
        Next::KeepAlive
    }
}

/// RFC 9110 section 9.2.2 idempotent methods, or a request that carries an
/// Idempotency-Key: such a request may be sent again after a stale connection.
/// How long a new tunnel waits for the client's first bytes before it also reads the
/// upstream (for server-first protocols: SMTP, SSH banners...).
const CLIENT_FIRST_WAIT: Duration = Duration::from_millis(50);

fn is_idempotent(req: &Request) -> bool {
    matches!(
        req.method.as_ref(),
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    ) || req.headers.contains("idempotency-key")
}

/// Whether luring can serve the client's TLS: it offers no ALPN, or http/1.1 among it.
fn speaks_http1(hello: &ClientHello) -> bool {
    hello.alpn.is_empty() || hello.alpn.iter().any(|p| p.as_slice() == b"http/1.1")
}

/// Whether the client offers h2 in its ALPN.
fn offers_h2(hello: &ClientHello) -> bool {
    hello.alpn.iter().any(|p| p.as_slice() == b"h2")
}

fn alpn_list(hello: &ClientHello) -> String {
    let names: Vec<_> = hello
        .alpn
        .iter()
        .map(|p| String::from_utf8_lossy(p))
        .collect();
    names.join(",")
}

/// Reads up to the final response head; returns the interim (1xx other than 100)
/// heads to pass on, and the final head. `deadline` None waits as long as it takes.
pub(crate) async fn read_response_head(
    stream: &Stream,
    buf: &mut BytesMut,
    limits: &crate::proto::http1::Limits,
    deadline: Option<&Deadline>,
) -> Result<(Vec<crate::http::ResponseHead>, crate::http::ResponseHead), RespError> {
    let mut seen_any = false;
    let mut interim = Vec::new();
    loop {
        if !buf.is_empty() {
            seen_any = true;
            match parse_response_head(buf, limits) {
                Ok(Some((h, n))) => {
                    let _ = buf.split_to(n);
                    match h.status {
                        // luring answered Expect itself; an upstream 100 is redundant
                        100 => {}
                        // 101 ends HTTP on this connection: the caller decides what follows
                        102..=199 => interim.push(h),
                        _ => return Ok((interim, h)),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(RespError::Bad(e.to_string())),
            }
        }
        let read = match deadline {
            Some(d) => body_relay::read_some_by(stream, buf, d, body_relay::HEAD_READ).await,
            None => {
                let forever = Duration::from_secs(86400 * 365);
                body_relay::read_some_at_most(stream, buf, forever, body_relay::HEAD_READ).await
            }
        };
        match read {
            Ok(0) if seen_any => return Err(RespError::Bad("upstream closed mid-head".into())),
            Ok(0) => return Err(RespError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(RespError::Timeout),
            Err(_) if !seen_any => return Err(RespError::Closed),
            Err(e) => return Err(RespError::Bad(e.to_string())),
        }
    }
}

/// Why an exchange with the upstream failed.
enum SendError {
    Client(String),
    /// The client's body framing is broken: it gets a 400 if nothing was answered yet.
    BadBody(String),
    Upstream(RespError),
}

/// Why no response head came.
#[derive(Debug)]
pub(crate) enum RespError {
    /// Closed before any byte (a stale pooled connection, or a crash).
    Closed,
    Timeout,
    Bad(String),
}

impl RespError {
    pub(crate) fn status_text(&self, timeout: Duration) -> (u16, String) {
        match self {
            RespError::Closed => (
                502,
                "upstream closed the connection without responding".into(),
            ),
            RespError::Timeout => (504, format!("upstream did not respond within {timeout:?}")),
            RespError::Bad(t) => (502, format!("bad response from upstream: {t}")),
        }
    }
}
