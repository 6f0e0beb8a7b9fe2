//! A worker's coarse timer list: the deadlines of its connections, woken to within a
//! few milliseconds by one timer of the runtime's.
//!
//! A tokio timer per deadline cost a connection that lives for one request about 850
//! user-space instructions more than this list does (callgrind, `benches/instructions.sh
//! --close`): each timer was allocated, inserted in tokio's wheel and removed from it,
//! and keep-alive connections paid a precise clock read for every deadline they moved. luring's deadlines are seconds
//! long (header, idle, upstream, body and send timeouts) and need no millisecond
//! precision, so a worker keeps them here instead: filing one is a push onto a slot's
//! list, moving it later is nothing at all, the clock is the coarse one, and one task
//! per worker sleeps until the next tick that has anything filed. A deadline fires
//! between the instant it names and two ticks ([`TICK_MS`]) after it.
//!
//! Everything is per thread: a worker's connections are its own, so no lock is taken.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The list's resolution, in milliseconds.
pub const TICK_MS: u64 = 8;

/// Slots of the wheel. A deadline further ahead than a round of them (about 2 s)
/// stays in its slot and is passed over until its round comes.
const SLOTS: usize = 256;

/// The monotonic clock in milliseconds at its coarse resolution (a few ms): read in
/// the vDSO without the precise clock's counter read (7 against 35 ns on this
/// project's VM).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// One deadline's place in its thread's list, made when it first waits; dropping it
/// takes it out.
#[derive(Default)]
pub struct Timer {
    key: Cell<Option<usize>>,
}

struct Entry {
    /// The task to wake, kept across firings so a task that waits again on the same
    /// deadline does not clone its waker again.
    waker: Option<Waker>,
    /// The tick of the slot the entry is filed in, if any.
    filed: Option<u64>,
}

struct List {
    entries: slab::Slab<Entry>,
    /// Per slot: (entry, tick it was filed for). A pair whose entry has gone or was
    /// filed again elsewhere is stale and dropped when its slot comes round.
    slots: Vec<Vec<(usize, u64)>>,
    /// Every tick up to this one has been handled.
    done: u64,
    /// Pairs in the slots, stale ones included.
    queued: usize,
    /// The tick the driver sleeps until (`u64::MAX`: until something is filed).
    wake_at: u64,
    /// The driver task, while it sleeps.
    driver: Option<Waker>,
    /// A driver task is alive on this thread's runtime.
    running: bool,
    /// Passes the driver has made (tests read it).
    passes: u64,
}

thread_local! {
    static LIST: RefCell<List> = RefCell::new(List {
        entries: slab::Slab::new(),
        slots: (0..SLOTS).map(|_| Vec::new()).collect(),
        done: now_ms() / TICK_MS,
        queued: 0,
        wake_at: u64::MAX,
        driver: None,
        running: false,
        passes: 0,
    });
}

impl Timer {
    /// Ready once the coarse clock has reached `at_ms`; until then the task is woken
    /// at the latest two ticks after `at_ms` (and may be woken earlier).
    pub fn poll_until(&self, at_ms: u64, cx: &mut Context<'_>) -> Poll<()> {
        LIST.with(|l| {
            let mut l = l.borrow_mut();
            if !l.running {
                l.running = true;
                tokio::task::spawn_local(drive());
            }
            let tick = at_ms.div_ceil(TICK_MS);
            // filed for that tick or an earlier one (a connection's next wait on a
            // deadline moved later): it fires then and the wait looks again, so neither
            // the clock nor the list needs touching now
            if let Some(e) = self.key.get().map(|k| &mut l.entries[k]) {
                if e.filed.is_some_and(|f| f <= tick) {
                    e.set_waker(cx.waker());
                    return Poll::Pending;
                }
            }
            if now_ms() >= at_ms {
                return Poll::Ready(());
            }
            let key = match self.key.get() {
                Some(k) => k,
                None => {
                    let k = l.entries.insert(Entry {
                        waker: None,
                        filed: None,
                    });
                    self.key.set(Some(k));
                    k
                }
            };
            let tick = tick.max(l.done + 1);
            let e = &mut l.entries[key];
            e.set_waker(cx.waker());
            e.filed = Some(tick);
            l.slots[tick as usize % SLOTS].push((key, tick));
            l.queued += 1;
            // due before the driver would wake: it plans again
            if tick < l.wake_at {
                l.wake_at = tick;
                if let Some(d) = l.driver.take() {
                    d.wake();
                }
            }
            Poll::Pending
        })
    }
}

impl Entry {
    fn set_waker(&mut self, w: &Waker) {
        if !self.waker.as_ref().is_some_and(|old| old.will_wake(w)) {
            self.waker = Some(w.clone());
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(k) = self.key.get() {
            // the thread's list is gone only while the thread ends, and everything with it
            let _ = LIST.try_with(|l| l.borrow_mut().entries.remove(k));
        }
    }
}

impl List {
    /// Handles every tick up to `now`: wakes the entries filed for them, drops stale
    /// pairs, keeps pairs of later rounds.
    fn advance(&mut self, now: u64, wake: &mut Vec<Waker>) {
        self.passes += 1;
        // after a stall longer than a round every slot is looked at once
        let from = (self.done + 1).max(now.saturating_sub(SLOTS as u64 - 1));
        for t in from..=now {
            let i = t as usize % SLOTS;
            // taken out and put back: the slot keeps its capacity for the next round
            let mut slot = std::mem::take(&mut self.slots[i]);
            let taken = slot.len();
            slot.retain(|&(key, tick)| {
                let Some(e) = self.entries.get_mut(key) else {
                    return false;
                };
                if e.filed != Some(tick) {
                    return false;
                }
                if tick > now {
                    return true;
                }
                e.filed = None;
                if let Some(w) = &e.waker {
                    wake.push(w.clone());
                }
                false
            });
            self.queued -= taken - slot.len();
            self.slots[i] = slot;
        }
        self.done = self.done.max(now);
    }

    /// The next tick whose slot holds anything (which may be only pairs of a later
    /// round, or stale ones), None when nothing is filed.
    fn next_busy(&self) -> Option<u64> {
        if self.queued == 0 {
            return None;
        }
        (self.done + 1..=self.done + SLOTS as u64)
            .find(|&t| !self.slots[t as usize % SLOTS].is_empty())
    }
}

/// The thread's driver: sleeps until the next tick that has anything filed (or until
/// something is filed for an earlier one), and wakes what has come due.
async fn drive() {
    /// Marks the list driverless when the runtime drops this task (a worker's runtime
    /// ends; another may start on the thread later, as tests do).
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = LIST.try_with(|l| {
                let mut l = l.borrow_mut();
                l.running = false;
                l.driver = None;
                l.wake_at = u64::MAX;
            });
        }
    }
    let _running = Running;
    let mut wake = Vec::new();
    loop {
        let plan = LIST.with(|l| {
            let mut l = l.borrow_mut();
            l.wake_at = l.next_busy().unwrap_or(u64::MAX);
            l.wake_at
        });
        let ms = (plan.saturating_mul(TICK_MS)).saturating_sub(now_ms());
        let sleep = (plan != u64::MAX).then(|| tokio::time::sleep(Duration::from_millis(ms)));
        let mut sleep = std::pin::pin!(sleep);
        std::future::poll_fn(|cx| {
            if let Some(s) = sleep.as_mut().as_pin_mut() {
                if s.poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            LIST.with(|l| {
                let mut l = l.borrow_mut();
                if l.wake_at < plan {
                    return Poll::Ready(());
                }
                l.driver = Some(cx.waker().clone());
                Poll::Pending
            })
        })
        .await;
        LIST.with(|l| l.borrow_mut().advance(now_ms() / TICK_MS, &mut wake));
        for w in wake.drain(..) {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes() -> u64 {
        LIST.with(|l| l.borrow().passes)
    }

    #[test]
    fn the_driver_sleeps_until_the_next_filed_tick() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let timer = Timer::default();
            let far = now_ms() + 1000;
            // filed for a second from now; the test's own task waits beside it
            let mut first = true;
            std::future::poll_fn(|cx| {
                if first {
                    first = false;
                    assert!(timer.poll_until(far, cx).is_pending());
                }
                Poll::Ready(())
            })
            .await;
            let before = passes();
            tokio::time::sleep(Duration::from_millis(400)).await;
            // ticking every 8 ms would have made about 50 passes
            let made = passes() - before;
            assert!(made <= 2, "{made} passes while nothing was due");
        });
    }
}
