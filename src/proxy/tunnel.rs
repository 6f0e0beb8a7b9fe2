//! Raw byte tunnels (CONNECT without interception): both directions at once, each
//! read buffer written to the other side as is; raw.on_chunk when a plugin hooks it.

use crate::io::Stream;
use crate::plugin::{ConnInfo, Engine, Event, Phase, RawChunk};
use crate::proxy::relay::{ensure_spare, READ_BUF};
use bytes::BytesMut;
use std::future::Future;
use std::net::Shutdown;
use std::pin::Pin;

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

/// Relays until both directions have ended. `client_buf` holds bytes the client sent
/// after its CONNECT head (pipelined early data).
pub async fn run(
    client: &Stream,
    client_buf: BytesMut,
    upstream: &Stream,
    upstream_buf: BytesMut,
    engine: Option<&Engine>,
    info: &ConnInfo,
    pending: [Option<PendingRead<'_>>; 2],
) -> TunnelStats {
    let hook = engine.filter(|e| e.has(Event::RawChunk));
    let [client_read, upstream_read] = pending;
    let (up, down) = tokio::join!(
        one_way(client, client_buf, client_read, upstream, true, hook, info),
        one_way(
            upstream,
            upstream_buf,
            upstream_read,
            client,
            false,
            hook,
            info
        ),
    );
    TunnelStats { up, down }
}

async fn one_way(
    src: &Stream,
    mut buf: BytesMut,
    mut pending: Option<PendingRead<'_>>,
    dst: &Stream,
    from_client: bool,
    hook: Option<&Engine>,
    info: &ConnInfo,
) -> u64 {
    let mut offset = 0u64;
    let mut sent = 0u64;
    loop {
        if !buf.is_empty() {
            let mut data = buf.split().freeze();
            let len = data.len() as u64;
            if let Some(e) = hook {
                let mut chunk = RawChunk {
                    from_client,
                    data,
                    offset,
                };
                e.raw_chunk(Phase::PrePipeline, info, &mut chunk);
                e.raw_chunk(Phase::PostPipeline, info, &mut chunk);
                data = chunk.data;
            }
            offset += len;
            sent += data.len() as u64;
            if !data.is_empty() && dst.write_all(data).await.is_err() {
                src.shutdown(Shutdown::Read);
                return sent;
            }
        }
        let (res, b) = match pending.take() {
            // `buf` was flushed above, so the pending read's bytes come next in order
            Some(read) => read.await,
            None => {
                ensure_spare(&mut buf, READ_BUF / 2);
                src.read(buf).await
            }
        };
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            _ => {
                // pass the half-close on so the other side sees EOF and can finish
                dst.shutdown(Shutdown::Write);
                return sent;
            }
        }
    }
}
