//! HTTP/1.x codec: head parsing (httparse), head encoding, body framing.
//!
//! API CONTRACT (used by src/proxy; keep signatures):
//! - `parse_request_head(buf, limits)` / `parse_response_head(buf, limits)`:
//!   `Ok(None)` = need more bytes; `Ok(Some((head, n)))` = head parsed from `buf[..n]`;
//!   errors distinguish too-large head (-> 431), too many headers (-> 431) and malformed (-> 400).
//! - `parse_response_wire(buf, limits)`: the same parse, keeping a final head as the bytes
//!   it arrived in (`WireHead`), for relaying it to an HTTP/1 client when nothing reads
//!   its fields; `WireHead::into_head` gives the field list when something does.
//! - `encode_request_head` / `encode_response_head` append wire bytes, header case/order kept.
//! - `request_body_kind` / `response_body_kind` decide framing per RFC 9112 section 6.
//! - `BodyDecoder::scan` validates framing without copying, telling the caller how many
//!   leading bytes of the buffer belong to the body (to forward verbatim);
//!   `BodyDecoder::decode` strips the framing (for plugins that read the body).
//! - `encode_chunk` / `encode_last_chunk` write chunked framing.
//!
//! Details the proxy can rely on:
//! - Head `Bytes` fields are slices of one copy of the head bytes (one allocation per head).
//! - `BodyDecoder` consumes every byte it is given until the body ends (it keeps partial
//!   chunk-size lines and trailers itself), so `consumed < buf.len()` only when `done`, and
//!   the bytes after it start the next message. A decoder is used either with `scan` or
//!   with `decode` for a whole body, never both.
//! - `Content-Length: 0` gives `BodyKind::Length(0)`, whose decoder starts done.
//! - `decode` returns trailers once, in the call that completes the body, and `None` when
//!   the trailer section is empty. `BodyError::Truncated` comes from `eof` only.
//! - Framing that two hops could read differently (TE with CL, differing CLs, chunked not
//!   last, a transfer coding that is not a token, chunked with parameters, obs-fold,
//!   whitespace before the colon, framing or Host fields in trailers) is refused, in
//!   responses too; the texts in `HeadError::Malformed` say which rule was broken.
//!   `transfer_encoding_to_send` gives the one spelling of an accepted TE to send on.
//! - The encoders never let header values, reasons or targets set by plugins break the
//!   framing: CR/LF/NUL in values become SP, fields with invalid names are dropped, the
//!   target has SP and controls percent-encoded, and `encode_last_chunk` leaves out
//!   trailers named Content-Length, Transfer-Encoding or Host.

mod body;
mod byte_scan;
mod head;
pub(crate) mod known;
mod wire_head;

pub use body::{encode_chunk, encode_last_chunk, BodyDecoder, BodyError, BodyKind, Decoded, Scan};
pub use head::{
    chunked_is_final, decimal, encode_request_head, encode_request_parts, encode_response_head,
    looks_like_request_start, parse_request_head, parse_response_head, plain_request_agrees,
    plain_response_agrees, reason, request_body_kind, response_body_kind,
    transfer_encoding_to_send, HeadError, Limits,
};
pub use wire_head::{parse_response_wire, plain_scan_agrees, ParsedResponse, WireHead};

#[cfg(test)]
mod tests;
