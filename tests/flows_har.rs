//! `luring flows export --format har` and `luring flows import` with the real binary:
//! flows -> HAR -> flows round trips, HAR and dump files written by a real mitmdump in
//! reverse mode in front of a small Python origin, and damaged inputs. Loopback only;
//! every wait is bounded.

mod support;

use luring::flows::file::{open, FlowWriter};
use luring::flows::record::*;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{run_cmd, run_luring, wait_until, TempDir};

const WAIT: Duration = Duration::from_secs(30);

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// Every record of a flow file, panicking on a damaged one.
fn read_flows(p: &Path) -> (Meta, Vec<Record>) {
    let mut recs: Vec<Record> = open(p).unwrap().map(Result::unwrap).collect();
    let Record::Meta(m) = recs.remove(0) else {
        panic!("no Meta record first")
    };
    (m, recs)
}

fn http(recs: &[Record]) -> Vec<&HttpFlow> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Http(f) => Some(&**f),
            _ => None,
        })
        .collect()
}

fn body(data: &[u8]) -> BodyRec {
    BodyRec {
        data: ByteBuf::from(data.to_vec()),
        size: data.len() as u64,
        cut: false,
    }
}

/// Flows as the recorder writes them: a binary upload, a gzip'd answer, a WebSocket
/// exchange and a cut body, plus a tunnel that HAR cannot hold.
fn sample_records() -> Vec<Record> {
    let upload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut flows = Vec::new();
    for id in 1..=4u64 {
        let mut f = HttpFlow {
            id,
            conn: id / 2,
            client: "127.0.0.1:50000".into(),
            server: "127.0.0.1:8080".into(),
            mode: "reverse".into(),
            request: RequestRec {
                method: "POST".into(),
                scheme: "http".into(),
                authority: "origin.test".into(),
                path: format!("/f/{id}?a=b"),
                version: "HTTP/1.1".into(),
                headers: vec![
                    field("Host", "origin.test"),
                    field("Content-Type", "application/octet-stream"),
                ],
                body: body(&upload),
                trailers: vec![],
            },
            response: Some(ResponseRec {
                status: 200,
                reason: "OK".into(),
                version: "HTTP/1.1".into(),
                headers: vec![
                    field("Content-Type", "text/html"),
                    field("Content-Encoding", "gzip"),
                ],
                body: body(&gzip(b"<p>hello</p>".repeat(100).as_slice())),
                ..Default::default()
            }),
            times: Times {
                request_start: 1_750_000_000_000_000_000 + id,
                end: 1_750_000_000_500_000_000,
                ..Default::default()
            },
            ..Default::default()
        };
        if id == 3 {
            f.websocket = vec![
                WsMessageRec {
                    from_client: true,
                    opcode: 1,
                    ts: 1_750_000_001_000_000_001,
                    data: ByteBuf::from(b"ping?".to_vec()),
                    size: 5,
                },
                WsMessageRec {
                    from_client: false,
                    opcode: 2,
                    ts: 1_750_000_001_000_000_002,
                    data: ByteBuf::from(vec![0, 0xff, 0x80]),
                    size: 3,
                },
            ];
        }
        if id == 4 {
            f.request.body.size = 9_999_999;
            f.request.body.cut = true;
        }
        flows.push(Record::Http(Box::new(f)));
    }
    flows.insert(
        2,
        Record::Tunnel(Box::new(TunnelFlow {
            id: 9,
            target: "x.test:443".into(),
            ..Default::default()
        })),
    );
    flows
}

#[test]
fn flows_to_har_to_flows_keeps_all_but_what_export_reports() {
    let dir = TempDir::new("flows-har");
    let (src, har, back) = (
        dir.path("in.flows"),
        dir.path("out.har"),
        dir.path("back.flows"),
    );
    let recs = sample_records();
    let meta = Meta {
        writer: "luring test".into(),
        max_body: 1 << 20,
        ..Default::default()
    };
    let mut w = FlowWriter::new(std::fs::File::create(&src).unwrap(), &meta).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    drop(w);
    let (st, _, err) = run_luring(
        &[
            "flows",
            "export",
            src.to_str().unwrap(),
            "--format",
            "har",
            "-o",
            har.to_str().unwrap(),
        ],
        WAIT,
    );
    assert!(st.is_some_and(|s| s.success()), "export failed: {err}");
    assert!(
        err.contains("exported 4 flow(s)") && err.contains("1 tunnel flow(s) skipped"),
        "{err}"
    );
    assert!(err.contains("1 body(ies) were cut"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    assert_eq!(
        v["log"]["entries"][0]["response"]["content"]["text"],
        "<p>hello</p>".repeat(100)
    );
    let (st, _, err) = run_luring(
        &[
            "flows",
            "import",
            har.to_str().unwrap(),
            "-o",
            back.to_str().unwrap(),
        ],
        WAIT,
    );
    assert!(st.is_some_and(|s| s.success()), "import failed: {err}");
    assert!(err.contains("imported 4 flow(s), skipped 0"), "{err}");
    let (m, got) = read_flows(&back);
    assert_eq!(m.writer, "luring flows import (HAR)");
    let want: Vec<Record> = recs
        .into_iter()
        .filter(|r| matches!(r, Record::Http(_)))
        .collect();
    assert_eq!(got, want, "everything but the tunnel comes back");
}

/// The Python origin: GET answers "hello PATH", /bin 1 KiB of every byte value, /gz a
/// gzip'd body, POST the sha256 of what it got, and an echoing WebSocket.
const ORIGIN_PY: &str = r#"
import asyncio, base64, gzip, hashlib, struct

async def ws_echo(r, w):
    while True:
        b0, b1 = await r.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await r.readexactly(2))[0]
        mask = await r.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(await r.readexactly(n)))
        op = b0 & 0x0F
        w.write(bytes([0x80 | op, len(data)]) + data)
        await w.drain()
        if op == 8:
            return

async def handle(r, w):
    try:
        while True:
            line = await r.readline()
            if not line:
                return
            method, path, _ = line.decode().split(" ", 2)
            hdrs = {}
            while True:
                h = await r.readline()
                if h in (b"\r\n", b""):
                    break
                k, v = h.decode("latin-1").split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
            body = await r.readexactly(int(hdrs.get("content-length", 0)))
            if hdrs.get("upgrade", "").lower() == "websocket":
                key = hdrs["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
                acc = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
                w.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % acc).encode())
                await ws_echo(r, w)
                return
            extra, ctype = "", "text/plain"
            if path.startswith("/bin"):
                out, ctype = bytes(range(256)) * 4, "application/octet-stream"
            elif path.startswith("/gz"):
                out, extra = gzip.compress(b"gz " * 100), "Content-Encoding: gzip\r\n"
            elif method == "POST":
                out = b"got " + hashlib.sha256(body).hexdigest().encode()
            else:
                out = ("hello " + path).encode()
            w.write(("HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n"
                     % (ctype, extra, len(out))).encode() + out)
            await w.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        w.close()

async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(120)  # bounded: the test kills it sooner

asyncio.run(main())
"#;

const WS_CLIENT_PY: &str = r#"
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], open_timeout=10) as c:
    c.send("hi there")
    assert c.recv(timeout=10) == "hi there"
    c.send(b"\x00\xff\x01")
    assert c.recv(timeout=10) == b"\x00\xff\x01"
print("ok")
"#;

/// A child process killed when the test ends, however it ends.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs mitmdump in reverse mode in front of the origin, sends the traffic, stops it
/// with SIGINT (it writes the HAR on exit); the HAR and dump paths.
fn record_with_mitmdump(dir: &TempDir, upload: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut origin = Command::new("python3")
        .args(["-c", ORIGIN_PY])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(origin.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _origin = Kid(origin);
    let port: u16 = line.trim().parse().expect("origin port");
    let (har, dump, log) = (dir.path("m.har"), dir.path("m.dump"), dir.path("mitm.log"));
    let logf = std::fs::File::create(&log).unwrap();
    let mitm = Command::new("mitmdump")
        .args([
            "--mode",
            &format!("reverse:http://127.0.0.1:{port}"),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            "0",
        ])
        .args([
            "--set",
            &format!("hardump={}", har.display()),
            "-w",
            dump.to_str().unwrap(),
        ])
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("mitmdump");
    let mut mitm = Kid(mitm);
    let mut mport = None;
    let up = wait_until(WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        mport = text.split("listening at 127.0.0.1:").nth(1).and_then(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u16>()
                .ok()
        });
        mport.is_some()
    });
    assert!(
        up,
        "mitmdump did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let base = format!("http://127.0.0.1:{}", mport.unwrap());
    for path in ["/hello", "/bin", "/gz"] {
        let out = run_cmd(
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "-o",
                "/dev/null",
                &format!("{base}{path}"),
            ],
            b"",
            WAIT,
        );
        assert!(out.ok(), "curl {path}: {}", out.stderr);
    }
    let data = format!("@{}", upload.display());
    let out = run_cmd(
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
            &format!("{base}/up"),
        ],
        b"",
        WAIT,
    );
    assert!(out.ok(), "curl POST: {}", out.stderr);
    let ws = run_cmd(
        "python3",
        &[
            "-c",
            WS_CLIENT_PY,
            &format!("ws://127.0.0.1:{}/ws", mport.unwrap()),
        ],
        b"",
        WAIT,
    );
    assert!(
        ws.ok() && ws.stdout.trim() == "ok",
        "websocket client: {} {}",
        ws.stdout,
        ws.stderr
    );
    // SIGINT: mitmdump shuts down cleanly and writes the HAR (a kill would not).
    unsafe { libc::kill(mitm.0.id() as i32, libc::SIGINT) };
    let exited = wait_until(WAIT, || mitm.0.try_wait().ok().flatten().is_some());
    assert!(
        exited && har.exists(),
        "mitmdump did not write the HAR: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (har, dump)
}

fn mitmdump_installed() -> bool {
    Command::new("mitmdump")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Checks the flows imported from mitmproxy's HAR or dump against what the clients
/// sent and the origin answered.
fn check_mitm_flows(what: &str, file: &Path, upload: &[u8], writer: &str) {
    let (m, recs) = read_flows(file);
    assert_eq!(m.writer, writer);
    let flows = http(&recs);
    assert_eq!(flows.len(), 5, "{what}: {flows:#?}");
    let by_path = |p: &str| {
        *flows
            .iter()
            .find(|f| f.request.path == p)
            .unwrap_or_else(|| panic!("{what}: no {p}"))
    };
    let resp = |p: &str| {
        by_path(p)
            .response
            .clone()
            .unwrap_or_else(|| panic!("{what}: {p} has no response"))
    };
    assert_eq!(&resp("/hello").body.data[..], b"hello /hello", "{what}");
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    assert_eq!(
        sha(&resp("/bin").body.data),
        sha(&every_byte),
        "{what}: /bin body"
    );
    let gz = resp("/gz");
    assert!(
        gz.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(b"content-encoding") && &v[..] == b"gzip"),
        "{what}"
    );
    assert_eq!(
        gunzip(&gz.body.data),
        b"gz ".repeat(100),
        "{what}: /gz body"
    );
    let up = by_path("/up");
    assert_eq!(up.request.method, "POST");
    assert_eq!(
        sha(&up.request.body.data),
        sha(upload),
        "{what}: uploaded body"
    );
    assert_eq!(
        resp("/up").body.data.to_vec(),
        format!("got {}", sha(upload)).into_bytes(),
        "{what}"
    );
    let ws = by_path("/ws");
    assert_eq!(resp("/ws").status, 101);
    let msgs: Vec<(bool, u8, &[u8])> = ws
        .websocket
        .iter()
        .filter(|m| m.opcode < 8)
        .map(|m| (m.from_client, m.opcode, &m.data[..]))
        .collect();
    let want: Vec<(bool, u8, &[u8])> = vec![
        (true, 1, b"hi there"),
        (false, 1, b"hi there"),
        (true, 2, b"\x00\xff\x01"),
        (false, 2, b"\x00\xff\x01"),
    ];
    assert_eq!(msgs, want, "{what}: websocket messages");
    assert!(
        ws.websocket
            .iter()
            .all(|m| m.ts > 1_600_000_000_000_000_000),
        "{what}: message times"
    );
}

#[test]
fn real_mitmdump_har_and_dump_import() {
    if !mitmdump_installed() {
        eprintln!("SKIPPED real_mitmdump_har_and_dump_import: mitmdump is not installed (scripts/test.sh installs mitmproxy with pip)");
        return;
    }
    let dir = TempDir::new("flows-mitm");
    let upload: Vec<u8> = (0..3000u32).map(|i| (i * 131 % 256) as u8).collect();
    let up_path = dir.path("upload.bin");
    std::fs::write(&up_path, &upload).unwrap();
    let (har, dump) = record_with_mitmdump(&dir, &up_path);
    for (what, input, writer) in [
        ("HAR", &har, "luring flows import (HAR)"),
        ("dump", &dump, "luring flows import (mitmproxy dump)"),
    ] {
        let out = dir.path(&format!("{what}.flows"));
        let (st, _, err) = run_luring(
            &[
                "flows",
                "import",
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            WAIT,
        );
        assert!(
            st.is_some_and(|s| s.success()),
            "import of mitmproxy's {what}: {err}"
        );
        assert!(
            err.contains("imported 5 flow(s), skipped 0"),
            "{what}: {err}"
        );
        check_mitm_flows(what, &out, &upload, writer);
    }
    // And the other way: mitmproxy reads the HAR luring writes. Its HAR reader ignores
    // postData.encoding, so the binary upload is not compared on this leg.
    let (lhar, back, back_flows) = (
        dir.path("luring.har"),
        dir.path("back.mitm"),
        dir.path("back.flows"),
    );
    let dump_flows = dir.path("dump.flows");
    let (st, _, err) = run_luring(
        &[
            "flows",
            "export",
            dump_flows.to_str().unwrap(),
            "-o",
            lhar.to_str().unwrap(),
        ],
        WAIT,
    );
    assert!(st.is_some_and(|s| s.success()), "{err}");
    let out = run_cmd(
        "mitmdump",
        &[
            "-n",
            "-q",
            "-r",
            lhar.to_str().unwrap(),
            "-w",
            back.to_str().unwrap(),
        ],
        b"",
        WAIT,
    );
    assert!(
        out.ok(),
        "mitmdump could not read luring's HAR: {} {}",
        out.stdout,
        out.stderr
    );
    let (st, _, err) = run_luring(
        &[
            "flows",
            "import",
            back.to_str().unwrap(),
            "-o",
            back_flows.to_str().unwrap(),
        ],
        WAIT,
    );
    assert!(st.is_some_and(|s| s.success()), "{err}");
    let (_, recs) = read_flows(&back_flows);
    let flows = http(&recs);
    assert_eq!(flows.len(), 5);
    let resp = |p: &str| {
        flows
            .iter()
            .find(|f| f.request.path == p)
            .and_then(|f| f.response.clone())
            .unwrap()
    };
    assert_eq!(&resp("/hello").body.data[..], b"hello /hello");
    assert_eq!(
        sha(&resp("/bin").body.data),
        sha(&(0..=255u8).cycle().take(1024).collect::<Vec<_>>())
    );
    assert_eq!(gunzip(&resp("/gz").body.data), b"gz ".repeat(100));
}

/// A tnetstring (tests write the smallest dumps by hand).
fn tn(tag: char, data: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.push(tag as u8);
    v
}

fn tn_dict(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let inner: Vec<u8> = pairs
        .iter()
        .flat_map(|(k, v)| [tn(';', k.as_bytes()), v.clone()].concat())
        .collect();
    tn('}', &inner)
}

/// One mitmproxy-shaped HTTP flow (format 21) with a binary body.
fn tn_flow(path: &str) -> Vec<u8> {
    let hdr = tn(']', &[tn(',', b"Host"), tn(',', b"a.test")].concat());
    let req = tn_dict(&[
        ("method", tn(',', b"PUT")),
        ("scheme", tn(',', b"http")),
        ("host", tn(';', b"a.test")),
        ("port", tn('#', b"80")),
        ("authority", tn(',', b"")),
        ("path", tn(',', path.as_bytes())),
        ("http_version", tn(',', b"HTTP/1.1")),
        ("headers", tn(']', &hdr)),
        ("content", tn(',', b"\x00\xff:,}")),
        ("timestamp_start", tn('^', b"1700000000.5")),
    ]);
    tn_dict(&[
        ("version", tn('#', b"21")),
        ("type", tn(';', b"http")),
        ("request", req),
        ("response", tn('~', b"")),
    ])
}

#[test]
fn damaged_har_and_dump_files_give_clear_errors() {
    let dir = TempDir::new("flows-bad");
    let out = dir.path("o.flows");
    let run = |input: &Path| {
        let (st, _, err) = run_luring(
            &[
                "flows",
                "import",
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            WAIT,
        );
        assert!(!err.contains("panicked"), "{err}");
        (st.and_then(|s| s.code()), err)
    };
    // A dump: two flows, then the second cut short.
    let mut dump = tn_flow("/one");
    let first_len = dump.len();
    dump.extend(tn_flow("/two"));
    let p = dir.path("d.mitm");
    std::fs::write(&p, &dump).unwrap();
    let (code, err) = run(&p);
    assert_eq!(code, Some(0), "{err}");
    let (_, recs) = read_flows(&out);
    let f = http(&recs)[1];
    assert_eq!(
        (
            f.request.method.as_str(),
            f.request.authority.as_str(),
            &f.request.body.data[..]
        ),
        ("PUT", "a.test", &b"\x00\xff:,}"[..])
    );
    std::fs::write(&p, &dump[..dump.len() - 7]).unwrap();
    let (code, err) = run(&p);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("damaged dump at byte {first_len}"))
            && err.contains("1 flow(s) before it"),
        "{err}"
    );
    assert_eq!(
        http(&read_flows(&out).1).len(),
        1,
        "the flow before the damage is kept"
    );
    // A HAR cut inside its second entry.
    let src = dir.path("s.flows");
    let mut w = FlowWriter::new(std::fs::File::create(&src).unwrap(), &Meta::default()).unwrap();
    for r in sample_records() {
        w.write(&r).unwrap();
    }
    drop(w);
    let har = dir.path("s.har");
    let (st, _, err) = run_luring(
        &[
            "flows",
            "export",
            src.to_str().unwrap(),
            "-o",
            har.to_str().unwrap(),
        ],
        WAIT,
    );
    assert!(st.is_some_and(|s| s.success()), "{err}");
    let text = std::fs::read(&har).unwrap();
    let second = text
        .windows(17)
        .position(|w| w == b"\"_luringFlowId\":2")
        .unwrap();
    std::fs::write(&har, &text[..second]).unwrap();
    let (code, err) = run(&har);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("truncated or not valid JSON") && err.contains("line"),
        "{err}"
    );
    assert_eq!(http(&read_flows(&out).1).len(), 1);
    // Garbage of each kind.
    for (name, bytes, says) in [
        (
            "g1",
            &b"hello world"[..],
            "not a HAR file or a mitmproxy dump",
        ),
        ("g2", b"", "empty"),
        ("g3", b"12:abc", "damaged dump at byte 0"),
        ("g4", b"5:abcde?", "unknown type tag"),
        ("g5", b"{\"log\": [1, 2]}", "not valid JSON"),
        ("g6", b"LURFLOWS\x01\x00", "already a luring flow file"),
    ] {
        let p = dir.path(name);
        std::fs::write(&p, bytes).unwrap();
        let (code, err) = run(&p);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
}

/// Bytes that do not compress (xorshift), so a body stays its size in every format.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs luring with `feed` writing its stdin from a thread; (exit code, stderr, peak
/// RSS in KiB from wait4). Killed at the bound.
fn run_fed(
    args: &[&str],
    feed: impl FnOnce(&mut dyn std::io::Write) + Send + 'static,
) -> (Option<i32>, String, i64) {
    use std::io::Read;
    // Reaped by wait4 below, which std's wait cannot do: it gives the peak RSS.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(support::bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn luring");
    let mut stdin = child.stdin.take().unwrap();
    // A writer that fails (the child died) just stops: the wait below is bounded.
    let writer = std::thread::spawn(move || feed(&mut stdin));
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let pid = child.id() as i32;
    let (mut status, mut ru) = (0i32, unsafe { std::mem::zeroed::<libc::rusage>() });
    let done = wait_until(
        Duration::from_secs(180),
        || unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) } == pid,
    );
    if !done {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    }
    let _ = writer.join();
    let err = reader.join().unwrap_or_default();
    let code = (done && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status));
    (code, err, ru.ru_maxrss)
}

const FLOWS: u64 = 1000;
const BODY: usize = 64 * 1024;
/// Peak RSS allowed: well under the ~64 MiB of bodies streamed through.
const RSS_KIB: i64 = 40 * 1024;

#[test]
fn export_and_import_stream_with_flat_memory() {
    let (code, err, rss) = run_fed(
        &["flows", "export", "-", "--format", "har", "-o", "/dev/null"],
        |w| {
            let _ = w.write_all(&luring::flows::file::file_header());
            let _ =
                w.write_all(&luring::flows::file::encode(&Record::Meta(Meta::default())).unwrap());
            for id in 1..=FLOWS {
                let f = HttpFlow {
                    id,
                    request: RequestRec {
                        method: "POST".into(),
                        scheme: "http".into(),
                        authority: "a.test".into(),
                        path: "/".into(),
                        body: body(&noise(id, BODY)),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                if w.write_all(&luring::flows::file::encode(&Record::Http(Box::new(f))).unwrap())
                    .is_err()
                {
                    return;
                }
            }
        },
    );
    assert_eq!(code, Some(0), "{err}");
    eprintln!("export peak RSS {rss} KiB");
    assert!(err.contains(&format!("exported {FLOWS} flow(s)")), "{err}");
    assert!(
        rss < RSS_KIB,
        "export peaked at {rss} KiB for {} MiB of bodies",
        (FLOWS * BODY as u64) >> 20
    );

    let (code, err, rss) = run_fed(&["flows", "import", "-", "-o", "/dev/null"], |w| {
        let _ = w.write_all(
            br#"{"log":{"version":"1.2","creator":{"name":"gen","version":"1"},"entries":["#,
        );
        for id in 1..=FLOWS {
            let e = serde_json::json!({
                "startedDateTime": "2025-01-01T00:00:00Z", "time": 1,
                "request": {"method": "POST", "url": format!("http://a.test/{id}"), "httpVersion": "HTTP/1.1", "headers": [],
                    "postData": {"mimeType": "application/octet-stream", "encoding": "base64",
                        "text": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, noise(id, BODY))}},
                "response": {"status": 204, "headers": [], "content": {"size": 0}}
            });
            let sep: &[u8] = if id == 1 { b"" } else { b"," };
            if w.write_all(sep)
                .and_then(|()| w.write_all(e.to_string().as_bytes()))
                .is_err()
            {
                return;
            }
        }
        let _ = w.write_all(b"]}}");
    });
    assert_eq!(code, Some(0), "{err}");
    eprintln!("import peak RSS {rss} KiB");
    assert!(
        err.contains(&format!("imported {FLOWS} flow(s), skipped 0")),
        "{err}"
    );
    assert!(
        rss < RSS_KIB,
        "import peaked at {rss} KiB for {} MiB of bodies",
        (FLOWS * BODY as u64) >> 20
    );
}
