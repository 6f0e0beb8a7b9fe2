//! CONNECT tunnels in the forward proxy: bytes relayed unchanged both ways.

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;
use support::*;

fn open_tunnel(proxy: &Proxy, target: &str) -> (Client, Response) {
    let mut c = Client::connect(proxy.addr);
    c.send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes());
    let r = c.read_response_to("CONNECT");
    (c, r)
}

fn read_exactly(c: &mut Client, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    c.read_exact_to(n as u64, &mut |d| out.extend_from_slice(d))
        .unwrap_or_else(|e| panic!("tunnel read: {e} after {} bytes", out.len()));
    out
}

#[test]
fn connect_relays_bytes_unchanged_both_ways() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&[]);
    let (mut c, r) = open_tunnel(&proxy, &echo.addr.to_string());
    assert_eq!(r.status, 200, "{}", r.head_str());
    // Server speaks first: the tunnel must not wait for client bytes.
    assert_eq!(read_exactly(&mut c, ECHO_BANNER.len()), ECHO_BANNER);
    // Binary data that looks like HTTP, every byte value, then a bulk megabyte,
    // written from another thread while this one reads the echo.
    let mut payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    payload.extend((0..=255u8).cycle().take(4096));
    payload.extend(pattern_vec(1 << 20));
    let mut w = c.stream().try_clone().unwrap();
    let p2 = payload.clone();
    let writer = thread::spawn(move || w.write_all(&p2));
    let back = read_exactly(&mut c, payload.len());
    writer.join().unwrap().unwrap();
    assert!(back == payload, "echoed bytes differ");
    assert_eq!(echo.accepted(), 1);
}

#[test]
fn connect_propagates_half_close() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&[]);
    let (mut c, r) = open_tunnel(&proxy, &echo.addr.to_string());
    assert_eq!(r.status, 200);
    assert_eq!(read_exactly(&mut c, ECHO_BANNER.len()), ECHO_BANNER);
    c.send(b"last words");
    c.stream().shutdown(Shutdown::Write).unwrap();
    // The server sees EOF, answers, then closes; all of it reaches the client.
    let rest = c
        .read_until_close(Duration::from_secs(10))
        .expect("tunnel closed after the server closed");
    assert_eq!(rest, [b"last words".as_slice(), ECHO_FAREWELL].concat());
}

#[test]
fn connect_client_close_closes_upstream() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&[]);
    let (mut c, r) = open_tunnel(&proxy, &echo.addr.to_string());
    assert_eq!(r.status, 200);
    assert_eq!(read_exactly(&mut c, ECHO_BANNER.len()), ECHO_BANNER);
    drop(c);
    // A new tunnel still works afterwards.
    let (mut c2, r2) = open_tunnel(&proxy, &echo.addr.to_string());
    assert_eq!(r2.status, 200);
    assert_eq!(read_exactly(&mut c2, ECHO_BANNER.len()), ECHO_BANNER);
    c2.send(b"again");
    assert_eq!(read_exactly(&mut c2, 5), b"again");
}

#[test]
fn curl_proxytunnel_to_plain_http_origin() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let out = curl(&[
        "-p",
        "-x",
        &proxy.url(),
        &format!("{}/through/tunnel", origin.url()),
    ]);
    assert_eq!(out.code, 0, "curl: {}", out.stderr);
    assert_eq!(out.status, 200);
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    // Inside the tunnel curl talks to the origin directly: origin-form target.
    assert_eq!(reqs[0].target, "/through/tunnel");
    assert!(out
        .body_str()
        .starts_with("GET /through/tunnel HTTP/1.1\r\n"));
}

#[test]
fn curl_proxytunnel_several_requests_one_tunnel() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&[]);
    let u1 = format!("{}/one", origin.url());
    let u2 = format!("{}/two", origin.url());
    let out = curl(&["-p", "-x", &proxy.url(), &u1, &u2]);
    assert_eq!(out.code, 0, "curl: {}", out.stderr);
    let targets: Vec<String> = origin.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, vec!["/one", "/two"]);
    // the HTTP inside is proxied over one pooled upstream connection; the connection
    // opened for the CONNECT itself is closed once the bytes turn out to be HTTP
    assert!(origin.accepted() <= 2, "accepted {}", origin.accepted());
}

#[test]
fn connect_to_closed_port_is_502() {
    let port = closed_port();
    let proxy = Proxy::start(&[]);
    let (_c, r) = open_tunnel(&proxy, &format!("127.0.0.1:{port}"));
    assert_eq!(r.status, 502, "{}", r.head_str());
}

#[test]
fn tunnel_does_not_interpret_bytes_as_http() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&[]);
    let (mut c, r) = open_tunnel(&proxy, &echo.addr.to_string());
    assert_eq!(r.status, 200);
    assert_eq!(read_exactly(&mut c, ECHO_BANNER.len()), ECHO_BANNER);
    // Garbage that would be a 400 in HTTP is just data in a tunnel.
    let junk = b"\x00\x16\x03\x01 NOT HTTP \r\n\r\n\xff\xfe";
    c.send(junk);
    assert_eq!(read_exactly(&mut c, junk.len()), junk);
    let mut s = c.stream().try_clone().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut extra = [0u8; 16];
    assert!(
        s.read(&mut extra).is_err(),
        "unexpected extra bytes from the tunnel"
    );
}

#[test]
fn plain_http_inside_a_tunnel_is_handled_as_http() {
    // as mitmproxy does: the requests of curl --proxytunnel go through the HTTP layer
    // (pipeline steps, hooks), unless the host is passed through
    let origin = Origin::start(echo());
    let url = format!("{}/in/tunnel", origin.url());
    let proxy = Proxy::start(&["--set-request-header", "x-in-tunnel=1"]);
    let out = curl(&["-p", "-x", &proxy.url(), &url]);
    assert_eq!(out.code, 0, "curl: {}", out.stderr);
    let reqs = origin.requests();
    assert_eq!(reqs[0].target, "/in/tunnel");
    assert_eq!(reqs[0].header("x-in-tunnel"), Some("1"), "{:?}", reqs[0]);

    let passthrough = Proxy::start(&[
        "--set-request-header",
        "x-in-tunnel=1",
        "--ignore-hosts",
        "^127\\.0\\.0\\.1",
    ]);
    let out = curl(&["-p", "-x", &passthrough.url(), &url]);
    assert_eq!(out.code, 0, "curl: {}", out.stderr);
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].header("x-in-tunnel"),
        None,
        "ignored host relayed raw"
    );
}

/// A tunnel through which nothing moves is closed after --tunnel-idle-timeout, on the
/// kernel (splice) path and, with a raw.on_chunk hook, on the read/write path, with
/// both io backends.
#[test]
fn quiet_tunnel_is_closed_after_the_idle_timeout() {
    let dir = TempDir::new("tunnel-idle");
    let plugin = dir.path("watch.lua");
    std::fs::write(
        &plugin,
        "register_hook('raw', 'on_chunk', function(c) end)\n",
    )
    .unwrap();
    let plugin = plugin.to_str().unwrap().to_string();
    let cases = [
        vec!["--io", "uring"],
        vec!["--io", "epoll"],
        vec!["--io", "uring", "--plugin", plugin.as_str()],
        vec!["--io", "epoll", "--plugin", plugin.as_str()],
    ];
    for extra in cases {
        let echo = EchoServer::start();
        let mut args = vec!["--tunnel-idle-timeout", "1"];
        args.extend(extra.iter().copied());
        let proxy = Proxy::start(&args);
        let (mut c, r) = open_tunnel(&proxy, &echo.addr.to_string());
        assert_eq!(r.status, 200);
        assert_eq!(read_exactly(&mut c, ECHO_BANNER.len()), ECHO_BANNER);
        // the echo server would keep this open forever; the proxy closes it
        c.read_until_close(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
    }
}

/// Traffic in either direction keeps a tunnel open past the idle timeout.
#[test]
fn busy_tunnel_outlives_the_idle_timeout() {
    let echo = EchoServer::start();
    let proxy = Proxy::start(&["--tunnel-idle-timeout", "2"]);
    let (mut c, r) = open_tunnel(&proxy, &echo.addr.to_string());
    assert_eq!(r.status, 200);
    assert_eq!(read_exactly(&mut c, ECHO_BANNER.len()), ECHO_BANNER);
    // 5 s of traffic, a message every 200 ms: the tunnel must stay up throughout
    for i in 0..25 {
        let msg = format!("ping {i:02}");
        c.send(msg.as_bytes());
        assert_eq!(read_exactly(&mut c, msg.len()), msg.as_bytes());
        thread::sleep(Duration::from_millis(200));
    }
    c.read_until_close(Duration::from_secs(20))
        .expect("closed once quiet");
}
