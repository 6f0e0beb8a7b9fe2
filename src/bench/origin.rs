//! `luring bench origin`: serves the recorded responses over HTTP/1.1 keep-alive (and
//! hands h2c connections to origin_h2, WebSocket upgrades to the replay script).
//!
//! Plain tokio, one current-thread runtime per thread on its own SO_REUSEPORT socket:
//! the origin must never be the bottleneck, and this shape (luring's own, without
//! io_uring) costs no work stealing or cross-thread wakeups. Responses are encoded
//! once at start; serving one is a key lookup and a copy into the write buffer.

use super::h1::{encode_response, EncodedResponse, Request};
use super::matching::{Lookup, MatchOptions, ReplayTable, RequestView};
use crate::flows::record::{HttpFlow, ResponseRec, WsMessageRec};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// The origin's path that answers its counters as JSON instead of a recorded response.
pub const STATS_PATH: &str = "/__luring_bench/stats";

/// How the origin runs.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Threads, each with its own listening socket.
    pub threads: usize,
    /// Matching rules.
    pub matching: MatchOptions,
    /// Status of the answer to a request with no recorded response.
    pub unmatched_status: u16,
    /// Wait the recorded server time (response head minus request start) before
    /// answering (`--origin-delay recorded`); by default answer at once.
    pub recorded_delay: bool,
}

/// Requests the origin answered, by outcome.
#[derive(Debug, Default)]
pub struct Counters {
    /// Answered with a recorded response.
    pub served: AtomicU64,
    /// No recorded request matched.
    pub unmatched: AtomicU64,
    /// Matched, but every response for the key was served already (`--pop`).
    pub exhausted: AtomicU64,
    /// Requests that could not be parsed.
    pub bad: AtomicU64,
    /// Requests that came over HTTP/2 (h2c or h2), whatever their outcome.
    pub h2: AtomicU64,
    /// Requests that came over TLS (HTTP/1.1 or h2), whatever their outcome.
    pub tls: AtomicU64,
}

impl Counters {
    /// The counters as a JSON object.
    pub fn json(&self) -> String {
        format!(
            "{{\"served\":{},\"unmatched\":{},\"exhausted\":{},\"bad\":{},\"h2\":{},\"tls\":{}}}",
            self.served.load(Relaxed),
            self.unmatched.load(Relaxed),
            self.exhausted.load(Relaxed),
            self.bad.load(Relaxed),
            self.h2.load(Relaxed),
            self.tls.load(Relaxed)
        )
    }
}

/// The shared state of all origin threads.
pub struct Origin {
    // one lock for the table: lookups are a hash probe, and popping must be exact
    // across threads (a response served once is served once in total)
    table: Mutex<ReplayTable>,
    responses: Vec<EncodedResponse>,
    /// The recorded responses (HTTP/2 serves them from fields, not HTTP/1 bytes).
    pub recorded: Vec<ResponseRec>,
    /// The recorded WebSocket messages of each response (empty unless a 101).
    pub(super) ws: Vec<Vec<WsMessageRec>>,
    /// The recorded server time of each response, when `--origin-delay recorded`.
    delays: Vec<std::time::Duration>,
    unmatched_status: u16,
    /// What was answered.
    pub counters: Counters,
}

impl Origin {
    /// Indexes the flows that have a response.
    pub fn new(flows: &[HttpFlow], cfg: &OriginConfig) -> Origin {
        let mut table = ReplayTable::new(cfg.matching.clone());
        let mut responses = Vec::new();
        let mut recorded = Vec::new();
        let mut ws = Vec::new();
        let mut delays = Vec::new();
        for f in flows {
            let Some(resp) = &f.response else { continue };
            let headers: Vec<(&[u8], &[u8])> = f
                .request
                .headers
                .iter()
                .map(|(n, v)| (&n[..], &v[..]))
                .collect();
            let view = RequestView {
                method: &f.request.method,
                authority: &f.request.authority,
                target: &f.request.path,
                headers: &headers,
                body: &f.request.body.data,
            };
            table.insert(&view, responses.len());
            responses.push(encode_response(resp));
            recorded.push(resp.clone());
            ws.push(f.websocket.clone());
            let t = f.times;
            let server_ns = if cfg.recorded_delay && t.request_start > 0 {
                t.response_head.saturating_sub(t.request_start)
            } else {
                0
            };
            delays.push(std::time::Duration::from_nanos(server_ns));
        }
        Origin {
            table: Mutex::new(table),
            responses,
            recorded,
            ws,
            delays,
            unmatched_status: cfg.unmatched_status,
            counters: Counters::default(),
        }
    }

    /// Recorded responses and distinct keys.
    pub fn size(&self) -> (usize, usize) {
        let keys = self.table.lock().map_or(0, |t| t.keys());
        (self.responses.len(), keys)
    }

    /// Appends the answer to `req` to `out`; Some(response) when it was a recorded 101
    /// to a WebSocket upgrade, whose messages are to be replayed next.
    pub fn answer(&self, req: &Request, out: &mut Vec<u8>) -> Option<usize> {
        let mut ignored = std::time::Duration::ZERO;
        self.answer_delayed(req, out, &mut ignored)
    }

    /// `answer`, adding the response's recorded server time to `delay`.
    pub fn answer_delayed(
        &self,
        req: &Request,
        out: &mut Vec<u8>,
        delay: &mut std::time::Duration,
    ) -> Option<usize> {
        if req.target == STATS_PATH {
            let j = self.counters.json();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                j.len()
            );
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(j.as_bytes());
            return None;
        }
        let view = RequestView {
            method: req.method,
            authority: req.authority(),
            target: req.origin_form(),
            headers: &req.headers,
            body: &req.body,
        };
        match self.lookup(&view) {
            Ok(i) => {
                *delay += self.delay(i);
                let r = &self.responses[i];
                let upgrade = req
                    .header("upgrade")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
                let ws = upgrade && self.recorded[i].status == 101;
                let key = req.header("sec-websocket-key");
                let head = ws
                    .then(|| super::ws_replay::head_for_key(&self.recorded[i], key))
                    .flatten();
                out.extend_from_slice(head.as_ref().unwrap_or(&r.head));
                if req.method != "HEAD" {
                    out.extend_from_slice(&r.body);
                }
                ws.then_some(i)
            }
            Err(what) => {
                self.miss(&what, out);
                None
            }
        }
    }

    /// The recorded response for `view` (an index into `recorded`), or why there is
    /// none; counted either way.
    pub fn lookup(&self, view: &RequestView) -> Result<usize, String> {
        let found = match self.table.lock() {
            Ok(mut t) => t.lookup(view),
            Err(_) => Lookup::NoMatch,
        };
        let why = match found {
            Lookup::Hit(i) => {
                self.counters.served.fetch_add(1, Relaxed);
                return Ok(i);
            }
            Lookup::NoMatch => {
                self.counters.unmatched.fetch_add(1, Relaxed);
                "no recorded request matches"
            }
            Lookup::Exhausted => {
                self.counters.exhausted.fetch_add(1, Relaxed);
                "every recorded response was served (--pop)"
            }
        };
        let what = format!("{why}: {} {}{}", view.method, view.authority, view.target);
        // the reason travels in a header: keep it to visible ASCII
        Err(what
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(512)
            .collect())
    }

    /// How long to wait before sending response `i` (zero unless asked).
    pub fn delay(&self, i: usize) -> std::time::Duration {
        self.delays.get(i).copied().unwrap_or_default()
    }

    /// Status of the answer to an unmatched request.
    pub fn unmatched_status(&self) -> u16 {
        self.unmatched_status
    }

    fn miss(&self, what: &str, out: &mut Vec<u8>) {
        let body = format!("{what}\n");
        let head = format!(
            "HTTP/1.1 {} Unmatched\r\nx-luring-bench-unmatched: {what}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            self.unmatched_status,
            body.len()
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::h1::parse_request;
    use super::*;

    fn origin(pop: bool) -> Origin {
        let cfg = OriginConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            threads: 1,
            matching: MatchOptions {
                pop,
                ..Default::default()
            },
            unmatched_status: 404,
            recorded_delay: false,
        };
        Origin::new(&super::super::sample::flows(), &cfg)
    }

    fn ask(o: &Origin, wire: &[u8]) -> Vec<u8> {
        let (req, _) = parse_request(wire).unwrap().unwrap();
        let mut out = Vec::new();
        o.answer(&req, &mut out);
        out
    }

    #[test]
    fn answers_recorded_heads_misses_and_counters() {
        let o = origin(true);
        let out = ask(
            &o,
            b"GET /api/items?page=1 HTTP/1.1\r\nHost: shop.example:443\r\n\r\n",
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"items\":[1,2,3]}"
        );
        let head = ask(&o, b"HEAD / HTTP/1.1\r\nHost: shop.example\r\n\r\n");
        assert!(
            head.ends_with(b"Content-Length: 1024\r\n\r\n"),
            "HEAD: no body"
        );
        let again = ask(
            &o,
            b"GET /api/items?page=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        );
        assert!(again.starts_with(b"HTTP/1.1 404 Unmatched\r\nx-luring-bench-unmatched: every recorded response was served (--pop): GET shop.example/api/items?page=1\r\n"));
        let miss = ask(&o, b"GET /x HTTP/1.1\r\nHost: other.example\r\n\r\n");
        assert!(miss.starts_with(b"HTTP/1.1 404 Unmatched\r\n"));
        let stats = ask(&o, b"GET /__luring_bench/stats HTTP/1.1\r\n\r\n");
        assert!(stats.ends_with(
            b"{\"served\":2,\"unmatched\":1,\"exhausted\":1,\"bad\":0,\"h2\":0,\"tls\":0}"
        ));
    }
}
