//! `luring flows export --format har` and `luring flows import` with the real binary:
//! flows -> HAR -> flows round trips, HAR and dump files written by a real mitmdump in
//! reverse mode in front of a small Python origin, and damaged inputs. Loopback only;
//! every wait is bounded.

#[path = "flows_har/mitm.rs"]
mod mitm;
mod support;

use luring::flows::file::{open, FlowWriter};
use luring::flows::record::*;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{run_luring, wait_until, TempDir};

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

/// Runs luring to success (bounded); its stderr.
fn luring_ok(args: &[&str]) -> String {
    let (st, _, err) = run_luring(args, WAIT);
    assert!(
        st.is_some_and(|s| s.success()),
        "luring {args:?} failed: {err}"
    );
    err
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

#[test]
fn real_mitmdump_har_and_dump_import() {
    if !mitm::mitmdump_installed() {
        eprintln!("SKIPPED real_mitmdump_har_and_dump_import: mitmdump is not installed (scripts/test.sh installs mitmproxy with pip)");
        return;
    }
    let dir = TempDir::new("flows-mitm");
    let upload: Vec<u8> = (0..3000u32).map(|i| (i * 131 % 256) as u8).collect();
    let up_path = dir.path("upload.bin");
    std::fs::write(&up_path, &upload).unwrap();
    let (har, dump) = mitm::record_with_mitmdump(&dir, &up_path);
    for (what, input, writer) in [
        ("HAR", &har, "luring flows import (HAR)"),
        ("dump", &dump, "luring flows import (mitmproxy dump)"),
    ] {
        let out = dir.path(&format!("{what}.flows"));
        let err = luring_ok(&[
            "flows",
            "import",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(
            err.contains("imported 5 flow(s), skipped 0"),
            "{what}: {err}"
        );
        mitm::check_mitm_flows(what, &out, &upload, writer);
    }
    mitm::mitmproxy_reads_luring_har(&dir, &dir.path("dump.flows"));
    mitm::bench_origin_replays_the_har(&dir, &har, &dir.path("HAR.flows"));
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

/// Runs `luring flows import INPUT -o OUT`: the exit code and stderr, which never
/// tells of a panic.
fn import_code(input: &Path, out: &Path) -> (Option<i32>, String) {
    let args = [
        "flows",
        "import",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let (st, _, err) = run_luring(&args, WAIT);
    assert!(!err.contains("panicked"), "{err}");
    (st.and_then(|s| s.code()), err)
}

#[test]
fn damaged_dump_gives_its_offset_and_keeps_the_flows_before() {
    let dir = TempDir::new("flows-bad-dump");
    let (p, out) = (dir.path("d.mitm"), dir.path("o.flows"));
    let mut dump = tn_flow("/one");
    let first_len = dump.len();
    dump.extend(tn_flow("/two"));
    std::fs::write(&p, &dump).unwrap();
    let (code, err) = import_code(&p, &out);
    assert_eq!(code, Some(0), "{err}");
    let (_, recs) = read_flows(&out);
    let f = http(&recs)[1];
    let got = (
        f.request.method.as_str(),
        f.request.authority.as_str(),
        &f.request.body.data[..],
    );
    assert_eq!(got, ("PUT", "a.test", &b"\x00\xff:,}"[..]));
    std::fs::write(&p, &dump[..dump.len() - 7]).unwrap();
    let (code, err) = import_code(&p, &out);
    assert_eq!(code, Some(1), "{err}");
    let at = format!("damaged dump at byte {first_len}");
    assert!(
        err.contains(&at) && err.contains("1 flow(s) before it"),
        "{err}"
    );
    assert_eq!(
        http(&read_flows(&out).1).len(),
        1,
        "the flow before the damage is kept"
    );
}

#[test]
fn truncated_har_and_garbage_give_clear_errors() {
    let dir = TempDir::new("flows-bad-har");
    let (src, har, out) = (dir.path("s.flows"), dir.path("s.har"), dir.path("o.flows"));
    let mut w = FlowWriter::new(std::fs::File::create(&src).unwrap(), &Meta::default()).unwrap();
    for r in sample_records() {
        w.write(&r).unwrap();
    }
    drop(w);
    luring_ok(&[
        "flows",
        "export",
        src.to_str().unwrap(),
        "-o",
        har.to_str().unwrap(),
    ]);
    let text = std::fs::read(&har).unwrap();
    let second = text
        .windows(17)
        .position(|w| w == b"\"_luringFlowId\":2")
        .unwrap();
    std::fs::write(&har, &text[..second]).unwrap();
    let (code, err) = import_code(&har, &out);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("truncated or not valid JSON") && err.contains("line"),
        "{err}"
    );
    assert_eq!(
        http(&read_flows(&out).1).len(),
        1,
        "the entry before the cut is kept"
    );
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
        let (code, err) = import_code(&p, &out);
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
