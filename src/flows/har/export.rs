//! `luring flows export --format har`: a flow file to HAR 1.2, streamed. The log's
//! head and tail are written by hand around one serde-serialized entry per flow, so
//! memory holds one flow at a time whatever the file's size.

use super::text::{b64, body_text, decode_content, iso8601};
use super::{Content, Entry, NameValue, PostData, Request, Response, Target, Timings, WsMessage};
use crate::flows::file::FlowReader;
use crate::flows::record::{Field, HttpFlow, Meta, Record, RequestRec, ResponseRec};
use std::io::{Read, Write};

/// What an export wrote and what HAR could not carry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// HTTP flows written as entries.
    pub entries: u64,
    /// Tunnel flows skipped: HAR has no place for opaque connections.
    pub tunnels_skipped: u64,
    /// Flows the recorder had dropped (from the file's Drops records).
    pub recorder_dropped: u64,
    /// Bodies (requests and responses) cut at the recording limit.
    pub bodies_cut: u64,
    /// WebSocket messages cut at the recording limit.
    pub ws_cut: u64,
    /// Flows with trailers: kept in `_luringTrailers`, which other tools ignore.
    pub with_trailers: u64,
    /// Response bodies left content-encoded (br, unknown coding, or cut): viewers
    /// show them as base64 of compressed bytes.
    pub left_encoded: u64,
    /// Records of kinds this luring does not know.
    pub unknown_records: u64,
}

impl ExportReport {
    /// One line per loss, for stderr; empty when nothing was lost.
    pub fn losses(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut add = |n: u64, what: &str| {
            if n > 0 {
                v.push(format!("{n} {what}"));
            }
        };
        add(
            self.tunnels_skipped,
            "tunnel flow(s) skipped: HAR holds HTTP exchanges only",
        );
        add(
            self.recorder_dropped,
            "flow(s) were dropped by the recorder and are not in the file",
        );
        add(
            self.bodies_cut,
            "body(ies) were cut at the recording limit (_luringBodyCut)",
        );
        add(
            self.ws_cut,
            "WebSocket message(s) were cut at the recording limit (_luringSize)",
        );
        add(
            self.with_trailers,
            "flow(s) have trailers: kept only in _luringTrailers, other tools ignore them",
        );
        add(
            self.left_encoded,
            "response body(ies) left content-encoded (br, unknown coding or cut): viewers show compressed bytes",
        );
        add(
            self.unknown_records,
            "record(s) of unknown kinds skipped (written by a newer luring)",
        );
        v
    }
}

/// Streams every record of `input` to `out` as one HAR document. A read error ends the
/// entries early: the HAR is still closed properly, and the error is returned with the
/// report of what was written before it.
pub fn export<R: Read, W: Write>(
    mut input: FlowReader<R>,
    out: &mut W,
    keep: &mut dyn FnMut(&HttpFlow) -> bool,
) -> (ExportReport, Result<(), String>) {
    let mut rep = ExportReport::default();
    let r = export_inner(&mut input, out, keep, &mut rep);
    rep.unknown_records = input.skipped_unknown;
    (rep, r)
}

fn export_inner<R: Read, W: Write>(
    input: &mut FlowReader<R>,
    out: &mut W,
    keep: &mut dyn FnMut(&HttpFlow) -> bool,
    rep: &mut ExportReport,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing the HAR: {e}");
    let mut meta: Option<Meta> = None;
    let mut first = input.next_record();
    if let Some(Ok(Record::Meta(m))) = &first {
        meta = Some(m.clone());
        first = None;
    }
    write!(
        out,
        "{{\"log\":{{\"version\":\"1.2\",\"creator\":{{\"name\":\"luring\",\"version\":\"{}\"}},",
        env!("CARGO_PKG_VERSION")
    )
    .map_err(io)?;
    if let Some(m) = &meta {
        write!(out, "\"_luringMeta\":").map_err(io)?;
        serde_json::to_writer(&mut *out, m).map_err(|e| e.to_string())?;
        write!(out, ",").map_err(io)?;
    }
    write!(out, "\"pages\":[],\"entries\":[").map_err(io)?;
    let mut read_err = None;
    for rec in first
        .into_iter()
        .chain(std::iter::from_fn(|| input.next_record()))
    {
        match rec {
            Ok(Record::Http(f)) if keep(&f) => {
                let entry = entry_of(&f, rep);
                out.write_all(if rep.entries == 0 { b"\n" } else { b",\n" })
                    .map_err(io)?;
                serde_json::to_writer(&mut *out, &entry).map_err(|e| e.to_string())?;
                rep.entries += 1;
            }
            Ok(Record::Http(_)) | Ok(Record::Meta(_)) => {}
            Ok(Record::Tunnel(_)) => rep.tunnels_skipped += 1,
            Ok(Record::Drops(d)) => rep.recorder_dropped += d.dropped,
            Err(e) => {
                read_err = Some(e.to_string());
                break;
            }
        }
    }
    out.write_all(b"\n]}}\n").map_err(io)?;
    out.flush().map_err(io)?;
    read_err.map_or(Ok(()), Err)
}

/// One flow as a HAR entry.
pub fn entry_of(f: &HttpFlow, rep: &mut ExportReport) -> Entry {
    let t = f.times;
    let ms = |a: u64, b: u64| {
        if a > 0 && b >= a {
            (b - a) as f64 / 1e6
        } else {
            -1.0
        }
    };
    let wait = ms(t.request_start, t.response_head);
    let receive = ms(t.response_head, t.end);
    if !f.request.trailers.is_empty() || f.response.as_ref().is_some_and(|r| !r.trailers.is_empty())
    {
        rep.with_trailers += 1;
    }
    let mut response = f
        .response
        .as_ref()
        .map_or_else(no_response, |r| response_of(r, rep));
    response.error = f.error.clone();
    let websocket = (!f.websocket.is_empty()).then(|| {
        f.websocket
            .iter()
            .map(|m| ws_of(m, rep))
            .collect::<Vec<_>>()
    });
    Entry {
        started_date_time: iso8601(t.request_start),
        time: ms(t.request_start, t.end).max(0.0),
        request: request_of(&f.request, rep),
        response,
        cache: Default::default(),
        timings: Timings {
            blocked: -1.0,
            dns: -1.0,
            connect: -1.0,
            ssl: -1.0,
            // luring does not time the request's sending apart from the wait.
            send: 0.0,
            wait: wait.max(0.0),
            receive: receive.max(0.0),
        },
        server_ip_address: server_ip(&f.server),
        connection: Some(f.conn.to_string()),
        resource_type: websocket.as_ref().map(|_| "websocket".to_string()),
        websocket,
        flow_id: Some(f.id),
        conn: Some(f.conn),
        stream: (f.stream != 0).then_some(f.stream),
        client: Some(f.client.clone()),
        server: Some(f.server.clone()),
        mode: Some(f.mode.clone()),
        tls: f.client_tls.clone(),
        times: Some(t),
        error: f.error.clone(),
        websocket_dropped: (f.websocket_dropped > 0).then_some(f.websocket_dropped),
        notes: (!f.notes.is_empty()).then(|| f.notes.clone()),
    }
}

/// The IP of "ip:port" or "[v6]:port".
fn server_ip(addr: &str) -> Option<String> {
    let sa: std::net::SocketAddr = addr.parse().ok()?;
    Some(sa.ip().to_string())
}

/// Header fields as HAR pairs; bytes that are not UTF-8 go one char per byte.
pub fn pairs(fields: &[Field]) -> Vec<NameValue> {
    fields
        .iter()
        .map(
            |(n, v)| match (std::str::from_utf8(n), std::str::from_utf8(v)) {
                (Ok(n), Ok(v)) => NameValue {
                    name: super::Wtf8::text(n),
                    value: super::Wtf8::text(v),
                    latin1: false,
                },
                _ => NameValue {
                    name: super::Wtf8::text(&latin1(n)),
                    value: super::Wtf8::text(&latin1(v)),
                    latin1: true,
                },
            },
        )
        .collect()
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// The first value of a header, by name in any case.
pub fn header<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn request_of(r: &RequestRec, rep: &mut ExportReport) -> Request {
    let url = format!("{}://{}{}", r.scheme, r.authority, r.path);
    // Only URLs that split back into the same parts go without _luringTarget.
    let plain = matches!(r.scheme.as_str(), "http" | "https")
        && r.path.starts_with('/')
        && !r.authority.contains(['/', '?', '#']);
    let query = r
        .path
        .split_once('?')
        .map_or(Vec::new(), |(_, q)| query_pairs(q));
    let mime = header(&r.headers, "content-type").unwrap_or("").to_string();
    rep.bodies_cut += u64::from(r.body.cut);
    let post_data = (r.body.size > 0 || !r.body.data.is_empty()).then(|| {
        let (text, binary) = body_text(&r.body.data, &mime);
        PostData {
            mime_type: mime.clone(),
            text: super::Wtf8::text(&text),
            encoding: binary.then(|| "base64".to_string()),
        }
    });
    Request {
        method: r.method.clone(),
        url: super::Wtf8::text(&url),
        http_version: r.version.clone(),
        headers: pairs(&r.headers),
        query_string: query,
        cookies: vec![],
        headers_size: -1.0,
        body_size: r.body.size as f64,
        post_data,
        trailers: pairs(&r.trailers),
        body_cut: r.body.cut,
        target: (!plain).then(|| Target {
            scheme: r.scheme.clone(),
            authority: r.authority.clone(),
            path: r.path.clone(),
        }),
    }
}

/// `a=1&b=2` as pairs, undecoded (HAR viewers show them as sent).
fn query_pairs(q: &str) -> Vec<NameValue> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            NameValue {
                name: super::Wtf8::text(n),
                value: super::Wtf8::text(v),
                latin1: false,
            }
        })
        .collect()
}

fn response_of(r: &ResponseRec, rep: &mut ExportReport) -> Response {
    let mime = header(&r.headers, "content-type").unwrap_or("").to_string();
    let coding = header(&r.headers, "content-encoding")
        .unwrap_or("")
        .trim()
        .to_string();
    let wire = &r.body.data[..];
    rep.bodies_cut += u64::from(r.body.cut);
    // HAR readers expect the decoded body in text; the wire bytes go beside it.
    let decoded = match coding.as_str() {
        "" | "identity" => None,
        _ if r.body.cut => None,
        c => decode_content(c, wire),
    };
    let content = match &decoded {
        Some(d) => {
            let (text, binary) = body_text(d, &mime);
            Content {
                size: d.len() as f64,
                compression: Some(d.len() as f64 - wire.len() as f64),
                mime_type: mime,
                text: Some(super::Wtf8::text(&text)),
                encoding: binary.then(|| "base64".into()),
                wire: Some(b64(wire)),
                encoded: false,
            }
        }
        None => {
            let encoded = !matches!(coding.as_str(), "" | "identity");
            rep.left_encoded += u64::from(encoded && !wire.is_empty());
            let (text, binary) = body_text(wire, &mime);
            Content {
                size: wire.len() as f64,
                compression: None,
                mime_type: mime,
                text: Some(super::Wtf8::text(&text)),
                encoding: binary.then(|| "base64".into()),
                wire: None,
                encoded,
            }
        }
    };
    Response {
        status: r.status as f64,
        status_text: r.reason.clone(),
        http_version: r.version.clone(),
        headers: pairs(&r.headers),
        cookies: vec![],
        content,
        redirect_url: super::Wtf8::text(header(&r.headers, "location").unwrap_or("")),
        headers_size: -1.0,
        body_size: r.body.size as f64,
        error: None,
        trailers: pairs(&r.trailers),
        body_cut: r.body.cut,
        by_proxy: r.by_proxy,
    }
}

/// The response of a flow that got none, as Chrome and mitmproxy write it.
fn no_response() -> Response {
    Response {
        headers_size: -1.0,
        body_size: -1.0,
        ..Default::default()
    }
}

fn ws_of(m: &crate::flows::record::WsMessageRec, rep: &mut ExportReport) -> WsMessage {
    let cut = m.size > m.data.len() as u64;
    rep.ws_cut += u64::from(cut);
    let text = (m.opcode == 1)
        .then(|| std::str::from_utf8(&m.data).ok())
        .flatten();
    WsMessage {
        kind: if m.from_client { "send" } else { "receive" }.into(),
        time: m.ts as f64 / 1e9,
        opcode: m.opcode as f64,
        data: super::Wtf8::text(&text.map_or_else(|| b64(&m.data), str::to_string)),
        ts: Some(m.ts),
        size: cut.then_some(m.size),
        encoding: (m.opcode == 1 && text.is_none()).then(|| "base64".into()),
    }
}
