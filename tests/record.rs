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

fn tunnel_record(raw: bool) -> luring::flows::record::TunnelFlow {
    let echo = EchoServer::start();
    let dir = TempDir::new("rec-tunnel");
    let file = dir.path("t.flows");
    let mut args = vec!["--record", file.to_str().unwrap()];
    if raw {
        args.push("--record-raw");
    }
    let proxy = Proxy::start(&args);
    let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n",
        p = echo.addr.port()
    )
    .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    // a protocol luring does not parse: relayed as bytes
    s.write_all(b"\x00\x01binary-speaks-first").unwrap();
    let mut back = vec![0u8; ECHO_BANNER.len() + 21];
    s.read_exact(&mut back).unwrap();
    drop(s);
    let mut t = None;
    wait_until(Duration::from_secs(10), || {
        t = file::open(&file).unwrap().find_map(|r| match r {
            Ok(Record::Tunnel(t)) => Some(t),
            _ => None,
        });
        t.is_some()
    });
    let t = t.expect("a tunnel record");
    assert_eq!(t.target, format!("127.0.0.1:{}", echo.addr.port()));
    assert_eq!(t.bytes_up, 21);
    // the echo server's banner, the echo, and its farewell at our close
    let down = (ECHO_BANNER.len() + 21) as u64;
    assert!(t.bytes_down == down || t.bytes_down == down + ECHO_FAREWELL.len() as u64);
    assert!(t.end >= t.start && t.start > 0);
    *t
}

#[test]
fn opaque_tunnels_are_recorded_with_byte_counts() {
    assert!(tunnel_record(false).chunks.is_empty());
}

#[test]
fn record_raw_keeps_a_tunnels_bytes() {
    let t = tunnel_record(true);
    let up: Vec<u8> = t
        .chunks
        .iter()
        .filter(|c| c.from_client)
        .flat_map(|c| c.data.to_vec())
        .collect();
    let down: Vec<u8> = t
        .chunks
        .iter()
        .filter(|c| !c.from_client)
        .flat_map(|c| c.data.to_vec())
        .collect();
    assert_eq!(up, b"\x00\x01binary-speaks-first");
    assert!(down.starts_with(ECHO_BANNER), "{down:?}");
}

#[test]
fn sigkill_leaves_a_file_that_reads_to_its_last_record() {
    let origin = Origin::start(fixed(200, &[], &pattern_vec(20_000)));
    let dir = TempDir::new("rec-kill");
    let file = dir.path("t.flows");
    let mut proxy = Proxy::start(&["--record", file.to_str().unwrap()]);
    let url = format!("{}/x", origin.url());
    for _ in 0..20 {
        assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 200);
    }
    wait_flows(&file, 20);
    proxy.kill();
    // cut the file inside its last record, as a crash mid-write would
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 7).unwrap();
    let mut r = file::open(&file).unwrap();
    let ok = (&mut r).take_while(|x| x.is_ok()).count();
    assert_eq!(ok, 20, "meta + 19 whole flows");
    let e = file::open(&file).unwrap().find_map(|x| x.err()).unwrap();
    assert!(e.to_string().contains("truncated record at offset"), "{e}");
    // recording again appends after the last whole record
    let proxy = Proxy::start(&["--record", file.to_str().unwrap()]);
    assert_eq!(curl(&["-x", &proxy.url(), &url]).status, 200);
    let flows = wait_flows(&file, 20);
    assert_eq!(flows.len(), 20);
}

#[test]
fn a_writer_that_falls_behind_drops_flows_not_traffic() {
    let origin = Origin::start(fixed(200, &[], b"ok"));
    let dir = TempDir::new("rec-drop");
    let file = dir.path("t.flows");
    // a queue of one, and bodies the writer must compress: flows pile up
    let proxy = Proxy::start(&["--record", file.to_str().unwrap(), "--record-queue", "1"]);
    let url = format!("{}/x", origin.url());
    let mut args = vec![
        "-x".to_string(),
        proxy.url(),
        "--parallel".into(),
        "--parallel-max".into(),
        "20".into(),
    ];
    for _ in 0..200 {
        args.push(url.clone());
    }
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = curl(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let oks = out.body.windows(2).filter(|w| w == b"ok").count();
    assert_eq!(oks, 200, "every response reached the client");
    // every flow is either in the file or counted as dropped
    let mut total = 0;
    let mut dropped = 0;
    wait_until(Duration::from_secs(10), || {
        total = 0;
        dropped = 0;
        for r in file::open(&file).unwrap() {
            match r.unwrap() {
                Record::Http(_) => total += 1,
                Record::Drops(d) => dropped = d.total,
                _ => {}
            }
        }
        total + dropped == 200
    });
    assert_eq!(total + dropped, 200, "{total} recorded, {dropped} dropped");
}

#[test]
fn redaction_can_be_extended_or_turned_off() {
    let origin = Origin::start(echo());
    let dir = TempDir::new("rec-redact");
    let url = format!("{}/x", origin.url());
    for (flags, auth, key) in [
        (
            vec!["--record-redact", "X-Api-Key"],
            &b"[redacted]"[..],
            &b"[redacted]"[..],
        ),
        (
            vec!["--record-redact", "none"],
            &b"Basic dTpw"[..],
            &b"k1"[..],
        ),
    ] {
        let file = dir.path(&format!("{}.flows", flags[1]));
        let mut args = vec!["--record", file.to_str().unwrap()];
        args.extend(flags);
        let proxy = Proxy::start(&args);
        let out = curl(&[
            "-x",
            &proxy.url(),
            "-H",
            "Authorization: Basic dTpw",
            "-H",
            "X-Api-Key: k1",
            &url,
        ]);
        assert_eq!(out.status, 200);
        let f = &wait_flows(&file, 1)[0];
        assert_eq!(header(&f.request.headers, "authorization"), Some(auth));
        assert_eq!(header(&f.request.headers, "x-api-key"), Some(key));
    }
}

#[test]
fn plugins_note_flows_and_keep_them_out() {
    let origin = Origin::start(echo());
    let dir = TempDir::new("rec-notes");
    let file = dir.path("t.flows");
    let plugin = dir.path("notes.lua");
    std::fs::write(
        &plugin,
        r#"
register_hook("http", "on_request", function(msg, ctx)
  luring.flow_note("path", msg.path)
  if msg.path == "/secret" then luring.skip_recording() end
end)
register_hook("http", "on_response", function(msg, ctx)
  luring.flow_note("status", msg.status)
end)
"#,
    )
    .unwrap();
    let proxy = Proxy::start(&[
        "--record",
        file.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    for p in ["/a", "/secret", "/b"] {
        let out = curl(&["-x", &proxy.url(), &format!("{}{p}", origin.url())]);
        assert_eq!(out.status, 200);
    }
    let flows = wait_flows(&file, 2);
    std::thread::sleep(Duration::from_millis(300));
    let flows = if flows.len() < 3 {
        http_flows(&file)
    } else {
        flows
    };
    let paths: Vec<&str> = flows.iter().map(|f| f.request.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/b"]);
    assert_eq!(
        flows[0].notes,
        vec![
            ("path".to_string(), "/a".to_string()),
            ("status".to_string(), "200".to_string())
        ]
    );
}

#[test]
fn reverse_mode_and_socks5_flows_are_recorded() {
    let origin = Origin::start(echo());
    let dir = TempDir::new("rec-modes");
    let rev_file = dir.path("rev.flows");
    let mode = format!("reverse:{}", origin.url());
    let rev = Proxy::start(&["--mode", &mode, "--record", rev_file.to_str().unwrap()]);
    let out = curl(&[&format!("{}/r?x=1", rev.url())]);
    assert_eq!(out.status, 200);
    let f = &wait_flows(&rev_file, 1)[0];
    assert_eq!(
        (f.mode.as_str(), f.request.path.as_str()),
        ("reverse", "/r?x=1")
    );
    assert_eq!(
        f.response.as_ref().unwrap().body.data.as_slice(),
        &out.body[..]
    );

    let socks_file = dir.path("socks.flows");
    let socks = Proxy::start(&["--mode", "socks5", "--record", socks_file.to_str().unwrap()]);
    let via = format!("socks5h://127.0.0.1:{}", socks.port());
    let out = curl(&["-x", &via, &format!("{}/s", origin.url())]);
    assert_eq!(out.status, 200, "{}", out.stderr);
    let f = &wait_flows(&socks_file, 1)[0];
    assert_eq!((f.mode.as_str(), f.request.path.as_str()), ("socks5", "/s"));
    assert_eq!(
        f.response.as_ref().unwrap().body.data.as_slice(),
        &out.body[..]
    );
}

#[test]
fn sse_streams_are_recorded_as_the_client_got_them() {
    let events = b"data: one\n\ndata: two\n\n".to_vec();
    let origin = Origin::start(fixed(
        200,
        &[("Content-Type", "text/event-stream")],
        &events,
    ));
    let dir = TempDir::new("rec-sse");
    let file = dir.path("t.flows");
    let plugin = dir.path("sse.lua");
    std::fs::write(
        &plugin,
        "register_hook('sse', 'on_event', function(m) m.data = m.data .. '!' end)",
    )
    .unwrap();
    let proxy = Proxy::start(&[
        "--record",
        file.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    let out = curl(&["-x", &proxy.url(), &format!("{}/events", origin.url())]);
    assert_eq!(out.status, 200);
    assert_eq!(out.body_str(), "data: one!\n\ndata: two!\n\n");
    let f = &wait_flows(&file, 1)[0];
    assert_eq!(
        f.response.as_ref().unwrap().body.data.as_slice(),
        &out.body[..]
    );
}
