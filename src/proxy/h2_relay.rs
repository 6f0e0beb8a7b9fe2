//! Relays of an h2 body to an h2 stream, through the SSE layer when one rewrites it:
//! apart from `h2_stream`, so the upstream legs that use that module's types never
//! reach the SSE layer (and, through it, the hooks' waits).

use crate::flows::capture::BodyTap;
use crate::proxy::h2_stream::{next_data, send_data, Incoming};
use crate::proxy::sse;
use bytes::Bytes;
use h2::SendStream;

/// Relays what is left of a body: the part a hook read before finding it too large,
/// then the rest as it arrives.
pub async fn relay_rest(
    body: &mut Incoming,
    tx: &mut SendStream<Bytes>,
    mut rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<u64, h2::Error> {
    let mut n = 0;
    if let Some(p) = body.prefix.take() {
        let p = rewrite(&mut rw, p).await;
        body.see(&p);
        n += p.len() as u64;
        send_data(tx, p, false).await?;
    }
    Ok(n + pump(body, tx, rw).await?)
}

/// The SSE layer's output for `piece`, or `piece` itself without one.
pub async fn rewrite(rw: &mut Option<&mut sse::Rewriter<'_>>, piece: Bytes) -> Bytes {
    match rw {
        Some(r) => r.feed(&piece).await.freeze(),
        None => piece,
    }
}

/// What the SSE layer still holds when the body ends (an unfinished last block).
pub async fn send_rest(
    tx: &mut SendStream<Bytes>,
    rw: Option<&mut sse::Rewriter<'_>>,
    tap: Option<&mut BodyTap>,
) -> Result<u64, h2::Error> {
    let Some(r) = rw else { return Ok(0) };
    let rest = r.finish();
    if let Some(t) = tap {
        t.see(&rest);
    }
    let n = rest.len() as u64;
    send_data(tx, rest, false).await?;
    Ok(n)
}

/// Relays a body frame by frame, then its trailers; the receive window opens only as
/// the other side takes the data, so a slow reader slows the sender.
async fn pump(
    body: &mut Incoming,
    tx: &mut SendStream<Bytes>,
    mut rw: Option<&mut sse::Rewriter<'_>>,
) -> Result<u64, h2::Error> {
    let mut n = 0;
    while let Some(chunk) = next_data(&mut body.rx, tx).await {
        let chunk = chunk?;
        let len = chunk.len();
        let out = rewrite(&mut rw, chunk).await;
        body.see(&out);
        n += out.len() as u64;
        send_data(tx, out, false).await?;
        let _ = body.rx.flow_control().release_capacity(len);
    }
    n += send_rest(tx, rw, body.tap.as_mut()).await?;
    match body.rx.trailers().await? {
        Some(t) => {
            body.see_trailers(&t);
            tx.send_trailers(t)?
        }
        None => tx.send_data(Bytes::new(), true)?,
    }
    Ok(n)
}
