//! SOCKS5 mode (`--mode socks5`) through the real binary: curl's SOCKS5 client and raw
//! sockets speaking RFC 1928/1929, and the forward proxy's `--proxy-auth`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use support::*;

fn socks_proxy(extra: &[&str]) -> Proxy {
    let mut args = vec!["--mode", "socks5", "--workers", "1"];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

fn plugin(dir: &TempDir, name: &str, src: &str) -> String {
    let p = dir.path(name);
    std::fs::write(&p, src).unwrap();
    p.to_string_lossy().into_owned()
}

/// A raw SOCKS5 client: greeting (no auth), then a CONNECT to `target`; returns the
/// socket and the reply's code (None when the proxy closed instead of replying).
fn raw_connect(proxy: SocketAddr, request: &[u8]) -> (TcpStream, Option<u8>) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0], "method choice");
    s.write_all(request).unwrap();
    let mut head = [0u8; 4];
    if s.read_exact(&mut head).is_err() {
        return (s, None);
    }
    assert_eq!(head[0], 5);
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        t => panic!("reply address type {t}"),
    };
    let mut addr = vec![0u8; rest];
    s.read_exact(&mut addr).unwrap();
    (s, Some(head[1]))
}

fn v4_request(cmd: u8, addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(a) = addr else {
        panic!("v4 only")
    };
    let mut r = vec![5, cmd, 0, 1];
    r.extend_from_slice(&a.ip().octets());
    r.extend_from_slice(&a.port().to_be_bytes());
    r
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn curl_through_socks5_runs_http_hooks_and_sees_the_dict() {
    let origin = Origin::start(fixed(200, &[], b"through socks"));
    let dir = TempDir::new("socks5");
    let p = plugin(
        &dir,
        "s5.lua",
        r#"
register_hook("socks5", "on_connect", function(d, ctx)
  log.info(string.format("S5 target=%s user=%s conn=%s client=%s same=%s",
    d.target_addr, tostring(d.username), tostring(d.conn_id), d.client_addr,
    tostring(d.conn_id == ctx.conn_id)))
end)
register_hook("http", "on_request", function(m) m.headers:set("x-socks", m.authority) end)
"#,
    );
    let proxy = socks_proxy(&["--plugin", &p]);
    let url = format!("{}/a", origin.url());
    for flag in ["--socks5", "--socks5-hostname"] {
        let out = curl(&[flag, &proxy.addr.to_string(), &url]);
        assert_eq!(
            (out.status, out.body_str()),
            (200, "through socks".to_string()),
            "{flag}: {out:?}\n{}",
            proxy.stderr()
        );
    }
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 2);
    // each request went over the connection its tunnel opened
    assert_eq!(origin.accepted(), 2);
    for r in &reqs {
        assert_eq!(
            r.header("x-socks"),
            Some(format!("127.0.0.1:{}", origin.port()).as_str())
        );
    }
    let want = format!("S5 target=127.0.0.1:{} user=nil conn=", origin.port());
    assert!(
        proxy.wait_stderr(&want, Duration::from_secs(5)),
        "{}",
        proxy.stderr()
    );
    let log = proxy.stderr();
    let line = log.lines().find(|l| l.contains(&want)).unwrap();
    assert!(
        line.contains("client=127.0.0.1:") && line.contains("same=true"),
        "{line}"
    );
}

#[test]
fn socks5h_to_a_tls_origin_is_intercepted() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki);
    let conf = Conf::new();
    let cd = conf.confdir();
    let proxy = socks_proxy(&[
        "--confdir",
        &cd,
        "--upstream-ca",
        pki.ca_pem.to_str().unwrap(),
    ]);
    let out = curl(&[
        "--socks5-hostname",
        &proxy.addr.to_string(),
        "--cacert",
        conf.ca(),
        &format!("https://localhost:{}/inside", origin.port()),
    ]);
    assert_eq!(
        (out.status, out.body_str()),
        (200, "tls-origin says: /inside".to_string()),
        "{out:?}\n{}",
        proxy.stderr()
    );
    // the TLS handshake to the origin ran over the connection the tunnel opened
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].conn, 0, "{reqs:?}");
}

#[test]
fn a_server_first_protocol_is_relayed_raw() {
    let echo = EchoServer::start();
    let proxy = socks_proxy(&[]);
    let (mut s, code) = raw_connect(proxy.addr, &v4_request(1, echo.addr));
    assert_eq!(code, Some(0));
    let mut banner = vec![0u8; ECHO_BANNER.len()];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(banner, ECHO_BANNER);
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let mut w = s.try_clone().unwrap();
    let p2 = payload.clone();
    let writer = std::thread::spawn(move || w.write_all(&p2));
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap().unwrap();
    assert!(back == payload, "echoed bytes differ");
}

#[test]
fn drop_closes_before_any_upstream_connection() {
    let origin = Origin::start(fixed(200, &[], b"never"));
    let dir = TempDir::new("socks5");
    let p = plugin(
        &dir,
        "drop.lua",
        r#"register_hook("socks5", "on_connect", function(d) return action.DROP end)"#,
    );
    let proxy = socks_proxy(&["--plugin", &p]);
    let out = curl(&["--socks5", &proxy.addr.to_string(), &origin.url()]);
    assert_ne!(out.code, 0, "{out:?}");
    let req = v4_request(1, format!("127.0.0.1:{}", origin.port()).parse().unwrap());
    let (_s, code) = raw_connect(proxy.addr, &req);
    assert_eq!(code, None, "DROP closes without a reply");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn failures_get_socks5_reply_codes() {
    let proxy = socks_proxy(&[]);
    let refused: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    assert_eq!(raw_connect(proxy.addr, &v4_request(1, refused)).1, Some(5));
    // BIND and UDP ASSOCIATE: command not supported
    assert_eq!(raw_connect(proxy.addr, &v4_request(2, refused)).1, Some(7));
    assert_eq!(raw_connect(proxy.addr, &v4_request(3, refused)).1, Some(7));
    // an address type that does not exist
    assert_eq!(raw_connect(proxy.addr, &[5, 1, 0, 9, 1, 2]).1, Some(8));
    let out = curl(&[
        "--socks5",
        &proxy.addr.to_string(),
        &format!("http://{refused}/"),
    ]);
    assert_eq!(out.code, 97, "{out:?}");
    // SOCKS4 and HTTP on the SOCKS5 port: closed, and the proxy keeps serving
    for junk in [
        &[4u8, 1, 0, 80, 127, 0, 0, 1, 0][..],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut c = Client::connect(proxy.addr);
        c.send(junk);
        assert!(c.closed_within(Duration::from_secs(5)));
    }
    let echo = EchoServer::start();
    assert_eq!(
        raw_connect(proxy.addr, &v4_request(1, echo.addr)).1,
        Some(0)
    );
}

#[test]
fn a_stalled_handshake_is_closed_after_the_head_timeout() {
    let proxy = socks_proxy(&["--head-timeout", "1"]);
    let mut c = Client::connect(proxy.addr);
    c.send(&[5, 2]);
    assert!(c.closed_within(Duration::from_secs(10)));
}

#[test]
fn proxy_auth_requires_the_username_and_password() {
    let origin = Origin::start(fixed(200, &[], b"authed"));
    let dir = TempDir::new("socks5");
    let p = plugin(
        &dir,
        "user.lua",
        r#"register_hook("socks5", "on_connect", function(d) log.info("S5USER " .. tostring(d.username)) end)"#,
    );
    let proxy = socks_proxy(&["--proxy-auth", "bob:s3cret", "--plugin", &p]);
    let via = |cred: &str| {
        curl(&[
            "--proxy",
            &format!("socks5h://{cred}{}", proxy.addr),
            &origin.url(),
        ])
    };
    let ok = via("bob:s3cret@");
    assert_eq!((ok.status, ok.body_str()), (200, "authed".into()), "{ok:?}");
    assert!(proxy.wait_stderr("S5USER bob", Duration::from_secs(5)));
    let after_ok = origin.accepted();
    for bad in ["bob:wrong@", "eve:s3cret@", ""] {
        let out = via(bad);
        assert_eq!(out.code, 97, "{bad}: {out:?}");
    }
    assert_eq!(
        origin.accepted(),
        after_ok,
        "refused clients reach no upstream"
    );
    assert_eq!(proxy.stderr().matches("S5USER").count(), 1);
}

#[test]
fn forward_proxy_auth_answers_407_without_credentials() {
    let origin = Origin::start(fixed(200, &[], b"fine"));
    let proxy = Proxy::start(&["--proxy-auth", "bob:s3cret"]);
    let none = curl(&["-x", &proxy.url(), &origin.url()]);
    assert_eq!(none.status, 407, "{none:?}");
    let bad = curl(&["-x", &proxy.url(), "-U", "bob:nope", &origin.url()]);
    assert_eq!(bad.status, 407, "{bad:?}");
    let ok = curl(&["-x", &proxy.url(), "-U", "bob:s3cret", &origin.url()]);
    assert_eq!((ok.status, ok.body_str()), (200, "fine".into()), "{ok:?}");
    // the credentials are for the proxy: they do not travel on
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("proxy-authorization"), None);
    // CONNECT is checked too; the requests inside the tunnel are then not
    let tunnel = curl(&["-x", &proxy.url(), "--proxytunnel", &origin.url()]);
    assert_eq!(tunnel.code, 56, "{tunnel:?}");
    let tunnel = curl(&[
        "-x",
        &proxy.url(),
        "-U",
        "bob:s3cret",
        "--proxytunnel",
        &origin.url(),
    ]);
    assert_eq!(tunnel.status, 200, "{tunnel:?}");
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "GET {}/ HTTP/1.1\r\nHost: x\r\n\r\n",
        origin.url()
    ));
    assert_eq!(r.status, 407);
    assert_eq!(
        r.header("proxy-authenticate"),
        Some("Basic realm=\"luring\"")
    );
}

#[test]
fn proxy_auth_is_validated_at_start() {
    for (args, needle) in [
        (&["--proxy-auth", "nocolon"][..], "USER:PASS"),
        (&["--proxy-auth", ":pw"][..], "USER:PASS"),
        (
            &[
                "--mode",
                "reverse:http://127.0.0.1:9",
                "--proxy-auth",
                "a:b",
            ][..],
            "not reverse",
        ),
    ] {
        let e = Proxy::try_start(args).err().expect("refused");
        assert!(e.stderr.contains(needle), "{args:?}: {}", e.stderr);
    }
}

#[test]
fn both_io_backends_serve_http_and_raw_tunnels() {
    let origin = Origin::start(fixed(200, &[], b"either"));
    let echo = EchoServer::start();
    for io in ["uring", "epoll"] {
        let proxy = socks_proxy(&["--io", io]);
        let out = curl(&["--socks5-hostname", &proxy.addr.to_string(), &origin.url()]);
        assert_eq!(
            (out.status, out.body_str()),
            (200, "either".into()),
            "{io}: {out:?}"
        );
        let (mut s, code) = raw_connect(proxy.addr, &v4_request(1, echo.addr));
        assert_eq!(code, Some(0), "{io}");
        let mut banner = vec![0u8; ECHO_BANNER.len()];
        s.read_exact(&mut banner).unwrap();
        assert_eq!(banner, ECHO_BANNER, "{io}");
    }
}

#[test]
fn over_max_connections_a_socks5_client_is_closed_without_an_http_answer() {
    let proxy = socks_proxy(&["--max-connections", "1"]);
    let mut first = Client::connect(proxy.addr);
    first.send(&[5, 1]); // an unfinished greeting holds the one slot
    std::thread::sleep(Duration::from_millis(200));
    let mut second = TcpStream::connect(proxy.addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = second.write_all(&[5, 1, 0]);
    let mut got = Vec::new();
    let _ = second.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    drop(first);
}

#[test]
fn the_access_log_has_a_line_per_socks5_tunnel() {
    let echo = EchoServer::start();
    let proxy = socks_proxy(&["--access-log"]);
    let (mut s, code) = raw_connect(proxy.addr, &v4_request(1, echo.addr));
    assert_eq!(code, Some(0));
    let mut banner = vec![0u8; ECHO_BANNER.len()];
    s.read_exact(&mut banner).unwrap();
    drop(s);
    let refused: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
    assert_eq!(raw_connect(proxy.addr, &v4_request(1, refused)).1, Some(5));
    for want in [
        format!("\"SOCKS5 CONNECT {}\" 0 ", echo.addr),
        format!("\"SOCKS5 CONNECT {refused}\" 5 "),
    ] {
        assert!(
            proxy.wait_stderr(&want, Duration::from_secs(10)),
            "{want}\n{}",
            proxy.stderr()
        );
    }
}
