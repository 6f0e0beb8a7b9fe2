//! A flow being recorded, as cheaply as the worker can hold it: the heads are written
//! as MessagePack while they pass (redacted, no strings or header lists kept), body
//! pieces are shared `Bytes` (no copy), and the writer thread puts the record together.

use super::record::{now_ns, RawChunkRec, Times, TlsRec, WsMessageRec};
use crate::http::{Body, Headers, Request, Response};
use crate::proto::http1::{BodyDecoder, BodyKind};
use bytes::Bytes;
use serde_bytes::ByteBuf;

mod msgpack;

/// The body pieces of one message, kept up to a limit while the message streams.
#[derive(Debug, Default)]
pub struct BodyTap {
    /// The first piece apart: a body in one piece (nearly every small one) needs no list.
    first: Option<Bytes>,
    more: Vec<Bytes>,
    kept: usize,
    max: usize,
    size: u64,
    /// Set when the pieces are chunked wire bytes: it finds the payload among them.
    chunked: Option<BodyDecoder>,
    trailers: Option<Headers>,
}

impl BodyTap {
    /// A tap keeping up to `max` payload bytes.
    pub fn new(max: usize) -> Self {
        BodyTap {
            max,
            ..Default::default()
        }
    }

    /// Says the pieces to come are the wire bytes of a body of `kind` (chunked framing
    /// is then taken off them as they come).
    pub fn wire(&mut self, kind: BodyKind) {
        if kind == BodyKind::Chunked {
            self.chunked = Some(BodyDecoder::new(kind));
        }
    }

    /// Sees the next piece of the body.
    pub fn see(&mut self, piece: &Bytes) {
        match self.chunked.as_mut() {
            None => self.keep(piece.clone()),
            Some(dec) => {
                let mut payload = Vec::new();
                // a framing fault is the relay's to report; the tap keeps what came before
                let _ = dec.follow(piece, |p| payload.push(p));
                if let Some(t) = dec.take_trailers() {
                    self.trailers = Some(t);
                }
                for p in payload {
                    self.keep(p);
                }
            }
        }
    }

    fn keep(&mut self, p: Bytes) {
        self.size += p.len() as u64;
        let room = self.max - self.kept;
        if room == 0 || p.is_empty() {
            return;
        }
        let p = if p.len() > room { p.slice(..room) } else { p };
        self.kept += p.len();
        match self.first {
            None => self.first = Some(p),
            Some(_) => self.more.push(p),
        }
    }

    /// Trailers that came apart from the body (HTTP/2).
    pub fn set_trailers(&mut self, t: Headers) {
        self.trailers = Some(t);
    }

    /// Trailers seen in chunked wire bytes.
    pub fn take_trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }

    /// The pieces kept, in order.
    fn pieces(&self) -> impl Iterator<Item = &Bytes> {
        self.first.iter().chain(&self.more)
    }
}

/// Header names whose values are recorded as [`REDACTED`].
#[derive(Debug, Default)]
pub struct Redact {
    names: Vec<String>,
    /// A bit per name length (63: 63 or more), so most names are passed by one test.
    lens: u64,
}

impl Redact {
    /// The list of names (compared case-insensitively).
    pub fn new(mut names: Vec<String>) -> Self {
        names.iter_mut().for_each(|n| n.make_ascii_lowercase());
        let lens = names.iter().fold(0, |b, n| b | Self::bit(n.as_bytes()));
        Redact { names, lens }
    }

    fn bit(name: &[u8]) -> u64 {
        1 << name.len().min(63)
    }

    /// The value of the field `name` is hidden.
    pub fn hides(&self, name: &[u8]) -> bool {
        if self.lens & Self::bit(name) == 0 {
            return false;
        }
        // the first byte before the whole name: Server is not Cookie, Last-Modified not
        // Authorization
        let first = name.first().map(u8::to_ascii_lowercase);
        self.names.iter().any(|n| {
            let n = n.as_bytes();
            n.len() == name.len() && n.first().copied() == first && n.eq_ignore_ascii_case(name)
        })
    }
}

impl Default for &'static Redact {
    fn default() -> Self {
        static NONE: Redact = Redact {
            names: Vec::new(),
            lens: 0,
        };
        &NONE
    }
}

/// An HTTP flow being recorded.
#[derive(Debug, Default)]
pub struct Capture {
    /// Flow id (ctx.flow_id).
    pub id: u64,
    conn: u64,
    stream: u32,
    /// TLS toward the client, when intercepted or terminated.
    pub client_tls: Option<TlsRec>,
    /// Timestamps (Unix nanoseconds).
    pub times: Times,
    error: Option<String>,
    websocket: Vec<WsMessageRec>,
    websocket_dropped: u64,
    /// Plugins' notes (luring.flow_note).
    pub notes: Vec<(String, String)>,
    /// The request's head fields, then the response's, already MessagePack: written
    /// as the heads pass, so the worker neither copies strings nor holds header lists.
    heads: Vec<u8>,
    /// Where the response's part of `heads` starts, once there is a response.
    resp_at: Option<usize>,
    by_proxy: bool,
    req_trailers: Option<Headers>,
    resp_trailers: Option<Headers>,
    /// The request body as it streams upstream.
    pub req_body: BodyTap,
    /// The response body as it streams to the client.
    pub resp_body: BodyTap,
    ws_bytes: usize,
    max_body: usize,
    redact: &'static Redact,
    /// The client's address, made text on the writer thread.
    pub client: Option<std::net::SocketAddr>,
    /// The upstream's address, made text on the writer thread.
    pub server: Option<std::net::SocketAddr>,
    /// The proxy mode's name.
    pub mode: &'static str,
    /// Plugins asked not to record this flow.
    pub skip: bool,
}

/// Most WebSocket payload bytes kept per flow, as a multiple of the body limit.
const WS_BUDGET_FACTOR: usize = 8;

/// What identifies a flow within a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ids {
    /// Flow id (ctx.flow_id).
    pub id: u64,
    /// The client connection (ctx.conn_id).
    pub conn: u64,
    /// The HTTP/2 stream id, 0 on HTTP/1.
    pub stream: u32,
}

impl Capture {
    /// Starts recording a request as it goes upstream; `max_body` bounds each body and
    /// the `redact` names' values are hidden.
    pub fn start(
        ids: Ids,
        req: &Request,
        max_body: usize,
        redact: &'static Redact,
    ) -> Box<Capture> {
        // filled in place: a struct literal with `..Default::default()` made taps only
        // to drop them, and was copied twice on its way into the box
        let mut c = Box::<Capture>::default();
        c.id = ids.id;
        c.conn = ids.conn;
        c.stream = ids.stream;
        c.req_body.max = max_body;
        c.resp_body.max = max_body;
        c.max_body = max_body;
        c.redact = redact;
        c.heads = Vec::with_capacity(HEADS_CAPACITY);
        c.times.request_start = (req.timestamp_start * 1e9) as u64;
        msgpack::request_head(&mut c.heads, req, redact);
        if let Some(t) = &req.trailers {
            c.req_trailers = Some(t.clone());
        }
        if let Body::Full(b) = &req.body {
            c.req_body.see(b);
        }
        c
    }

    /// The request body, read whole after the capture started (a gRPC-web call's).
    pub fn request_body(&mut self, body: &Body) {
        if let Body::Full(b) = body {
            self.req_body = self.new_tap();
            self.req_body.see(b);
        }
    }

    /// A tap for a body that streams apart from this capture (an HTTP/2 task's).
    pub fn new_tap(&self) -> BodyTap {
        BodyTap::new(self.max_body)
    }

    /// Takes back a tap from [`Capture::new_tap`] that saw the request body (`resp`
    /// false) or the response body; one that saw nothing leaves a whole body alone.
    pub fn put_tap(&mut self, resp: bool, t: BodyTap) {
        if t.size == 0 && t.trailers.is_none() {
            return;
        }
        match resp {
            true => self.resp_body = t,
            false => self.req_body = t,
        }
    }

    /// Starts the response's part of the heads (a later response replaces an earlier).
    fn response_at(&mut self) {
        self.times.response_head = now_ns();
        match self.resp_at {
            Some(at) => self.heads.truncate(at),
            None => self.resp_at = Some(self.heads.len()),
        }
    }

    /// The response head (and body, when it is whole) as it goes to the client.
    pub fn response(&mut self, resp: &Response, by_proxy: bool) {
        self.response_at();
        let (h, v) = (&mut self.heads, resp.version.as_str());
        msgpack::response_head(h, resp.status, &resp.reason, v, &resp.headers, self.redact);
        self.by_proxy = by_proxy;
        self.resp_trailers.clone_from(&resp.trailers);
        if let Body::Full(b) = &resp.body {
            self.resp_body = self.new_tap();
            self.resp_body.see(b);
        }
    }

    /// The upstream switched protocols: its 101 head.
    pub fn switched(&mut self, head: &crate::http::ResponseHead) {
        self.response_at();
        let reason = String::from_utf8_lossy(&head.reason);
        let (h, v) = (&mut self.heads, head.version.as_str());
        msgpack::response_head(h, head.status, &reason, v, &head.headers, self.redact);
        self.by_proxy = false;
        self.resp_trailers = None;
    }

    /// luring answered itself (an error reply): the response and why.
    pub fn failed(&mut self, resp: &Response, why: &str) {
        self.response(resp, true);
        self.error = Some(why.to_string());
    }

    /// The exchange failed after the response began (or without one).
    pub fn error(&mut self, why: impl Into<String>) {
        self.error.get_or_insert_with(|| why.into());
    }

    /// Response trailers that arrived after the head.
    pub fn response_trailers(&mut self, t: &Headers) {
        if self.resp_at.is_some() {
            self.resp_trailers = Some(t.clone());
        }
    }

    /// Request trailers that arrived with the body.
    pub fn request_trailers(&mut self, t: &Headers) {
        self.req_trailers = Some(t.clone());
    }

    /// One WebSocket message relayed; kept within a per-flow budget.
    pub fn ws_message(&mut self, from_client: bool, opcode: u8, payload: &[u8]) {
        let budget = self.max_body * WS_BUDGET_FACTOR;
        if self.ws_bytes >= budget {
            self.websocket_dropped += 1;
            return;
        }
        let keep = payload
            .len()
            .min(self.req_body.max)
            .min(budget - self.ws_bytes);
        self.ws_bytes += keep;
        self.websocket.push(WsMessageRec {
            from_client,
            opcode,
            ts: now_ns(),
            data: ByteBuf::from(payload[..keep].to_vec()),
            size: payload.len() as u64,
        });
    }

    /// The end time, and trailers seen in chunked bodies moved to their heads.
    fn finish(&mut self) {
        if self.times.end == 0 {
            self.times.end = now_ns();
        }
        if let Some(t) = self.req_body.take_trailers() {
            self.req_trailers = Some(t);
        }
        if let Some(t) = self.resp_body.take_trailers() {
            if self.resp_at.is_some() {
                self.resp_trailers = Some(t);
            }
        }
    }

    /// Appends the finished record as MessagePack: the bytes rmp-serde gives for the
    /// [`HttpFlow`](super::record::HttpFlow) this capture describes.
    pub fn write_record(&mut self, out: &mut Vec<u8>) {
        self.finish();
        msgpack::write(self, out);
    }

    /// The bytes of the heads, bodies and messages kept, to size an encoding buffer.
    pub fn payload_hint(&self) -> usize {
        self.heads.len() + self.req_body.kept + self.resp_body.kept + self.ws_bytes
    }
}

/// The heads' first allocation: a request and a response head of a dozen short fields.
const HEADS_CAPACITY: usize = 512;

/// Writes `ip:port` as Display writes it, as a MessagePack string; IPv4, nearly every
/// address here, is made on the stack and appended at once, without the formatting
/// machinery (it was a tenth of the writer thread's time).
fn write_addr(out: &mut Vec<u8>, a: std::net::SocketAddr) {
    let std::net::SocketAddr::V4(v4) = a else {
        let text = a.to_string();
        msgpack::str(out, &text);
        return;
    };
    // a fixstr of at most 21 bytes: its marker, filled in last, then the text
    let mut buf = [0u8; 22];
    let mut n = 1;
    for (i, o) in v4.ip().octets().iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        let [len, d @ ..] = OCTETS[usize::from(*o)];
        buf[n..n + 3].copy_from_slice(&d);
        n += usize::from(len);
    }
    buf[n] = b':';
    n = put_num(&mut buf, n + 1, u32::from(v4.port()));
    buf[0] = 0xa0 | (n - 1) as u8;
    out.extend_from_slice(&buf[..n]);
}

/// Each octet's decimal digits: their count, then the digits (left-aligned).
const OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut v = 0;
    while v < 256 {
        let (h, d, u) = ((v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8);
        t[v] = match v {
            0..=9 => [1, b'0' + u, 0, 0],
            10..=99 => [2, b'0' + d, b'0' + u, 0],
            _ => [3, b'0' + h, b'0' + d, b'0' + u],
        };
        v += 1;
    }
    t
};

/// Writes `v` (at most 65535) in decimal at `at`; the offset after it.
fn put_num(buf: &mut [u8; 22], at: usize, mut v: u32) -> usize {
    let len = match v {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    for d in buf[at..at + len].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    at + len
}

/// What replaces a redacted header value.
pub const REDACTED: &str = "[redacted]";

/// The bytes of an opaque tunnel (`--record-raw`), up to the body limit each way.
#[derive(Debug, Default)]
pub struct RawTap {
    /// The chunks kept, in the order they were relayed.
    pub chunks: Vec<RawChunkRec>,
    kept: [usize; 2],
    max: usize,
}

impl RawTap {
    /// A tap keeping up to `max` bytes in each direction.
    pub fn new(max: usize) -> Self {
        RawTap {
            max,
            ..Default::default()
        }
    }

    /// Sees one chunk relayed in a direction.
    pub fn see(&mut self, from_client: bool, data: &[u8]) {
        let kept = &mut self.kept[from_client as usize];
        let take = data.len().min(self.max - *kept);
        if take == 0 {
            return;
        }
        *kept += take;
        self.chunks.push(RawChunkRec {
            from_client,
            ts: now_ns(),
            data: ByteBuf::from(data[..take].to_vec()),
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_read_as_display_writes_them() {
        for a in [
            "127.0.0.1:80",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "9.99.100.199:9",
            "1.20.255.0:10000",
            "10.7.0.1:8080",
            "[::1]:443",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            super::write_addr(&mut out, a);
            let mut want = Vec::new();
            rmp::encode::write_str(&mut want, &a.to_string()).unwrap();
            assert_eq!(out, want, "{a}");
        }
    }
}
