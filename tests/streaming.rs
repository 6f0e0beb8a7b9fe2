//! Streaming: 1 GiB each way through the proxy, generated and checked on the
//! fly (never stored), with the proxy's peak RSS (VmHWM) under 64 MiB; and
//! backpressure towards a stalled reader.

mod support;

use std::thread;
use std::time::{Duration, Instant};
use support::*;

const GIB: u64 = 1 << 30;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

fn assert_peak_rss(proxy: &Proxy, what: &str) {
    let hwm = proxy.vm_hwm_kib().expect("read VmHWM of the proxy");
    eprintln!("{what}: proxy VmHWM {} KiB", hwm);
    assert!(
        hwm < RSS_LIMIT_KIB,
        "{what}: proxy peak RSS {hwm} KiB >= {RSS_LIMIT_KIB} KiB"
    );
}

fn report(what: &str, bytes: u64, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "{what}: {bytes} bytes in {s:.1} s ({:.0} MiB/s)",
        bytes as f64 / s / 1048576.0
    );
}

#[test]
fn upload_1gib_through_reverse_proxy() {
    let origin = Origin::start(sink());
    let mode = format!("reverse:{}", origin.url());
    let proxy = Proxy::start(&["--mode", &mode, "--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    let t = Instant::now();
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: front\r\nContent-Length: {GIB}\r\n\r\n").as_bytes(),
    );
    write_pattern(c.stream(), GIB).expect("upload body");
    c.set_read_timeout(Duration::from_secs(60));
    let r = c.read_response();
    report("upload", GIB, t);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), GIB.to_string(), "bytes counted by the origin");
    assert_eq!(
        r.header("x-sink-pattern-ok"),
        Some("true"),
        "payload altered"
    );
    assert_eq!(origin.requests()[0].body_len, Some(GIB));
    assert_peak_rss(&proxy, "upload 1 GiB");
}

#[test]
fn download_1gib_through_forward_proxy() {
    let origin = Origin::start(stream_bytes(GIB));
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    let t = Instant::now();
    c.send(
        format!(
            "GET {}/download HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            origin.url(),
            origin.port()
        )
        .as_bytes(),
    );
    let head = c.read_response_head();
    assert_eq!(head.status, 200);
    let mut check = PatternCheck::default();
    if head.has_token("transfer-encoding", "chunked") {
        panic!(
            "Content-Length response re-framed as chunked: {}",
            head.head_str()
        );
    }
    assert_eq!(
        head.header("content-length"),
        Some(GIB.to_string().as_str())
    );
    c.read_exact_to(GIB, &mut |d| check.feed(d))
        .unwrap_or_else(|e| panic!("download cut after {} bytes: {e}", check.count));
    report("download", GIB, t);
    assert_eq!(check.count, GIB);
    assert!(
        check.ok(),
        "payload altered at offset {:?}",
        check.first_mismatch
    );
    assert_peak_rss(&proxy, "download 1 GiB");
}

fn stalled_reader(c: &mut Client, total: u64) {
    let mut check = PatternCheck::default();
    c.read_exact_to(1 << 20, &mut |d| check.feed(d)).unwrap();
    // Stop reading for 3 s: a proxy without backpressure would buffer the
    // rest of the body meanwhile.
    thread::sleep(Duration::from_secs(3));
    c.read_exact_to(total - (1 << 20), &mut |d| check.feed(d))
        .unwrap_or_else(|e| panic!("cut after {} bytes: {e}", check.count));
    assert_eq!(check.count, total);
    assert!(check.ok());
}

#[test]
fn backpressure_to_stalled_http_reader() {
    let total = 256 << 20;
    let origin = Origin::start(stream_bytes(total));
    let mode = format!("reverse:{}", origin.url());
    let proxy = Proxy::start(&["--mode", &mode, "--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    c.send(b"GET /big HTTP/1.1\r\nHost: front\r\n\r\n");
    let head = c.read_response_head();
    assert_eq!(head.status, 200);
    stalled_reader(&mut c, total);
    assert_peak_rss(&proxy, "stalled HTTP reader, 256 MiB");
}

#[test]
fn backpressure_to_stalled_tunnel_reader() {
    let total = 256 << 20;
    let origin = Origin::start(stream_bytes(total));
    let proxy = Proxy::start(&["--workers", "1"]);
    let mut c = Client::connect(proxy.addr);
    let target = origin.addr.to_string();
    c.send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes());
    assert_eq!(c.read_response_to("CONNECT").status, 200);
    c.send(b"GET /big HTTP/1.1\r\nHost: origin\r\n\r\n");
    let head = c.read_response_head();
    assert_eq!(head.status, 200);
    stalled_reader(&mut c, total);
    assert_peak_rss(&proxy, "stalled tunnel reader, 256 MiB");
}
