//! HTTP/1 wire forms luring writes: request and response heads with their framing
//! fields made to match how the body goes, and whole bodies (chunked when trailers
//! must travel with them).

use crate::http::{known_names, Body, Headers, Request, Response, ResponseHead, Version};
use crate::proto::http1::{encode_request_parts, encode_response_head, BodyKind};
use bytes::{Bytes, BytesMut};

pub use crate::proto::http1::reason;

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
    let mut digits = [0; 20];
    let text = crate::proto::http1::decimal(n, &mut digits);
    if !h.is_single("content-length", text) {
        h.set("content-length", Bytes::copy_from_slice(text));
    }
}

/// Encodes the upstream request head (origin-form target, HTTP/1.1).
pub fn request_head(req: &Request, out: &mut BytesMut) {
    let target = req.path.as_deref().unwrap_or("/").as_bytes();
    encode_request_parts(&req.method, target, Version::Http11, &req.headers, out);
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

    /// The client head relayed from a response's bytes (proto::http1::WireHead) is the
    /// one the field list gives (strip hop-by-hop, fix framing, encode), byte for byte,
    /// over many heads, methods, client versions and closes; and typical heads do take
    /// the bytes.
    #[test]
    fn wire_heads_match_the_field_list() {
        use crate::proto::http1::{parse_response_head, parse_response_wire, Limits};
        use crate::proto::http1::{response_body_kind, ParsedResponse};
        use crate::proxy::exchange::{pipeline::strip_hop_by_hop, rules};
        let status_lines: &[&[u8]] = &[
            b"HTTP/1.1 200 OK",
            b"HTTP/1.0 200 OK",
            b"HTTP/1.1 404 Nope",
            b"HTTP/1.1 200 ",
            b"HTTP/1.1 204 No Content",
            b"HTTP/1.1 304 Not Modified",
            b"HTTP/1.1 599 ",
            b"HTTP/1.1 200 \xe9t\xe9",
        ];
        let fields: &[&[u8]] = &[
            b"Server: nginx/1.22.1",
            b"Date: Sun, 06 Dec 2026 18:00:00 GMT",
            b"Content-Type: text/html",
            b"content-type: text/event-stream",
            b"Content-Length: 1024",
            b"Content-Length: 0120",
            b"Content-Length: 5, 5",
            b"content-length: 7",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip, chunked",
            b"transfer-encoding: CHUNKED",
            b"Transfer-Encoding: gzip",
            b"Connection: keep-alive",
            b"Connection: close",
            b"connection: Keep-Alive, X-Foo",
            b"Connection: Upgrade, TE",
            b"X-Foo: bar",
            b"Close: yes",
            b"Keep-Alive: timeout=5",
            b"Upgrade: h2c",
            b"Proxy-Connection: close",
            b"TE: trailers",
            b"Trailer: X-Sum",
            b"Proxy-Authenticate: Basic",
            b"ETag: \"abc\"",
            b"X-Empty:",
            b"X-Tab:\tv",
            b"X-Trail: v  ",
            b"X-NoSpace:v",
            b"Host: h",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let limits = Limits::default();
        let (mut compared, mut relayed) = (0, 0);
        for round in 0..3000 {
            let mut wire = status_lines[next(status_lines.len())].to_vec();
            // the first rounds are typical heads: nginx's, which must take the bytes
            let typical = round < 8;
            if typical {
                wire = b"HTTP/1.1 200 OK".to_vec();
            }
            let eol: &[u8] = if !typical && next(20) == 0 {
                b"\n"
            } else {
                b"\r\n"
            };
            wire.extend_from_slice(eol);
            let picked: Vec<&[u8]> = match typical {
                true => vec![
                    fields[0], fields[1], fields[2], fields[4], fields[12], fields[24],
                ],
                false => (0..next(7)).map(|_| fields[next(fields.len())]).collect(),
            };
            for f in picked {
                wire.extend_from_slice(f);
                wire.extend_from_slice(eol);
            }
            wire.extend_from_slice(eol);
            wire.extend_from_slice(b"body");
            let Ok(Some((model, n))) = parse_response_head(&wire, &limits) else {
                continue;
            };
            let Ok(Some((ParsedResponse::Wire(w), m))) = parse_response_wire(&wire, &limits) else {
                panic!(
                    "{:?}: parsed as a field list but not as bytes",
                    String::from_utf8_lossy(&wire)
                );
            };
            assert_eq!(n, m);
            for method in [&b"GET"[..], b"HEAD"] {
                let kind = response_body_kind(method, &model);
                assert_eq!(kind, w.kind(method));
                let Ok(kind) = kind else { continue };
                assert_eq!(
                    rules::upstream_keeps_alive(model.version, &model.headers, kind),
                    w.keeps_alive(kind)
                );
                for (client, asked_keep) in [
                    (Version::Http11, true),
                    (Version::Http11, false),
                    (Version::Http10, true),
                    (Version::Http10, false),
                ] {
                    let framing = rules::response_framing(kind, client, false);
                    let close = !(asked_keep && framing.keep_alive);
                    let chunked_ok = client == Version::Http11;
                    let mut resp = Response {
                        status: model.status,
                        reason: String::from_utf8_lossy(&model.reason).into_owned(),
                        version: model.version,
                        headers: model.headers.clone(),
                        body: Body::Streaming,
                        trailers: None,
                        error: None,
                    };
                    strip_hop_by_hop(&mut resp.headers);
                    fix_framing(
                        &mut resp.headers,
                        &resp.body,
                        None,
                        framing.kind,
                        chunked_ok,
                    );
                    let mut expected = BytesMut::new();
                    response_head(&mut resp, close, client, &mut expected);
                    let mut got = BytesMut::new();
                    compared += 1;
                    if w.encode_for_client(framing.kind, chunked_ok, close, client, &mut got) {
                        relayed += 1;
                        assert_eq!(
                            String::from_utf8_lossy(&got),
                            String::from_utf8_lossy(&expected),
                            "{:?} {client:?} close={close}",
                            String::from_utf8_lossy(&wire)
                        );
                        let ctype = resp.headers.get("content-type").map(|v| &v[..]);
                        assert_eq!(w.first(b"content-type"), ctype);
                    } else {
                        assert!(got.is_empty());
                        assert!(!typical, "a typical head took the field list");
                    }
                }
            }
            let again = w.into_head().expect("parses again");
            assert_eq!(again, model);
        }
        // both ways are exercised
        assert!(
            relayed > compared / 4 && relayed < compared,
            "{relayed} of {compared}"
        );
    }
}
