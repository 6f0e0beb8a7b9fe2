//! Socket-to-socket moves through a pipe with splice(2): the bytes stay in kernel pages
//! (page references move from one socket's receive queue to the other's send queue), so
//! a large body crosses the proxy without being copied into or out of user space.
//!
//! io_uring's IORING_OP_SPLICE always runs in an io-wq worker thread (the kernel punts
//! splice off the submitting thread), which costs two context switches per call. So both
//! backends issue non-blocking splice calls from the worker thread and wait for socket
//! readiness through tokio's reactor when one would block; the io_uring runtime is a
//! tokio runtime underneath, so its reactor is there too. See docs/perf.md.

use super::{Deadline, Stream};
use std::cell::{OnceCell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Pipe capacity asked for; the kernel rounds to pages and caps at pipe-max-size.
const PIPE_SIZE: i32 = 256 * 1024;
/// Idle pipes kept per worker thread.
const PIPE_POOL: usize = 64;

/// Why a splice stopped early.
#[derive(Debug)]
pub enum SpliceError {
    /// Reading the source failed or timed out.
    Source(io::Error),
    /// The source ended before the requested length.
    Eof,
    /// Writing the destination failed.
    Sink(io::Error),
}

/// An empty pipe, returned to the worker's pool when dropped empty.
struct Pipe {
    r: RawFd,
    w: RawFd,
    /// What the pipe holds at most.
    cap: usize,
    /// Bytes sitting in the pipe.
    held: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<(RawFd, RawFd, usize)>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some((r, w, cap)) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Ok(Pipe { r, w, cap, held: 0 });
        }
        let mut fds = [0; 2];
        // SAFETY: fds is a valid two-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // A bigger pipe moves more per call; when refused, the default size stays.
        // SAFETY: fds[1] is the pipe we just created.
        let mut cap = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_SIZE) };
        if cap <= 0 {
            // SAFETY: as above.
            cap = unsafe { libc::fcntl(fds[1], libc::F_GETPIPE_SZ) };
        }
        Ok(Pipe {
            r: fds[0],
            w: fds[1],
            cap: cap.max(4096) as usize,
            held: 0,
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // A pipe with bytes left in it belongs to a failed move: never reuse it.
        if self.held == 0 {
            let pooled = PIPES.with(|p| {
                let mut p = p.borrow_mut();
                (p.len() < PIPE_POOL)
                    .then(|| p.push((self.r, self.w, self.cap)))
                    .is_some()
            });
            if pooled {
                return;
            }
        }
        // SAFETY: both fds are owned by this pipe and closed exactly once.
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

fn splice_raw(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain fds; null offsets are required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A borrowed fd, as the reactor sees it.
pub(super) struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// An io_uring TCP stream, plus its registration with the tokio reactor, made the first
/// time a splice has to wait on it and kept for the stream's life (both directions of
/// a tunnel share it; a second registration of one fd would be refused).
pub struct UringTcp {
    // Declared first so it is dropped (deregistered) before the socket is closed.
    reg: OnceCell<AsyncFd<Fd>>,
    tcp: tokio_uring::net::TcpStream,
    pub(super) traffic: super::Traffic,
}

impl UringTcp {
    /// Wraps a connected stream.
    pub fn new(tcp: tokio_uring::net::TcpStream) -> UringTcp {
        UringTcp {
            reg: OnceCell::new(),
            tcp,
            traffic: Default::default(),
        }
    }

    /// Whether the socket is registered with the reactor yet.
    pub(super) fn is_registered(&self) -> bool {
        self.reg.get().is_some()
    }

    pub(super) fn registration(&self) -> io::Result<&AsyncFd<Fd>> {
        if let Some(r) = self.reg.get() {
            return Ok(r);
        }
        // SAFETY: the fd belongs to `self.tcp`, which outlives the registration (field
        // order above), so it stays open and the same socket while registered.
        let afd = unsafe {
            AsyncFd::register_with_interest(
                Fd(self.tcp.as_raw_fd()),
                Interest::READABLE | Interest::WRITABLE,
            )
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(self.reg.get_or_init(move || afd))
    }
}

impl std::ops::Deref for UringTcp {
    type Target = tokio_uring::net::TcpStream;
    fn deref(&self) -> &Self::Target {
        &self.tcp
    }
}

/// A socket end of a move, with a way to wait until it is ready.
enum End<'a> {
    Epoll(&'a tokio::net::TcpStream),
    Uring(&'a UringTcp),
}

impl End<'_> {
    fn of(s: &Stream) -> Option<End<'_>> {
        match s {
            Stream::Epoll(t, _) => Some(End::Epoll(t)),
            Stream::Uring(t) => Some(End::Uring(t)),
            Stream::Tls(_) | Stream::Detached => None,
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            End::Epoll(t) => t.as_raw_fd(),
            End::Uring(t) => t.tcp.as_raw_fd(),
        }
    }

    /// Runs `op` until it does not return WouldBlock, waiting for `interest` in between.
    async fn io(
        &self,
        interest: Interest,
        mut op: impl FnMut(RawFd) -> io::Result<usize>,
    ) -> io::Result<usize> {
        // Optimistic first try: data usually is already there.
        match op(self.fd()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        match self {
            End::Epoll(t) => loop {
                t.ready(interest).await?;
                match t.try_io(interest, || op(t.as_raw_fd())) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            End::Uring(t) => {
                let afd = t.registration()?;
                loop {
                    let mut guard = afd.ready(interest).await?;
                    match guard.try_io(|f| op(f.get_ref().0)) {
                        Ok(r) => return r,
                        Err(_would_block) => continue,
                    }
                }
            }
        }
    }
}

/// True when bytes can move from `src` to `dst` with [`splice`] (both plain sockets).
pub fn can_splice(src: &Stream, dst: &Stream) -> bool {
    End::of(src).is_some() && End::of(dst).is_some()
}

/// How long a [`splice`] (or a tunnel) may wait without progress.
#[derive(Clone, Copy)]
pub enum Idle<'a> {
    /// As long as it takes.
    Never,
    /// At most `read` for each read from the source, and `write` (None: no limit) for
    /// each write to the destination, whose taking nothing that long is a sink error.
    Each {
        /// Longest wait for the source.
        read: Duration,
        /// Longest wait for the destination.
        write: Option<Duration>,
    },
    /// Until the deadline, which every byte moved (here or by whoever else shares it,
    /// like the other direction of a tunnel) pushes this far ahead; writes wait on it too.
    Shared(&'a Deadline, Duration),
}

impl<'a> Idle<'a> {
    /// `d` shared by everything that uses `deadline` (armed now), or no limit for None.
    pub fn shared(deadline: &'a Deadline, d: Option<Duration>) -> Idle<'a> {
        match d {
            Some(d) => {
                deadline.arm(d);
                Idle::Shared(deadline, d)
            }
            None => Idle::Never,
        }
    }

    /// Each read waits at most `read`; writes are not limited.
    pub fn reads(read: Duration) -> Idle<'static> {
        Idle::Each { read, write: None }
    }

    /// Runs a wait for the source; None when it took too long.
    pub async fn wait<F: std::future::Future>(self, fut: F) -> Option<F::Output> {
        match self {
            Idle::Never => Some(fut.await),
            Idle::Each { read, .. } => tokio::time::timeout(read, fut).await.ok(),
            Idle::Shared(deadline, _) => deadline.limit(fut).await.ok(),
        }
    }

    /// Runs a wait for the destination; None when it took too long.
    pub async fn wait_write<F: std::future::Future>(self, fut: F) -> Option<F::Output> {
        match self {
            Idle::Never | Idle::Each { write: None, .. } => Some(fut.await),
            Idle::Each { write: Some(w), .. } => tokio::time::timeout(w, fut).await.ok(),
            Idle::Shared(deadline, _) => deadline.limit(fut).await.ok(),
        }
    }

    /// Bytes moved: a shared deadline moves ahead.
    pub fn progress(self) {
        if let Idle::Shared(deadline, d) = self {
            deadline.arm(d);
        }
    }

    fn describe(self) -> String {
        match self {
            Idle::Never => "no data".into(),
            Idle::Each { read: d, .. } | Idle::Shared(_, d) => format!("no data for {d:?}"),
        }
    }
}

/// Moves `len` bytes from `src` to `dst` (`u64::MAX`: until `src` ends), waiting as long
/// as `idle` allows; `moved` counts the bytes written to `dst`, also when it fails.
/// On error the sockets are left as they are; the caller closes them.
pub async fn splice(
    src: &Stream,
    dst: &Stream,
    len: u64,
    idle: Idle<'_>,
    moved: &mut u64,
) -> Result<(), SpliceError> {
    let (Some(from), Some(to)) = (End::of(src), End::of(dst)) else {
        return Err(SpliceError::Sink(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice needs two plain sockets",
        )));
    };
    let mut pipe = Pipe::take().map_err(SpliceError::Source)?;
    let until_eof = len == u64::MAX;
    let mut left = len;
    let start = *moved;
    let mut eof = false;
    while left > 0 || pipe.held > 0 {
        if left > 0 && !eof && pipe.held < pipe.cap {
            let want = left.min((pipe.cap - pipe.held) as u64) as usize;
            let pw = pipe.w;
            // Only wait for the source when the pipe has nothing to drain meanwhile;
            // None: no bytes right now.
            let got = if pipe.held == 0 {
                let read = from.io(Interest::READABLE, |fd| splice_raw(fd, pw, want));
                match idle.wait(read).await {
                    Some(r) => Some(r.map_err(SpliceError::Source)?),
                    None => {
                        return Err(SpliceError::Source(io::Error::new(
                            io::ErrorKind::TimedOut,
                            idle.describe(),
                        )))
                    }
                }
            } else {
                match splice_raw(from.fd(), pw, want) {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => return Err(SpliceError::Source(e)),
                }
            };
            match got {
                None => {}
                Some(0) => {
                    eof = true;
                    if !until_eof {
                        left = 0;
                    }
                }
                Some(n) => {
                    if let Some(t) = src.traffic() {
                        t.add_read(n);
                    }
                    pipe.held += n;
                    if !until_eof {
                        left -= n as u64;
                    }
                }
            }
        }
        if pipe.held > 0 {
            let pr = pipe.r;
            let held = pipe.held;
            dst.before_write();
            let write = to.io(Interest::WRITABLE, |fd| splice_raw(pr, fd, held));
            let n = idle
                .wait_write(write)
                .await
                .unwrap_or_else(|| {
                    // what it did not take is abandoned: a reset frees it at the close
                    dst.abort();
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the destination accepted nothing in time",
                    ))
                })
                .map_err(SpliceError::Sink)?;
            pipe.held -= n;
            *moved += n as u64;
            if let Some(t) = dst.traffic() {
                t.add_written(n);
            }
            idle.progress();
        } else if eof {
            break;
        }
    }
    if eof && !until_eof && *moved - start < len {
        return Err(SpliceError::Eof);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{run_on_current_thread, test_backends, Backend, Listener};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A connected pair of the backend's streams: (proxy side of a, proxy side of b),
    /// plus the std peers (a's client, b's server).
    async fn pair(backend: Backend) -> (Stream, std::net::TcpStream, Stream, std::net::TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let listener = Listener::from_std(backend, l).unwrap();
        let peer_a = std::net::TcpStream::connect(addr).unwrap();
        let (src, _) = listener.accept().await.unwrap();
        let far = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = Stream::connect(backend, far.local_addr().unwrap())
            .await
            .unwrap();
        let (peer_b, _) = far.accept().unwrap();
        (src, peer_a, dst, peer_b)
    }

    /// Writes `data` from a thread (closing after when `close`), so a move larger than
    /// the socket buffers can progress while the test reads the other end.
    fn feed(
        mut peer: std::net::TcpStream,
        data: Vec<u8>,
        close: bool,
    ) -> std::thread::JoinHandle<std::net::TcpStream> {
        std::thread::spawn(move || {
            peer.write_all(&data).unwrap();
            if close {
                peer.shutdown(std::net::Shutdown::Write).unwrap();
            }
            peer
        })
    }

    fn drain(mut peer: std::net::TcpStream, n: usize) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut got = vec![0; n];
            peer.read_exact(&mut got).unwrap();
            got
        })
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// splice(2) and the direct recv/send calls rely on O_NONBLOCK: accepted sockets
    /// get it from the accept operation, connected ones from `set_nonblocking`.
    #[test]
    fn accepted_and_connected_sockets_are_non_blocking() {
        for backend in test_backends() {
            run_on_current_thread(backend, || async move {
                let (src, _a, dst, _b) = pair(backend).await;
                for s in [&src, &dst] {
                    let fd = s.raw_fd().unwrap();
                    // SAFETY: F_GETFL on an fd the stream owns.
                    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                    assert!(flags & libc::O_NONBLOCK != 0, "{backend:?}: fd {fd} blocks");
                }
            })
            .unwrap();
        }
    }

    #[test]
    fn moves_an_exact_length_and_leaves_the_rest() {
        for backend in test_backends() {
            run_on_current_thread(backend, || async move {
                let (src, peer_a, dst, peer_b) = pair(backend).await;
                let data = pattern(3 * 1024 * 1024 + 17);
                let len = data.len() as u64 - 5;
                let writer = feed(peer_a, data.clone(), false);
                let reader = drain(peer_b, len as usize);
                let mut moved = 0;
                splice(
                    &src,
                    &dst,
                    len,
                    Idle::reads(Duration::from_secs(10)),
                    &mut moved,
                )
                .await
                .unwrap();
                assert_eq!(moved, len, "{backend:?}");
                assert_eq!(reader.join().unwrap(), data[..len as usize], "{backend:?}");
                let _keep = writer.join().unwrap();
                // the five bytes past the length are still readable in user space
                let (r, b) = src.read(bytes::BytesMut::with_capacity(64)).await;
                assert_eq!(r.unwrap(), 5);
                assert_eq!(&b[..], &data[len as usize..]);
            })
            .unwrap();
        }
    }

    #[test]
    fn until_eof_and_early_eof() {
        for backend in test_backends() {
            run_on_current_thread(backend, || async move {
                let (src, peer_a, dst, peer_b) = pair(backend).await;
                let data = pattern(200_000);
                let writer = feed(peer_a, data.clone(), true);
                let reader = drain(peer_b, data.len());
                let mut moved = 0;
                splice(
                    &src,
                    &dst,
                    u64::MAX,
                    Idle::reads(Duration::from_secs(10)),
                    &mut moved,
                )
                .await
                .unwrap();
                assert_eq!(moved, data.len() as u64, "{backend:?}");
                assert_eq!(reader.join().unwrap(), data);
                drop(writer.join());

                let (src, peer_a, dst, peer_b) = pair(backend).await;
                let writer = feed(peer_a, pattern(1000), true);
                let reader = drain(peer_b, 1000);
                let mut moved = 0;
                let r = splice(
                    &src,
                    &dst,
                    5000,
                    Idle::reads(Duration::from_secs(10)),
                    &mut moved,
                )
                .await;
                assert!(matches!(r, Err(SpliceError::Eof)), "{backend:?}: {r:?}");
                assert_eq!(moved, 1000);
                assert_eq!(reader.join().unwrap(), pattern(1000));
                drop(writer.join());
            })
            .unwrap();
        }
    }

    #[test]
    fn a_silent_source_times_out() {
        for backend in test_backends() {
            run_on_current_thread(backend, || async move {
                let (src, _peer_a, dst, _peer_b) = pair(backend).await;
                let r = splice(
                    &src,
                    &dst,
                    10,
                    Idle::reads(Duration::from_millis(50)),
                    &mut 0,
                )
                .await;
                match r {
                    Err(SpliceError::Source(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
                    other => panic!("{backend:?}: {other:?}"),
                }
            })
            .unwrap();
        }
    }
}
