//! Error responses: malformed requests, unreachable or misbehaving upstreams.

mod support;

use std::time::Duration;
use support::*;

fn get(origin_url: &str, host: &str) -> String {
    format!("GET {origin_url}/ HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// Sends `METHOD <origin>/ HTTP/1.1`, the origin's Host, then `rest` (more fields, the
/// blank line, a body) through a fresh connection to `proxy`; returns the answer.
fn send_raw(proxy: &Proxy, origin: &Origin, method: &str, rest: &str) -> (Client, Response) {
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "{method} {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{rest}",
            origin.url(),
            origin.port()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    (c, r)
}

#[test]
fn malformed_request_line_is_400_and_close() {
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(b"THIS IS NOT HTTP AT ALL\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400, "{}", r.head_str());
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "not closed after 400"
    );
}

#[test]
fn request_line_of_http2_or_later_is_505_and_close() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    for version in ["HTTP/2.0", "HTTP/3.0"] {
        let mut c = Client::connect(proxy.addr);
        // sent in two pieces: the version alone does not decide it before the line ends
        c.send(format!("GET {}/ {version}", origin.url()).as_bytes());
        std::thread::sleep(Duration::from_millis(50));
        c.send(format!("\r\nHost: 127.0.0.1:{}\r\n\r\n", origin.port()).as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 505, "{version}: {}", r.head_str());
        assert!(
            r.head_str()
                .starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
            "{}",
            r.head_str()
        );
        assert!(
            c.closed_within(Duration::from_secs(10)),
            "{version}: not closed"
        );
    }
    // a version that is not of the form HTTP/D.D stays a malformed request
    let mut c = Client::connect(proxy.addr);
    c.send(format!("GET {}/ HTTP/20\r\nHost: x\r\n\r\n", origin.url()).as_bytes());
    assert_eq!(c.read_response().status, 400);
    assert!(
        origin.requests().is_empty(),
        "a refused request reached the origin"
    );
}

#[test]
fn malformed_header_line_is_400_and_close() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let (mut c, r) = send_raw(&proxy, &origin, "GET", "No colon in this line\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.head_str());
    assert!(c.closed_within(Duration::from_secs(10)));
    assert!(
        origin.requests().is_empty(),
        "malformed request reached the origin"
    );
}

#[test]
fn conflicting_content_lengths_are_400() {
    // RFC 9112 6.3 (request smuggling guard).
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let (mut c, r) = send_raw(
        &proxy,
        &origin,
        "POST",
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
    assert_eq!(r.status, 400, "{}", r.head_str());
    assert!(c.closed_within(Duration::from_secs(10)));
    assert!(origin.requests().is_empty());
}

#[test]
fn invalid_content_length_is_400() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let (_c, r) = send_raw(&proxy, &origin, "POST", "Content-Length: -1\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.head_str());
    assert!(origin.requests().is_empty());
}

#[test]
fn upstream_port_closed_is_502_naming_the_reason() {
    let port = closed_port();
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&get(
        &format!("http://127.0.0.1:{port}"),
        &format!("127.0.0.1:{port}"),
    ));
    assert_eq!(r.status, 502, "{}", r.head_str());
    assert!(
        r.body_str().to_ascii_lowercase().contains("refused"),
        "502 body should name the reason (connection refused): {:?}",
        r.body_str()
    );
}

#[test]
fn upstream_port_closed_via_curl_is_502() {
    let port = closed_port();
    let proxy = Proxy::start(&[]);
    let out = curl(&["-x", &proxy.url(), &format!("http://127.0.0.1:{port}/x")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status, 502);
}

#[test]
fn reverse_upstream_down_is_502() {
    let port = closed_port();
    let mode = format!("reverse:http://127.0.0.1:{port}");
    let proxy = Proxy::start(&["--mode", &mode]);
    let out = curl(&[&format!("{}/x", proxy.url())]);
    assert_eq!(out.status, 502, "{}", out.stderr);
}

#[test]
fn unresolvable_host_is_502() {
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&get("http://no-such-host.invalid", "no-such-host.invalid"));
    assert_eq!(r.status, 502, "{}", r.head_str());
    assert!(!r.body.is_empty(), "502 without an explanation");
}

#[test]
fn upstream_timeout_is_504() {
    let origin = Origin::start(never_respond());
    let proxy = Proxy::start(&["--upstream-timeout", "1"]);
    let mut c = Client::connect(proxy.addr);
    c.set_read_timeout(Duration::from_secs(15));
    let r = c.request(&get(&origin.url(), &format!("127.0.0.1:{}", origin.port())));
    assert_eq!(r.status, 504, "{}", r.head_str());
    assert_eq!(origin.requests().len(), 1);
}

#[test]
fn connect_timeout_is_504() {
    // The SYN to a listener with a full accept queue is dropped, so the
    // upstream connect hangs until --connect-timeout.
    let bh = Blackhole::start();
    let proxy = Proxy::start(&["--connect-timeout", "1"]);
    let mut c = Client::connect(proxy.addr);
    c.set_read_timeout(Duration::from_secs(15));
    let r = c.request(&get(&format!("http://{}", bh.addr), &bh.addr.to_string()));
    assert_eq!(r.status, 504, "{}", r.head_str());
}

#[test]
fn garbage_from_upstream_is_502() {
    let origin = Origin::start(raw_response(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&get(&origin.url(), &format!("127.0.0.1:{}", origin.port())));
    assert_eq!(r.status, 502, "{}", r.head_str());
}

#[test]
fn upstream_closing_before_response_is_502() {
    let origin = Origin::start(handler(|ex| {
        ex.read_body()?;
        Ok(Next::Close)
    }));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&get(&origin.url(), &format!("127.0.0.1:{}", origin.port())));
    assert_eq!(r.status, 502, "{}", r.head_str());
}

#[test]
fn truncated_upstream_body_closes_client_connection() {
    let origin = Origin::start(raw_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly twenty bytes...",
    ));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(get(&origin.url(), &format!("127.0.0.1:{}", origin.port())).as_bytes());
    let raw = c
        .read_until_close(Duration::from_secs(10))
        .expect("the proxy must close the client connection when the upstream body is cut");
    let i = find(&raw, b"\r\n\r\n").expect("head relayed");
    let body = &raw[i + 4..];
    assert!(body.len() < 100, "a complete body was invented: {body:?}");
}

#[test]
fn proxy_survives_errors_and_keeps_serving() {
    let origin = Origin::start(fixed(200, &[], b"still here"));
    let proxy = Proxy::start(&["--workers", "1"]);
    for _ in 0..3 {
        let mut c = Client::connect(proxy.addr);
        c.send(b"\x16\x03\x01\x00\xff garbage\r\n\r\n");
        let _ = c.read_until_close(Duration::from_secs(10));
    }
    let out = curl(&["-x", &proxy.url(), &origin.url()]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(out.body, b"still here");
}

#[test]
fn malformed_chunked_request_body_is_400_and_close() {
    // the head has already gone upstream when the body breaks: the client still gets
    // its 400 and the upstream connection is dropped
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    for bad in [
        "zz\r\nabc\r\n0\r\n\r\n",
        "3\r\nabc\r\nffffffffffffffffff1\r\n",
    ] {
        let rest = format!("Transfer-Encoding: chunked\r\n\r\n{bad}");
        let (mut c, r) = send_raw(&proxy, &origin, "POST", &rest);
        assert_eq!(r.status, 400, "{bad:?}: {}", r.head_str());
        assert!(
            String::from_utf8_lossy(&r.body).contains("chunk"),
            "the reason names the framing: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(c.closed_within(Duration::from_secs(10)));
    }
}

#[test]
fn two_host_headers_are_400() {
    // RFC 9112 section 3.2
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let (_c, r) = send_raw(&proxy, &origin, "GET", "Host: other.example\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.head_str());
    assert!(origin.requests().is_empty());
}

#[test]
fn broken_upstream_chunking_passes_the_good_part_then_closes() {
    let origin = Origin::start(raw_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    ));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(get(&origin.url(), &format!("127.0.0.1:{}", origin.port())).as_bytes());
    let raw = c
        .read_until_close(Duration::from_secs(10))
        .expect("the proxy closes the client connection at the fault");
    let i = find(&raw, b"\r\n\r\n").expect("head relayed");
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{raw:?}");
    assert!(
        find(&raw[i..], b"5\r\nhello\r\n").is_some(),
        "the chunk before the fault was lost: {raw:?}"
    );
    assert!(
        find(&raw[i..], b"0\r\n\r\n").is_none(),
        "an end was invented"
    );
}

#[test]
fn transfer_codings_before_chunked_stay_named() {
    // "gzip, chunked": the body is relayed as is, so the gzip coding must stay declared
    let origin = Origin::start(raw_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&get(&origin.url(), &format!("127.0.0.1:{}", origin.port())));
    assert_eq!(r.status, 200, "{}", r.head_str());
    assert_eq!(r.header("transfer-encoding"), Some("gzip, chunked"));
}

#[test]
fn upstream_response_with_many_fields_passes_while_clients_keep_their_limit() {
    // --max-headers guards against clients; an upstream may send more (Set-Cookie...)
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..300 {
        head.extend_from_slice(format!("Set-Cookie: c{i}=v\r\n").as_bytes());
    }
    head.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    let origin = Origin::start(raw_response(&head));
    let proxy = Proxy::start(&[]);
    let out = curl(&["-i", "-x", &proxy.url(), &origin.url()]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(out.body_str().matches("Set-Cookie: ").count(), 300);

    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (_c, r) = send_raw(&proxy, &origin, "GET", &format!("{many}\r\n"));
    assert_eq!(r.status, 431, "{}", r.head_str());
}
