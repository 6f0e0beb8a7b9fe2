//! The HTTP/1.1 upstream leg, luring in the client role: write a request head and its
//! body ([`send_ready`], or [`send_streaming`] while watching for the response head),
//! then read the response head.

use crate::http::{Headers, ResponseHead};
use crate::io::{Deadline, Stream};
use crate::proto::http1::{parse_response_head, parse_response_wire, Limits, ParsedResponse};
use crate::proxy::body_relay::{self, H1Body, Output, RelayError, Sink};
use crate::proxy::h2_stream::{from_header_map, Incoming};
use crate::proxy::upstream::Upstream;
use bytes::{Bytes, BytesMut};
use std::cell::Cell;
use std::net::Shutdown;
use std::time::Duration;

/// Why no response head came.
#[derive(Debug)]
pub enum RespError {
    /// Closed before any byte (a stale pooled connection, or a crash).
    Closed,
    /// Nothing came in time.
    Timeout,
    /// What came is not an HTTP/1 response head.
    Bad(String),
}

impl RespError {
    /// The status and text of the answer a client gets for it.
    pub fn answer(&self, timeout: Duration) -> (u16, String) {
        match self {
            RespError::Closed => (
                502,
                "upstream closed the connection without responding".into(),
            ),
            RespError::Timeout => (504, format!("upstream did not respond within {timeout:?}")),
            RespError::Bad(t) => (502, format!("bad response from upstream: {t}")),
        }
    }

    /// The answer, with the reason hooks see as `msg.error`.
    pub fn flow_error(&self, timeout: Duration) -> crate::proxy::exchange::reply::FlowError {
        let reason = match self {
            RespError::Closed => "upstream reset",
            RespError::Timeout => "upstream timeout",
            RespError::Bad(_) => "bad upstream response",
        };
        let (status, text) = self.answer(timeout);
        crate::proxy::exchange::reply::FlowError {
            status,
            text,
            reason: reason.into(),
        }
    }
}

/// Why an exchange with an HTTP/1 upstream failed.
#[derive(Debug)]
pub enum SendError {
    /// The client failed while its body was being sent.
    Client(String),
    /// The client's body framing is broken: it gets a 400 if nothing was answered yet.
    BadBody(String),
    /// The upstream failed.
    Upstream(RespError),
}

/// A request body that streams upstream after its head.
pub enum Upload<'a> {
    /// An HTTP/1 client's body, relayed verbatim through its decoder.
    H1(H1Body<'a>),
    /// An h2 stream's body, chunked when `chunked` (trailers then in the last chunk).
    H2 {
        /// The body.
        body: &'a mut Incoming,
        /// Frame it as chunked.
        chunked: bool,
        /// The longest the client may pause between two DATA frames (`--body-timeout`).
        timeout: Duration,
    },
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    /// Interim (1xx other than 100) heads to pass on to an HTTP/1.1 client.
    pub interim: Vec<ResponseHead>,
    /// The final head: as it arrived when `Waits::wire` allowed it.
    pub head: ParsedResponse,
    /// Whether the whole request body went upstream.
    pub complete: bool,
}

/// How long to wait for the upstream, and what its heads may be.
#[derive(Clone, Copy)]
pub struct Waits<'a> {
    /// `--upstream-timeout`, armed once the request is sent.
    pub upstream: Duration,
    /// Armed with `upstream` when the whole request is sent at once.
    pub deadline: &'a Deadline,
    /// Limits on response heads.
    pub limits: &'a Limits,
    /// Nothing reads or changes the final head's fields before it is relayed to an
    /// HTTP/1 client: it may stay as the bytes it arrived in.
    pub wire: bool,
}

/// Writes `head` and `parts` (a body held whole, already framed, or none) to `up`,
/// then reads up to the final response head. Kept apart from [`send_streaming`], whose
/// future is much larger: most requests take this one, and its future is copied once
/// per request.
pub async fn send_ready(
    up: &mut Upstream,
    head: BytesMut,
    mut parts: Vec<Bytes>,
    waits: Waits<'_>,
) -> Result<Answer, SendError> {
    let t0 = crate::metrics::clock();
    // most requests carry no body: their head is written without a list to hold it
    let written = match parts.is_empty() {
        true => up.stream.write_all(head.freeze()).await,
        false => {
            parts.insert(0, head.freeze());
            up.stream.write_all_vectored(parts).await
        }
    };
    if let Err(e) = written {
        tracing::debug!("upstream write failed: {e}");
        return Err(SendError::Upstream(RespError::Closed));
    }
    waits.deadline.arm(waits.upstream);
    let deadline = Some(waits.deadline);
    let (interim, head) =
        read_final_head(&up.stream, &mut up.buf, waits.limits, deadline, waits.wire)
            .await
            .map_err(SendError::Upstream)?;
    crate::metrics::upstream_ttfb(t0);
    Ok(Answer {
        interim,
        head,
        complete: true,
    })
}

/// Writes `head`, then streams the body while the upstream is watched, so an early
/// final response (413, 401...) reaches the client even when it holds its body back:
/// no deadline while the upload runs (a long upload is not a slow upstream), then
/// `waits.upstream` for the head.
pub async fn send_streaming(
    up: &mut Upstream,
    head: BytesMut,
    upload: Upload<'_>,
    waits: Waits<'_>,
) -> Result<Answer, SendError> {
    let Upstream {
        stream: ups,
        buf: upbuf,
        ..
    } = up;
    let ups: &Stream = ups;
    let body_read = Cell::new(false);
    let upload = async {
        match upload {
            Upload::H1(mut body) => {
                let sink = Sink {
                    stream: ups,
                    limit: None,
                };
                body_relay::body(
                    &mut body,
                    sink,
                    Some(head),
                    Output::Verbatim,
                    Some(&body_read),
                )
                .await
            }
            Upload::H2 {
                body,
                chunked,
                timeout,
            } => upload_h2(ups, head.freeze(), body, (chunked, timeout), &body_read).await,
        }
    };
    let response = read_final_head(ups, upbuf, waits.limits, None, waits.wire);
    tokio::pin!(upload);
    tokio::pin!(response);
    let t = waits.upstream;
    let (r, complete) = tokio::select! {
        biased;
        r = &mut response => {
            // the upstream answered first; if the client's body was read whole the
            // connection stays in sync once the last write lands
            let mut complete = false;
            if body_read.get() {
                complete = matches!(tokio::time::timeout(t, &mut upload).await, Ok(Ok(_)));
            }
            (r, complete)
        }
        u = &mut upload => match u {
            Ok(_) => match tokio::time::timeout(t, &mut response).await {
                Ok(r) => (r, true),
                Err(_) => {
                    ups.shutdown(Shutdown::Both);
                    (Err(RespError::Timeout), true)
                }
            },
            Err(RelayError::Source(why)) => {
                ups.shutdown(Shutdown::Both);
                return Err(SendError::Client(why));
            }
            Err(RelayError::Malformed(why)) => {
                ups.shutdown(Shutdown::Both);
                return Err(SendError::BadBody(why));
            }
            // the upstream stopped reading; it may have answered already
            Err(RelayError::Sink(_)) => (response.await, false),
        },
    };
    let (interim, head) = r.map_err(SendError::Upstream)?;
    Ok(Answer {
        interim,
        head,
        complete,
    })
}

/// Writes a request head and then an h2 request body to an HTTP/1 upstream, chunked
/// when `chunked`; sets `read_all` once the client's stream has ended.
async fn upload_h2(
    up: &Stream,
    head: Bytes,
    body: &mut Incoming,
    (chunked, pause): (bool, Duration),
    read_all: &Cell<bool>,
) -> Result<u64, RelayError> {
    let frame = |data: Bytes| -> Bytes {
        if !chunked {
            return data;
        }
        let mut out = BytesMut::with_capacity(data.len() + 16);
        crate::proto::http1::encode_chunk(&data, &mut out);
        out.freeze()
    };
    let client = |e: h2::Error| RelayError::Source(e.to_string());
    let mut parts = vec![head];
    if let Some(p) = body.prefix.take() {
        parts.push(frame(p));
    }
    let mut sent: u64 = parts.iter().map(|p| p.len() as u64).sum();
    up.write_all_vectored(parts)
        .await
        .map_err(RelayError::Sink)?;
    // h2's receive futures keep no state of their own: one dropped at the timeout
    // loses nothing
    let stalled = || RelayError::Source(format!("the client sent no body for {pause:?}"));
    while let Some(chunk) = tokio::time::timeout(pause, body.rx.data())
        .await
        .map_err(|_| stalled())?
    {
        let chunk = chunk.map_err(client)?;
        let len = chunk.len();
        let out = frame(chunk);
        sent += out.len() as u64;
        up.write_all(out).await.map_err(RelayError::Sink)?;
        let _ = body.rx.flow_control().release_capacity(len);
    }
    let trailers = body.rx.trailers().await.map_err(client)?;
    read_all.set(true);
    if chunked {
        let mut out = BytesMut::new();
        let t: Option<Headers> = trailers.as_ref().map(from_header_map);
        crate::proto::http1::encode_last_chunk(t.as_ref(), &mut out);
        sent += out.len() as u64;
        up.write_all(out.freeze()).await.map_err(RelayError::Sink)?;
    }
    Ok(sent)
}

/// Reads up to the final response head; returns the interim (1xx other than 100)
/// heads to pass on, and the final head. `deadline` None waits as long as it takes.
pub async fn read_response_head(
    stream: &Stream,
    buf: &mut BytesMut,
    limits: &Limits,
    deadline: Option<&Deadline>,
) -> Result<(Vec<ResponseHead>, ResponseHead), RespError> {
    let (interim, head) = read_final_head(stream, buf, limits, deadline, false).await?;
    let head = head
        .into_head()
        .map_err(|e| RespError::Bad(e.to_string()))?;
    Ok((interim, head))
}

/// [`read_response_head`], keeping a final head as its bytes when `wire`.
async fn read_final_head(
    stream: &Stream,
    buf: &mut BytesMut,
    limits: &Limits,
    deadline: Option<&Deadline>,
    wire: bool,
) -> Result<(Vec<ResponseHead>, ParsedResponse), RespError> {
    let mut seen_any = false;
    let mut interim = Vec::new();
    loop {
        if !buf.is_empty() {
            seen_any = true;
            let parsed = match wire {
                true => parse_response_wire(buf, limits),
                false => parse_response_head(buf, limits)
                    .map(|o| o.map(|(h, n)| (ParsedResponse::Head(h), n))),
            };
            match parsed {
                Ok(Some((h, n))) => {
                    let _ = buf.split_to(n);
                    match h {
                        // luring answered Expect itself; an upstream 100 is redundant
                        ParsedResponse::Head(h) if h.status == 100 => {}
                        // 101 ends HTTP on this connection: the caller decides what follows
                        ParsedResponse::Head(h) if (102..=199).contains(&h.status) => {
                            interim.push(h)
                        }
                        h => return Ok((interim, h)),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(RespError::Bad(e.to_string())),
            }
        }
        let read = match deadline {
            Some(d) => body_relay::read_some_by(stream, buf, d, body_relay::HEAD_READ).await,
            None => {
                let forever = Duration::from_secs(86400 * 365);
                body_relay::read_some_at_most(stream, buf, forever, body_relay::HEAD_READ).await
            }
        };
        match read {
            Ok(0) if seen_any => return Err(RespError::Bad("upstream closed mid-head".into())),
            Ok(0) => return Err(RespError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(RespError::Timeout),
            Err(_) if !seen_any => return Err(RespError::Closed),
            Err(e) => return Err(RespError::Bad(e.to_string())),
        }
    }
}
