//! Limits: head size, header count, slowloris head timeout, client idle
//! timeout, connection cap.

mod support;

use std::thread;
use std::time::Duration;
use support::*;

fn request_with_headers(origin: &Origin, extra: &str) -> String {
    format!(
        "GET {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}\r\n",
        origin.url(),
        origin.port()
    )
}

#[test]
fn head_larger_than_max_head_size_is_431() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--max-head-size", "1024"]);
    let mut c = Client::connect(proxy.addr);
    let big = format!("X-Big: {}\r\n", "b".repeat(2000));
    let r = c.request(&request_with_headers(&origin, &big));
    assert_eq!(r.status, 431, "{}", r.head_str());
    assert!(origin.requests().is_empty());
}

#[test]
fn head_within_max_head_size_passes() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--max-head-size", "4096"]);
    let mut c = Client::connect(proxy.addr);
    let ok = format!("X-Big: {}\r\n", "b".repeat(2000));
    let r = c.request(&request_with_headers(&origin, &ok));
    assert_eq!(r.status, 200, "{}", r.head_str());
    assert_eq!(
        origin.requests()[0].header("x-big").map(str::len),
        Some(2000)
    );
}

#[test]
fn default_max_head_size_is_64k() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let mut c = Client::connect(proxy.addr);
    let big = format!("X-Big: {}\r\n", "b".repeat(70_000));
    let r = c.request(&request_with_headers(&origin, &big));
    assert_eq!(r.status, 431, "{}", r.head_str());
}

#[test]
fn more_than_max_headers_is_431() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--max-headers", "10"]);
    let mut c = Client::connect(proxy.addr);
    let many: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = c.request(&request_with_headers(&origin, &many));
    assert_eq!(r.status, 431, "{}", r.head_str());
    assert!(origin.requests().is_empty());

    // Within the limit passes (Host + 5).
    let mut c = Client::connect(proxy.addr);
    let few: String = (0..5).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(c.request(&request_with_headers(&origin, &few)).status, 200);
}

#[test]
fn slowloris_half_head_is_cut_while_others_are_served() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--head-timeout", "1", "--workers", "1"]);
    let mut slow = Client::connect(proxy.addr);
    slow.send(
        format!(
            "GET {}/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Part",
            origin.url(),
            origin.port()
        )
        .as_bytes(),
    );
    // Another client is served normally meanwhile.
    let out = curl(&["-x", &proxy.url(), &format!("{}/normal", origin.url())]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    let got = slow
        .read_until_close(Duration::from_secs(10))
        .expect("stalled half head still open 10 s after --head-timeout 1");
    if !got.is_empty() {
        let i = find(&got, b"\r\n\r\n").expect("a full response head before the close");
        assert_eq!(parse_response_head(&got[..i + 4]).unwrap().status, 408);
    }
    assert_eq!(origin.requests().len(), 1);
}

#[test]
fn slowloris_trickling_bytes_does_not_extend_head_timeout() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--head-timeout", "1"]);
    let mut slow = Client::connect(proxy.addr);
    slow.send(format!("GET {}/ HTTP/1.1\r\n", origin.url()).as_bytes());
    // One byte every 200 ms for up to 10 s: the head timeout is for the whole head.
    let mut closed = false;
    for _ in 0..50 {
        if slow.try_send(b"X").is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed || slow.closed_within(Duration::from_millis(100)),
        "a head trickled over 10 s was not cut by --head-timeout 1"
    );
}

#[test]
fn idle_keepalive_client_is_closed() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--idle-timeout", "1"]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&request_with_headers(&origin, ""));
    assert_eq!(r.status, 200);
    let rest = c
        .read_until_close(Duration::from_secs(10))
        .expect("idle client connection open 10 s after --idle-timeout 1");
    assert!(
        rest.is_empty(),
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn max_connections_caps_clients_per_worker() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--workers", "1", "--max-connections", "2"]);
    let mut a = Client::connect(proxy.addr);
    let mut b = Client::connect(proxy.addr);
    assert_eq!(a.request(&request_with_headers(&origin, "")).status, 200);
    assert_eq!(b.request(&request_with_headers(&origin, "")).status, 200);
    // A third connection is not served while two are open: it gets a 503 that says
    // when to try again, and is closed.
    let mut third = Client::connect(proxy.addr);
    third.send(request_with_headers(&origin, "").as_bytes());
    let r = third.read_response();
    assert_eq!(r.status, 503, "third connection: {}", r.head_str());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(third.closed_within(Duration::from_secs(5)));
    assert_eq!(origin.requests().len(), 2);
    assert!(proxy.wait_stderr("max connections (2) reached", Duration::from_secs(5)));
    drop(third);
    // Once one closes, a new connection is served.
    drop(a);
    let served = wait_until(Duration::from_secs(10), || {
        let Ok(mut c) = Client::try_connect(proxy.addr) else {
            return false;
        };
        c.set_read_timeout(Duration::from_secs(2));
        c.try_send(request_with_headers(&origin, "").as_bytes())
            .is_ok()
            && matches!(c.try_read_response_to("GET"), Ok(r) if r.status == 200)
    });
    assert!(served, "no connection served after one of the two closed");
    drop(b);
}

/// A client that stops reading a response is dropped after --send-timeout, instead of
/// holding the connection (and the upstream's) for ever.
#[test]
fn client_that_stops_reading_is_dropped_after_send_timeout() {
    for io in ["uring", "epoll"] {
        stalled_client_is_dropped(io);
    }
}

fn stalled_client_is_dropped(io: &str) {
    let total: u64 = 64 << 20;
    let origin = Origin::start(stream_bytes(total));
    let mode = format!("reverse:{}", origin.url());
    let args = [
        "--mode",
        &mode,
        "--workers",
        "1",
        "--send-timeout",
        "1",
        "--io",
        io,
    ];
    let proxy = Proxy::start(&args);
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /big HTTP/1.1\r\nHost: front\r\n\r\n");
    assert_eq!(c.read_response_head().status, 200);
    let mut got = 0u64;
    c.read_exact_to(1 << 20, &mut |d| got += d.len() as u64)
        .expect("the first MiB");
    // socket buffers fill up within the first second; then nothing moves for 5 s
    thread::sleep(Duration::from_secs(5));
    let rest = c.read_exact_to(total - got, &mut |d| got += d.len() as u64);
    assert!(
        rest.is_err(),
        "--io {io}: the whole {total}-byte body arrived: the stalled client was kept"
    );
    assert!(got < total);
}
