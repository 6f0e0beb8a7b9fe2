//! A finished capture written as MessagePack straight from what the worker kept: the
//! bytes rmp-serde writes for the [`HttpFlow`] the capture would become (a test holds
//! them equal, so readers see no difference), without building that record first.
//! Headers are not copied into owned pairs and bodies go from their pieces, which
//! halves the writer thread's work per flow.

use super::{addr_text, BodyTap, Capture, REDACTED};
use crate::flows::record::{BodyRec, HttpFlow, ResponseRec, TlsRec, WsMessageRec};
use crate::http::Headers;
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
                out.push(0xcf);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    /// A length after its marker: `small` holds it in the marker's low bits up to
    /// `small_max`, then the 8-bit (when `m8` is given), 16-bit and 32-bit forms.
    #[inline]
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
        len(out, s.len(), Some((0xa0, 31)), Some(0xd9), 0xda);
        out.extend_from_slice(s.as_bytes());
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

/// A field name: every name here is under 32 bytes, a fixstr.
#[inline]
fn key(out: &mut Vec<u8>, k: &str) {
    debug_assert!(k.len() < 32);
    out.push(0xa0 | k.len() as u8);
    out.extend_from_slice(k.as_bytes());
}

fn str_field(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    m::str(out, v);
}

fn uint_field(out: &mut Vec<u8>, k: &str, v: u64) {
    key(out, k);
    m::uint(out, v);
}

fn bool_field(out: &mut Vec<u8>, k: &str, v: bool) {
    key(out, k);
    m::bool(out, v);
}

fn bin(out: &mut Vec<u8>, b: &[u8]) {
    m::bin(out, b);
}

fn opt_str_field(out: &mut Vec<u8>, k: &str, v: Option<&str>) {
    key(out, k);
    match v {
        Some(s) => m::str(out, s),
        None => m::nil(out),
    }
}

/// A header list as `[[name, value], ...]` of bins, the redacted names' values hidden.
fn fields(out: &mut Vec<u8>, k: &str, h: Option<&Headers>, redact: &[String]) {
    key(out, k);
    let Some(h) = h else {
        m::array_len(out, 0);
        return;
    };
    m::array_len(out, h.len());
    for f in h.iter() {
        m::array_len(out, 2);
        bin(out, &f.name);
        let hidden = redact
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(&f.name));
        bin(
            out,
            if hidden {
                REDACTED.as_bytes()
            } else {
                &f.value
            },
        );
    }
}

/// A [`BodyRec`] from the tap's pieces.
fn body(out: &mut Vec<u8>, t: &BodyTap) {
    key(out, "body");
    m::map_len(out, 3);
    key(out, "data");
    m::bin_len(out, t.kept);
    for p in &t.pieces {
        out.extend_from_slice(p);
    }
    uint_field(out, "size", t.size);
    bool_field(out, "cut", t.size > t.kept as u64);
}

fn tls(out: &mut Vec<u8>, t: Option<&TlsRec>) {
    key(out, "client_tls");
    let Some(t) = t else {
        m::nil(out);
        return;
    };
    m::map_len(out, 4);
    str_field(out, "sni", &t.sni);
    str_field(out, "alpn", &t.alpn);
    str_field(out, "version", &t.version);
    str_field(out, "ja4", &t.ja4);
}

fn response(out: &mut Vec<u8>, c: &Capture, r: Option<&ResponseRec>, redact: &[String]) {
    key(out, "response");
    let Some(r) = r else {
        m::nil(out);
        return;
    };
    m::map_len(out, 7);
    uint_field(out, "status", u64::from(r.status));
    str_field(out, "reason", &r.reason);
    let head = c.resp.as_ref();
    // a response known only as a record (no captured head) keeps what it holds
    match head {
        Some(_) => str_field(out, "version", c.versions.1),
        None => str_field(out, "version", &r.version),
    }
    fields(out, "headers", head.map(|h| &h.headers), redact);
    match head {
        Some(_) => body(out, &c.resp_body),
        None => body_rec(out, &r.body),
    }
    let trailers = head.and_then(|h| h.trailers.as_ref());
    fields(out, "trailers", trailers, redact);
    bool_field(out, "by_proxy", r.by_proxy);
}

fn body_rec(out: &mut Vec<u8>, b: &BodyRec) {
    key(out, "body");
    m::map_len(out, 3);
    key(out, "data");
    bin(out, &b.data);
    uint_field(out, "size", b.size);
    bool_field(out, "cut", b.cut);
}

fn ws(out: &mut Vec<u8>, list: &[WsMessageRec]) {
    key(out, "websocket");
    m::array_len(out, list.len());
    for w in list {
        m::map_len(out, 5);
        bool_field(out, "from_client", w.from_client);
        uint_field(out, "opcode", u64::from(w.opcode));
        uint_field(out, "ts", w.ts);
        key(out, "data");
        bin(out, &w.data);
        uint_field(out, "size", w.size);
    }
}

/// Writes `c` (already finished: see `Capture::finish`) as an [`HttpFlow`] map.
pub(super) fn write(c: &Capture, redact: &[String], out: &mut Vec<u8>) {
    let f: &HttpFlow = &c.flow;
    // names, small values and the head fields: one growth for most records
    let heads = c.req.headers.len() + c.resp.as_ref().map_or(0, |h| h.headers.len());
    out.reserve(512 + 64 * heads + c.payload_hint());
    m::map_len(out, 14);
    uint_field(out, "id", f.id);
    uint_field(out, "conn", f.conn);
    uint_field(out, "stream", u64::from(f.stream));
    let addr = |a: Option<std::net::SocketAddr>, kept: &str| a.map_or(kept.to_string(), addr_text);
    str_field(out, "client", &addr(c.client, &f.client));
    str_field(out, "server", &addr(c.server, &f.server));
    str_field(out, "mode", c.mode);
    tls(out, f.client_tls.as_ref());
    // the request
    let r = &f.request;
    key(out, "request");
    m::map_len(out, 8);
    str_field(out, "method", &r.method);
    str_field(out, "scheme", &r.scheme);
    str_field(out, "authority", &r.authority);
    str_field(out, "path", &r.path);
    str_field(out, "version", c.versions.0);
    fields(out, "headers", Some(&c.req.headers), redact);
    body(out, &c.req_body);
    fields(out, "trailers", c.req.trailers.as_ref(), redact);
    response(out, c, f.response.as_ref(), redact);
    // the times
    let t = &f.times;
    key(out, "times");
    m::map_len(out, 4);
    uint_field(out, "request_start", t.request_start);
    uint_field(out, "upstream_connected", t.upstream_connected);
    uint_field(out, "response_head", t.response_head);
    uint_field(out, "end", t.end);
    opt_str_field(out, "error", f.error.as_deref());
    ws(out, &f.websocket);
    uint_field(out, "websocket_dropped", f.websocket_dropped);
    key(out, "notes");
    m::array_len(out, f.notes.len());
    for (k, v) in &f.notes {
        m::array_len(out, 2);
        m::str(out, k);
        m::str(out, v);
    }
}

#[cfg(test)]
mod tests {
    use crate::flows::capture::Capture;
    use crate::flows::record::{HttpFlow, TlsRec};
    use crate::http::{Body, Headers, Request, Response, Version};
    use crate::proto::http1::BodyKind;
    use bytes::Bytes;

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

    /// The captures the test compares, each made twice (a capture is used up).
    fn cases() -> Vec<Box<dyn Fn() -> Capture>> {
        vec![
            // a plain exchange with whole bodies, one cut by the limit
            Box::new(|| {
                let flow = HttpFlow {
                    id: 7,
                    conn: 3,
                    stream: 5,
                    ..Default::default()
                };
                let mut c = *Capture::start(flow, &request(Body::Full("abcdef".into())), 4);
                c.client = Some("127.0.0.1:5000".parse().unwrap());
                c.server = Some("[::1]:443".parse().unwrap());
                c.mode = "reverse";
                c.flow.client_tls = Some(TlsRec {
                    sni: "example.test".into(),
                    alpn: "h2".into(),
                    version: "TLSv1.3".into(),
                    ja4: "t13d".into(),
                });
                c.flow.times.end = 99;
                c.flow.notes.push(("k".into(), "v".into()));
                c.response(&response(Body::Full("hello".into())), false);
                c.flow.times.response_head = 42;
                c
            }),
            // streamed chunked bodies with trailers, websocket messages, an error
            Box::new(|| {
                let mut c = *Capture::start(HttpFlow::default(), &request(Body::Streaming), 1024);
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
                // the clock's readings, made equal in both copies
                c.flow.times.response_head = 42;
                c.flow.times.end = 43;
                c.flow.websocket.iter_mut().for_each(|w| w.ts = 5);
                c
            }),
            // no response at all
            Box::new(|| {
                let mut c = *Capture::start(HttpFlow::default(), &request(Body::Streaming), 16);
                c.flow.times.end = 1;
                c.error("connect refused");
                c
            }),
        ]
    }

    #[test]
    fn written_straight_from_the_capture_as_serde_writes_the_record() {
        for redact in [vec![], vec!["cookie".to_string(), "SET-COOKIE".to_string()]] {
            for (i, make) in cases().iter().enumerate() {
                let mut direct = Vec::new();
                make().write_record(&redact, &mut direct);
                let mut serde = Vec::new();
                rmp_serde::encode::write_named(&mut serde, &make().into_record(&redact)).unwrap();
                assert_eq!(direct, serde, "case {i}, redacting {redact:?}");
                let back: HttpFlow = rmp_serde::from_slice(&direct).unwrap();
                assert_eq!(back, make().into_record(&redact), "case {i} reads back");
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
