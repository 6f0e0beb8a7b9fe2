//! Body framing: Content-Length, chunked (with trailers), close-delimited.

use crate::http::Headers;
use bytes::{Bytes, BytesMut};

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

/// Incremental body decoder; one per message.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    _kind: BodyKind,
}

impl BodyDecoder {
    /// Starts decoding a body of `kind`.
    pub fn new(kind: BodyKind) -> Self {
        BodyDecoder { _kind: kind }
    }

    /// Validates framing in `buf` without copying or consuming; see [`Scan`].
    /// For CloseDelimited every byte belongs to the body and `done` stays false
    /// (the caller ends the body on EOF via `eof`).
    pub fn scan(&mut self, _buf: &[u8]) -> Result<Scan, BodyError> {
        todo!()
    }

    /// Consumes body bytes from the front of `buf`, strips framing, returns the payload.
    pub fn decode(&mut self, _buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        todo!()
    }

    /// The peer closed: Ok when that legally ends the body (CloseDelimited), else an error.
    pub fn eof(&self) -> Result<(), BodyError> {
        todo!()
    }

    /// True once the whole body was seen.
    pub fn is_done(&self) -> bool {
        todo!()
    }
}

/// Appends one chunk (size line, data, CRLF); empty data writes nothing.
pub fn encode_chunk(_data: &[u8], _out: &mut BytesMut) {
    todo!()
}

/// Appends the last chunk and trailers ("0\r\n" + trailers + "\r\n").
pub fn encode_last_chunk(_trailers: Option<&Headers>, _out: &mut BytesMut) {
    todo!()
}
