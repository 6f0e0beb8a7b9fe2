//! HTTP/2 inside intercepted TLS, through the real binary: curl, nghttp and h2load as
//! clients, nghttpd (an h2-only server) as the upstream. luring offers h2 to a client
//! only when the upstream chose h2 too.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const CMD_WAIT: Duration = Duration::from_secs(60);

/// `nghttpd` on 127.0.0.1 with the test PKI's certificate: serves files from a docroot
/// (`index.html`, `big.bin` of 1 MiB of the test pattern) and echoes request bodies
/// (`--echo-upload`).
struct H2Origin {
    child: Child,
    port: u16,
    _root: TempDir,
}

const BIG: usize = 1024 * 1024;

/// `events.sse` in the docroot, served as text/event-stream.
const SSE_FILE: &str = ": hi\n\nevent: a\ndata: one\n\ndata: two\r\n\r\n";

impl H2Origin {
    fn start(pki: &TestPki) -> H2Origin {
        let root = TempDir::new("h2root");
        std::fs::write(root.path("index.html"), "hello over h2\n").unwrap();
        std::fs::write(root.path("big.bin"), pattern_vec(BIG)).unwrap();
        std::fs::write(root.path("events.sse"), SSE_FILE).unwrap();
        let mime = root.path("mime.types");
        std::fs::write(
            &mime,
            "text/html html\napplication/octet-stream bin\ntext/event-stream sse\n",
        )
        .unwrap();
        let port = closed_port();
        let child = Command::new("nghttpd")
            .args(["-a", "127.0.0.1", "--echo-upload", "-d"])
            .arg(&root.0)
            .arg(format!("--mime-types-file={}", mime.display()))
            .arg(port.to_string())
            .arg(&pki.server_key)
            .arg(&pki.server_pem)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nghttpd (apt nghttp2-server)");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "nghttpd did not listen on {port}");
        H2Origin {
            child,
            port,
            _root: root,
        }
    }

    /// Adds `name`, `len` bytes of the test pattern, to the docroot.
    fn add_file(&self, name: &str, len: usize) {
        std::fs::write(self._root.path(name), pattern_vec(len)).unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(conf: &Conf, pki: &TestPki, extra: &[&str]) -> Proxy {
    let cd = conf.confdir();
    let mut args = vec![
        "--confdir",
        cd.as_str(),
        "--upstream-ca",
        pki.ca_pem.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

/// Transfers of one curl run: luring's CA trusted, `first` then `args`; each body is
/// paired with "<http_version> <status> <num_connects>" (curl's `-w` after it).
fn curl_xfers(conf: &Conf, first: &[&str], args: &[&str]) -> (CmdOutput, Vec<(String, String)>) {
    let mut full = vec!["-sS", "--max-time", "30", "--cacert", conf.ca()];
    full.extend_from_slice(first);
    full.extend_from_slice(&["-w", "## %{http_version} %{http_code} %{num_connects}\n"]);
    full.extend_from_slice(args);
    let out = run_cmd("curl", &full, b"", CMD_WAIT);
    let mut xfers = Vec::new();
    let mut rest = out.stdout.as_str();
    while let Some(i) = rest.find("## ") {
        let line_end = rest[i..].find('\n').map_or(rest.len(), |e| i + e);
        xfers.push((rest[..i].to_string(), rest[i + 3..line_end].to_string()));
        rest = &rest[(line_end + 1).min(rest.len())..];
    }
    (out, xfers)
}

/// curl through the proxy (forward mode, CONNECT).
fn curl_via(proxy: &Proxy, conf: &Conf, args: &[&str]) -> (CmdOutput, Vec<(String, String)>) {
    curl_xfers(conf, &["-x", &proxy.url()], args)
}

/// curl over TLS to a reverse-mode proxy, `localhost` resolved to it.
fn curl_reverse(proxy: &Proxy, conf: &Conf, args: &[&str]) -> (CmdOutput, Vec<(String, String)>) {
    let resolve = format!("localhost:{}:127.0.0.1", proxy.port());
    curl_xfers(conf, &["--resolve", &resolve], args)
}

#[test]
fn curl_speaks_h2_on_both_sides_and_reuses_the_connection() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &["--access-log"]);
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &[&origin.url("/index.html"), &origin.url("/index.html")],
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(
        xfers,
        vec![
            ("hello over h2\n".to_string(), "2 200 1".to_string()),
            ("hello over h2\n".to_string(), "2 200 0".to_string()),
        ],
        "{}",
        proxy.stderr()
    );
    let line = format!("\"GET {} HTTP/2.0\" 200 14 ", origin.url("/index.html"));
    assert!(
        proxy.wait_stderr(&line, Duration::from_secs(5)),
        "access log line {line:?} missing: {}",
        proxy.stderr()
    );
}

#[test]
fn large_bodies_stream_both_ways_over_h2() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &[]);
    let dir = TempDir::new("h2bodies");
    let down = dir.path("down.bin");
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &["-o", down.to_str().unwrap(), &origin.url("/big.bin")],
    );
    assert!(out.ok(), "{out:?}");
    assert_eq!(xfers[0].1, "2 200 1");
    assert!(
        std::fs::read(&down).unwrap() == pattern_vec(BIG),
        "download differs"
    );

    // 3 MiB up, echoed back: flow control in both directions on one stream
    let up = dir.path("up.bin");
    let n = 3 * BIG + 7;
    std::fs::write(&up, pattern_vec(n)).unwrap();
    let echoed = dir.path("echoed.bin");
    let data = format!("@{}", up.to_str().unwrap());
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &[
            "--data-binary",
            &data,
            "-o",
            echoed.to_str().unwrap(),
            &origin.url("/echo"),
        ],
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(xfers[0].1, "2 200 1");
    assert!(
        std::fs::read(&echoed).unwrap() == pattern_vec(n),
        "echoed body differs"
    );
}

#[test]
fn many_parallel_streams_on_one_connection() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &["--workers", "1", "--io", "epoll"]);
    let big = origin.url("/big.bin");
    let small = origin.url("/index.html");
    let mut args = vec!["--parallel", "--parallel-max", "20"];
    for i in 0..20 {
        args.extend(["-o", "/dev/null", if i % 4 == 0 { &big } else { &small }]);
    }
    let (out, xfers) = curl_via(&proxy, &conf, &args);
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(xfers.len(), 20, "{out:?}");
    let connects: u32 = xfers
        .iter()
        .map(|(_, x)| x.rsplit(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert!(
        xfers.iter().all(|(_, x)| x.starts_with("2 200 ")),
        "{xfers:?}"
    );
    assert_eq!(connects, 1, "one connection carries all streams: {xfers:?}");
}

#[test]
fn upstream_without_h2_keeps_the_client_on_http1() {
    let pki = TestPki::new();
    let origin = TlsOrigin::start(&pki); // offers http/1.1 only
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &[]);
    let url = format!("https://localhost:{}/one", origin.port());
    let (out, xfers) = curl_via(&proxy, &conf, &[&url]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(
        xfers,
        vec![("tls-origin says: /one".to_string(), "1.1 200 1".to_string())]
    );
    // the connection made ahead of the handshake served the request
    assert_eq!(origin.handshakes(), 1, "{:?}", origin.requests());
}

#[test]
fn no_http2_flag_offers_http1_only() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki); // h2 only: refuses an http/1.1 client
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &["--no-http2"]);
    let (out, xfers) = curl_via(&proxy, &conf, &[&origin.url("/index.html")]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(xfers.len(), 1);
    // nghttpd takes the handshake, then closes on an HTTP/1.1 request
    assert!(xfers[0].1.starts_with("1.1 502 "), "{xfers:?}");
    assert!(
        xfers[0].0.contains("upstream") && xfers[0].0.contains("may speak HTTP/2 only"),
        "the 502 names why: {xfers:?}"
    );
}

const ACTIONS: &str = r#"
register_hook("http", "on_request", function(m, ctx)
  if m.path == "/drop" then return action.DROP end
  if m.path == "/respond" then
    return action.RESPOND{ status = 403, headers = { ["content-type"] = "text/plain" },
                           body = "refused " .. m.http_version .. " " .. tostring(ctx.sni) }
  end
  if m.path == "/echo" then m.body = "[" .. m.body .. "]" end
end)
register_hook("http", "on_response", function(m)
  m.headers:set("x-seen", m.http_version)
  if m.request.path == "/index.html" then m.body = m.body .. "+tail" end
end)
"#;

#[test]
fn hooks_see_h2_streams_and_their_actions_apply_per_stream() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let dir = TempDir::new("h2plugin");
    let plugin = dir.path("actions.lua");
    std::fs::write(&plugin, ACTIONS).unwrap();
    let proxy = start(&conf, &pki, &["--plugin", plugin.to_str().unwrap()]);

    // RESPOND answers from the proxy; the response hook's edits reach the client
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &["-i", &origin.url("/respond"), &origin.url("/index.html")],
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(xfers.len(), 2, "{out:?}");
    assert!(
        xfers[0].0.ends_with("refused HTTP/2.0 localhost"),
        "{xfers:?}"
    );
    assert_eq!(xfers[0].1, "2 403 1");
    let page = &xfers[1].0;
    assert!(page.contains("x-seen: HTTP/2.0"), "{page}");
    assert!(page.ends_with("hello over h2\n+tail"), "{page}");
    assert!(
        page.contains("content-length: 19"),
        "length follows the body: {page}"
    );
    assert_eq!(xfers[1].1, "2 200 0", "same connection: {xfers:?}");

    // the origin echoes what it got: the request hook's new body went upstream
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &["--data-binary", "abc", &origin.url("/echo")],
    );
    assert!(out.ok(), "{out:?}");
    assert_eq!(xfers, vec![("[abc]".to_string(), "2 200 1".to_string())]);

    // RESPOND to an upload: the client gets the answer, not a reset mid-upload
    let up = dir.path("up.bin");
    std::fs::write(&up, pattern_vec(3 * BIG)).unwrap();
    let data = format!("@{}", up.to_str().unwrap());
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &["--data-binary", &data, &origin.url("/respond")],
    );
    assert!(out.ok(), "{out:?}");
    assert_eq!(xfers[0].1, "2 403 1", "{xfers:?}");

    // DROP resets that stream only: the next request uses the same connection
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &[&origin.url("/drop"), &origin.url("/respond")],
    );
    assert!(
        out.stderr.contains("CANCEL"),
        "the dropped stream is reset with CANCEL: {out:?}"
    );
    assert_eq!(xfers.len(), 2, "{out:?}");
    assert_eq!(xfers[1].1, "2 403 0", "{xfers:?}");
}

#[test]
fn reverse_https_serves_h2_clients() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let mode = format!("reverse:https://localhost:{}", origin.port);
    let proxy = start(&conf, &pki, &["--mode", &mode]);
    let resolve = format!("localhost:{}:127.0.0.1", proxy.port());
    let url = format!("https://localhost:{}/index.html", proxy.port());
    let out = run_cmd(
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "--cacert",
            conf.ca(),
            "--resolve",
            &resolve,
            "-w",
            " %{http_version}",
            &url,
        ],
        b"",
        CMD_WAIT,
    );
    assert_eq!(
        out.stdout,
        "hello over h2\n 2",
        "{out:?}\n{}",
        proxy.stderr()
    );

    // h2load: many streams on few connections, every one answered
    let url = format!("https://127.0.0.1:{}/index.html", proxy.port());
    let out = run_cmd(
        "h2load",
        &["-n", "400", "-c", "2", "-m", "8", &url],
        b"",
        CMD_WAIT,
    );
    assert!(
        out.stdout.contains("400 succeeded, 0 failed"),
        "{out:?}\n{}",
        proxy.stderr()
    );
    assert!(out.stdout.contains("Application protocol: h2"), "{out:?}");
}

#[test]
fn reverse_mode_serves_h2_clients_of_an_http1_upstream() {
    let origin = Origin::start(echo());
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let cd = conf.confdir();
    let proxy = Proxy::start(&["--confdir", &cd, "--mode", &mode, "--workers", "1"]);
    let base = format!("https://localhost:{}", proxy.port());
    let (out, xfers) = curl_reverse(
        &proxy,
        &conf,
        &[&format!("{base}/one"), &format!("{base}/two?q=1")],
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(xfers.len(), 2, "{out:?}");
    assert!(xfers[0].0.starts_with("GET /one HTTP/1.1\r\n"), "{xfers:?}");
    assert!(
        xfers[1].0.starts_with("GET /two?q=1 HTTP/1.1\r\n"),
        "{xfers:?}"
    );
    assert_eq!(xfers[0].1, "2 200 1");
    assert_eq!(xfers[1].1, "2 200 0");
    // the upstream connection was kept and reused between the two streams
    assert_eq!(
        origin.requests_per_conn(),
        vec![2],
        "{:?}",
        origin.requests()
    );
    let first = &origin.requests()[0];
    assert_eq!(
        first.header("host"),
        Some(&*format!("127.0.0.1:{}", origin.port()))
    );
    assert_eq!(
        first.header("content-length"),
        None,
        "a GET gets no framing fields"
    );

    // uploads: a known length goes as Content-Length, an unknown one chunked
    let dir = TempDir::new("h2up");
    let up = dir.path("up.bin");
    std::fs::write(&up, pattern_vec(300_000)).unwrap();
    let data = format!("@{}", up.to_str().unwrap());
    let (out, xfers) = curl_reverse(
        &proxy,
        &conf,
        &[
            "--data-binary",
            &data,
            "-o",
            "/dev/null",
            &format!("{base}/len"),
        ],
    );
    assert!(out.ok(), "{out:?}");
    assert_eq!(xfers[0].1, "2 200 1");
    let (out, _) = curl_reverse(
        &proxy,
        &conf,
        &[
            "-H",
            "content-length:",
            "-T",
            up.to_str().unwrap(),
            "-o",
            "/dev/null",
            &format!("{base}/chunked"),
        ],
    );
    assert!(out.ok(), "{out:?}");
    let reqs = origin.requests();
    let len = reqs
        .iter()
        .find(|r| r.target == "/len")
        .expect("/len upstream");
    assert_eq!(len.header("content-length"), Some("300000"));
    assert!(len.body == pattern_vec(300_000), "uploaded body differs");
    let ch = reqs
        .iter()
        .find(|r| r.target == "/chunked")
        .expect("/chunked upstream");
    assert_eq!(
        ch.header("transfer-encoding"),
        Some("chunked"),
        "{:?}",
        ch.header("content-length")
    );
    assert!(ch.body == pattern_vec(300_000), "chunked upload differs");
}

#[test]
fn chunked_upstream_body_and_trailers_reach_an_h2_client() {
    let origin = Origin::start(chunked(
        vec![b"abc".to_vec(), b"defg".to_vec()],
        vec![("x-checksum".into(), "42".into())],
    ));
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let cd = conf.confdir();
    let proxy = Proxy::start(&["--confdir", &cd, "--mode", &mode]);
    let url = format!("https://localhost:{}/c", proxy.port());
    let (out, xfers) = curl_reverse(&proxy, &conf, &["-v", &url]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(xfers, vec![("abcdefg".to_string(), "2 200 1".to_string())]);
    assert!(
        out.stderr.contains("x-checksum: 42"),
        "trailer not seen by curl: {}",
        out.stderr
    );
}

const REROUTE: &str = r#"
register_hook("http", "on_request", function(m)
  if m.path == "/elsewhere" then
    m.scheme = "http"
    m.authority = "127.0.0.1:@PORT@"
  end
end)
"#;

#[test]
fn a_hook_reroutes_an_h2_request_to_an_http1_upstream() {
    let pki = TestPki::new();
    let h2 = H2Origin::start(&pki);
    let other = Origin::start(fixed(200, &[], b"from the other upstream"));
    let conf = Conf::new();
    let dir = TempDir::new("h2reroute");
    let plugin = dir.path("reroute.lua");
    std::fs::write(
        &plugin,
        REROUTE.replace("@PORT@", &other.port().to_string()),
    )
    .unwrap();
    let proxy = start(&conf, &pki, &["--plugin", plugin.to_str().unwrap()]);
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &[&h2.url("/index.html"), &h2.url("/elsewhere")],
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(
        xfers,
        vec![
            ("hello over h2\n".to_string(), "2 200 1".to_string()),
            ("from the other upstream".to_string(), "2 200 0".to_string()),
        ]
    );
    assert_eq!(other.requests()[0].target, "/elsewhere");
}

#[test]
fn garbage_instead_of_the_h2_preface_closes_and_the_proxy_keeps_serving() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let mode = format!("reverse:https://localhost:{}", origin.port);
    let proxy = start(&conf, &pki, &["--mode", &mode]);
    let connect = format!("127.0.0.1:{}", proxy.port());
    let started = std::time::Instant::now();
    let o = run_cmd(
        "openssl",
        &[
            "s_client",
            "-quiet",
            "-alpn",
            "h2",
            "-servername",
            "localhost",
            "-connect",
            &connect,
        ],
        b"this is not an HTTP/2 preface\r\n\r\n",
        CMD_WAIT,
    );
    assert!(o.code.is_some(), "openssl did not end: {o:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "closed late");
    let url = format!("https://localhost:{}/index.html", proxy.port());
    let (out, xfers) = curl_reverse(&proxy, &conf, &[&url]);
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(
        xfers,
        vec![("hello over h2\n".to_string(), "2 200 1".to_string())]
    );
}

#[test]
fn an_upstream_dying_mid_response_resets_the_stream_and_nothing_hangs() {
    let pki = TestPki::new();
    let mut origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &[]);
    // far more than h2 windows and socket buffers hold, so most is still upstream
    let huge = 48 * BIG;
    origin.add_file("huge.bin", huge);
    let url = origin.url("/huge.bin");
    let ca = conf.ca().to_string();
    let purl = proxy.url();
    // a slow reader keeps the response in flight while the origin is killed
    let slow = std::thread::spawn(move || {
        run_cmd(
            "curl",
            &[
                "-sS",
                "--max-time",
                "40",
                "--limit-rate",
                "2M",
                "-x",
                &purl,
                "--cacert",
                &ca,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{size_download}",
                &url,
            ],
            b"",
            CMD_WAIT,
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let _ = origin.child.kill();
    let _ = origin.child.wait();
    let started = std::time::Instant::now();
    let o = slow.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the client hung after the upstream died: {o:?}"
    );
    assert_ne!(
        o.code,
        Some(0),
        "a truncated body must not look complete: {o:?}"
    );
    let got: u64 = o
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(got < huge as u64, "{o:?}");
    // the proxy is still there for the next client
    let other = H2Origin::start(&pki);
    let (out, xfers) = curl_via(&proxy, &conf, &[&other.url("/index.html")]);
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(xfers[0].1, "2 200 1");
}

#[test]
fn h2c_with_prior_knowledge_to_a_reverse_http1_upstream_is_translated() {
    // curl --http2-prior-knowledge in front of an HTTP/1.1 origin: only gRPC calls would
    // need h2c upstream (tests/tls.rs covers those); this one goes as HTTP/1.1
    let origin = Origin::start(echo());
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let proxy = Proxy::start(&["--mode", &mode]);
    let url = format!("http://127.0.0.1:{}/pk", proxy.port());
    let out = run_cmd(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "--http2-prior-knowledge",
            "--data-binary",
            "xyz",
            "-w",
            "## %{http_version} %{http_code}",
            &url,
        ],
        b"",
        CMD_WAIT,
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert!(out.stdout.starts_with("POST /pk HTTP/1.1\r\n"), "{out:?}");
    assert!(out.stdout.ends_with("\r\n\r\nxyz## 2 200"), "{out:?}");
}

#[test]
fn an_early_answer_from_an_http1_upstream_reaches_the_uploading_h2_client() {
    // the origin refuses at once without reading the 8 MiB body, then closes
    let origin = Origin::start(handler(|ex| {
        ex.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!",
        )?;
        Ok(Next::Close)
    }));
    let conf = Conf::new();
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let cd = conf.confdir();
    let proxy = Proxy::start(&["--confdir", &cd, "--mode", &mode]);
    let dir = TempDir::new("h2early");
    let up = dir.path("up.bin");
    std::fs::write(&up, pattern_vec(8 * BIG)).unwrap();
    let data = format!("@{}", up.to_str().unwrap());
    let url = format!("https://localhost:{}/upload", proxy.port());
    let (out, xfers) = curl_reverse(&proxy, &conf, &["--data-binary", &data, &url]);
    assert_eq!(
        xfers,
        vec![("big!".to_string(), "2 413 1".to_string())],
        "{out:?}\n{}",
        proxy.stderr()
    );
}

#[test]
fn sigterm_lets_an_h2_stream_in_flight_finish_then_the_proxy_exits() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    origin.add_file("3m.bin", 3 * BIG);
    let conf = Conf::new();
    let mode = format!("reverse:https://localhost:{}", origin.port);
    let mut proxy = start(&conf, &pki, &["--mode", &mode]);
    let ca = conf.ca().to_string();
    let resolve = format!("localhost:{}:127.0.0.1", proxy.port());
    let url = format!("https://localhost:{}/3m.bin", proxy.port());
    let dir = TempDir::new("h2drain");
    let got = dir.path("got.bin");
    let got_s = got.to_str().unwrap().to_string();
    // several seconds at 500 KB/s: the signal comes while the stream is in flight
    let slow = std::thread::spawn(move || {
        run_cmd(
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                "--limit-rate",
                "500k",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "-o",
                &got_s,
                "-w",
                "%{http_version} %{http_code}",
                &url,
            ],
            b"",
            CMD_WAIT,
        )
    });
    std::thread::sleep(Duration::from_millis(800));
    proxy.signal(libc::SIGTERM);
    let o = slow.join().unwrap();
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "2 200"), "{o:?}");
    assert!(
        std::fs::read(&got).unwrap() == pattern_vec(3 * BIG),
        "body differs"
    );
    let st = proxy.wait_exit(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "{st:?}\n{}",
        proxy.stderr()
    );
}

#[test]
fn sse_events_of_an_h2_upstream_go_through_the_hooks() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let dir = TempDir::new("h2sse");
    let plugin = dir.path("sse.lua");
    std::fs::write(
        &plugin,
        r#"register_hook("sse", "on_event", function(e)
             if e.data == "one" then e.data = "ONE" end
           end)"#,
    )
    .unwrap();
    let proxy = start(&conf, &pki, &["--plugin", plugin.to_str().unwrap()]);
    let (out, xfers) = curl_via(&proxy, &conf, &[&origin.url("/events.sse")]);
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(xfers[0].1, "2 200 1", "{xfers:?}");
    assert_eq!(
        xfers[0].0, ": hi\n\nevent: a\ndata: ONE\n\ndata: two\r\n\r\n",
        "{xfers:?}"
    );
}

#[test]
fn http1_clients_of_an_h2_only_origin_are_served_over_h2() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki); // nghttpd: takes TLS without ALPN, speaks h2 only
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &["--workers", "1"]);
    // through an intercepted tunnel: the first request finds out, the rest go over h2
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &[
            "--http1.1",
            &origin.url("/index.html"),
            &origin.url("/index.html"),
        ],
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(
        xfers,
        vec![
            ("hello over h2\n".to_string(), "1.1 200 1".to_string()),
            ("hello over h2\n".to_string(), "1.1 200 0".to_string()),
        ],
        "{}",
        proxy.stderr()
    );
    // a streamed upload (chunked, 300 KB) echoed back, and a 1 MiB download
    let body = pattern_vec(300_000);
    let file = TempDir::new("h1h2");
    std::fs::write(file.path("up.bin"), &body).unwrap();
    let data = format!("@{}", file.path("up.bin").display());
    let echoed = file.path("echoed.bin");
    let (out, xfers) = curl_via(
        &proxy,
        &conf,
        &[
            "--http1.1",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            "-o",
            echoed.to_str().unwrap(),
            &origin.url("/echo"),
        ],
    );
    assert!(out.ok(), "{out:?}\n{}", proxy.stderr());
    assert_eq!(xfers.len(), 1);
    assert_eq!(xfers[0].1, "1.1 200 1");
    assert!(
        std::fs::read(&echoed).unwrap() == body,
        "echoed body differs"
    );
    let down = file.path("big.bin");
    let big = origin.url("/big.bin");
    let (out, _) = curl_via(
        &proxy,
        &conf,
        &["--http1.1", "-o", down.to_str().unwrap(), &big],
    );
    assert!(out.ok(), "{out:?}");
    let got = std::fs::read(&down).unwrap();
    assert!(got == pattern_vec(BIG), "{}", proxy.stderr());

    // reverse mode in front of it
    let mode = format!("reverse:https://localhost:{}", origin.port);
    let rev = start(&conf, &pki, &["--mode", &mode, "--workers", "1"]);
    let url = format!("https://localhost:{}/index.html", rev.port());
    let (out, xfers) = curl_reverse(&rev, &conf, &["--http1.1", &url, &url]);
    assert!(out.ok(), "{out:?}\n{}", rev.stderr());
    assert_eq!(xfers.len(), 2, "{xfers:?}");
    for (body, status) in &xfers {
        assert_eq!(body, "hello over h2\n");
        assert!(status.starts_with("1.1 200"), "{xfers:?}");
    }
    assert!(
        rev.stderr().contains("speaks only HTTP/2"),
        "{}",
        rev.stderr()
    );
}

/// `--record` on intercepted h2: each stream is one flow, with its stream id, bodies
/// both ways and the SNI.
#[test]
fn h2_streams_are_recorded() {
    use luring::flows::record::Record;
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let dir = TempDir::new("rec-h2");
    let file = dir.path("t.flows");
    let fname = file.to_str().unwrap();
    let proxy = start(
        &conf,
        &pki,
        &[
            "--record",
            fname,
            "--record-max-body",
            "2000000",
            "--workers",
            "1",
        ],
    );
    let up = dir.path("up.bin");
    std::fs::write(&up, pattern_vec(70_000)).unwrap();
    let data = format!("@{}", up.display());
    for args in [
        vec![origin.url("/big.bin")],
        vec!["--data-binary".into(), data.clone(), origin.url("/echo")],
        // HTTP/1.1 toward luring, h2 toward the h2-only origin
        vec!["--http1.1".into(), origin.url("/big.bin")],
        vec![
            "--http1.1".into(),
            "--data-binary".into(),
            data.clone(),
            origin.url("/echo"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let (out, xfers) = curl_via(&proxy, &conf, &args);
        assert!(
            out.ok() && xfers.len() == 1,
            "curl failed: {}",
            proxy.stderr()
        );
    }
    let mut flows = Vec::new();
    wait_until(Duration::from_secs(10), || {
        flows = luring::flows::file::open(&file)
            .unwrap()
            .filter_map(|r| match r.unwrap() {
                Record::Http(f) => Some(*f),
                _ => None,
            })
            .collect();
        flows.len() >= 4
    });
    assert_eq!(flows.len(), 4, "{}", proxy.stderr());
    for f in flows.iter().filter(|f| f.request.version == "HTTP/1.1") {
        let r = f.response.as_ref().unwrap();
        match f.request.method.as_str() {
            "GET" => assert_eq!(r.body.data.as_slice(), pattern_vec(BIG).as_slice()),
            _ => {
                assert_eq!(
                    f.request.body.data.as_slice(),
                    pattern_vec(70_000).as_slice()
                );
                assert_eq!(r.body.size, 70_000);
            }
        }
    }
    let get = flows.iter().find(|f| f.request.method == "GET").unwrap();
    assert_eq!(get.request.version, "HTTP/2.0");
    assert_eq!(get.stream % 2, 1);
    let tls = get.client_tls.as_ref().unwrap();
    assert_eq!((tls.sni.as_str(), tls.alpn.as_str()), ("localhost", "h2"));
    assert!(
        tls.version.starts_with("TLSv1.") && tls.ja4.starts_with('t'),
        "{tls:?}"
    );
    let r = get.response.as_ref().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.data.as_slice(), pattern_vec(BIG).as_slice());
    let post = flows.iter().find(|f| f.request.method == "POST").unwrap();
    assert_eq!(
        post.request.body.data.as_slice(),
        pattern_vec(70_000).as_slice()
    );
    assert_eq!(post.response.as_ref().unwrap().body.size, 70_000);
}

/// The first request to an h2-only origin streams its body over HTTP/1.1 and fails
/// (502); the client's TLS session then ends with an error while luring lingers. A
/// second rustls error on that session once panicked the worker (rustls asserts that
/// no second fatal alert is sent); the worker must go on serving.
#[test]
fn a_failed_tls_session_is_not_fed_to_rustls_again() {
    let pki = TestPki::new();
    let origin = H2Origin::start(&pki);
    let conf = Conf::new();
    let proxy = start(&conf, &pki, &["--workers", "1"]);
    let dir = TempDir::new("tls-failed");
    let up = dir.path("up.bin");
    std::fs::write(&up, pattern_vec(70_000)).unwrap();
    let data = format!("@{}", up.display());
    let echo = origin.url("/echo");
    let args = ["--http1.1", "--data-binary", data.as_str(), echo.as_str()];
    let _ = curl_via(&proxy, &conf, &args);
    // the same worker serves the next client
    let (out, xfers) = curl_via(&proxy, &conf, &[&origin.url("/index.html")]);
    assert!(out.ok(), "{}", proxy.stderr());
    assert_eq!(xfers[0].0, "hello over h2\n");
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
}
