//! One accepted client connection and what every layer on it shares: the client
//! socket, bytes read ahead, the write limit, and what was last answered (for the
//! access log).

use crate::flows::capture::{BodyTap, Capture};
use crate::http::{Response, Version};
use crate::io::{Deadline, Stream};
use crate::plugin::ConnInfo;
use crate::proxy::body_relay::{self, SendLimit, Sink};
use crate::proxy::byte_tunnel::Peers;
use crate::proxy::exchange::log::TunnelLog;
use crate::proxy::exchange::reply;
use crate::proxy::upstream::Upstream;
use crate::proxy::worker::Worker;
use bytes::{Bytes, BytesMut};
use std::cell::Cell;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One accepted client connection and what its layers share.
pub struct ClientConn {
    /// The worker that owns it.
    pub w: Rc<Worker>,
    /// Context handed to hooks.
    pub info: ConnInfo,
    /// The client socket and its buffers.
    pub io: ClientIo,
    /// The socket's descriptor (TLS keeps it), to check whether the client is still there.
    pub fd: Option<std::os::fd::RawFd>,
    /// Requests read so far (the first waits `--head-timeout`, later ones idle first).
    pub requests: u64,
    /// Limits waiting for upstream response heads.
    pub upstream_deadline: Deadline,
    /// The access-log line of the tunnel this connection became, once it ends.
    pub tunnel_log: Option<TunnelLog>,
}

/// The client side of a connection.
pub struct ClientIo {
    /// The client socket.
    pub stream: Stream,
    /// Client bytes read and not yet consumed.
    pub buf: BytesMut,
    /// Limits reads from the client (head and idle timeouts).
    pub read_deadline: Deadline,
    /// Limits writes to a client that stops reading (`--send-timeout`).
    send_deadline: Deadline,
    send_timeout: Duration,
    /// Status of the last response head sent (0: none yet), for the access log.
    pub status: Cell<u16>,
    /// Bytes of responses written to the client, for the access log.
    pub sent: Cell<u64>,
    /// The last response head sent was an event stream (kept only with metrics).
    pub event_stream: Cell<bool>,
    /// The recording of the exchange in progress, with `--record`.
    pub rec: Cell<Option<Box<Capture>>>,
    /// Bytes read from and written to upstreams for this connection.
    pub upstream_moved: Cell<(u64, u64)>,
    /// The first reason the connection went wrong (connection.on_disconnect `error`).
    pub error: std::cell::RefCell<Option<String>>,
    /// The reason of the last error answer, for the exchange's access-log line.
    pub answer_error: Cell<Option<Box<str>>>,
    /// The connection closes after an exchange that ended whole: the request read to
    /// its end and the response sent, so no lingering is owed (see [`ClientIo::linger`]).
    pub ended_whole: Cell<bool>,
}

/// The read buffer a client connection waits with between requests: most request
/// heads fit, and an idle keep-alive connection holds no more than this (a read in
/// flight owns its buffer until data comes).
pub const IDLE_READ_BUF: usize = 2 * 1024;

impl ClientIo {
    /// Wraps an accepted socket; writes to it may wait `send_timeout` for the client.
    pub fn new(stream: Stream, send_timeout: Duration) -> ClientIo {
        ClientIo {
            stream,
            buf: BytesMut::with_capacity(IDLE_READ_BUF),
            read_deadline: Deadline::new(),
            send_deadline: Deadline::new(),
            send_timeout,
            status: Cell::new(0),
            sent: Cell::new(0),
            event_stream: Cell::new(false),
            rec: Cell::new(None),
            upstream_moved: Cell::new((0, 0)),
            error: std::cell::RefCell::new(None),
            answer_error: Cell::new(None),
            ended_whole: Cell::new(false),
        }
    }

    /// The write limit toward this client.
    pub fn limit(&self) -> SendLimit<'_> {
        Some((&self.send_deadline, self.send_timeout))
    }

    /// The client socket as a relay's destination.
    pub fn sink(&self) -> Sink<'_> {
        Sink {
            stream: &self.stream,
            limit: self.limit(),
        }
    }

    /// Writes to the client within `--send-timeout`; false when that failed.
    pub async fn send(&self, parts: Vec<Bytes>) -> bool {
        let n: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.sent.set(self.sent.get() + n);
        match body_relay::send(&self.stream, parts, self.limit()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("client write failed: {e}");
                false
            }
        }
    }

    /// Writes one buffer; false when that failed.
    pub async fn write(&self, b: Bytes) -> bool {
        self.send(vec![b]).await
    }

    /// Answers with an error naming the reason; the connection is to be closed after.
    pub async fn fail(&self, conn: u64, status: u16, text: &str) {
        tracing::info!(conn, status, "{text}");
        self.send_error(reply::error(status, text), text).await;
    }

    /// Writes an error answer luring made (`why` goes into the recording); the
    /// connection is to be closed after.
    pub async fn send_error(&self, resp: Response, why: &str) {
        self.failed(why);
        self.answer_error.set(Some(why.into()));
        self.status.set(resp.status);
        self.record(|c| c.failed(&resp, why));
        let wire = reply::h1_bytes(resp, false, true, Version::Http11);
        let _ = self.write(wire).await;
    }

    /// Keeps the first reason the connection went wrong, for connection.on_disconnect.
    pub fn failed(&self, why: &str) {
        self.error
            .borrow_mut()
            .get_or_insert_with(|| why.to_string());
    }

    /// Counts an upstream's bytes for this connection, when it is given back.
    pub fn count_upstream(&self, up: &Upstream) {
        let (r, w) = up.moved();
        let (r0, w0) = self.upstream_moved.get();
        self.upstream_moved.set((r0 + r, w0 + w));
    }

    /// Updates the recording of the exchange in progress, when there is one.
    pub fn record(&self, f: impl FnOnce(&mut Capture)) {
        if let Some(mut c) = self.rec.take() {
            f(&mut c);
            self.rec.set(Some(c));
        }
    }

    /// A tap for a body of the recorded exchange, when it is recorded.
    pub fn new_tap(&self) -> Option<BodyTap> {
        let rec = self.rec.take();
        let tap = rec.as_ref().map(|r| r.new_tap());
        self.rec.set(rec);
        tap
    }

    /// Hands a tap from [`ClientIo::new_tap`] back to the recording.
    pub fn put_tap(&self, resp: bool, tap: Option<BodyTap>) {
        if let Some(t) = tap {
            self.record(|r| r.put_tap(resp, t));
        }
    }

    /// The client and `up` as the two ends of a relay, with the bytes each sent early.
    pub fn peers<'a>(&'a mut self, up: &'a mut Upstream) -> Peers<'a> {
        Peers {
            client: &self.stream,
            client_early: std::mem::take(&mut self.buf),
            upstream: &up.stream,
            upstream_early: std::mem::take(&mut up.buf),
        }
    }

    /// Closes the client socket now when that cannot turn into a reset: after a whole
    /// exchange with nothing more read or waiting (nginx closes such connections at
    /// once too). A client that has already sent its FIN (usual for `Connection:
    /// close`: it has the whole response by the time the write's completion comes
    /// back) has nothing unread either. The socket is closed by dropping it, with no
    /// shutdown(2) first: close(2) alone sends the FIN, and no io_uring operation is
    /// in flight on it after a whole exchange. It saves the half-close, a read that
    /// waits for the client's FIN, its buffer and timer, on every connection that
    /// asked for `Connection: close`. Returns the bytes read from and written to the
    /// socket; None: [`ClientIo::linger`] is owed.
    pub fn close_at_once(&mut self) -> Option<(u64, u64)> {
        if self.ended_whole.get()
            && self.buf.is_empty()
            && self.stream.tls().is_none()
            && self.stream.has_nothing_unread()
        {
            let moved = self.stream.bytes_moved();
            self.stream = Stream::Detached;
            return Some(moved);
        }
        None
    }

    /// Closes gracefully: send FIN, then read and discard what the client still sends
    /// (bounded), so an unread request body does not turn our close into a reset that
    /// would destroy the response in flight (nginx's lingering close). Returns the
    /// bytes read from and written to the client socket.
    pub async fn linger(&mut self) -> (u64, u64) {
        self.stream.close_write().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut budget: usize = 64 * 1024 * 1024;
        let mut buf = BytesMut::with_capacity(body_relay::READ_BUF);
        // under TLS the socket's bytes are drained as they are: nothing after our
        // close_notify needs decrypting, and a session that already failed must not
        // be fed to rustls again
        let raw = self.stream.tls().map_or(&self.stream, |t| t.inner());
        while budget > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            buf.clear();
            match body_relay::read_some(raw, &mut buf, left).await {
                Ok(n) if n > 0 => budget = budget.saturating_sub(n),
                _ => break,
            }
        }
        self.stream.shutdown(Shutdown::Both);
        self.stream.bytes_moved()
    }
}
