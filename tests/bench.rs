//! `luring bench`: the replay origin and the load driver as real processes on
//! 127.0.0.1 (docs/bench.md). Every run is bounded in count and time.

mod support;

#[path = "bench/conn_mode.rs"]
mod conn_mode;
#[path = "bench/identity.rs"]
mod identity;
#[path = "bench/websocket.rs"]
mod websocket;

use luring::bench::sample;
use luring::flows::record::{field, HttpFlow, RequestRec, Times};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// A `luring bench origin` child, killed on drop.
struct BenchOrigin {
    child: Child,
    addr: SocketAddr,
}

impl BenchOrigin {
    fn start(file: &Path, extra: &[&str]) -> BenchOrigin {
        Self::start_on(file, "127.0.0.1:0", extra)
    }

    fn start_on(file: &Path, listen: &str, extra: &[&str]) -> BenchOrigin {
        let mut child = Command::new(bin())
            .args([
                "bench",
                "origin",
                file.to_str().unwrap(),
                "--listen",
                listen,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn origin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .unwrap();
        BenchOrigin { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for BenchOrigin {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `luring bench run ARGS --report DIR` (bounded); the report's first target.
fn bench_run(args: &[&str], dir: &TempDir, bound: Duration) -> serde_json::Value {
    bench_run_all(args, dir, bound)[0].clone()
}

/// Runs `luring bench run ARGS --report DIR` (bounded); the report's targets.
fn bench_run_all(args: &[&str], dir: &TempDir, bound: Duration) -> Vec<serde_json::Value> {
    let report = dir.path("report");
    let mut all = vec!["bench", "run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--report", report.to_str().unwrap()]);
    let (st, out, err) = run_luring(&all, bound);
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{out}\n{err}");
    // no terminal here: no progress bar is drawn
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "spectrum, latency, rate and errors plots"
    );
    let text = std::fs::read_to_string(report.join("report.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["targets"].as_array().unwrap().clone()
}

/// Writes `flows` as the flow file `name` in `dir`.
fn flows_file(dir: &TempDir, name: &str, flows: &[HttpFlow]) -> std::path::PathBuf {
    let p = dir.path(name);
    luring::bench::input::write(&p, flows).unwrap();
    p
}

fn sample_file(dir: &TempDir) -> std::path::PathBuf {
    flows_file(dir, "sample.flows", &sample::flows())
}

fn pct(t: &serde_json::Value, hist: &str, p: &str) -> f64 {
    t["merged"][hist]["percentiles_us"][p].as_f64().unwrap()
}

#[test]
fn fixed_rate_is_kept_and_counted_exactly() {
    let dir = TempDir::new("bench-rate");
    let f = sample_file(&dir);
    let o = BenchOrigin::start(&f, &[]);
    let url = o.url();
    let t = bench_run(
        &[
            f.to_str().unwrap(),
            "--target",
            &url,
            "--rate",
            "300",
            "--duration",
            "4s",
            "--warmup",
            "0",
        ],
        &dir,
        Duration::from_secs(20),
    );
    let m = &t["merged"];
    assert_eq!(m["scheduled"], 1200, "{t}");
    assert_eq!(m["completed"], 1200, "{t}");
    let rate = m["send_rate"].as_f64().unwrap();
    assert!((rate - 300.0).abs() <= 3.0, "sent at {rate}/s");
    let hgrm = std::fs::read_to_string(dir.path("report").join("target1.corrected.hgrm")).unwrap();
    assert!(hgrm.contains("Total count    =         1200]"), "{hgrm}");
    // the sample has 8 flows: six 2xx, one 3xx, one 4xx each time round
    assert_eq!(m["status_classes"]["4xx"], 150);
    // per second: the schedule's 300, all answered, the 4xx counted where they were due
    let col = |name: &str| -> Vec<u64> {
        let v = m["seconds"][name]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {t}"));
        v.iter().map(|x| x.as_u64().unwrap()).collect()
    };
    assert_eq!(col("scheduled"), [300; 4]);
    assert_eq!(col("completed").iter().sum::<u64>(), 1200);
    assert_eq!(col("failed"), [0; 4]);
    assert_eq!(col("not_2xx_3xx").iter().sum::<u64>(), 150);
}

#[test]
fn a_stalled_origin_shows_in_corrected_latency_only() {
    let dir = TempDir::new("bench-stall");
    let f = sample_file(&dir);
    let o = BenchOrigin::start(&f, &[]);
    let url = o.url();
    let args = [
        f.to_str().unwrap(),
        "--target",
        &url,
        "--rate",
        "200",
        "--duration",
        "4s",
        "--warmup",
        "0",
        "--connections",
        "8",
    ];
    let report = dir.path("report");
    let mut all = vec!["bench", "run"];
    all.extend_from_slice(&args);
    all.extend_from_slice(&["--report", report.to_str().unwrap()]);
    let mut child = Command::new(bin())
        .args(&all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    o.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(1));
    o.signal(libc::SIGCONT);
    assert!(wait_until(Duration::from_secs(20), || child
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let t = &v["targets"][0];
    // no sample missing: every scheduled request completed and was measured
    assert_eq!(t["merged"]["completed"], 800, "{t}");
    assert_eq!(t["merged"]["corrected"]["count"], 800);
    // about 200 of 800 requests fell in the 1 s stall, with latencies up to 1 s
    assert!(pct(t, "corrected", "p90") > 400_000.0, "{t}");
    assert!(pct(t, "corrected", "p100") > 800_000.0, "{t}");
    // only the few requests in flight on the 8 connections saw it from their send
    assert!(pct(t, "service", "p90") < 100_000.0, "{t}");
    assert!(!t["driver_limited"].as_array().unwrap().is_empty(), "{t}");
    // second by second: the stall (1.5 s to 2.5 s after the start, so before 2.5 s of
    // the window whatever the start-up took) is in the p99 of a second it fell in, and
    // gone from the last one
    let p99: Vec<f64> = t["merged"]["seconds"]["corrected_p99_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p99.len(), 4, "{t}");
    assert!(p99[..3].iter().any(|&v| v > 500_000.0), "{p99:?}");
    assert!(p99[3] < 100_000.0, "{p99:?}");
}

/// Requests as a server saw them: the path, when, and the client's port.
type Arrivals = Arc<Mutex<Vec<(String, Instant, u16)>>>;

/// A keep-alive server that notes each request (path, arrival time, client port) and
/// answers 200 after `delay`; at most 64 connections.
fn logging_server(delay: Duration) -> (SocketAddr, Arrivals) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().take(64) {
            let Ok(mut c) = c else { continue };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let port = c.peer_addr().unwrap().port();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    while let Some(i) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        seen.lock().unwrap().push((path, Instant::now(), port));
                        buf.drain(..i + 4);
                        std::thread::sleep(delay);
                        let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn recorded_timing_replays_at_the_offsets_scaled_by_speed() {
    let dir = TempDir::new("bench-speed");
    // three bursts of four requests at 0, 400 and 1000 ms, written out of order
    let t0 = 1_700_000_000_000_000_000u64;
    let bursts = [(2u64, 1000u64), (0, 0), (1, 400)];
    let mut flows = Vec::new();
    for (b, ms) in bursts {
        for i in 0..4u64 {
            flows.push(HttpFlow {
                request: RequestRec {
                    method: "GET".into(),
                    authority: "t.test".into(),
                    path: format!("/b{b}/{i}"),
                    headers: vec![field("Host", "t.test")],
                    ..Default::default()
                },
                times: Times {
                    request_start: t0 + ms * 1_000_000 + i * 1000,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
    }
    let f = dir.path("bursts.flows");
    luring::bench::input::write(&f, &flows).unwrap();
    for speed in ["1", "2"] {
        let (addr, seen) = logging_server(Duration::ZERO);
        let url = format!("http://{addr}");
        let t = bench_run(
            &[
                f.to_str().unwrap(),
                "--target",
                &url,
                "--speed",
                speed,
                "--once",
                "--connections",
                "8",
            ],
            &dir,
            Duration::from_secs(20),
        );
        assert_eq!(t["merged"]["completed"], 12, "{t}");
        let seen = seen.lock().unwrap().clone();
        let first = seen.iter().map(|s| s.1).min().unwrap();
        let div: f64 = speed.parse().unwrap();
        for (path, at, _) in &seen {
            let b: usize = path[2..3].parse().unwrap();
            let want = [0.0, 400.0, 1000.0][b] / div;
            let got = at.duration_since(first).as_secs_f64() * 1000.0;
            assert!(
                (got - want).abs() < 50.0,
                "speed {speed}: {path} at {got:.1} ms, want {want}"
            );
        }
    }
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// curl's body for `flow` asked of the origin at `url`, Host kept.
fn fetch(url: &str, flow: &HttpFlow, dir: &TempDir, extra: &[&str]) -> CurlOutput {
    let req = &flow.request;
    let full = format!("{url}{}", req.path);
    let host = format!("Host: {}", req.authority);
    let body = dir.path("req.bin");
    std::fs::write(&body, &req.body.data).unwrap();
    let data = format!("@{}", body.display());
    let mut args = vec!["-H", &host, "-X", &req.method, &full];
    args.extend_from_slice(extra);
    if req.method == "HEAD" {
        args.push("-I");
    }
    if !req.body.data.is_empty() {
        args.extend_from_slice(&["--data-binary", &data]);
    }
    curl(&args)
}

#[test]
fn origin_bodies_are_the_recorded_bytes() {
    let dir = TempDir::new("bench-bytes");
    let f = sample_file(&dir);
    let o = BenchOrigin::start(&f, &[]);
    // HTTP/1.1, then h2c (prior knowledge) on the same port
    let flows = sample::flows();
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        for fl in flows.iter().filter(|f| f.request.method != "HEAD") {
            let out = fetch(&o.url(), fl, &dir, extra);
            let resp = fl.response.as_ref().unwrap();
            assert_eq!(out.status, resp.status, "{} {extra:?}", fl.request.path);
            assert_eq!(sha(&out.body), sha(&resp.body.data), "{}", fl.request.path);
        }
    }
    // the recorded trailers arrive on h2 too
    let trailers = dir.path("trailers.txt");
    let out = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: shop.example",
        "-D",
        trailers.to_str().unwrap(),
        &format!("{}/stream", o.url()),
    ]);
    assert_eq!(out.status, 200);
    let dumped = std::fs::read_to_string(&trailers).unwrap();
    assert!(dumped.contains("x-checksum: abc123"), "{dumped}");
    // unmatched: the reason travels in a header; --unmatched-status changes the code
    let out = curl(&["-i", &format!("{}/nope", o.url())]);
    assert_eq!(out.status, 404);
    assert!(out
        .body_str()
        .contains("x-luring-bench-unmatched: no recorded request matches"));
    let o2 = BenchOrigin::start(&f, &["--unmatched-status", "599", "--pop"]);
    assert_eq!(curl(&[&format!("{}/nope", o2.url())]).status, 599);
    let one = &sample::flows()[1];
    assert_eq!(fetch(&o2.url(), one, &dir, &[]).status, 200);
    assert_eq!(fetch(&o2.url(), one, &dir, &[]).status, 599, "popped once");
}

/// A recorded POST of `body` as `content_type` to `path` on 127.0.0.1, answered `answer`.
fn form_flow(path: &str, content_type: &str, body: &[u8], answer: &str) -> HttpFlow {
    HttpFlow {
        request: RequestRec {
            method: "POST".into(),
            authority: "127.0.0.1".into(),
            path: path.into(),
            headers: vec![field("Content-Type", content_type)],
            body: luring::flows::record::BodyRec {
                data: serde_bytes::ByteBuf::from(body.to_vec()),
                size: body.len() as u64,
                cut: false,
            },
            ..Default::default()
        },
        response: Some(luring::flows::record::ResponseRec {
            status: 200,
            reason: "OK".into(),
            body: luring::flows::record::BodyRec {
                data: serde_bytes::ByteBuf::from(answer.as_bytes().to_vec()),
                size: answer.len() as u64,
                cut: false,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn ignored_form_fields_let_fresh_tokens_and_boundaries_match() {
    let dir = TempDir::new("bench-form");
    let flows = [
        form_flow(
            "/login",
            "application/x-www-form-urlencoded",
            b"user=ann&csrf=recorded-token",
            "welcome ann",
        ),
        form_flow(
            "/upload",
            "multipart/form-data; boundary=recorded",
            b"--recorded\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n--recorded\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nrecorded-token\r\n--recorded--\r\n",
            "uploaded",
        ),
    ];
    let f = dir.path("forms.flows");
    luring::bench::input::write(&f, &flows).unwrap();
    let o = BenchOrigin::start(&f, &["--ignore-host", "--ignore-form-field", "csrf"]);
    let login = format!("{}/login", o.url());
    let upload = format!("{}/upload", o.url());
    // curl's own encodings: a new token, and multipart with a boundary of its own
    let out = curl(&["-d", "user=ann", "-d", "csrf=fresh", &login]);
    assert_eq!((out.status, out.body_str().as_str()), (200, "welcome ann"));
    let out = curl(&["-F", "user=ann", "-F", "csrf=fresh", &upload]);
    assert_eq!((out.status, out.body_str().as_str()), (200, "uploaded"));
    // the other fields still count
    assert_eq!(curl(&["-d", "user=bob&csrf=x", &login]).status, 404);
    // without the flag a new token is another request
    let plain = BenchOrigin::start(&f, &["--ignore-host"]);
    let out = curl(&[
        "-d",
        "user=ann&csrf=fresh",
        &format!("{}/login", plain.url()),
    ]);
    assert_eq!(out.status, 404);
}

#[test]
fn a_har_recording_is_served_like_a_flow_file() {
    let dir = TempDir::new("bench-har");
    let f = sample_file(&dir);
    let har = dir.path("sample.har");
    let (st, _, err) = run_luring(
        &[
            "flows",
            "export",
            f.to_str().unwrap(),
            "--format",
            "har",
            "-o",
            har.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert!(st.is_some_and(|s| s.success()), "{err}");
    let o = BenchOrigin::start(&har, &[]);
    for fl in sample::flows().iter().filter(|f| f.request.method == "GET") {
        let out = fetch(&o.url(), fl, &dir, &[]);
        let resp = fl.response.as_ref().unwrap();
        assert_eq!(out.status, resp.status, "{}", fl.request.path);
        assert_eq!(sha(&out.body), sha(&resp.body.data), "{}", fl.request.path);
    }
}

/// Records curl's traffic to a test origin through `luring run --record`.
fn record_curl(dir: &TempDir, paths: &[&str]) -> (std::path::PathBuf, Vec<u8>) {
    let body = pattern_vec(70_000);
    let origin = Origin::start(fixed(
        200,
        &[("Content-Type", "application/octet-stream")],
        &body,
    ));
    let file = dir.path("rec.flows");
    let mut proxy = Proxy::start(&["--record", file.to_str().unwrap()]);
    for p in paths {
        let out = curl(&["-x", &proxy.url(), &format!("{}{p}", origin.url())]);
        assert_eq!(out.status, 200, "{}", out.stderr);
    }
    proxy.terminate(Duration::from_secs(5));
    (file, body)
}

#[test]
fn a_luring_recording_of_curl_replays_byte_for_byte() {
    let dir = TempDir::new("bench-rec");
    let (file, body) = record_curl(&dir, &["/a", "/b?x=1"]);
    let rec = luring::bench::input::load(&file).unwrap();
    assert_eq!(rec.flows.len(), 2);
    let o = BenchOrigin::start(&file, &[]);
    for fl in &rec.flows {
        let out = fetch(&o.url(), fl, &dir, &[]);
        assert_eq!(out.status, 200, "{}", fl.request.path);
        assert_eq!(sha(&out.body), sha(&body));
    }
}

#[test]
fn full_loop_record_then_replay_through_luring_with_a_plugin() {
    let dir = TempDir::new("bench-loop");
    let (file, _) = record_curl(&dir, &["/one", "/two", "/three"]);
    let o = BenchOrigin::start(&file, &[]);
    let plugin = dir.path("teapot.lua");
    std::fs::write(
        &plugin,
        "register_hook('http', 'on_response', function(msg, ctx) msg.status = 418 end)\n",
    )
    .unwrap();
    let mode = format!("reverse:{}", o.url());
    let proxy = Proxy::start(&[
        "--mode",
        &mode,
        "--keep-host-header",
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    let f = file.to_str().unwrap();
    let pu = proxy.url();
    let common = ["--once", "--connections", "2"];
    let mut a = vec![f, "--target", &pu];
    a.extend_from_slice(&common);
    let through = bench_run(&a, &dir, Duration::from_secs(20));
    assert_eq!(through["merged"]["status_classes"]["4xx"], 3, "{through}");
    let ou = o.url();
    let mut a = vec![f, "--target", &ou];
    a.extend_from_slice(&common);
    let direct = bench_run(&a, &dir, Duration::from_secs(20));
    assert_eq!(direct["merged"]["status_classes"]["2xx"], 3, "{direct}");
}

#[test]
fn the_default_bench_prints_one_table_with_both_rows() {
    let (st, out, err) = run_luring(
        &["bench", "--rate", "200", "--duration", "1s"],
        Duration::from_secs(20),
    );
    assert!(st.is_some_and(|s| s.success()), "{out}\n{err}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("direct") || l.starts_with("luring"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[1]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            == 200,
        "{out}"
    );
}

/// nginx as a reverse proxy to `origin` on a free port; None when nginx is not installed.
fn nginx_proxy(dir: &TempDir, origin: SocketAddr) -> Option<(Child, SocketAddr)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path("ngx");
    std::fs::create_dir_all(&d).unwrap();
    let t = d.display();
    let conf = format!(
        "worker_processes 1; master_process off; daemon off; pid {t}/nginx.pid;
error_log {t}/error.log warn; events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {t}/b; proxy_temp_path {t}/p;
  fastcgi_temp_path {t}/f; uwsgi_temp_path {t}/u; scgi_temp_path {t}/s;
  upstream o {{ server {origin}; keepalive 16; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://o; proxy_http_version 1.1;
      proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }} }}\n"
    );
    let c = d.join("nginx.conf");
    std::fs::write(&c, conf).unwrap();
    let child = Command::new(nginx)
        .args(["-p", &t.to_string(), "-c", c.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    }));
    Some((child, addr))
}

#[test]
fn luring_and_nginx_side_by_side_with_cpu_per_request() {
    let dir = TempDir::new("bench-side");
    let f = sample_file(&dir);
    let o = BenchOrigin::start(&f, &[]);
    let Some((mut ngx, naddr)) = nginx_proxy(&dir, o.addr) else {
        eprintln!("nginx is not installed: side-by-side test not run");
        return;
    };
    let mode = format!("reverse:{}", o.url());
    let proxy = Proxy::start(&["--mode", &mode, "--keep-host-header", "--workers", "1"]);
    let (lt, nt) = (
        format!("luring={}", proxy.url()),
        format!("nginx=http://{naddr}"),
    );
    let (lp, np) = (
        format!("luring={}", proxy.pid()),
        format!("nginx={}", ngx.id()),
    );
    let report = dir.path("report");
    let (st, out, err) = run_luring(
        &[
            "bench",
            "run",
            f.to_str().unwrap(),
            "--target",
            &lt,
            "--target",
            &nt,
            "--pid",
            &lp,
            "--pid",
            &np,
            "--rate",
            "300",
            "--duration",
            "2s",
            "--warmup",
            "0.5s",
            "--rounds",
            "2",
            "--report",
            report.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let _ = ngx.kill();
    let _ = ngx.wait();
    assert!(st.is_some_and(|s| s.success()), "{out}\n{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    for t in v["targets"].as_array().unwrap() {
        // 2 rounds of 600 scheduled; 6 of every 8 sample responses are 2xx
        assert_eq!(t["merged"]["completed"], 1200, "{t}");
        assert_eq!(t["merged"]["status_classes"]["2xx"], 900, "{t}");
        assert!(t["target_cpu_us_per_request"].as_f64().is_some(), "{t}");
        assert_eq!(t["rounds"].as_array().unwrap().len(), 2);
    }
    assert!(out.contains("luring") && out.contains("nginx"), "{out}");
}

#[test]
fn a_forward_proxy_target_gets_absolute_form_requests() {
    let dir = TempDir::new("bench-fwd");
    let origin = Origin::start(echo());
    let flows: Vec<HttpFlow> = ["/f1", "/f2?q=1", "/f3"]
        .iter()
        .map(|p| HttpFlow {
            request: RequestRec {
                method: "GET".into(),
                scheme: "http".into(),
                authority: origin.addr.to_string(),
                path: p.to_string(),
                headers: vec![field("Host", origin.addr.to_string())],
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    let f = dir.path("fwd.flows");
    luring::bench::input::write(&f, &flows).unwrap();
    let proxy = Proxy::start(&[]);
    let target = format!("fwd={}", proxy.url());
    let t = bench_run(
        &[
            f.to_str().unwrap(),
            "--proxy",
            &target,
            "--once",
            "--connections",
            "1",
            "--header",
            "Cookie: filled=1",
        ],
        &dir,
        Duration::from_secs(20),
    );
    assert_eq!(t["merged"]["status_classes"]["2xx"], 3, "{t}");
    let mut seen: Vec<String> = origin.requests().iter().map(|r| r.target.clone()).collect();
    seen.sort();
    assert_eq!(seen, ["/f1", "/f2?q=1", "/f3"]);
    assert_eq!(origin.requests()[0].header("cookie"), Some("filled=1"));
}

/// A recorded WebSocket conversation on ws.test/chat, upgraded with client key `key`.
fn ws_flow(key: &str) -> HttpFlow {
    use luring::flows::record::WsMessageRec;
    let msg = |from_client, opcode, data: &str| WsMessageRec {
        from_client,
        opcode,
        data: serde_bytes::ByteBuf::from(data.as_bytes().to_vec()),
        size: data.len() as u64,
        ts: 0,
    };
    HttpFlow {
        request: RequestRec {
            method: "GET".into(),
            authority: "ws.test".into(),
            path: "/chat".into(),
            headers: vec![
                field("Host", "ws.test"),
                field("Upgrade", "websocket"),
                field("Connection", "Upgrade"),
                field("Sec-WebSocket-Key", key),
                field("Sec-WebSocket-Version", "13"),
            ],
            ..Default::default()
        },
        response: Some(luring::flows::record::ResponseRec {
            status: 101,
            reason: "Switching Protocols".into(),
            headers: vec![
                field("Upgrade", "websocket"),
                field("Connection", "Upgrade"),
                field("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
            ..Default::default()
        }),
        websocket: vec![
            msg(false, 1, "welcome"),
            msg(true, 1, "q1"),
            msg(false, 1, "a1"),
            msg(false, 2, "a1-bin"),
            msg(true, 1, "q2"),
            msg(false, 1, "a2"),
        ],
        ..Default::default()
    }
}

#[test]
fn websocket_replay_plays_the_server_side_in_turn() {
    use bytes::{Bytes, BytesMut};
    use luring::proto::ws;
    let dir = TempDir::new("bench-ws");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let flow = ws_flow(key);
    let f = dir.path("ws.flows");
    luring::bench::input::write(&f, &[flow]).unwrap();
    let o = BenchOrigin::start(&f, &[]);
    let mut c = std::net::TcpStream::connect(o.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n");
    c.write_all(req.as_bytes()).unwrap();
    let dec = ws::FrameDecoder::new(1 << 20);
    let mut inb = BytesMut::new();
    let mut read_frames = |c: &mut std::net::TcpStream, n: usize| {
        let mut got = Vec::new();
        while got.len() < n {
            while let Some(f) = dec.decode(&mut inb).unwrap() {
                got.push((f.opcode, String::from_utf8_lossy(&f.payload).to_string()));
            }
            if got.len() >= n {
                break;
            }
            let mut b = [0u8; 4096];
            let k = c.read(&mut b).unwrap();
            assert!(k > 0, "closed after {got:?}");
            inb.extend_from_slice(&b[..k]);
            if let Some(i) = find(&inb, b"\r\n\r\n").filter(|_| inb.starts_with(b"HTTP/1.1 101")) {
                let _ = inb.split_to(i + 4);
            }
        }
        got
    };
    assert_eq!(read_frames(&mut c, 1), [(1, "welcome".to_string())]);
    let send = |c: &mut std::net::TcpStream, text: &str| {
        let mut out = BytesMut::new();
        let fr = ws::Frame {
            fin: true,
            rsv1: false,
            opcode: 1,
            mask: Some([1, 2, 3, 4]),
            payload: Bytes::from(text.to_string()),
        };
        ws::encode(&fr, &mut out);
        c.write_all(&out).unwrap();
    };
    send(&mut c, "anything");
    assert_eq!(
        read_frames(&mut c, 2),
        [(1, "a1".to_string()), (2, "a1-bin".to_string())]
    );
    send(&mut c, "more");
    assert_eq!(read_frames(&mut c, 1), [(1, "a2".to_string())]);
}

/// How long a python client may take.
const CMD_WAIT: Duration = Duration::from_secs(30);

/// A python `websockets` client: prints each server message as it comes, answering
/// the first two with a message of its own, then closes.
const WS_CLIENT_PY: &str = r#"
import asyncio, sys
import websockets

async def main():
    async with websockets.connect(sys.argv[1], open_timeout=10) as ws:
        got = []
        for answer in ["hi", "more", None]:
            want = {"hi": 1, "more": 2, None: 1}[answer]
            for _ in range(want):
                m = await asyncio.wait_for(ws.recv(), 10)
                got.append(m if isinstance(m, str) else "bytes:" + m.decode())
            if answer:
                await ws.send(answer)
    print(" ".join(got))

asyncio.run(main())
"#;

#[test]
fn a_real_websocket_client_with_its_own_key_gets_the_recorded_conversation() {
    need_python_module("websockets");
    let dir = TempDir::new("bench-ws-py");
    let f = dir.path("ws.flows");
    // recorded with RFC 6455's sample key; websockets sends a random one
    luring::bench::input::write(&f, &[ws_flow("dGhlIHNhbXBsZSBub25jZQ==")]).unwrap();
    let o = BenchOrigin::start(&f, &["--ignore-host"]);
    let url = format!("ws://{}/chat", o.addr);
    let out = run_cmd("python3", &["-c", WS_CLIENT_PY, &url], b"", CMD_WAIT);
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.trim(), "welcome a1 bytes:a1-bin a2");
}

#[test]
fn origin_delay_recorded_waits_the_recorded_server_time() {
    let dir = TempDir::new("bench-delay");
    let t0 = 1_700_000_000_000_000_000u64;
    let flow = HttpFlow {
        request: RequestRec {
            method: "GET".into(),
            authority: "d.test".into(),
            path: "/slow".into(),
            headers: vec![field("Host", "d.test")],
            ..Default::default()
        },
        response: Some(luring::flows::record::ResponseRec {
            status: 200,
            reason: "OK".into(),
            headers: vec![field("Content-Length", "2")],
            body: luring::flows::record::BodyRec {
                data: serde_bytes::ByteBuf::from(b"ok".to_vec()),
                size: 2,
                cut: false,
            },
            ..Default::default()
        }),
        times: Times {
            request_start: t0,
            response_head: t0 + 400_000_000,
            end: t0 + 400_000_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let f = dir.path("slow.flows");
    luring::bench::input::write(&f, &[flow]).unwrap();
    let o = BenchOrigin::start(&f, &["--origin-delay", "recorded"]);
    let url = format!("{}/slow", o.url());
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        let started = Instant::now();
        let mut args = vec!["-H", "Host: d.test", &url];
        args.extend_from_slice(extra);
        let out = curl(&args);
        assert_eq!((out.status, out.body_str().as_str()), (200, "ok"));
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{extra:?}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn h2c_targets_replay_over_shared_connections() {
    let dir = TempDir::new("bench-h2c");
    let f = sample_file(&dir);
    let o = BenchOrigin::start(&f, &[]);
    let target = format!("h2c://{}", o.addr);
    let t = bench_run(
        &[
            f.to_str().unwrap(),
            "--target",
            &target,
            "--connections",
            "2",
            "--streams",
            "4",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--warmup",
            "0",
        ],
        &dir,
        Duration::from_secs(20),
    );
    let m = &t["merged"];
    assert_eq!(m["completed"], 400, "{t}");
    assert_eq!(m["status_classes"]["2xx"], 300, "{t}");
    // every request matched a recorded one, over HTTP/2 (the origin counts them)
    let stats = origin_stats(&o);
    assert!(
        stats.starts_with("{\"served\":400,\"unmatched\":0"),
        "{stats}"
    );
}

/// The CA certificate file in a luring config directory.
fn ca_pem(confdir: &Path) -> String {
    confdir.join("luring-ca.pem").to_str().unwrap().to_string()
}

/// The origin's counters (asked over plain HTTP on its port).
fn origin_stats(o: &BenchOrigin) -> String {
    curl(&[&format!("{}/__luring_bench/stats", o.url())]).body_str()
}

/// A `--tls` origin on `listen` with its own CA in DIR/origin-conf; its CA file.
fn tls_origin(f: &Path, listen: &str, dir: &TempDir) -> (BenchOrigin, String) {
    let conf = dir.path("origin-conf");
    let o = BenchOrigin::start_on(f, listen, &["--tls", "--confdir", conf.to_str().unwrap()]);
    (o, ca_pem(&conf))
}

/// The sample's 8 flows all completed (six 2xx), none failed.
fn all_eight_ok(t: &serde_json::Value) {
    let m = &t["merged"];
    assert_eq!(m["completed"], 8, "{t}");
    assert_eq!(m["errors"], serde_json::json!({}), "{t}");
    assert_eq!(m["status_classes"]["2xx"], 6, "{t}");
}

#[test]
fn tls_origin_serves_h1_and_h2_to_curl_with_a_leaf_for_the_name() {
    let dir = TempDir::new("bench-tls-origin");
    let f = sample_file(&dir);
    let (o, ca) = tls_origin(&f, "127.0.0.1:0", &dir);
    let port = o.addr.port();
    let resolve = format!("shop.example:{port}:127.0.0.1");
    let base = format!("https://shop.example:{port}");
    let heads = dir.path("heads.txt");
    let heads_s = heads.to_str().unwrap();
    for (version, want) in [("--http1.1", "HTTP/1.1 "), ("--http2", "HTTP/2 ")] {
        let extra = [
            version,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-D",
            heads_s,
        ];
        for fl in sample::flows()
            .iter()
            .filter(|f| f.request.method != "HEAD")
        {
            let out = fetch(&base, fl, &dir, &extra);
            let resp = fl.response.as_ref().unwrap();
            assert_eq!(
                out.status, resp.status,
                "{} {version}: {}",
                fl.request.path, out.stderr
            );
            assert_eq!(sha(&out.body), sha(&resp.body.data), "{}", fl.request.path);
            let h = std::fs::read_to_string(&heads).unwrap();
            assert!(h.starts_with(want), "{version}: {h}");
        }
    }
    // the leaf is checked: without the origin's CA curl refuses it (60: bad certificate)
    let out = curl(&["--resolve", &resolve, &format!("{base}/")]);
    assert_eq!(out.code, 60, "{}", out.stderr);
    // plain HTTP still works on the same port, and nothing went unmatched
    assert_eq!(
        origin_stats(&o),
        r#"{"served":14,"unmatched":0,"exhausted":0,"bad":0,"h2":7,"tls":14}"#
    );
}

#[test]
fn the_driver_speaks_https_and_h2_to_a_tls_origin() {
    let dir = TempDir::new("bench-tls-drive");
    let f = sample_file(&dir);
    let (o, ca) = tls_origin(&f, "127.0.0.1:0", &dir);
    let (h1, h2) = (
        format!("h1=https://{}", o.addr),
        format!("h2=h2://{}", o.addr),
    );
    let fs = f.to_str().unwrap();
    let common = ["--once", "--connections", "2", "--check-bodies"];
    let mut args = vec![fs, "--target", &h1, "--target", &h2, "--cacert", &ca];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--streams", "2"]);
    let ts = bench_run_all(&args, &dir, Duration::from_secs(20));
    assert_eq!(ts.len(), 2);
    ts.iter().for_each(all_eight_ok);
    // the sample's host is the server name: the leaf for shop.example verified
    assert_eq!(
        origin_stats(&o),
        r#"{"served":16,"unmatched":0,"exhausted":0,"bad":0,"h2":8,"tls":16}"#
    );
    // no trust in the origin's CA: every handshake fails, and is counted as such
    let mut args = vec![fs, "--target", &h1];
    args.extend_from_slice(&common);
    let t = bench_run(&args, &dir, Duration::from_secs(20));
    assert_eq!(t["merged"]["errors"]["tls"], 8, "{t}");
    // --insecure skips verification
    let mut args = vec![fs, "--target", &h2, "--insecure"];
    args.extend_from_slice(&common);
    let t = bench_run(&args, &dir, Duration::from_secs(20));
    assert_eq!(t["merged"]["completed"], 8, "{t}");
    // --check-bodies tells a body that is not the recorded one
    let mut flows = sample::flows();
    flows[0].response.as_mut().unwrap().body.data[5] ^= 1;
    let changed = dir.path("changed.flows");
    luring::bench::input::write(&changed, &flows).unwrap();
    let mut args = vec![changed.to_str().unwrap(), "--target", &h1, "--cacert", &ca];
    args.extend_from_slice(&common);
    let t = bench_run(&args, &dir, Duration::from_secs(20));
    assert_eq!(t["merged"]["errors"], serde_json::json!({"body": 1}), "{t}");
}

#[test]
fn recorded_https_goes_connect_then_tls_through_luring_to_a_tls_origin() {
    let dir = TempDir::new("bench-tls-loop");
    // the origin's port is chosen first: the recording names it
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let authority = format!("localhost:{port}");
    let mut flows = sample::flows();
    for (i, fl) in flows.iter_mut().enumerate() {
        fl.request.authority = authority.clone();
        fl.request.headers[0] = field("Host", &authority);
        // one recorded plain-http request: absolute-form on the proxy connection
        if i == 1 {
            fl.request.scheme = "http".into();
        }
        // two recorded over HTTP/2: h2 in their tunnel, as their client did
        if i == 2 || i == 3 {
            fl.request.version = "HTTP/2".into();
        }
    }
    let f = dir.path("https.flows");
    luring::bench::input::write(&f, &flows).unwrap();
    let (o, oca) = tls_origin(&f, &format!("127.0.0.1:{port}"), &dir);
    // luring, the proxy under test, trusts the origin's CA upstream and has its own
    let lconf = dir.path("luring-conf");
    let proxy = Proxy::start(&["--confdir", lconf.to_str().unwrap(), "--upstream-ca", &oca]);
    let lca = ca_pem(&lconf);
    let target = format!("luring={}", proxy.url());
    let through = |ca: &str| {
        let args = [f.to_str().unwrap(), "--proxy", &target, "--cacert", ca];
        // 2 x 3: the two h2 requests share a tunnel's connection as streams
        let once = [
            "--check-bodies",
            "--once",
            "--connections",
            "2",
            "--streams",
            "3",
        ];
        bench_run(
            &[&args[..], &once[..]].concat(),
            &dir,
            Duration::from_secs(20),
        )
    };
    let t = through(&lca);
    all_eight_ok(&t);
    // luring kept each client's protocol upstream: 7 over TLS, 2 of them h2
    assert_eq!(
        origin_stats(&o),
        r#"{"served":8,"unmatched":0,"exhausted":0,"bad":0,"h2":2,"tls":7}"#
    );
    // the driver trusted luring's leaf, not the origin's: luring intercepted
    let t = through(&oca);
    assert_eq!(t["merged"]["errors"]["tls"], 7, "{t}");
    assert_eq!(t["merged"]["completed"], 1, "{t}");
}

#[test]
fn the_tls_origin_stands_in_for_the_internet_behind_a_chained_proxy() {
    // the sample's host (shop.example) resolves nowhere: luring chains to the origin,
    // which answers the CONNECT and serves TLS inside with a leaf for shop.example
    let dir = TempDir::new("bench-tls-chain");
    let f = sample_file(&dir);
    let (o, oca) = tls_origin(&f, "127.0.0.1:0", &dir);
    let lconf = dir.path("luring-conf");
    let mode = format!("upstream:{}", o.url());
    let proxy = Proxy::start(&[
        "--mode",
        &mode,
        "--confdir",
        lconf.to_str().unwrap(),
        "--upstream-ca",
        &oca,
    ]);
    let target = format!("luring={}", proxy.url());
    let lca = ca_pem(&lconf);
    let args = [f.to_str().unwrap(), "--proxy", &target, "--cacert", &lca];
    let once = ["--check-bodies", "--once", "--connections", "2"];
    let t = bench_run(
        &[&args[..], &once[..]].concat(),
        &dir,
        Duration::from_secs(20),
    );
    all_eight_ok(&t);
    assert_eq!(
        origin_stats(&o),
        r#"{"served":8,"unmatched":0,"exhausted":0,"bad":0,"h2":0,"tls":8}"#
    );
    // curl does the same through the origin alone, as its own forward proxy
    let out = curl(&[
        "-x",
        &o.url(),
        "--cacert",
        &oca,
        "https://shop.example/api/items?page=1",
    ]);
    assert_eq!(out.status, 200, "{}", out.stderr);
}
