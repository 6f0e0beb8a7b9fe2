//! TLS over a [`Stream`]: rustls is driven sans-IO (read_tls / process_new_packets /
//! write_tls), so the same code serves both io backends.
//!
//! Ciphertext is read with the stream's owned-buffer reads and handed to rustls.
//! Records are sent straight from rustls' buffers with non-blocking sends when the
//! socket has room (no copy into a buffer of our own first); what the socket cannot
//! take stays with rustls, at most [`UNSENT_MAX`] bytes, until it can
//! (docs/decisions.md, "TLS records sent from rustls' buffers").
//!
//! Reads and writes may run at once from two tasks (relays, tunnels): the rustls state
//! sits in a RefCell that is only borrowed between awaits, never across one, and all
//! sends are synchronous, so records leave in the order rustls made them.

use super::Stream;
use bytes::{Bytes, BytesMut};
use rustls::Connection;
use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, IoSlice, Write};
use std::task::{ready, Context, Poll};

/// Most unsent TLS bytes rustls holds for writers; a write beyond waits for the socket.
const UNSENT_MAX: usize = 256 * 1024;

/// Room for ciphertext each socket read starts with.
const FILL: usize = 32 * 1024;
/// The room after a read that (nearly) filled its buffer: when data piles up in the
/// socket (luring behind its peer), a bulk transfer takes a quarter of the reads
/// (docs/perf.md: 4% fewer instructions per MB of an h2 + TLS download under
/// callgrind). Connections that move little never grow a buffer this large.
const FILL_BULK: usize = 128 * 1024;

/// The socket as an `io::Write` that sends only what it takes now (WouldBlock for the
/// rest), for rustls' write_tls.
struct SendNow<'a>(&'a Stream);

impl io::Write for SendNow<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_now(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_now(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hands up to `room` decrypted bytes rustls holds to `put`, chunk by chunk. Ok(0) is
/// the clean end of the session (or no room); WouldBlock means nothing is there yet.
fn take_plaintext(
    reader: &mut rustls::Reader<'_>,
    room: usize,
    mut put: impl FnMut(&[u8]),
) -> io::Result<usize> {
    let mut n = 0;
    while n < room {
        match reader.fill_buf() {
            Ok([]) => break,
            Ok(chunk) => {
                let take = chunk.len().min(room - n);
                put(&chunk[..take]);
                reader.consume(take);
                n += take;
            }
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(n)
}

/// What a read found without waiting for the socket.
pub enum ReadNow {
    /// This many plaintext bytes were handed over (0: the session ended cleanly).
    Took(usize),
    /// The peer closed without close_notify (taken as the end, as browsers do).
    End,
    /// Nothing yet: read more ciphertext ([`TlsStream::fill`]) and ask again.
    Nothing,
}

/// A TLS session on top of a plain stream.
pub struct TlsStream {
    inner: Stream,
    conn: RefCell<Connection>,
    /// Ciphertext read from the socket but not yet accepted by rustls.
    pending: RefCell<BytesMut>,
    eof: Cell<bool>,
    /// The last read nearly filled its room: the next one gets [`FILL_BULK`].
    bulk: Cell<bool>,
}

/// Wraps a rustls error so callers can recover it from the io::Error.
pub fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The rustls error inside an io::Error made by this module, if any.
pub fn as_tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>())
}

impl TlsStream {
    /// Starts a session; `early` holds bytes already read from the peer (the
    /// ClientHello the proxy peeked at).
    pub fn new(inner: Stream, conn: impl Into<Connection>, early: BytesMut) -> TlsStream {
        let mut conn = conn.into();
        conn.set_buffer_limit(Some(UNSENT_MAX));
        TlsStream {
            inner,
            conn: RefCell::new(conn),
            pending: RefCell::new(early),
            eof: Cell::new(false),
            bulk: Cell::new(false),
        }
    }

    /// The rustls connection (for handshake details after [`TlsStream::handshake`]).
    pub fn connection(&self) -> std::cell::Ref<'_, Connection> {
        self.conn.borrow()
    }

    /// The socket under the session.
    pub fn inner(&self) -> &Stream {
        &self.inner
    }

    /// Feeds pending ciphertext to rustls as far as it accepts it.
    fn feed(&self) -> io::Result<()> {
        let mut pending = self.pending.borrow_mut();
        let mut conn = self.conn.borrow_mut();
        while !pending.is_empty() {
            let mut slice: &[u8] = &pending;
            let n = match conn.read_tls(&mut slice) {
                Ok(n) => n,
                // rustls' plaintext buffer is full: the reader must drain it first
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => return Err(e),
            };
            let _ = pending.split_to(n);
            if let Err(e) = conn.process_new_packets() {
                return Err(tls_error(e));
            }
            if n == 0 {
                break;
            }
        }
        if self.eof.get() && pending.is_empty() {
            let mut empty: &[u8] = &[];
            let _ = conn.read_tls(&mut empty);
            conn.process_new_packets().map_err(tls_error)?;
        }
        Ok(())
    }

    /// Sends rustls' queued records (handshake messages, alerts, data) as far as the
    /// socket takes them now; true when none is left.
    fn send_records(&self) -> io::Result<bool> {
        let mut conn = self.conn.borrow_mut();
        while conn.wants_write() {
            match conn.write_tls(&mut SendNow(&self.inner)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// True when rustls holds records not sent yet.
    pub fn has_unsent(&self) -> bool {
        self.conn.borrow().wants_write()
    }

    /// Sends everything rustls has queued, waiting for room as needed.
    async fn flush(&self) -> io::Result<()> {
        while !self.send_records()? {
            self.inner.writable().await?;
        }
        Ok(())
    }

    /// [`TlsStream::flush`] for a poll-driven owner (an h2 connection's task).
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.send_records()? {
            ready!(self.inner.poll_writable(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Encrypts what rustls takes of `bufs` (all of it unless [`UNSENT_MAX`] bytes are
    /// unsent); the records go at the next flush. Waits for the socket only when
    /// rustls takes nothing.
    pub fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = self.conn.borrow_mut().writer().write_vectored(bufs)?;
        if n > 0 || bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(n));
        }
        ready!(self.poll_flush(cx))?;
        match self.conn.borrow_mut().writer().write_vectored(bufs)? {
            // nothing unsent and still nothing taken: the session carries no data
            0 => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => Poll::Ready(Ok(n)),
        }
    }

    /// Reads ciphertext from the socket into `pending`; false at EOF.
    pub async fn fill(&self) -> io::Result<bool> {
        let mut b = std::mem::take(&mut *self.pending.borrow_mut());
        if b.capacity() - b.len() < 4096 {
            b.reserve(if self.bulk.get() { FILL_BULK } else { FILL });
        }
        let room = b.capacity() - b.len();
        let (res, b) = self.inner.read_plain(b, usize::MAX).await;
        // nothing touches `pending` while the read is in flight: only the reader fills it
        *self.pending.borrow_mut() = b;
        match res {
            Ok(0) => {
                self.eof.set(true);
                Ok(false)
            }
            Ok(n) => {
                self.bulk.set(n >= room - room / 4);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Completes the handshake (sending the alert to the peer when it fails).
    pub async fn handshake(&self) -> io::Result<()> {
        loop {
            let fed = self.feed();
            self.flush().await?;
            fed?;
            if !self.conn.borrow().is_handshaking() {
                return Ok(());
            }
            if !self.fill().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
        }
    }

    /// Reads plaintext into the spare capacity of `buf`; 0 at the end of the session.
    pub async fn read(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() == buf.len() {
            buf.reserve(16 * 1024);
        }
        loop {
            let room = buf.capacity() - buf.len();
            match self.read_now(room, |chunk| buf.extend_from_slice(chunk)) {
                Ok(ReadNow::Took(n)) => return (Ok(n), buf),
                Ok(ReadNow::End) => return (Ok(0), buf),
                Ok(ReadNow::Nothing) => {}
                Err(e) => return (Err(e), buf),
            }
            if let Err(e) = self.fill().await {
                return (Err(e), buf);
            }
        }
    }

    /// Hands up to `room` bytes of the plaintext already at hand to `put`, after
    /// giving rustls the ciphertext read so far; never waits. A poll-driven reader
    /// (an h2 connection) copies straight into its own buffer this way, and calls
    /// [`TlsStream::fill`] on [`ReadNow::Nothing`].
    pub fn read_now(&self, room: usize, put: impl FnMut(&[u8])) -> io::Result<ReadNow> {
        if let Err(e) = self.feed() {
            // the alert rustls queued, if the socket takes it now
            let _ = self.send_records();
            return Err(e);
        }
        let got = {
            let mut conn = self.conn.borrow_mut();
            take_plaintext(&mut conn.reader(), room, put)
        };
        match got {
            Ok(n) => Ok(ReadNow::Took(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.eof.get() {
                    return Ok(ReadNow::End);
                }
                // replies rustls owes the peer (key updates) go out before we wait; not
                // waiting for room: a writer that filled the socket sends them with its
                // own records, and a read must not wait on a peer that is not reading
                self.send_records()?;
                Ok(ReadNow::Nothing)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(ReadNow::End),
            Err(e) => Err(e),
        }
    }

    /// Encrypts and writes all of `data`.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.write_all_slices(&mut [IoSlice::new(data)]).await
    }

    /// Encrypts and writes all of `bufs` in order. Records span the pieces, so small
    /// ones share a record (one seal, one header) without being joined first.
    pub async fn write_all_vectored(&self, bufs: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        self.write_all_slices(&mut slices).await
    }

    async fn write_all_slices(&self, mut rest: &mut [IoSlice<'_>]) -> io::Result<()> {
        loop {
            let n = self.conn.borrow_mut().writer().write_vectored(rest)?;
            IoSlice::advance_slices(&mut rest, n);
            self.flush().await?;
            if rest.iter().all(|b| b.is_empty()) {
                return Ok(());
            }
            if n == 0 {
                // nothing unsent and still nothing taken: the session carries no data
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
    }

    /// Sends close_notify (best effort, without waiting) and shuts the socket down.
    pub fn shutdown(&self, how: std::net::Shutdown) {
        if how != std::net::Shutdown::Read {
            self.conn.borrow_mut().send_close_notify();
            let _ = self.send_records();
        }
        self.inner.shutdown(how);
    }

    /// Queues close_notify and flushes it, then half-closes the socket.
    pub async fn close_write(&self) {
        self.conn.borrow_mut().send_close_notify();
        let _ = self.flush().await;
        self.inner.shutdown(std::net::Shutdown::Write);
    }
}
