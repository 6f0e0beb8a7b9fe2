//! A worker's accept loop: new connections are served until the worker is told to
//! stop, connections over `max_connections` are refused, plugin reloads are applied
//! between events, and a stopping worker drains its connections.

use crate::config::{secs, Mode};
use crate::io;
use crate::proxy::worker::{self, Counters, Setup, Worker};
use std::time::{Duration, Instant};

/// The worker's main task: accept until told to stop, then drain.
pub async fn main(setup: Setup) {
    let Ok(worker::Built {
        w,
        listener,
        listen_fd,
        mut control,
        metrics,
    }) = worker::build(setup)
    else {
        return;
    };
    if let Some(rx) = metrics {
        serve_scrapes(w.clone(), rx);
    }
    let index = w.index;
    // Control runs beside the accept loop rather than in a select with it: dropping an
    // in-flight io_uring accept would not cancel it, and the connection it later
    // accepted would be lost. Stopping shuts the listening socket down instead, which
    // completes the pending accept with an error.
    let wc = w.clone();
    io::spawn(async move {
        let mut generation = control.borrow().reload_generation;
        while control.changed().await.is_ok() {
            let c = control.borrow_and_update().clone();
            if c.reload_generation != generation {
                generation = c.reload_generation;
                match worker::load_engine(&wc.cfg, wc.index) {
                    Ok(e) => {
                        *wc.engine.borrow_mut() = e;
                        tracing::info!(worker = wc.index, "plugins reloaded");
                    }
                    Err(e) => tracing::error!(
                        worker = wc.index,
                        "plugin reload failed, keeping the old set:\n{e}"
                    ),
                }
            }
            if c.stopping {
                wc.draining.send_replace(true);
                // the listener lives until the accept loop ends, which this call triggers
                io::os::shutdown_listener(listen_fd);
                break;
            }
        }
    });
    let wp = w.clone();
    io::spawn(async move { wp.pool.reap_forever().await });

    let mut failed = AcceptFailed::new(&w, listen_fd);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if w.is_draining() {
                    stream.shutdown(std::net::Shutdown::Both);
                    break;
                }
                if w.active.get() >= w.cfg.max_connections {
                    Counters::bump(&w.counters.refused);
                    let now = Instant::now();
                    if w.refused_logged
                        .get()
                        .is_none_or(|t| now - t >= Duration::from_secs(1))
                    {
                        w.refused_logged.set(Some(now));
                        tracing::warn!(
                            worker = index,
                            %peer,
                            "max connections ({}) reached; new connections get 503",
                            w.cfg.max_connections
                        );
                    }
                    // a SOCKS5 client would take an HTTP answer for a broken handshake
                    if w.refusing.get() < REFUSING_MAX && w.mode != Mode::Socks5 {
                        w.refusing.set(w.refusing.get() + 1);
                        let wr = w.clone();
                        io::spawn(async move {
                            refuse(stream).await;
                            wr.refusing.set(wr.refusing.get() - 1);
                        });
                    } else {
                        stream.shutdown(std::net::Shutdown::Both);
                    }
                    continue;
                }
                Counters::bump(&w.counters.accepted);
                // no TCP_NODELAY here: the stream sets it before its second write
                // (io::Traffic), which a connection answered in one write never makes
                // boxed before it is spawned: the task then holds a pointer, where the
                // connection's future (1.9 KB) was copied five times into the task and
                // three more as it ended, and the task itself (aligned to 128 bytes)
                // took mimalloc's slow path for aligned memory
                io::spawn(Box::pin(crate::proxy::conn::serve(w.clone(), stream, peer)));
            }
            Err(e) => {
                if w.is_draining() {
                    break;
                }
                failed.handle(&w, e).await;
            }
        }
    }
    drop(listener);
    drain(&w).await;
}

/// Answers scrapes: a task beside the accept loop copies the worker's counters when
/// the metrics thread asks, so the request path never takes a lock for them.
fn serve_scrapes(w: std::rc::Rc<Worker>, mut rx: worker::MetricsRx) {
    crate::metrics::enable();
    io::spawn(async move {
        while let Some(ask) = rx.recv().await {
            let _ = ask.send(w.snapshot());
        }
    });
}

async fn drain(w: &Worker) {
    let deadline = Instant::now() + secs(w.cfg.drain_timeout);
    while w.active.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if w.active.get() > 0 {
        tracing::warn!(
            worker = w.index,
            open = w.active.get(),
            "drain timeout: closing remaining connections"
        );
    }
}

/// Most over-the-limit connections answered 503 at once; beyond it they are closed
/// without a word, so a flood cannot grow the worker's load.
const REFUSING_MAX: usize = 64;

/// What a failed accept needs: the reserved descriptor, the answer for the refused,
/// and when the failure was last logged.
struct AcceptFailed {
    reserve: io::os::FdReserve,
    listen_fd: std::os::fd::RawFd,
    busy: String,
    logged: Option<Instant>,
}

impl AcceptFailed {
    fn new(w: &Worker, listen_fd: std::os::fd::RawFd) -> AcceptFailed {
        // a SOCKS5 client would take an HTTP answer for a broken handshake
        let busy = match w.mode {
            Mode::Socks5 => String::new(),
            _ => busy_answer(),
        };
        AcceptFailed {
            reserve: io::os::FdReserve::default(),
            listen_fd,
            busy,
            logged: None,
        }
    }

    /// Out of descriptors, the waiting connections are refused with the reserve; any
    /// failure is logged at most once a second and followed by [`ACCEPT_BACKOFF`].
    async fn handle(&mut self, w: &Worker, e: std::io::Error) {
        let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        let mut refused = 0;
        if out_of_fds {
            let busy = self.busy.as_bytes();
            refused = self
                .reserve
                .refuse_waiting(self.listen_fd, busy, REFUSE_WAITING_MAX);
        }
        for _ in 0..refused {
            Counters::bump(&w.counters.refused);
        }
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|t| now - t >= Duration::from_secs(1))
        {
            self.logged = Some(now);
            tracing::warn!(worker = w.index, refused, "accept failed: {e}");
        }
        // the error persists while the fd table is full: back off instead of spinning
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Most waiting connections refused in one go when the fd table is full; the rest wait
/// for the next round, after [`ACCEPT_BACKOFF`].
const REFUSE_WAITING_MAX: usize = 256;

/// Pause after a failed accept: while the fd table stays full every accept fails at
/// once, and retrying without a pause would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// The 503 a connection gets when the worker cannot take it.
fn busy_answer() -> String {
    let body = "luring: too many connections, try again\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers a connection over `max_connections` with a 503, then closes it after
/// reading (briefly) what the client sent, so the answer is not lost to a reset.
async fn refuse(stream: io::Stream) {
    if stream
        .write_all(bytes::Bytes::from(busy_answer()))
        .await
        .is_ok()
    {
        stream.shutdown(std::net::Shutdown::Write);
        let mut buf = bytes::BytesMut::with_capacity(4096);
        let deadline = Instant::now() + Duration::from_millis(500);
        for _ in 0..16 {
            let left = deadline.saturating_duration_since(Instant::now());
            buf.clear();
            match crate::proxy::body_relay::read_some(&stream, &mut buf, left).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
    stream.shutdown(std::net::Shutdown::Both);
}
