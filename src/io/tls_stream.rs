//! TLS over an owned-buffer [`Stream`]: rustls is driven sans-IO (read_tls /
//! process_new_packets / write_tls), so the same code serves both io backends.
//!
//! Reads and writes may run at once from two tasks (relays, tunnels): the rustls state
//! sits in a RefCell that is only borrowed between awaits, never across one.

use super::Stream;
use bytes::{Bytes, BytesMut};
use rustls::Connection;
use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Write};

/// Most plaintext one TLS record carries.
const ONE_RECORD: usize = 16 * 1024;

/// Copies decrypted bytes rustls holds into the spare capacity of `buf` (no zero-fill
/// of the spare room first). Ok(0) is the clean end of the session; WouldBlock means
/// nothing is there yet.
fn take_plaintext(reader: &mut rustls::Reader<'_>, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.capacity() - buf.len();
    let mut n = 0;
    while n < spare {
        match reader.fill_buf() {
            Ok([]) => break,
            Ok(chunk) => {
                let take = chunk.len().min(spare - n);
                buf.extend_from_slice(&chunk[..take]);
                reader.consume(take);
                n += take;
            }
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(n)
}

/// A TLS session on top of a plain stream.
pub struct TlsStream {
    inner: Stream,
    conn: RefCell<Connection>,
    /// Ciphertext read from the socket but not yet accepted by rustls.
    pending: RefCell<BytesMut>,
    eof: Cell<bool>,
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
        // whole writes are encrypted at once; the socket write bounds the memory
        conn.set_buffer_limit(None);
        TlsStream {
            inner,
            conn: RefCell::new(conn),
            pending: RefCell::new(early),
            eof: Cell::new(false),
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

    /// Sends whatever rustls has queued (handshake messages, alerts, records).
    async fn flush(&self) -> io::Result<()> {
        let out = {
            let mut conn = self.conn.borrow_mut();
            let mut v = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut v)?;
            }
            v
        };
        if out.is_empty() {
            return Ok(());
        }
        self.inner.write_plain(Bytes::from(out)).await
    }

    /// Reads ciphertext from the socket into `pending`; false at EOF.
    async fn fill(&self) -> io::Result<bool> {
        let mut b = std::mem::take(&mut *self.pending.borrow_mut());
        if b.capacity() - b.len() < 4096 {
            b.reserve(32 * 1024);
        }
        let (res, b) = self.inner.read_plain(b, usize::MAX).await;
        // nothing touches `pending` while the read is in flight: only the reader fills it
        *self.pending.borrow_mut() = b;
        match res {
            Ok(0) => {
                self.eof.set(true);
                Ok(false)
            }
            Ok(_) => Ok(true),
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
            if let Err(e) = self.feed() {
                let _ = self.flush().await;
                return (Err(e), buf);
            }
            let got = {
                let mut conn = self.conn.borrow_mut();
                take_plaintext(&mut conn.reader(), &mut buf)
            };
            match got {
                Ok(n) => return (Ok(n), buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // peer closed without close_notify: treat as the end, as browsers do
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
            if self.eof.get() {
                return (Ok(0), buf);
            }
            // replies rustls owes the peer (key updates) go out before we wait
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
            if let Err(e) = self.fill().await {
                return (Err(e), buf);
            }
        }
    }

    /// Encrypts and writes all of `data`.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.conn.borrow_mut().writer().write_all(data)?;
        self.flush().await
    }

    /// Encrypts and writes all of `bufs` in order with one socket write. Pieces that
    /// fit one record together are joined first (one seal instead of several);
    /// larger ones are encrypted where they lie, without being joined.
    pub async fn write_all_vectored(&self, bufs: &[Bytes]) -> io::Result<()> {
        let total: usize = bufs.iter().map(Bytes::len).sum();
        {
            let mut conn = self.conn.borrow_mut();
            let mut w = conn.writer();
            if total <= ONE_RECORD {
                w.write_all(&bufs.concat())?;
            } else {
                for b in bufs {
                    w.write_all(b)?;
                }
            }
        }
        self.flush().await
    }

    /// Sends close_notify (best effort, without waiting) and shuts the socket down.
    pub fn shutdown(&self, how: std::net::Shutdown) {
        if how != std::net::Shutdown::Read {
            self.conn.borrow_mut().send_close_notify();
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
