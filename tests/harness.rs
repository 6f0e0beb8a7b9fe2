//! Self-tests of tests/support against itself (no proxy involved), so that a
//! failure in the other test files points at the proxy, not at the harness.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn origin_echo_and_keepalive_direct() {
    let origin = Origin::start(echo());
    let mut c = Client::connect(origin.addr);
    for i in 0..3 {
        let r = c.request(&format!(
            "POST /e{i} HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        ));
        assert_eq!(r.status, 200);
        assert!(r
            .body_str()
            .starts_with(&format!("POST /e{i} HTTP/1.1\r\n")));
        assert!(r.body_str().ends_with("\r\n\r\nhello"));
    }
    assert_eq!(origin.requests_per_conn(), vec![3]);
    assert_eq!(origin.requests()[2].body, b"hello");
}

#[test]
fn origin_chunked_both_ways_direct() {
    let origin = Origin::start(chunked(
        vec![b"abc".to_vec(), b"defg".to_vec()],
        vec![("X-Checksum".into(), "42".into())],
    ));
    let mut c = Client::connect(origin.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\nX-T: 1\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body, b"abcdefg");
    assert_eq!(
        r.trailers,
        vec![("X-Checksum".to_string(), "42".to_string())]
    );
    let rec = &origin.requests()[0];
    assert_eq!(rec.body, b"xyz");
    assert_eq!(rec.trailers, vec![("X-T".to_string(), "1".to_string())]);
}

#[test]
fn origin_sink_stream_and_expect_direct() {
    let origin = Origin::start(sink());
    let mut c = Client::connect(origin.addr);
    let n = 3 * 1024 * 1024 + 7;
    c.send(
        format!(
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: {n}\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().status, 100);
    write_pattern(c.stream(), n).unwrap();
    let r = c.read_response();
    assert_eq!(r.body_str(), n.to_string());
    assert_eq!(r.header("x-sink-pattern-ok"), Some("true"));

    let origin = Origin::start(stream_bytes(n));
    let mut c = Client::connect(origin.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut check = PatternCheck::default();
    check.feed(&r.body);
    assert_eq!(check.count, n);
    assert!(check.ok());
    let mut bad = PatternCheck::default();
    bad.feed(b"\x00\x01\x03");
    assert_eq!(bad.first_mismatch, Some(2));
}

#[test]
fn origin_close_delimited_and_idle_close_direct() {
    let origin = Origin::start(close_delimited(b"until close"));
    let mut c = Client::connect(origin.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.body, b"until close");

    let origin = Origin::start_with(
        fixed(200, &[], b"x"),
        OriginOptions {
            idle_close: Some(Duration::from_millis(100)),
        },
    );
    let mut c = Client::connect(origin.addr);
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert!(c.closed_within(Duration::from_secs(5)));
    assert!(wait_until(Duration::from_secs(5), || origin.conns()[0].ended));
    assert!(!origin.conns()[0].peer_closed);
}

#[test]
fn echo_server_and_blackhole_direct() {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    let echo = EchoServer::start();
    let mut s = TcpStream::connect(echo.addr).unwrap();
    s.set_read_timeout(Some(IO_WAIT)).unwrap();
    s.write_all(b"ping").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, [ECHO_BANNER, b"ping", ECHO_FAREWELL].concat());

    let bh = Blackhole::start();
    assert!(TcpStream::connect_timeout(&bh.addr, Duration::from_millis(300)).is_err());
}

#[test]
fn curl_is_available() {
    let origin = Origin::start(fixed(201, &[], b"made"));
    let out = curl(&[&origin.url()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status, 201);
    assert_eq!(out.body, b"made");
}
