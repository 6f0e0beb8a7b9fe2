//! `luring flows export --format jsonl`: one JSON object per line, streamed.
//!
//! Lines have a `type`: "meta" (first), "http", "tunnel" or "drops". Bodies, WebSocket
//! messages and tunnel bytes are `{"text": ..., "size": N, "cut": bool}`, with
//! `"encoding": "base64"` when the bytes are not UTF-8 (so binary survives); header
//! names and values are strings (bytes that are not UTF-8 become U+FFFD).

use super::describe::{self, FlowRef};
use super::record::{BodyRec, Field, HttpFlow, Meta, RequestRec, ResponseRec, TlsRec, TunnelFlow};
use super::scan::{self, Item, ScanError};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

/// Writes every selected flow of `path` to `out` as JSON lines.
pub fn run(path: &Path, filter: Option<&str>, out: &mut dyn Write) -> Result<(), ScanError> {
    let filter = scan::parse_filter(filter)?;
    let r = scan::scan(path, filter.as_ref(), |item| {
        let v = match item {
            Item::Meta(m) => meta(m),
            Item::Flow(FlowRef::Http(h)) => http(h),
            Item::Flow(FlowRef::Tunnel(t)) => tunnel(t),
            Item::Drops(d) => {
                json!({"type": "drops", "dropped": d.dropped, "total": d.total, "ts": d.ts})
            }
        };
        serde_json::to_writer(&mut *out, &v)?;
        out.write_all(b"\n")
    });
    out.flush()?;
    r
}

fn meta(m: &Meta) -> Value {
    json!({
        "type": "meta",
        "writer": m.writer,
        "started_ns": m.started_ns,
        "redacted": m.redacted,
        "max_body": m.max_body,
    })
}

/// Bytes as `text`, in base64 with `encoding` when they are not UTF-8.
fn bytes(data: &[u8], mut obj: Map<String, Value>) -> Value {
    match std::str::from_utf8(data) {
        Ok(s) => {
            obj.insert("text".into(), s.into());
        }
        Err(_) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(data);
            obj.insert("text".into(), b64.into());
            obj.insert("encoding".into(), "base64".into());
        }
    }
    Value::Object(obj)
}

fn body(b: &BodyRec) -> Value {
    let mut m = Map::new();
    m.insert("size".into(), b.size.into());
    m.insert("cut".into(), b.cut.into());
    bytes(&b.data, m)
}

fn fields(f: &[Field]) -> Value {
    f.iter()
        .map(|(n, v)| json!([String::from_utf8_lossy(n), String::from_utf8_lossy(v)]))
        .collect()
}

fn tls(t: &Option<TlsRec>) -> Value {
    match t {
        Some(t) => json!({"sni": t.sni, "alpn": t.alpn, "version": t.version, "ja4": t.ja4}),
        None => Value::Null,
    }
}

fn request(r: &RequestRec) -> Value {
    json!({
        "method": r.method,
        "url": describe::url(r),
        "scheme": r.scheme,
        "authority": r.authority,
        "path": r.path,
        "version": r.version,
        "headers": fields(&r.headers),
        "body": body(&r.body),
        "trailers": fields(&r.trailers),
    })
}

fn response(r: &ResponseRec) -> Value {
    json!({
        "status": r.status,
        "reason": r.reason,
        "version": r.version,
        "headers": fields(&r.headers),
        "body": body(&r.body),
        "trailers": fields(&r.trailers),
        "by_proxy": r.by_proxy,
    })
}

fn http(h: &HttpFlow) -> Value {
    let ws: Vec<Value> = h
        .websocket
        .iter()
        .map(|m| {
            let mut o = Map::new();
            o.insert("from_client".into(), m.from_client.into());
            o.insert("opcode".into(), m.opcode.into());
            o.insert("ts".into(), m.ts.into());
            o.insert("size".into(), m.size.into());
            bytes(&m.data, o)
        })
        .collect();
    json!({
        "type": "http",
        "id": h.id,
        "conn": h.conn,
        "stream": h.stream,
        "client": h.client,
        "server": h.server,
        "mode": h.mode,
        "client_tls": tls(&h.client_tls),
        "request": request(&h.request),
        "response": h.response.as_ref().map(response),
        "times": {
            "request_start": h.times.request_start,
            "upstream_connected": h.times.upstream_connected,
            "response_head": h.times.response_head,
            "end": h.times.end,
        },
        "error": h.error,
        "websocket": ws,
        "websocket_dropped": h.websocket_dropped,
        "notes": h.notes,
    })
}

fn tunnel(t: &TunnelFlow) -> Value {
    let chunks: Vec<Value> = t
        .chunks
        .iter()
        .map(|c| {
            let mut o = Map::new();
            o.insert("from_client".into(), c.from_client.into());
            o.insert("ts".into(), c.ts.into());
            bytes(&c.data, o)
        })
        .collect();
    json!({
        "type": "tunnel",
        "id": t.id,
        "conn": t.conn,
        "client": t.client,
        "server": t.server,
        "target": t.target,
        "kind": t.kind,
        "client_tls": tls(&t.client_tls),
        "start": t.start,
        "end": t.end,
        "bytes_up": t.bytes_up,
        "bytes_down": t.bytes_down,
        "error": t.error,
        "chunks": chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::record::*;
    use serde_bytes::ByteBuf;

    #[test]
    fn text_and_binary_bodies() {
        let h = HttpFlow {
            id: 7,
            request: RequestRec {
                method: "POST".into(),
                scheme: "http".into(),
                authority: "a.test".into(),
                path: "/".into(),
                headers: vec![field("X-Bin", [b'a', 0xff])],
                body: BodyRec {
                    data: ByteBuf::from(b"h\xc3\xa9".to_vec()),
                    size: 3,
                    cut: false,
                },
                ..Default::default()
            },
            response: Some(ResponseRec {
                status: 200,
                body: BodyRec {
                    data: ByteBuf::from(vec![0u8, 255, 1]),
                    size: 10,
                    cut: true,
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = http(&h);
        assert_eq!(v["id"], 7);
        assert_eq!(v["request"]["url"], "http://a.test/");
        assert_eq!(
            v["request"]["body"],
            json!({"text": "hé", "size": 3, "cut": false})
        );
        assert_eq!(v["request"]["headers"][0][1], "a\u{fffd}");
        assert_eq!(
            v["response"]["body"],
            json!({"text": "AP8B", "encoding": "base64", "size": 10, "cut": true})
        );
        assert_eq!(v["error"], Value::Null);
    }

    #[test]
    fn tunnels() {
        let t = TunnelFlow {
            id: 3,
            target: "b.test:443".into(),
            bytes_up: 5,
            chunks: vec![RawChunkRec {
                from_client: true,
                ts: 1,
                data: ByteBuf::from(b"hello".to_vec()),
            }],
            ..Default::default()
        };
        let v = tunnel(&t);
        assert_eq!(v["type"], "tunnel");
        assert_eq!(v["chunks"][0]["text"], "hello");
        assert_eq!(v["bytes_up"], 5);
    }
}
