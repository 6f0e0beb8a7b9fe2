//! Socket operations done when the socket is ready, through the tokio reactor the
//! io_uring runtime runs on (as splice's waits are) instead of an io_uring operation
//! that would own a buffer from submission to completion.
//!
//! - Reads: the buffer is taken only once the socket has something to read, from a
//!   per-thread list of spare ones, so a connection that waits (an idle keep-alive
//!   client) holds no read buffer; the read is a non-blocking recv.
//! - Sends: a non-blocking sendmsg straight from the caller's slices (TLS records sent
//!   from rustls' own buffers, docs/decisions.md), with a wait for room when the socket
//!   takes nothing.

use super::{Stream, Traffic};
use bytes::BytesMut;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{ready, Context, Poll};
use tokio::io::Interest;

/// Spare buffers a thread keeps (one per read that found nothing yet, at most).
const KEEP: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for a read, a spare one when there is one.
fn take(size: usize) -> BytesMut {
    let mut b = SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(size));
    if b.capacity() < size.min(4 * 1024) {
        b.reserve(size);
    }
    b
}

/// Keeps an empty buffer for the next [`take`] unless it is oversized or enough are kept.
fn give(mut b: BytesMut, size: usize) {
    if b.capacity() == 0 || b.capacity() > 4 * size {
        return;
    }
    b.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP {
            s.push(b);
        }
    });
}

/// Where a buffer that found nothing to read waits: kept when it holds bytes, else
/// among the spares.
fn put(b: BytesMut, held: &mut Option<BytesMut>, size: usize) {
    if b.is_empty() {
        give(b, size);
    } else {
        *held = Some(b);
    }
}

/// One non-blocking recv into the spare capacity of `buf`; WouldBlock when nothing waits.
fn recv_now(fd: RawFd, buf: &mut BytesMut, traffic: &Traffic) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: recv writes at most `spare.len()` bytes into the buffer's spare capacity,
    // which stays borrowed (and allocated) for the call.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    traffic.add_read(n);
    Ok(n)
}

/// One non-blocking sendmsg of `bufs`; WouldBlock when the socket takes nothing.
fn send_now(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only reads them
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    // SAFETY: the iovecs point into slices borrowed for the call; the fd is open.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl Stream {
    /// Sends what the socket takes of `bufs` now, without waiting; WouldBlock when it
    /// takes nothing ([`Stream::writable`] or [`Stream::poll_writable`] then wait for
    /// room). Plain sockets only.
    pub(crate) fn send_now(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.before_write();
        let (n, traffic) = match self {
            Stream::Uring(s) => {
                let fd = s.as_raw_fd();
                let n = match send_now(fd, bufs) {
                    // again through the reactor, which then forgets a readiness it may
                    // still hold, so that the next wait is for real room
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => s
                        .registration()?
                        .try_io(Interest::WRITABLE, |_| send_now(fd, bufs))?,
                    r => r?,
                };
                (n, &s.traffic)
            }
            Stream::Epoll(s, t) => (s.try_write_vectored(bufs)?, t),
            Stream::Tls(_) | Stream::Detached => return Err(super::detached()),
        };
        traffic.add_written(n);
        Ok(n)
    }

    /// One non-blocking recv into the spare capacity of `buf` (plain sockets; it must
    /// have some): WouldBlock when nothing has come yet. It does not wait, and leaves
    /// the reactor's idea of the socket's readiness as it was: a later wait for bytes
    /// still waits for an edge, and a wake-up without bytes only costs a recv that
    /// finds none.
    pub(crate) fn recv_now(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Uring(s) => recv_now(s.as_raw_fd(), buf, &s.traffic),
            Stream::Epoll(s, t) => recv_now(s.as_raw_fd(), buf, t),
            Stream::Tls(_) | Stream::Detached => Err(super::detached()),
        }
    }

    /// Waits until the socket may take more bytes; several tasks may wait at once.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            // the guard is dropped without clearing: send_now clears what was stale
            Stream::Uring(s) => s.registration()?.writable().await.map(drop),
            Stream::Epoll(s, _) => s.writable().await,
            Stream::Tls(_) | Stream::Detached => Err(super::detached()),
        }
    }

    /// [`Stream::writable`] for a poll-driven owner; only the last task to poll it is woken.
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Uring(s) => {
                // kept, not cleared: send_now clears what was stale
                let mut guard = ready!(s.registration()?.poll_write_ready(cx))?;
                guard.retain_ready();
                Poll::Ready(Ok(()))
            }
            Stream::Epoll(s, _) => s.poll_write_ready(cx),
            Stream::Tls(_) | Stream::Detached => Poll::Ready(Err(super::detached())),
        }
    }

    /// [`Stream::read`] that takes a buffer only once the socket has bytes, EOF or an
    /// error to report: an empty `buf` is kept as a spare meanwhile (a buffer of `size`
    /// bytes is made when no spare is left); one holding bytes is read into. TLS reads
    /// as [`Stream::read`] does, in a box (its session holds buffers of its own anyway,
    /// and its read's future would make this one several times larger).
    pub async fn read_when_ready(
        &self,
        buf: BytesMut,
        size: usize,
    ) -> (io::Result<usize>, BytesMut) {
        let mut held = if buf.is_empty() {
            give(buf, size);
            None
        } else {
            Some(buf)
        };
        match self {
            Stream::Uring(s) => {
                // A socket not yet registered with the reactor (a new connection, or
                // one whose reads so far were io_uring operations) is first tried with
                // a plain recv: its bytes are often there already, and then it is
                // never registered (an epoll_ctl to add it, another at its close).
                if !s.is_registered() {
                    let mut b = held.take().unwrap_or_else(|| take(size));
                    match recv_now(s.as_raw_fd(), &mut b, &s.traffic) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => put(b, &mut held, size),
                        r => return (r, b),
                    }
                }
                let reg = match s.registration() {
                    Ok(r) => r,
                    Err(e) => return (Err(e), BytesMut::new()),
                };
                loop {
                    let mut ready = match reg.readable().await {
                        Ok(g) => g,
                        Err(e) => return (Err(e), BytesMut::new()),
                    };
                    let mut b = held.take().unwrap_or_else(|| take(size));
                    match recv_now(s.as_raw_fd(), &mut b, &s.traffic) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ready.clear_ready();
                            put(b, &mut held, size);
                        }
                        r => return (r, b),
                    }
                }
            }
            Stream::Epoll(s, t) => {
                loop {
                    if let Err(e) = s.readable().await {
                        return (Err(e), BytesMut::new());
                    }
                    let mut b = held.take().unwrap_or_else(|| take(size));
                    // try_io clears the readiness tokio cached when the recv would block
                    let r = s.try_io(tokio::io::Interest::READABLE, || {
                        recv_now(s.as_raw_fd(), &mut b, t)
                    });
                    match r {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => put(b, &mut held, size),
                        r => return (r, b),
                    }
                }
            }
            Stream::Tls(_) | Stream::Detached => {
                let buf = held.unwrap_or_else(|| take(size));
                Box::pin(self.read(buf)).await
            }
        }
    }
}
