//! Runaway-hook budget: an instruction-count hook, installed once per state, compares
//! the running call's deadline with the clock every 1000 VM instructions.
//!
//! The clock is not read when a call starts: the first count-hook call of a call reads
//! it and fixes the deadline then. Most hooks finish in fewer than 1000 instructions and
//! so never read the clock; a runaway one is stopped after its budget plus at most 2000
//! instructions (the first 1000 before the clock starts, up to 1000 after the deadline).
//!
//! LuaJIT calls count hooks only from the interpreter (never from compiled traces), so
//! the engine also keeps the JIT off; see docs/rfc/001-plugin-engine.md section 6.

use mlua::ffi;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Instructions between two deadline checks.
const CHECK_EVERY: i32 = 1000;

thread_local! {
    /// Deadline of the Lua call running on this thread (engines are per thread and
    /// never re-entered, so one slot per thread is enough); None until the count hook
    /// first runs during the call (see `ARMED`).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Budget of the running call, turned into `DEADLINE` by the first count-hook call.
    static ARMED: Cell<Option<Duration>> = const { Cell::new(None) };
    /// Set when the hook raised the budget error for the current call.
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
    /// Error to raise at the next VM instruction (see `Budget::fail_next`).
    static FAIL: Cell<Option<String>> = const { Cell::new(None) };
    static FAIL_SET: Cell<bool> = const { Cell::new(false) };
}

static BUDGET_MSG: &[u8] = b"hook exceeded its time budget\0";

unsafe extern "C-unwind" fn count_hook(l: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) {
    if FAIL_SET.with(|f| f.get()) {
        FAIL_SET.with(|f| f.set(false));
        ffi::lua_sethook(l, Some(count_hook), ffi::LUA_MASKCOUNT, CHECK_EVERY);
        if let Some(m) = FAIL.with(|f| f.take()) {
            ffi::lua_pushlstring(l, m.as_ptr().cast(), m.len());
            drop(m);
            ffi::lua_error(l);
        }
    }
    super::memory::relieve(l, ar);
    let now = Instant::now();
    let past = DEADLINE.with(|d| match d.get() {
        Some(d) => now >= d,
        None => {
            // first check of this call: the budget counts from here
            if let Some(b) = ARMED.with(|a| a.get()) {
                d.set(Some(now + b));
            }
            false
        }
    });
    if !past {
        return;
    }
    INTERRUPTED.with(|i| i.set(true));
    // The location goes into the message: once the error has unwound the coroutine, its
    // traceback no longer knows the line of the frame that was running.
    match super::memory::hook_location(l, ar) {
        Some(at) => {
            let m = format!("{at}: hook exceeded its time budget");
            ffi::lua_pushlstring(l, m.as_ptr().cast(), m.len());
        }
        None => {
            ffi::lua_pushstring(l, BUDGET_MSG.as_ptr().cast());
        }
    }
    // No Rust value with a destructor is alive here: lua_error unwinds this frame.
    ffi::lua_error(l);
}

/// The per-state budget; calls are bracketed by `enter` / `leave`.
pub(crate) struct Budget {
    state: *mut ffi::lua_State,
}

impl Budget {
    /// Installs the count hook on `state`'s global state (LuaJIT hooks are global, so
    /// every coroutine inherits it).
    pub(crate) fn install(state: *mut ffi::lua_State) -> Budget {
        // SAFETY: `state` is the engine's live main state, used on its own thread.
        unsafe { ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, CHECK_EVERY) };
        Budget { state }
    }

    /// Marks the start of a Lua call that may run for `budget` (counted from the first
    /// count-hook call, so a short call never reads the clock).
    #[inline]
    pub(crate) fn enter(&self, budget: Duration) {
        ARMED.with(|a| a.set(Some(budget)));
        DEADLINE.with(|d| d.set(None));
        INTERRUPTED.with(|i| i.set(false));
    }

    /// Marks the end of the call.
    #[inline]
    pub(crate) fn leave(&self) {
        ARMED.with(|a| a.set(None));
        DEADLINE.with(|d| d.set(None));
        if FAIL_SET.with(|f| f.get()) {
            FAIL_SET.with(|f| f.set(false));
            FAIL.with(|f| f.take());
            // SAFETY: as in `install`.
            unsafe {
                ffi::lua_sethook(
                    self.state,
                    Some(count_hook),
                    ffi::LUA_MASKCOUNT,
                    CHECK_EVERY,
                )
            };
        }
    }

    /// Makes the next VM instruction raise `msg`: how a getter that yielded for a body
    /// raises its error once resumed (a C frame resumes as a plain return, so the error
    /// cannot come from the getter itself). Costs one extra hook call.
    pub(crate) fn fail_next(&self, msg: String) {
        let state = self.state;
        FAIL.with(|f| f.set(Some(msg)));
        FAIL_SET.with(|f| f.set(true));
        // SAFETY: the engine's own state, on its thread; hooks are per global state.
        unsafe { ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, 1) };
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

    /// Keeps `interrupted` true across a later call (the error text of an interrupted
    /// hook is made by a call of its own).
    pub(crate) fn keep_interrupted(was: bool) {
        if was {
            INTERRUPTED.with(|i| i.set(true));
        }
    }
}
