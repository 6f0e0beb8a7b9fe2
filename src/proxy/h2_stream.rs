//! HTTP/2 streams as both fronts and upstream legs use them: bodies moved frame by
//! frame under flow control, bodies read whole for hooks, and header fields converted
//! between the version-agnostic form and h2's.

use crate::flows::capture::BodyTap;
use crate::http::{Body, Headers, Request, Response};
use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use std::cell::Cell;
use std::task::Poll;
use std::time::Duration;

/// Fields that are meaningful on one HTTP/1 connection only and must not appear in
/// HTTP/2 (RFC 9113 section 8.2.2); `te` is allowed with the value "trailers" only.
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "te",
];

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

/// Header fields of an h2 head in the version-agnostic form.
pub fn from_header_map(map: &http::HeaderMap) -> Headers {
    let mut h = Headers::with_capacity(map.len());
    for (name, value) in map {
        h.push_wire(
            Bytes::copy_from_slice(name.as_str().as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
    }
    h
}

/// Header fields in h2 form: names lower-cased; fields h2 forbids dropped when `head`
/// (`te: trailers` is the one connection field h2 keeps).
pub fn to_header_map(h: &Headers, head: bool) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(h.len());
    for f in h.iter() {
        let Ok(name) = http::HeaderName::from_bytes(&f.name) else {
            continue;
        };
        if head
            && CONNECTION_SPECIFIC.contains(&name.as_str())
            && !(name == http::header::TE && f.value.as_ref() == b"trailers")
        {
            continue;
        }
        if let Ok(v) = http::HeaderValue::from_maybe_shared(f.value.clone()) {
            map.append(name, v);
        }
    }
    map
}

/// The h2 head of a request going upstream; `Host` (set by the pipeline) becomes the
/// `:authority`.
pub fn upstream_head(req: &Request) -> Result<http::Request<()>, String> {
    let authority = req
        .headers
        .get("host")
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_else(|| req.authority.clone());
    let path = req.path.as_deref().unwrap_or("/");
    let uri = format!("{}://{}{}", req.scheme, authority, path);
    let mut b = http::Request::builder()
        .method(req.method.as_ref())
        .uri(uri)
        .version(http::Version::HTTP_2);
    if let Some(h) = b.headers_mut() {
        *h = to_header_map(&req.headers, true);
    }
    b.body(())
        .map_err(|e| format!("cannot send the request over HTTP/2: {e}"))
}

/// The h2 head of a response going to the client.
pub fn response_head(resp: &Response) -> http::Response<()> {
    let mut r = http::Response::new(());
    *r.status_mut() =
        http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    *r.headers_mut() = to_header_map(&resp.headers, true);
    r
}
