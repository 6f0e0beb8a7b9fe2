//! The bundled sample recording (made in code, so it never goes stale against the
//! format) and `luring bench` with no subcommand: the sample replayed directly against
//! a replay origin and through a luring in reverse mode, both started here.

use crate::flows::record::{field, BodyRec, HttpFlow, RequestRec, ResponseRec, Times};
use serde_bytes::ByteBuf;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn body(b: &[u8]) -> BodyRec {
    BodyRec {
        data: ByteBuf::from(b.to_vec()),
        size: b.len() as u64,
        cut: false,
    }
}

fn flow(i: u64, method: &str, path: &str, req_body: &[u8], resp: ResponseRec) -> HttpFlow {
    let t = 1_700_000_000_000_000_000 + i * 10_000_000;
    HttpFlow {
        id: i,
        conn: 1 + i / 4,
        mode: "regular".into(),
        request: RequestRec {
            method: method.into(),
            scheme: "https".into(),
            authority: "shop.example".into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers: vec![
                field("Host", "shop.example"),
                field("User-Agent", "curl/8.5.0"),
                field("Accept", "*/*"),
            ],
            body: body(req_body),
            trailers: vec![],
        },
        response: Some(resp),
        times: Times {
            request_start: t,
            upstream_connected: 0,
            response_head: t + 400_000,
            end: t + 500_000,
        },
        ..Default::default()
    }
}

fn resp(status: u16, reason: &str, headers: &[(&str, &str)], b: &[u8]) -> ResponseRec {
    let mut h: Vec<_> = headers.iter().map(|(n, v)| field(n, v)).collect();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        h.push(field("Content-Length", b.len().to_string()));
    }
    ResponseRec {
        status,
        reason: reason.into(),
        version: "HTTP/1.1".into(),
        headers: h,
        body: body(b),
        ..Default::default()
    }
}

/// The sample: a page, JSON, a gzip'd script, a chunked response with trailers, a
/// POST, a 404, a HEAD and a redirect, 10 ms apart.
pub fn flows() -> Vec<HttpFlow> {
    let page: Vec<u8> = b"<!doctype html><title>shop</title>"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'x', 990))
        .collect();
    let js = b"console.log('hello from the sample');\n".repeat(20);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&js);
    let gz = gz.finish().unwrap_or_default();
    let html = [("Content-Type", "text/html; charset=utf-8")];
    let json = [("Content-Type", "application/json")];
    let mut chunked = resp(
        200,
        "OK",
        &[
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
        ],
        b"streamed body\n",
    );
    chunked.trailers = vec![field("X-Checksum", "abc123")];
    let mut head = resp(200, "OK", &html, b"");
    head.headers.retain(|f| &f.0[..] != b"Content-Length");
    head.headers
        .push(field("Content-Length", page.len().to_string()));
    vec![
        flow(0, "GET", "/", b"", resp(200, "OK", &html, &page)),
        flow(
            1,
            "GET",
            "/api/items?page=1",
            b"",
            resp(200, "OK", &json, br#"{"items":[1,2,3]}"#),
        ),
        flow(
            2,
            "GET",
            "/static/app.js",
            b"",
            resp(
                200,
                "OK",
                &[
                    ("Content-Type", "text/javascript"),
                    ("Content-Encoding", "gzip"),
                ],
                &gz,
            ),
        ),
        flow(3, "GET", "/stream", b"", chunked),
        flow(
            4,
            "POST",
            "/api/cart",
            br#"{"item":2}"#,
            resp(201, "Created", &json, br#"{"ok":true}"#),
        ),
        flow(
            5,
            "GET",
            "/img/missing.png",
            b"",
            resp(404, "Not Found", &html, b"not here"),
        ),
        flow(6, "HEAD", "/", b"", head),
        flow(
            7,
            "GET",
            "/old",
            b"",
            resp(302, "Found", &[("Location", "/")], b""),
        ),
    ]
}

/// A child process killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `exe args`, and reads its stdout (or stderr) until a line containing
/// `marker`; returns the child and the word after the marker (an address).
fn spawn_until(args: &[&str], marker: &str, on_stderr: bool) -> Result<(Kid, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    if on_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    }
    let mut kid = Kid(cmd.spawn().map_err(|e| e.to_string())?);
    let pipe: Box<dyn std::io::Read + Send> = if on_stderr {
        Box::new(kid.0.stderr.take().ok_or("no stderr")?)
    } else {
        Box::new(kid.0.stdout.take().ok_or("no stdout")?)
    };
    let mut lines = BufReader::new(pipe).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(rest) = line.split(marker).nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("").to_string();
            // keep draining so the child never blocks on a full pipe
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((kid, addr));
        }
    }
    Err(format!(
        "{} exited before saying {marker:?}",
        args.join(" ")
    ))
}

/// `luring bench`: the sample through luring and directly, one table.
pub fn demo(rate: f64, duration: Duration) -> Result<(), String> {
    let path =
        std::env::temp_dir().join(format!("luring-bench-sample-{}.flows", std::process::id()));
    super::input::write(&path, &flows())?;
    let r = demo_with(&path, rate, duration);
    let _ = std::fs::remove_file(&path);
    r
}

fn demo_with(path: &std::path::Path, rate: f64, duration: Duration) -> Result<(), String> {
    let p = path.to_str().ok_or("temp path is not UTF-8")?;
    let (_origin, oaddr) = spawn_until(
        &["bench", "origin", p, "--listen", "127.0.0.1:0"],
        "listening on ",
        false,
    )?;
    let mode = format!("reverse:http://{oaddr}");
    let (luring, laddr) = spawn_until(
        &[
            "run",
            "--mode",
            &mode,
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--keep-host-header",
        ],
        "luring listening on ",
        true,
    )?;
    let args = super::run::RunArgs {
        file: path.to_path_buf(),
        targets: vec![
            format!("direct=http://{oaddr}"),
            format!("luring=http://{laddr}"),
        ],
        proxies: vec![],
        cacert: vec![],
        insecure: false,
        check_bodies: false,
        rate: Some(rate.to_string()),
        step: None,
        poisson: false,
        speed: None,
        max_gap: Duration::from_secs(1),
        connections: None,
        duration,
        once: false,
        warmup: Duration::from_secs(1),
        rounds: 1,
        pids: vec![format!("luring={}", luring.0.id())],
        headers: vec![],
        conn_mode: "pool".into(),
        streams: 1,
        seed: 1,
        timeout: Duration::from_secs(5),
        report: None,
    };
    let _ = writeln!(
        std::io::stderr(),
        "# luring bench: the bundled sample ({} flows) at {rate} req/s for {:?} per target, directly against a replay origin ({oaddr}) and through luring --mode reverse ({laddr})",
        flows().len(),
        duration
    );
    let targets = super::run::targets_of(&args)?;
    let rec = super::input::load(path)?;
    let reports = super::run::measure(&args, &rec.flows, &targets)?;
    super::report::table(&reports, &mut std::io::stdout().lock()).map_err(|e| e.to_string())
}
