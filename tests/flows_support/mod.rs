//! Flow files for tests/flows_cli.rs: a sample with one flow of each kind a filter
//! tells apart, written with `FlowWriter`, in temp directories removed afterwards.

use luring::flows::file::{self, FlowWriter};
use luring::flows::record::*;
use serde_bytes::ByteBuf;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A directory removed when the test ends.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("luring-flows-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `recs` as a flow file; the offset at which each record starts.
pub fn write_file(path: &Path, recs: &[Record]) -> Vec<u64> {
    let meta = Meta {
        writer: "flows_cli test".into(),
        started_ns: T0,
        max_body: 1 << 20,
        ..Default::default()
    };
    let mut w = FlowWriter::new(Vec::new(), &meta).unwrap();
    let mut at = (file::FILE_HEADER_LEN + file::encode(&Record::Meta(meta)).unwrap().len()) as u64;
    let mut offsets = Vec::new();
    for r in recs {
        offsets.push(at);
        at += file::encode(r).unwrap().len() as u64;
        w.write(r).unwrap();
    }
    let bytes = w.into_inner();
    assert_eq!(bytes.len() as u64, at, "frames encode the same each time");
    std::fs::write(path, bytes).unwrap();
    offsets
}

pub const T0: u64 = 1_700_000_000_000_000_000;

pub fn body(b: &[u8]) -> BodyRec {
    BodyRec {
        data: ByteBuf::from(b.to_vec()),
        size: b.len() as u64,
        cut: false,
    }
}

pub fn fields(list: &[(&str, &[u8])]) -> Vec<Field> {
    list.iter().map(|(n, v)| field(n, v)).collect()
}

/// An HTTP flow: `id` also sets its start time (T0 + id seconds) and a 5 ms duration.
pub fn http(id: u64, method: &str, scheme: &str, authority: &str, path: &str) -> HttpFlow {
    HttpFlow {
        id,
        conn: id,
        client: "10.1.2.3:5001".into(),
        server: "93.184.216.34:443".into(),
        mode: "regular".into(),
        request: RequestRec {
            method: method.into(),
            scheme: scheme.into(),
            authority: authority.into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            ..Default::default()
        },
        times: Times {
            request_start: T0 + id * 1_000_000_000,
            end: T0 + id * 1_000_000_000 + 5_000_000,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn resp(status: u16, reason: &str, headers: &[(&str, &[u8])], b: &[u8]) -> Option<ResponseRec> {
    Some(ResponseRec {
        status,
        reason: reason.into(),
        version: "HTTP/1.1".into(),
        headers: fields(headers),
        body: body(b),
        ..Default::default()
    })
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(b).unwrap();
    g.finish().unwrap()
}

/// The flows every test here reads: one of each kind a filter tells apart.
pub fn sample() -> Vec<Record> {
    let mut v = Vec::new();
    let mut f = http(1, "GET", "https", "api.example.com", "/v1/items?page=2");
    f.request.headers = fields(&[
        ("Host", b"api.example.com"),
        ("Accept", b"application/json"),
    ]);
    let j: &[(&str, &[u8])] = &[("Content-Type", b"application/json"), ("Server", b"nginx")];
    f.response = resp(200, "OK", j, br#"{"items":[1,2]}"#);
    v.push(f);

    let mut f = http(2, "POST", "https", "api.example.com", "/v1/login");
    let form: &[u8] = b"application/x-www-form-urlencoded";
    f.request.headers = fields(&[("Host", b"api.example.com"), ("Content-Type", form)]);
    f.request.body = body(b"user=bob&token=abc");
    f.response = resp(
        500,
        "Internal Server Error",
        &[("Content-Type", b"text/plain")],
        b"oops",
    );
    f.notes = vec![
        ("user".into(), "bob".into()),
        ("plugin".into(), "auth".into()),
    ];
    v.push(f);

    let mut f = http(3, "GET", "http", "shop.test:8443", "/cart");
    f.request.headers = fields(&[("Host", b"shop.test:8443")]);
    f.response = resp(404, "Not Found", &[], b"");
    f.client = "192.168.0.7:40000".into();
    v.push(f);

    let mut f = http(4, "GET", "https", "10.0.0.9:443", "/index.html");
    f.request.headers = fields(&[("Host", b"named.test")]);
    let h: &[(&str, &[u8])] = &[
        ("Content-Type", b"text/html"),
        ("Content-Encoding", b"gzip"),
    ];
    f.response = resp(200, "OK", h, &gzip(b"<p>gzip inside secret</p>"));
    v.push(f);

    let mut f = http(5, "GET", "https", "cdn.example.com", "/app.js");
    f.request.version = "HTTP/2".into();
    f.request.headers = fields(&[("accept", b"*/*")]);
    f.response = resp(
        200,
        "",
        &[("content-type", b"application/javascript")],
        b"console.log(1)",
    );
    f.response.as_mut().unwrap().version = "HTTP/2".into();
    f.stream = 1;
    v.push(f);

    let mut f = http(6, "GET", "https", "cdn.example.com", "/logo.png");
    f.request.version = "HTTP/2".into();
    f.response = resp(
        200,
        "",
        &[("content-type", b"image/png")],
        b"\x89PNG\xff\xfe",
    );
    f.response.as_mut().unwrap().version = "HTTP/2".into();
    f.stream = 3;
    v.push(f);

    let mut f = http(7, "POST", "https", "upload.test", "/raw");
    let oct: &[u8] = b"application/octet-stream";
    f.request.headers = fields(&[("Host", b"upload.test"), ("Content-Type", oct)]);
    f.request.body = body(b"\x00\xff\xfe\x01");
    f.error = Some("connection reset by peer".into());
    f.server = String::new();
    f.times.end = 0;
    v.push(f);

    v.extend(more_samples());
    v.into_iter()
        .map(|f| Record::Http(Box::new(f)))
        .chain(tunnels())
        .collect()
}

fn more_samples() -> Vec<HttpFlow> {
    let mut v = Vec::new();
    let mut f = http(8, "GET", "http", "ws.test", "/socket");
    f.request.headers = fields(&[
        ("Host", b"ws.test"),
        ("Upgrade", b"websocket"),
        ("Connection", b"Upgrade"),
    ]);
    f.response = resp(
        101,
        "Switching Protocols",
        &[("Upgrade", b"websocket")],
        b"",
    );
    for (from_client, data) in [(true, "hello server"), (false, "tick 1"), (false, "tick 2")] {
        f.websocket.push(WsMessageRec {
            from_client,
            opcode: 1,
            ts: T0 + 8_100_000_000,
            data: ByteBuf::from(data.as_bytes().to_vec()),
            size: data.len() as u64,
        });
    }
    v.push(f);

    let mut f = http(9, "GET", "https", "api.example.com", "/health");
    f.request.version = "HTTP/1.0".into();
    f.response = resp(200, "OK", &[("Content-Type", b"text/css")], b"body{}");
    f.response.as_mut().unwrap().by_proxy = true;
    v.push(f);

    let mut f = http(12, "DELETE", "https", "api.example.com", "/v1/items/7");
    f.request.headers = fields(&[("Host", b"api.example.com"), ("X-Trace", b"abc")]);
    f.response = resp(204, "No Content", &[("Server", b"nginx")], b"");
    v.push(f);

    let mut f = http(13, "GET", "https", "slow.test", "/wait");
    f.request.headers = fields(&[("Host", b"slow.test")]);
    f.times.end = 0;
    v.push(f);
    v
}

fn tunnels() -> Vec<Record> {
    let chunk = |from_client: bool, d: &str| RawChunkRec {
        from_client,
        ts: T0 + 10_500_000_000,
        data: ByteBuf::from(d.as_bytes().to_vec()),
    };
    let t1 = TunnelFlow {
        id: 10,
        client: "10.1.2.3:5010".into(),
        server: "1.2.3.4:443".into(),
        target: "secure.test:443".into(),
        kind: "connect".into(),
        start: T0 + 10_000_000_000,
        end: T0 + 11_200_000_000,
        bytes_up: 1500,
        bytes_down: 34 * 1024,
        chunks: vec![chunk(true, "hello tls"), chunk(false, "server bytes")],
        ..Default::default()
    };
    let t2 = TunnelFlow {
        id: 11,
        client: "10.9.9.9:6000".into(),
        server: "5.6.7.8:443".into(),
        target: "bank.test:443".into(),
        kind: "tls-passthrough".into(),
        start: T0 + 11_000_000_000,
        error: Some("reset".into()),
        ..Default::default()
    };
    let drops = Drops {
        dropped: 12,
        total: 12,
        ts: T0 + 11_000_000_000,
    };
    vec![
        Record::Tunnel(Box::new(t1)),
        Record::Drops(drops),
        Record::Tunnel(Box::new(t2)),
    ]
}

/// The sample as a file in `dir`; the record offsets.
pub fn sample_file(dir: &TempDir) -> (PathBuf, Vec<u64>) {
    let p = dir.path("sample.flows");
    let offsets = write_file(&p, &sample());
    (p, offsets)
}
