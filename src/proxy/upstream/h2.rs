//! The HTTP/2 upstream leg: luring as an h2 client, over TLS that chose h2 or over
//! h2c. One upstream connection carries many streams; a request becomes one stream,
//! its head sent at once and its body as flow control allows.

use crate::http::{Body, Request, Response, Version};
use crate::io::PollStream;
use crate::proxy::h2_stream::{from_h2_head, set_length, upstream_head};
use crate::proxy::upstream::connect::Upstream;
use crate::proxy::upstream::pool::Key;
use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

/// Receive windows both sides of luring offer: larger than the protocol's 64 KiB, so
/// one stream is not limited to 64 KiB per round trip, and small enough that what a
/// connection can make luring hold (data is released only once forwarded) stays at
/// 1 MiB in each direction.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// See [`STREAM_WINDOW`].
pub const CONN_WINDOW: u32 = 1024 * 1024;

/// The client half of an h2 upstream connection; the connection itself must be
/// driven (awaited) for streams to move.
pub type Handshake<T> = (SendRequest<Bytes>, h2::client::Connection<T, Bytes>);

/// Times a request an h2 upstream did not process (its connection took no new stream,
/// or the stream was refused: REFUSED_STREAM, or above a GOAWAY's last stream) is
/// sent again when nothing of its body was lost: RFC 9113 8.7 makes it safe, and
/// HAProxy's default `retries` is 3 as well.
pub const RESENDS: u8 = 3;
/// Largest frame luring accepts from an h2 peer (the protocol's minimum, set
/// explicitly): header blocks over it come as CONTINUATION frames, which h2 counts.
pub const MAX_FRAME: u32 = 16 * 1024;
/// HPACK dynamic table luring lets a peer use (the protocol's default, set explicitly).
pub const HEADER_TABLE: u32 = 4096;
/// Streams reset by the peer before they were accepted that an h2 connection may hold
/// before it is closed with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
pub const PENDING_ACCEPT_RESETS: usize = 20;
/// Streams h2 resets itself for a peer's protocol errors before the connection is
/// closed with GOAWAY ENHANCE_YOUR_CALM (MadeYouReset, CVE-2025-8671).
pub const LOCAL_ERROR_RESETS: usize = 1024;
/// Data h2 buffers per stream for sending; flow control holds the rest back.
pub const SEND_BUFFER: usize = 400 * 1024;
/// Overhead of small DATA frames a peer may make luring buffer before the connection
/// is closed with GOAWAY ENHANCE_YOUR_CALM (empty and tiny DATA floods): h2's automatic
/// value for [`CONN_WINDOW`], half of it.
pub const DATA_FRAME_BUDGET: usize = CONN_WINDOW as usize / 2;
/// How long a stream luring reset is remembered, so the peer's frames still in flight
/// for it are ignored instead of being connection errors (h2's default).
pub const RESET_STREAM_MEMORY: std::time::Duration = std::time::Duration::from_secs(5);

/// The header list limit h2 gets for `--max-head-size` (h2 takes a u32).
pub fn header_list_limit(max_head_size: usize) -> u32 {
    u32::try_from(max_head_size).unwrap_or(u32::MAX)
}

/// Runs the h2 client handshake over `io` with luring's windows and limits: no server
/// push (a PUSH_PROMISE is a connection error), and response header lists up to
/// `max_header_list` bytes (larger resets the stream; h2's default is 16 MiB).
pub async fn handshake<T>(io: T, max_header_list: u32) -> Result<Handshake<T>, h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME)
        .header_table_size(HEADER_TABLE)
        .max_header_list_size(max_header_list)
        .max_pending_accept_reset_streams(PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        .max_send_buffer_size(SEND_BUFFER)
        .data_frame_budget(DATA_FRAME_BUDGET)
        .reset_stream_duration(RESET_STREAM_MEMORY)
        .handshake::<_, Bytes>(io)
        .await
}

/// Runs an h2 upstream connection over `up` as a task of its own until its last
/// handle is gone. The returned flag turns false once the connection has ended.
/// `max_header_list` bounds response header lists (see [`handshake`]).
pub async fn spawn_connection(
    up: Upstream,
    conn_id: u64,
    max_header_list: u32,
) -> Result<Live, String> {
    let stream = Rc::new(up.stream);
    let io = PollStream::new(stream.clone(), up.buf);
    let (send, conn) = handshake(io, max_header_list)
        .await
        .map_err(|e| format!("HTTP/2 handshake with the upstream failed: {e}"))?;
    let alive = Rc::new(Cell::new(true));
    let flag = alive.clone();
    crate::io::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(conn = conn_id, "upstream h2 connection ended: {e}");
        }
        flag.set(false);
        stream.shutdown(Shutdown::Both);
    });
    Ok((send, alive))
}

/// An h2 upstream connection made on first use and made again once it ended or stopped
/// taking new streams (the h2c connection a session opens for gRPC calls to a
/// plaintext upstream, the one that replaces a session's own upstream connection, the
/// worker's connections to h2-only upstreams).
#[derive(Default)]
pub struct Lazy {
    conn: RefCell<Option<Live>>,
    /// Held while a connection is made, so streams that need one at once share it.
    making: tokio::sync::Mutex<()>,
}

/// A running h2 upstream connection's handle, and whether it is still open.
pub type Live = (SendRequest<Bytes>, Rc<Cell<bool>>);

impl Lazy {
    /// The open connection, or a new one over what `connect` opens (`max_header_list`:
    /// see [`handshake`]).
    pub async fn sender<F>(
        &self,
        connect: F,
        conn_id: u64,
        max_header_list: u32,
    ) -> Result<SendRequest<Bytes>, String>
    where
        F: std::future::Future<Output = Result<Upstream, String>>,
    {
        if let Some(up) = self.usable() {
            return Ok(up);
        }
        let _making = self.making.lock().await;
        // another stream may have made one while this one waited
        if let Some(up) = self.usable() {
            return Ok(up);
        }
        let made = spawn_connection(connect.await?, conn_id, max_header_list).await?;
        *self.conn.borrow_mut() = Some(made.clone());
        Ok(made.0)
    }

    /// A handle to the open connection if it still takes streams (no future: callers
    /// check this before they make [`Lazy::sender`]'s, which is several KiB).
    pub fn usable(&self) -> Option<SendRequest<Bytes>> {
        match self.conn.borrow().as_ref() {
            Some((up, alive)) if alive.get() => taking_streams(up),
            _ => None,
        }
    }
}

/// A handle to `up` for a new stream, or None once the connection opens no new
/// streams: the upstream sent GOAWAY (nginx does after 1,000 requests by default) or
/// the connection failed, while the streams it already has may still be running.
pub fn taking_streams(up: &SendRequest<Bytes>) -> Option<SendRequest<Bytes>> {
    // a fresh handle has no stream waiting to open: its readiness is answered at once
    // (an error once the connection has one) and registers no waker
    let mut handle = up.clone();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match handle.poll_ready(&mut cx) {
        std::task::Poll::Ready(Err(_)) => None,
        _ => Some(handle),
    }
}

/// The worker's h2 connections to upstreams that HTTP/1 clients reach over h2 (those
/// that speak only h2), by pool key: having one marks the upstream as h2-only.
pub type H2Only = RefCell<FxHashMap<Key, Rc<Lazy>>>;

/// Why an upstream stream gave no response.
#[derive(Debug)]
pub enum StreamError {
    /// The upstream reset the stream: the client's is reset the same way.
    Reset(Reason),
    /// The connection took no new stream (it was going away or had failed): nothing
    /// was sent, so the request may go again on another connection. Where it does not,
    /// the client's stream is refused (REFUSED_STREAM, retry-safe per RFC 9113 8.7).
    NotSent(String),
    /// Anything else: the status and text of the answer.
    Answer(u16, String),
}

impl StreamError {
    /// The reset a client's h2 stream gets for it, if it is one.
    pub fn reset_reason(&self) -> Option<Reason> {
        match self {
            StreamError::Reset(r) => Some(*r),
            StreamError::NotSent(_) => Some(Reason::REFUSED_STREAM),
            StreamError::Answer(..) => None,
        }
    }

    /// The answer luring makes for it, with the reason hooks see as `msg.error`; None
    /// for a reset, which is passed on as one.
    pub fn flow_error(self) -> Option<crate::proxy::exchange::reply::FlowError> {
        match self {
            StreamError::Reset(_) | StreamError::NotSent(_) => None,
            StreamError::Answer(status, text) => Some(crate::proxy::exchange::reply::FlowError {
                status,
                reason: match status {
                    504 => "upstream timeout".into(),
                    _ => "upstream reset".into(),
                },
                text,
            }),
        }
    }
}

/// The text of a failed upstream stream, as logs, records and error pages give it.
impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Reset(reason) => write!(f, "upstream reset the stream: {reason}"),
            StreamError::NotSent(why) => write!(f, "upstream took no new stream: {why}"),
            StreamError::Answer(_, text) => f.write_str(text),
        }
    }
}

/// A request started as a stream of an upstream connection.
pub struct Started {
    /// Resolves to the response head.
    pub response: ResponseFuture,
    /// Where the request body goes (unused when the request had none).
    pub body: SendStream<Bytes>,
    /// The request carried no body: the stream's sending side is already closed.
    pub no_body: bool,
}

/// Sends `req`'s head as a new stream of `upstream`. A body held whole goes with its
/// length; `te_trailers` puts back the `te: trailers` the pipeline strips (gRPC
/// servers want it, and h2 allows this one value).
pub async fn start(
    upstream: SendRequest<Bytes>,
    req: &mut Request,
    te_trailers: bool,
) -> Result<Started, StreamError> {
    // (a client's own `te: trailers` is left as it is: setting it again would cost the
    // head's kept h2 map)
    if te_trailers && !req.headers.is_single("te", b"trailers") {
        req.headers.set("te", "trailers");
    }
    if let Body::Full(b) = &req.body {
        set_length(&mut req.headers, b);
    }
    let head = upstream_head(req).map_err(|why| StreamError::Answer(502, why))?;
    let not_sent = |e: h2::Error| {
        tracing::debug!("upstream HTTP/2 connection took no new stream: {e}");
        StreamError::NotSent(e.to_string())
    };
    let mut sender = upstream.ready().await.map_err(not_sent)?;
    let no_body = matches!(&req.body, Body::Full(b) if b.is_empty()) && req.trailers.is_none();
    let (response, body) = sender.send_request(head, no_body).map_err(not_sent)?;
    Ok(Started {
        response,
        body,
        no_body,
    })
}

/// Waits up to `timeout` for the response head of a started stream.
pub async fn response(
    fut: ResponseFuture,
    timeout: Duration,
) -> Result<(Response, RecvStream), StreamError> {
    // the request's head went out just before (`start`)
    let t0 = crate::metrics::clock();
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => {
            let r = response_of(r);
            if r.is_ok() {
                crate::metrics::upstream_ttfb(t0);
            }
            r
        }
        Err(_) => {
            let why = format!("upstream did not respond within {timeout:?}");
            Err(StreamError::Answer(504, why))
        }
    }
}

/// The version-agnostic response of what a started stream's response future gave.
pub fn response_of(
    r: Result<http::Response<RecvStream>, h2::Error>,
) -> Result<(Response, RecvStream), StreamError> {
    let resp = r.map_err(|e| match e.reason() {
        // a stream above the last one a GOAWAY names was not processed: retry-safe
        Some(_) if e.is_go_away() && e.is_remote() => StreamError::Reset(Reason::REFUSED_STREAM),
        Some(reason) if e.is_remote() => StreamError::Reset(reason),
        _ => StreamError::Answer(502, format!("upstream: {e}")),
    })?;
    let (parts, rx) = resp.into_parts();
    let ended = rx.is_end_stream();
    let resp = Response {
        status: parts.status.as_u16(),
        reason: String::new(),
        version: Version::Http2,
        headers: from_h2_head(parts.headers),
        body: if ended {
            Body::Full(Bytes::new())
        } else {
            Body::Streaming
        },
        trailers: None,
        error: None,
    };
    Ok((resp, rx))
}
