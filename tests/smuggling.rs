//! HTTP/1.1 framing and request smuggling (docs/security.md): hostile requests,
//! hostile upstream responses, early answers, refused upgrades, and HTTP/2 requests
//! translated to HTTP/1.1, against the real binary over loopback.
//!
//! The upstream is a recording origin (support::Origin): every request it parses is
//! logged, so "the upstream never saw /admin" is checked against what it really read.

mod support;

use std::time::Duration;
use support::*;

/// The request an attacker hides where luring should see a body.
const SMUG: &str = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
const WAIT: Duration = Duration::from_secs(10);

/// What luring must do with a request of the attack table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 400 and the connection closed; nothing reached the upstream.
    Head400,
    /// 501 (a transfer coding luring does not know) and the connection closed; nothing
    /// reached the upstream.
    Head501,
    /// 400 and the connection closed; the head may have gone upstream (the fault is in
    /// the body), the smuggled request never.
    Body400,
    /// Served; the upstream got exactly this framing field (lowercased), one of it,
    /// and the connection stays in sync for a request after it.
    Served(&'static str),
}
use Expect::*;

/// The attack table: name, request, expectation. In the request, `$T` is the target
/// (origin-form in reverse mode, absolute-form in forward mode, unique per case), `$S`
/// the smuggled request and `$X` its length in hex, so `$X\r\n$S\r\n` is one chunk.
const ATTACKS: &[(&str, &str, Expect)] = &[
    // Transfer-Encoding with Content-Length, and every spelling of TE that is not a
    // plain final chunked
    ("te+cl", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("cl+te", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n$S", Head400),
    ("te xchunked", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te chunked-x", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked-x\r\n\r\n0\r\n\r\n$S", Head400),
    ("te chunked, identity", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n$S", Head400),
    ("te chunked twice", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te chunked then identity field", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n$S", Head400),
    ("te identity", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n$S", Head400),
    ("te space before colon", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te tab before colon", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te vtab before colon", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\x0b: chunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te vtab in value", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te formfeed in value", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n$S", Head400),
    ("te quoted", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n$S", Head400),
    ("te with parameter", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n$S", Head400),
    ("te space inside", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te empty", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n$S", Head400),
    ("te obs-fold", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te on http/1.0", "POST $T HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n$S", Head400),
    ("te on http/1.0 with cl", "POST $T HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n$S", Head400),
    // spellings RFC 9110/9112 make chunked: accepted, sent on as one plain field
    ("te CHUNKED", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n$X\r\n$S\r\n0\r\n\r\n", Served("transfer-encoding: chunked")),
    ("te OWS around", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t chunked \t\r\n\r\n$X\r\n$S\r\n0\r\n\r\n", Served("transfer-encoding: chunked")),
    ("te empty list elements", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked,\r\n\r\n$X\r\n$S\r\n0\r\n\r\n", Served("transfer-encoding: chunked")),
    ("te unknown coding before chunked", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked, chunked\r\n\r\n$X\r\n$S\r\n0\r\n\r\n", Head501),
    ("te unknown coding field before chunked", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\nTransfer-Encoding: gzip, chunked\r\n\r\n$X\r\n$S\r\n0\r\n\r\n", Head501),
    ("te gzip then chunked fields", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n$X\r\n$S\r\n0\r\n\r\n", Served("transfer-encoding: gzip, chunked")),
    // Content-Length
    ("cl lists disagree", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 32\r\n\r\n$S", Head400),
    ("cl fields disagree", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 32\r\n\r\n$S", Head400),
    ("cl plus sign", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n$S", Head400),
    ("cl minus sign", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: -0\r\n\r\n$S", Head400),
    ("cl hex", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 0x0\r\n\r\n$S", Head400),
    ("cl overflow", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n$S", Head400),
    ("cl huge", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999999\r\n\r\n$S", Head400),
    ("cl junk", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 0abc\r\n\r\n$S", Head400),
    ("cl space inside", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 3 2\r\n\r\n$S", Head400),
    ("cl empty", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n$S", Head400),
    ("cl space before colon", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n$S", Head400),
    ("cl identical list", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 32, 32\r\n\r\n$S", Served("content-length: 32")),
    ("cl identical fields", "POST $T HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\nContent-Length: 32\r\n\r\n$S", Served("content-length: 32")),
    // framing fields named hop-by-hop: stripped by the Connection rule, then the
    // framing luring relays by is written back
    ("connection names content-length", "POST $T HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 32\r\n\r\n$S", Served("content-length: 32")),
    ("connection names transfer-encoding", "POST $T HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n$X\r\n$S\r\n0\r\n\r\n", Served("transfer-encoding: chunked")),
    ("connection names host", "POST $T HTTP/1.1\r\nHost: a\r\nConnection: host\r\nContent-Length: 32\r\n\r\n$S", Served("content-length: 32")),
    // bytes that end lines or fields differently for different parsers
    ("bare cr in value", "GET $T HTTP/1.1\r\nHost: a\r\nX: a\rContent-Length: 32\r\n\r\n$S", Head400),
    ("bare cr ends a line", "GET $T HTTP/1.1\r\nHost: a\rContent-Length: 32\r\n\r\n$S", Head400),
    ("nul in value", "GET $T HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n$S", Head400),
    ("nul in name", "GET $T HTTP/1.1\r\nHost: a\r\nX\0: b\r\n\r\n$S", Head400),
    ("obs-fold", "GET $T HTTP/1.1\r\nHost: a\r\nX: a\r\n Content-Length: 32\r\n\r\n$S", Head400),
    ("whitespace before first field", "GET $T HTTP/1.1\r\n Content-Length: 32\r\nHost: a\r\n\r\n$S", Head400),
    ("whitespace before colon", "GET $T HTTP/1.1\r\nHost: a\r\nX-Y : b\r\n\r\n$S", Head400),
    ("line without colon", "GET $T HTTP/1.1\r\nHost: a\r\nContent-Length 32\r\n\r\n$S", Head400),
    // request lines
    ("double space in request line", "GET  $T HTTP/1.1\r\nHost: a\r\n\r\n$S", Head400),
    ("tab in request line", "GET\t$T HTTP/1.1\r\nHost: a\r\n\r\n$S", Head400),
    ("unknown version", "GET $T HTTP/1.10\r\nHost: a\r\n\r\n$S", Head400),
    // a later minor version is read as HTTP/1.1 (RFC 9112 2.3, as nginx and HAProxy
    // do), with the same framing rules; the upstream is sent HTTP/1.1
    ("minor version above 1", "POST $T HTTP/1.2\r\nHost: a\r\nContent-Length: 32\r\n\r\n$S", Served("content-length: 32")),
    ("lowercase version", "GET $T http/1.1\r\nHost: a\r\n\r\n$S", Head400),
    ("nul in target", "GET $T\0x HTTP/1.1\r\nHost: a\r\n\r\n$S", Head400),
    ("asterisk on get", "GET * HTTP/1.1\r\nHost: a\r\n\r\n$S", Head400),
    // Host
    ("no host", "GET $T HTTP/1.1\r\n\r\n$S", Head400),
    ("two hosts", "GET $T HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n$S", Head400),
    ("host list", "GET $T HTTP/1.1\r\nHost: a, b\r\n\r\n$S", Head400),
    ("host with path", "GET $T HTTP/1.1\r\nHost: a/b\r\n\r\n$S", Head400),
    ("host with userinfo", "GET $T HTTP/1.1\r\nHost: u@a\r\n\r\n$S", Head400),
    // chunked framing
    ("chunk size overflow", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000$X\r\n$S\r\n0\r\n\r\n", Body400),
    ("chunk size hex prefix", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x$X\r\n$S\r\n0\r\n\r\n", Body400),
    ("chunk size negative", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-$X\r\n$S\r\n0\r\n\r\n", Body400),
    ("chunk size missing", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n$S\r\n0\r\n\r\n", Body400),
    ("chunk data longer than size", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxx\r\n0\r\n\r\n$S", Body400),
    ("chunk data without crlf", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx0\r\n\r\n$S", Body400),
    ("chunk data lf only", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\n0\r\n\r\n$S", Body400),
    ("chunk size line lf only", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n$S", Body400),
    ("chunk size bare cr", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\rx\r\n0\r\n\r\n$S", Body400),
    ("chunk ext with lf", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\nx\r\n0\r\n\r\n$S", Body400),
    ("chunk ext over the cap", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;$LONG\r\nx\r\n0\r\n\r\n$S", Body400),
    ("last chunk then bare lf", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n$S", Body400),
    ("content-length in trailers", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 32\r\n\r\n$S", Body400),
    ("trailer obs-fold", "POST $T HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n$S", Body400),
];

/// `$T`, `$S`, `$X` and `$LONG` of an attack, expanded.
fn expand(template: &str, target: &str) -> Vec<u8> {
    template
        .replace("$T", target)
        .replace("$S", SMUG)
        .replace("$X", &format!("{:x}", SMUG.len()))
        .replace("$LONG", &"e".repeat(5000))
        .into_bytes()
}

/// Runs the attack table through a proxy started with `args` in `mode` (reverse or
/// forward) and checks what the recording origin saw.
fn attack_table(forward: bool, io: &[&str]) {
    let origin = Origin::start(echo());
    let reverse = format!("reverse:{}", origin.url());
    let mut args = io.to_vec();
    if !forward {
        args.extend(["--mode", reverse.as_str()]);
    }
    let proxy = Proxy::start(&args);
    let label = format!("{} {io:?}", if forward { "forward" } else { "reverse" });
    for (i, (name, template, expect)) in ATTACKS.iter().enumerate() {
        let path = format!("/case-{i}");
        let target = match forward {
            true => format!("{}{path}", origin.url()),
            false => path.clone(),
        };
        let mut c = Client::connect(proxy.addr);
        // the peer may close while the rest is still being sent: that is a refusal too
        let _ = c.try_send(&expand(template, &target));
        match expect {
            Head400 | Head501 | Body400 => {
                let r = c.try_read_response_to("POST");
                let r = r.unwrap_or_else(|e| panic!("{label} {name}: no answer ({e})"));
                let status = if *expect == Head501 { 501 } else { 400 };
                assert_eq!(r.status, status, "{label} {name}: {}", r.head_str());
                assert!(r.has_token("connection", "close"), "{label} {name}");
                assert!(
                    c.closed_within(WAIT),
                    "{label} {name}: connection left open after the 400"
                );
            }
            Served(field) => {
                let r = c.read_response_to("POST");
                assert_eq!(r.status, 200, "{label} {name}: {}", r.head_str());
                let seen = String::from_utf8_lossy(&r.body).to_string();
                let head = &seen[..seen.find("\r\n\r\n").unwrap_or(seen.len())];
                // names in any case, values exactly as sent on
                let framing: Vec<String> = head
                    .split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| format!("{}:{v}", n.to_lowercase()))
                    .filter(|l| {
                        l.starts_with("transfer-encoding") || l.starts_with("content-length")
                    })
                    .collect();
                assert_eq!(framing, [*field], "{label} {name}: forwarded head {head:?}");
                // RFC 9112 3.2.2: the absolute-form target wins over a Host that
                // disagrees, and the Host sent on is made from it
                if forward {
                    let host = format!("\r\nhost: 127.0.0.1:{}\r\n", origin.port());
                    assert!(
                        format!("{head}\r\n").to_lowercase().contains(&host),
                        "{label} {name}: Host not rebuilt: {head:?}"
                    );
                }
                assert!(
                    seen.ends_with(SMUG),
                    "{label} {name}: the body did not arrive as a body: {seen:?}"
                );
                // the connection is still in step: the next request is its own
                let next = format!("GET {target}-next HTTP/1.1\r\nHost: a\r\n\r\n");
                let r = c.request(&next);
                assert_eq!(r.status, 200, "{label} {name}: request after it");
                assert_eq!(
                    r.header("x-echo-target"),
                    Some(format!("{path}-next").as_str())
                );
            }
        }
    }
    // a last request the origin must see, so that what it logged is complete
    let mut c = Client::connect(proxy.addr);
    let target = match forward {
        true => format!("{}/sentinel", origin.url()),
        false => "/sentinel".to_string(),
    };
    let r = c.request(&format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_eq!(r.status, 200);
    let seen = origin.requests();
    for r in &seen {
        assert!(
            !r.target.contains("/admin"),
            "{label}: the origin saw a smuggled request: {:?}",
            String::from_utf8_lossy(&r.raw_head)
        );
    }
    for (i, (name, _, expect)) in ATTACKS.iter().enumerate() {
        let path = format!("/case-{i}");
        let n = seen.iter().filter(|r| r.target.ends_with(&path)).count();
        match expect {
            Head400 | Head501 => {
                assert_eq!(n, 0, "{label} {name}: a refused request reached the origin")
            }
            Body400 => assert!(n <= 1, "{label} {name}: sent {n} times"),
            Served(_) => assert_eq!(n, 1, "{label} {name}"),
        }
    }
}

#[test]
fn hostile_requests_are_refused_in_reverse_mode() {
    attack_table(false, &[]);
}

#[test]
fn hostile_requests_are_refused_in_reverse_mode_epoll() {
    attack_table(false, &["--io", "epoll"]);
}

#[test]
fn hostile_requests_are_refused_in_forward_mode() {
    attack_table(true, &[]);
}

#[test]
fn hostile_requests_are_refused_in_forward_mode_epoll() {
    attack_table(true, &["--io", "epoll"]);
}

/// What the client of a hostile upstream response must get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Upstream {
    /// A 502 (the head's framing is broken).
    BadGateway,
    /// The head went out; the body breaks off and the client connection closes.
    BrokenBody,
    /// Served with this body; the upstream keeps its connection open, luring closes
    /// it rather than pool it.
    ServedThenClosed(&'static str),
    /// Served with this body, which the upstream ends by closing.
    ServedToClose(&'static str),
    /// A clean response in an odd spelling: served with this body and a plain
    /// `Transfer-Encoding: chunked`; the connection may be pooled.
    Respelled(&'static str),
}

/// Hostile upstream responses: name, bytes, what the client gets. `$S` is a second
/// response the upstream hides behind the first.
const RESPONSES: &[(&str, &str, Upstream)] = &[
    ("te+cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n$S", Upstream::BadGateway),
    ("cl disagree", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok$S", Upstream::BadGateway),
    ("cl list disagree", "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok$S", Upstream::BadGateway),
    ("cl plus", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok$S", Upstream::BadGateway),
    ("cl minus", "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok$S", Upstream::BadGateway),
    ("cl hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok$S", Upstream::BadGateway),
    ("cl overflow", "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\nok$S", Upstream::BadGateway),
    ("cl junk", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok$S", Upstream::BadGateway),
    ("te quoted", "HTTP/1.1 200 OK\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n$S", Upstream::BadGateway),
    ("te with parameter", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n$S", Upstream::BadGateway),
    ("te chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n$S", Upstream::BadGateway),
    ("space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok$S", Upstream::BadGateway),
    ("obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n Content-Length: 2\r\n\r\nok$S", Upstream::BadGateway),
    ("whitespace before first field", "HTTP/1.1 200 OK\r\n Content-Length: 2\r\n\r\nok$S", Upstream::BadGateway),
    ("bare cr", "HTTP/1.1 200 OK\r\nX: a\rContent-Length: 2\r\n\r\nok$S", Upstream::BadGateway),
    ("nul in value", "HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 2\r\n\r\nok$S", Upstream::BadGateway),
    ("bad status line", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok$S", Upstream::BadGateway),
    ("chunk size overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000000000000001\r\nx\r\n0\r\n\r\n$S", Upstream::BrokenBody),
    ("chunk data without crlf", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxx\r\n0\r\n\r\n$S", Upstream::BrokenBody),
    ("chunk ext over the cap", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;$LONG\r\nx\r\n0\r\n\r\n$S", Upstream::BrokenBody),
    // RFC 9112 6.1 and 6.3: framing that is faulty but readable to the close
    ("te on http/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Upstream::ServedToClose("0\r\n\r\n")),
    ("te not chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", Upstream::ServedToClose("zz")),
    ("te CHUNKED with OWS", "HTTP/1.1 200 OK\r\nTransfer-Encoding:  CHUNKED \r\n\r\n2\r\nok\r\n0\r\n\r\n", Upstream::Respelled("ok")),
    ("te split over fields", "HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", Upstream::Respelled("ok")),
    // statuses without a body, sent with one: the bytes are never a response
    ("204 with a body", "HTTP/1.1 204 No Content\r\n\r\n$S", Upstream::ServedThenClosed("")),
    ("304 with a body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n$S", Upstream::ServedThenClosed("")),
    // more than Content-Length in the same write: the rest is never a response
    ("bytes after the body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok$S", Upstream::ServedThenClosed("ok")),
];

/// The response an upstream hides behind another, for the next client to get.
const POISON: &str = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil";

/// An origin that answers `/bad-N` with `RESPONSES[N]` (leaving its connection open,
/// as if more requests were welcome) and anything else with a plain `good`.
fn hostile_origin() -> Origin {
    Origin::start(handler(|ex| {
        let bad = ex
            .req
            .target
            .rsplit_once("/bad-")
            .and_then(|(_, n)| n.parse::<usize>().ok());
        match bad {
            Some(n) => {
                let bytes = RESPONSES[n]
                    .1
                    .replace("$S", POISON)
                    .replace("$LONG", &"e".repeat(5000));
                ex.write(bytes.as_bytes())?;
                if matches!(RESPONSES[n].2, Upstream::ServedToClose(_)) {
                    return Ok(support::Next::Close);
                }
            }
            None => ex.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")?,
        }
        Ok(support::Next::KeepAlive)
    }))
}

fn hostile_responses(io: &[&str]) {
    let origin = hostile_origin();
    let mode = format!("reverse:{}", origin.url());
    let mut args = io.to_vec();
    args.extend(["--workers", "1", "--mode", mode.as_str()]);
    let proxy = Proxy::start(&args);
    for (i, (name, _, expect)) in RESPONSES.iter().enumerate() {
        let mut c = Client::connect(proxy.addr);
        c.send(format!("GET /bad-{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        match expect {
            Upstream::BadGateway => {
                let r = c.read_response();
                assert_eq!(r.status, 502, "{name}: {}", r.head_str());
            }
            Upstream::BrokenBody => {
                let got = c.read_until_close(WAIT);
                let got = got.unwrap_or_else(|e| panic!("{name}: client left open: {e}"));
                let text = String::from_utf8_lossy(&got);
                assert!(!text.contains("evil"), "{name}: {text:?}");
            }
            Upstream::Respelled(body) => {
                let r = c.read_response();
                assert_eq!(r.status, 200, "{name}: {}", r.head_str());
                assert_eq!(r.body_str(), *body, "{name}");
                let head = r.head_str();
                let te: Vec<String> = head
                    .split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| format!("{}:{v}", n.to_lowercase()))
                    .filter(|l| l.starts_with("transfer-encoding"))
                    .collect();
                assert_eq!(te, ["transfer-encoding: chunked"], "{name}: {head}");
                continue;
            }
            Upstream::ServedThenClosed(body) | Upstream::ServedToClose(body) => {
                let r = c.read_response();
                assert!((200..400).contains(&r.status), "{name}: {}", r.head_str());
                assert_eq!(r.body_str(), *body, "{name}");
            }
        }
        // the next client, on the same worker: never the hidden response, never the
        // connection that sent it
        let mut next = Client::connect(proxy.addr);
        let r = next.request(&format!("GET /good-{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!((r.status, r.body_str().as_str()), (200, "good"), "{name}");
        let seen = origin.requests();
        let conn_of = |p: &str| seen.iter().find(|r| r.target == p).map(|r| r.conn_id);
        let bad_conn = conn_of(&format!("/bad-{i}")).expect("bad request seen");
        assert_ne!(
            conn_of(&format!("/good-{i}")),
            Some(bad_conn),
            "{name}: the connection that broke framing was pooled"
        );
        assert!(
            wait_until(WAIT, || origin.conns()[bad_conn].ended),
            "{name}: the upstream connection was left open"
        );
    }
}

#[test]
fn hostile_upstream_responses_get_502_and_are_never_pooled() {
    hostile_responses(&[]);
}

#[test]
fn hostile_upstream_responses_get_502_and_are_never_pooled_epoll() {
    hostile_responses(&["--io", "epoll"]);
}

/// An upstream that sends a second response a while after the first, on an idle
/// connection: the next request through that connection would read it as its own.
fn late_poison(io: &[&str]) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let poisoned = std::sync::Arc::new(AtomicBool::new(false));
    let flag = poisoned.clone();
    let origin = Origin::start(handler(move |ex| {
        if ex.req.target == "/first" {
            ex.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
            ex.sleep(Duration::from_millis(200));
            ex.write(POISON.as_bytes())?;
            flag.store(true, Ordering::SeqCst);
        } else {
            ex.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")?;
        }
        Ok(support::Next::KeepAlive)
    }));
    let mode = format!("reverse:{}", origin.url());
    let mut args = io.to_vec();
    args.extend(["--workers", "1", "--mode", mode.as_str()]);
    let proxy = Proxy::start(&args);
    let mut a = Client::connect(proxy.addr);
    let r = a.request("GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body_str(), "ok");
    drop(a);
    // the hidden response reaches the idle pooled connection before the next request
    // (written to loopback, it is in the proxy's socket once the write returned)
    assert!(wait_until(WAIT, || poisoned.load(Ordering::SeqCst)));
    std::thread::sleep(Duration::from_millis(50));
    for method in ["GET", "POST"] {
        let mut b = Client::connect(proxy.addr);
        let r = b.request(&format!(
            "{method} /second HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        ));
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "good"),
            "{method}: another client's connection answered"
        );
    }
}

#[test]
fn bytes_an_idle_upstream_sends_never_reach_the_next_client() {
    late_poison(&[]);
}

#[test]
fn bytes_an_idle_upstream_sends_never_reach_the_next_client_epoll() {
    late_poison(&["--io", "epoll"]);
}

/// The POST bodies an early answer must not leave to be read as the next request.
fn smuggling_bodies(path: &str) -> Vec<(&'static str, String)> {
    let x = format!("{:x}", SMUG.len());
    vec![
        (
            "content-length",
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{SMUG}",
                SMUG.len()
            ),
        ),
        (
            "chunked",
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{x}\r\n{SMUG}\r\n0\r\n\r\n"
            ),
        ),
    ]
}

#[test]
fn an_early_answer_never_leaves_the_body_to_be_read_as_a_request() {
    let origin = Origin::start(echo());
    let dir = TempDir::new("smuggle-early");
    let lua = dir.path("early.lua");
    std::fs::write(
        &lua,
        r#"
register_hook("http", "on_request", function(msg)
  if msg.path == "/respond" then
    return action.RESPOND{ status = 403, headers = { ["content-type"] = "text/plain" }, body = "no" }
  end
  if msg.path == "/drop" then return action.DROP end
end)
"#,
    )
    .unwrap();
    let mode = format!("reverse:{}", origin.url());
    for io in [&[][..], &["--io", "epoll"][..]] {
        let mut args = io.to_vec();
        args.extend(["--mode", mode.as_str(), "--plugin", lua.to_str().unwrap()]);
        let proxy = Proxy::start(&args);
        for (framing, req) in smuggling_bodies("/respond") {
            let mut c = Client::connect(proxy.addr);
            c.send(req.as_bytes());
            let r = c.read_response_to("POST");
            assert_eq!(r.status, 403, "{io:?} {framing}");
            // whatever follows on this connection is never the body's request
            let rest = c.read_until_close(WAIT);
            let rest = rest.unwrap_or_else(|e| panic!("{io:?} {framing}: left open: {e}"));
            assert!(rest.is_empty(), "{io:?} {framing}: {rest:?}");
        }
        // a body far larger than any read: the answer still arrives whole (the close
        // drains what the client sends, and discards it)
        let mut c = Client::connect(proxy.addr);
        let body = format!("{}{SMUG}", "x".repeat(1 << 20));
        let head = format!(
            "POST /respond HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = c.try_send(format!("{head}{body}").as_bytes());
        let r = c.read_response_to("POST");
        assert_eq!(r.status, 403, "{io:?} large body");
        assert!(c.closed_within(WAIT), "{io:?} large body: left open");
        for (framing, req) in smuggling_bodies("/drop") {
            let mut c = Client::connect(proxy.addr);
            c.send(req.as_bytes());
            let rest = c.read_until_close(WAIT);
            let rest = rest.unwrap_or_else(|e| panic!("{io:?} drop {framing}: left open: {e}"));
            assert!(rest.is_empty(), "{io:?} drop {framing}: {rest:?}");
        }
    }
    // forward mode: a 407 for a request without credentials
    let proxy = Proxy::start(&["--proxy-auth", "u:p"]);
    let target = format!("{}/auth", origin.url());
    for (framing, req) in smuggling_bodies(&target) {
        let mut c = Client::connect(proxy.addr);
        c.send(req.as_bytes());
        let r = c.read_response_to("POST");
        assert_eq!(r.status, 407, "{framing}");
        assert!(c.closed_within(WAIT), "{framing}: left open after the 407");
    }
    // a head too large: refused before its body is looked at
    let mut c = Client::connect(proxy.addr);
    let big = format!(
        "POST {target} HTTP/1.1\r\nHost: a\r\nX: {}\r\nContent-Length: {}\r\n\r\n{SMUG}",
        "x".repeat(70 * 1024),
        SMUG.len()
    );
    let _ = c.try_send(big.as_bytes());
    let r = c.read_response_to("POST");
    assert_eq!(r.status, 431);
    assert!(c.closed_within(WAIT));
    let sentinel = Proxy::start(&["--mode", &mode]);
    let r = Client::connect(sentinel.addr).request("GET /sentinel HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
    for r in origin.requests() {
        assert_ne!(r.target, "/admin", "the upstream saw the smuggled request");
        assert!(
            ["/sentinel"].contains(&r.target.as_str()),
            "a request answered early reached the upstream: {}",
            r.target
        );
    }
}

/// An origin that refuses every upgrade with `status` (and a body), keeping the
/// connection open.
fn refusing_origin(status: u16) -> Origin {
    Origin::start(handler(move |ex| {
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: 2\r\n\r\nno",
            reason(status)
        );
        ex.write(head.as_bytes())?;
        Ok(support::Next::KeepAlive)
    }))
}

#[test]
fn a_refused_upgrade_never_becomes_a_tunnel() {
    for status in [200u16, 400, 426] {
        let origin = refusing_origin(status);
        let mode = format!("reverse:{}", origin.url());
        for io in [&[][..], &["--io", "epoll"][..]] {
            let mut args = io.to_vec();
            args.extend(["--mode", mode.as_str()]);
            let proxy = Proxy::start(&args);
            const UPGRADE: &[u8] = b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\
                Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
            // luring refuses this (no Host); through a tunnel the origin would take it
            const NEXT: &[u8] = b"GET /tunneled HTTP/1.1\r\n\r\n";
            // the next bytes after the refusal, and pipelined behind the upgrade request
            for pipelined in [false, true] {
                let mut c = Client::connect(proxy.addr);
                let first = [UPGRADE, if pipelined { NEXT } else { b"" }].concat();
                c.send(&first);
                let r = c.read_response();
                assert_eq!(r.status, status, "{io:?}");
                if !pipelined {
                    let _ = c.try_send(NEXT);
                }
                match c.try_read_response_to("GET") {
                    Ok(r) => assert_eq!(r.status, 400, "{status} {io:?}: {}", r.head_str()),
                    Err(e) => assert!(
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                        ),
                        "{status} {io:?}: {e}"
                    ),
                }
            }
            let r =
                Client::connect(proxy.addr).request("GET /sentinel HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(r.status, status);
            let seen: Vec<String> = origin.requests().into_iter().map(|r| r.target).collect();
            assert!(
                !seen.iter().any(|t| t == "/tunneled"),
                "{status} {io:?}: bytes after a refused upgrade went through raw: {seen:?}"
            );
        }
    }
}

/// Sends one raw HTTP/2 request per case (python hyperframe/hpack: no client-side
/// checks) and prints what came back: `name rst:CODE`, `goaway:CODE`, `status:N`.
const H2_RAW: &str = r#"
import socket, sys, hpack, hyperframe.frame as hf
port = int(sys.argv[1])
ALL = {
    "connection": [(b"connection", b"keep-alive")],
    "keep-alive": [(b"keep-alive", b"timeout=5")],
    "proxy-connection": [(b"proxy-connection", b"keep-alive")],
    "transfer-encoding": [(b"transfer-encoding", b"chunked")],
    "upgrade": [(b"upgrade", b"websocket")],
    "te-gzip": [(b"te", b"gzip")],
    "uppercase-name": [(b"X-Upper", b"v")],
    "cr-in-value": [(b"x-a", b"a\rb")],
    "lf-in-value": [(b"x-a", b"a\r\nx-injected: 1")],
    "nul-in-value": [(b"x-a", b"a\x00b")],
    "space-around-value": [(b"x-a", b" v")],
    "host-differs": [(b"host", b"elsewhere.example")],
    "authority-userinfo": "AUTH",
    "path-absolute": "PATH:http://evil.example/h2-path-absolute",
    "path-relative": "PATH:h2-path-relative",
    "path-asterisk-get": "PATH:*",
    "path-asterisk-options": "PATH:*",
    "cl-bad": [(b"content-length", b"+5")],
    "cl-two": [(b"content-length", b"5"), (b"content-length", b"6")],
    "cl-long": "DATA",
    "cl-short": "DATA",
    "ok": [(b"te", b"trailers")],
    "ok-post": "DATA",
    "ok-trailers": "TRAILERS",
}
def frames(s):
    buf = b""
    while True:
        while len(buf) < 9:
            d = s.recv(65536)
            if not d: return
            buf += d
        f, n = hf.Frame.parse_frame_header(memoryview(buf[:9]))
        while len(buf) < 9 + n:
            d = s.recv(65536)
            if not d: return
            buf += d
        f.parse_body(memoryview(buf[9:9 + n]))
        buf = buf[9 + n:]
        yield f
for name in sys.argv[2:]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize())
    extra, data, authority = ALL[name], None, b"127.0.0.1"
    if extra == "AUTH":
        extra, authority = [], b"user@127.0.0.1"
    trailers = None
    path = ("/h2-" + name).encode()
    if isinstance(extra, str) and extra.startswith("PATH:"):
        extra, path = [], extra[5:].encode()
    if extra == "TRAILERS":
        extra, data = [(b"te", b"trailers")], b"hello"
        trailers = [(b"x-sum", b"1"), (b"content-length", b"99"), (b"host", b"elsewhere")]
    if extra == "DATA":
        cl, data = {"cl-long": (b"5", b"hello world"), "cl-short": (b"20", b"hello"),
                    "ok-post": (b"5", b"hello")}[name]
        extra = [(b"content-length", cl)]
    method = b"POST" if data is not None else b"OPTIONS" if name.endswith("options") else b"GET"
    fields = [(b":method", method), (b":scheme", b"http"), (b":authority", authority),
              (b":path", path)] + extra
    enc = hpack.Encoder()
    block = enc.encode(fields, huffman=False)
    flags = ["END_HEADERS"] + ([] if data is not None else ["END_STREAM"])
    s.sendall(hf.HeadersFrame(1, data=block, flags=flags).serialize())
    if data is not None:
        s.sendall(hf.DataFrame(1, data=data, flags=[] if trailers else ["END_STREAM"]).serialize())
    if trailers:
        block = enc.encode(trailers, huffman=False)
        s.sendall(hf.HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    out = "eof"
    try:
        for f in frames(s):
            if isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags:
                s.sendall(hf.SettingsFrame(0, flags=["ACK"]).serialize())
            elif isinstance(f, hf.RstStreamFrame) and f.stream_id == 1:
                out = "rst:%d" % f.error_code; break
            elif isinstance(f, hf.GoAwayFrame):
                out = "goaway:%d" % f.error_code; break
            elif isinstance(f, hf.HeadersFrame) and f.stream_id == 1:
                h = dict(hpack.Decoder().decode(f.data))
                out = "status:" + h.get(":status", "?"); break
    except socket.timeout:
        out = "timeout"
    print(name, out, flush=True)
    s.close()
"#;

#[test]
fn h2_requests_that_cannot_be_translated_are_reset() {
    let origin = Origin::start(echo());
    let mode = format!("reverse:{}", origin.url());
    let proxy = Proxy::start(&["--mode", &mode]);
    let bad = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te-gzip",
        "uppercase-name",
        "cr-in-value",
        "lf-in-value",
        "nul-in-value",
        "space-around-value",
        "host-differs",
        "authority-userinfo",
        "path-absolute",
        "path-relative",
        "path-asterisk-get",
        "cl-bad",
        "cl-two",
        "cl-long",
        "cl-short",
    ];
    let good = ["ok", "ok-post", "ok-trailers", "path-asterisk-options"];
    let port = proxy.port().to_string();
    let mut args = vec!["-c", H2_RAW, port.as_str()];
    args.extend(bad.iter().chain(good.iter()));
    let out = run_cmd("python3", &args, b"", Duration::from_secs(120));
    assert!(out.ok(), "{out:?}");
    let results: std::collections::HashMap<&str, &str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .collect();
    for name in bad {
        let got = results.get(name).copied().unwrap_or("missing");
        // RST_STREAM or GOAWAY with PROTOCOL_ERROR (1): RFC 9113 5.4.1 lets a stream
        // error be treated as a connection error, which the h2 crate does for fields
        // hpack cannot even decode into a header map
        assert!(
            got == "rst:1" || got == "goaway:1",
            "{name}: {got} (want PROTOCOL_ERROR)\n{}",
            proxy.stderr()
        );
    }
    for name in good {
        assert_eq!(results.get(name).copied(), Some("status:200"), "{name}");
    }
    let seen = origin.requests();
    // trailers go on as chunked trailers, without framing or Host among them
    let t = seen
        .iter()
        .find(|r| r.target == "/h2-ok-trailers")
        .expect("sent");
    let names: Vec<&str> = t.trailers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x-sum"], "{t:?}");
    for name in bad {
        let path = format!("/h2-{name}");
        for r in seen.iter().filter(|r| {
            r.target.ends_with(&path[1..]) || (r.target == "*" && r.method != "OPTIONS")
        }) {
            // a length that disagrees with the DATA is found only when the DATA come:
            // the head may have gone, never a body that completes it
            assert!(
                name.starts_with("cl-") && r.body_len.is_none(),
                "{name}: reached the upstream: {:?}",
                String::from_utf8_lossy(&r.raw_head)
            );
        }
    }
}

/// The HTTP/2 front's leg to an HTTP/1.1 upstream reads responses with the same rules.
#[test]
fn h2_clients_of_a_hostile_http1_upstream_get_502_and_never_a_hidden_response() {
    let origin = hostile_origin();
    let mode = format!("reverse:{}", origin.url());
    let proxy = Proxy::start(&["--workers", "1", "--mode", &mode]);
    let curl = |path: String| {
        let url = format!("http://127.0.0.1:{}{path}", proxy.port());
        let args = ["-sS", "--max-time", "20", "--http2-prior-knowledge"];
        let mut args = args.to_vec();
        args.extend(["-w", " %{http_version} %{http_code}", url.as_str()]);
        run_cmd("curl", &args, b"", Duration::from_secs(30)).stdout
    };
    for (i, (name, _, expect)) in RESPONSES.iter().enumerate() {
        if *expect != Upstream::BadGateway && *name != "bytes after the body" {
            continue;
        }
        let out = curl(format!("/bad-{i}"));
        if *expect == Upstream::BadGateway {
            assert!(out.ends_with(" 2 502"), "{name}: {out:?}");
        }
        let out = curl(format!("/good-{i}"));
        assert_eq!(out, "good 2 200", "{name}");
    }
    let seen = origin.requests();
    for (i, (name, _, expect)) in RESPONSES.iter().enumerate() {
        if *expect != Upstream::BadGateway {
            continue;
        }
        let conn_of = |p: String| seen.iter().find(|r| r.target == p).map(|r| r.conn_id);
        let bad = conn_of(format!("/bad-{i}"));
        assert!(bad.is_some(), "{name}: not sent");
        assert_ne!(conn_of(format!("/good-{i}")), bad, "{name}: pooled");
    }
}

/// A plugin that lies about framing in http.on_request: luring writes the framing it
/// relays the body by, and a value with CR/LF stays one field.
#[test]
fn framing_fields_a_plugin_sets_never_reframe_the_body() {
    let origin = Origin::start(echo());
    let dir = TempDir::new("smuggle-plugin");
    let lua = dir.path("lie.lua");
    std::fs::write(
        &lua,
        r#"
register_hook("http", "on_request", function(msg)
  msg.headers:set("content-length", "0")
  msg.headers:add("Content-Length", "5")
  msg.headers:add("transfer-encoding", "gzip")
  msg.headers:set("x-injected", "v\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1")
end)
"#,
    )
    .unwrap();
    let mode = format!("reverse:{}", origin.url());
    let proxy = Proxy::start(&["--mode", &mode, "--plugin", lua.to_str().unwrap()]);
    let x = format!("{:x}", SMUG.len());
    let cases = [
        (
            "content-length",
            format!(
                "POST /lie HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{SMUG}",
                SMUG.len()
            ),
            format!("content-length: {}", SMUG.len()),
        ),
        (
            "chunked",
            format!(
                "POST /lie HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{x}\r\n{SMUG}\r\n0\r\n\r\n"
            ),
            "transfer-encoding: chunked".to_string(),
        ),
    ];
    for (framing, req, field) in cases {
        let mut c = Client::connect(proxy.addr);
        let r = c.request(&req);
        assert_eq!(r.status, 200, "{framing}: {}", r.head_str());
        let seen = String::from_utf8_lossy(&r.body).to_string();
        let head = &seen[..seen.find("\r\n\r\n").unwrap_or(seen.len())];
        let framing_fields: Vec<String> = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| format!("{}:{v}", n.to_lowercase()))
            .filter(|l| l.starts_with("transfer-encoding") || l.starts_with("content-length"))
            .collect();
        assert_eq!(framing_fields, [field], "{framing}: {head:?}");
        assert!(seen.ends_with(SMUG), "{framing}: {seen:?}");
        // a request without a body gets no framing fields, whatever the plugin set
        let r = c.request("GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.header("x-echo-target"), Some("/after"));
        let head = r.body_str().to_lowercase();
        assert!(
            !head.contains("\r\ncontent-length:") && !head.contains("\r\ntransfer-encoding:"),
            "{framing}: {head:?}"
        );
    }
    for r in origin.requests() {
        assert_ne!(
            r.target,
            "/admin",
            "{:?}",
            String::from_utf8_lossy(&r.raw_head)
        );
    }
}
