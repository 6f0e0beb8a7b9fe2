//! Request and response heads.

use crate::http::{RequestHead, ResponseHead};
use bytes::BytesMut;

use super::BodyKind;

/// Limits applied while parsing a head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest head accepted, in bytes (request line + headers + CRLFCRLF).
    pub max_head_size: usize,
    /// Largest number of header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_size: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// Why a head was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head is larger than `max_head_size` (answer 431).
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    /// More than `max_headers` fields (answer 431).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Not valid HTTP/1.x (answer 400); the text says what was wrong.
    #[error("malformed head: {0}")]
    Malformed(&'static str),
}

/// Parses a request head. `Ok(None)`: incomplete, read more.
pub fn parse_request_head(
    _buf: &[u8],
    _limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    todo!()
}

/// Parses a response head. `Ok(None)`: incomplete, read more.
pub fn parse_response_head(
    _buf: &[u8],
    _limits: &Limits,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    todo!()
}

/// Appends the wire form of a request head (ends with CRLFCRLF).
pub fn encode_request_head(_head: &RequestHead, _out: &mut BytesMut) {
    todo!()
}

/// Appends the wire form of a response head (ends with CRLFCRLF).
pub fn encode_response_head(_head: &ResponseHead, _out: &mut BytesMut) {
    todo!()
}

/// Body framing of a request (RFC 9112 6.3); conflicting/invalid framing is an error (400).
pub fn request_body_kind(_head: &RequestHead) -> Result<BodyKind, HeadError> {
    todo!()
}

/// Body framing of a response to a request with `method` (HEAD, CONNECT 2xx, 1xx/204/304 have none).
pub fn response_body_kind(_method: &[u8], _head: &ResponseHead) -> Result<BodyKind, HeadError> {
    todo!()
}
