//! `--record`: real traffic through the running proxy, read back from the flow file
//! and compared with what the clients and origins saw.

mod support;

use luring::flows::file;
use luring::flows::record::{HttpFlow, Record};
use std::path::Path;
use std::time::Duration;
use support::*;

/// The HTTP flows of a file (the file must read cleanly to its end).
fn http_flows(path: &Path) -> Vec<HttpFlow> {
    let r = file::open(path).expect("open flow file");
    let mut out = Vec::new();
    for rec in r {
        if let Record::Http(f) = rec.expect("record") {
            out.push(*f);
        }
    }
    out
}

/// Waits until the file holds `n` HTTP flows (the writer runs behind the traffic).
fn wait_flows(path: &Path, n: usize) -> Vec<HttpFlow> {
    let mut flows = Vec::new();
    wait_until(Duration::from_secs(10), || {
        flows = http_flows(path);
        flows.len() >= n
    });
    flows
}

fn header<'a>(
    h: &'a [(serde_bytes::ByteBuf, serde_bytes::ByteBuf)],
    name: &str,
) -> Option<&'a [u8]> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

#[test]
fn http1_exchanges_are_recorded_with_bodies_and_heads() {
    let origin = Origin::start(echo());
    let dir = TempDir::new("rec-h1");
    let file = dir.path("t.flows");
    let proxy = Proxy::start(&["--record", file.to_str().unwrap()]);
    let body = pattern_vec(100_000);
    let up = dir.path("up.bin");
    std::fs::write(&up, &body).unwrap();
    let url = format!("{}/post?q=1", origin.url());
    let out = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "X-Mixed-Case: yes",
        "-H",
        "Cookie: secret=1",
        "--data-binary",
        &format!("@{}", up.display()),
        &url,
    ]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    // chunked upload, chunked trailers are not asked of curl here
    let out2 = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "-d",
        "tiny",
        &url,
    ]);
    assert_eq!(out2.status, 200);
    let flows = wait_flows(&file, 2);
    assert_eq!(flows.len(), 2, "{}", proxy.stderr());
    let f = &flows[0];
    assert_eq!(f.request.method, "POST");
    assert_eq!(f.request.path, "/post?q=1");
    assert_eq!(f.request.version, "HTTP/1.1");
    assert_eq!(f.mode, "regular");
    assert_eq!(f.request.body.data.as_slice(), &body[..]);
    assert_eq!(f.request.body.size, body.len() as u64);
    assert!(!f.request.body.cut);
    // header name case kept; cookies redacted by default
    assert!(f
        .request
        .headers
        .iter()
        .any(|(n, v)| n.as_slice() == b"X-Mixed-Case" && v.as_slice() == b"yes"));
    assert_eq!(
        header(&f.request.headers, "cookie"),
        Some(&b"[redacted]"[..])
    );
    let resp = f.response.as_ref().expect("response");
    assert_eq!(resp.status, 200);
    assert!(!resp.by_proxy);
    assert_eq!(resp.body.data.as_slice(), &out.body[..]);
    assert!(f.times.request_start > 0 && f.times.response_head >= f.times.request_start);
    assert!(f.times.end >= f.times.response_head);
    assert_eq!(f.server, format!("127.0.0.1:{}", origin.port()));
    assert!(f.error.is_none());
    // the chunked upload is recorded without its framing
    assert_eq!(flows[1].request.body.data.as_slice(), b"tiny");
    // the file is private
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn chunked_response_with_trailers_and_body_limit() {
    let chunks = vec![pattern_vec(3000), pattern_vec(5000)];
    let trailers = vec![("X-Sum".to_string(), "42".to_string())];
    let origin = Origin::start(chunked(chunks, trailers));
    let dir = TempDir::new("rec-chunked");
    let file = dir.path("t.flows");
    let proxy = Proxy::start(&[
        "--record",
        file.to_str().unwrap(),
        "--record-max-body",
        "4096",
    ]);
    let out = curl(&["-x", &proxy.url(), &format!("{}/c", origin.url())]);
    assert_eq!(out.status, 200);
    let f = &wait_flows(&file, 1)[0];
    let r = f.response.as_ref().unwrap();
    assert_eq!(r.body.size, 8000);
    assert!(r.body.cut);
    assert_eq!(r.body.data.as_slice(), &out.body[..4096]);
    assert_eq!(header(&r.trailers, "x-sum"), Some(&b"42"[..]));
}

#[test]
fn failed_flows_keep_the_error_and_the_answer() {
    let dir = TempDir::new("rec-fail");
    let file = dir.path("t.flows");
    let proxy = Proxy::start(&["--record", file.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{}/x", closed_port());
    let out = curl(&["-x", &proxy.url(), &url]);
    assert_eq!(out.status, 502);
    let f = &wait_flows(&file, 1)[0];
    let r = f.response.as_ref().unwrap();
    assert_eq!(r.status, 502);
    assert!(r.by_proxy);
    assert!(
        f.error.as_deref().unwrap_or("").contains("refused"),
        "{:?}",
        f.error
    );
}
