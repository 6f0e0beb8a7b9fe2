//! Length-prefixed messages (gRPC over HTTP/2, "Length-Prefixed-Message"): one flag byte,
//! a 4-byte big-endian length, the payload. gRPC-web adds a last frame with flag 0x80
//! whose payload is the trailers as an HTTP/1 header block.
//!
//! The decoder takes body chunks as they arrive and gives one event per message whatever
//! the chunking. A message over the size limit is not buffered: its prefix and then its
//! bytes come out as they arrive, for the caller to relay unhooked.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes in the prefix of every message: flag, then a u32 length.
pub const HEADER_LEN: usize = 5;

/// Flag bit 0: the payload is compressed with the call's grpc-encoding.
const COMPRESSED: u8 = 0x01;
/// Flag bit 7 (gRPC-web): the frame holds the trailers.
const TRAILERS: u8 = 0x80;

/// One whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Flag bit 0: the payload is compressed.
    pub compressed: bool,
    /// The payload as framed (still compressed when `compressed`).
    pub payload: Bytes,
    /// The exact prefix and payload bytes, for passing the message on unchanged.
    pub wire: Bytes,
}

/// The trailer frame of a gRPC-web body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailers {
    /// `name: value` lines in order, names lowercased, values trimmed.
    pub fields: Vec<(String, String)>,
    /// The exact frame bytes.
    pub wire: Bytes,
}

/// What the decoder found in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message.
    Message(Message),
    /// The gRPC-web trailer frame; nothing may follow it.
    Trailers(Trailers),
    /// A frame over the size limit starts: relay `header`, then the `Passthrough` bytes.
    Oversize {
        /// The 5 prefix bytes as received.
        header: Bytes,
        /// Flag bit 0.
        compressed: bool,
        /// Flag bit 7 (a gRPC-web trailer frame too big to parse).
        trailers: bool,
        /// The payload length the prefix announced.
        len: usize,
    },
    /// Payload bytes of an oversize frame, in order; `last` on the piece that ends it.
    Passthrough {
        /// The bytes as received.
        data: Bytes,
        /// This piece completes the frame.
        last: bool,
    },
}

impl Event {
    /// The bytes of the body this event stands for; all of them in order are the body.
    pub fn wire(&self) -> &Bytes {
        match self {
            Event::Message(m) => &m.wire,
            Event::Trailers(t) => &t.wire,
            Event::Oversize { header, .. } => header,
            Event::Passthrough { data, .. } => data,
        }
    }
}

/// A body that breaks the framing; the call cannot go on as messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Flag bits other than 0 (and 7 in gRPC-web) are reserved.
    #[error("reserved flag bits set in message prefix: {0:#04x}")]
    BadFlags(u8),
    /// Flag 0x80 in a plain gRPC body, where trailers travel as HTTP/2 trailers.
    #[error("trailer frame (flag 0x80) in a gRPC body")]
    TrailersNotAllowed,
    /// A compressed trailer frame: the header block must be readable as is.
    #[error("compressed trailer frame")]
    CompressedTrailers,
    /// Bytes after the gRPC-web trailer frame, which must end the body.
    #[error("data after the trailer frame")]
    DataAfterTrailers,
    /// A trailer line that is not `name: value`.
    #[error("malformed trailer line: {0:?}")]
    BadTrailerLine(String),
    /// The body ended inside a frame.
    #[error("body ended inside a message ({0} bytes of it received)")]
    Truncated(usize),
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Between frames or inside one, with its bytes so far in `buf`.
    Frames,
    /// Inside an oversize frame with this many payload bytes still to relay.
    Oversize(usize),
    /// The trailer frame was seen (or an oversize one is done relaying).
    Ended,
    /// An error was returned; every later call returns it again.
    Failed(FrameError),
}

/// Cuts a body into messages as its chunks arrive.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    web: bool,
    /// The start of an unfinished frame (empty at a frame boundary).
    buf: BytesMut,
    state: State,
    /// Oversize trailer frame being relayed: the body must end after it.
    end_after_oversize: bool,
    /// Payload length of the oversize frame being relayed.
    oversize_len: usize,
}

impl Decoder {
    /// A decoder for gRPC (`web` false) or gRPC-web bodies (the base64 of grpc-web-text
    /// already undone); payloads over `max_message` bytes are relayed, not buffered.
    pub fn new(max_message: usize, web: bool) -> Decoder {
        Decoder {
            max_message,
            web,
            buf: BytesMut::new(),
            state: State::Frames,
            end_after_oversize: false,
            oversize_len: 0,
        }
    }

    /// Bytes held for an unfinished frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Whether the body may end here: at a frame boundary, or after the trailers.
    pub fn at_boundary(&self) -> bool {
        match self.state {
            State::Frames => self.buf.is_empty(),
            State::Ended => true,
            State::Oversize(_) | State::Failed(_) => false,
        }
    }

    /// Whether the gRPC-web trailer frame has been seen.
    pub fn trailers_seen(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Adds a chunk of the body, appending the events it completes to `out`.
    ///
    /// On error the events before the fault are already in `out`; the decoder stays
    /// failed.
    pub fn feed(&mut self, mut data: Bytes, out: &mut Vec<Event>) -> Result<(), FrameError> {
        while !data.is_empty() {
            match self.state {
                State::Frames => {
                    if let Err(e) = self.frames(&mut data, out) {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                }
                State::Oversize(remaining) => {
                    let n = remaining.min(data.len());
                    let last = n == remaining;
                    out.push(Event::Passthrough {
                        data: data.split_to(n),
                        last,
                    });
                    self.state = match (last, self.end_after_oversize) {
                        (false, _) => State::Oversize(remaining - n),
                        (true, false) => State::Frames,
                        (true, true) => State::Ended,
                    };
                }
                State::Ended => {
                    self.state = State::Failed(FrameError::DataAfterTrailers);
                    return Err(FrameError::DataAfterTrailers);
                }
                State::Failed(ref e) => return Err(e.clone()),
            }
        }
        Ok(())
    }

    /// The body ended: an error when it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::Oversize(remaining) => Err(FrameError::Truncated(
                HEADER_LEN + self.oversize_len - remaining,
            )),
            _ if !self.buf.is_empty() => Err(FrameError::Truncated(self.buf.len())),
            _ => Ok(()),
        }
    }

    /// Takes frames off `data` while in `State::Frames`; returns when `data` is used up
    /// or the state changed. Slices `data` itself when a frame lies whole in it, and
    /// copies into `buf` only what straddles chunks.
    fn frames(&mut self, data: &mut Bytes, out: &mut Vec<Event>) -> Result<(), FrameError> {
        while matches!(self.state, State::Frames) && !data.is_empty() {
            if self.buf.len() < HEADER_LEN {
                let take = (HEADER_LEN - self.buf.len()).min(data.len());
                if self.buf.is_empty() && data.len() >= HEADER_LEN {
                    // Fast path: the prefix (and maybe the frame) is in this chunk.
                    let (flags, len) = self.prefix(&data[..HEADER_LEN])?;
                    if len > self.max_message {
                        self.start_oversize(data.split_to(HEADER_LEN), flags, len, out);
                        continue;
                    }
                    if data.len() >= HEADER_LEN + len {
                        let wire = data.split_to(HEADER_LEN + len);
                        out.push(self.event(flags, wire)?);
                        continue;
                    }
                }
                self.buf.extend_from_slice(&data.split_to(take));
                if self.buf.len() < HEADER_LEN {
                    return Ok(());
                }
            }
            let (flags, len) = self.prefix(&self.buf[..HEADER_LEN])?;
            if len > self.max_message {
                let header = self.buf.split().freeze();
                self.start_oversize(header, flags, len, out);
                continue;
            }
            let total = HEADER_LEN + len;
            // One allocation for the whole frame; `len` is within `max_message`.
            self.buf.reserve(total - self.buf.len());
            let take = (total - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            if self.buf.len() == total {
                let wire = self.buf.split().freeze();
                out.push(self.event(flags, wire)?);
            }
        }
        Ok(())
    }

    /// Flags and payload length of a 5-byte prefix, the flags checked.
    fn prefix(&self, p: &[u8]) -> Result<(u8, usize), FrameError> {
        let flags = p[0];
        let allowed = if self.web {
            COMPRESSED | TRAILERS
        } else {
            COMPRESSED
        };
        if flags & !(COMPRESSED | TRAILERS) != 0 {
            return Err(FrameError::BadFlags(flags));
        }
        if flags & !allowed != 0 {
            return Err(FrameError::TrailersNotAllowed);
        }
        if flags == TRAILERS | COMPRESSED {
            return Err(FrameError::CompressedTrailers);
        }
        let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
        Ok((flags, len))
    }

    fn start_oversize(&mut self, header: Bytes, flags: u8, len: usize, out: &mut Vec<Event>) {
        let trailers = flags & TRAILERS != 0;
        out.push(Event::Oversize {
            header,
            compressed: flags & COMPRESSED != 0,
            trailers,
            len,
        });
        self.end_after_oversize = trailers;
        self.oversize_len = len;
        // An empty payload cannot be oversize (its length is 0 <= any limit), so there is
        // always a Passthrough with `last` to come.
        self.state = State::Oversize(len);
    }

    /// The event of a whole frame.
    fn event(&mut self, flags: u8, wire: Bytes) -> Result<Event, FrameError> {
        let payload = wire.slice(HEADER_LEN..);
        if flags & TRAILERS != 0 {
            let fields = parse_trailers(&payload)?;
            self.state = State::Ended;
            return Ok(Event::Trailers(Trailers { fields, wire }));
        }
        Ok(Event::Message(Message {
            compressed: flags & COMPRESSED != 0,
            payload,
            wire,
        }))
    }
}

/// The fields of a gRPC-web trailer block: `name: value` lines ended by CRLF (a bare LF
/// is accepted too); empty lines are skipped.
pub fn parse_trailers(block: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut fields = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let bad = || FrameError::BadTrailerLine(String::from_utf8_lossy(line).into_owned());
        let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(bad());
        }
        // RFC 9110 5.5: CR or NUL in a value is replaced by SP (as encode_trailers does),
        // so a value never carries a line break on to HTTP/1 or h2 trailers.
        let value = String::from_utf8_lossy(&line[colon + 1..]).replace(['\r', '\0'], " ");
        fields.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(fields)
}

/// An RFC 9110 token character (what a header name is made of).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `payload` framed as one message to `out`.
///
/// Panics when the payload is over 4 GiB, which the 32-bit length cannot carry.
pub fn encode_message_into(payload: &[u8], compressed: bool, out: &mut BytesMut) {
    let len = u32::try_from(payload.len()).expect("gRPC message over 4 GiB");
    out.reserve(HEADER_LEN + payload.len());
    out.put_u8(if compressed { COMPRESSED } else { 0 });
    out.put_u32(len);
    out.put_slice(payload);
}

/// `payload` framed as one message.
pub fn encode_message(payload: &[u8], compressed: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    encode_message_into(payload, compressed, &mut out);
    out.freeze()
}

/// A gRPC-web trailer frame carrying `fields` as `name: value\r\n` lines.
///
/// CR, LF and NUL in names or values become spaces: a plugin-supplied value must not
/// be able to add trailer lines of its own.
pub fn encode_trailers<N: AsRef<str>, V: AsRef<str>>(fields: &[(N, V)]) -> Bytes {
    let mut block = Vec::new();
    let clean = |s: &str, block: &mut Vec<u8>| {
        block.extend(s.bytes().map(|b| match b {
            b'\r' | b'\n' | 0 => b' ',
            b => b,
        }))
    };
    for (name, value) in fields {
        clean(name.as_ref(), &mut block);
        block.extend_from_slice(b": ");
        clean(value.as_ref(), &mut block);
        block.extend_from_slice(b"\r\n");
    }
    let len = u32::try_from(block.len()).expect("gRPC-web trailers over 4 GiB");
    let mut out = BytesMut::with_capacity(HEADER_LEN + block.len());
    out.put_u8(TRAILERS);
    out.put_u32(len);
    out.put_slice(&block);
    out.freeze()
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
