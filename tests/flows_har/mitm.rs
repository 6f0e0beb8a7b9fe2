//! The mitmproxy side of tests/flows_har.rs: a Python origin, mitmdump in reverse mode
//! in front of it, the traffic sent through, and the checks of what luring imports.

use super::{gunzip, http, luring_ok, read_flows, sha, WAIT};
use crate::support::{run_cmd, wait_until, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Starts the Python origin; the child and its port.
fn start_origin() -> (Kid, u16) {
    let mut origin = Command::new("python3")
        .args(["-c", ORIGIN_PY])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let out = origin.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    (Kid(origin), line.trim().parse().expect("origin port"))
}

/// Starts mitmdump in reverse mode to `origin`, writing a HAR on exit and a dump as it
/// goes; the child and the port it listens on (it picks one: --listen-port 0).
fn start_mitmdump(dir: &TempDir, origin: u16) -> (Kid, u16) {
    let (har, dump, log) = (dir.path("m.har"), dir.path("m.dump"), dir.path("mitm.log"));
    let logf = std::fs::File::create(&log).unwrap();
    let mode = format!("reverse:http://127.0.0.1:{origin}");
    let hardump = format!("hardump={}", har.display());
    let mitm = Command::new("mitmdump")
        .args([
            "--mode",
            &mode,
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            "0",
        ])
        .args(["--set", &hardump, "-w", dump.to_str().unwrap()])
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("mitmdump");
    let mitm = Kid(mitm);
    let mut port = None;
    let up = wait_until(WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        port = text
            .split("listening at 127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
        port.is_some()
    });
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(up, "mitmdump did not start: {log_text}");
    (mitm, port.unwrap())
}

/// curl GETs /hello, /bin and /gz, POSTs `upload` to /up, and the websockets client
/// exchanges a text and a binary message on /ws.
fn send_traffic(port: u16, upload: &Path) {
    let base = format!("http://127.0.0.1:{port}");
    for path in ["/hello", "/bin", "/gz"] {
        let url = format!("{base}{path}");
        let out = run_cmd(
            "curl",
            &["-sS", "-m", "10", "-o", "/dev/null", &url],
            b"",
            WAIT,
        );
        assert!(out.ok(), "curl {path}: {}", out.stderr);
    }
    let (data, url) = (format!("@{}", upload.display()), format!("{base}/up"));
    let ctype = "Content-Type: application/octet-stream";
    let args = ["-sS", "-m", "10", "-H", ctype, "--data-binary", &data, &url];
    let out = run_cmd("curl", &args, b"", WAIT);
    assert!(out.ok(), "curl POST: {}", out.stderr);
    let ws_url = format!("ws://127.0.0.1:{port}/ws");
    let ws = run_cmd("python3", &["-c", WS_CLIENT_PY, &ws_url], b"", WAIT);
    let said = format!("{} {}", ws.stdout, ws.stderr);
    assert!(
        ws.ok() && ws.stdout.trim() == "ok",
        "websocket client: {said}"
    );
}

/// Records the traffic with mitmdump in front of the origin, then stops it with
/// SIGINT (it writes the HAR on a clean exit, not on a kill); the HAR and dump paths.
pub fn record_with_mitmdump(dir: &TempDir, upload: &Path) -> (PathBuf, PathBuf) {
    let (_origin, origin_port) = start_origin();
    let (mut mitm, port) = start_mitmdump(dir, origin_port);
    send_traffic(port, upload);
    unsafe { libc::kill(mitm.0.id() as i32, libc::SIGINT) };
    let exited = wait_until(WAIT, || mitm.0.try_wait().ok().flatten().is_some());
    let har = dir.path("m.har");
    let log = std::fs::read_to_string(dir.path("mitm.log")).unwrap_or_default();
    assert!(
        exited && har.exists(),
        "mitmdump did not write the HAR: {log}"
    );
    (har, dir.path("m.dump"))
}

pub fn mitmdump_installed() -> bool {
    Command::new("mitmdump")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Checks the flows imported from mitmproxy's HAR or dump against what the clients
/// sent and the origin answered.
pub fn check_mitm_flows(what: &str, file: &Path, upload: &[u8], writer: &str) {
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

/// The other way: mitmproxy reads the HAR luring writes from `flows` (the flows
/// imported from its dump), writes its own dump of it, and that imports with the same
/// response bodies. Its HAR reader ignores postData.encoding, so the binary upload is
/// not compared on this leg.
pub fn mitmproxy_reads_luring_har(dir: &TempDir, flows: &Path) {
    let (har, back, back_flows) = (
        dir.path("luring.har"),
        dir.path("back.mitm"),
        dir.path("back.flows"),
    );
    luring_ok(&[
        "flows",
        "export",
        flows.to_str().unwrap(),
        "-o",
        har.to_str().unwrap(),
    ]);
    let args = [
        "-n",
        "-q",
        "-r",
        har.to_str().unwrap(),
        "-w",
        back.to_str().unwrap(),
    ];
    let out = run_cmd("mitmdump", &args, b"", WAIT);
    assert!(
        out.ok(),
        "mitmdump could not read luring's HAR: {} {}",
        out.stdout,
        out.stderr
    );
    luring_ok(&[
        "flows",
        "import",
        back.to_str().unwrap(),
        "-o",
        back_flows.to_str().unwrap(),
    ]);
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

/// `luring bench origin` serving mitmproxy's own HAR: every recorded HTTP exchange,
/// asked again by curl, gets the recorded body byte for byte (the gzip one still
/// encoded), checked against the flows luring imported from that HAR.
pub fn bench_origin_replays_the_har(dir: &TempDir, har: &Path, imported: &Path) {
    use std::io::BufRead;
    let mut origin = Command::new(crate::support::bin())
        // the HAR names mitmdump's port; the replay is asked on another one
        .args([
            "bench",
            "origin",
            har.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--ignore-host")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn luring bench origin");
    let mut line = String::new();
    std::io::BufReader::new(origin.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let origin = Kid(origin);
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let (_, recs) = read_flows(imported);
    let mut asked = 0;
    for f in http(&recs) {
        let req = &f.request;
        let Some(resp) = f.response.as_ref().filter(|r| r.status != 101) else {
            continue;
        };
        let body = dir.path("replay-req.bin");
        std::fs::write(&body, &req.body.data).unwrap();
        let data = format!("@{}", body.display());
        let url = format!("http://{addr}{}", req.path);
        // the body's type is part of what a server sees; curl would add its own
        let ctype: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
            .map(|(_, v)| format!("Content-Type: {}", String::from_utf8_lossy(v)))
            .collect();
        let mut args = vec!["-X", &req.method, &url];
        for h in &ctype {
            args.extend_from_slice(&["-H", h]);
        }
        if !req.body.data.is_empty() {
            args.extend_from_slice(&["--data-binary", &data]);
        }
        let out = crate::support::curl(&args);
        assert_eq!(out.status, resp.status, "{}: {}", req.path, out.stderr);
        assert_eq!(
            sha(&out.body),
            sha(&resp.body.data),
            "{}: the replayed body differs from mitmproxy's recording",
            req.path
        );
        asked += 1;
    }
    assert_eq!(asked, 4, "the four HTTP exchanges of the HAR");
    drop(origin);
}
