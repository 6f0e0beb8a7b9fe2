//! Reverse proxy (`--mode reverse:URL`).

mod support;

use support::*;

fn reverse_arg(origin: &Origin) -> String {
    format!("reverse:{}", origin.url())
}

#[test]
fn reverse_rewrites_host_to_upstream() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--mode", &reverse_arg(&origin)]);
    assert!(
        proxy.startup_line.contains("mode reverse"),
        "startup line: {}",
        proxy.startup_line
    );
    let out = curl(&[&format!("{}/r/path?q=1", proxy.url())]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.status, 200);
    let rec = &origin.requests()[0];
    assert_eq!(rec.target, "/r/path?q=1");
    assert_eq!(
        rec.header("host"),
        Some(format!("127.0.0.1:{}", origin.port()).as_str()),
        "head: {}",
        String::from_utf8_lossy(&rec.raw_head)
    );
}

#[test]
fn reverse_keep_host_header() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--mode", &reverse_arg(&origin), "--keep-host-header"]);
    let out = curl(&[
        "-H",
        "Host: app.example.test",
        &format!("{}/k", proxy.url()),
    ]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    let rec = &origin.requests()[0];
    assert_eq!(rec.header("host"), Some("app.example.test"));
    assert_eq!(rec.target, "/k");
}

#[test]
fn reverse_without_keep_host_replaces_client_host() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--mode", &reverse_arg(&origin)]);
    let out = curl(&[
        "-H",
        "Host: app.example.test",
        &format!("{}/k", proxy.url()),
    ]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    let rec = &origin.requests()[0];
    assert_eq!(
        rec.header("host"),
        Some(format!("127.0.0.1:{}", origin.port()).as_str())
    );
    let hosts = rec
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1, "exactly one Host field upstream");
}

#[test]
fn reverse_post_and_response_relayed() {
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--mode", &reverse_arg(&origin)]);
    let payload = pattern_vec(200_000);
    let mut c = Client::connect(proxy.addr);
    c.send(
        format!(
            "PUT /upload HTTP/1.1\r\nHost: front\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .as_bytes(),
    );
    c.send(&payload);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-method"), Some("PUT"));
    assert!(r.body.ends_with(&payload));
    assert_eq!(origin.requests()[0].body, payload);
}

#[test]
fn reverse_accepts_absolute_form_too() {
    // RFC 9112 3.2.2: a server must accept absolute-form targets.
    let origin = Origin::start(echo());
    let proxy = Proxy::start(&["--mode", &reverse_arg(&origin)]);
    let mut c = Client::connect(proxy.addr);
    let r = c.request(&format!(
        "GET http://{}/abs HTTP/1.1\r\nHost: {}\r\n\r\n",
        proxy.addr, proxy.addr
    ));
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests()[0].target, "/abs");
}
