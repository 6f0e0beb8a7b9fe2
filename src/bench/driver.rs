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
//! long as the keep-alive connection does. With `--conn-mode recorded` the workers
//! replay the recording's connections instead of sharing a pool (lane workers, below).

use super::client_h2::Slot;
use super::clock::{cpu_us, mono_ns, Timer};
use super::dial::{Conns, Dialer};
use super::exchange;
use super::lanes::{LaneCursor, Lanes};
use super::prepared::Prepared;
use super::schedule::{Plan, Schedule};
use super::stats::Stats;
use super::ws_client::WsCounts;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;
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
    /// h2: concurrent streams per connection (workers = connections × streams).
    pub streams: usize,
    /// `--conn-mode recorded`: the recorded connections, each replayed on one
    /// connection of its own (None: the pool).
    pub lanes: Option<Rc<Lanes>>,
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

/// One request to send: when it was due, and which recorded flow.
pub(super) struct Job {
    pub(super) intended: u64,
    pub(super) flow: usize,
}

/// What the dispatcher and the workers of one drive share (one thread).
pub(super) struct Shared {
    reqs: Rc<Vec<Prepared>>,
    dialer: Rc<Dialer>,
    timeout: Duration,
    queue: RefCell<VecDeque<Job>>,
    notify: Notify,
    /// Every request was released.
    finished: Cell<bool>,
    idle: Cell<usize>,
    /// The measured window, monotonic ns.
    window: (u64, u64),
    /// The measurements.
    stats: RefCell<Stats>,
    // closed loop: the next flow and when to stop
    next_flow: Cell<usize>,
    /// Closed loop: when to stop.
    pub(super) closed_end: u64,
    once_left: Cell<Option<usize>>,
    /// `--conn-mode recorded`: the recorded connections (None: the pool).
    lanes: Option<LaneState>,
}

impl Shared {
    /// The recorded connections; only lane workers ask.
    pub(super) fn lanes(&self) -> &LaneState {
        self.lanes
            .as_ref()
            .expect("lane workers run in recorded mode")
    }
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
        lanes: cfg.lanes.clone().map(|l| LaneState::new(l, cfg.once)),
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
    let closed = cfg.plan.is_none();
    for _ in 0..cfg.connections.max(1) {
        if sh.lanes.is_some() {
            let w = lane_worker(sh.clone(), closed, cfg.h2, some_h2);
            tasks.push(tokio::task::spawn_local(w));
            continue;
        }
        // h2 (a target's, or a proxy's tunnels): this connection's streams share one
        // slot; HTTP/1.1 only: one worker each
        let slot = some_h2.then(Slot::default);
        let per = if some_h2 { cfg.streams.max(1) } else { 1 };
        for _ in 0..per {
            let link = Link::new(cfg.h2, slot.clone(), false);
            tasks.push(tokio::task::spawn_local(worker(sh.clone(), closed, link)));
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
    // the workers start and wait first: on a busy machine the first request can be due
    // before they ever ran, and it would count as a cap wait with every one of them free
    tokio::task::yield_now().await;
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
        let job = Job { intended: at, flow };
        let wait = match &sh.lanes {
            Some(l) => l.release(job),
            None => {
                let idle = sh.idle.get();
                sh.idle.set(idle.saturating_sub(1));
                sh.queue.borrow_mut().push_back(job);
                sh.notify.notify_one();
                idle == 0
            }
        };
        if wait && measured {
            sh.stats.borrow_mut().cap_waits += 1;
        }
        if !slept {
            tokio::task::yield_now().await;
        }
    }
    sh.finished.set(true);
    sh.notify.notify_waiters();
    if let Some(l) = &sh.lanes {
        l.finish();
    }
}

/// The index of the second of the window (which starts at `w0`) that `t` is in.
fn second_of(t: u64, w0: u64) -> usize {
    (t.saturating_sub(w0) / 1_000_000_000) as usize
}

async fn next_job(sh: &Shared, closed: bool) -> Option<Job> {
    if closed {
        if mono_ns() >= sh.closed_end && sh.once_left.get().is_none() {
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
        return Some(closed_job(sh, f % sh.reqs.len()));
    }
    let pop = || sh.queue.borrow_mut().pop_front();
    let idle = || sh.idle.set(sh.idle.get() + 1);
    wait_for(sh, &sh.notify, pop, idle).await
}

/// Closed loop: `flow` is due now (counted as scheduled when that is in the window).
pub(super) fn closed_job(sh: &Shared, flow: usize) -> Job {
    let now = mono_ns();
    if now >= sh.window.0 && now < sh.window.1 {
        sh.stats.borrow_mut().schedule(second_of(now, sh.window.0));
    }
    Job {
        intended: now,
        flow,
    }
}

/// The next thing `pop` gives, waiting on `notify` (`idle` says a worker waits) while
/// there is none; None once every request was released and none is left.
pub(super) async fn wait_for<T>(
    sh: &Shared,
    notify: &Notify,
    mut pop: impl FnMut() -> Option<T>,
    idle: impl Fn(),
) -> Option<T> {
    loop {
        if let Some(x) = pop() {
            return Some(x);
        }
        if sh.finished.get() {
            return None;
        }
        idle();
        notify.notified().await;
    }
}

async fn worker(sh: Rc<Shared>, closed: bool, mut link: Link) {
    while let Some(job) = next_job(&sh, closed).await {
        run_one(&sh, job, &mut link).await;
    }
}

/// A worker's connections: HTTP/1.1 ones kept by endpoint, and its h2 slot.
pub(super) struct Link {
    conns: Conns,
    buf: Vec<u8>,
    h2: Option<Slot>,
    /// Every request goes over HTTP/2 (an h2c:// or h2:// target).
    all_h2: bool,
    /// A WebSocket upgrade goes on the kept connection (`--conn-mode recorded`: the
    /// recording's connection carried it) rather than a new one.
    ws_reuse: bool,
}

impl Link {
    /// No connection yet; `h2` when some requests go over HTTP/2.
    pub(super) fn new(all_h2: bool, h2: Option<Slot>, ws_reuse: bool) -> Link {
        Link {
            conns: Conns::default(),
            buf: Vec::with_capacity(64 * 1024),
            h2,
            all_h2,
            ws_reuse,
        }
    }
}

/// What one exchange came to: the status, the body length, whether the body is the
/// recorded one; or the kind of failure.
type Exchanged = Result<(u16, u64, bool), &'static str>;

/// Sends `job`'s request on `link` and counts the outcome when it was due in the
/// measured window.
pub(super) async fn run_one(sh: &Shared, job: Job, link: &mut Link) {
    let req = &sh.reqs[job.flow];
    let sent = mono_ns();
    let use_h2 = link.all_h2 || sh.dialer.endpoints[req.endpoint as usize].h2;
    let mut ws = None;
    let r: Exchanged = match (&req.ws, &link.h2, &req.h2) {
        (Some(plan), _, _) => {
            let mut counts = WsCounts::default();
            let c = &mut link.conns;
            let ex = exchange::websocket(c, link.ws_reuse, &sh.dialer, req, plan, &mut counts);
            let r = tokio::time::timeout(sh.timeout, ex).await;
            ws = Some(counts);
            match r {
                Ok(r) => r.map(|()| (101, 0, true)),
                Err(_) => Err("ws-timeout"),
            }
        }
        (None, Some(slot), Some(r2)) if use_h2 => {
            let ex = super::client_h2::exchange(slot, &sh.dialer, req, r2);
            let r = tokio::time::timeout(sh.timeout, ex).await;
            if r.is_err() {
                super::client_h2::forget(slot, req.endpoint);
            }
            r.unwrap_or(Err("timeout"))
        }
        (None, Some(_), None) if use_h2 => Err("request not valid as HTTP/2"),
        _ => {
            let ex = exchange::exchange(&mut link.conns, &sh.dialer, req, &mut link.buf);
            // the exchange is dropped with its connection: a late response cannot
            // arrive out of step
            tokio::time::timeout(sh.timeout, ex)
                .await
                .unwrap_or(Err("timeout"))
        }
    };
    record(sh, &job, sent, mono_ns(), r, ws);
}

/// Counts one exchange, when it was due in the measured window.
fn record(sh: &Shared, job: &Job, sent: u64, done: u64, r: Exchanged, ws: Option<WsCounts>) {
    let (w0, w1) = sh.window;
    if job.intended < w0 || job.intended >= w1 {
        return;
    }
    let mut st = sh.stats.borrow_mut();
    let due = second_of(job.intended, w0);
    st.lag_in(due, sent.saturating_sub(job.intended));
    if sent < w1 {
        st.sent_in_window += 1;
    }
    if let Some(c) = ws {
        st.ws.merge(&c);
    }
    match r {
        Ok((_, _, false)) => st.fail("body", due),
        Ok((status, body, true)) => {
            st.body_bytes += body;
            // completions just past the window's end count in its last second
            let last = (w1.saturating_sub(w0) / 1_000_000_000).max(1) - 1;
            let second = second_of(done, w0).min(last as usize);
            st.complete(job.intended, sent, done, status, due, second);
        }
        Err(kind) => st.fail(kind, due),
    }
}

// `--conn-mode recorded`: the requests of each recorded client connection go in their
// order over one connection of their own, opened where the recording opened one and
// closed after its last request (lanes.rs says which, sans-IO). Each of the
// `--connections` lane workers holds one such connection at a time, so that flag caps
// the recorded connections open at once.
//
// A released request whose connection is busy with the request before it, or whose
// connection no worker is free to open, waits: the wait is in its corrected latency
// and counted as a cap wait, as a full pool's is.

/// One opening of a recorded connection: its requests as they are released.
struct Opening {
    size: usize,
    jobs: RefCell<VecDeque<Job>>,
    notify: Notify,
    /// Its worker waits for its next request, which goes at once when released.
    waiting: Cell<bool>,
}

/// The recorded connections of a run and their openings in progress.
pub(super) struct LaneState {
    lanes: Rc<Lanes>,
    cursor: RefCell<LaneCursor>,
    /// Per lane: the opening that still has requests to come.
    current: RefCell<Vec<Option<Rc<Opening>>>>,
    /// Openings no worker holds yet, in the order they opened.
    opened: RefCell<VecDeque<Rc<Opening>>>,
    notify: Notify,
    idle: Cell<usize>,
    // closed loop: the next lane to open, and how many are left with --once
    next_lane: Cell<usize>,
    once_left: Cell<Option<usize>>,
}

impl LaneState {
    /// Nothing open yet; with `once`, a closed loop opens each lane once.
    pub(super) fn new(lanes: Rc<Lanes>, once: bool) -> Self {
        LaneState {
            cursor: RefCell::new(LaneCursor::new(&lanes)),
            current: RefCell::new(vec![None; lanes.len()]),
            opened: RefCell::new(VecDeque::new()),
            notify: Notify::new(),
            idle: Cell::new(0),
            next_lane: Cell::new(0),
            once_left: Cell::new(once.then_some(lanes.len())),
            lanes,
        }
    }

    /// Releases `job` onto its recorded connection; true when it cannot go at once
    /// (that connection is busy, or no worker is free to open it): a cap wait.
    pub(super) fn release(&self, job: Job) -> bool {
        let p = self.cursor.borrow_mut().place(&self.lanes, job.flow);
        let lane = p.lane as usize;
        let mut current = self.current.borrow_mut();
        let (o, wait) = match (p.first, current[lane].clone()) {
            (false, Some(o)) => {
                let wait = !o.waiting.replace(false);
                (o, wait)
            }
            // the lane opens anew (its first request of this pass)
            _ => {
                let o = Rc::new(Opening {
                    size: self.lanes.flows(lane).len(),
                    jobs: RefCell::new(VecDeque::new()),
                    notify: Notify::new(),
                    waiting: Cell::new(false),
                });
                self.opened.borrow_mut().push_back(o.clone());
                let wait = match self.idle.get() {
                    0 => true,
                    n => {
                        self.idle.set(n - 1);
                        false
                    }
                };
                self.notify.notify_one();
                (o, wait)
            }
        };
        current[lane] = (!p.last).then(|| o.clone());
        o.jobs.borrow_mut().push_back(job);
        o.notify.notify_one();
        wait
    }

    /// Every request was released: wakes the workers waiting for more.
    pub(super) fn finish(&self) {
        self.notify.notify_waiters();
        for o in self.current.borrow().iter().flatten() {
            o.notify.notify_waiters();
        }
    }
}

/// A lane worker: takes the next opening of a recorded connection and sends its
/// requests in order on a connection of its own, closed at the opening's end.
pub(super) async fn lane_worker(sh: Rc<Shared>, closed: bool, all_h2: bool, some_h2: bool) {
    loop {
        // a new connection per opening (and a new h2 connection, one stream at a time)
        let mut link = Link::new(all_h2, some_h2.then(Slot::default), true);
        if closed {
            let Some(lane) = next_closed_lane(&sh) else {
                return;
            };
            for &flow in sh.lanes().lanes.flows(lane) {
                let Some(job) = closed_lane_job(&sh, flow) else {
                    return;
                };
                run_one(&sh, job, &mut link).await;
            }
            continue;
        }
        let Some(o) = next_opening(&sh).await else {
            return;
        };
        for _ in 0..o.size {
            let Some(job) = next_in(&sh, &o).await else {
                break;
            };
            run_one(&sh, job, &mut link).await;
        }
    }
}

async fn next_opening(sh: &Shared) -> Option<Rc<Opening>> {
    let ls = sh.lanes();
    let pop = || ls.opened.borrow_mut().pop_front();
    wait_for(sh, &ls.notify, pop, || ls.idle.set(ls.idle.get() + 1)).await
}

async fn next_in(sh: &Shared, o: &Opening) -> Option<Job> {
    let pop = || o.jobs.borrow_mut().pop_front();
    wait_for(sh, &o.notify, pop, || o.waiting.set(true)).await
}

/// Closed loop: the next recorded connection to replay, cycling through them; each
/// once with `--once`.
fn next_closed_lane(sh: &Shared) -> Option<usize> {
    let ls = sh.lanes();
    match ls.once_left.get() {
        Some(0) => return None,
        Some(n) => ls.once_left.set(Some(n - 1)),
        None if mono_ns() >= sh.closed_end => return None,
        None => {}
    }
    let lane = ls.next_lane.get();
    ls.next_lane.set((lane + 1) % ls.lanes.len());
    Some(lane)
}

/// Closed loop: `flow` is due now, unless the run is over.
fn closed_lane_job(sh: &Shared, flow: usize) -> Option<Job> {
    let over = mono_ns() >= sh.closed_end && sh.lanes().once_left.get().is_none();
    (!over).then(|| closed_job(sh, flow))
}
