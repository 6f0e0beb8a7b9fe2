//! gRPC-web to native gRPC, sans-IO: what a gateway in front of a gRPC server does
//! (Envoy's grpc_web filter): the request's content type and `te`, the response body
//! re-emitted as gRPC-web with the upstream's trailers as the last frame (base64 for
//! grpc-web-text), and the CORS answers browsers need.
//!
//! No sockets here: the proxy hands in header lists and body chunks and writes out what
//! comes back.

use super::frame::encode_trailers;
use super::text::TextDecoder;
use super::Protocol;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};

/// Headers a gRPC-web client in a browser sends besides the simple ones; a preflight
/// that names none is answered with these.
pub const ALLOW_HEADERS: &str = "x-grpc-web, x-user-agent, grpc-timeout, content-type, \
    authorization, keep-alive, user-agent, cache-control, content-transfer-encoding, \
    x-accept-content-transfer-encoding, x-accept-response-streaming";

/// Response headers a browser script may read (the status, which may come as headers).
pub const EXPOSE_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";

/// How long a browser may cache a preflight answer (Envoy's and grpc-web's example
/// configuration value: 20 days).
pub const MAX_AGE: &str = "1728000";

/// The native gRPC content type for a gRPC-web one: `application/grpc-web-text+proto`
/// becomes `application/grpc+proto`, `application/grpc-web` `application/grpc`
/// (parameters dropped; the `+format` suffix kept).
pub fn grpc_content_type(web: &str) -> String {
    let media = web.split(';').next().unwrap_or(web).trim();
    match media.split_once('+') {
        Some((_, format)) if !format.is_empty() => format!("application/grpc+{format}"),
        _ => "application/grpc".to_string(),
    }
}

/// The gRPC-web content type of a response to a call made as `protocol`, from the
/// upstream's gRPC content type: `application/grpc+proto` becomes
/// `application/grpc-web+proto` (or `application/grpc-web-text+proto`).
pub fn web_content_type(protocol: Protocol, upstream: Option<&str>) -> String {
    let base = match protocol {
        Protocol::GrpcWebText => "application/grpc-web-text",
        _ => "application/grpc-web",
    };
    let format = upstream
        .map(|ct| ct.split(';').next().unwrap_or(ct).trim())
        .and_then(|m| m.split_once('+'))
        .map(|(_, f)| f)
        .filter(|f| !f.is_empty())
        .unwrap_or("proto");
    format!("{base}+{format}")
}

/// The request body as native gRPC: the base64 of grpc-web-text undone (binary bodies
/// are the same frames). Err: text that is not base64.
pub fn request_body(protocol: Protocol, body: Bytes) -> Result<Bytes, String> {
    if !protocol.is_text() {
        return Ok(body);
    }
    let mut dec = TextDecoder::new();
    let mut out = BytesMut::from(&dec.decode(&body).map_err(|e| e.to_string())?[..]);
    out.extend_from_slice(&dec.finish().map_err(|e| e.to_string())?);
    Ok(out.freeze())
}

/// A native gRPC response body re-emitted as gRPC-web, chunk by chunk.
///
/// Binary: DATA goes on as it came (the frames are the same). Text: one base64 run with
/// up to 2 bytes carried to the next chunk so no padding appears mid-run; the run is
/// closed (padded) before the trailer frame, which is a base64 segment of its own, as
/// grpc-web-text readers expect.
#[derive(Debug)]
pub struct ResponseEncoder {
    text: bool,
    carry: BytesMut,
}

impl ResponseEncoder {
    /// An encoder for a call made as `protocol`.
    pub fn new(protocol: Protocol) -> ResponseEncoder {
        ResponseEncoder {
            text: protocol.is_text(),
            carry: BytesMut::new(),
        }
    }

    /// The client-side bytes for one upstream DATA chunk (maybe empty for text).
    pub fn data(&mut self, chunk: Bytes) -> Bytes {
        if !self.text {
            return chunk;
        }
        self.carry.extend_from_slice(&chunk);
        let whole = self.carry.len() / 3 * 3;
        let run = self.carry.split_to(whole);
        Bytes::from(base64::engine::general_purpose::STANDARD.encode(run))
    }

    /// The end of the body: what is still carried, then the trailer frame of `trailers`
    /// (the upstream's trailers, or the status fields of a trailers-only answer).
    pub fn end<N: AsRef<str>, V: AsRef<str>>(&mut self, trailers: &[(N, V)]) -> Bytes {
        let frame = encode_trailers(trailers);
        if !self.text {
            return frame;
        }
        let b64 = &base64::engine::general_purpose::STANDARD;
        let mut out = b64.encode(self.carry.split()).into_bytes();
        out.extend_from_slice(b64.encode(&frame).as_bytes());
        Bytes::from(out)
    }
}

/// The fields a trailer frame carries for a trailers-only upstream answer (status in
/// the headers, no body): the `grpc-*` ones, in order.
pub fn status_fields<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    headers
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .filter(|(n, _)| n.starts_with("grpc-"))
        .collect()
}

/// A CORS preflight (`OPTIONS` naming `Access-Control-Request-Method`): the response
/// headers that allow it, None for any other request. `origin` is echoed (with
/// `Vary: Origin`) so credentialed requests work; without one, `*`.
pub fn preflight(
    method: &[u8],
    request_method: Option<&[u8]>,
    origin: Option<&[u8]>,
    request_headers: Option<&[u8]>,
) -> Option<Vec<(&'static str, Vec<u8>)>> {
    if method != b"OPTIONS" {
        return None;
    }
    request_method?;
    let mut out = cors_headers(origin);
    out.push((
        "access-control-allow-methods",
        b"POST, GET, OPTIONS".to_vec(),
    ));
    // the headers the browser asks for, or grpc-web's own list when it names none
    let allow = match request_headers.filter(|h| !h.trim_ascii().is_empty()) {
        Some(h) => {
            let mut v = h.trim_ascii().to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(ALLOW_HEADERS.as_bytes());
            v
        }
        None => ALLOW_HEADERS.as_bytes().to_vec(),
    };
    out.push(("access-control-allow-headers", allow));
    out.push(("access-control-max-age", MAX_AGE.as_bytes().to_vec()));
    Some(out)
}

/// The CORS headers of an answer to a browser's gRPC-web call: the origin allowed and
/// the status headers exposed.
pub fn cors_headers(origin: Option<&[u8]>) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::with_capacity(5);
    match origin {
        Some(o) => {
            out.push(("access-control-allow-origin", o.to_vec()));
            out.push(("access-control-allow-credentials", b"true".to_vec()));
            out.push(("vary", b"Origin".to_vec()));
        }
        None => out.push(("access-control-allow-origin", b"*".to_vec())),
    }
    out.push((
        "access-control-expose-headers",
        EXPOSE_HEADERS.as_bytes().to_vec(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::super::frame::{encode_message, Decoder, Event};
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            grpc_content_type("application/grpc-web"),
            "application/grpc"
        );
        assert_eq!(
            grpc_content_type("application/grpc-web+proto"),
            "application/grpc+proto"
        );
        assert_eq!(
            grpc_content_type("application/grpc-web-text+proto; charset=x"),
            "application/grpc+proto"
        );
        assert_eq!(
            grpc_content_type("application/grpc-web-text"),
            "application/grpc"
        );
        assert_eq!(
            web_content_type(Protocol::GrpcWeb, Some("application/grpc")),
            "application/grpc-web+proto"
        );
        assert_eq!(
            web_content_type(Protocol::GrpcWeb, Some("application/grpc+json")),
            "application/grpc-web+json"
        );
        assert_eq!(
            web_content_type(Protocol::GrpcWebText, None),
            "application/grpc-web-text+proto"
        );
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ] {
            assert_eq!(
                super::super::detect(&grpc_content_type(ct)),
                Some(Protocol::Grpc)
            );
        }
    }

    #[test]
    fn text_request_bodies() {
        let frames = [encode_message(b"ab", false), encode_message(b"xyz1", false)].concat();
        let per_frame: Vec<u8> = [encode_message(b"ab", false), encode_message(b"xyz1", false)]
            .iter()
            .flat_map(|f| {
                base64::engine::general_purpose::STANDARD
                    .encode(f)
                    .into_bytes()
            })
            .collect();
        assert_eq!(
            request_body(Protocol::GrpcWebText, Bytes::from(per_frame)).unwrap(),
            frames
        );
        let b = Bytes::from_static(b"\0\0\0\0\x01a");
        assert_eq!(request_body(Protocol::GrpcWeb, b.clone()).unwrap(), b);
        assert!(request_body(Protocol::GrpcWebText, Bytes::from_static(b"*")).is_err());
    }

    /// Decodes a gRPC-web-text response the way a client reads it: base64 (padded
    /// segments concatenated), then frames.
    fn read_text(body: &[u8]) -> Vec<Event> {
        let mut t = TextDecoder::new();
        let mut bin = BytesMut::from(&t.decode(body).unwrap()[..]);
        bin.extend_from_slice(&t.finish().unwrap());
        let mut dec = Decoder::new(1 << 20, true);
        let mut out = Vec::new();
        dec.feed(bin.freeze(), &mut out).unwrap();
        dec.finish().unwrap();
        out
    }

    #[test]
    fn response_at_every_split() {
        let body = [
            encode_message(b"hello", false),
            encode_message(b"", false),
            encode_message(&[7u8; 40], true),
        ]
        .concat();
        let trailers = [("grpc-status", "0"), ("x-t", "v")];
        let want_trailer = encode_trailers(&trailers);
        for protocol in [Protocol::GrpcWeb, Protocol::GrpcWebText] {
            for a in 0..=body.len() {
                for b in a..=body.len() {
                    let mut enc = ResponseEncoder::new(protocol);
                    let mut out = Vec::new();
                    for piece in [&body[..a], &body[a..b], &body[b..]] {
                        out.extend_from_slice(&enc.data(Bytes::copy_from_slice(piece)));
                    }
                    out.extend_from_slice(&enc.end(&trailers));
                    let events = match protocol {
                        Protocol::GrpcWebText => {
                            assert!(!out[..out.len() - 4].contains(&b'\n'));
                            read_text(&out)
                        }
                        _ => {
                            assert_eq!(out, [&body[..], &want_trailer[..]].concat());
                            continue;
                        }
                    };
                    let wires: Vec<u8> = events.iter().flat_map(|e| e.wire().to_vec()).collect();
                    assert_eq!(wires, [&body[..], &want_trailer[..]].concat(), "{a} {b}");
                    assert!(matches!(events.last(), Some(Event::Trailers(t))
                        if t.fields == vec![("grpc-status".into(), "0".into()), ("x-t".into(), "v".into())]));
                }
            }
        }
    }

    #[test]
    fn text_run_has_padding_only_at_segment_ends() {
        let mut enc = ResponseEncoder::new(Protocol::GrpcWebText);
        let mut out = Vec::new();
        for piece in [&b"\0\0\0\0\x01"[..], b"x", b"\0\0\0", b"\0\x02ab"] {
            out.extend_from_slice(&enc.data(Bytes::copy_from_slice(piece)));
            assert!(!out.contains(&b'='), "no padding before the end");
            assert_eq!(out.len() % 4, 0);
        }
        let end = enc.end(&[("grpc-status", "0")]);
        out.extend_from_slice(&end);
        assert_eq!(read_text(&out).len(), 3);
    }

    #[test]
    fn trailers_only_fields() {
        let h = [
            ("content-type", "application/grpc"),
            ("grpc-status", "7"),
            ("Grpc-Message", "no"),
            ("x-other", "1"),
        ];
        let f = status_fields(h.iter().copied());
        assert_eq!(
            f,
            vec![
                ("grpc-status".to_string(), "7".to_string()),
                ("grpc-message".to_string(), "no".to_string())
            ]
        );
    }

    #[test]
    fn cors() {
        assert!(preflight(b"POST", Some(b"POST"), None, None).is_none());
        assert!(preflight(b"OPTIONS", None, None, None).is_none());
        let p = preflight(
            b"OPTIONS",
            Some(b"POST"),
            Some(b"http://a"),
            Some(b"x-custom"),
        )
        .unwrap();
        let get = |n: &str| p.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("access-control-allow-origin").unwrap(), b"http://a");
        let allow = String::from_utf8(get("access-control-allow-headers").unwrap()).unwrap();
        assert!(allow.starts_with("x-custom, ") && allow.contains("x-grpc-web"));
        assert!(get("access-control-allow-methods").is_some());
        let p = preflight(b"OPTIONS", Some(b"POST"), None, None).unwrap();
        assert!(p
            .iter()
            .any(|(k, v)| *k == "access-control-allow-origin" && v == b"*"));
        let c = cors_headers(None);
        assert!(c
            .iter()
            .any(|(k, v)| *k == "access-control-expose-headers" && v.starts_with(b"grpc-status")));
    }
}
