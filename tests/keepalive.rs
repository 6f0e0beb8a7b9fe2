//! Keep-alive on both sides and the per-worker upstream pool (`--workers 1`).

mod support;

use std::thread;
use std::time::Duration;
use support::*;

fn get(origin: &Origin, path: &str) -> String {
    format!(
        "GET {}{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.url(),
        origin.port()
    )
}

#[test]
fn one_upstream_connection_serves_sequential_requests() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    for i in 0..5 {
        let r = c.request(&get(&origin, &format!("/seq{i}")));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-echo-target"), Some(format!("/seq{i}").as_str()));
    }
    assert_eq!(
        origin.accepted(),
        1,
        "per-conn: {:?}",
        origin.requests_per_conn()
    );
    assert_eq!(origin.requests_per_conn(), vec![5]);
}

#[test]
fn pool_reused_across_sequential_client_connections() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--workers", "1"]);
    for i in 0..3 {
        let mut c = Client::connect(proxy.addr);
        let r = c.request(&get(&origin, &format!("/c{i}")));
        assert_eq!(r.status, 200);
        drop(c);
    }
    assert_eq!(
        origin.requests_per_conn(),
        vec![3],
        "the idle upstream connection must be reused by the next client connection"
    );
}

#[test]
fn curl_multiple_urls_reuse_both_connections() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--workers", "1"]);
    let urls: Vec<String> = (0..4).map(|i| format!("{}/u{i}", origin.url())).collect();
    let purl = proxy.url();
    let mut args = vec!["-v", "-x", purl.as_str()];
    args.extend(urls.iter().map(|s| s.as_str()));
    let out = curl(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(origin.requests().len(), 4);
    assert_eq!(origin.accepted(), 1, "{:?}", origin.requests_per_conn());
    // curl reports reusing its own connection to the proxy.
    assert!(
        out.stderr.contains("Re-using existing connection")
            || out.stderr.contains("Reusing existing"),
        "client connection not kept alive:\n{}",
        out.stderr
    );
}

#[test]
fn client_connection_close_is_honoured() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "GET {}/bye HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.url(),
        origin.port()
    ));
    assert_eq!(r.status, 200);
    assert!(c.closed_within(Duration::from_secs(10)));
}

#[test]
fn upstream_connection_close_is_not_reused() {
    let origin = Origin::start(fixed(200, &[("Connection", "close")], b"once"));
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    for _ in 0..3 {
        let r = c.request(&get(&origin, "/"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"once");
    }
    assert_eq!(origin.requests_per_conn(), vec![1, 1, 1]);
}

#[test]
fn close_delimited_upstream_response_fully_relayed() {
    let body = pattern_vec(300_000);
    let origin = Origin::start(close_delimited(&body));
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&get(&origin, "/"));
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "got {} bytes of {}",
        r.body.len(),
        body.len()
    );
    // The proxy either closed the client connection (close-delimited relay) or
    // re-framed the body; either way a new request must work.
    let mut c2 = Client::connect(proxy.addr);
    let r2 = c2.request(&get(&origin, "/again"));
    assert!(r2.body == body);
    assert_eq!(origin.accepted(), 2);
}

/// The origin closes idle keep-alive connections after 100 ms; three `method`
/// requests carrying `body`, 100 ms apart, must all succeed and reach it once each, never failing on the
/// stale pooled connection.
fn stale_pool_is_not_an_error(method: &str, body: &str) {
    let origin = Origin::start_with(
        echo(),
        OriginOptions {
            idle_close: Some(Duration::from_millis(100)),
        },
    );
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    for i in 0..3 {
        let r = c.request(&format!(
            "{method} {}/stale{i} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\r\n{body}",
            origin.url(),
            origin.port(),
            body.len()
        ));
        assert_eq!(r.status, 200, "{method} {i}: {}", r.body_str());
        assert!(wait_until(Duration::from_secs(5), || origin
            .conns()
            .iter()
            .all(|c| c.ended)));
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(origin.requests().len(), 3);
}

#[test]
fn pooled_connection_closed_by_origin_is_not_an_error() {
    // GET without a body: retried on a fresh connection
    stale_pool_is_not_an_error("GET", "");
}

#[test]
fn stale_pooled_connection_is_skipped_when_no_retry_is_possible() {
    // a POST, and a PUT whose body streams through, are never sent twice, so the pooled
    // connection is checked before use
    stale_pool_is_not_an_error("POST", "hi");
    stale_pool_is_not_an_error("PUT", "hi");
}

#[test]
fn pool_idle_timeout_closes_upstream() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--workers", "1", "--pool-idle-timeout", "1"]);
    let mut c = Client::connect(proxy.addr);
    assert_eq!(c.request(&get(&origin, "/")).status, 200);
    drop(c);
    assert!(
        wait_until(Duration::from_secs(10), || origin.conns()[0].peer_closed),
        "idle upstream connection still open 10 s after --pool-idle-timeout 1"
    );
}

#[test]
fn pool_max_idle_bounds_idle_connections() {
    // Three concurrent slow requests open three upstream connections; with
    // --pool-max-idle 1 at most one stays idle afterwards.
    let origin = Origin::start(slow(Duration::from_millis(500), echo()));
    let proxy = Proxy::start(&["--workers", "1", "--pool-max-idle", "1"]);
    let addr = proxy.addr;
    let req = get(&origin, "/slow");
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let req = req.clone();
            thread::spawn(move || Client::connect(addr).request(&req).status)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(origin.accepted(), 3);
    assert!(
        wait_until(Duration::from_secs(10), || origin
            .conns()
            .iter()
            .filter(|c| c.peer_closed)
            .count()
            >= 2),
        "conns: {:?}",
        origin.conns()
    );
}

#[test]
fn post_is_not_resent_when_a_reused_connection_dies() {
    // the origin takes the POST on a reused connection, then closes without answering:
    // it may have acted on it, so the proxy answers 502 rather than send it again
    let origin = Origin::start(handler(|ex| {
        ex.read_body()?;
        if ex.req.method == "POST" {
            return Ok(Next::Close);
        }
        ex.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
        Ok(Next::KeepAlive)
    }));
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    assert_eq!(c.request(&get(&origin, "/first")).status, 200);
    let r = c.request(&format!(
        "POST {}/once HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 2\r\n\r\nhi",
        origin.url(),
        origin.port()
    ));
    assert_eq!(r.status, 502, "{}", r.head_str());
    let posts = origin
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "the POST was sent again");
}
