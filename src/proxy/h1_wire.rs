//! HTTP/1 wire forms luring writes: request and response heads with their framing
//! fields made to match how the body goes, and whole bodies (chunked when trailers
//! must travel with them).

use crate::http::{known_names, Body, Headers, Request, Response, ResponseHead, Version};
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
            set_length(h, b.len() as u64);
        }
        Body::Streaming | Body::TooLarge => match kind {
            BodyKind::Chunked if chunked_ok => {
                h.remove("content-length");
                // relayed verbatim: codings before chunked (gzip, chunked) stay named, in
                // one field and one spelling (see transfer_encoding_to_send)
                if let Some(te) = crate::proto::http1::transfer_encoding_to_send(h) {
                    h.set("transfer-encoding", te);
                }
            }
            BodyKind::Chunked | BodyKind::CloseDelimited => {
                h.remove("content-length");
                h.remove("transfer-encoding");
            }
            BodyKind::Length(n) => {
                h.remove("transfer-encoding");
                set_length(h, n);
            }
            BodyKind::Empty => {}
        },
    }
}

/// Content-Length: `n`, left as it is when it already says so (nearly every relayed
/// message), which saves a formatted string and a rewrite of the field per message.
fn set_length(h: &mut Headers, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let text = &digits[at..];
    if !h.is_single("content-length", text) {
        h.set("content-length", Bytes::copy_from_slice(text));
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

/// The head of a request going to an HTTP/1.1 upstream with a body of `kind`, its
/// framing fields made true. `Expect` is dropped: luring answers it itself (as nginx
/// does), so the upstream never waits on it. A request that carries no body gets no
/// framing fields at all.
pub fn upstream_request_head(req: &mut Request, kind: BodyKind) -> BytesMut {
    req.headers.remove("expect");
    match &req.body {
        Body::Full(b) if b.is_empty() && req.trailers.is_none() && kind == BodyKind::Empty => {
            req.headers.remove("content-length");
            req.headers.remove("transfer-encoding");
        }
        // a request without a body (most requests) goes without framing fields; the
        // client sent none, so any there were set by a plugin, and an upstream would
        // take the next request's bytes for this one's body
        Body::Streaming if kind == BodyKind::Empty => {
            let framing = known_names::CONTENT_LENGTH | known_names::TRANSFER_ENCODING;
            if req.headers.may_have(framing) {
                req.headers.remove("content-length");
                req.headers.remove("transfer-encoding");
            }
        }
        _ => fix_framing(
            &mut req.headers,
            &req.body,
            req.trailers.as_ref(),
            kind,
            true,
        ),
    }
    let mut head = BytesMut::with_capacity(256 + req.headers.len() * 48);
    request_head(req, &mut head);
    head
}

/// Turns an origin-form request head into the absolute-form a forward proxy takes
/// (`--mode upstream:URL`), with its credentials after the request line.
pub fn to_proxy_form(head: &mut BytesMut, req: &Request, auth: Option<&str>) {
    let Some(sp) = head.iter().position(|&b| b == b' ').map(|i| i + 1) else {
        return;
    };
    let Some(eol) = head[sp..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| sp + i + 2)
    else {
        return;
    };
    let mut out = BytesMut::with_capacity(head.len() + req.authority.len() + 96);
    out.extend_from_slice(&head[..sp]);
    if head[sp..].starts_with(b"/") {
        out.extend_from_slice(req.scheme.as_bytes());
        out.extend_from_slice(b"://");
        out.extend_from_slice(req.authority.as_bytes());
    }
    out.extend_from_slice(&head[sp..eol]);
    if let Some(a) = auth {
        out.extend_from_slice(b"Proxy-Authorization: ");
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&head[eol..]);
    *head = out;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // an equal length is kept, a wrong or repeated one replaced by one field
        for (before, n, after) in [
            (&["0"][..], 0u64, "0"),
            (
                &["18446744073709551615"][..],
                u64::MAX,
                "18446744073709551615",
            ),
            (&["12"][..], 120, "120"),
            (&["120", "120"][..], 120, "120"),
            (&["0120"][..], 120, "120"),
        ] {
            let mut h = Headers::new();
            for v in before {
                h.add("Content-Length", *v);
            }
            fix_framing(&mut h, &Body::Streaming, None, BodyKind::Length(n), true);
            let got: Vec<_> = h.get_all("content-length").collect();
            assert_eq!(got, [&Bytes::from(after)], "{before:?} {n}");
        }
        assert!(h.get("transfer-encoding").is_none());
        let mut h = Headers::new();
        h.add("Transfer-Encoding", "chunked");
        fix_framing(&mut h, &Body::Streaming, None, BodyKind::Chunked, false);
        assert!(h.is_empty());
    }
}
