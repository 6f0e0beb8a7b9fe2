//! Body framing: Content-Length, chunked (with trailers), close-delimited.
//!
//! One state machine serves both modes. It consumes every byte it is given until the
//! body ends, keeping partial chunk-size lines and trailer sections in its own state, so
//! a caller never has to hold back bytes: `consumed < buf.len()` only when `done`.

use crate::http::Headers;
use bytes::{BufMut, Bytes, BytesMut};

use super::head::put_fields;

/// How a body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Until the peer closes (responses only).
    CloseDelimited,
}

/// Framing error in a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Bad chunk size line, missing CRLF, oversized trailers ...
    #[error("bad chunked framing: {0}")]
    BadChunk(&'static str),
    /// The peer closed before the body was complete.
    #[error("body truncated by end of stream")]
    Truncated,
}

/// Result of `BodyDecoder::scan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Leading bytes of the buffer that belong to the body (forward them verbatim).
    pub consumed: usize,
    /// True when the body ends within those bytes.
    pub done: bool,
}

/// Result of `BodyDecoder::decode`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Payload pieces with framing removed (zero-copy slices of the input).
    pub data: Vec<Bytes>,
    /// Trailers, once the last chunk's trailer section is complete.
    pub trailers: Option<Headers>,
    /// True when the body is complete.
    pub done: bool,
}

/// Longest chunk-size line (size, extensions, CRLF) accepted; extensions are ignored, so
/// this only has to leave room for what real senders attach.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted, final CRLF included.
const MAX_TRAILERS: usize = 64 * 1024;
/// Most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Length and close-delimited bodies: this many payload bytes left (u64::MAX when
    /// close-delimited, which is never reached).
    Raw(u64),
    /// Hex digits of a chunk size; `line` counts the bytes of the size line so far.
    Size {
        size: u64,
        digits: bool,
        line: usize,
    },
    /// Whitespace after the size, before an extension or the CR.
    SizeWs { size: u64, line: usize },
    /// Inside chunk extensions, which are skipped.
    Ext { size: u64, line: usize },
    /// CR of the size line seen; LF must follow.
    SizeLf { size: u64 },
    /// Payload bytes of the current chunk left.
    Data(u64),
    /// CR after chunk data expected.
    DataCr,
    /// LF after chunk data expected.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerLineStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// CR seen; LF must follow. `last` when it ends the trailer section.
    TrailerLf { last: bool },
    /// The body is complete.
    Done,
    /// A framing error was found; every later call reports it again.
    Failed(&'static str),
}

/// Incremental body decoder; one per message.
///
/// A decoder is used in one mode for its whole life: either `scan` (forward the framed
/// bytes verbatim) or `decode` (strip framing), never a mix on the same body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: BodyKind,
    state: State,
    /// Trailer section bytes seen so far (only when the section holds fields).
    trailer_buf: Vec<u8>,
    trailer_fields: usize,
    /// Parsed trailers waiting to be handed out by `decode`.
    trailers: Option<Headers>,
}

impl BodyDecoder {
    /// Starts decoding a body of `kind`.
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Raw(n),
            BodyKind::CloseDelimited => State::Raw(u64::MAX),
            BodyKind::Chunked => State::Size {
                size: 0,
                digits: false,
                line: 0,
            },
        };
        BodyDecoder {
            kind,
            state,
            trailer_buf: Vec::new(),
            trailer_fields: 0,
            trailers: None,
        }
    }

    /// The framing this decoder was made for.
    pub fn kind(&self) -> BodyKind {
        self.kind
    }

    /// Validates framing in `buf` without copying or consuming; see [`Scan`].
    /// For CloseDelimited every byte belongs to the body and `done` stays false
    /// (the caller ends the body on EOF via `eof`).
    pub fn scan(&mut self, buf: &[u8]) -> Result<Scan, BodyError> {
        let consumed = self.run(buf, false, |_, _| {})?;
        Ok(Scan {
            consumed,
            done: self.state == State::Done,
        })
    }

    /// Consumes body bytes from the front of `buf`, strips framing, returns the payload.
    /// Trailers are returned once, by the call that completes the body; they are `None`
    /// when the trailer section is empty.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let consumed = self.run(buf, true, |start, end| ranges.push((start, end)))?;
        // One freeze, then every payload piece is a slice of it: no copy.
        let framed = buf.split_to(consumed).freeze();
        let data = ranges
            .into_iter()
            .map(|(start, end)| framed.slice(start..end))
            .collect();
        Ok(Decoded {
            data,
            trailers: self.trailers.take(),
            done: self.state == State::Done,
        })
    }

    /// Follows a copy of a body's wire bytes without consuming them (a recorder's
    /// view): hands each payload slice to `payload` (shared, not copied) and says
    /// whether the body ended. Trailers are kept for [`BodyDecoder::take_trailers`].
    pub fn follow(
        &mut self,
        wire: &Bytes,
        mut payload: impl FnMut(Bytes),
    ) -> Result<bool, BodyError> {
        self.run(wire, true, |start, end| payload(wire.slice(start..end)))?;
        Ok(self.state == State::Done)
    }

    /// Trailers parsed by [`BodyDecoder::follow`], once.
    pub fn take_trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }

    /// The peer closed: Ok when that legally ends the body (CloseDelimited), else an error.
    pub fn eof(&self) -> Result<(), BodyError> {
        match self.state {
            State::Done => Ok(()),
            State::Raw(_) if self.kind == BodyKind::CloseDelimited => Ok(()),
            State::Failed(why) => Err(BodyError::BadChunk(why)),
            _ => Err(BodyError::Truncated),
        }
    }

    /// Payload bytes that come next with no framing among them: the rest of a Length
    /// body or of the current chunk (`u64::MAX` for close-delimited). They can be
    /// forwarded verbatim without being looked at; see [`BodyDecoder::skip_opaque`].
    pub fn opaque_run(&self) -> u64 {
        match self.state {
            State::Raw(n) | State::Data(n) => n,
            _ => 0,
        }
    }

    /// Records that `n` bytes of the [`BodyDecoder::opaque_run`] went by unscanned.
    pub fn skip_opaque(&mut self, n: u64) {
        self.state = match self.state {
            State::Raw(u64::MAX) if self.kind == BodyKind::CloseDelimited => State::Raw(u64::MAX),
            State::Raw(left) if n >= left => State::Done,
            State::Raw(left) => State::Raw(left - n),
            State::Data(left) if n >= left => State::DataCr,
            State::Data(left) => State::Data(left - n),
            other => other,
        };
    }

    /// Why the framing is broken, once a scan or decode has found it so.
    pub fn fault(&self) -> Option<&'static str> {
        match self.state {
            State::Failed(why) => Some(why),
            _ => None,
        }
    }

    /// True once the whole body was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances over `buf`, reporting payload ranges to `data`; returns the bytes used.
    fn run(
        &mut self,
        buf: &[u8],
        keep_trailers: bool,
        mut data: impl FnMut(usize, usize),
    ) -> Result<usize, BodyError> {
        if let State::Failed(why) = self.state {
            return Err(BodyError::BadChunk(why));
        }
        let mut i = 0;
        // Every step consumes at least one byte, so this ends.
        while i < buf.len() && self.state != State::Done {
            let before = i;
            if let Err(why) = self.step(buf, &mut i, keep_trailers, &mut data) {
                self.state = State::Failed(why);
                // the good bytes before the fault are handed out first, so a relay
                // forwards them; the error comes with the next call
                if before > 0 {
                    return Ok(before);
                }
                return Err(BodyError::BadChunk(why));
            }
        }
        Ok(i)
    }

    /// One transition: consumes at least one byte of `buf[*i..]` unless the body is over.
    fn step(
        &mut self,
        buf: &[u8],
        i: &mut usize,
        keep_trailers: bool,
        data: &mut impl FnMut(usize, usize),
    ) -> Result<(), &'static str> {
        let start = *i;
        let avail = (buf.len() - start) as u64;
        match self.state {
            State::Raw(left) => {
                let take = left.min(avail);
                // take <= avail, which came from a usize.
                let end = start + take as usize;
                data(start, end);
                *i = end;
                self.state = if self.kind == BodyKind::CloseDelimited {
                    State::Raw(left)
                } else if take == left {
                    State::Done
                } else {
                    State::Raw(left - take)
                };
                return Ok(());
            }
            State::Data(left) => {
                let take = left.min(avail);
                let end = start + take as usize;
                data(start, end);
                *i = end;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                return Ok(());
            }
            // run() never steps these.
            State::Done | State::Failed(_) => return Ok(()),
            _ => {}
        }
        let b = buf[start];
        *i = start + 1;
        self.state = match self.state {
            State::Size { .. }
            | State::SizeWs { .. }
            | State::Ext { .. }
            | State::SizeLf { .. } => size_line(self.state, b)?,
            State::DataCr => {
                if b != b'\r' {
                    return Err("chunk data not followed by CRLF");
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err("chunk data not followed by CRLF");
                }
                State::Size {
                    size: 0,
                    digits: false,
                    line: 0,
                }
            }
            State::TrailerLineStart | State::TrailerLine | State::TrailerLf { .. } => {
                self.trailer_step(buf, start, i, keep_trailers)?
            }
            State::Raw(_) | State::Data(_) | State::Done | State::Failed(_) => self.state,
        };
        Ok(())
    }

    /// One byte of the trailer section (`buf[start]`; a trailer line is copied whole).
    #[inline]
    fn trailer_step(
        &mut self,
        buf: &[u8],
        start: usize,
        i: &mut usize,
        keep_trailers: bool,
    ) -> Result<State, &'static str> {
        let b = buf[start];
        Ok(match self.state {
            State::TrailerLineStart => {
                if b == b'\r' {
                    State::TrailerLf { last: true }
                } else if b == b'\n' {
                    return Err("bare LF in trailer section");
                } else {
                    self.trailer_fields += 1;
                    if self.trailer_fields > MAX_TRAILER_FIELDS {
                        return Err("too many trailer fields");
                    }
                    self.push_trailer(b)?;
                    State::TrailerLine
                }
            }
            State::TrailerLine => {
                // Copy the rest of the line in one go; trailer sections are rare and small.
                let rest = &buf[start..];
                let n = rest
                    .iter()
                    .position(|&c| c == b'\r' || c == b'\n')
                    .unwrap_or(rest.len());
                if self.trailer_buf.len() + n + 1 > MAX_TRAILERS {
                    return Err("trailer section too large");
                }
                self.trailer_buf.extend_from_slice(&rest[..n]);
                *i = start + n;
                match rest.get(n) {
                    None => State::TrailerLine,
                    Some(b'\r') => {
                        self.push_trailer(b'\r')?;
                        *i += 1;
                        State::TrailerLf { last: false }
                    }
                    Some(_) => return Err("bare LF in trailer section"),
                }
            }
            State::TrailerLf { last } => {
                if b != b'\n' {
                    return Err("trailer line not ended by CRLF");
                }
                if last {
                    if !self.trailer_buf.is_empty() {
                        self.push_trailer(b'\r')?;
                        self.push_trailer(b'\n')?;
                        self.finish_trailers(keep_trailers)?;
                    }
                    State::Done
                } else {
                    self.push_trailer(b'\n')?;
                    State::TrailerLineStart
                }
            }
            other => other,
        })
    }

    fn push_trailer(&mut self, b: u8) -> Result<(), &'static str> {
        if self.trailer_buf.len() >= MAX_TRAILERS {
            return Err("trailer section too large");
        }
        self.trailer_buf.push(b);
        Ok(())
    }

    /// Validates the complete trailer section (same rules as header fields) and keeps the
    /// parsed fields for `decode`.
    fn finish_trailers(&mut self, keep: bool) -> Result<(), &'static str> {
        let raw = Bytes::from(std::mem::take(&mut self.trailer_buf));
        let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let fields = match httparse::parse_headers(&raw, &mut slots) {
            Ok(httparse::Status::Complete((n, fields))) if n == raw.len() => fields,
            _ => return Err("invalid trailer field"),
        };
        // RFC 9110 6.5.1: framing and routing cannot come after the content; a hop that
        // merged these into the header section would frame or route by them
        if fields.iter().any(|f| banned_trailer(f.name.as_bytes())) {
            return Err("framing or Host field in trailer section");
        }
        if keep {
            let base = raw.as_ptr() as usize;
            let cut = |s: &[u8]| {
                let start = (s.as_ptr() as usize).wrapping_sub(base);
                match start.checked_add(s.len()) {
                    Some(end) if !s.is_empty() && end <= raw.len() => raw.slice(start..end),
                    _ => Bytes::copy_from_slice(s),
                }
            };
            let mut headers = Headers::with_capacity(fields.len());
            for f in fields.iter() {
                headers.push_wire(cut(f.name.as_bytes()), cut(f.value));
            }
            self.trailers = Some(headers);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends one chunk (size line, data, CRLF); empty data writes nothing.
pub fn encode_chunk(data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        // A zero-size chunk would end the body.
        return;
    }
    let mut digits = [0u8; 16];
    let mut n = data.len() as u64;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.reserve(digits.len() - at + data.len() + 4);
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the last chunk and trailers ("0\r\n" + trailers + "\r\n"). Trailers named
/// like framing or Host (from an h2 peer or a plugin) are left out: the decoder refuses
/// them from HTTP/1 peers, and the next hop must not see them either (RFC 9110 6.5.1).
pub fn encode_last_chunk(trailers: Option<&Headers>, out: &mut BytesMut) {
    out.put_slice(b"0\r\n");
    match trailers {
        Some(t) if t.iter().any(|f| banned_trailer(&f.name)) => {
            let mut kept = t.clone();
            for name in BANNED_TRAILERS {
                kept.remove(name);
            }
            put_fields(out, &kept);
        }
        Some(t) => put_fields(out, t),
        None => {}
    }
    out.put_slice(b"\r\n");
}

/// Fields that cannot come after the content (RFC 9110 6.5.1) and that a hop merging
/// trailers into the head would frame or route by.
const BANNED_TRAILERS: [&str; 3] = ["content-length", "transfer-encoding", "host"];

fn banned_trailer(name: &[u8]) -> bool {
    BANNED_TRAILERS
        .iter()
        .any(|b| name.eq_ignore_ascii_case(b.as_bytes()))
}

/// One byte of a chunk-size line: the size, whitespace, an extension, its CRLF.
#[inline]
fn size_line(state: State, b: u8) -> Result<State, &'static str> {
    Ok(match state {
        State::Size { size, digits, line } => {
            if line >= MAX_CHUNK_LINE {
                return Err("chunk size line too long");
            }
            match hex(b) {
                Some(d) => {
                    if size > u64::MAX >> 4 {
                        return Err("chunk size overflow");
                    }
                    State::Size {
                        size: size << 4 | u64::from(d),
                        digits: true,
                        line: line + 1,
                    }
                }
                None if !digits => return Err("missing chunk size"),
                None => match b {
                    b' ' | b'\t' => State::SizeWs {
                        size,
                        line: line + 1,
                    },
                    b';' => State::Ext {
                        size,
                        line: line + 1,
                    },
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err("chunk size line not ended by CRLF"),
                    _ => return Err("invalid character in chunk size"),
                },
            }
        }
        State::SizeWs { size, line } => {
            if line >= MAX_CHUNK_LINE {
                return Err("chunk size line too long");
            }
            match b {
                b' ' | b'\t' => State::SizeWs {
                    size,
                    line: line + 1,
                },
                b';' => State::Ext {
                    size,
                    line: line + 1,
                },
                b'\r' => State::SizeLf { size },
                _ => return Err("invalid character after chunk size"),
            }
        }
        State::Ext { size, line } => {
            if line >= MAX_CHUNK_LINE {
                return Err("chunk extension too long");
            }
            match b {
                b'\r' => State::SizeLf { size },
                // A lone LF or other control byte in an extension is where parsers
                // disagree on where the line ends, so it is refused.
                b'\t' => State::Ext {
                    size,
                    line: line + 1,
                },
                0..=0x1f | 0x7f => return Err("control character in chunk extension"),
                _ => State::Ext {
                    size,
                    line: line + 1,
                },
            }
        }
        State::SizeLf { size } => {
            if b != b'\n' {
                return Err("chunk size line not ended by CRLF");
            }
            if size == 0 {
                State::TrailerLineStart
            } else {
                State::Data(size)
            }
        }
        other => other,
    })
}
