//! Test vectors for the HTTP/1 codec. Every vector is also fed split at every byte
//! boundary (heads as growing prefixes, bodies in two pieces and in many pieces, through
//! both `scan` and `decode`) and must give the same result as the unsplit input.

use super::*;
use crate::http::{Headers, RequestHead, ResponseHead, Version};
use bytes::{Bytes, BytesMut};

const M: fn(&'static str) -> HeadError = HeadError::Malformed;
const BAD: fn(&'static str) -> BodyError = BodyError::BadChunk;

fn hdrs(pairs: &[(&str, &str)]) -> Headers {
    let mut h = Headers::new();
    for (n, v) in pairs {
        h.add(
            Bytes::copy_from_slice(n.as_bytes()),
            Bytes::copy_from_slice(v.as_bytes()),
        );
    }
    h
}

/// What a body did, however it was fed.
#[derive(Debug, Clone, PartialEq)]
enum BodyOutcome {
    Err(BodyError),
    Ok {
        /// Framed bytes that belonged to the body.
        framed: usize,
        payload: Vec<u8>,
        trailers: Option<Headers>,
        done: bool,
        eof: Result<(), BodyError>,
    },
}

/// Scans `buf` the way a relay does: the good bytes before a fault come out first,
/// then the next call reports the fault.
fn scan_all(dec: &mut BodyDecoder, buf: &[u8]) -> Result<Scan, BodyError> {
    let s = dec.scan(buf)?;
    if !s.done && s.consumed < buf.len() {
        dec.scan(&buf[s.consumed..])?;
        panic!("scan held bytes back without a fault");
    }
    Ok(s)
}

fn scan_pieces(
    kind: BodyKind,
    pieces: &[&[u8]],
) -> Result<(usize, bool, Result<(), BodyError>), BodyError> {
    let mut dec = BodyDecoder::new(kind);
    let mut pending: Vec<u8> = Vec::new();
    let mut framed = 0;
    for p in pieces {
        pending.extend_from_slice(p);
        if dec.is_done() {
            continue;
        }
        let s = scan_all(&mut dec, &pending)?;
        assert!(s.consumed <= pending.len());
        assert!(
            s.done || s.consumed == pending.len(),
            "scan held bytes back"
        );
        assert_eq!(s.done, dec.is_done());
        framed += s.consumed;
        pending.drain(..s.consumed);
    }
    Ok((framed, dec.is_done(), dec.eof()))
}

fn decode_pieces(kind: BodyKind, pieces: &[&[u8]]) -> BodyOutcome {
    let mut dec = BodyDecoder::new(kind);
    let mut buf = BytesMut::new();
    let mut framed = 0;
    let mut payload = Vec::new();
    let mut trailers = None;
    for p in pieces {
        buf.extend_from_slice(p);
        if dec.is_done() {
            continue;
        }
        let before = buf.len();
        let mut result = dec.decode(&mut buf);
        if matches!(&result, Ok(d) if !d.done && !buf.is_empty()) {
            // a fault behind good bytes is reported by the next call
            result = dec.decode(&mut buf);
            assert!(result.is_err(), "decode held bytes back without a fault");
        }
        match result {
            Ok(d) => {
                framed += before - buf.len();
                assert!(d.done || buf.is_empty(), "decode held bytes back");
                assert_eq!(d.done, dec.is_done());
                for piece in d.data {
                    assert!(!piece.is_empty());
                    payload.extend_from_slice(&piece);
                }
                if d.trailers.is_some() {
                    assert!(trailers.is_none() && d.done);
                    trailers = d.trailers;
                }
            }
            Err(e) => return BodyOutcome::Err(e),
        }
    }
    BodyOutcome::Ok {
        framed,
        payload,
        trailers,
        done: dec.is_done(),
        eof: dec.eof(),
    }
}

/// Runs `decode` and `scan` over `pieces` and checks that they agree.
fn body_outcome(kind: BodyKind, pieces: &[&[u8]]) -> BodyOutcome {
    let decoded = decode_pieces(kind, pieces);
    let scanned = scan_pieces(kind, pieces);
    match (&decoded, &scanned) {
        (BodyOutcome::Err(a), Err(b)) => assert_eq!(a, b),
        (
            BodyOutcome::Ok {
                framed, done, eof, ..
            },
            Ok((f, d, e)),
        ) => {
            assert_eq!((framed, done, eof), (f, d, e));
        }
        _ => panic!("scan {scanned:?} and decode {decoded:?} disagree"),
    }
    decoded
}

/// Feeds `body` whole, in two pieces at every boundary, byte by byte, and in 3-byte pieces.
fn body_outcome_all_splits(kind: BodyKind, body: &[u8]) -> BodyOutcome {
    let whole = body_outcome(kind, &[body]);
    for k in 0..=body.len() {
        let two = body_outcome(kind, &[&body[..k], &body[k..]]);
        assert_eq!(
            two,
            whole,
            "split at {k} of {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(body_outcome(kind, &bytes), whole, "byte by byte");
    let threes: Vec<&[u8]> = body.chunks(3).collect();
    assert_eq!(body_outcome(kind, &threes), whole, "3-byte pieces");
    whole
}

/// Parses `wire` with every prefix: each must be incomplete or give the full input's result.
fn head_all_prefixes<H: PartialEq + std::fmt::Debug>(
    wire: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<(H, usize)>, HeadError>,
) -> Result<Option<(H, usize)>, HeadError> {
    let full = parse(wire);
    for k in 0..wire.len() {
        let p = parse(&wire[..k]);
        if p != Ok(None) {
            assert_eq!(p, full, "prefix of {k} bytes");
        }
    }
    full
}

/// Expected result of a whole message.
#[derive(Debug)]
enum Exp<H> {
    Head(HeadError),
    Kind(HeadError),
    Body(BodyError),
    Msg {
        head: H,
        kind: BodyKind,
        payload: &'static [u8],
        trailers: &'static [(&'static str, &'static str)],
        /// The body is complete (false: truncated or close-delimited).
        done: bool,
        rest: &'static [u8],
    },
}

fn check<H: PartialEq + std::fmt::Debug + Clone>(
    name: &str,
    wire: &[u8],
    exp: &Exp<H>,
    parse: impl Fn(&[u8]) -> Result<Option<(H, usize)>, HeadError>,
    kind_of: impl Fn(&H) -> Result<BodyKind, HeadError>,
) {
    let parsed = head_all_prefixes(wire, &parse);
    let (head, n) = match (parsed, exp) {
        (Err(e), Exp::Head(x)) => return assert_eq!(&e, x, "{name}"),
        (Ok(Some(hn)), _) => hn,
        (other, _) => panic!("{name}: head gave {other:?}, expected {exp:?}"),
    };
    let kind = match (kind_of(&head), exp) {
        (Err(e), Exp::Kind(x)) => return assert_eq!(&e, x, "{name}"),
        (Ok(k), _) => k,
        (other, _) => panic!("{name}: body kind gave {other:?}, expected {exp:?}"),
    };
    let body = &wire[n..];
    match (body_outcome_all_splits(kind, body), exp) {
        (BodyOutcome::Err(e), Exp::Body(x)) => assert_eq!(&e, x, "{name}"),
        (
            BodyOutcome::Ok {
                framed,
                payload,
                trailers,
                done,
                eof,
            },
            Exp::Msg {
                head: h,
                kind: k,
                payload: p,
                trailers: t,
                done: d,
                rest,
            },
        ) => {
            assert_eq!(&head, h, "{name}: head");
            assert_eq!(kind, *k, "{name}: kind");
            assert_eq!(payload, *p, "{name}: payload");
            let t = (!t.is_empty()).then(|| hdrs(t));
            assert_eq!(trailers, t, "{name}: trailers");
            assert_eq!(done, *d, "{name}: done");
            let eof_ok = *d || *k == BodyKind::CloseDelimited;
            assert_eq!(eof.is_ok(), eof_ok, "{name}: eof");
            if !eof_ok {
                assert_eq!(eof, Err(BodyError::Truncated), "{name}");
            }
            assert_eq!(&body[framed..], *rest, "{name}: rest");
        }
        (other, _) => panic!("{name}: body gave {other:?}, expected {exp:?}"),
    }
}

fn req(method: &str, target: &str, version: Version, headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        method: Bytes::copy_from_slice(method.as_bytes()),
        target: Bytes::copy_from_slice(target.as_bytes()),
        version,
        headers: hdrs(headers),
    }
}

fn res(version: Version, status: u16, reason: &[u8], headers: &[(&str, &str)]) -> ResponseHead {
    ResponseHead {
        version,
        status,
        reason: Bytes::copy_from_slice(reason),
        headers: hdrs(headers),
    }
}

use Version::{Http10, Http11};

fn msg<H>(head: H, kind: BodyKind, payload: &'static [u8], rest: &'static [u8]) -> Exp<H> {
    Exp::Msg {
        head,
        kind,
        payload,
        trailers: &[],
        done: true,
        rest,
    }
}

fn request_vectors() -> Vec<(&'static str, &'static [u8], Exp<RequestHead>)> {
    let te = [("Transfer-Encoding", "chunked")];
    vec![
        (
            "origin-form, case and order kept, OWS trimmed",
            &b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nuser-AGENT: x/1\r\nAccept:  \t*/* \t\r\nX-Empty:\r\n\r\n"[..],
            msg(
                req("GET", "/index.html?q=1", Http11, &[("Host", "example.com"), ("user-AGENT", "x/1"), ("Accept", "*/*"), ("X-Empty", "")]),
                BodyKind::Empty,
                &b""[..],
                &b""[..],
            ),
        ),
        (
            "absolute-form",
            &b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"[..],
            msg(req("GET", "http://example.com:8080/a?b", Http11, &[("Host", "example.com:8080")]), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "authority-form, tunnel bytes follow",
            &b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01"[..],
            msg(req("CONNECT", "example.com:443", Http11, &[("Host", "example.com:443")]), BodyKind::Empty, &b""[..], &b"\x16\x03\x01"[..]),
        ),
        (
            "asterisk-form",
            &b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            msg(req("OPTIONS", "*", Http11, &[("Host", "h")]), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "HTTP/1.0 without headers",
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            msg(req("GET", "/", Http10, &[]), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "HTTP/1.2 read as HTTP/1.1",
            &b"\r\nPOST /x HTTP/1.2\r\nHost: h\r\nContent-Length: 2\r\n\r\nokGET"[..],
            msg(req("POST", "/x", Http11, &[("Host", "h"), ("Content-Length", "2")]), BodyKind::Length(2), &b"ok"[..], &b"GET"[..]),
        ),
        (
            "HTTP/1.9 read as HTTP/1.1",
            &b"GET / HTTP/1.9\n\n"[..],
            msg(req("GET", "/", Http11, &[]), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "HTTP/1.0 with Content-Length",
            &b"POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\nok"[..],
            msg(req("POST", "/x", Http10, &[("Content-Length", "2")]), BodyKind::Length(2), &b"ok"[..], &b""[..]),
        ),
        (
            "leading empty line and bare LF",
            &b"\r\nGET / HTTP/1.1\nHost: h\n\n"[..],
            msg(req("GET", "/", Http11, &[("Host", "h")]), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "obs-text in a value",
            &b"GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\n\r\n"[..],
            msg(req("GET", "/", Http11, &[("X-Name", "caf\u{e9}")]), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "Content-Length body, pipelined request follows",
            &b"POST /f HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n"[..],
            msg(
                req("POST", "/f", Http11, &[("Host", "h"), ("content-length", "5")]),
                BodyKind::Length(5),
                &b"hello"[..],
                &b"GET /next HTTP/1.1\r\n\r\n"[..],
            ),
        ),
        (
            "Content-Length: 0",
            &b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
            msg(req("POST", "/", Http11, &[("Content-Length", "0")]), BodyKind::Length(0), &b""[..], &b"GET / HTTP/1.1\r\n\r\n"[..]),
        ),
        (
            "identical repeated Content-Length",
            &b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc"[..],
            msg(
                req("PUT", "/", Http11, &[("Content-Length", "3"), ("Content-Length", "3, 3")]),
                BodyKind::Length(3),
                &b"abc"[..],
                &b""[..],
            ),
        ),
        (
            "chunked",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"[..],
            msg(req("POST", "/", Http11, &te), BodyKind::Chunked, &b"hello world"[..], &b""[..]),
        ),
        (
            "chunked with extensions, upper-case hex, leading zeros, pipelined",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n00A ; x=\"q;\\\" r\"; y\r\n0123456789\r\n0;last\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
            msg(req("POST", "/", Http11, &te), BodyKind::Chunked, &b"hello0123456789"[..], &b"GET / HTTP/1.1\r\n\r\n"[..]),
        ),
        (
            "chunked with trailers",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\nx-more:  v \r\n\r\nrest"[..],
            Exp::Msg {
                head: req("POST", "/", Http11, &[("Transfer-Encoding", "chunked"), ("Trailer", "X-Sum")]),
                kind: BodyKind::Chunked,
                payload: &b"abc"[..],
                trailers: &[("X-Sum", "42"), ("x-more", "v")],
                done: true,
                rest: &b"rest"[..],
            },
        ),
        (
            "zero-length chunked body",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            msg(req("POST", "/", Http11, &te), BodyKind::Chunked, &b""[..], &b""[..]),
        ),
        (
            "gzip then chunked, over two fields, case-insensitive",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: , CHUNKED\r\n\r\n1\r\nz\r\n0\r\n\r\n"[..],
            msg(
                req("POST", "/", Http11, &[("Transfer-Encoding", "gzip"), ("transfer-encoding", ", CHUNKED")]),
                BodyKind::Chunked,
                &b"z"[..],
                &b""[..],
            ),
        ),
        (
            "truncated Content-Length body",
            &b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"[..],
            Exp::Msg {
                head: req("POST", "/", Http11, &[("Content-Length", "10")]),
                kind: BodyKind::Length(10),
                payload: &b"abc"[..],
                trailers: &[],
                done: false,
                rest: &b""[..],
            },
        ),
        (
            "truncated chunked body",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"[..],
            Exp::Msg {
                head: req("POST", "/", Http11, &te),
                kind: BodyKind::Chunked,
                payload: &b"hel"[..],
                trailers: &[],
                done: false,
                rest: &b""[..],
            },
        ),
        // Smuggling and framing errors.
        (
            "CL.TE",
            &b"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"[..],
            Exp::Kind(M("both Transfer-Encoding and Content-Length")),
        ),
        (
            "TE.CL",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n"[..],
            Exp::Kind(M("both Transfer-Encoding and Content-Length")),
        ),
        (
            "differing Content-Length fields",
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
            Exp::Kind(M("conflicting Content-Length values")),
        ),
        (
            "differing Content-Length list",
            &b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"[..],
            Exp::Kind(M("conflicting Content-Length values")),
        ),
        ("signed Content-Length", &b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"[..], Exp::Kind(M("invalid Content-Length"))),
        ("hex Content-Length", &b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n"[..], Exp::Kind(M("invalid Content-Length"))),
        ("empty Content-Length", &b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"[..], Exp::Kind(M("invalid Content-Length"))),
        (
            "overflowing Content-Length",
            &b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n"[..],
            Exp::Kind(M("invalid Content-Length")),
        ),
        (
            "chunked not last",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"[..],
            Exp::Kind(M("chunked is not the final transfer coding")),
        ),
        (
            "chunked twice",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            Exp::Kind(M("chunked is not the final transfer coding")),
        ),
        (
            "an unregistered coding before chunked",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            Exp::Kind(HeadError::CodingNotImplemented),
        ),
        (
            "no chunked at all",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            Exp::Kind(M("chunked is not the final transfer coding")),
        ),
        (
            "lookalike coding",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"[..],
            Exp::Kind(M("chunked is not the final transfer coding")),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            &b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            Exp::Kind(M("Transfer-Encoding in an HTTP/1.0 request")),
        ),
        (
            "quoted chunked",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"[..],
            Exp::Kind(M("invalid transfer coding")),
        ),
        (
            "space inside a coding",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chun ked\r\n\r\n0\r\n\r\n"[..],
            Exp::Kind(M("invalid transfer coding")),
        ),
        (
            "form feed after chunked",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n"[..],
            Exp::Head(M("invalid character in field value")),
        ),
        (
            "parameters on chunked",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n"[..],
            Exp::Kind(M("parameters on the chunked coding")),
        ),
        (
            "empty coding before parameters",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: ;x, chunked\r\n\r\n0\r\n\r\n"[..],
            Exp::Kind(M("invalid transfer coding")),
        ),
        (
            "Transfer-Encoding and Content-Length in HTTP/1.0",
            &b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"[..],
            Exp::Kind(M("Transfer-Encoding in an HTTP/1.0 request")),
        ),
        (
            "signed Content-Length",
            &b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello"[..],
            Exp::Kind(M("invalid Content-Length")),
        ),
        (
            "hex Content-Length",
            &b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello"[..],
            Exp::Kind(M("invalid Content-Length")),
        ),
        (
            "Content-Length list that disagrees",
            &b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello!"[..],
            Exp::Kind(M("conflicting Content-Length values")),
        ),
        (
            "obs-fold",
            &b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n b\r\n\r\n"[..],
            Exp::Head(M("obs-fold line folding")),
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nX: y\r\n\tTransfer-Encoding: chunked\r\n\r\n"[..],
            Exp::Head(M("obs-fold line folding")),
        ),
        (
            "whitespace before first field",
            &b"GET / HTTP/1.1\r\n Host: h\r\n\r\n"[..],
            Exp::Head(M("whitespace before first header field")),
        ),
        (
            "whitespace before colon",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n"[..],
            Exp::Head(M("whitespace between field name and colon")),
        ),
        ("field without colon", &b"GET / HTTP/1.1\r\nHost\r\n\r\n"[..], Exp::Head(M("field line without colon"))),
        ("empty field name", &b"GET / HTTP/1.1\r\n: x\r\n\r\n"[..], Exp::Head(M("empty field name"))),
        ("bad field name", &b"GET / HTTP/1.1\r\nX(y): z\r\n\r\n"[..], Exp::Head(M("invalid character in field name"))),
        ("NUL in value", &b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"[..], Exp::Head(M("invalid character in field value"))),
        ("CR in value", &b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"[..], Exp::Head(M("invalid character in field value"))),
        ("HTTP/2.0 request line", &b"GET / HTTP/2.0\r\n\r\n"[..], Exp::Head(HeadError::VersionNotSupported(2))),
        ("HTTP/3.0 request line", &b"\r\nGET /a HTTP/3.0\r\n\r\n"[..], Exp::Head(HeadError::VersionNotSupported(3))),
        ("HTTP/3 request line", &b"GET /a HTTP/3\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        ("HTTP/2.0, bad method", &b"G(T / HTTP/2.0\r\n\r\n"[..], Exp::Head(M("bad request line"))),
        ("HTTP/2.0, space in target", &b"GET /a b HTTP/2.0\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        ("HTTP/20.0", &b"GET / HTTP/20.0\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        ("HTTP/1.0.1", &b"GET / HTTP/1.0.1\r\n\r\n"[..], Exp::Head(M("bad line ending"))),
        ("HTTP/0.9 with a version", &b"GET / HTTP/0.9\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        ("HTTP/0.9", &b"GET /\r\n\r\n"[..], Exp::Head(M("bad request line"))),
        ("lower-case version", &b"GET / http/1.1\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        ("double space", &b"GET  / HTTP/1.1\r\n\r\n"[..], Exp::Head(M("bad request line"))),
        ("bad method", &b"G(T / HTTP/1.1\r\n\r\n"[..], Exp::Head(M("bad request line"))),
        ("space in target", &b"GET /a b HTTP/1.1\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        ("CR without LF", &b"GET / HTTP/1.1\rX\r\n\r\n"[..], Exp::Head(M("bad line ending"))),
        // Chunked framing errors.
        (
            "data longer than chunk size",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n"[..],
            Exp::Body(BAD("chunk data not followed by CRLF")),
        ),
        (
            "non-hex chunk size",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            Exp::Body(BAD("missing chunk size")),
        ),
        (
            "negative chunk size",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n"[..],
            Exp::Body(BAD("missing chunk size")),
        ),
        (
            "0x prefix",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"[..],
            Exp::Body(BAD("invalid character in chunk size")),
        ),
        (
            "bare LF after chunk size",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"[..],
            Exp::Body(BAD("chunk size line not ended by CRLF")),
        ),
        (
            "bare LF after chunk data",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"[..],
            Exp::Body(BAD("chunk data not followed by CRLF")),
        ),
        (
            "bare LF in extension",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n"[..],
            Exp::Body(BAD("control character in chunk extension")),
        ),
        (
            "chunk size overflow",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"[..],
            Exp::Body(BAD("chunk size overflow")),
        ),
        (
            "bare LF in trailers",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n"[..],
            Exp::Body(BAD("bare LF in trailer section")),
        ),
        (
            "bare LF ending trailers",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n"[..],
            Exp::Body(BAD("bare LF in trailer section")),
        ),
        (
            "obs-fold in trailers",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n 2\r\n\r\n"[..],
            Exp::Body(BAD("invalid trailer field")),
        ),
        (
            "Content-Length in trailers",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 32\r\n\r\n"[..],
            Exp::Body(BAD("framing or Host field in trailer section")),
        ),
        (
            "Transfer-Encoding in trailers",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: 1\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            Exp::Body(BAD("framing or Host field in trailer section")),
        ),
        (
            "Host in trailers",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHOST: elsewhere\r\n\r\n"[..],
            Exp::Body(BAD("framing or Host field in trailer section")),
        ),
        (
            "trailer without colon",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnope\r\n\r\n"[..],
            Exp::Body(BAD("invalid trailer field")),
        ),
        (
            "missing final CRLF before next message",
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET / HTTP/1.1\r\n\r\n"[..],
            Exp::Body(BAD("invalid trailer field")),
        ),
    ]
}

#[test]
fn request_vectors_at_every_split() {
    for (name, wire, exp) in request_vectors() {
        check(
            name,
            wire,
            &exp,
            |b| parse_request_head(b, &Limits::default()),
            request_body_kind,
        );
    }
}

/// (name, request method, wire bytes, expected result).
type ResponseVector = (
    &'static str,
    &'static [u8],
    &'static [u8],
    Exp<ResponseHead>,
);

fn response_vectors() -> Vec<ResponseVector> {
    let cl5 = [("Content-Length", "5")];
    vec![
        (
            "Content-Length",
            &b"GET"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1"[..],
            msg(res(Http11, 200, &b"OK"[..], &cl5), BodyKind::Length(5), &b"hello"[..], &b"HTTP/1.1"[..]),
        ),
        (
            "no reason phrase",
            &b"GET"[..],
            &b"HTTP/1.1 204\r\nX: y\r\n\r\n"[..],
            msg(res(Http11, 204, &b""[..], &[("X", "y")]), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "reason with spaces and obs-text",
            &b"GET"[..],
            &b"HTTP/1.1 404 Not Found \xe9t\xe9\r\nContent-Length: 0\r\n\r\n"[..],
            msg(res(Http11, 404, &b"Not Found \xe9t\xe9"[..], &[("Content-Length", "0")]), BodyKind::Length(0), &b""[..], &b""[..]),
        ),
        (
            "close-delimited",
            &b"GET"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close\r\n0\r\n"[..],
            Exp::Msg {
                head: res(Http11, 200, &b"OK"[..], &[("Content-Type", "text/plain")]),
                kind: BodyKind::CloseDelimited,
                payload: &b"until close\r\n0\r\n"[..],
                trailers: &[],
                done: false,
                rest: &b""[..],
            },
        ),
        (
            "HTTP/1.0 close-delimited",
            &b"GET"[..],
            &b"HTTP/1.0 200 OK\r\n\r\nabc"[..],
            Exp::Msg {
                head: res(Http10, 200, &b"OK"[..], &[]),
                kind: BodyKind::CloseDelimited,
                payload: &b"abc"[..],
                trailers: &[],
                done: false,
                rest: &b""[..],
            },
        ),
        (
            "response to HEAD",
            &b"HEAD"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"[..],
            msg(res(Http11, 200, &b"OK"[..], &cl5), BodyKind::Empty, &b""[..], &b"HTTP/1.1 200 OK\r\n\r\n"[..]),
        ),
        (
            "304 with Content-Length",
            &b"GET"[..],
            &b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"[..],
            msg(res(Http11, 304, &b"Not Modified"[..], &cl5), BodyKind::Empty, &b""[..], &b""[..]),
        ),
        (
            "100 Continue then the final response",
            &b"POST"[..],
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"[..],
            msg(res(Http11, 100, &b"Continue"[..], &[]), BodyKind::Empty, &b""[..], &b"HTTP/1.1 200 OK\r\n\r\n"[..]),
        ),
        (
            "101 Switching Protocols",
            &b"GET"[..],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"[..],
            msg(
                res(Http11, 101, &b"Switching Protocols"[..], &[("Upgrade", "websocket"), ("Connection", "Upgrade")]),
                BodyKind::Empty,
                &b""[..],
                &b"\x81\x00"[..],
            ),
        ),
        (
            "2xx to CONNECT",
            &b"CONNECT"[..],
            &b"HTTP/1.1 200 Connection Established\r\nContent-Length: 5\r\n\r\n\x16\x03"[..],
            msg(res(Http11, 200, &b"Connection Established"[..], &cl5), BodyKind::Empty, &b""[..], &b"\x16\x03"[..]),
        ),
        (
            "407 to CONNECT has a body",
            &b"CONNECT"[..],
            &b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\nnope!"[..],
            msg(res(Http11, 407, &b"Proxy Authentication Required"[..], &cl5), BodyKind::Length(5), &b"nope!"[..], &b""[..]),
        ),
        (
            "chunked with trailers (gRPC style)",
            &b"POST"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;e=1\r\n\x00\x00\x00\x00\r\n0\r\ngrpc-status: 0\r\nGrpc-Message: \r\n\r\n"[..],
            Exp::Msg {
                head: res(Http11, 200, &b"OK"[..], &[("Transfer-Encoding", "chunked")]),
                kind: BodyKind::Chunked,
                payload: &b"\x00\x00\x00\x00"[..],
                trailers: &[("grpc-status", "0"), ("Grpc-Message", "")],
                done: true,
                rest: &b""[..],
            },
        ),
        (
            "coding without chunked is close-delimited",
            &b"GET"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b"[..],
            Exp::Msg {
                head: res(Http11, 200, &b"OK"[..], &[("Transfer-Encoding", "gzip")]),
                kind: BodyKind::CloseDelimited,
                payload: &b"\x1f\x8b"[..],
                trailers: &[],
                done: false,
                rest: &b""[..],
            },
        ),
        (
            "Transfer-Encoding in HTTP/1.0 is close-delimited",
            &b"GET"[..],
            &b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
            Exp::Msg {
                head: res(Http10, 200, &b"OK"[..], &[("Transfer-Encoding", "chunked")]),
                kind: BodyKind::CloseDelimited,
                payload: &b"0\r\n\r\n"[..],
                trailers: &[],
                done: false,
                rest: &b""[..],
            },
        ),
        (
            "TE and CL",
            &b"GET"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"[..],
            Exp::Kind(M("both Transfer-Encoding and Content-Length")),
        ),
        (
            "differing Content-Length",
            &b"GET"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n"[..],
            Exp::Kind(M("conflicting Content-Length values")),
        ),
        ("obs-fold", &b"GET"[..], &b"HTTP/1.1 200 OK\r\nX: a\r\n  b\r\n\r\n"[..], Exp::Head(M("obs-fold line folding"))),
        ("4-digit status", &b"GET"[..], &b"HTTP/1.1 2000 OK\r\n\r\n"[..], Exp::Head(M("bad status line"))),
        ("status below 100", &b"GET"[..], &b"HTTP/1.1 099 X\r\n\r\n"[..], Exp::Head(M("status code below 100"))),
        ("HTTP/2 status line", &b"GET"[..], &b"HTTP/2 200\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        ("ICY", &b"GET"[..], &b"ICY 200 OK\r\n\r\n"[..], Exp::Head(M("unsupported HTTP version"))),
        (
            "whitespace before colon",
            &b"GET"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n"[..],
            Exp::Head(M("whitespace between field name and colon")),
        ),
    ]
}

#[test]
fn response_vectors_at_every_split() {
    for (name, method, wire, exp) in response_vectors() {
        check(
            name,
            wire,
            &exp,
            |b| parse_response_head(b, &Limits::default()),
            |h| response_body_kind(method, h),
        );
    }
}

#[test]
fn pipelined_requests_in_one_buffer() {
    let wire: &[u8] = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\nGET /4 HTTP/1.0\r\n\r\n";
    let mut buf = BytesMut::from(wire);
    let mut seen = Vec::new();
    while !buf.is_empty() {
        let (head, n) = parse_request_head(&buf, &Limits::default())
            .unwrap()
            .unwrap();
        let _ = buf.split_to(n);
        let mut dec = BodyDecoder::new(request_body_kind(&head).unwrap());
        let d = dec.decode(&mut buf).unwrap();
        assert!(d.done);
        let body: Vec<u8> = d.data.iter().flat_map(|b| b.iter().copied()).collect();
        seen.push((head.target, body));
    }
    let targets: Vec<_> = seen
        .iter()
        .map(|(t, b)| (t.as_ref(), b.as_slice()))
        .collect();
    assert_eq!(
        targets,
        vec![
            (&b"/1"[..], &b""[..]),
            (b"/2", b"abc"),
            (b"/3", b"xy"),
            (b"/4", b"")
        ]
    );
}

#[test]
fn head_size_limit() {
    let head = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let exact = Limits {
        max_head_size: head.len(),
        max_headers: 10,
    };
    assert_eq!(
        parse_request_head(head, &exact).unwrap().unwrap().1,
        head.len()
    );
    let small = Limits {
        max_head_size: head.len() - 1,
        ..exact
    };
    assert_eq!(
        parse_request_head(head, &small),
        Err(HeadError::TooLarge(head.len() - 1))
    );
    // An incomplete head is cut as soon as it reaches the limit.
    assert_eq!(
        parse_request_head(&head[..head.len() - 2], &small),
        Ok(None)
    );
    assert_eq!(
        parse_request_head(&head[..head.len() - 1], &small),
        Err(HeadError::TooLarge(head.len() - 1))
    );
    // Slowloris: a field value that never ends.
    let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
    endless.resize(70_000, b'a');
    assert_eq!(
        parse_request_head(&endless, &Limits::default()),
        Err(HeadError::TooLarge(64 * 1024))
    );
    let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
    while endless.len() < 70_000 {
        endless.extend_from_slice(b"X: y\r\n");
    }
    let many = Limits {
        max_headers: 100_000,
        ..Limits::default()
    };
    assert_eq!(
        parse_response_head(&endless, &many),
        Err(HeadError::TooLarge(64 * 1024))
    );
}

#[test]
fn header_count_limit() {
    let mut wire = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..4 {
        wire.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let l = |n| Limits {
        max_head_size: 1024,
        max_headers: n,
    };
    assert_eq!(
        parse_request_head(&wire, &l(3)),
        Err(HeadError::TooManyHeaders(3))
    );
    assert_eq!(
        parse_request_head(&wire, &l(4))
            .unwrap()
            .unwrap()
            .0
            .headers
            .len(),
        4
    );
    assert_eq!(
        parse_request_head(&wire, &l(0)),
        Err(HeadError::TooManyHeaders(0))
    );
    // Above the stack array size the slots come from the heap.
    let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..300 {
        big.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let (h, n) = parse_response_head(&big, &l(300).with_size(64 * 1024))
        .unwrap()
        .unwrap();
    assert_eq!((h.headers.len(), n), (300, big.len()));
    assert_eq!(
        parse_response_head(&big, &l(299).with_size(64 * 1024)),
        Err(HeadError::TooManyHeaders(299))
    );
}

impl Limits {
    fn with_size(mut self, n: usize) -> Self {
        self.max_head_size = n;
        self
    }
}

#[test]
fn parsed_slices_share_one_allocation() {
    let wire = b"MKCOL /p HTTP/1.1\r\nX-Host: h\r\nX-Accept: */x\r\n\r\n";
    let (h, _) = parse_request_head(wire, &Limits::default())
        .unwrap()
        .unwrap();
    let base = h.method.as_ptr() as usize;
    let within = |b: &Bytes| {
        let p = b.as_ptr() as usize;
        p >= base && p + b.len() <= base + wire.len()
    };
    assert!(within(&h.target));
    assert!(h
        .headers
        .iter()
        .all(|f| within(&f.name) && within(&f.value)));
    // Common strings come out as static `Bytes` with the exact wire spelling.
    let wire = b"GET / HTTP/1.1\r\nHost: h\r\nhost: h\r\nHOST: h\r\nConnection: keep-alive\r\n\r\n";
    let (h, _) = parse_request_head(wire, &Limits::default())
        .unwrap()
        .unwrap();
    let names: Vec<&[u8]> = h.headers.iter().map(|f| f.name.as_ref()).collect();
    assert_eq!(names, [&b"Host"[..], b"host", b"HOST", b"Connection"]);
    assert_eq!(h.headers.get("connection").unwrap().as_ref(), b"keep-alive");
}

#[test]
fn decode_is_zero_copy() {
    let mut buf = BytesMut::from(&b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"[..]);
    let start = buf.as_ptr() as usize;
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    let d = dec.decode(&mut buf).unwrap();
    assert!(d.done && d.trailers.is_none());
    assert_eq!(
        d.data,
        vec![Bytes::from_static(b"hello"), Bytes::from_static(b"abc")]
    );
    assert_eq!(d.data[0].as_ptr() as usize, start + 3);
    assert_eq!(d.data[1].as_ptr() as usize, start + 13);
}

#[test]
fn decoder_after_end_and_after_error() {
    let mut dec = BodyDecoder::new(BodyKind::Length(2));
    assert_eq!(
        scan_all(&mut dec, b"abcd").unwrap(),
        Scan {
            consumed: 2,
            done: true
        }
    );
    assert_eq!(
        scan_all(&mut dec, b"cd").unwrap(),
        Scan {
            consumed: 0,
            done: true
        }
    );
    assert_eq!(dec.eof(), Ok(()));
    let mut dec = BodyDecoder::new(BodyKind::Empty);
    assert!(dec.is_done());
    assert_eq!(
        scan_all(&mut dec, b"x").unwrap(),
        Scan {
            consumed: 0,
            done: true
        }
    );
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    assert!(scan_all(&mut dec, b"q").is_err());
    assert_eq!(
        scan_all(&mut dec, b"0\r\n\r\n"),
        Err(BAD("missing chunk size"))
    );
    assert_eq!(dec.eof(), Err(BAD("missing chunk size")));
    let mut dec = BodyDecoder::new(BodyKind::CloseDelimited);
    assert_eq!(
        scan_all(&mut dec, b"abc").unwrap(),
        Scan {
            consumed: 3,
            done: false
        }
    );
    assert_eq!(dec.eof(), Ok(()));
    assert_eq!(
        BodyDecoder::new(BodyKind::Length(1)).eof(),
        Err(BodyError::Truncated)
    );
}

#[test]
fn chunk_line_and_trailer_bounds() {
    let mut long_ext = b"5;".to_vec();
    long_ext.resize(5000, b'a');
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    assert_eq!(
        scan_all(&mut dec, &long_ext),
        Err(BAD("chunk extension too long"))
    );

    let zeros = vec![b'0'; 5000];
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    assert_eq!(
        scan_all(&mut dec, &zeros),
        Err(BAD("chunk size line too long"))
    );

    // Many leading zeros are still a valid size.
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    let ok = b"00000000000000000000005\r\nhello\r\n0\r\n\r\n";
    assert_eq!(
        scan_all(&mut dec, ok).unwrap(),
        Scan {
            consumed: ok.len(),
            done: true
        }
    );
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    assert!(scan_all(&mut dec, b"ffffffffffffffff\r\n").is_ok());

    let mut big = b"0\r\nX: ".to_vec();
    big.resize(70_000, b'v');
    for pieces in [1, 7, 1000] {
        let mut dec = BodyDecoder::new(BodyKind::Chunked);
        let r = big
            .chunks(big.len() / pieces)
            .try_for_each(|p| scan_all(&mut dec, p).map(|_| ()));
        assert_eq!(r, Err(BAD("trailer section too large")));
    }
    let mut many = b"0\r\n".to_vec();
    for _ in 0..101 {
        many.extend_from_slice(b"a: b\r\n");
    }
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    assert_eq!(
        scan_all(&mut dec, &many),
        Err(BAD("too many trailer fields"))
    );
}

#[test]
fn encode_request_head_wire_format() {
    let h = req(
        "POST",
        "/a?b=1",
        Http11,
        &[("Host", "h"), ("x-Lower", "v"), ("Content-Length", "0")],
    );
    let mut out = BytesMut::new();
    encode_request_head(&h, &mut out);
    assert_eq!(
        &out[..],
        b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nx-Lower: v\r\nContent-Length: 0\r\n\r\n"
    );
    let (back, n) = parse_request_head(&out, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!((back, n), (h, out.len()));

    let mut out = BytesMut::new();
    encode_request_head(&req("GET", "/", Version::Http2, &[]), &mut out);
    assert_eq!(&out[..], b"GET / HTTP/1.1\r\n\r\n");
    let mut out = BytesMut::new();
    encode_request_head(&req("GET", "/", Http10, &[]), &mut out);
    assert_eq!(&out[..], b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn encode_response_head_wire_format() {
    let mut out = BytesMut::new();
    encode_response_head(
        &res(Http11, 200, b"OK", &[("Content-Length", "0")]),
        &mut out,
    );
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let mut out = BytesMut::new();
    encode_response_head(&res(Version::Http2, 204, b"", &[]), &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 204 \r\n\r\n");
    let (back, _) = parse_response_head(&out, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(back, res(Http11, 204, b"", &[]));
    let mut out = BytesMut::new();
    encode_response_head(&res(Http10, 404, b"Not Found", &[]), &mut out);
    assert_eq!(&out[..], b"HTTP/1.0 404 Not Found\r\n\r\n");
}

#[test]
fn encoders_keep_plugin_values_from_breaking_framing() {
    let h = req(
        "GE T\r\n",
        "/a b\r\nX: y",
        Http11,
        &[
            ("X-Inject", "a\r\nContent-Length: 5"),
            ("Bad Name", "v"),
            ("", "v"),
            ("Ok", "nul\0"),
        ],
    );
    let mut out = BytesMut::new();
    encode_request_head(&h, &mut out);
    assert_eq!(
        &out[..],
        &b"GET /a%20b%0D%0AX:%20y HTTP/1.1\r\nX-Inject: a  Content-Length: 5\r\nOk: nul \r\n\r\n"[..]
    );
    let mut out = BytesMut::new();
    encode_response_head(&res(Http11, 1000, b"OK\r\nX: y", &[]), &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 999 OK  X: y\r\n\r\n");
}

#[test]
fn chunk_encoding_round_trips() {
    let mut out = BytesMut::new();
    encode_chunk(b"hello", &mut out);
    encode_chunk(b"", &mut out);
    encode_chunk(&[b'x'; 0x1a2], &mut out);
    encode_last_chunk(None, &mut out);
    let mut expected = b"5\r\nhello\r\n1a2\r\n".to_vec();
    expected.extend_from_slice(&[b'x'; 0x1a2]);
    expected.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(&out[..], &expected[..]);

    let trailers = hdrs(&[("grpc-status", "0"), ("X-T", "a b")]);
    let mut out = BytesMut::new();
    encode_chunk(b"abc", &mut out);
    encode_last_chunk(Some(&trailers), &mut out);
    assert_eq!(
        &out[..],
        b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nX-T: a b\r\n\r\n"
    );
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    let d = dec.decode(&mut out).unwrap();
    assert!(d.done && out.is_empty());
    assert_eq!(d.data, vec![Bytes::from_static(b"abc")]);
    assert_eq!(d.trailers, Some(trailers));
}

/// Small deterministic generator so the randomised tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_chunked_bodies_in_random_pieces() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let mut payload = Vec::new();
        let mut wire = BytesMut::new();
        for _ in 0..rng.below(6) {
            let len = rng.below(300);
            let chunk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            encode_chunk(&chunk, &mut wire);
            payload.extend_from_slice(&chunk);
        }
        encode_last_chunk(None, &mut wire);
        let mut pieces = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(40));
            pieces.push(&rest[..n]);
            rest = &rest[n..];
        }
        match body_outcome(BodyKind::Chunked, &pieces) {
            BodyOutcome::Ok {
                framed,
                payload: got,
                done,
                ..
            } => {
                assert!(done);
                assert_eq!(framed, wire.len());
                assert_eq!(got, payload);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    let alphabet = b"GET /HTTP1.0\r\n:; \t0123456789abcdefABCDEF,chunked\0\x7f\xff";
    for _ in 0..3000 {
        let len = rng.below(120);
        let buf: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let small = Limits {
            max_head_size: 64,
            max_headers: 3,
        };
        if let Ok(Some((h, _))) = parse_request_head(&buf, &small) {
            let _ = request_body_kind(&h);
        }
        if let Ok(Some((h, _))) = parse_response_head(&buf, &small) {
            let _ = response_body_kind(b"GET", &h);
        }
        for kind in [
            BodyKind::Chunked,
            BodyKind::Length(7),
            BodyKind::CloseDelimited,
        ] {
            let mut dec = BodyDecoder::new(kind);
            let _ = scan_all(&mut dec, &buf);
            let mut dec = BodyDecoder::new(kind);
            let _ = dec.decode(&mut BytesMut::from(&buf[..]));
        }
    }
}

#[test]
fn good_chunks_before_a_fault_come_out_first() {
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    let wire = b"3\r\nabc\r\nzz\r\n";
    assert_eq!(
        dec.scan(wire),
        Ok(Scan {
            consumed: 8,
            done: false
        })
    );
    assert_eq!(dec.scan(&wire[8..]), Err(BAD("missing chunk size")));
    assert_eq!(dec.eof(), Err(BAD("missing chunk size")));
}

#[test]
fn request_line_sniffing_is_strict() {
    assert!(looks_like_request_start(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    ));
    assert!(looks_like_request_start(b"OPTIONS * HTTP/1.0\r\n"));
    assert!(looks_like_request_start(b"GET http://a/ HTTP/1.1\n"));
    for other in [
        &b"HELLO world\r\n"[..],
        b"GET / HTTP/1.1",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"EHLO example.com\r\n",
        b"get / HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"",
    ] {
        assert!(!looks_like_request_start(other), "{other:?}");
    }
}

#[test]
fn transfer_encoding_is_sent_on_in_one_spelling() {
    let send = |pairs: &[(&str, &str)]| transfer_encoding_to_send(&hdrs(pairs));
    // the common case is left as it is
    assert_eq!(send(&[("Transfer-Encoding", "chunked")]), None);
    let one = |v: &'static str| Some(Bytes::from_static(v.as_bytes()));
    assert_eq!(send(&[("transfer-encoding", "CHUNKED")]), one("chunked"));
    assert_eq!(send(&[("Transfer-Encoding", " chunked\t")]), one("chunked"));
    assert_eq!(send(&[("Transfer-Encoding", ",chunked,")]), one("chunked"));
    assert_eq!(
        send(&[
            ("Transfer-Encoding", "gzip"),
            ("Transfer-Encoding", "Chunked")
        ]),
        one("gzip, chunked")
    );
    // no field, or chunked not last: the caller frames chunked itself
    assert_eq!(send(&[]), one("chunked"));
    assert_eq!(send(&[("Transfer-Encoding", "gzip")]), one("chunked"));
    // every spelling it gives is read back as chunked, in one field
    for pairs in [
        &[("transfer-encoding", "CHUNKED")][..],
        &[
            ("Transfer-Encoding", "gzip"),
            ("Transfer-Encoding", " chunked "),
        ][..],
    ] {
        let v = send(pairs).unwrap();
        let h = hdrs(&[("Transfer-Encoding", std::str::from_utf8(&v).unwrap())]);
        assert!(chunked_is_final(&h), "{v:?}");
    }
}

#[test]
fn response_transfer_codings_that_are_not_tokens_are_refused() {
    let res = |te: &str| {
        let wire = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
        let (head, _) = parse_response_head(wire.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        response_body_kind(b"GET", &head)
    };
    assert_eq!(res("chunked"), Ok(BodyKind::Chunked));
    assert_eq!(res("Chunked "), Ok(BodyKind::Chunked));
    // an unknown coding is read to the close, as RFC 9112 6.3 says
    assert_eq!(res("gzip"), Ok(BodyKind::CloseDelimited));
    assert_eq!(res("\"chunked\""), Err(M("invalid transfer coding")));
    assert_eq!(
        res("chunked;x=1"),
        Err(M("parameters on the chunked coding"))
    );
    assert_eq!(
        res("chunked, chunked"),
        Err(M("chunked is not the final transfer coding"))
    );
}

#[test]
fn framing_trailers_are_never_encoded() {
    let t = hdrs(&[
        ("x-sum", "1"),
        ("Content-Length", "5"),
        ("transfer-encoding", "chunked"),
        ("HOST", "elsewhere"),
        ("grpc-status", "0"),
    ]);
    let mut out = BytesMut::new();
    encode_last_chunk(Some(&t), &mut out);
    assert_eq!(&out[..], b"0\r\nx-sum: 1\r\ngrpc-status: 0\r\n\r\n");
    // and what is written is read back whole
    let mut dec = BodyDecoder::new(BodyKind::Chunked);
    let mut buf = out.clone();
    let d = dec.decode(&mut buf).unwrap();
    assert!(d.done);
    assert_eq!(d.trailers.map(|t| t.len()), Some(2));
}

/// Found by the http1_request fuzz target's differential (http_desync_guardian rates
/// these Severe or Ambiguous): a field named like a framing field with other
/// delimiters was ignored for framing and forwarded, and a CGI-style server that folds
/// '_' into '-' would frame the request by it instead.
#[test]
fn framing_field_lookalikes_are_refused() {
    let lookalikes = [
        "Transfer_Encoding",
        "transfer.encoding",
        "Transfer-Encoding'",
        "TransferEncoding",
        "Content_Length",
        "content-length~",
        "CONTENT__LENGTH",
        "Content2Length",
        "Contents-Length",
        "transferXencoding",
    ];
    for name in lookalikes {
        let wire =
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n{name}: chunked\r\n\r\n");
        let (head, _) = parse_request_head(wire.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            request_body_kind(&head),
            Err(HeadError::Malformed(
                "field name resembling Transfer-Encoding or Content-Length"
            )),
            "{name}"
        );
    }
    // the real names, and names that only start alike, are framing or not as before
    for (name, kind) in [
        ("TRANSFER-ENCODING", BodyKind::Chunked),
        ("X-Transfer-Encoding", BodyKind::Empty),
        ("Content-Length-Range", BodyKind::Empty),
    ] {
        let wire = format!("POST / HTTP/1.1\r\nHost: a\r\n{name}: chunked\r\n\r\n");
        let (head, _) = parse_request_head(wire.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(request_body_kind(&head), Ok(kind), "{name}");
    }
}

/// Request heads as clients send them, for the plain request scan's tests.
const PLAIN_REQUESTS: [&[u8]; 5] = [
    b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:18182\r\n\r\n",
    b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    b"POST /upload HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
    b"OPTIONS * HTTP/1.1\r\nX_Odd.Name: a\tb \x80c\r\nConnection: keep-alive, Upgrade\r\n\r\n",
    b"GET http://h:1/x HTTP/1.1\r\n\r\n",
];

/// The usual heads skip httparse; each of them, with every byte replaced by (and given
/// before it) each byte parsers trip on, cut at every length, with and without a body
/// behind it, and under tight limits: wherever the plain scan takes a head, httparse
/// parses it to the same `RequestHead`.
#[test]
fn plain_request_scan_agrees_with_httparse_under_mutation() {
    let limits = Limits {
        max_head_size: 4096,
        max_headers: 8,
    };
    let body = [b'x'; 100];
    for h in PLAIN_REQUESTS {
        let end = h.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut slots = vec![std::mem::MaybeUninit::uninit(); 8];
        let (head, n) = super::head::scan_plain_request(h, &mut slots)
            .unwrap_or_else(|| panic!("{:?} took httparse", String::from_utf8_lossy(h)));
        assert_eq!(n, end);
        assert_eq!(parse_request_head(h, &limits), Ok(Some((head, n))));
        let swaps = b" \t\r\n:;,/?\x00\x01\x7f\x80\xff0a\"";
        for len in 0..=h.len() {
            plain_request_agrees(&h[..len], &limits);
        }
        for at in 0..h.len() {
            for &b in swaps {
                let mut m = h.to_vec();
                m[at] = b;
                plain_request_agrees(&m, &limits);
                plain_request_agrees(&[&m[..], &body].concat(), &limits);
                m.insert(at, b);
                plain_request_agrees(&m, &limits);
                plain_request_agrees(&[&m[..], &body].concat(), &limits);
            }
        }
        for (size, fields) in [(30, 8), (4096, 1), (4096, 0)] {
            let l = Limits {
                max_head_size: size,
                max_headers: fields,
            };
            plain_request_agrees(h, &l);
            plain_request_agrees(&[h, &body].concat(), &l);
        }
    }
    // an empty line first, a bare LF, whitespace around a value, a later version
    for h in [
        &b"\r\nGET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:  a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
    ] {
        let mut slots = vec![std::mem::MaybeUninit::uninit(); 8];
        assert!(super::head::scan_plain_request(h, &mut slots).is_none());
    }
}
