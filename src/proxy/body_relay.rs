//! Moving body bytes between sockets: reads go into a buffer whose filled part is
//! written to the other side as the same allocation (no copy), and the next read runs
//! while that write is in flight.

use crate::flows::capture::BodyTap;
use crate::io::{self, Deadline, SpliceError, Stream};
use crate::proto::http1::{BodyDecoder, BodyKind};
use bytes::{Bytes, BytesMut};
use std::net::Shutdown;
use std::time::Duration;

/// Size of body read buffers: large enough that a 64 KiB response moves in one read.
pub const READ_BUF: usize = 64 * 1024;
/// Most bytes a head read takes, so that a large body behind the head stays in the
/// kernel for [`io::splice`].
pub const HEAD_READ: usize = 16 * 1024;
/// Largest first body piece copied behind the head to make one buffer; a larger one
/// goes out as a second iovec of the same write instead of being copied.
pub const COALESCE_MAX: usize = 4 * 1024;
/// Shortest run of opaque body bytes moved with splice instead of read + write: below
/// it, the copy costs less than the extra system calls.
pub const SPLICE_MIN: u64 = 16 * 1024;

/// Which side failed during a relay.
#[derive(Debug)]
pub enum RelayError {
    /// Reading the source failed, timed out, or it ended too early.
    Source(String),
    /// The source's body framing is broken (a bad chunk-size line...).
    Malformed(String),
    /// Writing the destination failed.
    Sink(std::io::Error),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Source(why) => write!(f, "the sender failed: {why}"),
            RelayError::Malformed(why) => write!(f, "broken framing: {why}"),
            RelayError::Sink(e) => write!(f, "the receiver failed: {e}"),
        }
    }
}

/// Makes sure `buf` has at least `min` bytes of spare capacity, moving leftover bytes
/// (a partial chunk-size line at most) into a fresh allocation when needed.
pub fn ensure_spare(buf: &mut BytesMut, min: usize) {
    if buf.capacity() - buf.len() < min {
        let mut fresh = BytesMut::with_capacity(READ_BUF.max(buf.len() + min));
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// Reads once into `buf` with a timeout; on timeout the socket is shut down so the
/// abandoned io_uring read completes (tokio-uring does not cancel dropped operations).
pub async fn read_some(
    stream: &Stream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> std::io::Result<usize> {
    read_some_at_most(stream, buf, timeout, usize::MAX).await
}

/// [`read_some`] taking at most `max` bytes.
pub async fn read_some_at_most(
    stream: &Stream,
    buf: &mut BytesMut,
    timeout: Duration,
    max: usize,
) -> std::io::Result<usize> {
    ensure_spare(buf, 4096);
    let b = std::mem::take(buf);
    let read = tokio::time::timeout(timeout, stream.read_at_most(b, max)).await;
    finish_read(stream, buf, read.ok())
}

/// [`read_some_at_most`] limited by a long-lived [`Deadline`] instead of a new timer.
pub async fn read_some_by(
    stream: &Stream,
    buf: &mut BytesMut,
    deadline: &Deadline,
    max: usize,
) -> std::io::Result<usize> {
    ensure_spare(buf, 4096);
    read_spare_by(stream, buf, deadline, max).await
}

/// [`read_some_by`] into the spare capacity `buf` has, however small (the caller
/// makes sure there is some), without making room first.
pub async fn read_spare_by(
    stream: &Stream,
    buf: &mut BytesMut,
    deadline: &Deadline,
    max: usize,
) -> std::io::Result<usize> {
    let b = std::mem::take(buf);
    let read = deadline.limit(stream.read_at_most(b, max)).await;
    finish_read(stream, buf, read.ok())
}

/// Puts the buffer of a finished read back; a read that timed out (None) shuts the
/// socket down so the abandoned io_uring operation completes.
fn finish_read(
    stream: &Stream,
    buf: &mut BytesMut,
    read: Option<(std::io::Result<usize>, BytesMut)>,
) -> std::io::Result<usize> {
    match read {
        Some((res, b)) => {
            *buf = b;
            res
        }
        None => {
            stream.shutdown(Shutdown::Both);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "read timed out",
            ))
        }
    }
}

/// How the body is written to the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Verbatim: same framing on both sides.
    Verbatim,
    /// Framing stripped (chunked to close-delimited, for HTTP/1.0 clients).
    Decoded,
}

/// How long a write may wait for its peer to accept bytes, with the deadline it arms.
pub type SendLimit<'a> = Option<(&'a Deadline, Duration)>;

/// Writes `parts` to `dst`; with a [`SendLimit`], a peer that accepts nothing for that
/// long ends the write with `TimedOut` and the socket is aborted ([`Stream::abort`]).
pub async fn send(dst: &Stream, parts: Vec<Bytes>, limit: SendLimit<'_>) -> std::io::Result<()> {
    let Some((deadline, after)) = limit.filter(|_| parts.iter().any(|p| !p.is_empty())) else {
        return dst.write_all_vectored(parts).await;
    };
    deadline.arm(after);
    match deadline.limit(dst.write_all_vectored(parts)).await {
        Ok(r) => r,
        Err(_) => {
            dst.abort();
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer accepted nothing for {after:?}"),
            ))
        }
    }
}

/// An HTTP/1 body on the wire: the socket it arrives on, the bytes read ahead of the
/// decoder, and the decoder that finds its end.
pub struct H1Body<'a> {
    /// The socket the body arrives on.
    pub stream: &'a Stream,
    /// Bytes read from it and not yet consumed.
    pub buf: &'a mut BytesMut,
    /// The body's framing state.
    pub dec: &'a mut BodyDecoder,
    /// How long one read may wait.
    pub timeout: Duration,
    /// The recorder's view of the body, when the flow is recorded.
    pub tap: Option<&'a mut BodyTap>,
}

/// Where relayed bytes are written, and how long the peer may accept nothing.
#[derive(Clone, Copy)]
pub struct Sink<'a> {
    /// The socket written to.
    pub stream: &'a Stream,
    /// The write limit (`--send-timeout` toward clients; none toward upstreams).
    pub limit: SendLimit<'a>,
}

/// Relays one body from `src` to `dst`. `first` (e.g. an already encoded head) is
/// written before the body, coalesced with the first body bytes when small.
/// Returns the bytes written to `dst`. `source_done` is set once the whole body has
/// been read from `src` (only the last write may still be under way).
pub async fn body(
    src: &mut H1Body<'_>,
    dst: Sink<'_>,
    mut first: Option<BytesMut>,
    output: Output,
    source_done: Option<&std::cell::Cell<bool>>,
) -> Result<u64, RelayError> {
    let H1Body {
        stream: src,
        buf: src_buf,
        dec,
        timeout,
        tap,
    } = src;
    let (src, timeout) = (*src, *timeout);
    let (src_buf, dec): (&mut BytesMut, &mut BodyDecoder) = (src_buf, dec);
    let mut tap = tap.as_deref_mut();
    if let (Some(t), Output::Verbatim) = (tap.as_deref_mut(), output) {
        t.wire(dec.kind());
    }
    let (dst, limit) = (dst.stream, dst.limit);
    let mut written = 0u64;
    loop {
        let (piece, done) = take_ready(src_buf, dec, output);
        if let (Some(t), Some(p)) = (tap.as_deref_mut(), piece.as_ref()) {
            t.see(p);
        }
        let pending = match (first.take(), piece) {
            // copied behind the head only into room the head was given for it
            (Some(mut head), Some(p))
                if p.len() <= COALESCE_MAX.min(head.capacity() - head.len()) =>
            {
                head.extend_from_slice(&p);
                vec![head.freeze()]
            }
            (Some(head), Some(p)) => vec![head.freeze(), p],
            (Some(head), None) => vec![head.freeze()],
            (None, Some(p)) => vec![p],
            (None, None) => Vec::new(),
        };
        let n: u64 = pending.iter().map(|b| b.len() as u64).sum();
        if let Some(why) = dec.fault() {
            // what came before the fault still goes out, so the peer sees where it broke
            send(dst, pending, limit).await.map_err(RelayError::Sink)?;
            return Err(RelayError::Malformed(format!("bad chunked framing: {why}")));
        }
        if done {
            if let Some(flag) = source_done {
                flag.set(true);
            }
            send(dst, pending, limit).await.map_err(RelayError::Sink)?;
            return Ok(written + n);
        }
        // a recorded body is read in user space: the recorder sees its bytes
        if output == Output::Verbatim
            && tap.is_none()
            && src_buf.is_empty()
            && dec.opaque_run() >= SPLICE_MIN
            && io::can_splice(src, dst)
        {
            send(dst, pending, limit).await.map_err(RelayError::Sink)?;
            written += n + splice_run(src, dst, dec, timeout, limit).await?;
            if dec.is_done() || dec.kind() == BodyKind::CloseDelimited {
                if let Some(flag) = source_done {
                    flag.set(true);
                }
                return Ok(written);
            }
            continue;
        }
        ensure_spare(src_buf, 4096);
        let rb = std::mem::take(src_buf);
        let read = async {
            match tokio::time::timeout(timeout, src.read(rb)).await {
                Ok(r) => Some(r),
                Err(_) => {
                    src.shutdown(Shutdown::Both);
                    None
                }
            }
        };
        let (r, w) = tokio::join!(read, send(dst, pending, limit));
        w.map_err(RelayError::Sink)?;
        written += n;
        let Some((res, b)) = r else {
            return Err(RelayError::Source(format!("no data for {timeout:?}")));
        };
        *src_buf = b;
        match res {
            Ok(0) => {
                dec.eof().map_err(|e| RelayError::Source(e.to_string()))?;
                if output == Output::Decoded {
                    return Ok(written);
                }
                // close-delimited body ends here; flush what the decoder accepted
                let (piece, _) = take_ready(src_buf, dec, output);
                if let Some(p) = piece {
                    if let Some(t) = tap.as_deref_mut() {
                        t.see(&p);
                    }
                    written += p.len() as u64;
                    send(dst, vec![p], limit).await.map_err(RelayError::Sink)?;
                }
                return Ok(written);
            }
            Ok(_) => {}
            Err(e) => return Err(RelayError::Source(e.to_string())),
        }
    }
}

/// Moves the decoder's opaque run from `src` to `dst` in the kernel; a close-delimited
/// body is moved to its end.
async fn splice_run(
    src: &Stream,
    dst: &Stream,
    dec: &mut BodyDecoder,
    timeout: Duration,
    limit: SendLimit<'_>,
) -> Result<u64, RelayError> {
    let run = dec.opaque_run();
    let mut moved = 0;
    let idle = io::Idle::Each {
        read: timeout,
        write: limit.map(|(_, w)| w),
    };
    match io::splice(src, dst, run, idle, &mut moved).await {
        Ok(()) => {
            dec.skip_opaque(moved);
            Ok(moved)
        }
        Err(SpliceError::Eof) => Err(RelayError::Source(
            dec.eof().err().map(|e| e.to_string()).unwrap_or_default(),
        )),
        Err(SpliceError::Source(e)) => Err(RelayError::Source(e.to_string())),
        Err(SpliceError::Sink(e)) => Err(RelayError::Sink(e)),
    }
}

/// Splits off the body bytes that are ready to go, and says whether the body ended.
/// Broken framing is left for the caller to find in [`BodyDecoder::fault`], after the
/// good bytes before it.
fn take_ready(buf: &mut BytesMut, dec: &mut BodyDecoder, output: Output) -> (Option<Bytes>, bool) {
    if buf.is_empty() {
        return (None, dec.is_done());
    }
    match output {
        Output::Verbatim => match dec.scan(buf) {
            Ok(s) => {
                let piece = (s.consumed > 0).then(|| buf.split_to(s.consumed).freeze());
                (piece, s.done)
            }
            Err(_) => (None, false),
        },
        Output::Decoded => match dec.decode(buf) {
            Ok(d) => {
                let piece = match d.data.len() {
                    0 => None,
                    1 => d.data.into_iter().next(),
                    _ => Some(Bytes::from(d.data.concat())),
                };
                (piece, d.done)
            }
            Err(_) => (None, false),
        },
    }
}

/// Result of reading a whole body for a plugin.
pub enum Buffered {
    /// The whole body, framing removed, and its trailers.
    Complete(Bytes, Option<crate::http::Headers>),
    /// Over the limit: it is relayed unread, from its first byte.
    TooLarge,
}

/// Undoes a partial read of a body: `wire` goes back in front of `buf`, and the
/// decoder starts again at the body's first byte.
fn put_back(mut wire: BytesMut, buf: &mut BytesMut, dec: &mut BodyDecoder) -> Buffered {
    wire.extend_from_slice(buf);
    *buf = wire;
    *dec = BodyDecoder::new(dec.kind());
    Buffered::TooLarge
}

/// Reads a whole body (for a plugin that asked for it) up to `max` wire bytes. A body
/// over `max` is left to be relayed: the wire bytes read go back in front of the
/// buffer and the decoder starts again at the body's first byte.
pub async fn buffer_body(body: &mut H1Body<'_>, max: usize) -> Result<Buffered, String> {
    let kind = body.dec.kind();
    let H1Body {
        stream: src,
        buf,
        dec,
        timeout,
        ..
    } = body;
    let (src, timeout) = (*src, *timeout);
    let (buf, dec): (&mut BytesMut, &mut BodyDecoder) = (buf, dec);
    let mut wire = BytesMut::new();
    loop {
        if !buf.is_empty() {
            let s = dec.scan(buf).map_err(|e| e.to_string())?;
            wire.extend_from_slice(&buf.split_to(s.consumed));
            if s.done {
                break;
            }
        } else if dec.is_done() {
            break;
        }
        if wire.len() > max {
            return Ok(put_back(wire, buf, dec));
        }
        match read_some(src, buf, timeout).await {
            Ok(0) => {
                dec.eof().map_err(|e| e.to_string())?;
                break;
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if wire.len() > max {
        return Ok(put_back(wire, buf, dec));
    }
    let mut d = BodyDecoder::new(kind);
    let decoded = d.decode(&mut wire).map_err(|e| e.to_string())?;
    let payload = match decoded.data.len() {
        0 => Bytes::new(),
        1 => decoded.data.into_iter().next().unwrap_or_default(),
        _ => Bytes::from(decoded.data.concat()),
    };
    Ok(Buffered::Complete(payload, decoded.trailers))
}
