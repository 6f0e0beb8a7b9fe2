//! Metrics: counters kept per worker thread in plain cells, copied into a [`Snapshot`]
//! when a scrape asks, merged and written as Prometheus text by [`server`].
//!
//! A worker is one OS thread, so a thread-local is its shard: the request path bumps a
//! `Cell` (no lock, no atomic, no cache line shared with another core) and never sees a
//! scrape. The scrape thread sends each worker a message; the worker's metrics task
//! copies its cells and answers (docs/decisions.md, "Metrics").

mod expose;
mod hist;
pub mod server;
mod snapshot;

pub use hist::{Hist, HistSnap, HOOK_BOUNDS, REQUEST_BOUNDS};
pub use snapshot::{HookSnap, Snapshot};

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

/// What the requests counter calls a request's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// An HTTP/1.x exchange (CONNECT included).
    Http1,
    /// An HTTP/2 stream.
    H2,
    /// An HTTP/1.1 exchange upgraded to WebSocket (status 101).
    Ws,
    /// A gRPC or gRPC-web call (request content-type application/grpc*).
    Grpc,
    /// A server-sent event stream (response content-type text/event-stream), either version.
    Sse,
    /// A SOCKS5 connect request.
    Socks5,
    /// A connection relayed as raw bytes.
    Raw,
}

impl Proto {
    /// Every protocol, in label order.
    pub const ALL: [Proto; 7] = [
        Proto::Http1,
        Proto::H2,
        Proto::Ws,
        Proto::Grpc,
        Proto::Sse,
        Proto::Socks5,
        Proto::Raw,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        ["http1", "h2", "ws", "grpc", "sse", "socks5", "raw"][self as usize]
    }
}

/// Status class labels: index 0 is "none" (no answer was sent), then 1xx..5xx.
pub const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why an upstream connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The connect was refused (or failed otherwise at the socket level).
    Refused,
    /// The name did not resolve.
    Dns,
    /// Connect or TLS handshake took longer than `--connect-timeout`.
    Timeout,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
}

/// Reason labels, in [`UpstreamFailure`] order.
pub const FAILURE_REASONS: [&str; 4] = ["refused", "dns", "timeout", "tls"];

/// TLS handshake sides, in index order.
pub const TLS_SIDES: [&str; 2] = ["client", "upstream"];

/// One hook's counters and timing, shared by every engine of a worker that runs a hook
/// of the same plugin and name (so a reload keeps counting where it was).
#[derive(Debug)]
pub struct HookStat {
    /// Plugin file name.
    pub plugin: Rc<str>,
    /// Hook name (from its options, or file:line).
    pub hook: Rc<str>,
    /// The row, as "protocol.event".
    pub event: Rc<str>,
    /// Calls started.
    pub calls: Cell<u64>,
    /// Calls that raised an error.
    pub errors: Cell<u64>,
    /// Calls interrupted by the budget.
    pub budget_interrupts: Cell<u64>,
    /// Calls stopped by the plugin memory limit.
    pub memory_interrupts: Cell<u64>,
    /// Actions demoted to CONTINUE.
    pub demotions: Cell<u64>,
    /// Time spent running the hook (each resume timed separately).
    pub time: Hist<{ HOOK_BOUNDS.len() }>,
}

impl HookStat {
    /// Times one run of the hook that started at `t0` (None: metrics are off).
    #[inline]
    pub fn observe(&self, t0: Option<Instant>) {
        if let Some(t0) = t0 {
            self.time.observe(&HOOK_BOUNDS, t0.elapsed().as_secs_f64());
        }
    }
}

/// A worker's counters that the proxy's own structures do not already keep.
#[derive(Default)]
pub(crate) struct Local {
    enabled: Cell<bool>,
    requests: [[Cell<u64>; 6]; 7],
    request_time: [Hist<{ REQUEST_BOUNDS.len() }>; 7],
    upstream_failures: [Cell<u64>; 4],
    upstream_ttfb: Hist<{ REQUEST_BOUNDS.len() }>,
    tls_ok: [Cell<u64>; 2],
    tls_failed: [Cell<u64>; 2],
    leaf_lookups: Cell<u64>,
    leaves_minted: Cell<u64>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    hooks: RefCell<Vec<Rc<HookStat>>>,
}

thread_local! {
    pub(crate) static LOCAL: Local = Local::default();
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Turns timing on for this thread (a worker of a proxy started with `--metrics`).
pub fn enable() {
    LOCAL.with(|l| l.enabled.set(true));
}

/// Now, when this thread keeps timings; None otherwise, so timing costs nothing when
/// metrics are off.
#[inline]
pub fn clock() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Whether this worker keeps metrics (`--metrics`).
#[inline]
pub fn enabled() -> bool {
    LOCAL.with(|l| l.enabled.get())
}

/// Whether a response head says "event stream", for the `sse` protocol label; false
/// without metrics, and the content type is looked up only when it is counted.
pub fn event_stream<'a>(response_content_type: impl FnOnce() -> Option<&'a [u8]>) -> bool {
    enabled()
        && response_content_type()
            .is_some_and(|c| c.len() >= 17 && c[..17].eq_ignore_ascii_case(b"text/event-stream"))
}

fn class_index(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => (s / 100) as usize,
        _ => 0,
    }
}

/// Counts a finished request; `t0` from [`clock`] times it.
pub fn request(proto: Proto, status: Option<u16>, t0: Option<Instant>) {
    LOCAL.with(|l| {
        bump(&l.requests[proto as usize][class_index(status)]);
        if let Some(t0) = t0 {
            l.request_time[proto as usize].observe(&REQUEST_BOUNDS, t0.elapsed().as_secs_f64());
        }
    });
}

/// The protocol of an HTTP exchange from its version, request content-type and status.
pub fn http_proto(h2: bool, content_type: Option<&[u8]>, status: u16, sse: bool) -> Proto {
    let grpc = content_type.is_some_and(|c| c.starts_with(b"application/grpc"));
    match (grpc, status, h2) {
        (true, _, _) => Proto::Grpc,
        (false, 101, false) => Proto::Ws,
        _ if sse => Proto::Sse,
        (false, _, true) => Proto::H2,
        (false, _, false) => Proto::Http1,
    }
}

/// Counts a failed upstream connection.
pub fn upstream_failed(why: UpstreamFailure) {
    LOCAL.with(|l| bump(&l.upstream_failures[why as usize]));
}

/// Times an upstream's first response byte (its head) since `t0`.
pub fn upstream_ttfb(t0: Option<Instant>) {
    if let Some(t0) = t0 {
        LOCAL.with(|l| {
            l.upstream_ttfb
                .observe(&REQUEST_BOUNDS, t0.elapsed().as_secs_f64())
        });
    }
}

/// Counts a TLS handshake; `upstream` tells the side, `ok` whether it succeeded.
pub fn tls_handshake(upstream: bool, ok: bool) {
    LOCAL.with(|l| {
        let side = upstream as usize;
        bump(if ok {
            &l.tls_ok[side]
        } else {
            &l.tls_failed[side]
        });
    });
}

/// Counts a leaf certificate asked for by a client handshake.
pub fn leaf_lookup() {
    LOCAL.with(|l| bump(&l.leaf_lookups));
}

/// Counts a leaf certificate minted (a cache miss).
pub fn leaf_minted() {
    LOCAL.with(|l| bump(&l.leaves_minted));
}

/// Adds a finished client connection's byte counts.
pub fn client_bytes(bytes_in: u64, bytes_out: u64) {
    LOCAL.with(|l| {
        l.bytes_in.set(l.bytes_in.get() + bytes_in);
        l.bytes_out.set(l.bytes_out.get() + bytes_out);
    });
}

/// The counters of hook `hook` of `plugin` on this thread, created on first use. An
/// engine asks once per hook when it loads, then bumps the cells it was given.
pub fn hook_stat(plugin: &str, hook: &str, event: &str) -> Rc<HookStat> {
    LOCAL.with(|l| {
        let mut hooks = l.hooks.borrow_mut();
        if let Some(h) = hooks
            .iter()
            .find(|h| &*h.plugin == plugin && &*h.hook == hook && &*h.event == event)
        {
            return h.clone();
        }
        let h = Rc::new(HookStat {
            plugin: Rc::from(plugin),
            hook: Rc::from(hook),
            event: Rc::from(event),
            calls: Cell::new(0),
            errors: Cell::new(0),
            budget_interrupts: Cell::new(0),
            memory_interrupts: Cell::new(0),
            demotions: Cell::new(0),
            time: Hist::default(),
        });
        hooks.push(h.clone());
        h
    })
}

/// Adds one to a hook counter.
#[inline]
pub fn inc(c: &Cell<u64>) {
    bump(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_protocols() {
        assert_eq!(class_index(None), 0);
        assert_eq!(class_index(Some(204)), 2);
        assert_eq!(class_index(Some(502)), 5);
        assert_eq!(class_index(Some(42)), 0);
        assert_eq!(http_proto(false, None, 101, false), Proto::Ws);
        assert_eq!(
            http_proto(true, Some(b"application/grpc+proto"), 200, false),
            Proto::Grpc
        );
        assert_eq!(http_proto(true, Some(b"text/plain"), 200, false), Proto::H2);
        assert_eq!(http_proto(false, None, 200, false), Proto::Http1);
        assert_eq!(http_proto(true, None, 200, true), Proto::Sse);
    }

    #[test]
    fn hook_stats_are_shared_by_name() {
        let a = hook_stat("p.lua", "h", "http.on_request");
        let b = hook_stat("p.lua", "h", "http.on_request");
        let c = hook_stat("p.lua", "h", "http.on_response");
        inc(&a.calls);
        assert_eq!(b.calls.get(), 1);
        assert_eq!(c.calls.get(), 0);
    }
}
