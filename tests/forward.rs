//! Forward proxy (`--mode regular`, the default): absolute-form requests.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn curl_get_through_forward_proxy() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let url = format!("{}/hello/world?x=1&y=%20", origin.url());
    let out = curl(&["-x", &proxy.url(), &url]);
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.status, 200);
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    // The origin gets origin-form, with the Host of the absolute URL.
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, "/hello/world?x=1&y=%20");
    assert_eq!(
        reqs[0].header("host"),
        Some(format!("127.0.0.1:{}", origin.port()).as_str())
    );
    // The client gets the origin's response unchanged: its body echoes the head.
    assert!(
        out.body_str()
            .starts_with("GET /hello/world?x=1&y=%20 HTTP/1.1\r\n"),
        "body: {}",
        out.body_str()
    );
}

#[test]
fn curl_post_body_through_forward_proxy() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let body = "a=1&b=two&c=%E2%9C%93";
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--data-binary",
        body,
        &format!("{}/form", origin.url()),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status, 200);
    let rec = &origin.requests()[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.body, body.as_bytes());
    assert_eq!(rec.header("content-length"), Some("21"));
    assert!(out.body_str().ends_with(body));
}

#[test]
fn response_status_and_headers_relayed() {
    let origin = Origin::start(fixed(
        404,
        &[
            ("X-Custom", "kept"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ],
        b"no such thing",
    ));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "GET {}/missing HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.url(),
        origin.port()
    ));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-custom"), Some("kept"));
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, vec!["a=1", "b=2"]);
    assert_eq!(r.body, b"no such thing");
}

#[test]
fn request_headers_relayed_and_hop_by_hop_removed() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "GET {}/h HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Keep: 1\r\nX-Keep: 2\r\n\
         Proxy-Connection: keep-alive\r\n\
         Connection: X-Drop-Me\r\nX-Drop-Me: secret\r\n\r\n",
        origin.url(),
        origin.port()
    ));
    assert_eq!(r.status, 200);
    let rec = &origin.requests()[0];
    let keeps: Vec<&str> = rec
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-keep"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        keeps,
        vec!["1", "2"],
        "head: {}",
        String::from_utf8_lossy(&rec.raw_head)
    );
    // Hop-by-hop fields (RFC 9110 7.6.1) are not forwarded.
    for hop in ["proxy-connection", "x-drop-me"] {
        assert_eq!(
            rec.header(hop),
            None,
            "{hop} forwarded: {}",
            String::from_utf8_lossy(&rec.raw_head)
        );
    }
}

#[test]
fn pipelined_requests_answered_in_order() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    let host = format!("127.0.0.1:{}", origin.port());
    let mut batch = String::new();
    for i in 1..=3 {
        batch.push_str(&format!(
            "GET {}/p{i} HTTP/1.1\r\nHost: {host}\r\n\r\n",
            origin.url()
        ));
    }
    c.send(batch.as_bytes());
    for i in 1..=3 {
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-echo-target"), Some(format!("/p{i}").as_str()));
    }
    assert_eq!(origin.requests().len(), 3);
}

#[test]
fn pipelined_posts_with_bodies_in_one_write() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let host = format!("127.0.0.1:{}", origin.port());
    let mut batch = String::new();
    for i in 1..=3 {
        let body = format!("body-{i}-{}", "x".repeat(i * 10));
        batch.push_str(&format!(
            "POST {}/b{i} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
            origin.url(),
            body.len()
        ));
    }
    c.send(batch.as_bytes());
    for i in 1..=3 {
        let r = c.try_read_response_to("POST").unwrap_or_else(|e| {
            panic!(
                "response {i} of 3: {e}; origin got {:?}",
                origin
                    .requests()
                    .iter()
                    .map(|r| (r.target.clone(), r.body_len))
                    .collect::<Vec<_>>()
            )
        });
        assert_eq!(r.header("x-echo-target"), Some(format!("/b{i}").as_str()));
        let expect = format!("body-{i}-{}", "x".repeat(i * 10));
        assert!(r.body_str().ends_with(&expect), "{}", r.body_str());
    }
}

#[test]
fn http10_client_gets_response_then_close() {
    let origin = Origin::start(fixed(200, &[], b"for an old client"));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "GET {}/old HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            origin.url(),
            origin.port()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"for an old client");
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "proxy kept an HTTP/1.0 connection (no keep-alive) open"
    );
}

#[test]
fn http10_keep_alive_is_honoured_when_the_length_is_known() {
    let origin = Origin::start(fixed(200, &[], b"kept"));
    let chunky = Origin::start(chunked(vec![b"no length".to_vec()], vec![]));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    for round in 0..3 {
        c.send(
            format!(
                "GET {}/ka HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nConnection: Keep-Alive\r\n\r\n",
                origin.url(),
                origin.port()
            )
            .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"kept"[..]),
            "round {round}"
        );
        assert!(
            r.has_token("connection", "keep-alive"),
            "an HTTP/1.0 client must be told the connection persists: {}",
            r.head_str()
        );
    }
    // a body without a length can only end with the connection
    c.send(
        format!(
            "GET {}/c HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
            chunky.url()
        )
        .as_bytes(),
    );
    let raw = c
        .read_until_close(Duration::from_secs(10))
        .expect("close after a body of unknown length");
    assert!(
        raw.ends_with(b"no length"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn http10_client_never_gets_chunked() {
    // RFC 9112 7.1: chunked must not be sent to an HTTP/1.0 recipient.
    let origin = Origin::start(chunked(
        vec![b"part one, ".to_vec(), b"part two".to_vec()],
        vec![],
    ));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "GET {}/old HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            origin.url(),
            origin.port()
        )
        .as_bytes(),
    );
    let raw = c
        .read_until_close(Duration::from_secs(10))
        .expect("HTTP/1.0 response must end with a close");
    let i = find(&raw, b"\r\n\r\n").expect("a response head");
    let head = parse_response_head(&raw[..i + 4]).unwrap();
    assert_eq!(head.status, 200);
    assert!(
        !head.has_token("transfer-encoding", "chunked"),
        "chunked sent to HTTP/1.0 client: {}",
        head.head_str()
    );
    assert_eq!(&raw[i + 4..], b"part one, part two");
}

#[test]
fn set_request_and_response_header_steps() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[
        "--set-request-header",
        "X-Added-Req=one",
        "--set-response-header",
        "X-Added-Resp=two",
    ]);
    let out = curl(&["-i", "-x", &proxy.url(), &format!("{}/s", origin.url())]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(origin.requests()[0].header("x-added-req"), Some("one"));
    assert!(
        out.body_str()
            .to_ascii_lowercase()
            .contains("x-added-resp: two"),
        "{}",
        out.body_str()
    );
}

#[test]
fn two_origins_through_one_client_connection() {
    let a = Origin::start(fixed(200, &[], b"from a"));
    let b = Origin::start(fixed(200, &[], b"from b"));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    for (o, expect) in [(&a, "from a"), (&b, "from b"), (&a, "from a")] {
        let r = c.request(&format!(
            "GET {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            o.url(),
            o.port()
        ));
        assert_eq!(r.body_str(), expect);
    }
    assert_eq!(a.requests().len(), 2);
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn access_log_has_one_line_per_request() {
    let origin = Origin::start(fixed(201, &[], b"made"));
    let proxy = Proxy::start(&["--access-log"]);
    let url = format!("{}/logged?q=1", origin.url());
    let out = curl(&["-x", &proxy.url(), &url]);
    assert_eq!(out.status, 201, "{}", out.stderr);
    let line = format!("\"GET {url} HTTP/1.1\" 201 ");
    assert!(
        proxy.wait_stderr(&line, Duration::from_secs(5)),
        "no access line {line:?} in:\n{}",
        proxy.stderr()
    );
    // without the flag, nothing per request
    let quiet = Proxy::start(&[]);
    let out = curl(&["-x", &quiet.url(), &url]);
    assert_eq!(out.status, 201);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!quiet.stderr().contains("\"GET "), "{}", quiet.stderr());
}
