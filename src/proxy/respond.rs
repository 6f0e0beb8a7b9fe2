//! Wire forms the proxy writes itself: error responses, synthesized (plugin) responses,
//! and the commit of a request or response head with its framing fixed up.

use crate::http::{Body, Headers, Request, Response, ResponseHead, Version};
use crate::proto::http1::{encode_request_head, encode_response_head, BodyKind};
use bytes::{Bytes, BytesMut};

/// Canonical reason phrase for a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        407 => "Proxy Authentication Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A complete plain-text error response that closes the connection.
pub fn error_response(status: u16, text: &str) -> Bytes {
    let body = format!("luring: {text}\n");
    Bytes::from(format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    ))
}

/// The 407 a forward proxy with `--proxy-auth` gives a request without valid credentials.
pub fn proxy_auth_required() -> Bytes {
    let body = "luring: proxy authentication required\n";
    Bytes::from(format!(
        "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"luring\"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// True when a `Proxy-Authorization` value carries Basic credentials equal to
/// `expected` (`USER:PASS`).
pub fn basic_credentials_match(value: &[u8], expected: &str) -> bool {
    use base64::Engine as _;
    let value = value.trim_ascii();
    let Some(sp) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, token) = value.split_at(sp);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return false;
    }
    match base64::engine::general_purpose::STANDARD.decode(token.trim_ascii()) {
        Ok(decoded) => decoded == expected.as_bytes(),
        Err(_) => false,
    }
}

/// The interim response that tells a client to send its body.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// True when a whole body must go out chunked so that its trailers survive.
pub fn full_needs_chunked(trailers: Option<&Headers>, chunked_ok: bool) -> bool {
    chunked_ok && trailers.is_some_and(|t| !t.is_empty())
}

/// Wire form of a whole body: as is, or chunked with its trailers.
pub fn full_body_wire(b: &Bytes, trailers: Option<&Headers>, chunked_ok: bool) -> Bytes {
    if !full_needs_chunked(trailers, chunked_ok) {
        return b.clone();
    }
    let mut out = BytesMut::with_capacity(b.len() + 64);
    crate::proto::http1::encode_chunk(b, &mut out);
    crate::proto::http1::encode_last_chunk(trailers, &mut out);
    out.freeze()
}

/// Sets Content-Length / Transfer-Encoding to match how the body will be sent.
pub fn fix_framing(
    h: &mut Headers,
    body: &Body,
    trailers: Option<&Headers>,
    kind: BodyKind,
    chunked_ok: bool,
) {
    match body {
        Body::Full(_) if full_needs_chunked(trailers, chunked_ok) => {
            h.remove("content-length");
            h.set("transfer-encoding", "chunked");
        }
        Body::Full(b) => {
            h.remove("transfer-encoding");
            h.set("content-length", b.len().to_string());
        }
        Body::Streaming | Body::TooLarge => match kind {
            BodyKind::Chunked if chunked_ok => {
                h.remove("content-length");
                // relayed verbatim: codings before chunked (gzip, chunked) stay named
                if !crate::proto::http1::chunked_is_final(h) {
                    h.set("transfer-encoding", "chunked");
                }
            }
            BodyKind::Chunked | BodyKind::CloseDelimited => {
                h.remove("content-length");
                h.remove("transfer-encoding");
            }
            BodyKind::Length(n) => {
                h.remove("transfer-encoding");
                h.set("content-length", n.to_string());
            }
            BodyKind::Empty => {}
        },
    }
}

/// Encodes the upstream request head (origin-form target, HTTP/1.1). The headers are
/// moved out and back rather than cloned: this runs for every request.
pub fn request_head(req: &mut Request, out: &mut BytesMut) {
    let head = crate::http::RequestHead {
        method: req.method.clone(),
        target: Bytes::from(req.path.clone().unwrap_or_else(|| "/".into())),
        version: Version::Http11,
        headers: std::mem::take(&mut req.headers),
    };
    encode_request_head(&head, out);
    req.headers = head.headers;
}

/// Encodes a response head for the client: `close` adds `Connection: close`; a kept
/// HTTP/1.0 connection gets `Connection: keep-alive`.
pub fn response_head(resp: &mut Response, close: bool, client: Version, out: &mut BytesMut) {
    if close {
        resp.headers.set("connection", "close");
    } else if client == Version::Http10 {
        // an HTTP/1.0 client closes unless told the connection persists
        resp.headers.set("connection", "keep-alive");
    }
    let canonical = reason(resp.status);
    let reason = if resp.reason.is_empty() || resp.reason == canonical {
        Bytes::from_static(canonical.as_bytes())
    } else {
        Bytes::from(resp.reason.clone())
    };
    let head = ResponseHead {
        version: Version::Http11,
        status: resp.status,
        reason,
        headers: std::mem::take(&mut resp.headers),
    };
    encode_response_head(&head, out);
    resp.headers = head.headers;
}

/// Wire bytes of a whole synthesized response (plugin RESPOND).
pub fn synthesized(resp: &Response, head_request: bool, close: bool, client: Version) -> Bytes {
    let mut r = resp.clone();
    let body = match &r.body {
        Body::Full(b) => b.clone(),
        _ => Bytes::new(),
    };
    r.headers.remove("transfer-encoding");
    r.headers.set("content-length", body.len().to_string());
    let mut out = BytesMut::with_capacity(256 + body.len());
    response_head(&mut r, close, client, &mut out);
    if !head_request {
        out.extend_from_slice(&body);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_proxy_credentials() {
        // "bob:pw" in base64
        assert!(basic_credentials_match(b"Basic Ym9iOnB3", "bob:pw"));
        assert!(basic_credentials_match(b"  basic   Ym9iOnB3 ", "bob:pw"));
        assert!(!basic_credentials_match(b"Basic Ym9iOnB4", "bob:pw"));
        assert!(!basic_credentials_match(b"Bearer Ym9iOnB3", "bob:pw"));
        assert!(!basic_credentials_match(b"Basic !!!", "bob:pw"));
        assert!(!basic_credentials_match(b"Basic", "bob:pw"));
        let r = proxy_auth_required();
        let s = std::str::from_utf8(&r).unwrap();
        assert!(s.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
        assert!(s.contains("proxy-authenticate: Basic realm=\"luring\"\r\n"));
        let body_len = s.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(s.contains(&format!("content-length: {body_len}\r\n")));
    }

    #[test]
    fn error_bodies_name_the_reason() {
        let r = error_response(
            502,
            "cannot connect to upstream 127.0.0.1:9: connection refused",
        );
        let s = std::str::from_utf8(&r).unwrap();
        assert!(s.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(s.ends_with("connection refused\n"));
        let body_len = s.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(s.contains(&format!("content-length: {body_len}\r\n")));
    }

    #[test]
    fn framing_follows_the_body() {
        let mut h = Headers::new();
        h.add("Transfer-Encoding", "chunked");
        fix_framing(
            &mut h,
            &Body::Full(Bytes::from_static(b"abc")),
            None,
            BodyKind::Chunked,
            true,
        );
        assert_eq!(h.get("content-length").unwrap().as_ref(), b"3");
        assert!(h.get("transfer-encoding").is_none());
        let mut h = Headers::new();
        h.add("Transfer-Encoding", "chunked");
        fix_framing(&mut h, &Body::Streaming, None, BodyKind::Chunked, false);
        assert!(h.is_empty());
    }
}
