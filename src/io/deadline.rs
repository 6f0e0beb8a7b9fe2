//! A timer for deadlines that move on every request.
//!
//! A keep-alive connection sets a new deadline for every head it reads. With a fresh
//! `tokio::time::timeout` per read, each one registers an entry in the timer wheel and
//! removes it again, which took about 8% of the proxy's user-space instructions per
//! request. A [`Deadline`] keeps one timer per connection instead: moving the deadline
//! later is a write to a `Cell`; the timer, still set for the older and earlier instant,
//! wakes there, sees the deadline has moved, and re-arms itself once. Only a deadline
//! moved earlier touches the wheel at once.
//!
//! The timer is made the first time a limited operation has to wait with a deadline
//! set: a connection makes three deadlines, and one that closes after a single
//! exchange may never wait on some of them (an allocation and a clock read saved
//! each, about 700 instructions).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Far enough ahead to mean "no deadline", near enough not to overflow `Instant`.
const NEVER: Duration = Duration::from_secs(86400 * 365);

/// One connection's (or one direction's) deadline: see the module docs.
#[derive(Default)]
pub struct Deadline {
    /// None until armed: operations are not limited.
    at: Cell<Option<Instant>>,
    /// None until an operation waits with the deadline set.
    timer: RefCell<Option<Pin<Box<Sleep>>>>,
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
        self.arm_at(Instant::now() + after.min(NEVER));
    }

    /// Sets the deadline to `at`.
    pub fn arm_at(&self, at: Instant) {
        self.at.set(Some(at));
        if let Some(timer) = self.timer.borrow_mut().as_mut() {
            if at < timer.deadline() {
                timer.as_mut().reset(at);
            }
        }
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
        let Some(at) = d.at.get() else {
            return Poll::Pending;
        };
        let mut timer = d.timer.borrow_mut();
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let at = d.at.get().unwrap_or(at);
            if timer.deadline() >= at {
                return Poll::Ready(Err(Expired));
            }
            // the deadline moved later since the timer was set: follow it
            timer.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn unset_deadline_does_not_limit() {
        run(async {
            let d = Deadline::new();
            let r = d.limit(tokio::time::sleep(Duration::from_secs(3600))).await;
            assert_eq!(r, Ok(()));
        });
    }

    #[test]
    fn expires_at_the_deadline() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_secs(5));
            let start = Instant::now();
            let r = d.limit(std::future::pending::<()>()).await;
            assert_eq!(r, Err(Expired));
            assert_eq!(start.elapsed(), Duration::from_secs(5));
        });
    }

    #[test]
    fn a_deadline_moved_later_is_followed() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_secs(5));
            // the timer fires at 5 s, finds the deadline at 13 s and waits on
            tokio::time::sleep(Duration::from_secs(3)).await;
            d.arm(Duration::from_secs(10));
            let start = Instant::now();
            let r = d.limit(std::future::pending::<()>()).await;
            assert_eq!(r, Err(Expired));
            assert_eq!(start.elapsed(), Duration::from_secs(10));
        });
    }

    #[test]
    fn a_deadline_moved_earlier_fires_early() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_secs(60));
            d.arm(Duration::from_secs(2));
            let start = Instant::now();
            let r = d.limit(std::future::pending::<()>()).await;
            assert_eq!(r, Err(Expired));
            assert_eq!(start.elapsed(), Duration::from_secs(2));
        });
    }

    #[test]
    fn work_done_in_time_is_returned() {
        run(async {
            let d = Deadline::new();
            d.arm(Duration::from_secs(5));
            let r = d
                .limit(async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    7
                })
                .await;
            assert_eq!(r, Ok(7));
        });
    }
}
