//! The load driver: sends the recorded requests to one target on a schedule over a
//! pool of HTTP/1.1 keep-alive connections, on one thread (a current-thread tokio
//! runtime), and times each request from the moment it was due.
//!
//! Open loop: a dispatcher releases each request at its intended time (a timerfd, see
//! clock.rs) into a queue that the connections drain. A request that finds every
//! connection busy waits in the queue, and that wait is in its corrected latency and
//! its schedule lag: nothing is omitted, and the wait is counted (`cap_waits`) so the
//! run is flagged driver-limited. Closed loop: each connection sends the next request
//! as soon as its previous one completed, as wrk does.
//!
//! Connections (plain, TLS, TLS in a CONNECT tunnel) come from the target's
//! [`Dialer`]; each worker keeps its open ones by endpoint, so TLS sessions live as
//! long as the keep-alive connection does.

use super::clock::{cpu_us, mono_ns, Timer};
use super::dial::{Conn, Conns, Dialer};
use super::prepared::{BodyCheck, Prepared};
use super::response::ResponseReader;
use super::schedule::{Plan, Schedule};
use super::stats::Stats;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// How one target is driven.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// Open-loop plan; None: closed loop.
    pub plan: Option<Plan>,
    /// Connections in the pool (the in-flight cap).
    pub connections: usize,
    /// Measured window after the warm-up, ns.
    pub duration_ns: u64,
    /// Warm-up before the measured window, ns (not counted).
    pub warmup_ns: u64,
    /// Send each recorded request once.
    pub once: bool,
    /// Seed of the Poisson arrivals.
    pub seed: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Speak HTTP/2 (h2c with prior knowledge, or h2 by ALPN) instead of HTTP/1.1.
    pub h2: bool,
    /// h2c: concurrent streams per connection (workers = connections × streams).
    pub streams: usize,
}

/// What one drive of one target measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The measurements.
    pub stats: Stats,
    /// CPU of the watched process during the window, µs.
    pub target_cpu_us: Option<u64>,
    /// CPU of this driver process during the window, µs.
    pub driver_cpu_us: Option<u64>,
}

struct Job {
    intended: u64,
    flow: usize,
}

struct Shared {
    reqs: Rc<Vec<Prepared>>,
    dialer: Rc<Dialer>,
    timeout: Duration,
    queue: RefCell<VecDeque<Job>>,
    notify: Notify,
    finished: Cell<bool>,
    idle: Cell<usize>,
    window: (u64, u64),
    stats: RefCell<Stats>,
    // closed loop: the next flow and when to stop
    next_flow: Cell<usize>,
    closed_end: u64,
    once_left: Cell<Option<usize>>,
}

/// Drives `target` with `reqs` (one per recorded flow, `starts` their recorded start
/// times) under `cfg`, watching `pid`'s CPU during the measured window.
pub fn drive(
    reqs: Rc<Vec<Prepared>>,
    starts: &[u64],
    dialer: Rc<Dialer>,
    pid: Option<u32>,
    cfg: &DriveConfig,
    bar: Option<indicatif::ProgressBar>,
) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive_async(reqs, starts, dialer, pid, cfg, bar))
}

async fn drive_async(
    reqs: Rc<Vec<Prepared>>,
    starts: &[u64],
    dialer: Rc<Dialer>,
    pid: Option<u32>,
    cfg: &DriveConfig,
    bar: Option<indicatif::ProgressBar>,
) -> Result<Outcome, String> {
    let warmup = if cfg.once { 0 } else { cfg.warmup_ns };
    // an open loop starts a little ahead so its first requests are not already late;
    // a closed loop has no schedule to be late for
    let lead = if cfg.plan.is_some() { 5_000_000 } else { 0 };
    let t0 = mono_ns() + lead;
    let end = t0 + warmup + cfg.duration_ns;
    let window = (t0 + warmup, if cfg.once { u64::MAX } else { end });
    let n = reqs.len();
    let sh = Rc::new(Shared {
        reqs,
        dialer,
        timeout: cfg.timeout,
        queue: RefCell::new(VecDeque::new()),
        notify: Notify::new(),
        finished: Cell::new(false),
        idle: Cell::new(0),
        window,
        stats: RefCell::new(Stats {
            open_loop: cfg.plan.is_some(),
            ..Stats::default()
        }),
        next_flow: Cell::new(0),
        closed_end: end,
        once_left: Cell::new(cfg.once.then_some(n)),
    });
    let cpu0 = Rc::new(Cell::new((None, None)));
    let c0 = cpu0.clone();
    let sampler = tokio::task::spawn_local(async move {
        if let Ok(t) = Timer::new() {
            t.sleep_until(window.0).await;
        }
        c0.set((pid.and_then(|p| cpu_us(Some(p))), cpu_us(None)));
    });
    let ticker = bar.map(|b| {
        let (sh, total) = (sh.clone(), warmup + cfg.duration_ns);
        tokio::task::spawn_local(progress(sh, b, t0, total, cfg.once.then_some(n)))
    });
    let mut tasks = Vec::new();
    // requests recorded over HTTP/2 go through a proxy's tunnels over h2
    let some_h2 = cfg.h2 || sh.dialer.endpoints.iter().any(|e| e.h2);
    for _ in 0..cfg.connections.max(1) {
        // h2c: this connection's streams share one slot; HTTP/1.1: one worker each
        let slot = some_h2.then(super::client_h2::Slot::default);
        let per = if cfg.h2 { cfg.streams.max(1) } else { 1 };
        for _ in 0..per {
            let w = worker(sh.clone(), cfg.plan.is_none(), cfg.h2, slot.clone());
            tasks.push(tokio::task::spawn_local(w));
        }
    }
    if let Some(plan) = cfg.plan {
        let sched = Schedule::new(plan, starts, cfg.seed, cfg.once, warmup + cfg.duration_ns);
        let timer = Timer::new().map_err(|e| format!("timerfd: {e}"))?;
        dispatch(&sh, sched, t0, &timer).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(t) = ticker {
        t.abort();
        let _ = t.await;
    }
    let _ = sampler.await;
    let (p0, d0) = cpu0.get();
    let last = mono_ns();
    let mut stats = sh.stats.take();
    let window_ns = window.1.min(last).saturating_sub(window.0);
    stats.window_s = window_ns as f64 / 1e9;
    stats.pad_to(window_ns.div_ceil(1_000_000_000) as usize);
    Ok(Outcome {
        stats,
        target_cpu_us: p0
            .zip(pid.and_then(|p| cpu_us(Some(p))))
            .map(|(a, b)| b - a),
        driver_cpu_us: d0.zip(cpu_us(None)).map(|(a, b)| b - a),
    })
}

/// Moves the progress bar five times a second (never per request): the time gone,
/// or with `--once` the requests done, and the counts so far.
async fn progress(
    sh: Rc<Shared>,
    bar: indicatif::ProgressBar,
    t0: u64,
    total_ns: u64,
    once: Option<usize>,
) {
    struct Clear(indicatif::ProgressBar);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.0.finish_and_clear();
        }
    }
    let bar = Clear(bar);
    bar.0
        .set_length(once.map_or(total_ns / 1_000_000, |n| n as u64));
    loop {
        let (done, failed) = {
            let st = sh.stats.borrow();
            (st.completed(), st.failed())
        };
        let pos = match once {
            Some(_) => done + failed,
            None => mono_ns().saturating_sub(t0) / 1_000_000,
        };
        bar.0.set_position(pos);
        bar.0.set_message(format!("{done} done, {failed} failed"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Releases each scheduled request at its time; yields after each one it did not
/// sleep for, so that the connections get to send a backlog.
async fn dispatch(sh: &Rc<Shared>, sched: Schedule, t0: u64, timer: &Timer) {
    for (off, flow) in sched {
        let at = t0 + off;
        // within 20 µs is "now": a timer wakeup costs more than that
        let slept = at > mono_ns() + 20_000;
        if slept {
            timer.sleep_until(at).await;
        }
        let measured = at >= sh.window.0 && at < sh.window.1;
        if measured {
            sh.stats.borrow_mut().schedule(second_of(at, sh.window.0));
        }
        if sh.idle.get() > 0 {
            sh.idle.set(sh.idle.get() - 1);
        } else if measured {
            sh.stats.borrow_mut().cap_waits += 1;
        }
        sh.queue.borrow_mut().push_back(Job { intended: at, flow });
        sh.notify.notify_one();
        if !slept {
            tokio::task::yield_now().await;
        }
    }
    sh.finished.set(true);
    sh.notify.notify_waiters();
}

/// The index of the second of the window (which starts at `w0`) that `t` is in.
fn second_of(t: u64, w0: u64) -> usize {
    (t.saturating_sub(w0) / 1_000_000_000) as usize
}

async fn next_job(sh: &Shared, closed: bool) -> Option<Job> {
    if closed {
        let now = mono_ns();
        if now >= sh.closed_end && sh.once_left.get().is_none() {
            return None;
        }
        if let Some(left) = sh.once_left.get() {
            if left == 0 {
                return None;
            }
            sh.once_left.set(Some(left - 1));
        }
        let f = sh.next_flow.get();
        sh.next_flow.set(f + 1);
        if now >= sh.window.0 && now < sh.window.1 {
            sh.stats.borrow_mut().schedule(second_of(now, sh.window.0));
        }
        return Some(Job {
            intended: now,
            flow: f % sh.reqs.len(),
        });
    }
    loop {
        if let Some(j) = sh.queue.borrow_mut().pop_front() {
            return Some(j);
        }
        if sh.finished.get() {
            return None;
        }
        sh.idle.set(sh.idle.get() + 1);
        sh.notify.notified().await;
    }
}

async fn worker(sh: Rc<Shared>, closed: bool, all_h2: bool, h2: Option<super::client_h2::Slot>) {
    let mut conns = Conns::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(job) = next_job(&sh, closed).await {
        let req = &sh.reqs[job.flow];
        let sent = mono_ns();
        let use_h2 = all_h2 || sh.dialer.endpoints[req.endpoint as usize].h2;
        let r = match (&h2, &req.h2) {
            (Some(slot), Some(r2)) if use_h2 => {
                let ex = super::client_h2::exchange(slot, &sh.dialer, req, r2);
                let r = tokio::time::timeout(sh.timeout, ex).await;
                if r.is_err() {
                    super::client_h2::forget(slot, req.endpoint);
                }
                r
            }
            (Some(_), None) if use_h2 => Ok(Err("request not valid as HTTP/2")),
            _ => {
                let ex = exchange(&mut conns, &sh.dialer, req, &mut buf);
                tokio::time::timeout(sh.timeout, ex).await
            }
        };
        let done = mono_ns();
        let (w0, w1) = sh.window;
        if job.intended < w0 || job.intended >= w1 {
            continue;
        }
        let mut st = sh.stats.borrow_mut();
        let due = second_of(job.intended, w0);
        st.lag_in(due, sent.saturating_sub(job.intended));
        if sent < w1 {
            st.sent_in_window += 1;
        }
        match r {
            Ok(Ok((_, _, false))) => st.fail("body", due),
            Ok(Ok((status, body, true))) => {
                st.body_bytes += body;
                // completions just past the window's end count in its last second
                let last = (w1.saturating_sub(w0) / 1_000_000_000).max(1) - 1;
                let second = second_of(done, w0).min(last as usize);
                st.complete(job.intended, sent, done, status, due, second);
            }
            Ok(Err(kind)) => st.fail(kind, due),
            // the exchange was dropped with its connection: a late response cannot
            // arrive out of step
            Err(_) => st.fail("timeout", due),
        }
    }
}

/// Sends one request on the worker's kept connection of its endpoint or a new one; a
/// kept connection the peer had closed (keep-alive race) is retried once on a new
/// one. The status, the body length, and whether the body is the recorded one.
async fn exchange(
    conns: &mut Conns,
    dialer: &Dialer,
    req: &Prepared,
    buf: &mut Vec<u8>,
) -> Result<(u16, u64, bool), &'static str> {
    for attempt in 0..2 {
        let (mut c, reused) = match conns.take(req.endpoint) {
            Some(c) => (c, true),
            None => (dialer.dial(req.endpoint).await?, false),
        };
        match once(&mut c, req, buf).await {
            Ok((status, body, keep, same)) => {
                if keep {
                    conns.put(req.endpoint, c);
                }
                return Ok((status, body, same));
            }
            Err(Fail::Stale) if reused && attempt == 0 => {}
            Err(Fail::Stale) | Err(Fail::Io) => return Err("io"),
            Err(Fail::Parse) => return Err("parse"),
        }
    }
    Err("io")
}

enum Fail {
    /// Closed before any response byte.
    Stale,
    Io,
    Parse,
}

async fn once(
    s: &mut Conn,
    req: &Prepared,
    buf: &mut Vec<u8>,
) -> Result<(u16, u64, bool, bool), Fail> {
    s.write_all(&req.wire).await.map_err(|_| Fail::Stale)?;
    if let Conn::Tls(_) = s {
        // rustls holds the records until flushed
        s.flush().await.map_err(|_| Fail::Stale)?;
    }
    let mut rd = ResponseReader::new(req.head);
    let mut check = BodyCheck::new(req.expect.as_deref());
    buf.clear();
    let mut got = false;
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = s
            .read_buf(buf)
            .await
            .map_err(|_| if got { Fail::Io } else { Fail::Stale })?;
        if n == 0 {
            if rd.eof() {
                return Ok((rd.status, rd.body_len, false, check.ok()));
            }
            return Err(if got { Fail::Io } else { Fail::Stale });
        }
        got = true;
        let used = rd
            .feed_with(buf, &mut |b| check.feed(b))
            .map_err(|_| Fail::Parse)?;
        buf.drain(..used);
        if rd.done() {
            // bytes past the response: the peer is out of step, do not reuse
            let keep = rd.keep_alive && buf.is_empty();
            return Ok((rd.status, rd.body_len, keep, check.ok()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BodyCheck;

    fn check(expect: Option<&[u8]>, parts: &[&[u8]]) -> bool {
        let mut c = BodyCheck::new(expect);
        for p in parts {
            c.feed(p);
        }
        c.ok()
    }

    #[test]
    fn a_body_check_wants_every_byte_and_no_more() {
        assert!(check(Some(b"hello"), &[b"he", b"", b"llo"]));
        assert!(!check(Some(b"hello"), &[b"he", b"LLo"]));
        assert!(!check(Some(b"hello"), &[b"hell"]));
        assert!(!check(Some(b"hello"), &[b"hello", b"!"]));
        assert!(check(Some(b""), &[]));
        assert!(check(None, &[b"anything"]));
    }
}
