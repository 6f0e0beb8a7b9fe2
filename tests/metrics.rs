//! `--metrics`: real scrapes after known traffic, the exposition checked by promtool,
//! /healthz, and the JSON access log.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::*;

/// Starts luring with `--metrics 127.0.0.1:0` (and `args`; 2 workers unless they say);
/// returns it and the bound metrics address it printed.
fn start(args: &[&str]) -> (Proxy, String) {
    let mut full = vec!["--metrics", "127.0.0.1:0"];
    if !args.contains(&"--workers") {
        full.extend(["--workers", "2"]);
    }
    full.extend_from_slice(args);
    let p = Proxy::start(&full);
    let err = p.stderr();
    let at = err
        .split("luring metrics on http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in:\n{err}"))
        .to_string();
    (p, at)
}

/// `GET path` on the metrics listener: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// The value of the sample `name{labels}` exactly as written (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// One proxied GET on a fresh connection; returns the status.
fn proxied(proxy: &Proxy, url: &str) -> u16 {
    let mut c = Client::connect(proxy.addr);
    c.send(format!("GET {url}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    c.read_response().status
}

#[test]
fn scrape_counts_known_traffic() {
    let origin = Origin::start(fixed(200, &[], b"hello"));
    let (proxy, m) = start(&[]);
    for _ in 0..5 {
        assert_eq!(proxied(&proxy, &origin.url()), 200);
    }
    let closed = format!("http://127.0.0.1:{}", closed_port());
    assert_eq!(proxied(&proxy, &closed), 502);
    // connections are counted when they close; wait for the last one
    let mut text = String::new();
    let settled = wait_until(Duration::from_secs(10), || {
        text = get(&m, "/metrics").1;
        sample(&text, "luring_connections_open{listener=\"default\"}") == 0.0
            && sample(&text, "luring_client_bytes_in_total") > 0.0
    });
    assert!(settled, "{text}");
    let s = |series: &str| sample(&text, series);
    assert_eq!(
        s("luring_requests_total{protocol=\"http1\",status_class=\"2xx\"}"),
        5.0,
        "{text}"
    );
    assert_eq!(
        s("luring_requests_total{protocol=\"http1\",status_class=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        s("luring_request_duration_seconds_count{protocol=\"http1\"}"),
        6.0
    );
    assert_eq!(s("luring_upstream_failures_total{reason=\"refused\"}"), 1.0);
    assert_eq!(s("luring_upstream_failures_total{reason=\"dns\"}"), 0.0);
    // the failed attempt counts as a connect; the origin's keep-alive gives reuses
    let opened = s("luring_upstream_connects_total") + s("luring_upstream_reuses_total");
    assert_eq!(opened, 6.0, "{text}");
    assert_eq!(s("luring_upstream_ttfb_seconds_count"), 5.0);
    assert_eq!(
        s("luring_connections_accepted_total{listener=\"default\"}"),
        6.0
    );
    assert_eq!(s("luring_metrics_workers"), 2.0);
}

#[test]
fn hooks_are_counted_and_timed_by_plugin_and_hook() {
    let dir = std::env::temp_dir().join(format!("luring-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("counted.lua");
    std::fs::write(
        &plugin,
        "register_hook('http', 'on_request', function(m) end, { name = 'quiet' })\n\
         register_hook('http', 'on_response', function(m) error('boom') end, { name = 'loud' })\n",
    )
    .unwrap();
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let (proxy, m) = start(&["--plugin", plugin.to_str().unwrap()]);
    for _ in 0..3 {
        assert_eq!(proxied(&proxy, &origin.url()), 200);
    }
    let text = get(&m, "/metrics").1;
    let quiet = "{plugin=\"counted.lua\",hook=\"quiet\",event=\"http.on_request\"}";
    let loud = "{plugin=\"counted.lua\",hook=\"loud\",event=\"http.on_response\"}";
    let s = |name: &str, l: &str| sample(&text, &format!("{name}{l}"));
    assert_eq!(s("luring_hook_calls_total", quiet), 3.0, "{text}");
    assert_eq!(s("luring_hook_errors_total", quiet), 0.0);
    assert_eq!(s("luring_hook_calls_total", loud), 3.0);
    assert_eq!(s("luring_hook_errors_total", loud), 3.0);
    assert_eq!(s("luring_hook_duration_seconds_count", quiet), 3.0);
    assert!(s("luring_hook_duration_seconds_sum", quiet) > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn promtool_accepts_the_exposition() {
    let Ok(out) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: promtool not found (apt-get install prometheus; scripts/test.sh does)");
        return;
    };
    assert!(out.status.success());
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let (proxy, m) = start(&[]);
    assert_eq!(proxied(&proxy, &origin.url()), 200);
    let text = get(&m, "/metrics").1;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // lint findings (naming advice) print but exit 0; a format error exits non-zero
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn healthz_and_unknown_paths() {
    let (_proxy, m) = start(&[]);
    assert_eq!(get(&m, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(&m, "/nope").0, 404);
}

#[test]
fn json_access_log_lines_parse() {
    let origin = Origin::start(fixed(200, &[], b"hello"));
    let proxy = Proxy::start(&["--access-log", "--access-log-format", "json"]);
    assert_eq!(proxied(&proxy, &origin.url()), 200);
    let closed = format!("http://127.0.0.1:{}", closed_port());
    assert_eq!(proxied(&proxy, &closed), 502);
    let parsed = || -> Vec<serde_json::Value> {
        proxy
            .stderr()
            .lines()
            .filter_map(|l| {
                l.find("{\"")
                    .map(|i| serde_json::from_str(&l[i..]).unwrap())
            })
            .collect()
    };
    // two workers: the lines may come in either order, the first one late
    assert!(
        wait_until(Duration::from_secs(10), || parsed().len() == 2),
        "{}",
        proxy.stderr()
    );
    let mut lines = parsed();
    lines.sort_by_key(|l| l["status"].as_u64());
    assert_eq!(lines[0]["status"], 200);
    assert!(lines[0]["bytes"].as_u64().unwrap() > 5);
    assert!(lines[0]["request"]
        .as_str()
        .unwrap()
        .starts_with("GET http://127.0.0.1:"));
    assert!(lines[0]["host"].is_string());
    assert!(lines[0].get("error").is_none());
    assert_eq!(lines[1]["status"], 502);
    assert!(
        lines[1]["error"].as_str().unwrap().contains("refused"),
        "{}",
        lines[1]
    );
}

#[test]
fn bad_metrics_address_is_refused_at_start() {
    let e = Proxy::try_start(&["--metrics", "nowhere"])
        .err()
        .expect("started");
    assert!(e.stderr.contains("ADDR:PORT"), "{}", e.stderr);
}

#[test]
fn tls_handshakes_leaves_and_upstream_tls_failures() {
    let pki = TestPki::new();
    let trusted = TlsOrigin::start(&pki);
    let other = TestPki::new();
    let untrusted = TlsOrigin::start(&other);
    let conf = Conf::new();
    let cd = conf.confdir();
    let ca = pki.ca_pem.to_str().unwrap();
    let (proxy, m) = start(&["--confdir", &cd, "--upstream-ca", ca, "--workers", "1"]);
    let via = |port: u16| {
        let url = format!("https://localhost:{port}/x");
        curl(&["-x", &proxy.url(), "--cacert", conf.ca(), &url]).status
    };
    // two connections for one name: one leaf minted, the second served from the cache
    assert_eq!(via(trusted.port()), 200);
    assert_eq!(via(trusted.port()), 200);
    assert_eq!(via(untrusted.port()), 502);
    let text = get(&m, "/metrics").1;
    let s = |series: &str| sample(&text, series);
    assert_eq!(s("luring_leaf_certs_minted_total"), 1.0, "{text}");
    assert_eq!(s("luring_leaf_certs_cached_total"), 2.0, "{text}");
    assert_eq!(
        s("luring_tls_handshakes_total{side=\"client\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(
        s("luring_tls_handshakes_total{side=\"upstream\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        s("luring_tls_handshake_failures_total{side=\"upstream\"}"),
        1.0
    );
    assert_eq!(s("luring_upstream_failures_total{reason=\"tls\"}"), 1.0);
}

#[test]
fn budget_interruptions_are_counted_per_hook() {
    let dir = std::env::temp_dir().join(format!("luring-metrics-b{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("spin.lua");
    std::fs::write(
        &plugin,
        "register_hook('http', 'on_request', function(m) while true do end end, { name = 'spin' })\n",
    )
    .unwrap();
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let args = [
        "--plugin",
        plugin.to_str().unwrap(),
        "--hook-budget-ms",
        "20",
    ];
    let (proxy, m) = start(&args);
    // a failed hook is skipped (on_error continue): the request still goes through
    assert_eq!(proxied(&proxy, &origin.url()), 200);
    let text = get(&m, "/metrics").1;
    let l = "{plugin=\"spin.lua\",hook=\"spin\",event=\"http.on_request\"}";
    assert_eq!(
        sample(&text, &format!("luring_hook_budget_interruptions_total{l}")),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, &format!("luring_hook_errors_total{l}")), 1.0);
    // the interrupted run is timed too, and it took at least the budget
    assert!(sample(&text, &format!("luring_hook_duration_seconds_sum{l}")) >= 0.015);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn healthz_says_draining_after_sigterm() {
    let origin = Origin::start(never_respond());
    let (proxy, m) = start(&["--drain-timeout", "10"]);
    // a request in flight keeps the proxy draining
    let mut c = Client::connect(proxy.addr);
    c.send(format!("GET {}/ HTTP/1.1\r\nHost: x\r\n\r\n", origin.url()).as_bytes());
    assert!(origin.wait_requests(1, Duration::from_secs(10)));
    assert_eq!(get(&m, "/healthz").0, 200);
    proxy.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || get(&m, "/healthz").0 == 503),
        "{}",
        proxy.stderr()
    );
}

#[test]
fn h2_streams_and_socks5_requests_by_protocol() {
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let (proxy, m) = start(&["--mode", &mode]);
    let url = format!("http://127.0.0.1:{}/a", proxy.port());
    for _ in 0..2 {
        let r = curl(&["--http2-prior-knowledge", &url]);
        assert_eq!((r.code, r.status), (0, 200), "{}", r.stderr);
    }
    let text = get(&m, "/metrics").1;
    let s = |series: &str| sample(&text, series);
    assert_eq!(
        s("luring_requests_total{protocol=\"h2\",status_class=\"2xx\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        s("luring_requests_total{protocol=\"http1\",status_class=\"2xx\"}"),
        0.0
    );

    let (socks, m) = start(&["--mode", "socks5"]);
    let via = format!("127.0.0.1:{}", socks.port());
    let r = curl(&["--socks5", &via, &format!("{}/b", origin.url())]);
    assert_eq!(r.status, 200, "{}", r.stderr);
    let closed = format!("http://127.0.0.1:{}/c", closed_port());
    let _ = curl(&["--socks5", &via, &closed]);
    let text = get(&m, "/metrics").1;
    let s = |series: &str| sample(&text, series);
    assert_eq!(
        s("luring_requests_total{protocol=\"socks5\",status_class=\"2xx\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        s("luring_requests_total{protocol=\"socks5\",status_class=\"5xx\"}"),
        1.0
    );
    // the HTTP request inside the SOCKS5 tunnel is an exchange of its own
    assert_eq!(
        s("luring_requests_total{protocol=\"http1\",status_class=\"2xx\"}"),
        1.0
    );
}

#[test]
fn event_streams_are_counted_as_sse() {
    let events = Origin::start(fixed(
        200,
        &[("content-type", "text/event-stream; charset=utf-8")],
        b"data: one\n\n",
    ));
    let plain = Origin::start(fixed(200, &[("content-type", "text/plain")], b"x"));
    let (proxy, m) = start(&[]);
    assert_eq!(proxied(&proxy, &events.url()), 200);
    assert_eq!(proxied(&proxy, &plain.url()), 200);
    let mut text = String::new();
    let settled = wait_until(Duration::from_secs(10), || {
        text = get(&m, "/metrics").1;
        sample(&text, "luring_connections_open{listener=\"default\"}") == 0.0
    });
    assert!(settled, "{text}");
    let s = |series: &str| sample(&text, series);
    assert_eq!(
        s("luring_requests_total{protocol=\"sse\",status_class=\"2xx\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        s("luring_requests_total{protocol=\"http1\",status_class=\"2xx\"}"),
        1.0,
        "{text}"
    );
}
