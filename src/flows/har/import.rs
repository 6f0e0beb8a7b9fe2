//! HAR to flows, streamed: a serde visitor walks `log.entries` and converts each entry
//! as soon as it is read, so memory holds one entry whatever the file's size.

use super::text::{
    charset_of, encode_content, parse_iso8601, secs_to_ns, text_to_bytes, unb64, Charset,
};
use super::{Creator, Entry, NameValue, WsMessage};
use crate::flows::import_out::{ImportReport, Output};
use crate::flows::record::{
    BodyRec, Field, HttpFlow, Meta, Record, RequestRec, ResponseRec, Times, WsMessageRec,
};
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_bytes::ByteBuf;
use std::fmt;
use std::io::{BufRead, Write};

/// The import's state while entries stream by.
struct Imp<W: Write> {
    out: Output<W>,
    creator: Creator,
    rep: ImportReport,
    next_id: u64,
    seen: Sanity,
}

/// Facts for the "sanitized export" warning (docs/flows.md says the heuristic).
#[derive(Default)]
struct Sanity {
    entries: u64,
    /// Entries with a Cookie, Set-Cookie or Authorization header.
    sensitive: u64,
    /// Entries whose cookies arrays are filled while their cookie headers are gone.
    cookies_without_header: u64,
}

/// Converts a HAR read from `input` into a flow file on `out`.
pub fn import<R: BufRead, W: Write>(input: R, out: W) -> (ImportReport, Result<(), String>) {
    let mut imp = Imp {
        out: Output::new(out, "luring flows import (HAR)"),
        creator: Creator::default(),
        rep: ImportReport::default(),
        next_id: 1,
        seen: Sanity::default(),
    };
    let mut de = serde_json::Deserializer::from_reader(input);
    let r = match RootSeed(&mut imp).deserialize(&mut de) {
        Ok(true) => de.end().map_err(|e| format!("after the HAR's end: {e}")),
        Ok(false) => Err("not a HAR file: no log.entries".to_string()),
        Err(e) => Err(format!(
            "the HAR is truncated or not valid JSON: {e} ({} flow(s) before that point were written)",
            imp.rep.imported
        )),
    };
    let fin = imp
        .out
        .finish()
        .map_err(|e| format!("writing the flow file: {e}"));
    imp.sanity_warnings();
    (imp.rep, r.and(fin))
}

struct RootSeed<'a, W: Write>(&'a mut Imp<W>);

impl<'de, W: Write> DeserializeSeed<'de> for RootSeed<'_, W> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, W: Write> Visitor<'de> for RootSeed<'_, W> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a HAR object with a log")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut saw = false;
        while let Some(k) = map.next_key::<String>()? {
            if k == "log" {
                saw |= map.next_value_seed(LogSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(saw)
    }
}

struct LogSeed<'a, W: Write>(&'a mut Imp<W>);

impl<'de, W: Write> DeserializeSeed<'de> for LogSeed<'_, W> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, W: Write> Visitor<'de> for LogSeed<'_, W> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the HAR log object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let imp = self.0;
        let mut saw = false;
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                // Writers put creator before entries (Chrome, Firefox, mitmproxy, luring);
                // one that does not gets the generic text rules.
                "creator" => imp.creator = map.next_value()?,
                "_luringMeta" => {
                    let m: Meta = map.next_value()?;
                    imp.out.meta.redacted = m.redacted;
                    imp.out.meta.max_body = m.max_body;
                }
                "entries" => {
                    map.next_value_seed(EntriesSeed(&mut *imp))?;
                    saw = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(saw)
    }
}

struct EntriesSeed<'a, W: Write>(&'a mut Imp<W>);

impl<'de, W: Write> DeserializeSeed<'de> for EntriesSeed<'_, W> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, W: Write> Visitor<'de> for EntriesSeed<'_, W> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the log.entries array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(EntrySeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct EntrySeed<'a, W: Write>(&'a mut Imp<W>);

impl<'de, W: Write> DeserializeSeed<'de> for EntrySeed<'_, W> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let e = Entry::deserialize(d)?;
        self.0.entry(e).map_err(D::Error::custom)
    }
}

impl<W: Write> Imp<W> {
    /// Converts and writes one entry; Err only when the output fails.
    fn entry(&mut self, e: Entry) -> Result<(), String> {
        self.check_sanity(&e);
        match flow_of(e, &self.creator, &mut self.rep) {
            Ok(mut f) => {
                if f.id == 0 {
                    f.id = self.next_id;
                }
                self.next_id = f.id + 1;
                self.out
                    .write(&Record::Http(Box::new(f)))
                    .map_err(|e| format!("writing the flow file: {e}"))?;
                self.rep.imported += 1;
            }
            Err(why) => self.rep.skip(why),
        }
        Ok(())
    }

    fn check_sanity(&mut self, e: &Entry) {
        let has = |h: &[NameValue], n: &str| {
            h.iter()
                .any(|p| p.name.0.eq_ignore_ascii_case(n.as_bytes()))
        };
        let (rq, rs) = (&e.request.headers, &e.response.headers);
        self.seen.entries += 1;
        if has(rq, "cookie") || has(rs, "set-cookie") || has(rq, "authorization") {
            self.seen.sensitive += 1;
        }
        if (!e.request.cookies.is_empty() && !has(rq, "cookie"))
            || (!e.response.cookies.is_empty() && !has(rs, "set-cookie"))
        {
            self.seen.cookies_without_header += 1;
        }
    }

    fn sanity_warnings(&mut self) {
        let s = &self.seen;
        if s.cookies_without_header > 0 {
            self.rep.warnings.push(format!(
                "{} entr(ies) list cookies but carry no Cookie/Set-Cookie header: the HAR looks \
                 exported \"sanitized\" (Chrome's default), so cookies and Authorization are \
                 missing; export it again with sensitive data to replay logged-in traffic",
                s.cookies_without_header
            ));
        } else if self.creator.name == "WebInspector" && s.entries >= 5 && s.sensitive == 0 {
            self.rep.warnings.push(format!(
                "none of the {} entries from Chrome has a Cookie, Set-Cookie or Authorization \
                 header: if the site uses them, the HAR was exported \"sanitized\"",
                s.entries
            ));
        }
    }
}

/// How text bodies without a charset map back to bytes for this writer. mitmproxy
/// decodes them as latin-1 (UTF-8 for JSON); browsers as UTF-8.
fn default_charset(creator: &Creator, mime: &str) -> Charset {
    if let Some(cs) = charset_of(mime) {
        return cs;
    }
    if creator.name == "mitmproxy" && !mime.contains("json") {
        Charset::Latin1
    } else {
        Charset::Utf8
    }
}

/// The bytes of a body text: base64 when it says so, else text in the right charset.
fn body_bytes(text: &[u8], base64: bool, cs: Charset, rep: &mut ImportReport) -> Vec<u8> {
    if base64 {
        if let Some(b) = unb64(text) {
            return b;
        }
        rep.change("body marked base64 but not valid base64: kept as text");
    }
    text_to_bytes(text, cs)
}

fn fields(pairs: Vec<NameValue>) -> Vec<Field> {
    pairs
        .into_iter()
        // HTTP/2 pseudo-headers (Chrome lists them) live in the request line here.
        .filter(|p| !p.name.0.starts_with(b":"))
        .map(|p| {
            let cs = if p.latin1 {
                Charset::Latin1
            } else {
                Charset::Utf8
            };
            (
                ByteBuf::from(text_to_bytes(&p.name.0, cs)),
                ByteBuf::from(text_to_bytes(&p.value.0, cs)),
            )
        })
        .collect()
}

/// "HTTP/1.1", "HTTP/1.0", "HTTP/2" or "HTTP/3" from the spellings HAR writers use.
fn version(v: &str) -> String {
    match v.to_ascii_uppercase().as_str() {
        "HTTP/1.0" => "HTTP/1.0",
        "HTTP/2" | "HTTP/2.0" | "H2" | "H2C" => "HTTP/2",
        "HTTP/3" | "H3" | "HTTP/3.0" => "HTTP/3",
        _ => "HTTP/1.1",
    }
    .to_string()
}

/// (scheme, authority, path) of an absolute URL; None for non-HTTP URLs.
fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        _ => return None,
    };
    let rest = rest.split('#').next().unwrap_or("");
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (auth, path) = rest.split_at(cut);
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Some((scheme.to_string(), auth.to_string(), path))
}

fn header_str<'a>(h: &'a [Field], name: &str) -> Option<&'a str> {
    crate::flows::har::export::header(h, name)
}

/// One entry as a flow, or why it cannot be one.
fn flow_of(e: Entry, creator: &Creator, rep: &mut ImportReport) -> Result<HttpFlow, &'static str> {
    let url = String::from_utf8_lossy(&text_to_bytes(&e.request.url.0, Charset::Utf8)).into_owned();
    let (scheme, authority, path) = match &e.request.target {
        Some(t) => (t.scheme.clone(), t.authority.clone(), t.path.clone()),
        None => {
            split_url(&url).ok_or("URL is not http(s) or ws(s) (data:, blob:, extensions...)")?
        }
    };
    if e.request.method.is_empty() {
        return Err("no request method");
    }
    let start = e
        .times
        .map(|t| t.request_start)
        .or_else(|| parse_iso8601(&e.started_date_time));
    let times = e.times.unwrap_or_else(|| times_of(&e, start.unwrap_or(0)));
    let server = e
        .server
        .clone()
        .unwrap_or_else(|| server_of(&e, &scheme, &authority));
    let request = request_of(&e, creator, scheme, authority, path, rep);
    let response = response_of(&e, creator, rep);
    let websocket = e
        .websocket
        .unwrap_or_default()
        .into_iter()
        .map(ws_of)
        .collect();
    Ok(HttpFlow {
        id: e.flow_id.unwrap_or(0),
        conn: e
            .conn
            .or_else(|| e.connection.as_deref().and_then(|c| c.trim().parse().ok()))
            .unwrap_or(0),
        stream: e.stream.unwrap_or(0),
        client: e.client.unwrap_or_default(),
        server,
        mode: e.mode.unwrap_or_default(),
        client_tls: e.tls,
        request,
        response,
        times,
        error: e.error.or(e.response.error),
        websocket,
        websocket_dropped: e.websocket_dropped.unwrap_or(0),
        notes: e.notes.unwrap_or_default(),
    })
}

/// Timestamps from startedDateTime and the timings (milliseconds, -1 unknown).
fn times_of(e: &Entry, start: u64) -> Times {
    let t = &e.timings;
    let ms = |v: f64| if v > 0.0 { (v * 1e6) as u64 } else { 0 };
    let head = [t.blocked, t.dns, t.connect, t.send, t.wait]
        .iter()
        .map(|&v| ms(v))
        .sum::<u64>();
    let at = |d: u64| if start > 0 { start + d } else { 0 };
    Times {
        request_start: start,
        upstream_connected: 0,
        response_head: if e.response.status > 0.0 { at(head) } else { 0 },
        end: at(ms(e.time)),
    }
}

/// "ip:port" from serverIPAddress and the URL's port.
fn server_of(e: &Entry, scheme: &str, authority: &str) -> String {
    let Some(ip) = e.server_ip_address.as_deref().filter(|s| !s.is_empty()) else {
        return String::new();
    };
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    match ip.parse::<std::net::IpAddr>() {
        Ok(a) => std::net::SocketAddr::new(a, port).to_string(),
        Err(_) => format!("{ip}:{port}"),
    }
}

fn request_of(
    e: &Entry,
    creator: &Creator,
    scheme: String,
    authority: String,
    path: String,
    rep: &mut ImportReport,
) -> RequestRec {
    let r = &e.request;
    let headers = fields(r.headers.clone());
    let data = r.post_data.as_ref().map_or_else(Vec::new, |p| {
        let mime = header_str(&headers, "content-type").unwrap_or(&p.mime_type);
        let b64 = p.encoding.as_deref() == Some("base64");
        body_bytes(&p.text.0, b64, default_charset(creator, mime), rep)
    });
    let size = if r.body_cut {
        (r.body_size.max(0.0) as u64).max(data.len() as u64)
    } else {
        data.len() as u64
    };
    RequestRec {
        method: r.method.clone(),
        scheme,
        authority,
        path,
        version: version(&r.http_version),
        headers,
        body: BodyRec {
            data: ByteBuf::from(data),
            size,
            cut: r.body_cut,
        },
        trailers: fields(r.trailers.clone()),
    }
}

fn response_of(e: &Entry, creator: &Creator, rep: &mut ImportReport) -> Option<ResponseRec> {
    let r = &e.response;
    if r.status <= 0.0 && r.headers.is_empty() {
        return None;
    }
    let mut headers = fields(r.headers.clone());
    let c = &r.content;
    let (mut data, mut cut) = (Vec::new(), r.body_cut);
    if let Some(w) = c.wire.as_deref().and_then(|w| unb64(w.as_bytes())) {
        data = w;
    } else if let Some(t) = &c.text {
        let mime = header_str(&headers, "content-type")
            .unwrap_or(&c.mime_type)
            .to_string();
        let b64 = c.encoding.as_deref() == Some("base64");
        data = body_bytes(&t.0, b64, default_charset(creator, &mime), rep);
        if !c.encoded {
            data = reencode(data, &mut headers, rep);
        }
    } else if c.size > 0.0 {
        // Firefox leaves images' bodies out: keep the size, mark it cut.
        rep.change("response body not in the HAR (kept as an empty cut body)");
        cut = true;
    }
    let size = if cut {
        (r.body_size.max(c.size).max(0.0) as u64).max(data.len() as u64)
    } else {
        data.len() as u64
    };
    Some(ResponseRec {
        status: r.status as u16,
        reason: r.status_text.clone(),
        version: version(&r.http_version),
        headers,
        body: BodyRec {
            data: ByteBuf::from(data),
            size,
            cut,
        },
        trailers: fields(r.trailers.clone()),
        by_proxy: r.by_proxy,
    })
}

/// HAR bodies are decoded while the headers still name the content-encoding; a flow
/// holds wire bytes, so the coding is applied again (the bytes differ from the original
/// wire's, the meaning does not). A coding luring cannot apply (br) is removed from
/// the headers instead.
fn reencode(data: Vec<u8>, headers: &mut Vec<Field>, rep: &mut ImportReport) -> Vec<u8> {
    let Some(coding) = header_str(headers, "content-encoding").map(str::to_string) else {
        return data;
    };
    let out = match encode_content(&coding, &data) {
        Some(enc) if enc == data => return data,
        Some(enc) => {
            rep.change("body content-encoded again from the HAR's decoded text");
            enc
        }
        None => {
            rep.change("content-encoding luring cannot apply (br?) removed: body kept decoded");
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(b"content-encoding"));
            data
        }
    };
    for (n, v) in headers.iter_mut() {
        if n.eq_ignore_ascii_case(b"content-length") {
            *v = ByteBuf::from(out.len().to_string().into_bytes());
        }
    }
    out
}

fn ws_of(m: WsMessage) -> WsMessageRec {
    let opcode = m.opcode as u8;
    let text = opcode == 1 && m.encoding.as_deref() != Some("base64");
    let data = if text {
        text_to_bytes(&m.data.0, Charset::Utf8)
    } else {
        unb64(&m.data.0).unwrap_or_else(|| m.data.0.clone())
    };
    WsMessageRec {
        from_client: m.kind == "send",
        opcode,
        ts: m.ts.unwrap_or_else(|| secs_to_ns(m.time)),
        size: m.size.unwrap_or(data.len() as u64),
        data: ByteBuf::from(data),
    }
}
