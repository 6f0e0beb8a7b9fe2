//! A flow being recorded, as cheaply as the worker can hold it: header lists and body
//! pieces are shared `Bytes` (no copy), and the conversion into a [`HttpFlow`] record
//! (header bytes, redaction, timestamps) runs on the writer thread.

use super::record::{self, now_ns, BodyRec, HttpFlow, RawChunkRec, ResponseRec, WsMessageRec};
use crate::http::{Body, Headers, Request, Response};
use crate::proto::http1::{BodyDecoder, BodyKind};
use bytes::Bytes;
use serde_bytes::ByteBuf;

mod msgpack;

/// The body pieces of one message, kept up to a limit while the message streams.
#[derive(Debug, Default)]
pub struct BodyTap {
    pieces: Vec<Bytes>,
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
        self.pieces.push(p);
    }

    /// Trailers that came apart from the body (HTTP/2).
    pub fn set_trailers(&mut self, t: Headers) {
        self.trailers = Some(t);
    }

    /// Trailers seen in chunked wire bytes.
    pub fn take_trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }

    fn into_rec(self) -> BodyRec {
        let mut data = Vec::with_capacity(self.kept);
        for p in &self.pieces {
            data.extend_from_slice(p);
        }
        BodyRec {
            cut: self.size > self.kept as u64,
            data: ByteBuf::from(data),
            size: self.size,
        }
    }
}

/// A message head as it was captured (header bytes shared, not copied).
#[derive(Debug, Default)]
struct Head {
    headers: Headers,
    trailers: Option<Headers>,
}

/// An HTTP flow being recorded.
#[derive(Debug, Default)]
pub struct Capture {
    /// What is known as plain values (ids, addresses, timestamps, the error...).
    pub flow: HttpFlow,
    req: Head,
    resp: Option<Head>,
    /// The request body as it streams upstream.
    pub req_body: BodyTap,
    /// The response body as it streams to the client.
    pub resp_body: BodyTap,
    ws_bytes: usize,
    max_body: usize,
    /// The client's address, made text on the writer thread.
    pub client: Option<std::net::SocketAddr>,
    /// The upstream's address, made text on the writer thread.
    pub server: Option<std::net::SocketAddr>,
    /// The proxy mode's name, the request's and the response's versions: made
    /// `String`s on the writer thread.
    pub mode: &'static str,
    versions: (&'static str, &'static str),
    /// Plugins asked not to record this flow.
    pub skip: bool,
}

/// Most WebSocket payload bytes kept per flow, as a multiple of the body limit.
const WS_BUDGET_FACTOR: usize = 8;

impl Capture {
    /// Starts recording a request as it goes upstream; `max_body` bounds each body.
    pub fn start(flow: HttpFlow, req: &Request, max_body: usize) -> Box<Capture> {
        let mut c = Box::new(Capture {
            flow,
            req_body: BodyTap::new(max_body),
            resp_body: BodyTap::new(max_body),
            max_body,
            ..Default::default()
        });
        let r = &mut c.flow.request;
        r.method = String::from_utf8_lossy(&req.method).into_owned();
        r.scheme.clone_from(&req.scheme);
        r.authority.clone_from(&req.authority);
        r.path = req.path.clone().unwrap_or_default();
        c.versions.0 = req.version.as_str();
        c.flow.times.request_start = (req.timestamp_start * 1e9) as u64;
        c.req.headers = req.headers.clone();
        c.req.trailers = req.trailers.clone();
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

    /// The response head (and body, when it is whole) as it goes to the client.
    pub fn response(&mut self, resp: &Response, by_proxy: bool) {
        self.flow.times.response_head = now_ns();
        self.versions.1 = resp.version.as_str();
        self.flow.response = Some(ResponseRec {
            status: resp.status,
            reason: resp.reason.clone(),
            version: String::new(),
            by_proxy,
            ..Default::default()
        });
        self.resp = Some(Head {
            headers: resp.headers.clone(),
            trailers: resp.trailers.clone(),
        });
        if let Body::Full(b) = &resp.body {
            self.resp_body = self.new_tap();
            self.resp_body.see(b);
        }
    }

    /// The upstream switched protocols: its 101 head.
    pub fn switched(&mut self, head: &crate::http::ResponseHead) {
        self.flow.times.response_head = now_ns();
        self.versions.1 = head.version.as_str();
        self.flow.response = Some(ResponseRec {
            status: head.status,
            reason: String::from_utf8_lossy(&head.reason).into_owned(),
            version: String::new(),
            ..Default::default()
        });
        self.resp = Some(Head {
            headers: head.headers.clone(),
            trailers: None,
        });
    }

    /// luring answered itself (an error reply): the response and why.
    pub fn failed(&mut self, resp: &Response, why: &str) {
        self.response(resp, true);
        self.flow.error = Some(why.to_string());
    }

    /// The exchange failed after the response began (or without one).
    pub fn error(&mut self, why: impl Into<String>) {
        self.flow.error.get_or_insert_with(|| why.into());
    }

    /// Response trailers that arrived after the head.
    pub fn response_trailers(&mut self, t: &Headers) {
        if let Some(h) = self.resp.as_mut() {
            h.trailers = Some(t.clone());
        }
    }

    /// Request trailers that arrived with the body.
    pub fn request_trailers(&mut self, t: &Headers) {
        self.req.trailers = Some(t.clone());
    }

    /// One WebSocket message relayed; kept within a per-flow budget.
    pub fn ws_message(&mut self, from_client: bool, opcode: u8, payload: &[u8]) {
        let budget = self.max_body * WS_BUDGET_FACTOR;
        if self.ws_bytes >= budget {
            self.flow.websocket_dropped += 1;
            return;
        }
        let keep = payload
            .len()
            .min(self.req_body.max)
            .min(budget - self.ws_bytes);
        self.ws_bytes += keep;
        self.flow.websocket.push(WsMessageRec {
            from_client,
            opcode,
            ts: now_ns(),
            data: ByteBuf::from(payload[..keep].to_vec()),
            size: payload.len() as u64,
        });
    }

    /// The finished record: bodies joined, trailers and headers as bytes, the named
    /// headers' values redacted (names compared case-insensitively).
    pub fn into_record(mut self, redact: &[String]) -> HttpFlow {
        self.finish();
        let mut flow = self.flow;
        if let Some(a) = self.client {
            flow.client = addr_text(a);
        }
        flow.mode = self.mode.to_string();
        flow.request.version = self.versions.0.to_string();
        if let Some(a) = self.server {
            flow.server = addr_text(a);
        }
        flow.request.headers = fields(&self.req.headers, redact);
        flow.request.trailers = self
            .req
            .trailers
            .as_ref()
            .map_or_else(Vec::new, |t| fields(t, redact));
        flow.request.body = self.req_body.into_rec();
        if let (Some(r), Some(h)) = (flow.response.as_mut(), self.resp) {
            r.version = self.versions.1.to_string();
            r.headers = fields(&h.headers, redact);
            let t = h.trailers;
            r.trailers = t.as_ref().map_or_else(Vec::new, |t| fields(t, redact));
            r.body = self.resp_body.into_rec();
        }
        flow
    }
}

impl Capture {
    /// The end time, and trailers seen in chunked bodies moved to their heads.
    fn finish(&mut self) {
        if self.flow.times.end == 0 {
            self.flow.times.end = now_ns();
        }
        if let Some(t) = self.req_body.take_trailers() {
            self.req.trailers = Some(t);
        }
        if let Some(t) = self.resp_body.take_trailers() {
            if let Some(h) = self.resp.as_mut() {
                h.trailers = Some(t);
            }
        }
    }

    /// Appends the finished record as MessagePack: the bytes `into_record` then
    /// rmp-serde would give, made without the intermediate record.
    pub fn write_record(mut self, redact: &[String], out: &mut Vec<u8>) {
        self.finish();
        msgpack::write(&self, redact, out);
    }

    /// The bytes of the bodies and messages kept, to size an encoding buffer.
    pub fn payload_hint(&self) -> usize {
        self.req_body.kept + self.resp_body.kept + self.ws_bytes
    }
}

/// `ip:port` as Display writes it; IPv4, nearly every address here, without the
/// formatting machinery (it was a tenth of the writer thread's time).
fn addr_text(a: std::net::SocketAddr) -> String {
    let std::net::SocketAddr::V4(v4) = a else {
        return a.to_string();
    };
    let mut s = String::with_capacity(21);
    for (i, o) in v4.ip().octets().iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_num(&mut s, u32::from(*o));
    }
    s.push(':');
    push_num(&mut s, u32::from(v4.port()));
    s
}

fn push_num(s: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(d as char);
    }
}

/// What replaces a redacted header value.
pub const REDACTED: &str = "[redacted]";

fn fields(h: &Headers, redact: &[String]) -> Vec<record::Field> {
    h.iter()
        .map(|f| {
            let hidden = redact
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(&f.name));
            if hidden {
                record::field(&f.name, REDACTED)
            } else {
                record::field(&f.name, &f.value)
            }
        })
        .collect()
}

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
            "10.7.0.1:8080",
            "[::1]:443",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(super::addr_text(a), a.to_string());
        }
    }
}
