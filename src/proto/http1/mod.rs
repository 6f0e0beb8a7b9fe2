//! HTTP/1.x codec: head parsing (httparse), head encoding, body framing.
//!
//! API CONTRACT (used by src/proxy; keep signatures):
//! - `parse_request_head(buf, limits)` / `parse_response_head(buf, limits)`:
//!   `Ok(None)` = need more bytes; `Ok(Some((head, n)))` = head parsed from `buf[..n]`;
//!   errors distinguish too-large head (-> 431), too many headers (-> 431) and malformed (-> 400).
//! - `encode_request_head` / `encode_response_head` append wire bytes, header case/order kept.
//! - `request_body_kind` / `response_body_kind` decide framing per RFC 9112 section 6.
//! - `BodyDecoder::scan` validates framing without copying, telling the caller how many
//!   leading bytes of the buffer belong to the body (to forward verbatim);
//!   `BodyDecoder::decode` strips the framing (for plugins that read the body).
//! - `encode_chunk` / `encode_last_chunk` write chunked framing.

mod body;
mod head;

pub use body::{encode_chunk, encode_last_chunk, BodyDecoder, BodyError, BodyKind, Decoded, Scan};
pub use head::{
    encode_request_head, encode_response_head, parse_request_head, parse_response_head,
    request_body_kind, response_body_kind, HeadError, Limits,
};

#[cfg(test)]
mod tests;
