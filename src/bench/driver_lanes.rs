//! `--conn-mode recorded`: the requests of each recorded client connection go in their
//! order over one connection of their own, opened where the recording opened one and
//! closed after its last request (lanes.rs says which, sans-IO). Each of the
//! `--connections` lane workers holds one such connection at a time, so that flag caps
//! the recorded connections open at once.
//!
//! A released request whose connection is busy with the request before it, or whose
//! connection no worker is free to open, waits: the wait is in its corrected latency
//! and counted as a cap wait, as a full pool's is.

use super::client_h2::Slot;
use super::clock::mono_ns;
use super::driver::{closed_job, run_one, wait_for, Job, Link, Shared};
use super::lanes::{LaneCursor, Lanes};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use tokio::sync::Notify;

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
