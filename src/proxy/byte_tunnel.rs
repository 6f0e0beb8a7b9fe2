//! Raw byte tunnels (CONNECT without interception): both directions at once, each
//! read buffer written to the other side as is; raw.on_chunk when a plugin hooks it.

use crate::flows::capture::RawTap;
use crate::io::{self, Deadline, Idle, SpliceError, Stream};
use crate::plugin::{ConnInfo, Engine, Event, Phase, RawChunk};
use crate::proxy::body_relay::{ensure_spare, READ_BUF};
use crate::proxy::hook_io;
use crate::proxy::worker::Worker;
use bytes::BytesMut;
use std::cell::RefCell;
use std::future::Future;
use std::net::Shutdown;
use std::pin::Pin;
use std::time::Duration;

/// A read already in flight when the tunnel starts (io_uring reads cannot be
/// cancelled, so a read started while deciding how to handle the tunnel is finished here).
pub type PendingRead<'a> = Pin<Box<dyn Future<Output = (std::io::Result<usize>, BytesMut)> + 'a>>;

/// Byte counts of a finished tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelStats {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
}

/// The two sockets of a relayed connection, each with bytes already read from it
/// (pipelined after a CONNECT head, a server greeting read while deciding...).
pub struct Peers<'a> {
    /// The client socket.
    pub client: &'a Stream,
    /// Client bytes read but not yet relayed.
    pub client_early: BytesMut,
    /// The upstream socket.
    pub upstream: &'a Stream,
    /// Upstream bytes read but not yet relayed.
    pub upstream_early: BytesMut,
}

/// One direction of a tunnel: where its bytes come from and go, and who looks at them.
struct Direction<'a, 'p> {
    src: &'a Stream,
    dst: &'a Stream,
    from_client: bool,
    /// The worker (which performs a waiting hook's I/O) and engine, when raw.on_chunk is hooked.
    hook: Option<(&'a Worker, &'a Engine)>,
    info: &'a ConnInfo,
    pending: Option<PendingRead<'p>>,
    /// The recorder's copy of the bytes (`--record-raw`).
    raw: Option<&'a RefCell<RawTap>>,
}

/// Relays until both directions have ended, or until `idle` passes with no byte moved
/// either way (then both sockets are shut down). With `raw`, the recorder keeps a copy
/// of the bytes.
pub async fn run(
    w: &Worker,
    peers: Peers<'_>,
    engine: Option<&Engine>,
    info: &ConnInfo,
    pending: [Option<PendingRead<'_>>; 2],
    idle: Option<Duration>,
    raw: Option<&RefCell<RawTap>>,
) -> TunnelStats {
    let hook = engine.filter(|e| e.has(Event::RawChunk)).map(|e| (w, e));
    let [client_read, upstream_read] = pending;
    // one deadline for both directions: a download the client never answers is not idle
    let deadline = Deadline::new();
    let idle = Idle::shared(&deadline, idle);
    let up = Direction {
        src: peers.client,
        dst: peers.upstream,
        from_client: true,
        hook,
        info,
        pending: client_read,
        raw,
    };
    let down = Direction {
        src: peers.upstream,
        dst: peers.client,
        from_client: false,
        hook,
        info,
        pending: upstream_read,
        raw,
    };
    let (up, down) = tokio::join!(
        one_way(up, peers.client_early, idle),
        one_way(down, peers.upstream_early, idle),
    );
    TunnelStats { up, down }
}

/// Ends a tunnel that went quiet: both sockets are shut down both ways, which also ends
/// the other direction's pending operations.
fn close_quiet(src: &Stream, dst: &Stream, info: &ConnInfo) {
    tracing::debug!(conn = info.conn_id, "tunnel idle: closed");
    src.shutdown(Shutdown::Both);
    dst.shutdown(Shutdown::Both);
}

async fn one_way(d: Direction<'_, '_>, mut buf: BytesMut, idle: Idle<'_>) -> u64 {
    let Direction {
        src,
        dst,
        from_client,
        hook,
        info,
        mut pending,
        raw,
    } = d;
    let mut offset = 0u64;
    let mut sent = 0u64;
    loop {
        if !buf.is_empty() {
            let mut data = buf.split().freeze();
            let len = data.len() as u64;
            let mut close = false;
            if let Some((w, e)) = hook {
                let mut chunk = RawChunk {
                    from_client,
                    data,
                    offset,
                    close: false,
                };
                for phase in [Phase::PrePipeline, Phase::PostPipeline] {
                    let step = e.raw_chunk(phase, info, &mut chunk);
                    hook_io::settle(w, e, step, |s| e.resume_event(s, info, None, &mut chunk))
                        .await;
                }
                data = chunk.data;
                close = chunk.close;
            }
            offset += len;
            sent += data.len() as u64;
            if let Some(r) = raw {
                r.borrow_mut().see(from_client, &data);
            }
            if !data.is_empty() {
                match idle.wait_write(dst.write_all(data)).await {
                    Some(Ok(())) => idle.progress(),
                    Some(Err(_)) => {
                        src.shutdown(Shutdown::Read);
                        return sent;
                    }
                    None => {
                        close_quiet(src, dst, info);
                        return sent;
                    }
                }
            }
            if close {
                // msg:close(): this chunk was the last; both sides end, which also ends
                // the other direction's read
                tracing::debug!(conn = info.conn_id, "tunnel closed by raw.on_chunk");
                dst.close_write().await;
                src.shutdown(Shutdown::Both);
                dst.shutdown(Shutdown::Both);
                return sent;
            }
        }
        if pending.is_none() && hook.is_none() && raw.is_none() && io::can_splice(src, dst) {
            return sent + splice_rest(src, dst, info, idle).await;
        }
        let read = async {
            match pending.take() {
                // `buf` was flushed above, so the pending read's bytes come next in order
                Some(read) => read.await,
                None => {
                    ensure_spare(&mut buf, READ_BUF / 2);
                    src.read(std::mem::take(&mut buf)).await
                }
            }
        };
        let Some((res, b)) = idle.wait(read).await else {
            close_quiet(src, dst, info);
            return sent;
        };
        buf = b;
        match res {
            Ok(n) if n > 0 => idle.progress(),
            _ => {
                // pass the half-close on so the other side sees EOF and can finish
                dst.close_write().await;
                return sent;
            }
        }
    }
}

/// With nothing to look at the bytes, the rest of a direction moves in the kernel
/// (passthrough TLS, plain CONNECT): the same end-of-stream handling as the read loop.
async fn splice_rest(src: &Stream, dst: &Stream, info: &ConnInfo, idle: Idle<'_>) -> u64 {
    let mut moved = 0;
    match io::splice(src, dst, u64::MAX, idle, &mut moved).await {
        Err(SpliceError::Source(e) | SpliceError::Sink(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            close_quiet(src, dst, info)
        }
        Err(SpliceError::Sink(_)) => src.shutdown(Shutdown::Read),
        Ok(()) | Err(SpliceError::Source(_) | SpliceError::Eof) => dst.shutdown(Shutdown::Write),
    }
    moved
}
