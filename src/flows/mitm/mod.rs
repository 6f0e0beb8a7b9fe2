//! `mitmdump -w` dumps to flows: one tnetstring dict per flow (mitmproxy's flow state,
//! format 20 from mitmproxy 10, 21 from mitmproxy 11 and 12; the flow layout has been
//! the same since format 19). HTTP flows become HTTP flows with their
//! WebSocket messages, TCP flows become tunnel flows; docs/flows.md, "mitmproxy
//! dumps", says what maps to what.

pub mod tnetstring;

use crate::flows::import_out::{ImportReport, Output};
use crate::flows::record::{
    BodyRec, Field, HttpFlow, RawChunkRec, Record, RequestRec, ResponseRec, Times, TlsRec,
    TunnelFlow, WsMessageRec,
};
use serde_bytes::ByteBuf;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use tnetstring::Value;

/// Largest flow accepted: a longer length prefix is taken for a damaged file.
const MAX_FLOW: usize = 1 << 30;
/// The newest flow format this reader was written against (mitmproxy 11 and 12).
const NEWEST_FORMAT: i64 = 21;

/// Converts a dump read from `input` into a flow file on `out`.
pub fn import<R: BufRead, W: Write>(mut input: R, out: W) -> (ImportReport, Result<(), String>) {
    let mut out = Output::new(out, "luring flows import (mitmproxy dump)");
    let mut st = State::default();
    let r = loop {
        let at = st.offset;
        match next_flow(&mut input, &mut st.offset) {
            Ok(None) => break Ok(()),
            Ok(Some(v)) => {
                let rec = st.convert(&v);
                if let Some(rec) = rec {
                    if let Err(e) = out.write(&rec) {
                        break Err(format!("writing the flow file: {e}"));
                    }
                    st.rep.imported += 1;
                }
            }
            Err(e) => {
                break Err(format!(
                    "damaged dump at byte {at}: {e} ({} flow(s) before it were written)",
                    st.rep.imported
                ))
            }
        }
    };
    let fin = out
        .finish()
        .map_err(|e| format!("writing the flow file: {e}"));
    (st.rep, r.and(fin))
}

/// Reads one tnetstring; None at a clean end of input.
fn next_flow(input: &mut impl BufRead, offset: &mut u64) -> Result<Option<Value>, String> {
    let mut prefix = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match input.read(&mut b) {
            Ok(0) if prefix.is_empty() => return Ok(None),
            Ok(0) => return Err("the file ends inside a length prefix".into()),
            Ok(_) => prefix.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        if let Some(total) = tnetstring::frame_len(&prefix).map_err(|e| e.to_string())? {
            if total > MAX_FLOW {
                return Err(format!(
                    "a flow of {total} bytes is past the {MAX_FLOW}-byte limit"
                ));
            }
            let mut buf = prefix;
            let have = buf.len();
            input
                .take((total - have) as u64)
                .read_to_end(&mut buf)
                .map_err(|e| e.to_string())?;
            if buf.len() < total {
                return Err(format!("the file ends inside a flow of {total} bytes"));
            }
            *offset += total as u64;
            let (v, _) = tnetstring::parse(&buf).map_err(|e| e.to_string())?;
            return Ok(Some(v));
        }
    }
}

#[derive(Default)]
struct State {
    rep: ImportReport,
    offset: u64,
    next_id: u64,
    /// mitmproxy's connection UUIDs to luring's numeric connection ids.
    conns: HashMap<String, u64>,
}

impl State {
    fn convert(&mut self, v: &Value) -> Option<Record> {
        let Some(Value::Dict(_)) = Some(v) else {
            self.rep
                .skip("not a flow (a tnetstring that is not a dict)");
            return None;
        };
        match v.get("version").and_then(Value::int) {
            Some(n) if n > NEWEST_FORMAT => self
                .rep
                .change("flow format newer than 21: read best-effort"),
            Some(n) if n >= 18 => {}
            _ => self
                .rep
                .change("flow format older than mitmproxy 10's: read best-effort"),
        }
        self.next_id += 1;
        match v.get("type").map(Value::string).as_deref() {
            Some("http") => Some(Record::Http(Box::new(self.http(v)))),
            Some("tcp") => Some(Record::Tunnel(Box::new(self.tcp(v)))),
            Some(t @ ("udp" | "dns")) => {
                self.rep
                    .skip(&format!("mitmproxy {t} flow: luring records no {t} flows"));
                None
            }
            other => {
                self.rep
                    .skip(&format!("unknown flow type {:?}", other.unwrap_or("")));
                None
            }
        }
    }

    fn conn_id(&mut self, conn: Option<&Value>) -> u64 {
        let key = conn
            .and_then(|c| c.get("id"))
            .map(Value::string)
            .unwrap_or_default();
        let n = self.conns.len() as u64 + 1;
        *self.conns.entry(key).or_insert(n)
    }

    fn http(&mut self, v: &Value) -> HttpFlow {
        let (cc, sc) = (v.get("client_conn"), v.get("server_conn"));
        let req = v.get("request");
        let rq = |k: &str| req.and_then(|r| r.get(k));
        let scheme = rq("scheme").map(Value::string).unwrap_or_default();
        let host = rq("host").map(Value::string).unwrap_or_default();
        let port = rq("port").and_then(Value::int).unwrap_or(0);
        let authority = match rq("authority").map(Value::string).filter(|a| !a.is_empty()) {
            Some(a) => a,
            None if (scheme == "http" && port == 80) || (scheme == "https" && port == 443) => host,
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        };
        let request = RequestRec {
            method: rq("method").map(Value::string).unwrap_or_default(),
            scheme,
            authority,
            path: rq("path").map(Value::string).unwrap_or_default(),
            version: version(&rq("http_version").map(Value::string).unwrap_or_default()),
            headers: fields(rq("headers")),
            body: body(rq("content"), &mut self.rep),
            trailers: fields(rq("trailers")),
        };
        let response = v
            .get("response")
            .filter(|r| **r != Value::Null)
            .map(|r| ResponseRec {
                status: r.get("status_code").and_then(Value::int).unwrap_or(0) as u16,
                reason: r.get("reason").map(Value::string).unwrap_or_default(),
                version: version(&r.get("http_version").map(Value::string).unwrap_or_default()),
                headers: fields(r.get("headers")),
                body: body(r.get("content"), &mut self.rep),
                trailers: fields(r.get("trailers")),
                by_proxy: false,
            });
        let resp = v.get("response");
        let ts = |o: Option<&Value>, k: &str| {
            o.and_then(|o| o.get(k))
                .and_then(Value::float)
                .map_or(0, ns)
        };
        let error = v.get("error").and_then(|e| e.get("msg")).map(Value::string);
        let end = [
            ts(resp, "timestamp_end"),
            ts(v.get("error"), "timestamp"),
            ts(req, "timestamp_end"),
        ]
        .into_iter()
        .find(|&t| t > 0)
        .unwrap_or(0);
        let mut notes = Vec::new();
        if let Some(c) = v
            .get("comment")
            .map(Value::string)
            .filter(|c| !c.is_empty())
        {
            notes.push(("mitmproxy.comment".to_string(), c));
        }
        if let Some(m) = v.get("marked").map(Value::string).filter(|m| !m.is_empty()) {
            notes.push(("mitmproxy.marked".to_string(), m));
        }
        HttpFlow {
            id: self.next_id,
            conn: self.conn_id(cc),
            stream: 0,
            client: addr(cc.and_then(|c| c.get("peername"))),
            server: addr(sc.and_then(|c| c.get("peername").or_else(|| c.get("address")))),
            mode: mode(cc),
            client_tls: tls(cc),
            request,
            response,
            times: Times {
                request_start: ts(req, "timestamp_start"),
                upstream_connected: ts(sc, "timestamp_tcp_setup"),
                response_head: ts(resp, "timestamp_start"),
                end,
            },
            error,
            websocket: websocket(v.get("websocket")),
            websocket_dropped: 0,
            notes,
        }
    }

    fn tcp(&mut self, v: &Value) -> TunnelFlow {
        let (cc, sc) = (v.get("client_conn"), v.get("server_conn"));
        let ts = |o: Option<&Value>, k: &str| {
            o.and_then(|o| o.get(k))
                .and_then(Value::float)
                .map_or(0, ns)
        };
        let chunks: Vec<RawChunkRec> = v
            .get("messages")
            .map(Value::list)
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let m = m.list();
                RawChunkRec {
                    from_client: m.first().is_some_and(Value::truthy),
                    data: ByteBuf::from(
                        m.get(1).and_then(Value::bytes).unwrap_or_default().to_vec(),
                    ),
                    ts: m.get(2).and_then(Value::float).map_or(0, ns),
                }
            })
            .collect();
        let sum = |up: bool| {
            chunks
                .iter()
                .filter(|c| c.from_client == up)
                .map(|c| c.data.len() as u64)
                .sum()
        };
        TunnelFlow {
            id: self.next_id,
            conn: self.conn_id(cc),
            client: addr(cc.and_then(|c| c.get("peername"))),
            server: addr(sc.and_then(|c| c.get("peername"))),
            target: addr(sc.and_then(|c| c.get("address"))),
            kind: "raw".into(),
            client_tls: tls(cc),
            start: ts(cc, "timestamp_start"),
            end: ts(cc, "timestamp_end"),
            bytes_up: sum(true),
            bytes_down: sum(false),
            error: v.get("error").and_then(|e| e.get("msg")).map(Value::string),
            chunks,
        }
    }
}

/// Seconds (float) to Unix nanoseconds.
fn ns(s: f64) -> u64 {
    crate::flows::har::text::secs_to_ns(s)
}

fn version(v: &str) -> String {
    match v {
        "HTTP/2.0" | "HTTP/2" => "HTTP/2".into(),
        "HTTP/3" | "HTTP/3.0" => "HTTP/3".into(),
        "" => "HTTP/1.1".into(),
        v => v.into(),
    }
}

/// Headers are a list of [name, value] pairs of bytes.
fn fields(v: Option<&Value>) -> Vec<Field> {
    v.map(Value::list)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| match p.list() {
            [n, v, ..] => Some((
                ByteBuf::from(n.bytes()?.to_vec()),
                ByteBuf::from(v.bytes()?.to_vec()),
            )),
            _ => None,
        })
        .collect()
}

/// mitmproxy keeps the wire body (content-encoding untouched), as luring does; None
/// means it streamed the body without keeping it.
fn body(v: Option<&Value>, rep: &mut ImportReport) -> BodyRec {
    match v.and_then(Value::bytes) {
        Some(b) => BodyRec {
            data: ByteBuf::from(b.to_vec()),
            size: b.len() as u64,
            cut: false,
        },
        None => {
            if v.is_some_and(|v| *v == Value::Null) {
                rep.change("body streamed by mitmproxy and not kept (empty cut body)");
                return BodyRec {
                    cut: true,
                    ..Default::default()
                };
            }
            BodyRec::default()
        }
    }
}

/// "host:port" from a [host, port] list.
fn addr(v: Option<&Value>) -> String {
    match v.map(Value::list) {
        Some([h, p, ..]) => {
            let (h, p) = (h.string(), p.int().unwrap_or(0));
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        }
        _ => String::new(),
    }
}

/// "reverse:http://x" to "reverse".
fn mode(cc: Option<&Value>) -> String {
    let m = cc
        .and_then(|c| c.get("proxy_mode"))
        .map(Value::string)
        .unwrap_or_default();
    m.split(':')
        .next()
        .unwrap_or("")
        .split('@')
        .next()
        .unwrap_or("")
        .to_string()
}

fn tls(cc: Option<&Value>) -> Option<TlsRec> {
    let c = cc?;
    let version = c
        .get("tls_version")
        .map(Value::string)
        .filter(|v| !v.is_empty())?;
    Some(TlsRec {
        sni: c.get("sni").map(Value::string).unwrap_or_default(),
        alpn: c.get("alpn").map(Value::string).unwrap_or_default(),
        version,
        ja4: String::new(),
    })
}

/// WebSocket messages: [opcode, from_client, content, timestamp, dropped?, injected?].
fn websocket(v: Option<&Value>) -> Vec<WsMessageRec> {
    v.and_then(|w| w.get("messages"))
        .map(Value::list)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let m = m.list();
            let data = m.get(2).and_then(Value::bytes).unwrap_or_default().to_vec();
            WsMessageRec {
                opcode: m.first().and_then(Value::int).unwrap_or(0) as u8,
                from_client: m.get(1).is_some_and(Value::truthy),
                ts: m.get(3).and_then(Value::float).map_or(0, ns),
                size: data.len() as u64,
                data: ByteBuf::from(data),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tn(tag: char, data: &[u8]) -> Vec<u8> {
        let mut v = format!("{}:", data.len()).into_bytes();
        v.extend_from_slice(data);
        v.push(tag as u8);
        v
    }

    fn dict(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let inner: Vec<u8> = pairs
            .iter()
            .flat_map(|(k, v)| [tn(';', k.as_bytes()), v.clone()].concat())
            .collect();
        tn('}', &inner)
    }

    fn list(items: &[Vec<u8>]) -> Vec<u8> {
        tn(']', &items.concat())
    }

    #[test]
    fn tcp_flows_become_tunnels_and_udp_is_skipped() {
        let conn = |id: &str, port: &[u8]| {
            dict(&[
                ("id", tn(';', id.as_bytes())),
                ("peername", list(&[tn(';', b"::1"), tn('#', port)])),
                ("address", list(&[tn(';', b"db.test"), tn('#', b"5432")])),
                ("timestamp_start", tn('^', b"1700000000.25")),
            ])
        };
        let msg = |up: bool, data: &[u8]| {
            list(&[
                tn('!', if up { b"true" } else { b"false" }),
                tn(',', data),
                tn('^', b"1700000001.0"),
            ])
        };
        let tcp = dict(&[
            ("version", tn('#', b"21")),
            ("type", tn(';', b"tcp")),
            ("client_conn", conn("c-1", b"40000")),
            ("server_conn", conn("s-1", b"5432")),
            (
                "messages",
                list(&[msg(true, b"\x00ab"), msg(false, b"xyz!")]),
            ),
            ("error", tn('~', b"")),
        ]);
        let udp = dict(&[("version", tn('#', b"22")), ("type", tn(';', b"udp"))]);
        let mut out = Vec::new();
        let (rep, r) = import(&[tcp, udp].concat()[..], &mut out);
        r.unwrap();
        assert_eq!(rep.imported, 1);
        assert_eq!(rep.skipped.values().sum::<u64>(), 1);
        assert!(rep.changed.keys().any(|k| k.contains("newer")), "{rep:?}");
        let recs: Vec<Record> = crate::flows::file::FlowReader::new(&out[..])
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let Record::Tunnel(t) = &recs[1] else {
            panic!("not a tunnel: {recs:?}")
        };
        assert_eq!(
            (t.client.as_str(), t.target.as_str()),
            ("[::1]:40000", "db.test:5432")
        );
        assert_eq!((t.bytes_up, t.bytes_down, t.chunks.len()), (3, 4, 2));
        assert_eq!(t.start, 1_700_000_000_250_000_000);
        assert!(t.error.is_none());
    }

    #[test]
    fn byte_flips_in_a_dump_never_panic() {
        let hdr = list(&[list(&[tn(',', b"Host"), tn(',', b"a")])]);
        let req = dict(&[
            ("method", tn(',', b"GET")),
            ("headers", hdr),
            ("content", tn(',', b"x")),
        ]);
        let ws = dict(&[(
            "messages",
            list(&[list(&[tn('#', b"1"), tn('!', b"true"), tn(',', b"hi")])]),
        )]);
        let flow = dict(&[
            ("type", tn(';', b"http")),
            ("request", req),
            ("websocket", ws),
        ]);
        assert!(import(&flow[..], Vec::new()).1.is_ok());
        let mut errors = 0;
        for i in 0..flow.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut bad = flow.clone();
                bad[i] ^= x;
                // Ok (a flipped letter in a value) or Err, never a panic.
                errors += usize::from(import(&bad[..], Vec::new()).1.is_err());
            }
        }
        assert!(
            errors > flow.len(),
            "flipped prefixes and tags must be caught"
        );
    }
}
