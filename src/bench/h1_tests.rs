use super::*;
use crate::flows::record::{field, BodyRec};
use serde_bytes::ByteBuf;

fn body(b: &[u8]) -> BodyRec {
    BodyRec {
        data: ByteBuf::from(b.to_vec()),
        size: b.len() as u64,
        cut: false,
    }
}

#[test]
fn requests_parse_in_any_split_with_bodies() {
    let wire = b"POST /a?x=1 HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;e=x\r\nc\r\n0\r\nT: 1\r\n\r\nGET";
    for cut in 0..wire.len() - 3 {
        assert!(parse_request(&wire[..cut]).unwrap().is_none(), "cut {cut}");
    }
    let (r, used) = parse_request(wire).unwrap().unwrap();
    assert_eq!(used, wire.len() - 3);
    assert_eq!(
        (r.method, r.target, r.authority()),
        ("POST", "/a?x=1", "h.test")
    );
    assert_eq!(r.body, b"abc");
    assert!(!r.close);
    let (r, _) = parse_request(b"GET http://x.test:81/p?q HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi")
        .unwrap()
        .unwrap();
    assert_eq!((r.authority(), r.origin_form()), ("x.test:81", "/p?q"));
    assert!(r.close, "HTTP/1.0 without keep-alive closes");
    assert_eq!(r.body, b"hi");
    assert!(parse_request(b"\x00\x01 nonsense\r\n\r\n").is_err());
}

#[test]
fn responses_keep_recorded_heads_and_add_framing_only_when_missing() {
    let mut resp = ResponseRec {
        status: 200,
        reason: "Fine".into(),
        headers: vec![
            field("Content-Encoding", "gzip"),
            field("Content-Length", "3"),
        ],
        body: body(b"\x1f\x8b\x08"),
        ..Default::default()
    };
    let e = encode_response(&resp);
    assert_eq!(
        &e.head[..],
        b"HTTP/1.1 200 Fine\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\n"
    );
    assert_eq!(&e.body[..], b"\x1f\x8b\x08");
    // an HTTP/2 recording: no reason, no length
    resp.reason.clear();
    resp.headers = vec![field("content-type", "text/plain")];
    let e = encode_response(&resp);
    assert_eq!(
        &e.head[..],
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\n"
    );
    // trailers force chunking; a recorded chunked head stays as it was
    resp.trailers = vec![field("grpc-status", "0")];
    let e = encode_response(&resp);
    assert!(e.head.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
    assert_eq!(
        &e.body[..],
        b"3\r\n\x1f\x8b\x08\r\n0\r\ngrpc-status: 0\r\n\r\n"
    );
    let (decoded, used) = dechunk(&e.body).unwrap().unwrap();
    assert_eq!((&decoded[..], used), (&b"\x1f\x8b\x08"[..], e.body.len()));
    resp.headers = vec![field("Transfer-Encoding", "chunked")];
    resp.trailers.clear();
    let e = encode_response(&resp);
    assert_eq!(
        &e.head[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    assert_eq!(&e.body[..], b"3\r\n\x1f\x8b\x08\r\n0\r\n\r\n");
}

#[test]
fn cut_bodies_and_bodiless_statuses() {
    let resp = ResponseRec {
        status: 200,
        headers: vec![field("Content-Length", "10"), field("X", "y")],
        body: BodyRec {
            data: ByteBuf::from(b"abc".to_vec()),
            size: 10,
            cut: true,
        },
        ..Default::default()
    };
    let e = encode_response(&resp);
    assert_eq!(
        &e.head[..],
        b"HTTP/1.1 200 OK\r\nX: y\r\ncontent-length: 3\r\n\r\n"
    );
    let e = encode_response(&ResponseRec {
        status: 304,
        reason: "Not Modified".into(),
        ..Default::default()
    });
    assert_eq!(&e.head[..], b"HTTP/1.1 304 Not Modified\r\n\r\n");
    assert!(e.body.is_empty());
}

#[test]
fn requests_encode_with_recorded_host_and_fresh_framing() {
    let req = RequestRec {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "a.test:8080".into(),
        path: "/p?q=1".into(),
        headers: vec![
            field("Connection", "keep-alive"),
            field("Content-Length", "99"),
            field("Accept", "*/*"),
        ],
        body: body(b"hello"),
        ..Default::default()
    };
    assert_eq!(
        encode_request(&req, false),
        b"POST /p?q=1 HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\ncontent-length: 5\r\n\r\nhello"
    );
    let abs = encode_request(&req, true);
    assert!(abs.starts_with(b"POST http://a.test:8080/p?q=1 HTTP/1.1\r\n"));
    let (r, used) = parse_request(&abs).unwrap().unwrap();
    assert_eq!((used, &r.body[..]), (abs.len(), &b"hello"[..]));
}

#[test]
fn set_headers_replaces_in_place_or_adds() {
    let mut req = RequestRec {
        headers: vec![
            field("Cookie", "[redacted]"),
            field("Accept", "*/*"),
            field("cookie", "[redacted]"),
        ],
        ..Default::default()
    };
    set_headers(
        &mut req,
        &[
            ("cookie".into(), "a=1".into()),
            ("X-New".into(), "y".into()),
        ],
    );
    assert_eq!(
        req.headers,
        vec![
            field("cookie", "a=1"),
            field("Accept", "*/*"),
            field("X-New", "y")
        ]
    );
}
