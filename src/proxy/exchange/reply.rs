//! Responses luring makes itself, a hook's RESPOND or an error naming why the exchange
//! failed, made ready once for every client front.

use crate::http::{Body, Headers, Response, Version};
use crate::proxy::h1_wire;
use bytes::{Bytes, BytesMut};

/// The interim response that tells a client to send its body.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Whether a response with `status` has no body, whatever its fields say
/// (RFC 9110 section 6.4.1: 1xx, 204 and 304).
pub fn bodiless(status: u16) -> bool {
    matches!(status, 100..=199 | 204 | 304)
}

/// Takes the body out of a response luring sends itself and makes its framing fields
/// true for any HTTP version: 1xx and 204 carry no Content-Length; a 304 keeps the one
/// a hook set (it describes the resource, as a HEAD response's does); any other gets
/// its body's length. Returns the body to send: empty for HEAD and bodiless statuses.
pub fn prepare(resp: &mut Response, is_head: bool) -> Bytes {
    let body = match std::mem::replace(&mut resp.body, Body::Streaming) {
        Body::Full(b) => b,
        _ => Bytes::new(),
    };
    resp.headers.remove("transfer-encoding");
    match resp.status {
        100..=199 | 204 => {
            resp.headers.remove("content-length");
        }
        304 => {}
        _ => resp.headers.set("content-length", body.len().to_string()),
    }
    if is_head || bodiless(resp.status) {
        Bytes::new()
    } else {
        body
    }
}

/// Why a flow failed after its request event: the answer luring makes (`status`,
/// `text`) and the reason http.on_response hooks see as `msg.error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowError {
    /// Status of the answer (502, 504).
    pub status: u16,
    /// What the answer's body says.
    pub text: String,
    /// `msg.error`: "connect refused", "dns: ...", "connect timeout", "upstream
    /// timeout", "upstream tls: ...", "upstream reset", "bad upstream response".
    pub reason: String,
}

impl FlowError {
    /// A failure of the upstream's response itself (framing, an unasked 101...).
    pub fn bad_response(text: impl Into<String>) -> Self {
        FlowError {
            status: 502,
            text: text.into(),
            reason: "bad upstream response".into(),
        }
    }

    /// The response luring answers with, `error` set.
    pub fn response(&self) -> Response {
        let mut r = error(self.status, &self.text);
        r.error = Some(self.reason.clone());
        r
    }
}

/// The proxy's own answer to a failed exchange: plain text that names the reason.
pub fn error(status: u16, text: &str) -> Response {
    let mut headers = Headers::with_capacity(3);
    headers.add("content-type", "text/plain; charset=utf-8");
    Response {
        status,
        reason: String::new(),
        version: Version::Http11,
        headers,
        body: Body::Full(Bytes::from(format!("luring: {text}\n"))),
        trailers: None,
        error: None,
    }
}

/// The HTTP/1 wire bytes of a response luring makes, head and body; `close` adds
/// `Connection: close`. Trailers are not sent: the body goes with its length.
pub fn h1_bytes(mut resp: Response, is_head: bool, close: bool, client: Version) -> Bytes {
    let body = prepare(&mut resp, is_head);
    let mut out = BytesMut::with_capacity(256 + body.len());
    h1_wire::response_head(&mut resp, close, client, &mut out);
    out.extend_from_slice(&body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(status: u16, body: &'static [u8]) -> Response {
        let mut r = error(status, "x");
        r.headers.set("content-length", "99");
        r.headers.set("transfer-encoding", "chunked");
        r.body = Body::Full(Bytes::from_static(body));
        r
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn error_bodies_name_the_reason() {
        let r = error(
            502,
            "cannot connect to upstream 127.0.0.1:9: connection refused",
        );
        let wire = h1_bytes(r, false, true, Version::Http11);
        let s = text(&wire);
        assert!(s.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(s.contains("connection: close\r\n"));
        assert!(s.ends_with("connection refused\n"));
        let body_len = s.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(s.contains(&format!("content-length: {body_len}\r\n")));
    }

    #[test]
    fn no_content_and_not_modified_carry_no_body() {
        let wire = h1_bytes(respond(204, b"ignored"), false, false, Version::Http11);
        let s = text(&wire);
        assert!(s.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(s.ends_with("\r\n\r\n"), "no body after the head: {s:?}");
        assert!(!s.contains("content-length"), "{s:?}");
        assert!(!s.contains("transfer-encoding"), "{s:?}");

        let wire = h1_bytes(respond(304, b"ignored"), false, false, Version::Http11);
        let s = text(&wire);
        assert!(s.ends_with("\r\n\r\n"), "no body after the head: {s:?}");
        assert!(
            s.contains("content-length: 99\r\n"),
            "a 304 keeps its length: {s:?}"
        );

        let wire = h1_bytes(respond(103, b"ignored"), false, false, Version::Http11);
        assert!(text(&wire).ends_with("\r\n\r\n"));
    }

    #[test]
    fn head_answers_keep_the_length_of_the_body_they_omit() {
        let mut r = respond(200, b"hello");
        let body = prepare(&mut r, true);
        assert!(body.is_empty());
        assert_eq!(r.headers.get("content-length").unwrap().as_ref(), b"5");
        let mut r = respond(200, b"hello");
        assert_eq!(prepare(&mut r, false).as_ref(), b"hello");
        assert!(r.headers.get("transfer-encoding").is_none());
    }
}
