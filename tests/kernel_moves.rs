//! Bodies and tunnels large enough to move socket-to-socket in the kernel (splice):
//! every framing arrives byte-exact on both io backends, keep-alive survives it, and a
//! body cut short by the upstream ends the client connection instead of hanging it.

mod support;

use std::time::Duration;
use support::*;

const BIG: usize = 700_000;

/// The io backends this machine can run.
fn backends() -> Vec<&'static str> {
    let mut b = vec!["epoll"];
    if Proxy::try_start(&["--io", "uring"]).is_ok() {
        b.push("uring");
    }
    b
}

fn get(origin: &Origin, path: &str) -> String {
    format!(
        "GET {}{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.url(),
        origin.port()
    )
}

/// Sends a POST of `body` to `target` and reads the response.
fn post(c: &mut Client, target: &str, body: &[u8]) -> Response {
    c.send(
        format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(body);
    c.read_response()
}

#[test]
fn content_length_body_exact_and_connection_reused() {
    let body = pattern_vec(BIG);
    let origin = Origin::start(fixed(200, &[], &body));
    for io in backends() {
        let proxy = Proxy::start(&["--io", io]);
        let mut c = Client::connect(proxy.addr);
        for round in 0..3 {
            let r = c.request(&get(&origin, "/big"));
            assert_eq!(r.status, 200, "{io} round {round}");
            assert!(r.body == body, "{io} round {round}: body differs");
        }
    }
    // one upstream connection per backend served all three requests
    assert!(
        origin.requests_per_conn().iter().all(|&n| n == 3),
        "{:?}",
        origin.requests_per_conn()
    );
}

#[test]
fn chunked_and_close_delimited_bodies_exact() {
    let chunks = vec![pattern_vec(300_000), b"mid".to_vec(), pattern_vec(65_536)];
    let whole: Vec<u8> = chunks.concat();
    let chunked_origin = Origin::start(chunked(chunks, vec![("X-Sum".into(), "1".into())]));
    let close_body = pattern_vec(BIG);
    let close_origin = Origin::start(close_delimited(&close_body));
    for io in backends() {
        let proxy = Proxy::start(&["--io", io]);
        let mut c = Client::connect(proxy.addr);
        let r = c.request(&format!(
            "GET {}/c HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            chunked_origin.url()
        ));
        assert_eq!(r.status, 200, "{io}");
        assert!(r.body == whole, "{io}: chunked body differs");
        assert_eq!(r.trailers, vec![("X-Sum".to_string(), "1".to_string())]);

        let mut c = Client::connect(proxy.addr);
        let r = c.request(&get(&close_origin, "/close"));
        assert_eq!(r.status, 200, "{io}");
        assert!(r.body == close_body, "{io}: close-delimited body differs");
    }
}

#[test]
fn large_upload_arrives_exact() {
    let origin = Origin::start(echo());
    let body = pattern_vec(BIG);
    for io in backends() {
        let proxy = Proxy::start(&["--io", io]);
        let mut c = Client::connect(proxy.addr);
        let r = post(&mut c, &format!("{}/up", origin.url()), &body);
        assert_eq!(r.status, 200, "{io}");
        assert_eq!(r.header("x-echo-body-len"), Some(BIG.to_string().as_str()));
        assert!(r.body.ends_with(&body), "{io}: echoed body differs");
    }
}

#[test]
fn body_cut_short_by_upstream_closes_the_client() {
    let mut wire = b"HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n".to_vec();
    wire.extend_from_slice(&pattern_vec(120_000));
    let origin = Origin::start(raw_response(&wire));
    let fine = Origin::start(fixed(200, &[], b"ok"));
    for io in backends() {
        let proxy = Proxy::start(&["--io", io]);
        let mut c = Client::connect(proxy.addr);
        c.send(get(&origin, "/short").as_bytes());
        let got = c
            .read_until_close(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{io}: {e}"));
        let head_end = find(&got, b"\r\n\r\n").expect("a response head") + 4;
        let body = &got[head_end..];
        assert_eq!(body.len(), 120_000, "{io}: bytes before the close");
        assert!(body == &pattern_vec(120_000)[..], "{io}: body differs");
        // the worker goes on serving
        let mut c = Client::connect(proxy.addr);
        let r = c.request(&get(&fine, "/after"));
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "{io}");
    }
}

#[test]
fn connect_tunnel_moves_a_large_body_both_ways() {
    let origin = Origin::start(echo());
    let body = pattern_vec(BIG);
    for io in backends() {
        let proxy = Proxy::start(&["--io", io]);
        let mut c = Client::connect(proxy.addr);
        c.send(
            format!(
                "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
                origin.port()
            )
            .as_bytes(),
        );
        let r = c.read_response_to("CONNECT");
        assert_eq!(r.status, 200, "{io}");
        for _ in 0..2 {
            let r = post(&mut c, "/t", &body);
            assert_eq!(r.status, 200, "{io}");
            assert!(r.body.ends_with(&body), "{io}: tunnelled echo differs");
        }
    }
}
