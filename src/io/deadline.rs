//! A timer for deadlines that move on every request.
//!
//! A keep-alive connection sets a new deadline for every head it reads. With a fresh
//! `tokio::time::timeout` per read, each one registers an entry in the timer wheel and
//! removes it again, which took about 8% of the proxy's user-space instructions per
//! request. A [`Deadline`] is instead a time in a `Cell` and a place in the worker's
//! coarse timer list (`timer_list`): moving the deadline later is a write to the cell;
//! the entry, still filed for the older and earlier instant, fires there, and the
//! waiting operation sees the deadline has moved and files it again once.
//!
//! The entry is made the first time a limited operation has to wait with a deadline
//! set: a connection makes three deadlines, and one that closes after a single
//! exchange may never wait on some of them.

use super::timer_list::{self, Timer};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Far enough ahead to mean "no deadline" (a year, in milliseconds).
const NEVER_MS: u64 = 86400 * 365 * 1000;

/// One connection's (or one direction's) deadline: see the module docs.
#[derive(Default)]
pub struct Deadline {
    /// None until armed: operations are not limited. Milliseconds of
    /// [`timer_list::now_ms`]'s clock.
    at: Cell<Option<u64>>,
    timer: Timer,
}

/// The deadline passed before the operation completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

impl Deadline {
    /// A deadline that is not set (operations are not limited until [`Deadline::arm`]).
    pub fn new() -> Deadline {
        Deadline::default()
    }

    /// Sets the deadline to `after` from now.
    pub fn arm(&self, after: Duration) {
        let after = u64::try_from(after.as_millis()).unwrap_or(NEVER_MS);
        self.at
            .set(Some(timer_list::now_ms() + after.min(NEVER_MS)));
    }

    /// Sets the deadline to `at`.
    pub fn arm_at(&self, at: Instant) {
        self.arm(at.saturating_duration_since(Instant::now()));
    }

    /// Runs `fut` until it completes or the deadline passes. On [`Expired`] the future
    /// is dropped: an io_uring operation inside it keeps running until its socket is
    /// shut down (see the `io` module docs), which callers do.
    pub fn limit<F: Future>(&self, fut: F) -> Limited<'_, F> {
        Limited {
            fut,
            deadline: self,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Deadline::limit`]. A struct, not an async fn: an async fn that
    /// pins its argument holds the wrapped future twice, and every read a connection
    /// waits in (every idle keep-alive connection) would carry that size.
    pub struct Limited<'a, F> {
        #[pin]
        fut: F,
        deadline: &'a Deadline,
    }
}

impl<F: Future> Future for Limited<'_, F> {
    type Output = Result<F::Output, Expired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let d: &Deadline = this.deadline;
        match d.at.get() {
            Some(at) if d.timer.poll_until(at, cx).is_ready() => Poll::Ready(Err(Expired)),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` as a worker does: a current-thread runtime with a local task set (the
    /// timer list's driver is a local task). Real time: the list reads the coarse
    /// clock, which tokio's paused clock does not move.
    fn run<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    /// What "at the deadline" means for a list of coarse ticks: not before it (less
    /// the coarse clock's lag, a few ms), and within a generous bound after it.
    fn assert_fired_near(elapsed: Duration, deadline: Duration) {
        let early = Duration::from_millis(12);
        // generous: a loaded CI machine may run the woken task late
        let late = Duration::from_millis(1000);
        assert!(
            elapsed + early >= deadline && elapsed <= deadline + late,
            "fired after {elapsed:?}, deadline {deadline:?}"
        );
    }

    #[test]
    fn unset_deadline_does_not_limit() {
        run(async {
            let d = Deadline::new();
            let r = d
                .limit(tokio::time::sleep(Duration::from_millis(100)))
                .await;
            assert_eq!(r, Ok(()));
        });
    }

    #[test]
    fn expires_at_the_deadline() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_millis(150));
            let start = Instant::now();
            let r = d.limit(std::future::pending::<()>()).await;
            assert_eq!(r, Err(Expired));
            assert_fired_near(start.elapsed(), Duration::from_millis(150));
        });
    }

    #[test]
    fn a_deadline_moved_later_is_followed() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_millis(100));
            // filed for 100 ms by a wait that ended in time
            let r = d.limit(tokio::time::sleep(Duration::from_millis(10))).await;
            assert_eq!(r, Ok(()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            // the entry fires at 100 ms, finds the deadline at 310 ms and waits on
            d.arm(Duration::from_millis(250));
            let start = Instant::now();
            let r = d.limit(std::future::pending::<()>()).await;
            assert_eq!(r, Err(Expired));
            assert_fired_near(start.elapsed(), Duration::from_millis(250));
        });
    }

    #[test]
    fn a_deadline_moved_earlier_fires_early() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_secs(60));
            let r = d.limit(tokio::time::sleep(Duration::from_millis(10))).await;
            assert_eq!(r, Ok(()));
            d.arm(Duration::from_millis(100));
            let start = Instant::now();
            let r = d.limit(std::future::pending::<()>()).await;
            assert_eq!(r, Err(Expired));
            assert_fired_near(start.elapsed(), Duration::from_millis(100));
        });
    }

    #[test]
    fn deadlines_further_than_a_round_of_the_wheel_wait_their_round() {
        run(async {
            // 2.5 s: beyond the wheel's 256 ticks of 8 ms, so its slot comes round once
            // before it is due
            let d = Deadline::new();
            d.arm(Duration::from_millis(2500));
            let start = Instant::now();
            let r = d.limit(std::future::pending::<()>()).await;
            assert_eq!(r, Err(Expired));
            assert_fired_near(start.elapsed(), Duration::from_millis(2500));
        });
    }

    #[test]
    fn many_deadlines_fire_each_at_its_time_beside_a_dropped_one() {
        run(async {
            let gone = Deadline::new();
            gone.arm(Duration::from_millis(40));
            let r = gone
                .limit(tokio::time::sleep(Duration::from_millis(1)))
                .await;
            assert_eq!(r, Ok(()));
            drop(gone);
            let start = Instant::now();
            let waits = (1..=20u64).map(|i| async move {
                let d = Deadline::new();
                d.arm(Duration::from_millis(10 * i));
                let r = d.limit(std::future::pending::<()>()).await;
                (i, r, start.elapsed())
            });
            for (i, r, elapsed) in futures_join_all(waits).await {
                assert_eq!(r, Err(Expired));
                assert_fired_near(elapsed, Duration::from_millis(10 * i));
            }
        });
    }

    /// Runs each future as a task of its own and collects their outputs in order.
    async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let handles: Vec<_> = fs.map(tokio::task::spawn_local).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    }

    #[test]
    fn work_done_in_time_is_returned() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_secs(5));
            let r = d
                .limit(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    7
                })
                .await;
            assert_eq!(r, Ok(7));
        });
    }

    #[test]
    fn a_new_runtime_on_the_thread_gets_a_new_driver() {
        for _ in 0..2 {
            run(async {
                let d = Deadline::new();
                d.arm(Duration::from_millis(30));
                let r = d.limit(std::future::pending::<()>()).await;
                assert_eq!(r, Err(Expired));
            });
        }
    }
}
