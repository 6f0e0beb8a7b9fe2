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

use super::head::{
    decimal, model_response, parse_response_with, put_status, raw_reason, reason as reason_phrase,
    response_kind, version, Framing,
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
    parse_response_with(buf, limits, |res, window, n| {
        if res.code.unwrap_or_default() < 200 {
            ParsedResponse::Head(model_response(res, window, n))
        } else {
            ParsedResponse::Wire(Box::new(WireHead::scan(res, window, n)))
        }
    })
}

impl WireHead {
    /// One pass over httparse's fields for a complete head `window[..n]`.
    fn scan(res: &httparse::Response<'_, '_>, window: &[u8], n: usize) -> WireHead {
        let base = window.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(base);
        let reason = res.reason.unwrap_or_default();
        let mut w = WireHead {
            bytes: Bytes::copy_from_slice(&window[..n]),
            version: version(res.version.unwrap_or(1)),
            status: res.code.unwrap_or_default(),
            reason: (
                at(reason.as_bytes()) as u32,
                (at(reason.as_bytes()) + reason.len()) as u32,
            ),
            fields: (0, 0),
            marks: [Mark {
                start: 0,
                end: 0,
                line: Line::HopByHop,
            }; MAX_MARKS],
            n_marks: 0,
            framing: Ok(Framing::default()),
            close: false,
            // u32 offsets; heads are far smaller under any sane max_head_size
            plain: n < u32::MAX as usize && reason.is_ascii(),
            te_chunked: false,
            lengths: 0,
            length_text: (0, 0),
        };
        if reason.is_empty() {
            w.reason = (0, 0);
            // httparse blanks a reason holding obs-text: such a head takes the field list
            w.plain &= raw_reason(&w.bytes).is_empty();
        }
        let end_of_fields = n - 2;
        let mut next = res
            .headers
            .first()
            .map_or(end_of_fields, |h| at(h.name.as_bytes()));
        w.fields.0 = next as u32;
        let mut listed: [&[u8]; 2] = [b""; 2];
        let mut n_listed = 0;
        let mut codings = 0;
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            let start = at(name);
            let name_end = start + name.len();
            let value_at = at(h.value);
            let value_end = value_at + h.value.len();
            w.plain &= start == next
                && !h.value.is_empty()
                && value_at == name_end + 2
                && window.get(name_end..value_at) == Some(b": ")
                && window.get(value_end..value_end + 2) == Some(b"\r\n");
            next = value_end + 2;
            let bit = known_bit(name);
            if bit == 0 {
                continue;
            }
            let line = if bit & known_names::HOP_BY_HOP != 0 {
                if bit & (known_names::CONNECTION | known_names::PROXY_CONNECTION) != 0 {
                    for t in h.value.split(|&b| b == b',') {
                        let t = t.trim_ascii();
                        if bit == known_names::CONNECTION && t.eq_ignore_ascii_case(b"close") {
                            w.close = true;
                        }
                        let framing = known_names::TRANSFER_ENCODING | known_names::CONTENT_LENGTH;
                        if t.is_empty() || known_bit(t) & (known_names::HOP_BY_HOP | framing) != 0 {
                            continue;
                        }
                        // a name listed in Connection goes too (checked below)
                        match listed.get_mut(n_listed) {
                            Some(slot) => *slot = t,
                            None => w.plain = false,
                        }
                        n_listed += 1;
                    }
                }
                Line::HopByHop
            } else if bit == known_names::CONTENT_LENGTH {
                if let Ok(f) = &mut w.framing {
                    if let Err(e) = f.content_length(h.value) {
                        w.framing = Err(e);
                    }
                }
                w.lengths = w.lengths.saturating_add(1);
                w.length_text = (value_at as u32, value_end as u32);
                Line::Length
            } else if bit == known_names::TRANSFER_ENCODING {
                if let Ok(f) = &mut w.framing {
                    if let Err(e) = f.transfer_encoding(h.value) {
                        w.framing = Err(e);
                    }
                }
                codings += 1;
                w.te_chunked = codings == 1 && h.value == b"chunked";
                Line::Coding
            } else {
                // request-only names (Host, Expect) relay as they are
                continue;
            };
            match w.marks.get_mut(usize::from(w.n_marks)) {
                Some(m) => {
                    *m = Mark {
                        start: start as u32,
                        end: next as u32,
                        line,
                    }
                }
                None => w.plain = false,
            }
            w.n_marks = w.n_marks.saturating_add(1);
        }
        w.plain &= next == end_of_fields && window.get(end_of_fields..n) == Some(b"\r\n");
        w.fields.1 = end_of_fields as u32;
        // a field named in Connection would have to go as well: rare enough to take the
        // field list for
        if w.plain && n_listed > 0 {
            let named = |name: &[u8]| {
                listed[..n_listed.min(2)]
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(name))
            };
            w.plain = !res.headers.iter().any(|h| named(h.name.as_bytes()));
        }
        w
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
