//! A future kept in a block of memory the worker thread recycles, for what every
//! request awaits: awaited inline, it would make the connection's task as large as
//! itself for the connection's whole life, idle time included; boxed anew per request,
//! it would cost an allocation of several KiB on every request (docs/perf.md, "Idle
//! connections"). A recycled block is taken from a free list and given back when the
//! future ends, so an idle connection holds none and the hot path allocates nothing.
//! An h2 stream's task is made in one too: boxing its finished future to spawn it
//! copied all of it.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Size of a block: the largest future put in one must fit (checked at compile time).
const BLOCK: usize = 16 * 1024;
/// Alignment of a block.
const ALIGN: usize = 64;
/// Free blocks a thread keeps: as many as requests it usually has in flight at once;
/// beyond that they go back to the allocator.
const KEEP: usize = 64;

/// A thread's free blocks, given back to the allocator when the thread ends.
struct FreeBlocks(Vec<NonNull<u8>>);

impl Drop for FreeBlocks {
    fn drop(&mut self) {
        for b in self.0.drain(..) {
            // SAFETY: every block in the list was allocated with `layout()`.
            unsafe { dealloc(b.as_ptr(), layout()) };
        }
    }
}

thread_local! {
    static FREE: RefCell<FreeBlocks> = const { RefCell::new(FreeBlocks(Vec::new())) };
}

fn layout() -> Layout {
    // BLOCK and ALIGN are constants that make a valid layout
    Layout::from_size_align(BLOCK, ALIGN).unwrap_or_else(|_| unreachable!())
}

fn take_block() -> NonNull<u8> {
    if let Some(b) = FREE.with(|f| f.borrow_mut().0.pop()) {
        return b;
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(layout()) };
    NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout()))
}

fn give_back(b: NonNull<u8>) {
    let kept = FREE
        .try_with(|f| {
            let mut f = f.borrow_mut();
            if f.0.len() < KEEP {
                f.0.push(b);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `b` was allocated with `layout()` and nothing refers to it any more.
        unsafe { dealloc(b.as_ptr(), layout()) };
    }
}

/// A future running in a recycled block; its block goes back when it is dropped.
pub struct Recycled<F> {
    fut: NonNull<F>,
}

impl<F: Future> Recycled<F> {
    /// Makes the future with `make` straight into a block of the thread's free list (a
    /// new one when it is empty). Taking a maker rather than the future lets the
    /// compiler build it in place: a future passed by value is copied whole (all of
    /// its size, though a fresh one holds only its arguments).
    #[inline(always)]
    pub fn new(make: impl FnOnce() -> F) -> Recycled<F> {
        const {
            assert!(
                std::mem::size_of::<F>() <= BLOCK && std::mem::align_of::<F>() <= ALIGN,
                "the future outgrew recycled::BLOCK"
            )
        };
        let p = take_block().cast::<F>();
        // SAFETY: the block is large and aligned enough for F (checked above) and
        // nothing else uses it.
        unsafe { p.as_ptr().write(make()) };
        Recycled { fut: p }
    }
}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays at this address until `drop` (it is never moved out
        // of its block), and only this handle reaches it.
        unsafe { Pin::new_unchecked(&mut *self.fut.as_ptr()) }.poll(cx)
    }
}

impl<F> Drop for Recycled<F> {
    fn drop(&mut self) {
        // SAFETY: the block holds a live F written by `new`, dropped only here.
        unsafe { std::ptr::drop_in_place(self.fut.as_ptr()) };
        give_back(self.fut.cast());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn runs_the_future_and_reuses_its_block() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = rt.block_on(async {
            let f = Recycled::new(|| async { 7 });
            let at = f.fut.cast::<u8>();
            assert_eq!(f.await, 7);
            at
        });
        let second = Recycled::new(|| async { 8 });
        assert_eq!(second.fut.cast::<u8>(), first);
        assert_eq!(rt.block_on(second), 8);
    }

    #[test]
    fn dropping_an_unfinished_future_drops_what_it_holds() {
        let held = Rc::new(());
        let h = held.clone();
        let f = Recycled::new(|| async move {
            std::future::pending::<()>().await;
            drop(h);
        });
        assert_eq!(Rc::strong_count(&held), 2);
        drop(f);
        assert_eq!(Rc::strong_count(&held), 1);
    }
}
