//! HTTP/2 streams as both fronts and upstream legs use them: bodies moved frame by
//! frame under flow control, bodies read whole for hooks, and header fields converted
//! between the version-agnostic form and h2's.

use crate::flows::capture::BodyTap;
use crate::http::{h2_head_leaves_out, known_bit, Body, Headers, Request, Response};
use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use std::cell::Cell;
use std::task::Poll;
use std::time::Duration;

/// A body as it arrives on one stream.
pub struct Incoming {
    /// The stream's receiving half.
    pub rx: RecvStream,
    /// Bytes read for a hook that then found the body over the limit; sent first.
    pub prefix: Option<Bytes>,
    /// The recorder's view of the body, when the flow is recorded.
    pub tap: Option<BodyTap>,
}

impl Incoming {
    /// A stream's body, not recorded.
    pub fn new(rx: RecvStream) -> Incoming {
        Incoming {
            rx,
            prefix: None,
            tap: None,
        }
    }

    /// Shows a piece of the body to the recorder.
    pub fn see(&mut self, piece: &Bytes) {
        if let Some(t) = self.tap.as_mut() {
            t.see(piece);
        }
    }

    /// Shows the body's trailers to the recorder.
    pub fn see_trailers(&mut self, t: &http::HeaderMap) {
        if let Some(tap) = self.tap.as_mut() {
            tap.set_trailers(from_header_map(t));
        }
    }
}

/// How much of a request body nobody wants is read and dropped, and for how long, so
/// a client still uploading sees the answer instead of a reset (many clients, curl 7.x
/// among them, report RST_STREAM NO_ERROR during an upload as an error); past either
/// limit the stream is reset.
const DISCARD_MAX: u64 = 64 * 1024 * 1024;
const DISCARD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the rest of a request body that was answered without it, and drops it.
pub fn discard(mut body: Incoming) {
    if body.rx.is_end_stream() {
        return;
    }
    crate::io::spawn(async move {
        let mut seen = 0u64;
        let drain = async {
            while let Some(Ok(chunk)) = body.rx.data().await {
                seen += chunk.len() as u64;
                let _ = body.rx.flow_control().release_capacity(chunk.len());
                if seen > DISCARD_MAX {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_WAIT, drain).await;
    });
}

/// Reads an h2 body for a hook: Full with its trailers, or TooLarge with what was read
/// kept in `prefix` to be sent first.
pub async fn buffer(body: &mut Incoming, limit: usize) -> Result<(Body, Option<Headers>), String> {
    let mut got = BytesMut::new();
    while let Some(chunk) = body.rx.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.rx.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
        if got.len() > limit {
            body.prefix = Some(got.freeze());
            return Ok((Body::TooLarge, None));
        }
    }
    let trailers = body.rx.trailers().await.map_err(|e| e.to_string())?;
    Ok((
        Body::Full(got.freeze()),
        trailers.as_ref().map(from_header_map),
    ))
}

thread_local! {
    /// How long [`send_data`] waits for the peer to open its window: the worker's
    /// `--send-timeout`, set when the worker starts.
    static SEND_STALL: Cell<Duration> = const { Cell::new(Duration::from_secs(60)) };
}

/// Sets how long [`send_data`] waits on this thread for a peer's window to open.
pub fn set_send_stall(d: Duration) {
    SEND_STALL.with(|s| s.set(d));
}

/// Sends `data` as flow control allows, ending the stream after it when `end`. A peer
/// that opens no window for the send timeout (a window of 1 never updated, an upstream
/// that stopped reading) gets the stream reset with CANCEL instead of holding it, and
/// what luring buffered for it, for ever.
pub async fn send_data(
    tx: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        if end {
            tx.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        // capacity at hand needs no timer; only a wait does
        let now = std::future::poll_fn(|cx| Poll::Ready(tx.poll_capacity(cx))).await;
        let got = match now {
            Poll::Ready(got) => got,
            Poll::Pending => {
                let stall = SEND_STALL.with(|s| s.get());
                let wait = std::future::poll_fn(|cx| tx.poll_capacity(cx));
                match tokio::time::timeout(stall, wait).await {
                    Ok(got) => got,
                    Err(_) => {
                        tx.send_reset(Reason::CANCEL);
                        return Err(h2::Error::from(Reason::CANCEL));
                    }
                }
            }
        };
        let cap = match got {
            Some(r) => r?,
            None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
        };
        if cap == 0 {
            continue;
        }
        let piece = data.split_to(cap.min(data.len()));
        tx.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

/// Sends a whole body and its trailers, ending the stream.
pub async fn send_full(
    tx: &mut SendStream<Bytes>,
    b: Bytes,
    trailers: Option<&Headers>,
) -> Result<u64, h2::Error> {
    let n = b.len() as u64;
    match trailers {
        Some(t) => {
            send_data(tx, b, false).await?;
            tx.send_trailers(to_header_map(t, false))?;
        }
        None => send_data(tx, b, true).await?,
    }
    Ok(n)
}

/// The next DATA of `rx`; an error as soon as the receiver of `tx` resets its stream,
/// so a peer that gave up is noticed while the other side is quiet.
pub async fn next_data(
    rx: &mut RecvStream,
    tx: &mut SendStream<Bytes>,
) -> Option<Result<Bytes, h2::Error>> {
    tokio::select! {
        biased;
        d = rx.data() => d,
        r = std::future::poll_fn(|cx| tx.poll_reset(cx)) => Some(Err(match r {
            Ok(reason) => h2::Error::from(reason),
            Err(e) => e,
        })),
    }
}

/// Content-Length for a body held whole (a hook may have replaced it): h2 peers reset a
/// stream whose data does not match it. An empty body without the field stays without.
pub fn set_length(h: &mut Headers, body: &Bytes) {
    if !body.is_empty() || h.contains("content-length") {
        h.set("content-length", body.len().to_string());
    }
}

/// Header fields of an h2 head in the version-agnostic form. Common names and values
/// are static `Bytes`: no allocation, copy or free.
pub fn from_header_map(map: &http::HeaderMap) -> Headers {
    use crate::proto::http1::known;
    let static_or_copy = |s: &[u8], table: fn(&[u8]) -> Option<&'static [u8]>| {
        table(s).map_or_else(|| Bytes::copy_from_slice(s), Bytes::from_static)
    };
    let mut h = Headers::with_capacity(map.len());
    for (name, value) in map {
        h.push_wire(
            static_or_copy(name.as_str().as_bytes(), known::name),
            static_or_copy(value.as_bytes(), known::value),
        );
    }
    h
}

/// The fields of a received h2 head, which keep the map itself for the way back
/// ([`Headers::h2_head`]).
pub fn from_h2_head(map: http::HeaderMap) -> Headers {
    let mut h = from_header_map(&map);
    h.keep_h2_head(map);
    h
}

/// The h2 head form of `h`: its kept map taken out, or [`to_header_map`] when it has none.
fn into_head_map(h: &mut Headers) -> http::HeaderMap {
    h.take_h2_head().unwrap_or_else(|| to_header_map(h, true))
}

/// Header fields in h2 form: names lower-cased; when `head`, without the fields an h2
/// head leaves out ([`h2_head_leaves_out`], the rule the kept map is checked by too).
pub fn to_header_map(h: &Headers, head: bool) -> http::HeaderMap {
    if let Some(map) = h.h2_head().filter(|_| head) {
        return map.clone();
    }
    let mut map = http::HeaderMap::with_capacity(h.len());
    for f in h.iter() {
        if head && h2_head_leaves_out(known_bit(&f.name), &f.value) {
            continue;
        }
        let name = match common_name(&f.name) {
            Some(n) => n,
            None => match http::HeaderName::from_bytes(&f.name) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(v) = http::HeaderValue::from_maybe_shared(f.value.clone()) {
            map.append(name, v);
        }
    }
    map
}

/// The h2 name of a common field name in the spellings HTTP/1 peers use, without
/// `HeaderName::from_bytes`'s lower-casing and lookup (about 150 instructions a field;
/// an exact match costs a few dozen).
fn common_name(name: &[u8]) -> Option<http::HeaderName> {
    use http::header::*;
    Some(match name {
        b"Date" | b"date" => DATE,
        b"Server" | b"server" => SERVER,
        b"Content-Type" | b"content-type" => CONTENT_TYPE,
        b"Content-Length" | b"content-length" => CONTENT_LENGTH,
        b"Content-Encoding" | b"content-encoding" => CONTENT_ENCODING,
        b"Last-Modified" | b"last-modified" => LAST_MODIFIED,
        b"ETag" | b"Etag" | b"etag" => ETAG,
        b"Accept-Ranges" | b"accept-ranges" => ACCEPT_RANGES,
        b"Cache-Control" | b"cache-control" => CACHE_CONTROL,
        b"Expires" | b"expires" => EXPIRES,
        b"Vary" | b"vary" => VARY,
        b"Age" | b"age" => AGE,
        b"Location" | b"location" => LOCATION,
        b"Set-Cookie" | b"set-cookie" => SET_COOKIE,
        b"User-Agent" | b"user-agent" => USER_AGENT,
        b"Accept" | b"accept" => ACCEPT,
        b"Accept-Encoding" | b"accept-encoding" => ACCEPT_ENCODING,
        b"Accept-Language" | b"accept-language" => ACCEPT_LANGUAGE,
        b"Cookie" | b"cookie" => COOKIE,
        b"Referer" | b"referer" => REFERER,
        b"Origin" | b"origin" => ORIGIN,
        b"Authorization" | b"authorization" => AUTHORIZATION,
        b"TE" | b"te" => TE,
        _ => return None,
    })
}

/// The h2 head of a request going upstream; `Host` (set by the pipeline) becomes the
/// `:authority`. The URI is put together from its parts: formatting it whole and
/// parsing that again cost about 2,000 instructions a request.
pub fn upstream_head(req: &mut Request) -> Result<http::Request<()>, String> {
    use http::uri::{Authority, PathAndQuery, Scheme};
    let bad = |e: &dyn std::fmt::Display| format!("cannot send the request over HTTP/2: {e}");
    let authority = match req.headers.get("host") {
        Some(h) => Authority::from_maybe_shared(h.clone()),
        None => Authority::try_from(req.authority.as_str()),
    }
    .map_err(|e| bad(&e))?;
    let scheme = match req.scheme.as_str() {
        "https" => Scheme::HTTPS,
        "http" => Scheme::HTTP,
        other => Scheme::try_from(other).map_err(|e| bad(&e))?,
    };
    let path = PathAndQuery::try_from(req.path.as_deref().unwrap_or("/")).map_err(|e| bad(&e))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    let mut r = http::Request::new(());
    *r.method_mut() = http::Method::from_bytes(&req.method).map_err(|e| bad(&e))?;
    *r.uri_mut() = http::Uri::from_parts(parts).map_err(|e| bad(&e))?;
    *r.version_mut() = http::Version::HTTP_2;
    *r.headers_mut() = into_head_map(&mut req.headers);
    Ok(r)
}

/// The h2 head of a response going to the client.
pub fn response_head(resp: &mut Response) -> http::Response<()> {
    let mut r = http::Response::new(());
    *r.status_mut() =
        http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    *r.headers_mut() = into_head_map(&mut resp.headers);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_names_are_what_from_bytes_makes() {
        let common = [
            "date",
            "server",
            "content-type",
            "content-length",
            "content-encoding",
            "last-modified",
            "etag",
            "accept-ranges",
            "cache-control",
            "expires",
            "vary",
            "age",
            "location",
            "set-cookie",
            "user-agent",
            "accept",
            "accept-encoding",
            "accept-language",
            "cookie",
            "referer",
            "origin",
            "authorization",
            "te",
        ];
        let other = ["x-custom", "content-md5", "dates", "dat", "-", ""];
        let title = |lower: &str| {
            let words = lower.split('-').map(|w| {
                let (first, rest) = w.split_at(w.len().min(1));
                first.to_uppercase() + rest
            });
            words.collect::<Vec<_>>().join("-")
        };
        for lower in common.iter().chain(&other) {
            let is_common = common.contains(lower);
            assert_eq!(
                common_name(lower.as_bytes()).is_some(),
                is_common,
                "{lower}"
            );
            for spelling in [title(lower), lower.to_uppercase(), "ETag".into()] {
                let want = http::HeaderName::from_bytes(spelling.as_bytes()).ok();
                if let Some(n) = common_name(spelling.as_bytes()) {
                    assert_eq!(Some(n), want, "{spelling}");
                }
            }
        }
    }

    /// The h2 head form built field by field, bypassing the kept map.
    fn rebuilt(h: &Headers) -> http::HeaderMap {
        let mut copy = Headers::new();
        for f in h {
            copy.push_wire(f.name.clone(), f.value.clone());
        }
        assert!(copy.h2_head().is_none());
        to_header_map(&copy, true)
    }

    fn pairs(m: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
        m.iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn map(fields: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        for (n, v) in fields {
            m.append(*n, http::HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn a_received_head_is_kept_only_when_an_h2_head_carries_all_of_it() {
        let kept = from_h2_head(map(&[("content-type", "a"), ("te", "trailers")]));
        assert!(kept.h2_head().is_some());
        for bad in [("host", "a"), ("connection", "close"), ("te", "gzip")] {
            let h = from_h2_head(map(&[("content-type", "a"), bad]));
            assert!(h.h2_head().is_none(), "{bad:?}");
            assert_eq!(pairs(&to_header_map(&h, true)), pairs(&rebuilt(&h)));
        }
    }

    #[test]
    fn a_change_to_a_field_h2_heads_leave_out_keeps_the_map() {
        let mut h = from_h2_head(map(&[("accept", "*/*"), ("x-a", "1")]));
        h.add("host", "example.com");
        h.set("Connection", "close");
        h.remove("keep-alive");
        h.retain(|f| !f.name.eq_ignore_ascii_case(b"connection"));
        assert!(h.h2_head().is_some());
        assert_eq!(pairs(&to_header_map(&h, true)), pairs(&rebuilt(&h)));
        // trailers are never made from the kept head form
        assert!(to_header_map(&h, false).contains_key("host"));
    }

    proptest! {
        /// Whatever a plugin or pipeline step does to the fields, the h2 head sent is
        /// the one a field-by-field rebuild gives.
        #[test]
        fn the_kept_map_never_differs_from_a_rebuild(
            ops in proptest::collection::vec((0u8..5, 0usize..6, 0u8..3), 0..6)
        ) {
            const NAMES: [&str; 6] = ["x-a", "content-type", "host", "Connection", "te", "X-A"];
            const VALUES: [&str; 3] = ["1", "trailers", "close"];
            let mut h = from_h2_head(map(&[("x-a", "0"), ("content-type", "t"), ("x-a", "2")]));
            for (op, n, v) in ops {
                let (name, value) = (NAMES[n], VALUES[usize::from(v)]);
                match op {
                    0 => h.add(name, value),
                    1 => h.set(name, value),
                    2 => {
                        h.remove(name);
                    }
                    3 => h.retain(|f| !f.name.eq_ignore_ascii_case(name.as_bytes())),
                    _ => h.push_wire(Bytes::from_static(name.as_bytes()), Bytes::from_static(value.as_bytes())),
                }
                prop_assert_eq!(pairs(&to_header_map(&h, true)), pairs(&rebuilt(&h)));
            }
        }
    }
}
