//! Runaway-hook budget: a watchdog thread arms an instruction-count hook only when a
//! call overruns, so normal calls run at full interpreter speed with no hook at all.
//!
//! LuaJIT calls count hooks only from the interpreter (never from compiled traces), so
//! the engine also keeps the JIT off; see docs/rfc/001-plugin-engine.md section 6.

use mlua::ffi;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Instructions between two checks once the hook is armed.
const ARMED_EVERY: i32 = 1000;

thread_local! {
    /// Deadline of the Lua call running on this thread (engines are per thread).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set when the hook raised the budget error for the current call.
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
}

static BUDGET_MSG: &[u8] = b"hook exceeded its time budget\0";

unsafe extern "C-unwind" fn count_hook(l: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    let expired = DEADLINE.with(|d| d.get().is_some_and(|d| Instant::now() >= d));
    if !expired {
        // Armed for a call that has since finished: disarm and run on at full speed.
        ffi::lua_sethook(l, None, 0, 0);
        return;
    }
    INTERRUPTED.with(|i| i.set(true));
    // Stays armed, so a plugin that catches the error is interrupted again.
    ffi::lua_pushstring(l, BUDGET_MSG.as_ptr().cast());
    ffi::lua_error(l);
}

struct Shared {
    /// The state's main `lua_State`, 0 once the engine is gone; the lock orders the
    /// watchdog's `lua_sethook` before `lua_close`.
    state: Mutex<usize>,
    /// Nanoseconds since `base` when the running call started, 0 when idle.
    started: AtomicU64,
    /// Budget of the running call in nanoseconds.
    budget: AtomicU64,
    armed: AtomicBool,
    stop: AtomicBool,
    base: Instant,
}

/// One engine's watchdog; dropping it stops the thread.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching `state` (the main lua_State of the engine's Lua).
    pub(crate) fn new(state: *mut ffi::lua_State, tick: Duration) -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(state as usize),
            started: AtomicU64::new(0),
            budget: AtomicU64::new(u64::MAX),
            armed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            base: Instant::now(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("luring-lua-watchdog".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(tick);
                    let started = s.started.load(Ordering::Acquire);
                    // Re-armed on every tick while the call overruns: the hook may have
                    // disarmed itself for an earlier, already finished call.
                    if started == 0 {
                        continue;
                    }
                    let now = s.base.elapsed().as_nanos() as u64;
                    if now.saturating_sub(started) < s.budget.load(Ordering::Acquire) {
                        continue;
                    }
                    let guard = s.state.lock().unwrap_or_else(|e| e.into_inner());
                    if *guard != 0 {
                        s.armed.store(true, Ordering::Release);
                        // SAFETY: the state is alive while the lock is held (Drop clears it
                        // first). lua_sethook only stores the hook and rewrites dispatch
                        // table slots with aligned word stores; LuaJIT's own profiler
                        // does the same asynchronously from a signal handler.
                        unsafe {
                            ffi::lua_sethook(
                                *guard as *mut ffi::lua_State,
                                Some(count_hook),
                                ffi::LUA_MASKCOUNT,
                                ARMED_EVERY,
                            )
                        };
                    }
                }
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks the start of a Lua call that may run for `budget`.
    #[inline]
    pub(crate) fn enter(&self, budget: Duration) {
        // One clock read per call: it is a visible share of a no-op hook's cost.
        let now = Instant::now();
        DEADLINE.with(|d| d.set(Some(now + budget)));
        INTERRUPTED.with(|i| i.set(false));
        let s = &self.shared;
        s.budget.store(budget.as_nanos() as u64, Ordering::Relaxed);
        let started = now.saturating_duration_since(s.base).as_nanos() as u64;
        s.started.store(started.max(1), Ordering::Release);
    }

    /// Marks the end of the call; disarms the hook if the watchdog armed it.
    #[inline]
    pub(crate) fn leave(&self, state: *mut ffi::lua_State) {
        self.shared.started.store(0, Ordering::Release);
        DEADLINE.with(|d| d.set(None));
        if self.shared.armed.swap(false, Ordering::AcqRel) {
            // SAFETY: called on the engine's own thread, outside any Lua call.
            unsafe { ffi::lua_sethook(state, None, 0, 0) };
        }
    }

    /// True when the current call's deadline has passed or the hook fired.
    pub(crate) fn expired() -> bool {
        INTERRUPTED.with(|i| i.get())
            || DEADLINE.with(|d| d.get().is_some_and(|d| Instant::now() >= d))
    }

    /// True when the hook interrupted the current (or last) call.
    pub(crate) fn interrupted() -> bool {
        INTERRUPTED.with(|i| i.get())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
