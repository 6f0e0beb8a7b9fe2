//! `luring flows show|stats|export --format jsonl` run as a user would, on flow files
//! written here with `FlowWriter`; the filter table checked against mitmproxy itself.

mod flows_support;

use flows_support::*;
use luring::flows::file::FlowWriter;
use luring::flows::record::*;
use std::io::BufRead;
use std::process::{Command, Output, Stdio};

fn luring(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_luring"))
        .args(args)
        .output()
        .expect("run luring")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// stdout lines without their first word (the local time, which depends on the zone).
fn lines_without_time(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((t, rest)) if !l.starts_with('#') => {
                assert!(
                    t.len() == 12 && t.as_bytes()[8] == b'.',
                    "time {t:?} in {l:?}"
                );
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .collect()
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn show_prints_one_line_per_flow() {
    let dir = TempDir::new("show");
    let (p, _) = sample_file(&dir);
    let out = luring(&["flows", "show", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("{}", text(&out.stdout));
    let lines = lines_without_time(&out);
    assert_eq!(
        lines.len(),
        14,
        "13 flows and a drops line:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        lines[0],
        "10.1.2.3:5001 GET https://api.example.com/v1/items?page=2 << 200 OK 0b/15b 5ms"
    );
    assert_eq!(
        lines[2],
        "192.168.0.7:40000 GET http://shop.test:8443/cart << 404 Not Found 0b/0b 5ms"
    );
    let gz = "10.1.2.3:5001 GET https://named.test/index.html << 200 OK 0b/";
    assert!(lines[3].starts_with(gz), "{}", lines[3]);
    assert_eq!(
        lines[6],
        "10.1.2.3:5001 POST https://upload.test/raw << - 4b/0b - error: connection reset by peer"
    );
    assert!(
        lines[7].ends_with("<< 101 Switching Protocols 0b/0b 5ms ws 3 msgs"),
        "{}",
        lines[7]
    );
    assert!(lines[8].ends_with("(answered by luring)"), "{}", lines[8]);
    assert_eq!(
        lines[11],
        "10.1.2.3:5010 TUNNEL connect secure.test:443 1.5k/34.0k 1200ms"
    );
    assert_eq!(lines[12], "# 12 flows dropped by the recorder");
    assert_eq!(
        lines[13],
        "10.9.9.9:6000 TUNNEL tls-passthrough bank.test:443 0b/0b - error: reset"
    );
}

#[test]
fn filter_selects_in_show_stats_and_export() {
    let dir = TempDir::new("filter");
    let (p, _) = sample_file(&dir);
    let f = p.to_str().unwrap();
    let out = luring(&[
        "flows",
        "show",
        f,
        "--filter",
        "~d api.example.com & ~m POST & ~c 500",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = lines_without_time(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("POST https://api.example.com/v1/login << 500"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "# 12 flows dropped by the recorder");

    let out = luring(&["flows", "stats", f, "--filter", "~d cdn.example.com"]);
    let s = squeeze(&text(&out.stdout));
    assert!(s.starts_with("flows: 2 (2 http, 0 tunnels)"), "{s}");
    assert!(
        s.contains("cdn.example.com 2") && !s.contains("api.example.com"),
        "{s}"
    );

    let out = luring(&[
        "flows",
        "export",
        f,
        "--format",
        "jsonl",
        "--filter",
        "~websocket | ~tcp",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(flow_ids(&text(&out.stdout)), vec![8, 10, 11]);
}

#[test]
fn a_bad_filter_says_where() {
    let dir = TempDir::new("badfilter");
    let (p, _) = sample_file(&dir);
    for cmd in ["show", "stats"] {
        let out = luring(&["flows", cmd, p.to_str().unwrap(), "--filter", "~m GET & ~d"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        let e = text(&out.stderr);
        assert!(
            e.contains("bad filter at column 12: ~d needs a regex"),
            "{e}"
        );
        let caret = format!("\n  ~m GET & ~d\n  {}^", " ".repeat(11));
        assert!(e.contains(&caret), "{e}");
    }
}

#[test]
fn stats_counts_and_percentiles() {
    let dir = TempDir::new("stats");
    let (p, _) = sample_file(&dir);
    let out = luring(&["flows", "stats", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let raw = text(&out.stdout);
    eprintln!("{raw}");
    let s = squeeze(&raw);
    assert!(
        s.starts_with("flows: 13 (11 http, 2 tunnels); dropped by the recorder: 12"),
        "{raw}"
    );
    for want in [
        "host flows api.example.com 4 cdn.example.com 2",
        "method flows GET 8 POST 2 DELETE 1",
        "200 5",
        "2xx 6",
        "4xx 1",
        "5xx 1",
        "error, no response 1",
        "no response 1",
        "protocol flows HTTP/1.0 1 HTTP/1.1 7 HTTP/2 2 tunnel 2 websocket 1",
        "1xx 1",
        "duration 10 5.0ms 5.0ms 1200.0ms 1200.0ms",
        "request body 11 0b 4b 18b 18b",
    ] {
        assert!(s.contains(want), "{want:?} missing in\n{raw}");
    }
}

/// The ids of the flow lines of a jsonl export.
fn flow_ids(jsonl: &str) -> Vec<u64> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect(l))
        .filter(|v| v["type"] == "http" || v["type"] == "tunnel")
        .map(|v| v["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn export_jsonl_one_object_per_line() {
    let dir = TempDir::new("jsonl");
    let (p, _) = sample_file(&dir);
    let o = dir.path("out.jsonl");
    let out = luring(&[
        "flows",
        "export",
        p.to_str().unwrap(),
        "--format",
        "jsonl",
        "-o",
        o.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let all = std::fs::read_to_string(&o).unwrap();
    let v: Vec<serde_json::Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["type"], "meta");
    assert_eq!(v[0]["writer"], "flows_cli test");
    assert_eq!(
        flow_ids(&all),
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 10, 11]
    );
    assert_eq!(
        v[1]["request"]["url"],
        "https://api.example.com/v1/items?page=2"
    );
    assert_eq!(v[1]["response"]["body"]["text"], r#"{"items":[1,2]}"#);
    assert_eq!(
        v[1]["response"]["headers"][1],
        serde_json::json!(["Server", "nginx"])
    );
    assert_eq!(
        v[7]["request"]["body"],
        serde_json::json!({"text": "AP/+AQ==", "encoding": "base64", "size": 4, "cut": false})
    );
    assert_eq!(v[7]["error"], "connection reset by peer");
    assert_eq!(v[8]["websocket"][2]["text"], "tick 2");
    assert_eq!(v[12]["chunks"][1]["text"], "server bytes");
    assert_eq!(v[13]["type"], "drops");
    assert_eq!(v[13]["dropped"], 12);

    // --filter applies to the HAR export too
    let out = luring(&[
        "flows",
        "export",
        p.to_str().unwrap(),
        "--format",
        "har",
        "--filter",
        "~m POST",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let har: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["request"]["method"] == "POST"));
    let out = luring(&["flows", "export", p.to_str().unwrap(), "--format", "xml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown export format \"xml\""));
}

#[test]
fn a_damaged_file_shows_the_flows_before_it_then_the_offset() {
    let dir = TempDir::new("damaged");
    let (p, offsets) = sample_file(&dir);
    let whole = std::fs::read(&p).unwrap();
    let f = p.to_str().unwrap();

    // Cut inside the sixth flow: five flows, then the error.
    std::fs::write(&p, &whole[..offsets[5] as usize + 7]).unwrap();
    let out = luring(&["flows", "show", f]);
    assert_eq!(out.status.code(), Some(1));
    let lines = lines_without_time(&out);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines[4].contains("https://cdn.example.com/app.js"),
        "{lines:?}"
    );
    let e = text(&out.stderr);
    assert!(
        e.contains(&format!("truncated record at offset {}", offsets[5])),
        "{e}"
    );
    let out = luring(&["flows", "stats", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("flows: 5 (5 http, 0 tunnels)"));

    // A flipped byte in the fourth flow's payload: three flows.
    let mut bad = whole.clone();
    bad[offsets[3] as usize + 20] ^= 0x40;
    std::fs::write(&p, &bad).unwrap();
    let out = luring(&["flows", "export", f, "--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(flow_ids(&text(&out.stdout)), vec![1, 2, 3]);
    let e = text(&out.stderr);
    assert!(
        e.contains(&format!(
            "corrupt record at offset {}: checksum mismatch",
            offsets[3]
        )),
        "{e}"
    );

    std::fs::write(&p, b"{\"log\": {}}").unwrap();
    let out = luring(&["flows", "show", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a luring flow file"));
}

/// Filter expressions checked against mitmproxy: each must select the same flows of
/// the sample (or be refused by both).
const TABLE: &[&str] = &[
    "~d example.com",
    "~d EXAMPLE.COM",
    r"~d ^api\.example\.com$",
    "~d named.test",
    "~d ^10.0.0.9$",
    "~u /v1/items",
    "~u ^https://api.example.com/v1/",
    "items",
    "~u :8443/",
    "~u ^http://ws.test/socket$",
    r#"~u "v1\\.items""#,
    "~m POST",
    "~m post",
    "~m ^GET$",
    "~c 200",
    "~c 404",
    "~c 101",
    "~h \"Content-Type: application/json\"",
    "~h content-type",
    "~hq ^X-Trace:",
    "~hs ^Server: nginx",
    "~hq \"^Upgrade: websocket\\r$\"",
    "~b secret",
    "~bq token",
    "~bs \"gzip inside\"",
    r"~b \xff\xfe",
    "~b tick",
    "~bs tick",
    "~bq hello",
    "~bs server",
    "~t json",
    "~tq form",
    "~ts image",
    "~t TEXT",
    "~a",
    "~websocket",
    "~e",
    "~q",
    "~s",
    "~http",
    "~tcp",
    "~all",
    "!~s",
    "~d api.example.com & ~m POST & ~c 500",
    "~m GET | ~m POST",
    // mitmproxy wants a space before ")" after an operator without argument.
    "!(~m GET | ~tcp )",
    "~d example.com ~c 200",
    "~m DELETE | ~c 204 ~hs nginx",
    "~src 10.1.2.3",
    "~src ^192",
    "~dst :443$",
    "~meta \"^user: bob$\"",
    "~m GET & !~d example.com & !~e",
    "!~http & ~e",
    "~q&~s",
    "~c200",
    "~bogus",
    "~d",
    "(~m GET",
];

fn mitmproxy_importable() -> bool {
    Command::new("python3")
        .args(["-c", "import mitmproxy.flowfilter"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn mitmproxy_agrees_on_the_filter_table() {
    if !mitmproxy_importable() {
        eprintln!(
            "SKIPPED mitmproxy_agrees_on_the_filter_table: python3 cannot import mitmproxy \
             (pip install mitmproxy to run it)"
        );
        return;
    }
    let dir = TempDir::new("mitmproxy");
    let (p, _) = sample_file(&dir);
    let f = p.to_str().unwrap();
    let all = dir.path("all.jsonl");
    let out = luring(&[
        "flows",
        "export",
        f,
        "--format",
        "jsonl",
        "-o",
        all.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exprs = dir.path("exprs.txt");
    std::fs::write(&exprs, TABLE.join("\n")).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/flowfilter_vs_mitmproxy.py"
    );
    let py = Command::new("python3")
        .args([script, all.to_str().unwrap(), exprs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();

    let mut disagree = Vec::new();
    let mut selective = 0;
    for expr in TABLE {
        let out = luring(&["flows", "export", f, "--format", "jsonl", "--filter", expr]);
        let ours = match out.status.code() {
            Some(0) => serde_json::json!(sorted(flow_ids(&text(&out.stdout)))),
            _ => serde_json::json!("error"),
        };
        let n = ours.as_array().map_or(0, |a| a.len());
        selective += usize::from(n > 0 && n < 13);
        if ours != theirs[expr] {
            disagree.push(format!(
                "{expr:?}: luring {ours}, mitmproxy {}",
                theirs[expr]
            ));
        }
    }
    assert!(
        disagree.is_empty(),
        "luring and mitmproxy disagree:\n{}",
        disagree.join("\n")
    );
    assert!(
        selective > 40,
        "the table must tell flows apart ({selective} selective rows)"
    );
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Peak resident memory of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 100,000 flows carrying 2 KiB bodies each (200 MiB decoded) go through `show`
/// by a named pipe, so nothing lands on disk; its peak memory stays small.
#[test]
fn a_hundred_thousand_flows_show_in_flat_memory() {
    const N: u64 = 100_000;
    let dir = TempDir::new("big");
    let fifo = dir.path("big.flows");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_luring"))
        .args([
            "flows",
            "show",
            fifo.to_str().unwrap(),
            "--filter",
            "~m GET",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || std::io::BufReader::new(stdout).lines().count());

    let meta = Meta::default();
    let pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut w = FlowWriter::new(std::io::BufWriter::new(pipe), &meta).unwrap();
    let mut f = http(0, "GET", "https", "big.test", "/x");
    f.response = resp(200, "OK", &[], &[b'y'; 2048]);
    f.request.body = body(&[b'x'; 2048]);
    for id in 0..N {
        f.id = id;
        f.request.method = if id % 2 == 0 { "GET" } else { "PUT" }.into();
        w.write(&Record::Http(Box::new(f.clone()))).unwrap();
    }
    w.flush().unwrap();
    // The reader has taken all but the last pipe-full; it cannot exit before the
    // pipe closes, so its peak is still readable.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let peak = vm_hwm_kib(pid);
    drop(w);
    let status = child.wait().unwrap();
    let lines = counter.join().unwrap();
    assert!(status.success(), "exit {status:?}");
    assert_eq!(lines as u64, N / 2);
    let peak = peak.expect("VmHWM of the running reader");
    eprintln!("peak RSS of show over {N} flows: {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB for {N} flows");
}

/// `luring flows show FILE | head -1`: the reader going away is not an error.
#[test]
fn a_closed_stdout_ends_show_quietly() {
    let dir = TempDir::new("pipe");
    let p = dir.path("many.flows");
    let path = format!("/{}", "p".repeat(300));
    let recs: Vec<Record> = (0..3000)
        .map(|id| Record::Http(Box::new(http(id, "GET", "https", "a.test", &path))))
        .collect();
    write_file(&p, &recs);
    let mut child = Command::new(env!("CARGO_BIN_EXE_luring"))
        .args(["flows", "show", p.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("https://a.test/ppp"), "{first}");
    // The reader is dropped here with a megabyte still to come.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// A record kind from a newer luring is skipped, and stderr says so.
#[test]
fn unknown_record_kinds_are_skipped_and_counted() {
    let dir = TempDir::new("unknown");
    let p = dir.path("newer.flows");
    write_file(
        &p,
        &[Record::Http(Box::new(http(
            1, "GET", "https", "a.test", "/",
        )))],
    );
    let payload = b"\x80"; // an empty MessagePack map
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[9, 0, 0, 0]);
    crc.update(payload);
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&[9, 0, 0, 0]);
    frame.extend_from_slice(&crc.finalize().to_le_bytes());
    frame.extend_from_slice(payload);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(&frame);
    std::fs::write(&p, bytes).unwrap();
    let out = luring(&["flows", "show", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    let e = text(&out.stderr);
    assert!(
        e.contains("skipped 1 records of kinds this luring does not know"),
        "{e}"
    );
}

#[test]
fn a_bad_filter_creates_no_export_file() {
    let dir = TempDir::new("badexport");
    let (p, _) = sample_file(&dir);
    let o = dir.path("out.jsonl");
    let args = [
        "flows",
        "export",
        p.to_str().unwrap(),
        "--format",
        "jsonl",
        "-o",
        o.to_str().unwrap(),
    ];
    let out = luring(&[&args[..], &["--filter", "~c"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("~c needs a status code"),
        "{}",
        text(&out.stderr)
    );
    assert!(!o.exists());
}
