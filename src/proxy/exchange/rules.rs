//! The exchange's decisions that need no socket: whether a connection stays open,
//! how a body is framed on its way out, whether an upstream connection can be pooled
//! again, whether a failed request may be sent again.

use crate::http::{Body, Headers, Request, Version};
use crate::proto::http1::BodyKind;
use crate::proxy::body_relay::Output;
use bytes::Bytes;

/// Whether an HTTP/1 client wants its connection kept after this request: HTTP/1.1
/// unless it says `close`; HTTP/1.0 only when it asks (RFC 9112 section 9.3), as ab -k
/// and old clients do.
pub fn client_keep_alive(version: Version, headers: &Headers) -> bool {
    match version {
        Version::Http11 => !headers.has_token("connection", "close"),
        _ => headers.has_token("connection", "keep-alive"),
    }
}

/// The protocol an HTTP/1.1 client asks to switch to (WebSocket...). h2c is not
/// passed on, as mitmproxy does not: the exchange stays HTTP/1.1, visible to hooks.
pub fn upgrade_requested(version: Version, headers: &Headers) -> Option<Bytes> {
    let proto = headers.get("upgrade")?;
    let asked = version == Version::Http11
        && headers.has_token("connection", "upgrade")
        && !headers.has_token("upgrade", "h2c");
    asked.then(|| proto.clone())
}

/// RFC 9110 section 9.2.2 idempotent methods, or a request that carries an
/// Idempotency-Key: such a request may be sent again after a stale connection.
pub fn is_idempotent(req: &Request) -> bool {
    matches!(
        req.method.as_ref(),
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    ) || req.headers.contains("idempotency-key")
}

/// Whether a request that failed on a reused connection before any answer may be sent
/// again on a new one: it must be idempotent and its body must still be at hand (held
/// whole, or already read to its end, i.e. none).
pub fn retryable(req: &Request, body_read_whole: bool) -> bool {
    is_idempotent(req) && (matches!(req.body, Body::Full(_)) || body_read_whole)
}

/// Whether an HTTP/1 upstream connection can serve another request once this response
/// is read: HTTP/1.1, no `Connection: close`, and a body whose end is known.
pub fn upstream_keeps_alive(version: Version, headers: &Headers, kind: BodyKind) -> bool {
    version == Version::Http11
        && !headers.has_token("connection", "close")
        && kind != BodyKind::CloseDelimited
}

/// How an upstream HTTP/1 response body goes to an HTTP/1 client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// How the relay writes it.
    pub output: Output,
    /// The body's framing as the client sees it.
    pub kind: BodyKind,
    /// Whether the client connection can be kept after it.
    pub keep_alive: bool,
}

/// The framing of a streamed response body of `kind` toward a client of `client`
/// version: chunked passes verbatim to HTTP/1.1 and is decoded for HTTP/1.0 (whose
/// body then ends with the connection); a close-delimited body ends the connection.
/// `rewritten` bodies (SSE events change length) go chunked, or to the connection's
/// end for HTTP/1.0; the connection still closes after a close-delimited one.
pub fn response_framing(kind: BodyKind, client: Version, rewritten: bool) -> Framing {
    let chunked_ok = client == Version::Http11;
    if rewritten {
        return match chunked_ok {
            true => Framing {
                output: Output::Verbatim,
                kind: BodyKind::Chunked,
                keep_alive: kind != BodyKind::CloseDelimited,
            },
            false => Framing {
                output: Output::Verbatim,
                kind: BodyKind::CloseDelimited,
                keep_alive: false,
            },
        };
    }
    match kind {
        BodyKind::Chunked if !chunked_ok => Framing {
            output: Output::Decoded,
            kind,
            keep_alive: false,
        },
        BodyKind::CloseDelimited => Framing {
            output: Output::Verbatim,
            kind,
            keep_alive: false,
        },
        _ => Framing {
            output: Output::Verbatim,
            kind,
            keep_alive: true,
        },
    }
}

/// The client's Content-Length, when it is one valid number.
pub fn content_length(h: &Headers) -> Option<u64> {
    let mut all = h.get_all("content-length");
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// How an HTTP/1 request carries a body that arrives as frames (HTTP/2, or a body
/// held whole): with its length when known up front, chunked otherwise, and no
/// framing at all when there is none. `partly_read` bodies (a hook read part of it)
/// go chunked: the length the client announced still holds, but is not checked.
pub fn h1_request_kind(
    body: &Body,
    trailers: bool,
    headers: &Headers,
    partly_read: bool,
) -> BodyKind {
    match (body, content_length(headers)) {
        (Body::Full(b), _) if b.is_empty() && !trailers => BodyKind::Empty,
        (Body::Full(b), _) => BodyKind::Length(b.len() as u64),
        (_, Some(n)) if !partly_read => BodyKind::Length(n),
        _ => BodyKind::Chunked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in list {
            h.add(n.to_string(), v.to_string());
        }
        h
    }

    fn request(method: &'static str, body: Body) -> Request {
        Request {
            method: Bytes::from_static(method.as_bytes()),
            scheme: "http".into(),
            authority: "example".into(),
            path: Some("/".into()),
            version: Version::Http11,
            headers: Headers::new(),
            body,
            trailers: None,
            timestamp_start: 0.0,
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(client_keep_alive(Version::Http11, &headers(&[])));
        assert!(!client_keep_alive(
            Version::Http11,
            &headers(&[("Connection", "Close")])
        ));
        assert!(!client_keep_alive(Version::Http10, &headers(&[])));
        assert!(client_keep_alive(
            Version::Http10,
            &headers(&[("connection", "keep-alive")])
        ));
    }

    #[test]
    fn upgrades_need_http11_and_the_connection_token() {
        let ws = headers(&[("Upgrade", "websocket"), ("Connection", "Upgrade")]);
        assert_eq!(
            upgrade_requested(Version::Http11, &ws).as_deref(),
            Some(&b"websocket"[..])
        );
        assert_eq!(upgrade_requested(Version::Http10, &ws), None);
        let no_token = headers(&[("Upgrade", "websocket")]);
        assert_eq!(upgrade_requested(Version::Http11, &no_token), None);
        let h2c = headers(&[
            ("Upgrade", "h2c"),
            ("Connection", "Upgrade, HTTP2-Settings"),
        ]);
        assert_eq!(upgrade_requested(Version::Http11, &h2c), None);
    }

    #[test]
    fn only_idempotent_requests_with_their_body_at_hand_are_retried() {
        assert!(retryable(&request("GET", Body::Streaming), true));
        assert!(!retryable(&request("GET", Body::Streaming), false));
        assert!(retryable(&request("PUT", Body::Full(Bytes::new())), false));
        assert!(!retryable(&request("POST", Body::Full(Bytes::new())), true));
        let mut keyed = request("POST", Body::Streaming);
        keyed.headers.add("Idempotency-Key", "k1");
        assert!(retryable(&keyed, true));
    }

    #[test]
    fn upstream_connections_are_kept_only_with_a_known_end() {
        let none = headers(&[]);
        assert!(upstream_keeps_alive(
            Version::Http11,
            &none,
            BodyKind::Length(3)
        ));
        assert!(upstream_keeps_alive(
            Version::Http11,
            &none,
            BodyKind::Chunked
        ));
        assert!(!upstream_keeps_alive(
            Version::Http11,
            &none,
            BodyKind::CloseDelimited
        ));
        assert!(!upstream_keeps_alive(
            Version::Http10,
            &none,
            BodyKind::Empty
        ));
        let close = headers(&[("Connection", "close")]);
        assert!(!upstream_keeps_alive(
            Version::Http11,
            &close,
            BodyKind::Empty
        ));
    }

    #[test]
    fn response_framing_by_client_version() {
        let f = response_framing(BodyKind::Chunked, Version::Http11, false);
        assert_eq!((f.output, f.keep_alive), (Output::Verbatim, true));
        let f = response_framing(BodyKind::Chunked, Version::Http10, false);
        assert_eq!((f.output, f.keep_alive), (Output::Decoded, false));
        let f = response_framing(BodyKind::CloseDelimited, Version::Http11, false);
        assert!(!f.keep_alive);
        let f = response_framing(BodyKind::Length(10), Version::Http10, false);
        assert_eq!((f.kind, f.keep_alive), (BodyKind::Length(10), true));
        let f = response_framing(BodyKind::Length(10), Version::Http11, true);
        assert_eq!((f.kind, f.keep_alive), (BodyKind::Chunked, true));
        let f = response_framing(BodyKind::CloseDelimited, Version::Http11, true);
        assert_eq!((f.kind, f.keep_alive), (BodyKind::Chunked, false));
        let f = response_framing(BodyKind::Length(10), Version::Http10, true);
        assert_eq!((f.kind, f.keep_alive), (BodyKind::CloseDelimited, false));
    }

    #[test]
    fn framed_bodies_toward_http1_upstreams() {
        let cl = headers(&[("content-length", "5")]);
        let none = headers(&[]);
        let empty = Body::Full(Bytes::new());
        assert_eq!(h1_request_kind(&empty, false, &cl, false), BodyKind::Empty);
        assert_eq!(
            h1_request_kind(&empty, true, &cl, false),
            BodyKind::Length(0)
        );
        let full = Body::Full(Bytes::from_static(b"abc"));
        assert_eq!(
            h1_request_kind(&full, false, &cl, false),
            BodyKind::Length(3)
        );
        assert_eq!(
            h1_request_kind(&Body::Streaming, false, &cl, false),
            BodyKind::Length(5)
        );
        assert_eq!(
            h1_request_kind(&Body::TooLarge, false, &cl, true),
            BodyKind::Chunked
        );
        assert_eq!(
            h1_request_kind(&Body::Streaming, false, &none, false),
            BodyKind::Chunked
        );
        let twice = headers(&[("content-length", "5"), ("content-length", "6")]);
        assert_eq!(content_length(&twice), None);
    }
}
