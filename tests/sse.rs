//! The SSE layer through the real binary: event streams from a test origin, read by
//! curl (HTTP/1.1, HTTP/1.0, HTTP/2) and raw sockets, with sse.on_event plugins.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// The stream the origin sends, in these pieces (a comment, an event split across
/// writes, CRLF line ends, a multi-line event with an id and retry, an unfinished tail).
const PIECES: &[&[u8]] = &[
    b": keepalive\n\n",
    b"event: greet\ndata: hel",
    b"lo\n\n",
    b"data: crlf\r\n\r\n",
    b"id: 7\nretry: 250\ndata: a\ndata: b\n\n",
    b"data: tail",
];

/// An origin streaming `PIECES` chunked as text/event-stream; before the last two
/// pieces it waits (up to 20 s) for `gate`, so a test can prove the first events
/// reached the client while the stream was still open.
fn sse_origin(gate: Arc<AtomicBool>, headers: &'static [(&'static str, &'static str)]) -> Origin {
    Origin::start(handler(move |ex| {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                         Transfer-Encoding: chunked\r\n"
            .to_vec();
        for (k, v) in headers {
            head.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        ex.write(&head)?;
        for (i, p) in PIECES.iter().enumerate() {
            if i == PIECES.len() - 2 {
                let t0 = Instant::now();
                while !gate.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(20) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            ex.write(format!("{:x}\r\n", p.len()).as_bytes())?;
            ex.write(p)?;
            ex.write(b"\r\n")?;
            ex.stream().flush()?;
        }
        ex.write(b"0\r\n\r\n")?;
        Ok(Next::KeepAlive)
    }))
}

const REWRITE: &str = r#"
register_hook("sse", "on_event", function(e, ctx)
  log.info(string.format("SSE %d event=%s data=%q id=%s retry=%s", e.index,
    tostring(e.event), e.data, tostring(e.id), tostring(e.retry)))
  if e.data == "a\nb" then e.data = "A\nB\nC"; e.event = "upper" end
end)
register_hook("sse", "on_event", function(e)
  if e.index == 0 then e.id = "seen-" .. e.data end
end, { phase = "post_pipeline" })
"#;

fn plugin(dir: &TempDir, src: &str) -> String {
    let p = dir.path("sse.lua");
    std::fs::write(&p, src).unwrap();
    p.to_string_lossy().into_owned()
}

/// What the client must receive for `PIECES` through `REWRITE`.
const EXPECTED: &str = ": keepalive\n\nevent: greet\nid: seen-hello\ndata: hello\n\n\
                        data: crlf\r\n\r\nevent: upper\nid: 7\nretry: 250\ndata: A\ndata: B\ndata: C\n\n\
                        data: tail";

#[test]
fn events_stream_through_the_hooks_as_they_arrive() {
    let gate = Arc::new(AtomicBool::new(false));
    let origin = sse_origin(gate.clone(), &[]);
    let dir = TempDir::new("sse");
    let proxy = Proxy::start(&["--plugin", &plugin(&dir, REWRITE)]);
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "GET {}/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.url(),
        origin.port()
    )
    .unwrap();
    let mut r = BufReader::new(c);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l == "\r\n" {
            break;
        }
        head.push_str(&l);
    }
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    // the first event arrives while the origin still holds the rest back
    let mut got = Vec::new();
    let t0 = Instant::now();
    while !String::from_utf8_lossy(&got).contains("data: hello\n\n") {
        // well before the origin gives up waiting (20 s): a proxy that buffered the
        // stream would deliver nothing by then
        assert!(t0.elapsed() < Duration::from_secs(5), "no first event");
        let mut line = String::new();
        r.read_line(&mut line).unwrap(); // chunk size
        let n = usize::from_str_radix(line.trim(), 16).unwrap();
        let mut chunk = vec![0u8; n + 2];
        std::io::Read::read_exact(&mut r, &mut chunk).unwrap();
        got.extend_from_slice(&chunk[..n]);
    }
    gate.store(true, Ordering::SeqCst);
    let mut rest = Vec::new();
    r.read_chunked_to_end(&mut rest);
    got.extend_from_slice(&rest);
    assert_eq!(String::from_utf8_lossy(&got), EXPECTED);
    // the log lines reach the test through a pipe, possibly after the bytes did
    for want in [
        "SSE 0 event=greet data=\"hello\" id=nil retry=nil",
        "SSE 1 event=nil data=\"crlf\"",
        "SSE 2 event=nil data=\"a\\\nb\" id=7 retry=250",
    ] {
        assert!(
            proxy.wait_stderr(want, Duration::from_secs(5)),
            "{want}\n{}",
            proxy.stderr()
        );
    }
    let log = proxy.stderr();
    assert_eq!(log.matches("SSE ").count(), 3, "{log}");
}

/// Reads chunked framing to the last chunk (test helper for a BufReader).
trait ReadChunked {
    fn read_chunked_to_end(&mut self, out: &mut Vec<u8>);
}

impl<R: std::io::Read> ReadChunked for BufReader<R> {
    fn read_chunked_to_end(&mut self, out: &mut Vec<u8>) {
        loop {
            let mut line = String::new();
            self.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            if n == 0 {
                let mut end = String::new();
                self.read_line(&mut end).unwrap();
                return;
            }
            let mut chunk = vec![0u8; n + 2];
            std::io::Read::read_exact(self, &mut chunk).unwrap();
            out.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn http10_clients_h2_clients_and_length_framed_streams() {
    let gate = Arc::new(AtomicBool::new(true));
    let origin = sse_origin(gate, &[]);
    let dir = TempDir::new("sse");
    let p = plugin(&dir, REWRITE);
    let fwd = Proxy::start(&["--plugin", &p]);
    let out = curl(&["-N", "-0", "-x", &fwd.url(), &format!("{}/e", origin.url())]);
    assert_eq!(
        (out.status, out.body_str()),
        (200, EXPECTED.to_string()),
        "{out:?}"
    );
    let rev = Proxy::start(&[
        "--plugin",
        &p,
        "--mode",
        &format!("reverse:{}", origin.url()),
    ]);
    let out = curl(&["-N", "--http2-prior-knowledge", &format!("{}/e", rev.url())]);
    assert_eq!(
        (out.status, out.body_str()),
        (200, EXPECTED.to_string()),
        "{out:?}"
    );

    // a Content-Length stream: the length would be wrong after a rewrite, so it goes
    // out chunked
    let body = "data: a\ndata: b\n\n";
    let fixed_origin = Origin::start(fixed(
        200,
        &[("Content-Type", "text/event-stream")],
        body.as_bytes(),
    ));
    let out = curl(&["-x", &fwd.url(), "-D", "-", &fixed_origin.url()]);
    let text = out.body_str();
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );
    assert!(
        text.ends_with("event: upper\ndata: A\ndata: B\ndata: C\n\n"),
        "{text}"
    );
}

#[test]
fn without_a_hook_or_for_compressed_streams_the_body_is_untouched() {
    let body = "data: a\ndata: b\n\n";
    let plain = Origin::start(fixed(
        200,
        &[("Content-Type", "text/event-stream")],
        body.as_bytes(),
    ));
    let gz = Origin::start(fixed(
        200,
        &[
            ("Content-Type", "text/event-stream"),
            ("Content-Encoding", "gzip"),
        ],
        body.as_bytes(),
    ));
    let no_hook = Proxy::start(&[]);
    let out = curl(&["-x", &no_hook.url(), "-D", "-", &plain.url()]);
    assert!(
        out.body_str()
            .contains(&format!("Content-Length: {}", body.len())),
        "{out:?}"
    );
    let dir = TempDir::new("sse");
    let hooked = Proxy::start(&["--plugin", &plugin(&dir, REWRITE)]);
    let out = curl(&["-x", &hooked.url(), "-D", "-", &gz.url()]);
    let text = out.body_str();
    assert!(text.ends_with(body), "{text}");
    assert!(
        text.contains(&format!("Content-Length: {}", body.len())),
        "{text}"
    );
    assert!(!hooked.stderr().contains("SSE "), "{}", hooked.stderr());
}

#[test]
fn a_bad_field_value_is_a_hook_error_and_the_event_goes_on() {
    let gate = Arc::new(AtomicBool::new(true));
    let origin = sse_origin(gate, &[]);
    let dir = TempDir::new("sse");
    let p = plugin(
        &dir,
        r#"register_hook("sse", "on_event", function(e) e.event = "two\nlines" end)"#,
    );
    let proxy = Proxy::start(&["--plugin", &p]);
    let out = curl(&["-N", "-x", &proxy.url(), &origin.url()]);
    let want: String = PIECES.iter().map(|p| String::from_utf8_lossy(p)).collect();
    assert_eq!(out.body_str(), want, "{out:?}");
    assert!(
        proxy.wait_stderr(
            "event must not contain a line break",
            Duration::from_secs(5)
        ),
        "{}",
        proxy.stderr()
    );
}
