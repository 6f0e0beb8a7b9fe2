//! Runaway-hook budget: an instruction-count hook, installed once per state, compares
//! the running call's deadline with the clock every 1000 VM instructions.
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
    /// never re-entered, so one slot per thread is enough).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set when the hook raised the budget error for the current call.
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
}

static BUDGET_MSG: &[u8] = b"hook exceeded its time budget\0";

unsafe extern "C-unwind" fn count_hook(l: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    if !DEADLINE.with(|d| d.get().is_some_and(|d| Instant::now() >= d)) {
        return;
    }
    INTERRUPTED.with(|i| i.set(true));
    // No Rust value with a destructor is alive here: lua_error unwinds this frame.
    ffi::lua_pushstring(l, BUDGET_MSG.as_ptr().cast());
    ffi::lua_error(l);
}

/// The per-state budget; calls are bracketed by `enter` / `leave`.
pub(crate) struct Budget;

impl Budget {
    /// Installs the count hook on `state`'s global state (LuaJIT hooks are global, so
    /// every coroutine inherits it).
    pub(crate) fn install(state: *mut ffi::lua_State) -> Budget {
        // SAFETY: `state` is the engine's live main state, used on its own thread.
        unsafe { ffi::lua_sethook(state, Some(count_hook), ffi::LUA_MASKCOUNT, CHECK_EVERY) };
        Budget
    }

    /// Marks the start of a Lua call that may run for `budget`.
    #[inline]
    pub(crate) fn enter(&self, budget: Duration) {
        DEADLINE.with(|d| d.set(Some(Instant::now() + budget)));
        INTERRUPTED.with(|i| i.set(false));
    }

    /// Marks the end of the call.
    #[inline]
    pub(crate) fn leave(&self) {
        DEADLINE.with(|d| d.set(None));
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
