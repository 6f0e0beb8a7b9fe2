//! Response heads relayed as the bytes they arrived in.
//!
//! When nothing between the upstream and an HTTP/1 client reads or changes a response
//! head (no hook, no recorder, no header rewrite), building the field list, stripping
//! it and encoding it again is most of the proxy's own work per request. A [`WireHead`]
//! keeps the head's bytes and what one pass over httparse's fields found: where the
//! hop-by-hop and framing lines are, the framing itself, and whether every field line
//! is in the form the encoder would write (`Name: value` CRLF). Relaying then copies
//! the runs of lines between the ones that go, and appends what the encoder would
//! append, so the client gets the same bytes as through the field list. A head the
//! pass cannot vouch for (an odd line, a name listed in Connection, a framing field
//! the encoder would rewrite) is parsed again into a [`ResponseHead`] instead.

use super::byte_scan::field_line;
use super::head::{
    decimal, httparse_response, model_response, parse_response_with, plain_status_line, put_status,
    raw_reason, reason as reason_phrase, response_kind, version, Framing,
};
use super::{BodyKind, HeadError, Limits};
use crate::http::{known_bit, known_names, ResponseHead, Version};
use bytes::{Bytes, BytesMut};

/// Hop-by-hop and framing lines a head may hold and still relay as bytes; more
/// (unusual) and it takes the field list.
const MAX_MARKS: usize = 8;

/// What a marked line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// A hop-by-hop field: never relayed.
    HopByHop,
    /// Content-Length.
    Length,
    /// Transfer-Encoding.
    Coding,
}

/// A line to leave out or check, as a byte range of the head.
#[derive(Clone, Copy, Debug)]
struct Mark {
    start: u32,
    end: u32,
    line: Line,
}

/// A final response head as it arrived, and what relaying it needs to know.
#[derive(Debug)]
pub struct WireHead {
    bytes: Bytes,
    /// Protocol version of the status line.
    pub version: Version,
    /// Status code.
    pub status: u16,
    /// The reason phrase's range in `bytes`.
    reason: (u32, u32),
    /// From the first field line to the end of the last (before the blank line).
    fields: (u32, u32),
    marks: [Mark; MAX_MARKS],
    n_marks: u8,
    /// What the framing fields say, or why they are refused.
    framing: Result<Framing, HeadError>,
    /// Connection lists `close`.
    close: bool,
    /// Every field line is `Name: value` CRLF, no name is listed in Connection, and the
    /// reason phrase is ASCII: the bytes can stand for the field list.
    plain: bool,
    /// The one Transfer-Encoding field says exactly `chunked`.
    te_chunked: bool,
    /// Number of Content-Length fields, and the value's range of the last one.
    lengths: u8,
    length_text: (u32, u32),
}

/// A parsed response head: as bytes ([`parse_response_wire`] keeps final heads so) or
/// as a field list.
#[derive(Debug)]
pub enum ParsedResponse {
    /// A final (2xx-5xx) head as it arrived (boxed: the enum is moved several times per
    /// exchange, and a head as fields is much smaller).
    Wire(Box<WireHead>),
    /// A head as a field list.
    Head(ResponseHead),
}

impl ParsedResponse {
    /// The head as a field list.
    pub fn into_head(self) -> Result<ResponseHead, HeadError> {
        match self {
            ParsedResponse::Wire(w) => w.into_head(),
            ParsedResponse::Head(h) => Ok(h),
        }
    }
}

/// Parses a response head as [`super::parse_response_head`] does, keeping a final head
/// as its bytes.
pub fn parse_response_wire(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(ParsedResponse, usize)>, HeadError> {
    let window = &buf[..buf.len().min(limits.max_head_size)];
    if let Some((w, n)) = WireHead::scan_plain(window, limits) {
        return Ok(Some((ParsedResponse::Wire(Box::new(w)), n)));
    }
    parse_response_with(buf, limits, |res, window, n| {
        if res.code.unwrap_or_default() < 200 {
            ParsedResponse::Head(model_response(res, window, n))
        } else {
            ParsedResponse::Wire(Box::new(WireHead::scan(res, window, n)))
        }
    })
}

/// One pass over a head's field lines, in order, gathering what relaying needs.
struct Pass<'w> {
    w: WireHead,
    /// Lines taken so far, and where the next one starts if the lines are plain.
    lines: usize,
    next: usize,
    /// Names listed in Connection (the first two).
    listed: [&'w [u8]; 2],
    n_listed: usize,
    codings: u32,
}

impl<'w> Pass<'w> {
    /// A pass for a head with this status line; `reason` is a byte range of the head.
    fn new(minor: u8, status: u16, reason: (usize, usize)) -> Self {
        Pass {
            w: WireHead {
                bytes: Bytes::new(),
                version: version(minor),
                status,
                reason: (reason.0 as u32, reason.1 as u32),
                fields: (0, 0),
                marks: [Mark {
                    start: 0,
                    end: 0,
                    line: Line::HopByHop,
                }; MAX_MARKS],
                n_marks: 0,
                framing: Ok(Framing::default()),
                close: false,
                plain: true,
                te_chunked: false,
                lengths: 0,
                length_text: (0, 0),
            },
            lines: 0,
            next: 0,
            listed: [b""; 2],
            n_listed: 0,
            codings: 0,
        }
    }

    /// Whether a line starting at `start` follows the last one directly.
    fn follows(&self, start: usize) -> bool {
        self.lines == 0 || start == self.next
    }

    /// Takes the field line at `start` whose value is `value`, at `value_at`.
    fn field(&mut self, start: usize, name: &'w [u8], value_at: usize, value: &'w [u8]) {
        let w = &mut self.w;
        if self.lines == 0 {
            w.fields.0 = start as u32;
        }
        self.lines += 1;
        let value_end = value_at + value.len();
        self.next = value_end + 2;
        let bit = known_bit(name);
        if bit == 0 {
            return;
        }
        let line = if bit & known_names::HOP_BY_HOP != 0 {
            if bit & (known_names::CONNECTION | known_names::PROXY_CONNECTION) != 0 {
                for t in value.split(|&b| b == b',') {
                    let t = t.trim_ascii();
                    if bit == known_names::CONNECTION && t.eq_ignore_ascii_case(b"close") {
                        w.close = true;
                    }
                    let framing = known_names::TRANSFER_ENCODING | known_names::CONTENT_LENGTH;
                    if t.is_empty() || known_bit(t) & (known_names::HOP_BY_HOP | framing) != 0 {
                        continue;
                    }
                    // a name listed in Connection goes too (checked in finish)
                    match self.listed.get_mut(self.n_listed) {
                        Some(slot) => *slot = t,
                        None => w.plain = false,
                    }
                    self.n_listed += 1;
                }
            }
            Line::HopByHop
        } else if bit == known_names::CONTENT_LENGTH {
            if let Ok(f) = &mut w.framing {
                if let Err(e) = f.content_length(value) {
                    w.framing = Err(e);
                }
            }
            w.lengths = w.lengths.saturating_add(1);
            w.length_text = (value_at as u32, value_end as u32);
            Line::Length
        } else if bit == known_names::TRANSFER_ENCODING {
            if let Ok(f) = &mut w.framing {
                if let Err(e) = f.transfer_encoding(value) {
                    w.framing = Err(e);
                }
            }
            self.codings += 1;
            w.te_chunked = self.codings == 1 && value == b"chunked";
            Line::Coding
        } else {
            // request-only names (Host, Expect) relay as they are
            return;
        };
        match w.marks.get_mut(usize::from(w.n_marks)) {
            Some(m) => {
                *m = Mark {
                    start: start as u32,
                    end: self.next as u32,
                    line,
                }
            }
            None => w.plain = false,
        }
        w.n_marks = w.n_marks.saturating_add(1);
    }

    /// The head `window[..n]` after its last line; `any_named` says whether a field of
    /// the head has a name the given test accepts.
    fn finish(
        self,
        window: &[u8],
        n: usize,
        any_named: impl FnOnce(&dyn Fn(&[u8]) -> bool) -> bool,
    ) -> WireHead {
        let end_of_fields = n - 2;
        let follows = self.follows(end_of_fields);
        let mut w = self.w;
        if self.lines == 0 {
            w.fields.0 = end_of_fields as u32;
        }
        w.fields.1 = end_of_fields as u32;
        // u32 offsets; heads are far smaller under any sane max_head_size
        w.plain &= n < u32::MAX as usize && follows;
        // a field named in Connection would have to go as well: rare enough to take the
        // field list for
        if w.plain && self.n_listed > 0 {
            let listed = &self.listed[..self.n_listed.min(2)];
            w.plain = !any_named(&|name| listed.iter().any(|t| t.eq_ignore_ascii_case(name)));
        }
        w.bytes = Bytes::copy_from_slice(&window[..n]);
        w
    }
}

impl WireHead {
    /// One pass over httparse's fields for a complete head `window[..n]`.
    fn scan(res: &httparse::Response<'_, '_>, window: &[u8], n: usize) -> WireHead {
        let base = window.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(base);
        let reason = res.reason.unwrap_or_default();
        let reason_at = match reason {
            "" => (0, 0),
            r => (at(r.as_bytes()), at(r.as_bytes()) + r.len()),
        };
        let mut pass = Pass::new(
            res.version.unwrap_or(1),
            res.code.unwrap_or_default(),
            reason_at,
        );
        let mut plain = reason.is_ascii() && window.get(n - 2..n) == Some(b"\r\n");
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            let start = at(name);
            let name_end = start + name.len();
            let value_at = at(h.value);
            let value_end = value_at + h.value.len();
            plain &= pass.follows(start)
                && !h.value.is_empty()
                && value_at == name_end + 2
                && window.get(name_end..value_at) == Some(b": ")
                && window.get(value_end..value_end + 2) == Some(b"\r\n");
            pass.field(start, name, value_at, h.value);
        }
        let mut w = pass.finish(window, n, |named| {
            res.headers.iter().any(|h| named(h.name.as_bytes()))
        });
        // httparse blanks a reason holding obs-text: such a head takes the field list
        w.plain &= plain && (!reason.is_empty() || raw_reason(&w.bytes).is_empty());
        w
    }

    /// The same pass without httparse, for the heads upstreams send nearly always:
    /// `HTTP/1.x`, a final status, an ASCII reason and only `Name: value` CRLF lines
    /// with no whitespace around the value. None for anything else (or an incomplete
    /// head), which then takes the httparse path. A head this accepts parses there to
    /// an equal `WireHead` (unit and fuzz tests), so the paths never disagree.
    fn scan_plain(window: &[u8], limits: &Limits) -> Option<(WireHead, usize)> {
        let (minor, status, reason, mut p) = plain_status_line(window)?;
        if status < 200 {
            return None;
        }
        let mut pass = Pass::new(minor, status, reason);
        let fields_at = p;
        while window.get(p..p + 2)? != b"\r\n" {
            if pass.lines == limits.max_headers {
                return None;
            }
            let (colon, value_end) = field_line(window, p)?;
            let value_at = colon + 2;
            pass.field(p, &window[p..colon], value_at, &window[value_at..value_end]);
            p = value_end + 2;
        }
        let n = p + 2;
        let fields = &window[fields_at..p];
        let w = pass.finish(window, n, |named| {
            fields.split(|&b| b == b'\n').any(|l| {
                l.split(|&b| b == b':')
                    .next()
                    .is_some_and(|name| !name.is_empty() && named(name))
            })
        });
        Some((w, n))
    }

    /// Length of the head as it arrived.
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// Body framing of this response to a request with `method`, as
    /// [`super::response_body_kind`] says it.
    pub fn kind(&self, method: &[u8]) -> Result<BodyKind, HeadError> {
        response_kind(method, self.status, self.version, || self.framing.clone())
    }

    /// Whether the upstream connection may carry another request after this response
    /// (HTTP/1.1, no `Connection: close`, a body that does not end with the connection).
    pub fn keeps_alive(&self, kind: BodyKind) -> bool {
        self.version == Version::Http11 && !self.close && kind != BodyKind::CloseDelimited
    }

    /// The first value of field `name` (lowercase), for a head whose lines are plain.
    pub fn first(&self, name: &[u8]) -> Option<&[u8]> {
        if !self.plain {
            return None;
        }
        let fields = &self.bytes[self.fields.0 as usize..self.fields.1 as usize];
        fields.split(|&b| b == b'\n').find_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let value = line[colon + 1..].strip_suffix(b"\r")?;
            line[..colon]
                .eq_ignore_ascii_case(name)
                .then(|| value.strip_prefix(b" ").unwrap_or(value))
        })
    }

    /// The head for an HTTP/1 client, written to `out` as the field list would be after
    /// the hop-by-hop fields are stripped and the framing fields made to say `out_kind`
    /// (`chunked_ok`: the client takes chunked), with `Connection: close` when `close`
    /// and `Connection: keep-alive` for a kept HTTP/1.0 client. False (nothing written)
    /// when the bytes cannot stand for that: the caller takes [`WireHead::into_head`].
    pub fn encode_for_client(
        &self,
        out_kind: BodyKind,
        chunked_ok: bool,
        close: bool,
        client: Version,
        out: &mut BytesMut,
    ) -> bool {
        if !self.plain {
            return false;
        }
        let (keep_length, keep_coding) = match out_kind {
            // one `Transfer-Encoding: chunked` is sent on as it is, any other spelling
            // is rewritten into one (transfer_encoding_to_send)
            BodyKind::Chunked if chunked_ok => (false, self.te_chunked),
            BodyKind::Chunked | BodyKind::CloseDelimited => (false, false),
            // a length already said once, in its shortest form, is kept; anything else
            // is written again
            BodyKind::Length(n) => {
                let (a, b) = self.length_text;
                let text = &self.bytes[a as usize..b as usize];
                if self.lengths != 1 || text != decimal(n, &mut [0; 20]) {
                    return false;
                }
                (true, false)
            }
            BodyKind::Empty => (true, true),
        };
        if out_kind == BodyKind::Chunked && chunked_ok && !keep_coding {
            return false;
        }
        let reason = match &self.bytes[self.reason.0 as usize..self.reason.1 as usize] {
            b"" => reason_phrase(self.status).as_bytes(),
            r => r,
        };
        out.reserve(self.bytes.len() + 24);
        out.extend_from_slice(b"HTTP/1.1 ");
        put_status(out, self.status);
        out.extend_from_slice(reason);
        out.extend_from_slice(b"\r\n");
        let mut from = self.fields.0 as usize;
        for m in &self.marks[..usize::from(self.n_marks)] {
            let keep = match m.line {
                Line::HopByHop => false,
                Line::Length => keep_length,
                Line::Coding => keep_coding,
            };
            if !keep {
                out.extend_from_slice(&self.bytes[from..m.start as usize]);
                from = m.end as usize;
            }
        }
        out.extend_from_slice(&self.bytes[from..self.fields.1 as usize]);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if client == Version::Http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        true
    }

    /// The head as a field list (parsed again from its bytes, which parsed before).
    pub fn into_head(self) -> Result<ResponseHead, HeadError> {
        // it parsed under the caller's limits; these are no tighter (a field per line)
        let limits = Limits {
            max_head_size: self.bytes.len(),
            max_headers: self.bytes.iter().filter(|&&b| b == b'\n').count(),
        };
        match parse_response_with(&self.bytes, &limits, model_response)? {
            Some((head, _)) => Ok(head),
            None => Err(HeadError::Malformed("incomplete status line")),
        }
    }
}

/// Checks that the pass without httparse agrees with the httparse pass on `buf`: a head
/// it accepts must parse there to an equal `WireHead` of the same length. Panics if not
/// (for the fuzz targets and tests).
#[doc(hidden)]
pub fn plain_scan_agrees(buf: &[u8], limits: &Limits) {
    let window = &buf[..buf.len().min(limits.max_head_size)];
    let Some((fast, n)) = WireHead::scan_plain(window, limits) else {
        return;
    };
    let mut slots = vec![std::mem::MaybeUninit::uninit(); limits.max_headers];
    match httparse_response(buf.len(), window, limits, &mut slots, &WireHead::scan) {
        Ok(Some((slow, m))) => {
            assert_eq!(m, n, "head length of {:?}", String::from_utf8_lossy(buf));
            assert_eq!(format!("{slow:?}"), format!("{fast:?}"));
        }
        other => panic!(
            "{:?} passed the plain scan, httparse says {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_size: 4096,
        max_headers: 8,
    };

    const HEADS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 19:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: Mon, 07 Dec 2026 18:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6760-400\"\r\nAccept-Ranges: bytes\r\n\r\nbody",
        b"HTTP/1.0 404 Not Found\r\nConnection: close\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 204\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: a\tb \x80c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: x-a, close\r\nX-A: 1\r\nContent-Length: 1\r\nContent-Length: 01\r\n\r\n",
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: gzip, chunked\r\nKeep-Alive: timeout=5\r\nTE: x\r\nUpgrade: y\r\nTrailer: z\r\nProxy-Connection: a\r\nProxy-Authenticate: b\r\nX: c\r\nY: d\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ];

    #[test]
    fn plain_heads_skip_httparse() {
        for h in [HEADS[0], HEADS[1], HEADS[2], HEADS[3], HEADS[4]] {
            let Some((w, n)) = WireHead::scan_plain(h, &LIMITS) else {
                panic!("{:?} took httparse", String::from_utf8_lossy(h));
            };
            assert_eq!(&h[..n], &w.bytes[..]);
            plain_scan_agrees(h, &LIMITS);
        }
        // informational heads, more fields than allowed, whitespace around a value
        for h in [
            HEADS[6],
            HEADS[5],
            b"HTTP/1.1 200 OK\r\nA:  b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\n\r\n",
            b"\r\nHTTP/1.1 200 OK\r\n\r\n",
        ] {
            assert!(WireHead::scan_plain(h, &LIMITS).is_none());
        }
    }

    /// The field-list parse skips httparse for the same heads, informational ones too.
    #[test]
    fn field_list_heads_skip_httparse() {
        for h in [HEADS[0], HEADS[1], HEADS[2], HEADS[3], HEADS[4], HEADS[6]] {
            let mut slots = vec![std::mem::MaybeUninit::uninit(); 8];
            assert!(
                super::super::head::scan_plain_response(h, &mut slots).is_some(),
                "{:?} took httparse",
                String::from_utf8_lossy(h)
            );
        }
    }

    /// What follows a head in the read buffer, in the tests that want bytes there.
    const BODY: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef!";

    /// Every head above with each byte replaced by each of the bytes parsers trip on,
    /// and cut short at each length: wherever the plain scan says yes, httparse agrees.
    #[test]
    fn plain_scan_agrees_with_httparse_under_mutation() {
        // the scan for relaying as bytes and the one for the field list
        let both_agree = |b: &[u8], l: &Limits| {
            plain_scan_agrees(b, l);
            super::super::plain_response_agrees(b, l);
        };
        let swaps = b" \t\r\n:;,\x00\x01\x7f\x80\xff0a\"";
        for h in HEADS {
            for len in 0..=h.len() {
                both_agree(&h[..len], &LIMITS);
            }
            for at in 0..h.len() {
                for &b in swaps {
                    let mut m = h.to_vec();
                    m[at] = b;
                    both_agree(&m, &LIMITS);
                    // a body behind the head: every line is then long enough for
                    // `plain_line`'s 64-byte look
                    both_agree(&[&m[..], BODY].concat(), &LIMITS);
                    m.insert(at, b);
                    both_agree(&m, &LIMITS);
                    both_agree(&[&m[..], BODY].concat(), &LIMITS);
                }
            }
            for limits in [(40, 8), (4096, 1), (4096, 0)] {
                let l = Limits {
                    max_head_size: limits.0,
                    max_headers: limits.1,
                };
                both_agree(h, &l);
            }
        }
    }
}
