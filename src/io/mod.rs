//! The only code that touches file descriptors.
//!
//! Two backends implement one owned-buffer stream interface: io_uring (tokio-uring) and
//! epoll (a plain tokio current-thread runtime). Nothing above this module knows which
//! one runs. Buffers are moved into the kernel operation and handed back with the result,
//! so a buffer read from one socket can be written to another without a copy; bytes
//! nobody needs to see move socket to socket inside the kernel with [`splice`].
//!
//! tokio-uring pitfalls handled here or documented for callers:
//! - a dropped in-flight operation is not cancelled: it keeps its buffer and the socket
//!   stays open, so every timeout path must call [`Stream::shutdown`] explicitly;
//! - `read(buf)` writes at offset 0 of the buffer, so reads go into a slice of the spare
//!   capacity;
//! - a read into a full buffer returns 0 like EOF, so callers always pass spare capacity.

mod deadline;
pub mod os;
mod poll_stream;
mod probe;
mod ready;
pub mod splice;
mod timer_list;
pub mod tls_stream;

pub use deadline::{Deadline, Expired};
pub use poll_stream::PollStream;
pub use probe::{probe_uring, Backend, IoChoice};
pub use splice::{can_splice, splice, Idle, SpliceError, UringTcp};
pub use timer_list::now_ms as coarse_ms;
pub use tls_stream::TlsStream;

use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use tokio_uring::buf::BoundedBuf;

/// A connected TCP stream on either backend. Methods take `&self` so one task can read
/// while another writes (tunnels, concurrent relay).
pub enum Stream {
    /// io_uring-backed stream.
    Uring(UringTcp),
    /// epoll-backed stream, with its byte counts.
    Epoll(tokio::net::TcpStream, Traffic),
    /// TLS session over another stream.
    Tls(Box<TlsStream>),
    /// Placeholder left while a stream is being wrapped; every operation fails.
    Detached,
}

/// io_uring sockets are made non-blocking too: io_uring still waits by polling on
/// them (since Linux 5.10 it retries O_NONBLOCK files that support async), and
/// [`splice`]'s own calls must never block the worker: splice(2) from a TCP socket
/// waits according to the socket's O_NONBLOCK flag, whatever SPLICE_F_NONBLOCK says.
/// Accepted sockets come non-blocking from the accept operation; connected ones get
/// the flag here. One ioctl(FIONBIO) sets that flag alone, where fcntl takes two
/// calls (F_GETFL, then F_SETFL with the flags read).
fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one c_int from `on`, which outlives the call; the fd is
    // owned by a live stream.
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &on) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How long a TLS close_notify may wait to be written before the socket is just closed.
const CLOSE_NOTIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream detached")
}

/// Byte counts of one socket, and how far it is on the way to TCP_NODELAY; plain
/// cells, since one worker owns the socket.
#[derive(Default, Debug)]
pub struct Traffic {
    read: std::cell::Cell<u64>,
    written: std::cell::Cell<u64>,
    nagle: std::cell::Cell<Nagle>,
}

/// TCP_NODELAY is set just before a socket's second write, not when it is opened.
/// Nagle's algorithm holds back a small segment only while an earlier small segment
/// is unacknowledged (Linux uses Minshall's variant), so the first write on a socket
/// is never delayed, and from the second on Nagle is off: writes go out as they
/// would with TCP_NODELAY set at accept. A client connection that gets its whole
/// response in one write and closes (`Connection: close`) saves the setsockopt(2)
/// (nginx sets TCP_NODELAY only when a connection goes keep-alive or streams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Nagle {
    /// Nothing written yet.
    #[default]
    Unwritten,
    /// One write started.
    Written,
    /// TCP_NODELAY is set (or was asked for).
    Off,
}

impl Traffic {
    fn add_read(&self, n: usize) {
        self.read.set(self.read.get() + n as u64);
    }

    fn add_written(&self, n: usize) {
        self.written.set(self.written.get() + n as u64);
    }
}

/// A listening socket on either backend.
pub enum Listener {
    /// io_uring-backed listener.
    Uring(tokio_uring::net::TcpListener),
    /// epoll-backed listener.
    Epoll(tokio::net::TcpListener),
}

impl Listener {
    /// Wraps a bound, listening std socket for `backend` (must run inside that backend's runtime).
    pub fn from_std(backend: Backend, l: std::net::TcpListener) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        Ok(match backend {
            Backend::Uring => Listener::Uring(tokio_uring::net::TcpListener::from_std(l)),
            Backend::Epoll => Listener::Epoll(tokio::net::TcpListener::from_std(l)?),
        })
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Uring(l) => {
                // non-blocking already: the accept operation asks for SOCK_NONBLOCK
                // (vendor/tokio-uring/LURING-PATCH.md)
                let (s, a) = l.accept().await?;
                Ok((Stream::Uring(UringTcp::new(s)), a))
            }
            Listener::Epoll(l) => {
                let (s, a) = l.accept().await?;
                Ok((Stream::Epoll(s, Traffic::default()), a))
            }
        }
    }
}

impl Stream {
    /// Connects to `addr` on `backend`.
    pub async fn connect(backend: Backend, addr: SocketAddr) -> io::Result<Stream> {
        let s = match backend {
            Backend::Uring => {
                let s = tokio_uring::net::TcpStream::connect(addr).await?;
                set_nonblocking(s.as_raw_fd())?;
                Stream::Uring(UringTcp::new(s))
            }
            Backend::Epoll => Stream::Epoll(
                tokio::net::TcpStream::connect(addr).await?,
                Traffic::default(),
            ),
        };
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Disables Nagle: a proxy forwards what it has at once. Plain sockets do it by
    /// themselves before their second write (see `Nagle`); this sets it now.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        if let Some(t) = self.traffic() {
            t.nagle.set(if on { Nagle::Off } else { Nagle::Written });
        }
        match self {
            Stream::Uring(s) => s.set_nodelay(on),
            Stream::Epoll(s, _) => s.set_nodelay(on),
            Stream::Tls(t) => t.inner().set_nodelay(on),
            Stream::Detached => Err(detached()),
        }
    }

    /// Called before every write to the socket under this stream (plain sockets):
    /// the second one first sets TCP_NODELAY (see `Nagle`).
    pub(crate) fn before_write(&self) {
        let (fd, t) = match self {
            Stream::Uring(s) => (s.as_raw_fd(), &s.traffic),
            Stream::Epoll(s, t) => (s.as_raw_fd(), t),
            Stream::Tls(_) | Stream::Detached => return,
        };
        match t.nagle.get() {
            Nagle::Off => {}
            Nagle::Unwritten => t.nagle.set(Nagle::Written),
            Nagle::Written => {
                t.nagle.set(Nagle::Off);
                // SAFETY: the fd is owned by `self` and open; the borrow ends with the call.
                let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let _ = socket2::SockRef::from(&sock).set_nodelay(true);
            }
        }
    }

    /// Reads into the spare capacity of `buf` (appending after its current length).
    /// Returns the byte count (0 = EOF). `buf` must have spare capacity.
    pub async fn read(&self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        self.read_at_most(buf, usize::MAX).await
    }

    /// [`Stream::read`] taking at most `max` bytes from a plain socket (TLS ignores
    /// `max`): leaves the rest in the kernel, where [`splice`] can move it uncopied.
    pub async fn read_at_most(&self, buf: BytesMut, max: usize) -> (io::Result<usize>, BytesMut) {
        match self {
            Stream::Tls(t) => t.read(buf).await,
            _ => self.read_plain(buf, max).await,
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, buf: Bytes) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.write_all(&buf).await,
            _ => self.write_plain(buf).await,
        }
    }

    /// [`Stream::read`] on the socket itself (TLS reads its ciphertext with it).
    pub(crate) async fn read_plain(
        &self,
        mut buf: BytesMut,
        max: usize,
    ) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() == buf.len() {
            buf.reserve(16 * 1024);
        }
        let max = max.max(1);
        match self {
            Stream::Uring(s) => {
                let len = buf.len();
                let end = len.saturating_add(max).min(buf.capacity());
                let (res, slice) = s.read(buf.slice(len..end)).await;
                if let Ok(n) = res {
                    s.traffic.add_read(n);
                }
                (res, slice.into_inner())
            }
            Stream::Epoll(s, t) => loop {
                if let Err(e) = s.readable().await {
                    return (Err(e), buf);
                }
                match s.try_read_buf(&mut bytes::BufMut::limit(&mut buf, max)) {
                    Ok(n) => {
                        t.add_read(n);
                        return (Ok(n), buf);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return (Err(e), buf),
                }
            },
            Stream::Tls(_) | Stream::Detached => (Err(detached()), buf),
        }
    }

    /// [`Stream::write_all`] on the socket itself.
    pub(crate) async fn write_plain(&self, buf: Bytes) -> io::Result<()> {
        match self {
            Stream::Uring(s) => {
                self.before_write();
                let len = buf.len();
                let r = s.write_all(buf).await.0;
                // a failed write_all may have sent part of it; what counts is what was asked
                if r.is_ok() {
                    s.traffic.add_written(len);
                }
                r
            }
            Stream::Epoll(s, t) => {
                let mut off = 0;
                while off < buf.len() {
                    s.writable().await?;
                    self.before_write();
                    match s.try_write(&buf[off..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            t.add_written(n);
                            off += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Stream::Tls(_) | Stream::Detached => Err(detached()),
        }
    }

    /// Writes all buffers in order with as few system calls as the backend allows.
    pub async fn write_all_vectored(&self, mut bufs: Vec<Bytes>) -> io::Result<()> {
        bufs.retain(|b| !b.is_empty());
        match bufs.len() {
            0 => return Ok(()),
            1 => return self.write_all(bufs.pop().unwrap_or_default()).await,
            _ => {}
        }
        if let Stream::Tls(t) = self {
            return t.write_all_vectored(&bufs).await;
        }
        while !bufs.is_empty() {
            let mut n = match self {
                Stream::Uring(s) => {
                    self.before_write();
                    let (res, back) = s.writev(bufs).await;
                    bufs = back;
                    res?
                }
                Stream::Tls(_) | Stream::Detached => return Err(detached()),
                Stream::Epoll(s, _) => {
                    s.writable().await?;
                    self.before_write();
                    let slices: Vec<io::IoSlice<'_>> =
                        bufs.iter().map(|b| io::IoSlice::new(b)).collect();
                    match s.try_write_vectored(&slices) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if let Some(t) = self.traffic() {
                t.add_written(n);
            }
            // drop fully written buffers, advance into a partially written one
            let mut done = 0;
            for b in bufs.iter_mut() {
                if n >= b.len() {
                    n -= b.len();
                    done += 1;
                } else {
                    let _ = b.split_to(n);
                    break;
                }
            }
            bufs.drain(..done);
        }
        Ok(())
    }

    /// Bytes read from and written to the socket under this stream (TLS records
    /// included), counted where they move: reads, writes and kernel splices.
    pub fn bytes_moved(&self) -> (u64, u64) {
        match self.traffic() {
            Some(t) => (t.read.get(), t.written.get()),
            None => (0, 0),
        }
    }

    /// The counters of the socket under this stream.
    pub(crate) fn traffic(&self) -> Option<&Traffic> {
        match self {
            Stream::Uring(s) => Some(&s.traffic),
            Stream::Epoll(_, t) => Some(t),
            Stream::Tls(t) => t.inner().traffic(),
            Stream::Detached => None,
        }
    }

    /// Starts TLS on this stream in place; `early` holds bytes already read from the peer.
    pub fn wrap_tls(&mut self, conn: impl Into<rustls::Connection>, early: BytesMut) {
        let inner = std::mem::replace(self, Stream::Detached);
        *self = Stream::Tls(Box::new(TlsStream::new(inner, conn, early)));
    }

    /// The TLS session, when this stream is one.
    pub fn tls(&self) -> Option<&TlsStream> {
        match self {
            Stream::Tls(t) => Some(t),
            _ => None,
        }
    }

    /// Ends our sending direction cleanly: TLS sends close_notify and waits for it to be
    /// written (a peer reading to the end of a close-delimited body needs it to tell the
    /// end from a truncation), then the socket's write side is shut down.
    pub async fn close_write(&self) {
        match self {
            Stream::Tls(t) => {
                // a peer that reads nothing must not hold the connection open
                let flushed = tokio::time::timeout(CLOSE_NOTIFY_WAIT, t.close_write()).await;
                if flushed.is_err() {
                    t.shutdown(Shutdown::Both);
                }
            }
            _ => self.shutdown(Shutdown::Write),
        }
    }

    /// Shuts the connection down so that closing it sends a reset rather than a FIN:
    /// for a peer that stopped reading, whose unsent bytes would otherwise keep kernel
    /// memory in FIN-WAIT-1 until the kernel gives up on it (as nginx's
    /// reset_timedout_connection). Pending operations complete as with
    /// [`Stream::shutdown`].
    pub fn abort(&self) {
        if let Some(fd) = self.raw_fd() {
            // SAFETY: the fd is owned by `self` and open; the borrow ends with the call.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&sock).set_linger(Some(std::time::Duration::ZERO));
        }
        self.shutdown(Shutdown::Both);
    }

    /// The socket's descriptor (under TLS, the transport's); None once detached.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Stream::Uring(s) => Some(s.as_raw_fd()),
            Stream::Epoll(s, _) => Some(s.as_raw_fd()),
            Stream::Tls(t) => t.inner().raw_fd(),
            Stream::Detached => None,
        }
    }

    /// For a pooled connection: true when the peer has neither closed it nor sent
    /// anything since the last exchange (a non-blocking peek at the socket; for TLS,
    /// pending bytes such as a close_notify count as sent).
    pub fn is_idle_and_open(&self) -> bool {
        let fd = match self {
            Stream::Uring(s) => s.as_raw_fd(),
            Stream::Epoll(s, _) => s.as_raw_fd(),
            Stream::Tls(t) => return t.inner().is_idle_and_open(),
            Stream::Detached => return false,
        };
        matches!(peek_one(fd), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// After an exchange: true when the client has sent nothing more, so closing now
    /// cannot turn into a reset: a non-blocking peek finds no bytes, either because
    /// none came yet or because the peer has closed its side (end of stream). Under
    /// TLS the transport's socket is asked.
    pub fn has_nothing_unread(&self) -> bool {
        let Some(fd) = self.raw_fd() else {
            return false;
        };
        match peek_one(fd) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    /// Shuts down one or both directions. Also the way to make an abandoned in-flight
    /// io_uring operation complete (see module docs).
    pub fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Stream::Uring(s) => s.shutdown(how),
            Stream::Epoll(s, _) => socket2::SockRef::from(s).shutdown(how),
            Stream::Tls(t) => {
                t.shutdown(how);
                Ok(())
            }
            Stream::Detached => Ok(()),
        };
    }
}

/// Runs `make()`'s future to completion on a new single-threaded runtime of `backend`
/// on the current thread; tasks spawned with [`spawn`] run on it.
pub fn run_on_current_thread<F, Fut>(backend: Backend, make: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future + 'static,
    Fut::Output: 'static,
{
    match backend {
        Backend::Uring => {
            // COOP_TASKRUN: completions are processed when the worker next enters the
            // kernel instead of interrupting it; one thread owns each ring (SINGLE_ISSUER).
            // Older kernels refuse the flags, so fall back to a plain ring.
            let mut tuned = tokio_uring::uring_builder();
            tuned.setup_coop_taskrun().setup_single_issuer();
            let rt = match tokio_uring::Runtime::new(
                tokio_uring::builder().entries(1024).uring_builder(&tuned),
            ) {
                Ok(rt) => rt,
                Err(_) => tokio_uring::Runtime::new(tokio_uring::builder().entries(1024))?,
            };
            Ok(rt.block_on(as_task(make)))
        }
        Backend::Epoll => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            Ok(local.block_on(&rt, as_task(make)))
        }
    }
}

/// Runs `make()`'s future as a task of the worker's LocalSet and waits for it. Run as
/// the runtime's own `block_on` future instead, every wake of it (each accept's
/// completion, for a worker's accept loop) marks the runtime woken, and tokio then
/// polls its driver once more without blocking before it polls the future: one
/// `epoll_wait` per new connection that a task's wake, queued inside the set, avoids.
async fn as_task<F, Fut>(make: F) -> Fut::Output
where
    F: FnOnce() -> Fut,
    Fut: Future + 'static,
    Fut::Output: 'static,
{
    match tokio::task::spawn_local(make()).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // the runtime is being dropped with the task unfinished: nothing waits
            Err(e) => panic!("worker task ended without finishing: {e}"),
        },
    }
}

/// Spawns a task on the current worker's runtime (either backend).
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    tokio::task::spawn_local(fut)
}

/// A non-blocking one-byte peek at `fd`: how many bytes it saw (0: end of stream).
fn peek_one(fd: std::os::fd::RawFd) -> io::Result<usize> {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local; the caller owns the open fd.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The backends this machine can run, for tests that cover each: epoll, and io_uring
/// when the kernel allows it.
#[cfg(test)]
pub(crate) fn test_backends() -> Vec<Backend> {
    let mut b = vec![Backend::Epoll];
    if probe_uring().is_ok() {
        b.push(Backend::Uring);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// The worker parks with an accept, then a read, outstanding, and a peer thread
    /// lets each finish later: the completion must wake the parked worker (through the
    /// ring's fd in epoll on the io_uring backend), not wait for some other event.
    #[test]
    fn completions_wake_a_parked_worker() {
        for backend in test_backends() {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let peer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                s.write_all(b"ping").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut got = [0; 4];
                s.read_exact(&mut got).map(|_| got)
            });
            let answered = run_on_current_thread(backend, move || async move {
                let listener = Listener::from_std(backend, l).unwrap();
                let echo = async {
                    let (s, _) = listener.accept().await.unwrap();
                    let (n, buf) = s.read(BytesMut::with_capacity(16)).await;
                    assert_eq!(n.unwrap(), 4);
                    s.write_all(buf.freeze()).await.unwrap();
                };
                // a lost wake-up shows as this timeout, not as a hung test
                tokio::time::timeout(Duration::from_secs(10), echo)
                    .await
                    .is_ok()
            })
            .unwrap();
            assert!(
                answered,
                "{backend:?}: a completion did not wake the worker"
            );
            assert_eq!(&peer.join().unwrap().unwrap(), b"ping", "{backend:?}");
        }
    }
}
