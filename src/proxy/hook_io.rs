//! The I/O of waiting hooks: performs the [`IoRequest`] a hook yielded
//! (`Step::Wait`) on the worker's runtime and returns what resumes it. The engine knows
//! nothing about sockets; here a cosocket id maps to a connection owned by the
//! [`HookIo`] of one message event, so every connection a hook left open is shut down
//! when the event ends or is dropped (client gone). `sock:keepalive()` moves one into
//! the worker's cosocket pool; `luring.http_request` uses the upstream pool of proxied
//! traffic.

use crate::http::Target;
use crate::io::Deadline;
use crate::plugin::{
    ConnectCall, Engine, Event, HttpCall, IoRequest, IoResult, Recv, Step, Suspended,
};
use crate::proto::http1::{response_body_kind, BodyDecoder, BodyKind};
use crate::proxy::body_relay::read_some;
use crate::proxy::upstream::h2 as up2;
use crate::proxy::upstream::{self, connect, h1, secure, ConnectError, Key, Upstream};
use crate::proxy::worker::Worker;
use crate::proxy::worker_tls::Alpn;
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Idle cosockets kept per (host, port, tls).
const KEEP_MAX: usize = 32;
/// An idle cosocket older than this is closed instead of reused.
const KEEP_IDLE: Duration = Duration::from_secs(60);
/// Limit of one operation with no `timeout` of its own: the hook timeout bounds it.
const NO_LIMIT: Duration = Duration::from_secs(3600);

type SockKey = (String, u16, bool);

struct Idle {
    up: Upstream,
    since: Instant,
    reused: u32,
}

thread_local! {
    /// The worker's h2 sessions for `luring.http_request` to https servers that chose h2.
    static H2_SUBS: RefCell<HashMap<Key, Rc<up2::Lazy>>> = RefCell::new(HashMap::new());
    /// The worker's idle cosockets (one worker per thread, so no lock).
    static KEEP: RefCell<HashMap<SockKey, Vec<Idle>>> = RefCell::new(HashMap::new());
    /// Cosocket ids are never reused on a worker, so a socket a plugin kept in a global
    /// past its event can only fail ("closed"), never reach someone else's connection.
    static NEXT_ID: Cell<u32> = const { Cell::new(1) };
}

/// A connection that is shut down when dropped, unless taken back: a dropped io_uring
/// operation keeps its socket open until then (see the `io` module).
struct Held(Option<Upstream>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(up) = self.0.take() {
            up.stream.shutdown(Shutdown::Both);
        }
    }
}

impl Held {
    fn get(&mut self) -> &mut Upstream {
        self.0.as_mut().expect("held connection")
    }
}

struct Sock {
    held: Held,
    key: SockKey,
}

/// The cosockets and hook-timeout clock of one message event's waiting hooks.
pub struct HookIo {
    socks: Vec<(u32, Sock)>,
    timeout: Duration,
    hook: Option<(Event, usize, usize)>,
    deadline: Instant,
}

/// Performs the waits of a chain that returned `step`, resuming it with `resume` after
/// each, until it ends: the driver of every row outside `exchange::message_event`. A
/// chain that does not wait costs one match; the waiting state is boxed.
pub async fn settle(
    w: &Worker,
    e: &Engine,
    step: Step,
    mut resume: impl FnMut(Suspended) -> Step,
) -> Step {
    if !matches!(step, Step::Wait(..)) {
        return step;
    }
    Box::pin(async move {
        let mut io = HookIo::new(crate::config::secs(w.cfg.hook_timeout));
        let mut step = step;
        while let Step::Wait(s, req) = step {
            match io.wait(w, s.hook_key(), req).await {
                Ok(r) => e.feed_io(r),
                Err(why) => e.fail_wait(why),
            }
            step = resume(s);
        }
        step
    })
    .await
}

impl HookIo {
    /// No socket yet; each hook call may wait `timeout` in total (`--hook-timeout`).
    pub fn new(timeout: Duration) -> HookIo {
        HookIo {
            socks: Vec::new(),
            timeout,
            hook: None,
            deadline: Instant::now(),
        }
    }

    /// Performs `req` for hook call `hook`: its result, or Err when the hook call's
    /// time is up (the hook then fails). The clock starts at a call's first wait.
    pub async fn wait(
        &mut self,
        w: &Worker,
        hook: (Event, usize, usize),
        req: IoRequest,
    ) -> Result<IoResult, String> {
        if self.hook != Some(hook) {
            self.hook = Some(hook);
            self.deadline = Instant::now() + self.timeout;
        }
        let until = self.deadline;
        let t = self.timeout;
        let run = Box::pin(self.run(w, req, until));
        match tokio::time::timeout_at(until.into(), run).await {
            Ok(r) => Ok(r),
            Err(_) => {
                // an operation cut short leaves its socket in an unknown state
                self.socks.clear();
                Err(format!(
                    "hook timeout: waited longer than {t:?} (--hook-timeout)"
                ))
            }
        }
    }

    async fn run(&mut self, w: &Worker, req: IoRequest, until: Instant) -> IoResult {
        let r = match req {
            IoRequest::Sleep(d) => {
                tokio::time::sleep(d).await;
                Ok(IoResult::Done)
            }
            IoRequest::Http(call) => limit(call.timeout, http(w, call, until)).await,
            IoRequest::Connect(c) => self.connect(w, c).await,
            IoRequest::Send {
                sock,
                data,
                timeout,
            } => match self.sock(sock) {
                Ok(s) => {
                    let n = data.len();
                    let up = s.held.get();
                    limit(timeout, async {
                        up.stream.write_all(data).await.map_err(io_text)?;
                        Ok(IoResult::Sent(n))
                    })
                    .await
                }
                Err(e) => Err(e),
            },
            IoRequest::Recv { sock, how, timeout } => {
                let max = w.cfg.max_plugin_body;
                match self.sock(sock) {
                    Ok(s) => {
                        let until = op_until(timeout, until);
                        receive(s.held.get(), &how, until, max).await
                    }
                    Err(e) => Err(e),
                }
            }
            IoRequest::Close(id) => {
                self.socks.retain(|(i, _)| *i != id);
                Ok(IoResult::Done)
            }
            IoRequest::Keepalive(id) => self.keepalive(id),
        };
        r.unwrap_or_else(IoResult::Failed)
    }

    fn sock(&mut self, id: u32) -> Result<&mut Sock, String> {
        self.socks
            .iter_mut()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s)
            .ok_or_else(|| "closed".to_string())
    }

    async fn connect(&mut self, w: &Worker, c: ConnectCall) -> Result<IoResult, String> {
        let key: SockKey = (c.host.clone(), c.port, c.tls);
        let (up, reused) = match take_idle(&key) {
            Some(i) => (i.up, i.reused + 1),
            None => {
                let t = c.timeout.unwrap_or(w.timeouts.connect);
                let name = c.sni.as_deref().unwrap_or(&c.host);
                (
                    open(w, &c.host, c.port, c.tls, name, t, Alpn::Http1).await?,
                    0,
                )
            }
        };
        let id = NEXT_ID.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1).max(1));
            id
        });
        self.socks.push((
            id,
            Sock {
                held: Held(Some(up)),
                key,
            },
        ));
        Ok(IoResult::Socket { id, reused })
    }

    fn keepalive(&mut self, id: u32) -> Result<IoResult, String> {
        let Some(pos) = self.socks.iter().position(|(i, _)| *i == id) else {
            return Err("closed".into());
        };
        let (_, mut s) = self.socks.swap_remove(pos);
        let up = s.held.0.take().expect("held connection");
        put_idle(s.key, up, 0);
        Ok(IoResult::Done)
    }
}

/// `fut` within the operation's own `timeout`, if it has one.
async fn limit(
    timeout: Option<Duration>,
    fut: impl std::future::Future<Output = Result<IoResult, String>>,
) -> Result<IoResult, String> {
    match timeout {
        None => fut.await,
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .unwrap_or_else(|_| Err("timeout".into())),
    }
}

fn op_until(timeout: Option<Duration>, hook_until: Instant) -> Instant {
    match timeout {
        Some(t) => (Instant::now() + t).min(hook_until),
        None => hook_until,
    }
}

fn io_text(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut => "timeout".into(),
        _ => e.to_string(),
    }
}

fn take_idle(key: &SockKey) -> Option<Idle> {
    KEEP.with(|k| {
        let mut map = k.borrow_mut();
        let list = map.get_mut(key)?;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < KEEP_IDLE && i.up.stream.is_idle_and_open() {
                return Some(i);
            }
            i.up.stream.shutdown(Shutdown::Both);
        }
        None
    })
}

fn put_idle(key: SockKey, up: Upstream, reused: u32) {
    if !up.buf.is_empty() {
        // unread bytes: the next user would read someone else's reply
        up.stream.shutdown(Shutdown::Both);
        return;
    }
    KEEP.with(|k| {
        let mut map = k.borrow_mut();
        let list = map.entry(key).or_default();
        if list.len() >= KEEP_MAX {
            list.remove(0).up.stream.shutdown(Shutdown::Both);
        }
        list.push(Idle {
            up,
            since: Instant::now(),
            reused,
        });
    });
}

/// A new connection; TLS verified as for proxied traffic, with `name` for SNI.
async fn open(
    w: &Worker,
    host: &str,
    port: u16,
    tls: bool,
    name: &str,
    t: Duration,
    alpn: Alpn,
) -> Result<Upstream, String> {
    let up = connect(w.backend, host, port, t, None)
        .await
        .map_err(connect_text)?;
    if !tls {
        return Ok(up);
    }
    secure(up, name, t, &w.tls, alpn)
        .await
        .map_err(|e| match e {
            ConnectError::Timeout(_) => "timeout".to_string(),
            other => format!("tls: {}", other.text()),
        })
}

/// The error strings of the API: "timeout", "connect refused", "dns: ...".
fn connect_text(e: ConnectError) -> String {
    match e {
        ConnectError::Timeout(_) => "timeout".into(),
        ConnectError::Resolve(t) => format!("dns: {t}"),
        ConnectError::Connect(t) if t.contains("connection refused") => "connect refused".into(),
        ConnectError::Connect(t) => format!("connect: {t}"),
        ConnectError::Tls(t) => format!("tls: {t}"),
    }
}

/// Reads into `up.buf` until `how` is satisfied; the bytes, without delimiter.
async fn receive(
    up: &mut Upstream,
    how: &Recv,
    until: Instant,
    max: usize,
) -> Result<IoResult, String> {
    loop {
        let got = match how {
            Recv::Bytes(n) if up.buf.len() >= *n => Some(up.buf.split_to(*n)),
            Recv::Line => up.buf.iter().position(|&b| b == b'\n').map(|i| {
                let mut l = up.buf.split_to(i + 1);
                l.truncate(i);
                if l.last() == Some(&b'\r') {
                    l.truncate(i - 1);
                }
                l
            }),
            Recv::Until(d) => find(&up.buf, d).map(|i| {
                let l = up.buf.split_to(i);
                let _ = up.buf.split_to(d.len());
                l
            }),
            _ => None,
        };
        if let Some(b) = got {
            return Ok(IoResult::Data(b.freeze()));
        }
        if up.buf.len() > max {
            return Err("too large".into());
        }
        let left = until.saturating_duration_since(Instant::now());
        match read_some(&up.stream, &mut up.buf, left).await {
            Ok(0) if *how == Recv::All && up.buf.len() > max => return Err("too large".into()),
            Ok(0) if *how == Recv::All => return Ok(IoResult::Data(up.buf.split().freeze())),
            Ok(0) => return Err("closed".into()),
            Ok(_) => {}
            Err(e) => return Err(io_text(e)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `luring.http_request`: HTTP/1.1 over the worker's upstream pool.
async fn http(w: &Worker, call: HttpCall, until: Instant) -> Result<IoResult, String> {
    let t = Target::parse_absolute(call.url.as_bytes())
        .filter(|t| t.scheme == "http" || t.scheme == "https")
        .ok_or_else(|| format!("bad url '{}'", call.url))?;
    let key = Key {
        scheme: t.scheme.as_str().into(),
        host: t.host.as_str().into(),
        port: t.port,
    };
    let https = t.scheme == "https";
    // an https server that chose h2 before gets the request on that connection
    if let Some(lazy) = https
        .then(|| H2_SUBS.with(|m| m.borrow().get(&key).cloned()))
        .flatten()
    {
        let left = until.saturating_duration_since(Instant::now());
        let ct = w.timeouts.connect.min(left);
        let limit = up2::header_list_limit(w.cfg.max_head_size);
        let connect = open(w, &t.host, t.port, true, &t.host, ct, Alpn::H2OrHttp1);
        let sender = lazy.sender(connect, 0, limit).await?;
        return h2_exchange(w, sender, &call, &t, until).await;
    }
    let head = request_head(&call, &t);
    // a pooled connection the upstream closed meanwhile gets one retry on a new one
    for attempt in 0..2 {
        let pooled = if attempt == 0 {
            upstream::reuse(w, &key)
        } else {
            None
        };
        let reused = pooled.is_some();
        let up = match pooled {
            Some(u) => u,
            None => {
                let left = until.saturating_duration_since(Instant::now());
                let ct = w.timeouts.connect.min(left);
                let alpn = if https { Alpn::H2OrHttp1 } else { Alpn::Http1 };
                let up = open(w, &t.host, t.port, https, &t.host, ct, alpn).await?;
                if https && crate::proxy::worker_tls::chose_h2(&up.stream) {
                    // the server speaks h2: this connection becomes the worker's h2
                    // session to it, for this request and the next ones
                    let lazy = Rc::new(up2::Lazy::default());
                    H2_SUBS.with(|m| m.borrow_mut().insert(key.clone(), lazy.clone()));
                    let limit = up2::header_list_limit(w.cfg.max_head_size);
                    let sender = lazy.sender(async { Ok(up) }, 0, limit).await?;
                    return h2_exchange(w, sender, &call, &t, until).await;
                }
                up
            }
        };
        let mut held = Held(Some(up));
        match exchange(w, held.get(), &call, head.clone(), until).await {
            Ok((r, keep)) => {
                if keep {
                    let up = held.0.take().expect("held connection");
                    w.pool.put(key, up);
                }
                return Ok(r);
            }
            Err(Retry::Stale) if reused => continue,
            Err(Retry::Stale) => return Err("upstream closed the connection".into()),
            Err(Retry::Fail(e)) => return Err(e),
        }
    }
    Err("upstream closed the connection".into())
}

/// One request and its whole response over the worker's h2 session to the server.
async fn h2_exchange(
    w: &Worker,
    sender: h2::client::SendRequest<Bytes>,
    call: &HttpCall,
    t: &Target,
    until: Instant,
) -> Result<IoResult, String> {
    let mut b = http::Request::builder()
        .method(call.method.as_str())
        .uri(format!("https://{}{}", t.authority(), t.path));
    for (n, v) in &call.headers {
        // connection-specific fields have no place in h2 (RFC 9113 8.2.2)
        let skip = [
            "host",
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "content-length",
        ];
        if skip.iter().any(|s| n.eq_ignore_ascii_case(s.as_bytes())) {
            continue;
        }
        b = b.header(&n[..], &v[..]);
    }
    if !call.body.is_empty() {
        b = b.header("content-length", call.body.len());
    }
    let req = b.body(()).map_err(|e| format!("bad request: {e}"))?;
    let h2_err = |e: h2::Error| format!("h2: {e}");
    let run = async {
        let mut sender = sender.ready().await.map_err(h2_err)?;
        let (resp, mut tx) = sender
            .send_request(req, call.body.is_empty())
            .map_err(h2_err)?;
        if !call.body.is_empty() {
            tx.send_data(call.body.clone(), true).map_err(h2_err)?;
        }
        let resp = resp.await.map_err(h2_err)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_ref()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect();
        let mut rx = resp.into_body();
        let mut body = BytesMut::new();
        while let Some(d) = rx.data().await {
            let d = d.map_err(h2_err)?;
            let _ = rx.flow_control().release_capacity(d.len());
            body.extend_from_slice(&d);
            if body.len() > w.cfg.max_plugin_body {
                return Err("response body too large".to_string());
            }
        }
        Ok(IoResult::Http {
            status,
            headers,
            body: body.freeze(),
        })
    };
    match tokio::time::timeout_at(until.into(), run).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

enum Retry {
    /// Closed before any response byte.
    Stale,
    Fail(String),
}

fn request_head(call: &HttpCall, t: &Target) -> Bytes {
    let mut h = BytesMut::with_capacity(256);
    let default_port = if t.scheme == "https" { 443 } else { 80 };
    let host = if t.port == default_port {
        t.host.clone()
    } else {
        t.authority()
    };
    h.extend_from_slice(format!("{} {} HTTP/1.1\r\n", call.method, t.path).as_bytes());
    let has = |n: &str| {
        call.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
    };
    if !has("host") {
        h.extend_from_slice(format!("host: {host}\r\n").as_bytes());
    }
    for (n, v) in &call.headers {
        if n.eq_ignore_ascii_case(b"content-length") || n.eq_ignore_ascii_case(b"transfer-encoding")
        {
            continue;
        }
        h.extend_from_slice(n);
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    if !call.body.is_empty() || matches!(call.method.as_str(), "POST" | "PUT" | "PATCH") {
        h.extend_from_slice(format!("content-length: {}\r\n", call.body.len()).as_bytes());
    }
    h.extend_from_slice(b"\r\n");
    h.freeze()
}

/// One request and its whole response on `up`; the result and whether `up` can be
/// pooled.
async fn exchange(
    w: &Worker,
    up: &mut Upstream,
    call: &HttpCall,
    head: Bytes,
    until: Instant,
) -> Result<(IoResult, bool), Retry> {
    let mut parts = vec![head];
    if !call.body.is_empty() {
        parts.push(call.body.clone());
    }
    if up.stream.write_all_vectored(parts).await.is_err() {
        return Err(Retry::Stale);
    }
    let deadline = Deadline::new();
    deadline.arm_at(until.into());
    let (_, resp) =
        match h1::read_response_head(&up.stream, &mut up.buf, &w.upstream_limits, Some(&deadline))
            .await
        {
            Ok(r) => r,
            Err(h1::RespError::Closed) => return Err(Retry::Stale),
            Err(h1::RespError::Timeout) => return Err(Retry::Fail("timeout".into())),
            Err(h1::RespError::Bad(t)) => return Err(Retry::Fail(format!("bad response: {t}"))),
        };
    let kind = response_body_kind(call.method.as_bytes(), &resp)
        .map_err(|e| Retry::Fail(format!("bad response: {e}")))?;
    let mut dec = BodyDecoder::new(kind);
    let mut body = BytesMut::new();
    let max = w.cfg.max_plugin_body;
    loop {
        let d = dec
            .decode(&mut up.buf)
            .map_err(|e| Retry::Fail(e.to_string()))?;
        for p in d.data {
            body.extend_from_slice(&p);
        }
        // checked before `done`: a body that came whole in one read counts too
        if body.len() > max {
            return Err(Retry::Fail("response body too large".into()));
        }
        if d.done {
            break;
        }
        let left = until.saturating_duration_since(Instant::now());
        match read_some(&up.stream, &mut up.buf, left.min(NO_LIMIT)).await {
            Ok(0) if kind == BodyKind::CloseDelimited => break,
            Ok(0) => return Err(Retry::Fail("upstream closed mid-body".into())),
            Ok(_) => {}
            Err(e) => return Err(Retry::Fail(io_text(e))),
        }
    }
    let keep = kind != BodyKind::CloseDelimited
        && resp.version == crate::http::Version::Http11
        && !resp.headers.has_token("connection", "close");
    let headers = resp
        .headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    Ok((
        IoResult::Http {
            status: resp.status,
            headers,
            body: body.freeze(),
        },
        keep,
    ))
}
