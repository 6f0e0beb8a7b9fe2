//! A capture written as MessagePack straight from what the worker kept: the bytes
//! rmp-serde writes for the [`HttpFlow`](crate::flows::record::HttpFlow) the capture
//! describes (a test holds them equal, so readers see no difference), without building
//! that record. The heads are written on the worker as they pass (no strings or header
//! lists kept), bodies go from their pieces.

use super::{write_addr, BodyTap, Capture, Redact, REDACTED};
use crate::flows::record::{TlsRec, WsMessageRec};
use crate::http::{Headers, Request};
// MessagePack's compact forms, as rmp (and so rmp-serde) chooses them.
mod m {
    #[inline]
    pub fn nil(out: &mut Vec<u8>) {
        out.push(0xc0);
    }

    #[inline]
    pub fn bool(out: &mut Vec<u8>, v: bool) {
        out.push(if v { 0xc3 } else { 0xc2 });
    }

    #[inline]
    pub fn uint(out: &mut Vec<u8>, v: u64) {
        match v {
            0..=0x7f => out.push(v as u8),
            0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend_from_slice(&(v as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend_from_slice(&(v as u32).to_be_bytes());
            }
            _ => {
                let b = v.to_be_bytes();
                // one 9-byte append (timestamps take this form)
                out.extend_from_slice(&[0xcf, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            }
        }
    }

    /// A length after its marker: `small` holds it in the marker's low bits up to
    /// `small_max`, then the 8-bit (when `m8` is given), 16-bit and 32-bit forms.
    #[inline(always)]
    fn len(out: &mut Vec<u8>, n: usize, small: Option<(u8, usize)>, m8: Option<u8>, m16: u8) {
        match (small, m8) {
            (Some((marker, max)), _) if n <= max => out.push(marker | n as u8),
            (_, Some(marker)) if n <= 0xff => out.extend_from_slice(&[marker, n as u8]),
            _ if n <= 0xffff => {
                out.push(m16);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(m16 + 1);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    #[inline]
    pub fn str(out: &mut Vec<u8>, s: &str) {
        str_bytes(out, s.as_bytes());
    }

    /// A string already known to be UTF-8.
    #[inline]
    pub fn str_bytes(out: &mut Vec<u8>, s: &[u8]) {
        len(out, s.len(), Some((0xa0, 31)), Some(0xd9), 0xda);
        out.extend_from_slice(s);
    }

    #[inline]
    pub fn bin_len(out: &mut Vec<u8>, n: usize) {
        len(out, n, None, Some(0xc4), 0xc5);
    }

    #[inline]
    pub fn bin(out: &mut Vec<u8>, b: &[u8]) {
        bin_len(out, b.len());
        out.extend_from_slice(b);
    }

    #[inline]
    pub fn array_len(out: &mut Vec<u8>, n: usize) {
        len(out, n, Some((0x90, 15)), None, 0xdc);
    }

    #[inline]
    pub fn map_len(out: &mut Vec<u8>, n: usize) {
        len(out, n, Some((0x80, 15)), None, 0xde);
    }
}

/// A field name as a fixstr: the marker and the name, sized at compile time so that
/// writing it is a few stores, not a call to memcpy.
const fn key<const N: usize>(name: &str) -> [u8; N] {
    let b = name.as_bytes();
    assert!(b.len() + 1 == N && b.len() < 32);
    let mut out = [0u8; N];
    out[0] = 0xa0 | b.len() as u8;
    let mut i = 0;
    while i < b.len() {
        out[i + 1] = b[i];
        i += 1;
    }
    out
}

/// The map markers and field names the record is made of.
mod k {
    use super::key;
    pub const ID: [u8; 3] = key("id");
    pub const CONN: [u8; 5] = key("conn");
    pub const STREAM: [u8; 7] = key("stream");
    pub const CLIENT: [u8; 7] = key("client");
    pub const SERVER: [u8; 7] = key("server");
    pub const MODE: [u8; 5] = key("mode");
    pub const CLIENT_TLS: [u8; 11] = key("client_tls");
    pub const SNI: [u8; 4] = key("sni");
    pub const ALPN: [u8; 5] = key("alpn");
    pub const JA4: [u8; 4] = key("ja4");
    pub const REQUEST: [u8; 8] = key("request");
    pub const METHOD: [u8; 7] = key("method");
    pub const SCHEME: [u8; 7] = key("scheme");
    pub const AUTHORITY: [u8; 10] = key("authority");
    pub const PATH: [u8; 5] = key("path");
    pub const VERSION: [u8; 8] = key("version");
    pub const HEADERS: [u8; 8] = key("headers");
    pub const BODY: [u8; 5] = key("body");
    pub const DATA: [u8; 5] = key("data");
    pub const SIZE: [u8; 5] = key("size");
    pub const CUT: [u8; 4] = key("cut");
    pub const TRAILERS: [u8; 9] = key("trailers");
    pub const RESPONSE: [u8; 9] = key("response");
    pub const STATUS: [u8; 7] = key("status");
    pub const REASON: [u8; 7] = key("reason");
    pub const BY_PROXY: [u8; 9] = key("by_proxy");
    pub const TIMES: [u8; 6] = key("times");
    pub const REQUEST_START: [u8; 14] = key("request_start");
    pub const UPSTREAM_CONNECTED: [u8; 19] = key("upstream_connected");
    pub const RESPONSE_HEAD: [u8; 14] = key("response_head");
    pub const END: [u8; 4] = key("end");
    pub const ERROR: [u8; 6] = key("error");
    pub const WEBSOCKET: [u8; 10] = key("websocket");
    pub const FROM_CLIENT: [u8; 12] = key("from_client");
    pub const OPCODE: [u8; 7] = key("opcode");
    pub const TS: [u8; 3] = key("ts");
    pub const WEBSOCKET_DROPPED: [u8; 18] = key("websocket_dropped");
    pub const NOTES: [u8; 6] = key("notes");
}

#[inline(always)]
fn put<const N: usize>(out: &mut Vec<u8>, b: &[u8; N]) {
    out.extend_from_slice(b);
}

/// A string, as rmp writes it.
pub(super) fn str(out: &mut Vec<u8>, s: &str) {
    m::str(out, s);
}

/// A header list as `[[name, value], ...]` of bins, the redacted names' values hidden.
fn fields(out: &mut Vec<u8>, h: Option<&Headers>, redact: &Redact) {
    put(out, &k::HEADERS);
    fields_value(out, h, redact);
}

fn fields_value(out: &mut Vec<u8>, h: Option<&Headers>, redact: &Redact) {
    let Some(h) = h else {
        m::array_len(out, 0);
        return;
    };
    m::array_len(out, h.len());
    // room for the list at once: each field then costs its two copies and its markers
    let room: usize = h.iter().map(|f| f.name.len() + f.value.len()).sum();
    out.reserve(room + 7 * h.len() + REDACTED.len());
    for f in h.iter() {
        let name: &[u8] = &f.name;
        let value: &[u8] = match redact.hides(name) {
            true => REDACTED.as_bytes(),
            false => &f.value,
        };
        if name.len() <= 0xff && value.len() <= 0xff {
            // a two-element array of two 8-bit-length bins, as rmp writes them
            out.extend_from_slice(&[0x92, 0xc4, name.len() as u8]);
            out.extend_from_slice(name);
            out.extend_from_slice(&[0xc4, value.len() as u8]);
            out.extend_from_slice(value);
        } else {
            m::array_len(out, 2);
            m::bin(out, name);
            m::bin(out, value);
        }
    }
}

/// The request's head fields (the first six of its map), written on the worker as the
/// request goes upstream.
pub(super) fn request_head(out: &mut Vec<u8>, req: &Request, redact: &Redact) {
    put(out, &k::METHOD);
    // a method token is ASCII; anything else is written as its lossy text, as before
    match req.method.is_ascii() {
        true => m::str_bytes(out, &req.method),
        false => m::str(out, &String::from_utf8_lossy(&req.method)),
    }
    put(out, &k::SCHEME);
    m::str(out, &req.scheme);
    put(out, &k::AUTHORITY);
    m::str(out, &req.authority);
    put(out, &k::PATH);
    m::str(out, req.path.as_deref().unwrap_or_default());
    put(out, &k::VERSION);
    m::str(out, req.version.as_str());
    fields(out, Some(&req.headers), redact);
}

/// The response's head fields (the first four of its map), written on the worker.
pub(super) fn response_head(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    version: &str,
    headers: &Headers,
    redact: &Redact,
) {
    put(out, &k::STATUS);
    m::uint(out, u64::from(status));
    put(out, &k::REASON);
    m::str(out, reason);
    put(out, &k::VERSION);
    m::str(out, version);
    fields(out, Some(headers), redact);
}

/// A `BodyRec` from the tap's pieces.
fn body(out: &mut Vec<u8>, t: &BodyTap) {
    put(out, &k::BODY);
    m::map_len(out, 3);
    put(out, &k::DATA);
    m::bin_len(out, t.kept);
    for p in t.pieces() {
        out.extend_from_slice(p);
    }
    put(out, &k::SIZE);
    m::uint(out, t.size);
    put(out, &k::CUT);
    m::bool(out, t.size > t.kept as u64);
}

fn tls(out: &mut Vec<u8>, t: Option<&TlsRec>) {
    put(out, &k::CLIENT_TLS);
    let Some(t) = t else {
        m::nil(out);
        return;
    };
    m::map_len(out, 4);
    put(out, &k::SNI);
    m::str(out, &t.sni);
    put(out, &k::ALPN);
    m::str(out, &t.alpn);
    put(out, &k::VERSION);
    m::str(out, &t.version);
    put(out, &k::JA4);
    m::str(out, &t.ja4);
}

fn addr(out: &mut Vec<u8>, a: Option<std::net::SocketAddr>) {
    match a {
        Some(a) => write_addr(out, a),
        None => m::str(out, ""),
    }
}

fn ws(out: &mut Vec<u8>, list: &[WsMessageRec]) {
    put(out, &k::WEBSOCKET);
    m::array_len(out, list.len());
    for w in list {
        m::map_len(out, 5);
        put(out, &k::FROM_CLIENT);
        m::bool(out, w.from_client);
        put(out, &k::OPCODE);
        m::uint(out, u64::from(w.opcode));
        put(out, &k::TS);
        m::uint(out, w.ts);
        put(out, &k::DATA);
        m::bin(out, &w.data);
        put(out, &k::SIZE);
        m::uint(out, w.size);
    }
}

/// Writes `c` (already finished: see `Capture::finish`) as an `HttpFlow` map, its
/// fields in the struct's order as rmp-serde writes them.
pub(super) fn write(c: &Capture, out: &mut Vec<u8>) {
    out.reserve(256 + c.payload_hint());
    m::map_len(out, 14);
    put(out, &k::ID);
    m::uint(out, c.id);
    put(out, &k::CONN);
    m::uint(out, c.conn);
    put(out, &k::STREAM);
    m::uint(out, u64::from(c.stream));
    put(out, &k::CLIENT);
    addr(out, c.client);
    put(out, &k::SERVER);
    addr(out, c.server);
    put(out, &k::MODE);
    m::str(out, c.mode);
    tls(out, c.client_tls.as_ref());
    // the request: its head as the worker wrote it, then body and trailers
    let (req, resp) = c.heads.split_at(c.resp_at.unwrap_or(c.heads.len()));
    put(out, &k::REQUEST);
    m::map_len(out, 8);
    out.extend_from_slice(req);
    body(out, &c.req_body);
    put(out, &k::TRAILERS);
    fields_value(out, c.req_trailers.as_ref(), c.redact);
    put(out, &k::RESPONSE);
    match c.resp_at {
        None => m::nil(out),
        Some(_) => {
            m::map_len(out, 7);
            out.extend_from_slice(resp);
            body(out, &c.resp_body);
            put(out, &k::TRAILERS);
            fields_value(out, c.resp_trailers.as_ref(), c.redact);
            put(out, &k::BY_PROXY);
            m::bool(out, c.by_proxy);
        }
    }
    let t = &c.times;
    put(out, &k::TIMES);
    m::map_len(out, 4);
    put(out, &k::REQUEST_START);
    m::uint(out, t.request_start);
    put(out, &k::UPSTREAM_CONNECTED);
    m::uint(out, t.upstream_connected);
    put(out, &k::RESPONSE_HEAD);
    m::uint(out, t.response_head);
    put(out, &k::END);
    m::uint(out, t.end);
    put(out, &k::ERROR);
    match c.error.as_deref() {
        Some(s) => m::str(out, s),
        None => m::nil(out),
    }
    ws(out, &c.websocket);
    put(out, &k::WEBSOCKET_DROPPED);
    m::uint(out, c.websocket_dropped);
    put(out, &k::NOTES);
    m::array_len(out, c.notes.len());
    for (k, v) in &c.notes {
        m::array_len(out, 2);
        m::str(out, k);
        m::str(out, v);
    }
}

#[cfg(test)]
mod tests {
    use crate::flows::capture::{Capture, Ids, Redact};
    use crate::flows::record::{
        field, BodyRec, HttpFlow, RequestRec, ResponseRec, Times, TlsRec, WsMessageRec,
    };
    use crate::http::{Body, Headers, Request, Response, Version};
    use crate::proto::http1::BodyKind;
    use bytes::Bytes;
    use serde_bytes::ByteBuf;

    fn headers(list: &[(&'static str, &'static str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in list {
            h.add(*n, *v);
        }
        h
    }

    fn request(body: Body) -> Request {
        Request {
            method: Bytes::from_static(b"POST"),
            scheme: "https".into(),
            authority: "example.test:8443".into(),
            path: Some("/a?b=1".into()),
            version: Version::Http11,
            headers: headers(&[
                ("Host", "example.test"),
                ("Cookie", "s=1"),
                ("X-A", "\u{e9}"),
            ]),
            body,
            trailers: None,
            timestamp_start: 1.5,
        }
    }

    fn response(body: Body) -> Response {
        Response {
            status: 200,
            reason: "OK".into(),
            version: Version::Http11,
            headers: headers(&[("Content-Type", "text/plain"), ("Set-Cookie", "k=v")]),
            body,
            trailers: Some(headers(&[("x-t", "1")])),
            error: None,
        }
    }

    fn body(data: &[u8], size: u64) -> BodyRec {
        BodyRec {
            data: ByteBuf::from(data.to_vec()),
            size,
            cut: size > data.len() as u64,
        }
    }

    /// The record `request(..)` and `response(..)` make, redacting `hidden`.
    fn flow(hidden: bool, req_body: BodyRec, resp: Option<(BodyRec, bool)>) -> HttpFlow {
        let cookie = if hidden { super::REDACTED } else { "s=1" };
        let set_cookie = if hidden { super::REDACTED } else { "k=v" };
        HttpFlow {
            request: RequestRec {
                method: "POST".into(),
                scheme: "https".into(),
                authority: "example.test:8443".into(),
                path: "/a?b=1".into(),
                version: "HTTP/1.1".into(),
                headers: vec![
                    field("Host", "example.test"),
                    field("Cookie", cookie),
                    field("X-A", "\u{e9}"),
                ],
                body: req_body,
                trailers: vec![],
            },
            response: resp.map(|(body, by_proxy)| ResponseRec {
                status: 200,
                reason: "OK".into(),
                version: "HTTP/1.1".into(),
                headers: vec![
                    field("Content-Type", "text/plain"),
                    field("Set-Cookie", set_cookie),
                ],
                body,
                trailers: vec![field("x-t", "1")],
                by_proxy,
            }),
            times: Times {
                request_start: 1_500_000_000,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Each case: the capture (made fresh for each redaction list) and the record it
    /// describes.
    type Case = Box<dyn Fn(&'static Redact) -> Capture>;
    type Expected = Box<dyn Fn(bool) -> HttpFlow>;

    fn cases() -> Vec<(Case, Expected)> {
        vec![
            // a plain exchange with whole bodies, both cut by the limit
            (
                Box::new(|redact| {
                    let ids = Ids {
                        id: 7,
                        conn: 3,
                        stream: 5,
                    };
                    let req = request(Body::Full("abcdef".into()));
                    let mut c = *Capture::start(ids, &req, 4, redact);
                    c.client = Some("127.0.0.1:5000".parse().unwrap());
                    c.server = Some("[::1]:443".parse().unwrap());
                    c.mode = "reverse";
                    c.client_tls = Some(TlsRec {
                        sni: "example.test".into(),
                        alpn: "h2".into(),
                        version: "TLSv1.3".into(),
                        ja4: "t13d".into(),
                    });
                    c.times.end = 99;
                    c.notes.push(("k".into(), "v".into()));
                    c.response(&response(Body::Full("hello".into())), false);
                    c.times.response_head = 42;
                    c
                }),
                Box::new(|hidden| {
                    let mut f = flow(hidden, body(b"abcd", 6), Some((body(b"hell", 5), false)));
                    f.id = 7;
                    f.conn = 3;
                    f.stream = 5;
                    f.client = "127.0.0.1:5000".into();
                    f.server = "[::1]:443".into();
                    f.mode = "reverse".into();
                    f.client_tls = Some(TlsRec {
                        sni: "example.test".into(),
                        alpn: "h2".into(),
                        version: "TLSv1.3".into(),
                        ja4: "t13d".into(),
                    });
                    f.times.response_head = 42;
                    f.times.end = 99;
                    f.notes.push(("k".into(), "v".into()));
                    f
                }),
            ),
            // streamed chunked bodies with trailers, websocket messages, an error
            (
                Box::new(|redact| {
                    let req = request(Body::Streaming);
                    let mut c = *Capture::start(Ids::default(), &req, 1024, redact);
                    c.req_body.wire(BodyKind::Chunked);
                    c.req_body
                        .see(&Bytes::from_static(b"3\r\nabc\r\n0\r\nx-r: 2\r\n\r\n"));
                    c.response(&response(Body::Streaming), true);
                    c.resp_body.wire(BodyKind::Chunked);
                    c.resp_body
                        .see(&Bytes::from_static(b"2\r\nhi\r\n0\r\nx-s: 3\r\n\r\n"));
                    c.ws_message(true, 1, b"ping");
                    c.ws_message(false, 2, &[0, 1, 2]);
                    c.error("upstream reset");
                    c.error("not this one");
                    // the clock's readings, made known
                    c.times.response_head = 42;
                    c.times.end = 43;
                    c.websocket.iter_mut().for_each(|w| w.ts = 5);
                    c
                }),
                Box::new(|hidden| {
                    let mut f = flow(hidden, body(b"abc", 3), Some((body(b"hi", 2), true)));
                    f.request.trailers = vec![field("x-r", "2")];
                    f.response.as_mut().unwrap().trailers = vec![field("x-s", "3")];
                    f.times.response_head = 42;
                    f.times.end = 43;
                    f.error = Some("upstream reset".into());
                    let ws = |from_client, opcode, data: &[u8]| WsMessageRec {
                        from_client,
                        opcode,
                        ts: 5,
                        data: ByteBuf::from(data.to_vec()),
                        size: data.len() as u64,
                    };
                    f.websocket = vec![ws(true, 1, b"ping"), ws(false, 2, &[0, 1, 2])];
                    f
                }),
            ),
            // no response at all
            (
                Box::new(|redact| {
                    let req = request(Body::Streaming);
                    let mut c = *Capture::start(Ids::default(), &req, 16, redact);
                    c.times.end = 1;
                    c.error("connect refused");
                    c
                }),
                Box::new(|hidden| {
                    let mut f = flow(hidden, body(b"", 0), None);
                    f.times.end = 1;
                    f.error = Some("connect refused".into());
                    f
                }),
            ),
            // a second response replaces the first (an interim head, then the answer)
            (
                Box::new(|redact| {
                    let req = request(Body::Streaming);
                    let mut c = *Capture::start(Ids::default(), &req, 16, redact);
                    let mut early = response(Body::Full("x".into()));
                    early.status = 503;
                    early.reason = "a longer reason phrase than the other".into();
                    c.response(&early, false);
                    c.response(&response(Body::Full("hello".into())), true);
                    c.times.response_head = 2;
                    c.times.end = 3;
                    c
                }),
                Box::new(|hidden| {
                    let mut f = flow(hidden, body(b"", 0), Some((body(b"hello", 5), true)));
                    f.times.response_head = 2;
                    f.times.end = 3;
                    f
                }),
            ),
        ]
    }

    #[test]
    fn written_straight_from_the_capture_as_serde_writes_the_record() {
        let names = vec!["cookie".to_string(), "SET-COOKIE".to_string()];
        let lists: [&'static Redact; 2] = [
            Box::leak(Box::default()),
            Box::leak(Box::new(Redact::new(names))),
        ];
        for redact in lists {
            for (i, (make, expected)) in cases().iter().enumerate() {
                let mut direct = Vec::new();
                make(redact).write_record(&mut direct);
                let want = expected(redact.hides(b"Cookie"));
                let serde = rmp_serde::to_vec_named(&want).unwrap();
                assert_eq!(direct, serde, "case {i}, redacting {redact:?}");
                let back: HttpFlow = rmp_serde::from_slice(&direct).unwrap();
                assert_eq!(back, want, "case {i} reads back");
            }
        }
    }
}

#[cfg(test)]
mod forms {
    use super::m;

    #[test]
    fn compact_forms_are_rmps_at_every_boundary() {
        let ours = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = Vec::new();
            f(&mut v);
            v
        };
        for v in [
            0u64,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            1 << 32,
            u64::MAX,
        ] {
            let mut r = Vec::new();
            rmp::encode::write_uint(&mut r, v).unwrap();
            assert_eq!(ours(&|o| m::uint(o, v)), r, "uint {v}");
        }
        for n in [0usize, 15, 16, 31, 32, 255, 256, 65535, 65536] {
            let s = "x".repeat(n);
            let mut r = Vec::new();
            rmp::encode::write_str(&mut r, &s).unwrap();
            assert_eq!(ours(&|o| m::str(o, &s)), r, "str {n}");
            let mut r = Vec::new();
            rmp::encode::write_bin(&mut r, s.as_bytes()).unwrap();
            assert_eq!(ours(&|o| m::bin(o, s.as_bytes())), r, "bin {n}");
            let mut r = Vec::new();
            rmp::encode::write_array_len(&mut r, n as u32).unwrap();
            assert_eq!(ours(&|o| m::array_len(o, n)), r, "array {n}");
            let mut r = Vec::new();
            rmp::encode::write_map_len(&mut r, n as u32).unwrap();
            assert_eq!(ours(&|o| m::map_len(o, n)), r, "map {n}");
        }
        for b in [true, false] {
            let mut r = Vec::new();
            rmp::encode::write_bool(&mut r, b).unwrap();
            assert_eq!(ours(&|o| m::bool(o, b)), r);
        }
        let mut r = Vec::new();
        rmp::encode::write_nil(&mut r).unwrap();
        assert_eq!(ours(&|o| m::nil(o)), r);
    }
}
