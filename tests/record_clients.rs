//! `--record` with real clients and origins that are not ours: nghttp (h2, several
//! streams on one TLS connection luring terminates) against nghttpd, and python's
//! `websockets` client and server. Each test compares the flow file with what the
//! client and the origin themselves report having sent and received.

mod support;

use luring::flows::file;
use luring::flows::record::{HttpFlow, Record};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const CMD_WAIT: Duration = Duration::from_secs(60);

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The HTTP flows of a file (which must read cleanly to its end).
fn http_flows(path: &Path) -> Vec<HttpFlow> {
    file::open(path)
        .expect("open flow file")
        .filter_map(|r| match r.expect("record") {
            Record::Http(f) => Some(*f),
            _ => None,
        })
        .collect()
}

/// The flows once `n` are written, then after a pause in which no more may come.
fn exactly_flows(path: &Path, n: usize) -> Vec<HttpFlow> {
    wait_until(Duration::from_secs(10), || http_flows(path).len() >= n);
    // the writer flushes every 20 ms: a flow too many would be there by now
    std::thread::sleep(Duration::from_millis(300));
    http_flows(path)
}

// ---------------------------------------------------------------------------
// nghttp / nghttpd

/// The page nghttp POSTs; nghttpd echoes it, and nghttp (`-a`) then GETs the assets it
/// links. An HTML comment makes it larger than the initial 64 KiB stream window.
fn page() -> Vec<u8> {
    let mut p = b"<html><head><link rel=\"stylesheet\" href=\"/style.css\">\
                  <script src=\"/app.js\"></script></head><body><img src=\"/img.bin\"><!--"
        .to_vec();
    let mut i = 0u32;
    while p.len() < 100_000 {
        p.extend_from_slice(format!(" filler {i:06}").as_bytes());
        i += 1;
    }
    p.extend_from_slice(b" --></body></html>\n");
    p
}

/// The docroot's assets: a small stylesheet, a script, a binary image over 256 KiB.
fn assets() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("/style.css", b"body { color: teal }\n".to_vec()),
        ("/app.js", b"var x = 1;\n".repeat(2000)),
        ("/img.bin", pattern_vec(300_000)),
    ]
}

/// Rebuilds the bytes of `--hexdump` output (canonical hexdump, one block per read: an
/// offset and 16 bytes a line, `*` for lines equal to the one before, the block's
/// length alone on its last line). Other lines (`-v` frames) are skipped.
fn unhexdump(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut block, mut last, mut star) = (0usize, Vec::new(), false);
    for line in text.lines() {
        if line == "*" {
            star = true;
            continue;
        }
        let Some(off) = line
            .get(..8)
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        if star {
            while out.len() - block < off {
                out.extend_from_slice(&last);
            }
            star = false;
        }
        assert_eq!(out.len() - block, off, "hexdump offsets: {line}");
        if line.len() == 8 {
            block = out.len();
            continue;
        }
        let hex = line[8..].split('|').next().unwrap();
        last = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
            .collect();
        out.extend_from_slice(&last);
    }
    out
}

/// The DATA payloads of a stream of HTTP/2 frames (padding removed), by stream id;
/// the frames must fill `bytes` exactly.
fn data_by_stream(bytes: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    let mut out: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut at = 0;
    while at < bytes.len() {
        assert!(at + 9 <= bytes.len(), "a frame header cut at {at}");
        let h = &bytes[at..at + 9];
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        let (kind, flags) = (h[3], h[4]);
        let sid = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let p = &bytes[at + 9..at + 9 + len];
        if kind == 0 {
            let p = if flags & 0x8 != 0 {
                &p[1..p.len() - p[0] as usize]
            } else {
                p
            };
            out.entry(sid).or_default().extend_from_slice(p);
        }
        at += 9 + len;
    }
    out
}

/// One request as a `-v` log shows it: stream id, method, path, then the response's
/// status (client side) or the DATA bytes received (origin side).
#[derive(Debug, Default, Clone, PartialEq)]
struct Stream {
    method: String,
    path: String,
    status: u16,
    data_len: usize,
}

/// Field lines of `-v`: `recv (stream_id=N) name: value` (a header block received)
/// or, indented under `send HEADERS frame <... stream_id=N>`, `name: value` (sent).
/// DATA frames received add their length to their stream's `data_len`.
fn streams_of_log(log: &str) -> BTreeMap<u32, Stream> {
    let mut out: BTreeMap<u32, Stream> = BTreeMap::new();
    let sid_of = |s: &str| -> u32 {
        let i = s.find("stream_id=").unwrap() + "stream_id=".len();
        let d: String = s[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
        d.parse().unwrap()
    };
    let mut sending = None;
    for line in log.lines() {
        let mut field = None;
        if line.contains("send HEADERS frame <") {
            sending = Some(sid_of(line));
            continue;
        } else if let Some(i) = line.find("recv (stream_id=") {
            sending = None;
            field = Some((sid_of(line), line[i..].split_once(") ").unwrap().1));
        } else if line.contains("recv DATA frame <") {
            sending = None;
            let i = line.find("length=").unwrap() + "length=".len();
            let n: String = line[i..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            assert!(!line.contains("PADDED"), "{line}");
            out.entry(sid_of(line)).or_default().data_len += n.parse::<usize>().unwrap();
        } else if let Some(sid) = sending.filter(|_| line.starts_with("          :")) {
            field = Some((sid, line.trim_start()));
        } else if !line.starts_with(' ') {
            sending = None;
        }
        if let Some((sid, f)) = field {
            let s = out.entry(sid).or_default();
            match f.split_once(": ") {
                Some((":method", v)) => s.method = v.to_string(),
                Some((":path", v)) => s.path = v.to_string(),
                Some((":status", v)) => s.status = v.parse().unwrap(),
                _ => {}
            }
        }
    }
    out.retain(|_, s| !s.method.is_empty() || s.status != 0);
    out
}

/// nghttpd on 127.0.0.1 with the test PKI's certificate, `-v` to a log file: the
/// assets in its docroot, request bodies echoed (`--echo-upload`).
struct Nghttpd {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _root: TempDir,
}

impl Nghttpd {
    fn start(pki: &TestPki) -> Nghttpd {
        let root = TempDir::new("rec-h2root");
        for (path, body) in assets() {
            std::fs::write(root.path(&path[1..]), body).unwrap();
        }
        let log = root.path("nghttpd.log");
        let port = closed_port();
        let child = Command::new("nghttpd")
            .args(["-v", "-a", "127.0.0.1", "--echo-upload", "-d"])
            .arg(&root.0)
            .arg(port.to_string())
            .arg(&pki.server_key)
            .arg(&pki.server_pem)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("nghttpd (apt nghttp2-server)");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "nghttpd did not listen on {port}");
        Nghttpd {
            child,
            port,
            log,
            _root: root,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nghttp (`-a`: a POST of the page, then GETs of its three assets, all on one
/// connection) to luring in reverse mode, which terminates TLS with its CA (trusted by
/// nghttp through SSL_CERT_FILE) and speaks h2 to nghttpd. Each flow's heads, bodies,
/// connection and stream id match what nghttp sent and got and what nghttpd received.
#[test]
fn nghttp_streams_on_one_connection_are_recorded_as_they_went() {
    let pki = TestPki::new();
    let origin = Nghttpd::start(&pki);
    let conf = Conf::new();
    let dir = TempDir::new("rec-nghttp");
    let file = dir.path("t.flows");
    let mode = format!("reverse:https://127.0.0.1:{}", origin.port);
    let cd = conf.confdir();
    let ca = pki.ca_pem.to_str().unwrap();
    let proxy = Proxy::start(&[
        "--confdir",
        &cd,
        "--upstream-ca",
        ca,
        "--mode",
        &mode,
        "--record",
        file.to_str().unwrap(),
    ]);
    let page = page();
    let page_file = dir.path("page.html");
    std::fs::write(&page_file, &page).unwrap();
    let url = format!("https://127.0.0.1:{}/echo", proxy.port());
    let cert_env = format!("SSL_CERT_FILE={}", conf.ca());
    let out = run_cmd(
        "env",
        &[
            &cert_env,
            "nghttp",
            "-a",
            "-n",
            "-v",
            "--hexdump",
            "-t",
            "20",
            "-d",
            page_file.to_str().unwrap(),
            &url,
        ],
        b"",
        CMD_WAIT,
    );
    let tail = |s: &str| s[s.len().saturating_sub(3000)..].to_string();
    assert!(out.ok(), "nghttp: {}\n{}", tail(&out.stdout), out.stderr);
    assert!(out.stdout.contains("The negotiated protocol: h2"));
    // luring's certificate chains to its CA, which nghttp was told to trust
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("verification failed"), "{}", tail(&all));

    // what nghttp sent and got: four streams, the POST first, each answered 200
    let client = streams_of_log(&out.stdout);
    let got = data_by_stream(&unhexdump(&out.stdout));
    let mut want: BTreeMap<String, (String, Vec<u8>, Vec<u8>)> = BTreeMap::new();
    want.insert("/echo".into(), ("POST".into(), page.clone(), page.clone()));
    for (path, body) in assets() {
        want.insert(path.into(), ("GET".into(), Vec::new(), body));
    }
    let sent: BTreeMap<String, (u32, String)> = client
        .iter()
        .map(|(sid, s)| (s.path.clone(), (*sid, s.method.clone())))
        .collect();
    assert_eq!(client.len(), 4, "{client:?}");
    for (path, (method, _, resp)) in &want {
        let (sid, m) = &sent[path];
        assert_eq!(m, method, "{path}");
        assert_eq!(client[sid].status, 200, "{path}");
        assert_eq!(got.get(sid).map(|d| sha(d)), Some(sha(resp)), "{path}");
    }

    // what nghttpd received: the same four requests, the page as the POST's body
    let mut origin_saw = Vec::new();
    wait_until(Duration::from_secs(5), || {
        origin_saw = streams_of_log(&origin.log()).into_values().collect();
        origin_saw.len() >= 4
    });
    let mut seen: Vec<(String, String, usize)> = origin_saw
        .iter()
        .map(|s| (s.method.clone(), s.path.clone(), s.data_len))
        .collect();
    seen.sort();
    let mut expect: Vec<(String, String, usize)> = want
        .iter()
        .map(|(p, (m, body, _))| (m.clone(), p.clone(), body.len()))
        .collect();
    expect.sort();
    assert_eq!(seen, expect, "{}", tail(&origin.log()));

    // the flow file: one flow per stream, all on one client connection
    let flows = exactly_flows(&file, 4);
    assert_eq!(flows.len(), 4, "{}", proxy.stderr());
    assert!(flows.iter().all(|f| f.conn == flows[0].conn), "{flows:?}");
    for f in &flows {
        let path = f.request.path.as_str();
        let (method, req_body, resp_body) = &want[path];
        let (sid, _) = sent[path];
        assert_eq!(f.stream, sid, "{path}: nghttp's stream id");
        assert_eq!(
            (f.mode.as_str(), f.request.method.as_str()),
            ("reverse", method.as_str())
        );
        assert_eq!(f.request.version, "HTTP/2.0", "{path}");
        assert_eq!(f.client_tls.as_ref().map(|t| t.alpn.as_str()), Some("h2"));
        assert_eq!(f.request.body.size, req_body.len() as u64, "{path}");
        assert_eq!(sha(&f.request.body.data), sha(req_body), "{path}");
        let r = f.response.as_ref().expect("a response");
        assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2.0"), "{path}");
        assert!(!r.by_proxy && f.error.is_none(), "{path}: {:?}", f.error);
        assert_eq!(r.body.size, resp_body.len() as u64, "{path}");
        assert!(!r.body.cut, "{path}");
        assert_eq!(
            sha(&r.body.data),
            sha(&got[&sid]),
            "{path}: what nghttp got"
        );
    }
}

// ---------------------------------------------------------------------------
// python websockets

/// A `websockets` origin on 127.0.0.1 (prints its port). Per connection it sends a
/// text greeting and a 70,000-byte binary message, then echoes every message; it prints
/// one JSON line per message it sent or received (`dir`, `type`, `len`, `sha`), and at
/// the end the close frames it received and sent (`[code, reason]`). It ends after 60 s.
const WS_ORIGIN_PY: &str = r#"
import asyncio, hashlib, json, sys
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

def note(d, m):
    b = m.encode() if isinstance(m, str) else m
    print(json.dumps({"dir": d, "type": "text" if isinstance(m, str) else "binary",
                      "len": len(b), "sha": hashlib.sha256(b).hexdigest()}), flush=True)

async def handler(ws):
    async def send(m):
        await ws.send(m)
        note("sent", m)
    await send("hello from the origin \u2713")
    await send(bytes(i * 7 % 256 for i in range(70000)))
    try:
        async for m in ws:
            note("recv", m)
            await send(m)
    except ConnectionClosed:
        pass
    c = lambda f: [f.code, f.reason] if f else None
    print(json.dumps({"close_rcvd": c(ws.protocol.close_rcvd), "close_sent": c(ws.protocol.close_sent)}), flush=True)

async def main():
    async with serve(handler, "127.0.0.1", 0, max_size=1 << 22) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"#;

/// The `websockets` client: URL. It reads the origin's two messages, sends text and
/// binary messages (one of them 100 KiB of two-byte characters, one a 200 KiB binary,
/// one text sent in three fragments) and waits for each echo, then closes with 4001.
/// Prints the same JSON lines as the origin, then its close frames and the extension
/// the handshake agreed on.
const WS_CLIENT_PY: &str = r#"
import asyncio, hashlib, json, sys
from websockets.asyncio.client import connect

def note(d, m):
    b = m.encode() if isinstance(m, str) else m
    print(json.dumps({"dir": d, "type": "text" if isinstance(m, str) else "binary",
                      "len": len(b), "sha": hashlib.sha256(b).hexdigest()}), flush=True)

async def main():
    async with connect(sys.argv[1], open_timeout=10, close_timeout=10, max_size=1 << 22) as ws:
        async def recv():
            m = await asyncio.wait_for(ws.recv(), 10)
            note("recv", m)
            return m
        for _ in range(2):
            await recv()
        for m in ["hi \u2713", bytes(range(256)), "\u03bb" * 51200,
                  bytes(i * 13 % 251 for i in range(204800))]:
            await ws.send(m)
            note("sent", m)
            assert await recv() == m, "the echo differs"
        await ws.send(["frag", "ment", "ed"])
        note("sent", "fragmented")
        assert await recv() == "fragmented"
        await ws.close(4001, "done here")
        c = lambda f: [f.code, f.reason] if f else None
        print(json.dumps({"close_rcvd": c(ws.protocol.close_rcvd), "close_sent": c(ws.protocol.close_sent),
                          "extensions": ws.response.headers.get("Sec-WebSocket-Extensions")}))

asyncio.run(main())
"#;

/// A message as a side reports it, or as recorded: (type, length, sha256).
type Msg = (String, u64, String);

/// The messages with direction `dir` and the last close line of a side's JSON lines.
fn side(lines: &[String], dir: &str) -> (Vec<Msg>, serde_json::Value) {
    let mut msgs = Vec::new();
    let mut close = serde_json::Value::Null;
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        if v.get("close_rcvd").is_some() {
            close = v;
        } else if v["dir"] == dir {
            let t = v["type"].as_str().unwrap().to_string();
            msgs.push((
                t,
                v["len"].as_u64().unwrap(),
                v["sha"].as_str().unwrap().into(),
            ));
        }
    }
    (msgs, close)
}

/// The close payload RFC 6455 section 5.5.1 puts on the wire: code, then reason.
fn close_payload(c: &serde_json::Value) -> Vec<u8> {
    let code = c[0].as_u64().expect("a close code") as u16;
    [&code.to_be_bytes()[..], c[1].as_str().unwrap().as_bytes()].concat()
}

/// python `websockets` client and server through `--mode reverse:` with `--record` (no
/// plugin): the flow's messages, each way in order, are the ones both sides sent and
/// received (type, exact bytes), fragments joined, and the close frames carry the
/// client's code and reason both ways.
#[test]
fn python_websockets_messages_are_recorded_as_sent() {
    let origin = Py::start(WS_ORIGIN_PY, &[]);
    let dir = TempDir::new("rec-ws");
    let file = dir.path("t.flows");
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port);
    let proxy = Proxy::start(&["--mode", &mode, "--record", file.to_str().unwrap()]);
    let url = format!("ws://127.0.0.1:{}/chat?room=1", proxy.port());
    let out = run_cmd("python3", &["-c", WS_CLIENT_PY, &url], b"", CMD_WAIT);
    assert!(out.ok(), "client: {out:?}\n{}", proxy.stderr());
    let client: Vec<String> = out.stdout.lines().map(String::from).collect();
    // the origin's last line comes once it has the close
    let ended = wait_until(Duration::from_secs(10), || {
        origin.lines().iter().any(|l| l.contains("close_rcvd"))
    });
    assert!(ended, "origin: {:?}", origin.lines());
    let (up_sent, c_close) = side(&client, "sent");
    let (down_got, _) = side(&client, "recv");
    let (up_got, o_close) = side(&origin.lines(), "recv");
    let (down_sent, _) = side(&origin.lines(), "sent");
    // the sides agree with each other: nothing to blame on the record yet
    assert_eq!(up_sent, up_got, "client to origin");
    assert_eq!(down_sent, down_got, "origin to client");
    assert_eq!(up_sent.len(), 5);
    assert_eq!(down_sent.len(), 7);
    assert_eq!(
        c_close["close_sent"],
        serde_json::json!([4001, "done here"])
    );
    assert_eq!(o_close["close_rcvd"], c_close["close_sent"]);
    assert_eq!(c_close["close_rcvd"], o_close["close_sent"]);

    let flows = exactly_flows(&file, 1);
    assert_eq!(flows.len(), 1, "{}", proxy.stderr());
    let f = &flows[0];
    assert_eq!(
        (f.request.method.as_str(), f.request.path.as_str()),
        ("GET", "/chat?room=1")
    );
    assert_eq!(f.response.as_ref().map(|r| r.status), Some(101));
    assert_eq!(f.websocket_dropped, 0);
    let recorded = |from_client: bool| -> Vec<Msg> {
        f.websocket
            .iter()
            .filter(|m| m.from_client == from_client && m.opcode != 8)
            .map(|m| {
                assert_eq!(m.size, m.data.len() as u64, "a message was cut");
                let t = match m.opcode {
                    1 => "text",
                    2 => "binary",
                    o => panic!("opcode {o}"),
                };
                (t.to_string(), m.size, sha(&m.data))
            })
            .collect()
    };
    let ext = &c_close["extensions"];
    assert_eq!(
        recorded(true),
        up_sent,
        "client to origin; extensions {ext}"
    );
    assert_eq!(
        recorded(false),
        down_sent,
        "origin to client; extensions {ext}"
    );
    // one close frame each way, after the messages, with the code and reason sent
    let closes: Vec<(bool, Vec<u8>)> = f
        .websocket
        .iter()
        .filter(|m| m.opcode == 8)
        .map(|m| (m.from_client, m.data.to_vec()))
        .collect();
    let want = vec![
        (true, close_payload(&c_close["close_sent"])),
        (false, close_payload(&o_close["close_sent"])),
    ];
    assert_eq!(closes, want);
    for from_client in [true, false] {
        let last = f.websocket.iter().rfind(|m| m.from_client == from_client);
        assert_eq!(last.map(|m| m.opcode), Some(8), "the close is last");
    }
}
