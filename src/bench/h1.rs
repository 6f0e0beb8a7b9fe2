//! HTTP/1.1 for the bench, sans-IO: the origin's request parser and response encoder,
//! the driver's request encoder and response reader. Bytes in, bytes or events out.

use crate::flows::record::{Field, RequestRec, ResponseRec};

/// Most header fields a request or response may have.
const MAX_HEADERS: usize = 128;

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// A complete request read by the origin; slices point into the input buffer.
#[derive(Debug)]
pub struct Request<'a> {
    /// Method token.
    pub method: &'a str,
    /// Request target as sent.
    pub target: &'a str,
    /// HTTP/1.0 (false) or 1.1 (true).
    pub http11: bool,
    /// Header fields.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The body with transfer framing removed.
    pub body: Vec<u8>,
    /// The client wants the connection closed after the response.
    pub close: bool,
}

impl Request<'_> {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header_in(&self.headers, name)
    }

    /// host[:port]: the absolute-form target's authority, else the Host header.
    pub fn authority(&self) -> &str {
        if let Some(rest) = self.target.split_once("://").map(|(_, r)| r) {
            return rest.split('/').next().unwrap_or("");
        }
        self.header("host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or("")
    }

    /// Path and query: the origin-form of an absolute-form target.
    pub fn origin_form(&self) -> &str {
        match self.target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => self.target,
        }
    }
}

fn header_in<'a>(h: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
}

fn has_token(v: &[u8], token: &str) -> bool {
    v.split(|&c| c == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The body framing a set of headers declares (`None`: no body headers at all).
fn framing_of(h: &[(&[u8], &[u8])]) -> Result<Option<Framing>, ParseError> {
    if header_in(h, "transfer-encoding").is_some_and(|v| has_token(v, "chunked")) {
        return Ok(Some(Framing::Chunked));
    }
    match header_in(h, "content-length") {
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(|n| Some(Framing::Length(n)))
            .ok_or_else(|| ParseError("bad content-length".into())),
        None => Ok(None),
    }
}

/// Decodes a chunked body at the start of `buf`: `Ok(None)` until it is complete, then
/// the payload and the bytes used (trailers are read past and dropped).
pub fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else {
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let size_hex = line.split(|&c| c == b';').next().unwrap_or(b"");
        let size = std::str::from_utf8(size_hex)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| ParseError("bad chunk size".into()))?;
        pos += eol + 2;
        if size == 0 {
            // trailer section: lines until an empty one
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((out, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Parses one whole request (head and body) at the start of `buf`: `Ok(None)` until
/// all of it is there, then the request and the bytes it used.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, ParseError> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut hs);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ParseError(e.to_string())),
    };
    let headers: Vec<(&[u8], &[u8])> = r
        .headers
        .iter()
        .map(|h| (h.name.as_bytes(), h.value))
        .collect();
    let http11 = r.version == Some(1);
    let conn = header_in(&headers, "connection");
    let close = if http11 {
        conn.is_some_and(|v| has_token(v, "close"))
    } else {
        !conn.is_some_and(|v| has_token(v, "keep-alive"))
    };
    let (body, used) = match framing_of(&headers)? {
        None | Some(Framing::Length(0)) => (Vec::new(), head_len),
        Some(Framing::Length(n)) => {
            let end = head_len + n as usize;
            if buf.len() < end {
                return Ok(None);
            }
            (buf[head_len..end].to_vec(), end)
        }
        Some(Framing::Chunked) => match dechunk(&buf[head_len..])? {
            None => return Ok(None),
            Some((b, n)) => (b, head_len + n),
        },
        Some(Framing::Close) => unreachable!("requests are never close-delimited"),
    };
    Ok(Some((
        Request {
            method: r.method.unwrap_or(""),
            target: r.path.unwrap_or(""),
            http11,
            headers,
            body,
            close,
        },
        used,
    )))
}

fn name_is(f: &Field, name: &str) -> bool {
    f.0.eq_ignore_ascii_case(name.as_bytes())
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A recorded response encoded once for HTTP/1.1: the head, and the body as framed.
#[derive(Debug, Clone)]
pub struct EncodedResponse {
    /// Status line and header fields, ending with the empty line.
    pub head: bytes::Bytes,
    /// The body bytes on the wire (chunk framing and trailers included).
    pub body: bytes::Bytes,
}

/// Encodes `resp` as HTTP/1.1, keeping its header fields byte for byte. Framing
/// headers are only added when the recording has none that an HTTP/1.1 client can use
/// (an HTTP/2 response, a close-delimited one) or trailers need chunking.
pub fn encode_response(resp: &ResponseRec) -> EncodedResponse {
    let reason = if resp.reason.is_empty() {
        http::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    } else {
        &resp.reason
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason).into_bytes();
    let no_body = resp.status < 200 || resp.status == 204 || resp.status == 304;
    let data = &resp.body.data[..];
    let chunked_recorded = resp
        .headers
        .iter()
        .any(|f| name_is(f, "transfer-encoding") && has_token(&f.1, "chunked"));
    let chunked = !no_body && (chunked_recorded || !resp.trailers.is_empty());
    // a cut body cannot match its recorded content-length: say what is sent instead
    let fix_length = resp.body.cut && !chunked;
    for f in &resp.headers {
        if fix_length && name_is(f, "content-length") {
            continue;
        }
        push_field(&mut head, &f.0, &f.1);
    }
    let has_length = !fix_length && resp.headers.iter().any(|f| name_is(f, "content-length"));
    if chunked && !chunked_recorded {
        push_field(&mut head, b"transfer-encoding", b"chunked");
    } else if !chunked && !no_body && !has_length {
        push_field(
            &mut head,
            b"content-length",
            data.len().to_string().as_bytes(),
        );
    }
    head.extend_from_slice(b"\r\n");
    let body = if no_body {
        Vec::new()
    } else if chunked {
        chunk(data, &resp.trailers)
    } else {
        data.to_vec()
    };
    EncodedResponse {
        head: head.into(),
        body: body.into(),
    }
}

/// `data` as one chunk (none when empty), the last chunk and `trailers`.
pub fn chunk(data: &[u8], trailers: &[Field]) -> Vec<u8> {
    let mut b = Vec::with_capacity(data.len() + 32);
    if !data.is_empty() {
        b.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"0\r\n");
    for t in trailers {
        push_field(&mut b, &t.0, &t.1);
    }
    b.extend_from_slice(b"\r\n");
    b
}

/// Header fields a replayed request never carries over: they describe the recorded
/// connection or framing, which the driver makes anew.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
    "host",
];

/// Encodes recorded request `req` as HTTP/1.1 to send to `target` (origin-form for a
/// reverse proxy or a direct target, absolute-form for a forward proxy). Host is the
/// recorded authority, first, as HTTP/1 clients send it.
pub fn encode_request(req: &RequestRec, absolute: bool) -> Vec<u8> {
    let path = if req.path.is_empty() { "/" } else { &req.path };
    let mut b = Vec::with_capacity(256 + req.body.data.len());
    b.extend_from_slice(req.method.as_bytes());
    b.push(b' ');
    if absolute {
        let scheme = if req.scheme.is_empty() {
            "http"
        } else {
            &req.scheme
        };
        b.extend_from_slice(format!("{scheme}://{}", req.authority).as_bytes());
    }
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(b" HTTP/1.1\r\n");
    let host = req
        .headers
        .iter()
        .find(|f| name_is(f, "host"))
        .map_or(req.authority.as_bytes(), |f| &f.1[..]);
    push_field(&mut b, b"Host", host);
    for f in &req.headers {
        if !HOP.iter().any(|h| name_is(f, h)) {
            push_field(&mut b, &f.0, &f.1);
        }
    }
    let body = &req.body.data[..];
    if !req.trailers.is_empty() {
        push_field(&mut b, b"transfer-encoding", b"chunked");
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(&chunk(body, &req.trailers));
        return b;
    }
    let needs_length = !body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH");
    if needs_length {
        push_field(&mut b, b"content-length", body.len().to_string().as_bytes());
    }
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(body);
    b
}

/// Sets header fields of a recorded request (`--header`): each replaces every field of
/// its name, in the first one's place, or is added at the end. This fills in what the
/// recorder redacted.
pub fn set_headers(req: &mut RequestRec, set: &[(String, String)]) {
    for (name, value) in set {
        let v = crate::flows::record::field(name, value);
        match req.headers.iter().position(|f| name_is(f, name)) {
            Some(i) => {
                req.headers[i] = v;
                let mut k = 0;
                req.headers.retain(|f| {
                    k += 1;
                    k - 1 <= i || !name_is(f, name)
                });
            }
            None => req.headers.push(v),
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
