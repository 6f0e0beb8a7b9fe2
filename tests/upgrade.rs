//! Protocol upgrades (WebSocket, h2c...): the Upgrade request reaches the upstream with
//! its Upgrade and Connection fields, a 101 is passed on, and the bytes after it are
//! relayed both ways; a 101 nobody asked for is a 502. The last test runs python's
//! `websockets` client and server through the proxy.

mod support;

use std::io::{Read, Write};
use std::time::Duration;
use support::*;

const CMD_WAIT: Duration = Duration::from_secs(30);

/// Answers an upgrade with 101 plus a greeting in the same write, then echoes bytes.
fn upgrading_echo() -> Handler {
    handler(|ex| {
        let wants =
            ex.req.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("x-echo")
            });
        let mut out = if wants {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\nhello\n"
                .to_vec()
        } else {
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n".to_vec()
        };
        ex.write(&out)?;
        if !wants {
            return Ok(Next::KeepAlive);
        }
        let s = ex.stream();
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        loop {
            out.resize(4096, 0);
            let n = s.read(&mut out)?;
            if n == 0 {
                return Ok(Next::Close);
            }
            s.write_all(&out[..n])?;
        }
    })
}

fn upgrade_through(proxy: &Proxy, target: &str) {
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = c.read_response_head();
    assert_eq!(head.status, 101, "{}", proxy.stderr());
    assert!(
        head.has_token("connection", "upgrade"),
        "{}",
        head.head_str()
    );
    assert_eq!(head.header("upgrade"), Some("x-echo"));
    let mut got = Vec::new();
    c.read_exact_to(6, &mut |d| got.extend_from_slice(d))
        .unwrap();
    assert_eq!(got, b"hello\n", "greeting sent with the 101");
    for msg in [&b"first"[..], &pattern_vec(200_000)[..]] {
        c.send(msg);
        let mut back = Vec::new();
        c.read_exact_to(msg.len() as u64, &mut |d| back.extend_from_slice(d))
            .unwrap();
        assert!(back == msg, "echo of {} bytes differs", msg.len());
    }
}

#[test]
fn upgrade_is_passed_on_and_bytes_flow_both_ways() {
    let origin = Origin::start(upgrading_echo());
    let reverse = Proxy::start(&["--mode", &format!("reverse:{}", origin.url())]);
    upgrade_through(&reverse, "/chat");
    let forward = Proxy::start(&[]);
    upgrade_through(&forward, &format!("{}/chat", origin.url()));
    let rec = &origin.requests()[0];
    assert!(
        rec.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("upgrade") && v == "x-echo"),
        "the upstream must see Upgrade: {}",
        String::from_utf8_lossy(&rec.raw_head)
    );
    assert!(
        rec.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("upgrade")),
        "the upstream must see Connection: upgrade: {}",
        String::from_utf8_lossy(&rec.raw_head)
    );
}

#[test]
fn a_request_without_upgrade_keeps_plain_http() {
    let origin = Origin::start(upgrading_echo());
    let proxy = Proxy::start(&["--mode", &format!("reverse:{}", origin.url())]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request("GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: x-echo\r\n\r\n");
    // Upgrade without `Connection: upgrade` is not an upgrade request: it is stripped
    assert_eq!(r.status, 426);
    let r = c.request("GET /again HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 426, "the connection stays usable");
}

#[test]
fn h2c_upgrade_is_not_passed_on() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--mode", &format!("reverse:{}", origin.url())]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(
        "GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = String::from_utf8_lossy(&origin.requests()[0].raw_head).to_ascii_lowercase();
    assert!(
        !seen.contains("upgrade") && !seen.contains("http2-settings"),
        "h2c upgrade fields must not reach the upstream: {seen}"
    );
}

#[test]
fn a_101_nobody_asked_for_is_a_502() {
    let origin = Origin::start(raw_response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n",
    ));
    let proxy = Proxy::start(&["--mode", &format!("reverse:{}", origin.url())]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 502);
    assert!(
        r.body_str().contains("switched protocols"),
        "{}",
        r.body_str()
    );
}

const WS_CLIENT_PY: &str = r#"
import asyncio, sys
import websockets

async def main():
    async with websockets.connect(sys.argv[1], open_timeout=10) as ws:
        for m in ["text frame", b"\x00\x01binary" * 1000, "x" * 300000]:
            await ws.send(m)
            back = await asyncio.wait_for(ws.recv(), 10)
            assert back == m, f"echo differs for a {type(m).__name__} of {len(m)}"
    print("ok")

asyncio.run(main())
"#;

#[test]
fn python_websockets_through_the_proxy() {
    need_python_module("websockets");
    let (mut server, port) = python_ws_echo();
    let proxy = Proxy::start(&["--mode", &format!("reverse:http://127.0.0.1:{port}")]);
    let url = format!("ws://127.0.0.1:{}/", proxy.port());
    let out = run_cmd("python3", &["-c", WS_CLIENT_PY, &url], b"", CMD_WAIT);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.ok() && out.stdout.trim() == "ok",
        "client: {} {}\nproxy: {}",
        out.stdout,
        out.stderr,
        proxy.stderr()
    );
}
