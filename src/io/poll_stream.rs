//! tokio `AsyncRead`/`AsyncWrite` over a [`Stream`], for codecs that want poll-based
//! IO (the h2 crate). Owned-buffer operations cannot be polled on a borrowed slice, so
//! the bridge keeps one read and one write operation in flight and copies between them
//! and the caller's buffers: one copy each way, which h2 would make into its own
//! buffers anyway.
//!
//! Over TLS, large writes (DATA frames) are encrypted straight from the caller's
//! buffers into rustls, small ones are joined first (one record for several frames),
//! and the records are sent from rustls' own buffers (tls_stream): no write queue.
//! Reads copy decrypted bytes from rustls straight into the caller's buffer; the
//! operation in flight only reads ciphertext for rustls.
//!
//! Writes are behind: a flush returns once what was written is in a write operation
//! or queued behind one (as a kernel send buffer would hold it), and the operation
//! wakes the task when it completes. h2 flushes after every DATA frame; waiting for
//! each write to complete let an h2 connection send one frame per turn of the event
//! loop, and the frames that queue behind a write now go out together in the next.

use super::tls_stream::ReadNow;
use super::Stream;
use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type ReadOp<'a> = Pin<Box<dyn Future<Output = (io::Result<usize>, BytesMut)> + 'a>>;
type WriteOp<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + 'a>>;

/// Size of each socket read.
const READ_CHUNK: usize = 32 * 1024;
/// Bytes accepted from the caller while a write is still in flight; beyond it the
/// caller is told to wait, which is how backpressure reaches h2.
const WRITE_BEHIND: usize = 256 * 1024;
/// Room a new write queue starts with: a few DATA frames. A queue lives only while
/// there is something to write.
const WRITE_QUEUE_START: usize = 64 * 1024;

/// Over TLS, writes smaller than this are joined before they are encrypted (a record
/// and a seal for several h2 frames); larger ones go to rustls as they are.
const TLS_JOIN: usize = 4 * 1024;
/// Most joined bytes over TLS: one record's plaintext.
const TLS_JOIN_MAX: usize = 16 * 1024;

/// A poll-based view of a stream, borrowed (`&Stream`) or shared (`Rc<Stream>`, for a
/// view that lives in a task of its own). When it is dropped with a read in flight,
/// the owner must shut the stream down (io module docs).
pub struct PollStream<'a, S = &'a Stream> {
    stream: S,
    read: Option<ReadOp<'a>>,
    /// Bytes read and not yet handed out.
    ready: BytesMut,
    eof: bool,
    write: Option<WriteOp<'a>>,
    /// Bytes accepted and not yet handed to a write operation.
    queued: BytesMut,
    /// Bytes moved each way, for connection statistics.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

impl<'a, S: Deref<Target = Stream> + Clone + 'a> PollStream<'a, S> {
    /// Wraps `stream`; `early` holds bytes already read from it.
    pub fn new(stream: S, early: BytesMut) -> PollStream<'a, S> {
        PollStream {
            stream,
            read: None,
            ready: early,
            eof: false,
            write: None,
            queued: BytesMut::new(),
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    /// Over TLS: hands the joined small writes to rustls (before anything written after
    /// them); the buffer goes once empty, so an idle connection holds none.
    fn seal_joined(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Stream::Tls(t) = &*self.stream else {
            return Poll::Ready(Ok(()));
        };
        while !self.queued.is_empty() {
            let n = ready!(t.poll_write_vectored(cx, &[io::IoSlice::new(&self.queued)]))?;
            self.queued.advance(n);
        }
        if self.queued.capacity() != 0 {
            self.queued = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    /// A flush over TLS. Sends wait for the runtime's next turn, as an io_uring write
    /// does for a plain stream (it is submitted when the worker parks): h2 flushes
    /// after every frame, and everything written until then leaves in one send. Sending
    /// at each flush cost 14% more CPU per small h2 request (more, smaller segments).
    /// `write` holds the wait for the turn.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Stream::Tls(t) = &*self.stream else {
            return Poll::Ready(Ok(()));
        };
        match self.write.as_mut() {
            Some(turn) => {
                if turn.as_mut().poll(cx).is_pending() {
                    return Poll::Ready(Ok(()));
                }
                self.write = None;
            }
            None => {
                if !self.queued.is_empty() || t.has_unsent() {
                    let mut turn: WriteOp<'a> = Box::pin(async {
                        tokio::task::yield_now().await;
                        Ok(())
                    });
                    // the first poll asks for this task to be woken after the turn
                    let _ = turn.as_mut().poll(cx);
                    self.write = Some(turn);
                }
                return Poll::Ready(Ok(()));
            }
        }
        ready!(self.seal_joined(cx))?;
        let Stream::Tls(t) = &*self.stream else {
            return Poll::Ready(Ok(()));
        };
        match t.poll_flush(cx) {
            // write-behind as for plain streams: records the socket cannot take yet stay
            // with rustls (writes wait beyond its limit); its readiness wakes this task
            Poll::Pending => Poll::Ready(Ok(())),
            r => r,
        }
    }

    /// Drives the write in flight, then starts one for the queued bytes.
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(op) = self.write.as_mut() {
                let r = ready!(op.as_mut().poll(cx));
                self.write = None;
                r?;
            }
            if self.queued.is_empty() {
                // everything is written: the queue's buffer goes now, so an idle
                // connection holds none (the next write takes a fresh one)
                if self.queued.capacity() != 0 {
                    self.queued = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            let data: Bytes = self.queued.split().freeze();
            self.bytes_written += data.len() as u64;
            let s = self.stream.clone();
            self.write = Some(Box::pin(async move { s.write_all(data).await }));
        }
    }
}

impl<'a, S: Deref<Target = Stream> + Clone + Unpin + 'a> AsyncRead for PollStream<'a, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if matches!(&*this.stream, Stream::Tls(_)) && this.ready.is_empty() {
            return this.poll_read_tls(cx, out);
        }
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(out.remaining());
                out.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let op = this.read.get_or_insert_with(|| {
                let s = this.stream.clone();
                let mut buf = std::mem::take(&mut this.ready);
                buf.clear();
                // the buffer is taken once bytes come: an idle h2 connection holds none
                Box::pin(async move { s.read_when_ready(buf, READ_CHUNK).await })
            });
            let (res, buf) = ready!(op.as_mut().poll(cx));
            this.read = None;
            this.ready = buf;
            match res {
                Ok(0) => this.eof = true,
                Ok(n) => this.bytes_read += n as u64,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<'a, S: Deref<Target = Stream> + Clone + Unpin + 'a> PollStream<'a, S> {
    /// A read over TLS: plaintext goes from rustls straight into `out` (no buffer of
    /// this view's own between them), and the operation in flight only reads
    /// ciphertext for rustls.
    fn poll_read_tls(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(op) = self.read.as_mut() {
                let (res, _) = ready!(op.as_mut().poll(cx));
                self.read = None;
                res?;
            }
            let Stream::Tls(t) = &*self.stream else {
                return Poll::Ready(Err(super::detached()));
            };
            let room = out.remaining();
            if room == 0 {
                return Poll::Ready(Ok(()));
            }
            match t.read_now(room, |chunk| out.put_slice(chunk))? {
                ReadNow::Took(n) => {
                    self.bytes_read += n as u64;
                    return Poll::Ready(Ok(()));
                }
                ReadNow::End => return Poll::Ready(Ok(())),
                ReadNow::Nothing => {}
            }
            let s = self.stream.clone();
            self.read = Some(Box::pin(async move {
                let res = match &*s {
                    Stream::Tls(t) => t.fill().await.map(|_| 0),
                    _ => Err(super::detached()),
                };
                (res, BytesMut::new())
            }));
        }
    }

    /// Queues `bufs` (unless [`WRITE_BEHIND`] bytes already wait) and says how many
    /// bytes were taken; they are sent at the next flush, or when the write in flight
    /// completes.
    fn queue(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if matches!(&*self.stream, Stream::Tls(_)) {
            let n: usize = bufs.iter().map(|b| b.len()).sum();
            if n < TLS_JOIN && self.queued.len() + n <= TLS_JOIN_MAX {
                // small frames are joined and sealed as one record at the flush
                for b in bufs {
                    self.queued.extend_from_slice(b);
                }
                self.bytes_written += n as u64;
                return Poll::Ready(Ok(n));
            }
            ready!(self.seal_joined(cx))?;
            let Stream::Tls(t) = &*self.stream else {
                unreachable!()
            };
            // large ones are encrypted at once from the caller's buffers, and held by
            // rustls until sent
            let n = ready!(t.poll_write_vectored(cx, bufs))?;
            self.bytes_written += n as u64;
            return Poll::Ready(Ok(n));
        }
        // a failed write is reported now; a pending one is fine while little is queued
        if let Poll::Ready(Err(e)) = self.poll_writes(cx) {
            return Poll::Ready(Err(e));
        }
        if self.queued.len() >= WRITE_BEHIND {
            return Poll::Pending;
        }
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        if self.queued.is_empty() {
            // room for the frames that will queue behind this one, so they are not
            // copied again while the queue grows
            self.queued.reserve(n.max(WRITE_QUEUE_START));
        }
        for b in bufs {
            self.queued.extend_from_slice(b);
        }
        Poll::Ready(Ok(n))
    }
}

impl<'a, S: Deref<Target = Stream> + Clone + Unpin + 'a> AsyncWrite for PollStream<'a, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.queue(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.queue(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(&*self.stream, Stream::Tls(_)) {
            return self.poll_flush_tls(cx);
        }
        match self.poll_writes(cx) {
            // the write in flight holds this task's waker, and the next poll after it
            // completes sends what is queued
            Poll::Pending if self.queued.len() < WRITE_BEHIND => Poll::Ready(Ok(())),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // the owner ends the stream (close_notify for TLS) once the codec is done
        if matches!(&*self.stream, Stream::Tls(_)) {
            ready!(self.seal_joined(cx))?;
            if let Stream::Tls(t) = &*self.stream {
                return t.poll_flush(cx);
            }
        }
        self.poll_writes(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{run_on_current_thread, test_backends, Listener};
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// A server config for a self-signed "localhost" and a client config trusting it.
    fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let provider = crate::tls::leaf::provider().clone();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = made.cert.der().clone();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key.into())
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Over TLS, plaintext goes from rustls straight into the reader's buffer: reads
    /// smaller than a record take it in pieces, every byte arrives in order, and the
    /// peer's close_notify reads as the end of the stream, on both backends.
    #[test]
    fn tls_reads_deliver_every_byte_in_order_then_the_end() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for backend in test_backends() {
            let (server, client) = tls_configs();
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let sent = data.clone();
            let peer = std::thread::spawn(move || {
                let tcp = std::net::TcpStream::connect(addr).unwrap();
                let name = "localhost".try_into().unwrap();
                let conn = rustls::ClientConnection::new(client, name).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                tls.write_all(&sent).unwrap();
                tls.conn.send_close_notify();
                tls.flush().unwrap();
                // closing with the server's session tickets unread would reset the
                // connection: wait for the server's close instead
                tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
                let _ = std::io::copy(&mut tls.sock, &mut std::io::sink());
            });
            let (got, counted) = run_on_current_thread(backend, move || async move {
                let listener = Listener::from_std(backend, l).unwrap();
                let (mut s, _) = listener.accept().await.unwrap();
                let conn = rustls::ServerConnection::new(server).unwrap();
                s.wrap_tls(conn, BytesMut::new());
                s.tls().unwrap().handshake().await.unwrap();
                let mut view = PollStream::new(&s, BytesMut::new());
                let mut got = Vec::new();
                let mut chunk = [0u8; 1000];
                let read_all = async {
                    loop {
                        let n = view.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&chunk[..n]);
                    }
                };
                // a lost wake-up shows as this timeout, not as a hung test
                let done = tokio::time::timeout(Duration::from_secs(20), read_all).await;
                assert!(done.is_ok(), "{backend:?}: the reads did not finish");
                (got, view.bytes_read)
            })
            .unwrap();
            peer.join().unwrap();
            assert_eq!(got.len(), data.len(), "{backend:?}");
            assert!(got == data, "{backend:?}: bytes out of order");
            assert_eq!(counted, data.len() as u64, "{backend:?}");
        }
    }
}
