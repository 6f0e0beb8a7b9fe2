//! Message bodies: chunked both ways with trailers, Expect: 100-continue, HEAD,
//! bodiless statuses.

mod support;

use support::*;

fn host(origin: &Origin) -> String {
    format!("127.0.0.1:{}", origin.port())
}

#[test]
fn chunked_request_body_and_trailers_relayed() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "POST {}/chunked HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Req-Trailer\r\n\r\n",
            origin.url(),
            host(&origin)
        )
        .as_bytes(),
    );
    c.send(b"5\r\nhello\r\n");
    c.send(b"7;ext=1\r\n, world\r\n");
    c.send(b"0\r\nX-Req-Trailer: sent-after\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    let rec = &origin.requests()[0];
    assert_eq!(rec.body, b"hello, world");
    assert!(
        rec.trailers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-req-trailer") && v == "sent-after"),
        "trailers at origin: {:?}; head: {}",
        rec.trailers,
        String::from_utf8_lossy(&rec.raw_head)
    );
    assert_eq!(r.header("x-echo-body-len"), Some("12"));
}

#[test]
fn chunked_response_body_and_trailers_relayed() {
    let chunks: Vec<Vec<u8>> = vec![b"first ".to_vec(), pattern_vec(100_000), b" last".to_vec()];
    let origin = Origin::start(chunked(
        chunks.clone(),
        vec![
            ("X-Checksum".into(), "abc123".into()),
            ("X-Count".into(), "3".into()),
        ],
    ));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "GET {}/c HTTP/1.1\r\nHost: {}\r\nTE: trailers\r\n\r\n",
        origin.url(),
        host(&origin)
    ));
    assert_eq!(r.status, 200);
    assert!(
        r.body == chunks.concat(),
        "body differs ({} bytes)",
        r.body.len()
    );
    assert!(
        r.has_token("transfer-encoding", "chunked"),
        "trailers need chunked framing: {}",
        r.head_str()
    );
    let find_t = |n: &str| {
        r.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        find_t("x-checksum").as_deref(),
        Some("abc123"),
        "{:?}",
        r.trailers
    );
    assert_eq!(find_t("x-count").as_deref(), Some("3"));
    // The connection stays usable after a chunked response.
    let r2 = c.request(&format!(
        "GET {}/c2 HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url(),
        host(&origin)
    ));
    assert!(r2.body == chunks.concat());
}

#[test]
fn curl_chunked_upload() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let dir = TempDir::new("chunked");
    let file = dir.path("body.bin");
    let data = pattern_vec(50_000);
    std::fs::write(&file, &data).unwrap();
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{}/up", origin.url()),
    ]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    let rec = &origin.requests()[0];
    assert!(rec.body == data, "body len {}", rec.body.len());
}

#[test]
fn curl_expect_100_continue() {
    let origin = Origin::start(sink());
    let proxy = Proxy::start(&[]);
    let dir = TempDir::new("expect");
    let file = dir.path("big.bin");
    let n = 2 * 1024 * 1024;
    std::fs::write(&file, pattern_vec(n)).unwrap();
    // A long expect timeout so that curl only sends the body early if it
    // actually got the 100 Continue.
    let out = curl(&[
        "-v",
        "-x",
        &proxy.url(),
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "20",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{}/sink", origin.url()),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status, 200);
    assert_eq!(out.body_str(), n.to_string());
    assert!(
        out.stderr.contains("HTTP/1.1 100 Continue"),
        "no 100 Continue seen by curl:\n{}",
        out.stderr
    );
}

#[test]
fn raw_expect_100_continue() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "POST {}/e HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            origin.url(),
            host(&origin)
        )
        .as_bytes(),
    );
    let interim = c.read_response();
    assert_eq!(
        interim.status,
        100,
        "expected 100 Continue before sending the body, got {}",
        interim.head_str()
    );
    c.send(b"hello");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("hello"));
    assert_eq!(origin.requests()[0].body, b"hello");
}

#[test]
fn expect_100_continue_early_final_response_relayed() {
    // The origin refuses without reading the body: the client gets the final
    // status, not a 100, and the proxy does not wait for the body.
    let origin = Origin::start(handler(|ex| {
        ex.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
        )?;
        Ok(Next::Close)
    }));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "POST {}/big HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n",
            origin.url(),
            host(&origin)
        )
        .as_bytes(),
    );
    // The proxy may answer 100 itself (RFC 9110 10.1.1 allows it); then the
    // client sends its body, as a real client would. Either way the origin's
    // early final response must reach the client.
    let mut r = c.read_response();
    let mut writer = None;
    if r.status == 100 {
        let mut w = c.stream().try_clone().unwrap();
        writer = Some(std::thread::spawn(move || {
            // The proxy may stop reading once it has the final response.
            let _ = write_pattern(&mut w, 1_000_000);
        }));
        r = c.read_response();
    }
    assert_eq!(r.status, 413, "{}", r.head_str());
    assert_eq!(r.body, b"nope");
    if let Some(w) = writer {
        w.join().unwrap();
    }
}

#[test]
fn head_response_has_no_body() {
    let origin = Origin::start(fixed(
        200,
        &[("Content-Length", "1234"), ("Content-Type", "text/plain")],
        &[b'x'; 1234],
    ));
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "HEAD {}/h HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url(),
        host(&origin)
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1234"));
    // Had the proxy waited for (or sent) 1234 body bytes, this would break.
    let r2 = c.request(&format!(
        "GET {}/g HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url(),
        host(&origin)
    ));
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body.len(), 1234);
    assert_eq!(origin.requests()[0].method, "HEAD");
}

#[test]
fn curl_head_request() {
    let origin = Origin::start(fixed(200, &[("Content-Length", "99")], &[b'y'; 99]));
    let proxy = Proxy::start(&[]);
    let out = curl(&["-I", "-x", &proxy.url(), &format!("{}/", origin.url())]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status, 200);
    assert!(out
        .body_str()
        .to_ascii_lowercase()
        .contains("content-length: 99"));
}

#[test]
fn no_body_statuses_204_and_304() {
    let origin = Origin::start(handler(|ex| {
        ex.read_body()?;
        let out: &[u8] = if ex.req.target == "/204" {
            b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
        } else if ex.req.target == "/304" {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 50\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        ex.write(out)?;
        Ok(Next::KeepAlive)
    }));
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    for (path, status) in [("/204", 204), ("/304", 304), ("/200", 200)] {
        let r = c.request(&format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url(),
            host(&origin)
        ));
        assert_eq!(r.status, status);
    }
    let r = c.request(&format!(
        "GET {}/200 HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url(),
        host(&origin)
    ));
    assert_eq!(r.body, b"ok");
}

#[test]
fn large_content_length_body_both_ways() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let body = pattern_vec(5 * 1024 * 1024);
    c.send(
        format!(
            "POST {}/big HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            origin.url(),
            host(&origin),
            body.len()
        )
        .as_bytes(),
    );
    let mut w = c.stream().try_clone().unwrap();
    let b2 = body.clone();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut w, &b2));
    let r = c.read_response();
    writer.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(&body));
    assert_eq!(origin.requests()[0].body_len, Some(body.len() as u64));
}
