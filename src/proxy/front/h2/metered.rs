//! The client connection as the h2 server reads it, with every byte read shown to a
//! [`FloodMeter`] first. Over the budget, the session is told (it sends GOAWAY
//! ENHANCE_YOUR_CALM) and nothing more of the client is read.

use crate::proto::h2_flood::{FloodMeter, Verdict};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// An h2 server's I/O, metered on the read side.
pub(super) struct Metered<T> {
    io: T,
    meter: FloodMeter,
    /// Notified once, when the meter's verdict turns to a flood.
    flood: Rc<Notify>,
    /// The client connection's id, for the log.
    conn: u64,
}

impl<T> Metered<T> {
    /// `io` (of client connection `conn`) metered against a budget of `burst` control
    /// frames; `flood` is notified when it is exceeded.
    pub(super) fn new(io: T, burst: u32, flood: Rc<Notify>, conn: u64) -> Metered<T> {
        Metered {
            io,
            meter: FloodMeter::new(burst),
            flood,
            conn,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.meter.feed(&[], Instant::now()) != Verdict::Ok {
            // the session is sending GOAWAY: what the flooder sends next is not read
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if let Verdict::Flood(kind) = me.meter.feed(&buf.filled()[before..], Instant::now()) {
                tracing::info!(
                    conn = me.conn,
                    "HTTP/2 client sent {kind} frames beyond --h2-control-frame-budget: \
                     GOAWAY ENHANCE_YOUR_CALM"
                );
                me.flood.notify_one();
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
