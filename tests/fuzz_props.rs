//! The cargo-fuzz targets (src/fuzzing.rs) as property tests on stable Rust: each
//! target gets generated inputs (pieces of its protocol glued together and mutated,
//! since random bytes rarely get past a parser's first check), and every file of the
//! checked-in corpus (fuzz/corpus/TARGET/) is replayed.

use luring::fuzzing;
use proptest::prelude::*;
use proptest::test_runner::Config;

#[path = "../fuzz/src/desync.rs"]
mod desync;

/// Inputs glued from `pool` pieces and random runs, then a few bytes overwritten.
fn glued(pool: &'static [&'static [u8]], max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(pool).prop_map(|p| p.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    (
        any::<u8>(),
        prop::collection::vec(piece, 0..max),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(seed, parts, flips)| {
            let mut v = vec![seed];
            for p in parts {
                v.extend_from_slice(&p);
            }
            if v.len() > 1 {
                for (at, b) in flips {
                    let i = 1 + at.index(v.len() - 1);
                    v[i] = b;
                }
            }
            v
        })
}

/// Glued inputs most of the time, plain random bytes sometimes.
fn input(pool: &'static [&'static [u8]], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => glued(pool, max),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// 400 cases per target (about a second in all); PROPTEST_CASES=N for a longer run.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

const HTTP_REQUEST: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"GET /a/b?c=d&e=%20f HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"GET http://example.com:8080/x HTTP/1.1\r\n",
    b"User-Agent: curl/8.5.0 (x86_64-pc-linux-gnu) libcurl/8.5.0 OpenSSL/3.0\r\n",
    b"Accept: */*\r\n",
    b"POST /upload HTTP/1.1\r\n",
    b"PUT /x HTTP/1.0\r\n",
    b"Host: example.com\r\n",
    b"Host: a\r\nHost: b\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: 5, 6\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 0x5\r\n",
    b"Content-Length: 99999999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Transfer-Encoding:\tchunked\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b" Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: \"chunked\"\r\n",
    b"Transfer-Encoding: chunked;q=1\r\n",
    b"Transfer_Encoding: chunked\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"Connection: keep-alive, upgrade\r\n",
    b"Expect: 100-continue\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"0;ext=1\r\nTrailer: x\r\n\r\n",
    b"ffffffffffffffffff\r\n",
    b"hello",
];

const HTTP_RESPONSE: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 204 No Content\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 304 \r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 3, 4\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"Set-Cookie: a=b\r\n",
    b"Content-Type: application/octet-stream\r\n",
    b"Date: Tue, 08 Dec 2026 00:00:00 GMT\r\n",
    b"X-Name_With.Dots: a\tb \x80\r\n",
    // a body behind the head, so lines get the 64-byte look of the plain scan
    b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    b"\r\n",
    b"\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"abc",
];

const CHUNKED: &[&[u8]] = &[
    b"5\r\nhello\r\n",
    b"1\r\nx\r\n",
    b"A\r\n0123456789\r\n",
    b"0\r\n\r\n",
    b"0\r\n",
    b"1;name=value\r\nx\r\n",
    b"1 ;a=\"q\"\r\nx\r\n",
    b"1\t\r\nx\r\n",
    b"Trailer-Field: v\r\n",
    b"Bad Field: v\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"ffffffffffffffffff\r\n",
    b"-1\r\n",
    b"0x1\r\n",
    b"1\nx\n",
];

const SOCKS5: &[&[u8]] = &[
    b"\x05\x01\x00",
    b"\x05\x02\x00\x02",
    b"\x05\x00",
    b"\x01\x04user\x04pass",
    b"\x01\x00\x00",
    b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50",
    b"\x05\x01\x00\x03\x0bexample.com\x01\xbb",
    b"\x05\x01\x00\x03\x00",
    b"\x05\x01\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x50",
    b"\x05\x02\x00\x05",
    b"\x04\x01",
    b"\xff",
];

const WS: &[&[u8]] = &[
    b"\x81\x05hello",
    b"\x81\x85\x01\x02\x03\x04iglhn",
    b"\x01\x03abc",
    b"\x80\x02de",
    b"\x00\x01f",
    b"\x89\x00",
    b"\x8a\x00",
    b"\x88\x02\x03\xe8",
    b"\x82\x7e\x00\x7e",
    b"\x82\x7f\x00\x00\x00\x00\x00\x00\x00\x7e",
    b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xc1\x00",
    b"\xf1\x00",
    b"\x09\x00",
];

const SSE: &[&[u8]] = &[
    b"data: hello\n",
    b"data:x\r\n",
    b"event: update\n",
    b"id: 7\n",
    b"retry: 1000\n",
    b"retry: x\n",
    b": keep-alive\n",
    b"custom: field\n",
    b"data\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"\xEF\xBB\xBF",
    b"id: a\0b\n",
];

const CLIENT_HELLO: &[&[u8]] = &[
    // record header + handshake header of a ClientHello, lengths to be fuzzed
    b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x03",
    b"\x16\x03\x01\x00\x04\x01\x00\x00\x40",
    &[0u8; 32],
    b"\x00",
    b"\x00\x04\x13\x01\x0a\x0a",
    b"\x01\x00",
    b"\x00\x20",
    b"\x00\x00\x00\x0e\x00\x0c\x00\x00\x09localhost",
    b"\x00\x10\x00\x05\x00\x03\x02h2",
    b"\x00\x2b\x00\x03\x02\x03\x04",
    b"\x00\x0a\x00\x04\x00\x02\x00\x1d",
    b"\x00\x0d\x00\x04\x00\x02\x04\x03",
    b"\x00\x0b\x00\x02\x01\x00",
];

const GRPC: &[&[u8]] = &[
    b"\x00\x00\x00\x00\x05hello",
    b"\x01\x00\x00\x00\x02ab",
    b"\x00\x00\x00\x00\x00",
    b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n",
    b"\x80\x00\x00\x00\x00",
    b"\x00\xff\xff\xff\xff",
    b"\x02\x00\x00\x00\x01x",
    b"abc",
];

const GRPC_TEXT: &[&[u8]] = &[
    b"AAAAAAVoZWxsbw==",
    b"gAAAAA9ncnBjLXN0YXR1czowDQo=",
    b"AAAA",
    b"==",
    b"=",
    b"A",
    b"\r\n",
    b"*",
    b"-_",
];

const PROTOBUF: &[&[u8]] = &[
    b"\x08\x96\x01",
    b"\x12\x03abc",
    b"\x1a\x03\x08\x01\x10",
    b"\x25\x00\x00\x80\x3f",
    b"\x29\x00\x00\x00\x00\x00\x00\xf0\x3f",
    b"\x0b\x08\x01\x0c",
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x80\x80\x80\x80\x10",
    b"\x00",
];

const FLOW_FILE: &[&[u8]] = &[
    // mode byte 1 frames the rest: kind, flags, length (u16 LE), payload
    b"\x01\x00\x05\x00",
    b"\x02\x00\x10\x00",
    b"\x02\x01\x10\x00",
    b"\x04\x00\x03\x00",
    b"\x93\x01\x02\x03",
    b"\x80",
    b"\x90",
    b"\xa3abc",
    b"\xc4\x02ab",
    b"\x28\xb5\x2f\xfd",
    b"LURFLOWS\x01\x00\0\0\0\0\0\0",
];

const HAR: &[&[u8]] = &[
    b"{\"log\":{\"version\":\"1.2\",\"entries\":[",
    b"{\"request\":{\"method\":\"GET\",\"url\":\"http://a/\",\"httpVersion\":\"HTTP/1.1\",\"headers\":[],\"queryString\":[],\"cookies\":[],\"headersSize\":-1,\"bodySize\":0},",
    b"\"response\":{\"status\":200,\"statusText\":\"OK\",\"httpVersion\":\"HTTP/1.1\",\"headers\":[{\"name\":\"a\",\"value\":\"b\"}],\"cookies\":[],\"content\":{\"size\":3,\"mimeType\":\"text/plain\",\"text\":\"YWJj\",\"encoding\":\"base64\"},\"redirectURL\":\"\",\"headersSize\":-1,\"bodySize\":3},",
    b"\"startedDateTime\":\"2024-01-01T00:00:00.000Z\",\"time\":1,\"timings\":{\"send\":0,\"wait\":1,\"receive\":0},\"cache\":{}}",
    b",",
    b"]}}",
    b"\"_webSocketMessages\":[{\"type\":\"send\",\"time\":1.5,\"opcode\":1,\"data\":\"hi\"}],",
    b"\"postData\":{\"mimeType\":\"text/plain\",\"text\":\"x\"},",
    b"null",
    b"\"\\u0000\"",
    b"1e999",
    b"-1",
];

const MITM: &[&[u8]] = &[
    b"5:hello,",
    b"1:5#",
    b"3:1.5^",
    b"4:true!",
    b"0:~",
    b"0:]",
    b"0:}",
    b"4:type;",
    b"4:http,",
    b"7:version;",
    b"2:21#",
    b"7:request;",
    b"6:method;",
    b"3:GET,",
    b"4:host;",
    b"999999999:",
    b"}",
    b"]",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn http1_request(data in input(HTTP_REQUEST, 12)) {
        fuzzing::http1_request(&data, &desync::classify);
    }

    #[test]
    fn http1_response(data in input(HTTP_RESPONSE, 10).prop_flat_map(|d| (any::<u8>(), Just(d)))
        .prop_map(|(m, mut d)| { d.insert(0, m); d })) {
        fuzzing::http1_response(&data);
    }

    #[test]
    fn chunked(data in input(CHUNKED, 10)) {
        fuzzing::chunked(&data);
    }

    #[test]
    fn socks5(data in input(SOCKS5, 5)) {
        fuzzing::socks5(&data);
    }

    #[test]
    fn ws(data in input(WS, 8).prop_flat_map(|d| (any::<u8>(), Just(d)))
        .prop_map(|(m, mut d)| { d.insert(0, m); d })) {
        fuzzing::ws(&data);
    }

    #[test]
    fn sse(data in input(SSE, 12)) {
        fuzzing::sse(&data);
    }

    #[test]
    fn client_hello(data in input(CLIENT_HELLO, 10)) {
        fuzzing::client_hello(&data);
    }

    #[test]
    fn grpc_frames(data in input(GRPC, 8).prop_flat_map(|d| (any::<u8>(), Just(d)))
        .prop_map(|(m, mut d)| { d.insert(0, m); d })) {
        fuzzing::grpc_frames(&data);
    }

    #[test]
    fn grpc_web_text(data in input(GRPC_TEXT, 10)) {
        fuzzing::grpc_web_text(&data);
    }

    #[test]
    fn protobuf(data in input(PROTOBUF, 10)) {
        fuzzing::protobuf(data.get(1..).unwrap_or_default());
    }

    #[test]
    fn flow_file(data in input(FLOW_FILE, 8)) {
        fuzzing::flow_file(&data);
    }

    #[test]
    fn har_import(data in input(HAR, 10)) {
        fuzzing::har_import(&data);
    }

    #[test]
    fn mitm_import(data in input(MITM, 16)) {
        fuzzing::mitm_import(data.get(1..).unwrap_or_default());
    }
}

/// A corpus directory name and its target.
type Target = (&'static str, fn(&[u8]));

/// Every file of the checked-in corpus, through its target: the inputs cargo-fuzz
/// found interesting (and any crash turned regression) run in every CI build.
#[test]
fn corpus_replays() {
    let targets: &[Target] = &[
        ("http1_request", |d| {
            fuzzing::http1_request(d, &desync::classify)
        }),
        ("http1_response", fuzzing::http1_response),
        ("chunked", fuzzing::chunked),
        ("socks5", fuzzing::socks5),
        ("ws", fuzzing::ws),
        ("sse", fuzzing::sse),
        ("client_hello", fuzzing::client_hello),
        ("grpc_frames", fuzzing::grpc_frames),
        ("grpc_web_text", fuzzing::grpc_web_text),
        ("protobuf", fuzzing::protobuf),
        ("flow_file", fuzzing::flow_file),
        ("har_import", fuzzing::har_import),
        ("mitm_import", fuzzing::mitm_import),
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (name, target) in targets {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            let caught = std::panic::catch_unwind(|| target(&data));
            assert!(caught.is_ok(), "{} fails", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus under {}", root.display());
}

/// The differential's classifier still refuses what smuggles, so the http1_request
/// target can fail: the let-through rules in fuzz/src/desync.rs are narrow.
#[test]
fn classifier_flags_framing_conflicts() {
    use fuzzing::Side;
    let head = |fields: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
    for side in [Side::Received, Side::Forwarded] {
        for bad in [
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding : chunked\r\n",
        ] {
            assert!(
                desync::classify(head(bad).as_bytes(), side).is_err(),
                "{bad}"
            );
        }
        for ok in [
            "Content-Length: 4\r\n",
            "Transfer-Encoding: chunked\r\n",
            "Content-Lengt~: x\r\n",
        ] {
            assert_eq!(desync::classify(head(ok).as_bytes(), side), Ok(()), "{ok}");
        }
    }
    // a Content-Length list is let through only as received (luring forwards one value)
    let list = head("Content-Length: 4, 4\r\n");
    assert!(desync::classify(list.as_bytes(), Side::Forwarded).is_err());
    assert_eq!(desync::classify(list.as_bytes(), Side::Received), Ok(()));
}
