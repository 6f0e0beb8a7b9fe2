//! One exchange of the driver on its connections, over HTTP/1.1: a request and its
//! response on a kept or new connection, or a recorded WebSocket conversation on a
//! connection of its own (see ws_client.rs for the protocol, sans-IO).

use super::dial::{Conn, Conns, Dialer};
use super::prepared::{BodyCheck, Prepared};
use super::response::ResponseReader;
use super::ws_client::{WsConversation, WsCounts, WsFail, WsPlan};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one request on the worker's kept connection of its endpoint or a new one; a
/// kept connection the peer had closed (keep-alive race) is retried once on a new
/// one. The status, the body length, and whether the body is the recorded one.
pub async fn exchange(
    conns: &mut Conns,
    dialer: &Dialer,
    req: &Prepared,
    buf: &mut Vec<u8>,
) -> Result<(u16, u64, bool), &'static str> {
    for attempt in 0..2 {
        let (mut c, reused) = match conns.take(req.endpoint) {
            Some(c) => (c, true),
            None => (dialer.dial(req.endpoint).await?, false),
        };
        match once(&mut c, req, buf).await {
            Ok((status, body, keep, same)) => {
                if keep {
                    conns.put(req.endpoint, c);
                }
                return Ok((status, body, same));
            }
            Err(Fail::Stale) if reused && attempt == 0 => {}
            Err(Fail::Stale) | Err(Fail::Io) => return Err("io"),
            Err(Fail::Parse) => return Err("parse"),
        }
    }
    Err("io")
}

enum Fail {
    /// Closed before any response byte.
    Stale,
    Io,
    Parse,
}

async fn once(
    s: &mut Conn,
    req: &Prepared,
    buf: &mut Vec<u8>,
) -> Result<(u16, u64, bool, bool), Fail> {
    s.write_all(&req.wire).await.map_err(|_| Fail::Stale)?;
    if let Conn::Tls(_) = s {
        // rustls holds the records until flushed
        s.flush().await.map_err(|_| Fail::Stale)?;
    }
    let mut rd = ResponseReader::new(req.head);
    let mut check = BodyCheck::new(req.expect.as_deref());
    buf.clear();
    let mut got = false;
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = s
            .read_buf(buf)
            .await
            .map_err(|_| if got { Fail::Io } else { Fail::Stale })?;
        if n == 0 {
            if rd.eof() {
                return Ok((rd.status, rd.body_len, false, check.ok()));
            }
            return Err(if got { Fail::Io } else { Fail::Stale });
        }
        got = true;
        let used = rd
            .feed_with(buf, &mut |b| check.feed(b))
            .map_err(|_| Fail::Parse)?;
        buf.drain(..used);
        if rd.done() {
            // bytes past the response: the peer is out of step, do not reuse
            let keep = rd.keep_alive && buf.is_empty();
            return Ok((rd.status, rd.body_len, keep, check.ok()));
        }
    }
}

/// Plays the recorded conversation `plan` of `req`: on the kept connection of its
/// endpoint when `reuse` (the recording's connection carried it), else on a new one,
/// as browsers open one for a WebSocket. The connection is not kept after it. What
/// was sent and received goes into `counts` as it happens, so that a conversation
/// cut by the timeout still counts its messages.
pub async fn websocket(
    conns: &mut Conns,
    reuse: bool,
    dialer: &Dialer,
    req: &Prepared,
    plan: &WsPlan,
    counts: &mut WsCounts,
) -> Result<(), WsFail> {
    for attempt in 0..2 {
        let kept = if reuse {
            conns.take(req.endpoint)
        } else {
            None
        };
        let (mut c, reused) = match kept {
            Some(c) => (c, true),
            None => (dialer.dial(req.endpoint).await?, false),
        };
        match conversation(&mut c, plan, counts).await {
            // a kept connection the peer had closed before answering: once more anew
            Err("io") if reused && attempt == 0 && counts.sent_msgs == 0 => {}
            r => return r,
        }
    }
    Err("io")
}

async fn conversation(c: &mut Conn, plan: &WsPlan, counts: &mut WsCounts) -> Result<(), WsFail> {
    let mut key = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| "ws-key")?;
    let mut out = BytesMut::with_capacity(4096);
    let mut inb = BytesMut::with_capacity(16 * 1024);
    let mut conv = WsConversation::start(plan, key, &mut out);
    loop {
        // rustls holds the records until flushed
        let wrote = out.is_empty() || (c.write_all(&out).await.is_ok() && c.flush().await.is_ok());
        out.clear();
        if inb.capacity() - inb.len() < 4096 {
            inb.reserve(16 * 1024);
        }
        let r = match wrote && !conv.done() {
            true => c.read_buf(&mut inb).await.ok().filter(|&n| n > 0),
            false => None,
        };
        // the peer gone, whether seen by a write or a read, ends it as an end of stream
        let r = match r {
            Some(_) => conv.feed(&mut inb, &mut out),
            None if conv.done() => return Ok(()),
            None => conv.eof(),
        };
        *counts = conv.counts;
        // done: the loop writes what answers the server's close, then returns
        r?;
    }
}

#[cfg(test)]
mod tests {
    use super::BodyCheck;

    fn check(expect: Option<&[u8]>, parts: &[&[u8]]) -> bool {
        let mut c = BodyCheck::new(expect);
        for p in parts {
            c.feed(p);
        }
        c.ok()
    }

    #[test]
    fn a_body_check_wants_every_byte_and_no_more() {
        assert!(check(Some(b"hello"), &[b"he", b"", b"llo"]));
        assert!(!check(Some(b"hello"), &[b"he", b"LLo"]));
        assert!(!check(Some(b"hello"), &[b"hell"]));
        assert!(!check(Some(b"hello"), &[b"hello", b"!"]));
        assert!(check(Some(b""), &[]));
        assert!(check(None, &[b"anything"]));
    }
}
