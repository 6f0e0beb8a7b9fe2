use super::text::*;
use crate::flows::file::{FlowReader, FlowWriter};
use crate::flows::import::import;
use crate::flows::record::*;
use serde_bytes::ByteBuf;

fn gzip(data: &[u8]) -> Vec<u8> {
    encode_content("gzip", data).unwrap()
}

/// A flow with everything HAR has to carry, binary bodies included.
fn rich(id: u64) -> HttpFlow {
    let png: Vec<u8> = (0..=255u8)
        .chain([0x89, b'P', b'N', b'G', 0, 0xff])
        .collect();
    HttpFlow {
        id,
        conn: 3,
        stream: 5,
        client: "127.0.0.1:40000".into(),
        server: "[::1]:8443".into(),
        mode: "regular".into(),
        client_tls: Some(TlsRec {
            sni: "a.test".into(),
            alpn: "h2".into(),
            version: "TLSv1.3".into(),
            ja4: "t13d".into(),
        }),
        request: RequestRec {
            method: "POST".into(),
            scheme: "https".into(),
            authority: "a.test:8443".into(),
            path: "/up?x=1&y=%20".into(),
            version: "HTTP/2".into(),
            headers: vec![
                field("content-type", "application/octet-stream"),
                field("x-bin", [b'a', 0xE9, 0xFF]),
                field("x-utf8", "héllo"),
            ],
            body: BodyRec {
                data: ByteBuf::from(png.clone()),
                size: png.len() as u64,
                cut: false,
            },
            trailers: vec![field("grpc-status", "0")],
        },
        response: Some(ResponseRec {
            status: 200,
            reason: "OK".into(),
            version: "HTTP/2".into(),
            headers: vec![
                field("content-type", "text/plain; charset=utf-8"),
                field("content-encoding", "gzip"),
            ],
            body: {
                let z = gzip("héllo wörld ".repeat(50).as_bytes());
                BodyRec {
                    size: z.len() as u64,
                    data: ByteBuf::from(z),
                    cut: false,
                }
            },
            trailers: vec![],
            by_proxy: false,
        }),
        times: Times {
            request_start: 1_700_000_000_123_456_789,
            upstream_connected: 1_700_000_000_124_000_000,
            response_head: 1_700_000_000_200_000_001,
            end: 1_700_000_000_300_000_002,
        },
        error: None,
        websocket: vec![],
        websocket_dropped: 0,
        notes: vec![("plugin".into(), "seen".into())],
    }
}

/// A WebSocket flow: text, binary, a text message cut mid-character, a close.
fn ws_flow(id: u64) -> HttpFlow {
    let msg = |from_client, opcode, data: &[u8], size| WsMessageRec {
        from_client,
        opcode,
        ts: 1_700_000_001_000_000_007 + id,
        data: ByteBuf::from(data.to_vec()),
        size,
    };
    HttpFlow {
        id,
        conn: 9,
        request: RequestRec {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "ws.test".into(),
            path: "/chat".into(),
            version: "HTTP/1.1".into(),
            headers: vec![field("Upgrade", "websocket")],
            ..Default::default()
        },
        response: Some(ResponseRec {
            status: 101,
            reason: "Switching Protocols".into(),
            version: "HTTP/1.1".into(),
            headers: vec![field("Upgrade", "websocket")],
            ..Default::default()
        }),
        websocket: vec![
            msg(true, 1, b"hello", 5),
            msg(false, 2, &[0, 1, 2, 255], 4),
            msg(false, 1, &"é".as_bytes()[..1], 100),
            msg(true, 8, &[3, 232], 2),
        ],
        websocket_dropped: 2,
        ..Default::default()
    }
}

/// Odd ones: no response and an error, a cut body, a brotli body, an OPTIONS * target.
fn odd_flows() -> Vec<HttpFlow> {
    let mut failed = rich(20);
    failed.response = None;
    failed.error = Some("upstream refused".into());
    let mut cut = rich(21);
    cut.request.body.size = 10_000_000;
    cut.request.body.cut = true;
    let r = cut.response.as_mut().unwrap();
    r.body.size = 99_999;
    r.body.cut = true;
    r.by_proxy = true;
    let mut br = rich(22);
    let r = br.response.as_mut().unwrap();
    r.headers = vec![field("Content-Encoding", "br")];
    r.body = BodyRec {
        data: ByteBuf::from(vec![0x1b, 0, 0xff]),
        size: 3,
        cut: false,
    };
    let mut star = rich(23);
    star.request.method = "OPTIONS".into();
    star.request.path = "*".into();
    star.request.body = BodyRec::default();
    vec![failed, cut, br, star]
}

fn flow_file(recs: &[Record]) -> Vec<u8> {
    let meta = Meta {
        writer: "luring 0.1.0".into(),
        started_ns: 5,
        redacted: vec!["cookie".into()],
        max_body: 1 << 20,
    };
    let mut w = FlowWriter::new(Vec::new(), &meta).unwrap();
    for r in recs {
        w.write(r).unwrap();
    }
    w.into_inner()
}

fn records(file: &[u8]) -> Vec<Record> {
    FlowReader::new(file).unwrap().map(Result::unwrap).collect()
}

fn to_har(file: &[u8]) -> (Vec<u8>, super::export::ExportReport) {
    let mut out = Vec::new();
    let (rep, r) = super::export::export(FlowReader::new(file).unwrap(), &mut out, &mut |_| true);
    r.unwrap();
    (out, rep)
}

fn from_har(har: &[u8]) -> (Vec<Record>, crate::flows::import::ImportReport) {
    let mut out = Vec::new();
    let (rep, r) = import(har, &mut out);
    r.unwrap();
    (records(&out), rep)
}

#[test]
fn flows_har_flows_round_trip_keeps_every_field() {
    let mut flows = vec![rich(1), ws_flow(2)];
    flows.extend(odd_flows());
    let mut recs: Vec<Record> = flows
        .iter()
        .cloned()
        .map(|f| Record::Http(Box::new(f)))
        .collect();
    recs.push(Record::Tunnel(Box::new(TunnelFlow {
        id: 30,
        ..Default::default()
    })));
    recs.push(Record::Drops(Drops {
        dropped: 4,
        total: 4,
        ts: 1,
    }));
    let (har, rep) = to_har(&flow_file(&recs));
    let v: serde_json::Value = serde_json::from_slice(&har).unwrap();
    assert_eq!(v["log"]["version"], "1.2");
    assert_eq!(v["log"]["entries"].as_array().unwrap().len(), flows.len());
    assert_eq!(rep.entries, flows.len() as u64);
    assert_eq!(rep.tunnels_skipped, 1);
    assert_eq!(rep.recorder_dropped, 4);
    assert_eq!(rep.bodies_cut, 2);
    assert_eq!(rep.ws_cut, 1);
    assert_eq!(rep.left_encoded, 2, "br, and the cut gzip body");
    let (back, irep) = from_har(&har);
    assert_eq!(irep.imported, flows.len() as u64);
    let Record::Meta(m) = &back[0] else {
        panic!("no meta first")
    };
    assert_eq!(m.writer, "luring flows import (HAR)");
    assert_eq!(
        (m.redacted.clone(), m.max_body),
        (vec!["cookie".to_string()], 1 << 20)
    );
    for (want, got) in flows.iter().zip(&back[1..]) {
        assert_eq!(
            &Record::Http(Box::new(want.clone())),
            got,
            "flow {}",
            want.id
        );
    }
}

#[test]
fn export_writes_what_viewers_read() {
    let (har, _) = to_har(&flow_file(&[
        Record::Http(Box::new(rich(1))),
        Record::Http(Box::new(ws_flow(2))),
    ]));
    let v: serde_json::Value = serde_json::from_slice(&har).unwrap();
    let e = &v["log"]["entries"][0];
    assert_eq!(e["startedDateTime"], "2023-11-14T22:13:20.123Z");
    assert_eq!(e["request"]["url"], "https://a.test:8443/up?x=1&y=%20");
    assert_eq!(e["request"]["postData"]["encoding"], "base64");
    assert_eq!(e["response"]["content"]["text"], "héllo wörld ".repeat(50));
    assert!(e["response"]["content"].get("encoding").is_none());
    assert_eq!(e["timings"]["connect"], -1);
    assert_eq!(e["response"]["status"], 200);
    assert_eq!(e["connection"], "3");
    assert_eq!(e["serverIPAddress"], "::1");
    assert_eq!(e["_luringFlowId"], 1);
    let ws = &v["log"]["entries"][1]["_webSocketMessages"];
    assert_eq!(ws[0]["type"], "send");
    assert_eq!(ws[0]["data"], "hello");
    assert_eq!(ws[1]["data"], "AAEC/w==");
    assert_eq!(ws[2]["_luringEncoding"], "base64");
}

/// A HAR as mitmproxy's savehar writes it: decoded bodies, latin-1 text for bodies
/// without a charset, surrogate escapes for undecodable JSON bytes.
#[test]
fn mitmproxy_style_har_maps_back_to_wire_bytes() {
    let har = r#"{"log":{"version":"1.2","creator":{"name":"mitmproxy","version":"11"},"pages":[],
      "entries":[{"startedDateTime":"2024-05-01T10:00:00.250000+00:00","time":12.5,
        "request":{"method":"POST","url":"http://127.0.0.1:9/p?q=1","httpVersion":"HTTP/1.1",
          "headers":[{"name":"Content-Type","value":"application/octet-stream"},{"name":"Cookie","value":"a=b"}],
          "cookies":[{"name":"a","value":"b"}],"queryString":[],"headersSize":10,"bodySize":3,
          "postData":{"mimeType":"application/octet-stream","text":"\u0000ÿé","params":[]}},
        "response":{"status":200,"statusText":"OK","httpVersion":"HTTP/1.1",
          "headers":[{"name":"Content-Type","value":"application/json"},{"name":"Content-Encoding","value":"gzip"},{"name":"Content-Length","value":"999"}],
          "cookies":[],"content":{"size":5,"compression":0,"mimeType":"application/json","text":"{\"a\":\"\udcff\"}"},
          "redirectURL":"","headersSize":1,"bodySize":30},
        "cache":{},"timings":{"connect":-1,"ssl":-1,"send":1,"receive":1,"wait":10},"serverIPAddress":"127.0.0.1"}]}}"#;
    let (back, rep) = from_har(har.as_bytes());
    assert_eq!(rep.imported, 1);
    assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
    let Record::Http(f) = &back[1] else {
        panic!("not http")
    };
    assert_eq!(&f.request.body.data[..], b"\x00\xff\xe9");
    assert_eq!(
        (f.request.authority.as_str(), f.request.path.as_str()),
        ("127.0.0.1:9", "/p?q=1")
    );
    assert_eq!(f.server, "127.0.0.1:9");
    assert_eq!(f.times.request_start, 1_714_557_600_250_000_000);
    assert_eq!(f.times.end, 1_714_557_600_262_500_000);
    let r = f.response.as_ref().unwrap();
    assert_eq!(
        decode_content("gzip", &r.body.data).unwrap(),
        b"{\"a\":\"\xff\"}"
    );
    assert_eq!(
        crate::flows::har::export::header(&r.headers, "content-length"),
        Some(&*r.body.data.len().to_string())
    );
}

#[test]
fn sanitized_chrome_export_is_warned_about() {
    let har = r#"{"log":{"creator":{"name":"WebInspector","version":"537.36"},"entries":[
      {"request":{"method":"GET","url":"https://x.test/","headers":[{"name":":path","value":"/"}],"cookies":[{"name":"sid","value":"1"}]},
       "response":{"status":204,"headers":[],"content":{"size":0}}}]}}"#;
    let (back, rep) = from_har(har.as_bytes());
    assert_eq!(rep.warnings.len(), 1, "{:?}", rep.warnings);
    assert!(rep.warnings[0].contains("sanitized"));
    let Record::Http(f) = &back[1] else {
        panic!("not http")
    };
    assert!(f.request.headers.is_empty(), "pseudo-headers are dropped");
    assert_eq!(f.request.version, "HTTP/1.1");
}

#[test]
fn non_http_entries_are_skipped_with_a_reason() {
    let har = r#"{"log":{"entries":[{"request":{"method":"GET","url":"data:image/png;base64,AA=="},"response":{}},
      {"request":{"method":"GET","url":"wss://w.test/s"},"response":{"status":101},
       "_webSocketMessages":[{"type":"receive","time":1700000000.5,"opcode":2,"data":"/w=="}]}]}}"#;
    let (back, rep) = from_har(har.as_bytes());
    assert_eq!((rep.imported, rep.skipped.values().sum::<u64>()), (1, 1));
    let Record::Http(f) = &back[1] else {
        panic!("not http")
    };
    assert_eq!(f.request.scheme, "https");
    assert_eq!(f.websocket[0].data.as_ref(), [0xff]);
    assert_eq!(f.websocket[0].ts, 1_700_000_000_500_000_000);
    assert!(!f.websocket[0].from_client);
}

#[test]
fn truncated_har_is_an_error_and_keeps_flows_before_it() {
    let recs: Vec<Record> = (1..=3).map(|i| Record::Http(Box::new(rich(i)))).collect();
    let (har, _) = to_har(&flow_file(&recs));
    let second = har
        .windows(17)
        .position(|w| w == b"\"_luringFlowId\":2")
        .unwrap();
    for cut in (0..har.len() - 3).step_by(97).chain([second]) {
        let mut out = Vec::new();
        let (rep, r) = import(&har[..cut], &mut out);
        assert!(r.is_err(), "cut at {cut} was accepted");
        if cut == second {
            assert_eq!(rep.imported, 1);
            assert_eq!(records(&out).len(), 2, "meta and the first flow");
        }
    }
    for junk in [
        &b""[..],
        b"   ",
        b"[1,2]",
        b"{\"log\":{}}",
        b"{\"log\":{\"entries\":7}}",
        b"\x00\x01garbage",
    ] {
        let (_, r) = import(junk, Vec::new());
        assert!(r.is_err(), "{junk:?} was accepted");
    }
}

#[test]
fn zlib_compressed_har_is_read() {
    let (har, _) = to_har(&flow_file(&[Record::Http(Box::new(rich(1)))]));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &har).unwrap();
    let (back, rep) = from_har(&z.finish().unwrap());
    assert_eq!(rep.imported, 1);
    assert_eq!(back[1], Record::Http(Box::new(rich(1))));
}

#[test]
fn text_helpers() {
    // WTF-8 of U+DCFF (a Python surrogate escape) is ED B3 BF.
    assert_eq!(
        text_to_bytes(b"a\xed\xb3\xbf\xc3\xa9", Charset::Utf8),
        b"a\xff\xc3\xa9"
    );
    assert_eq!(text_to_bytes("é".as_bytes(), Charset::Latin1), [0xe9]);
    assert_eq!(
        text_to_bytes("€".as_bytes(), Charset::Latin1),
        "€".as_bytes()
    );
    assert_eq!(
        charset_of("text/html; Charset=\"ISO-8859-1\""),
        Some(Charset::Latin1)
    );
    assert_eq!(charset_of("text/html"), None);
    for ns in [
        0,
        951_782_400_000_000_000,
        1_700_000_000_123_000_000,
        4_102_444_800_999_000_000,
    ] {
        assert_eq!(parse_iso8601(&iso8601(ns)), Some(ns));
    }
    assert_eq!(
        parse_iso8601("2024-02-29T23:00:00-01:30"),
        parse_iso8601("2024-03-01T00:30:00Z")
    );
    assert_eq!(parse_iso8601("yesterday"), None);
    assert_eq!(body_text(b"\xe9t\xe9", "text/plain"), ("6XTp".into(), true));
    assert_eq!(
        body_text("été".as_bytes(), "text/plain"),
        ("w6l0w6k=".into(), true)
    );
    assert_eq!(
        body_text("été".as_bytes(), "application/json"),
        ("été".into(), false)
    );
    assert_eq!(
        body_text(b"ascii", "text/plain; charset=latin1"),
        ("ascii".into(), false)
    );
    assert_eq!(
        body_text("été".as_bytes(), "text/plain; charset=latin1"),
        ("w6l0w6k=".into(), true)
    );
}

#[test]
fn chrome_har_without_any_auth_header_gets_the_weaker_warning() {
    let entry = r#"{"request":{"method":"GET","url":"https://x.test/a","headers":[{"name":"accept","value":"*/*"}]},
        "response":{"status":200,"headers":[],"content":{"size":0}}}"#;
    let har = |creator: &str, n: usize| {
        let entries = vec![entry; n].join(",");
        format!(
            r#"{{"log":{{"creator":{{"name":"{creator}","version":"1"}},"entries":[{entries}]}}}}"#
        )
    };
    let (_, rep) = from_har(har("WebInspector", 5).as_bytes());
    assert_eq!(rep.warnings.len(), 1, "{:?}", rep.warnings);
    assert!(rep.warnings[0].contains("if the site uses them"));
    // Fewer entries, or another writer: nothing to say.
    assert!(from_har(har("WebInspector", 4).as_bytes())
        .1
        .warnings
        .is_empty());
    assert!(from_har(har("Firefox", 9).as_bytes()).1.warnings.is_empty());
    let with_cookie = har("WebInspector", 5).replacen("\"accept\"", "\"Cookie\"", 1);
    assert!(from_har(with_cookie.as_bytes()).1.warnings.is_empty());
}

#[test]
fn lenient_input_bom_nulls_and_numeric_strings() {
    let har =
        "\u{feff}{\"log\":{\"entries\":[{\"time\":null,\"timings\":{\"wait\":null,\"send\":\"2\"},\
        \"request\":{\"method\":\"GET\",\"url\":\"http://x.test\",\"bodySize\":null},\
        \"response\":{\"status\":\"200\",\"headers\":[],\"content\":{\"size\":null}}}]}}";
    let (back, rep) = from_har(har.as_bytes());
    assert_eq!(rep.imported, 1);
    let Record::Http(f) = &back[1] else {
        panic!("not http")
    };
    assert_eq!(f.response.as_ref().map(|r| r.status), Some(200));
    assert_eq!(f.request.path, "/");
}
