//! Per-state memory limit (`--plugin-memory-limit`): the state's allocator is wrapped,
//! and while a plugin's code runs, an allocation that would take the state past the
//! limit is refused, which LuaJIT raises as its "not enough memory" error.
//!
//! mlua's `Lua::set_memory_limit` does not work with LuaJIT (the state is made by
//! `luaL_newstate` with LuaJIT's own allocator). LuaJIT does honour `lua_setallocf`, and
//! every block it takes (objects, strings, table parts, the buffers of `string.rep` or
//! `table.concat`) goes through that function, so wrapping it sees one huge allocation
//! before it happens, which a count of `collectgarbage("count")` every N instructions
//! would only see after it.
//!
//! Refusals are made only while enforcement is on (a hook call or a plugin's top level):
//! the proxy's own allocations in the state (messages, tracebacks) never fail.

use mlua::ffi;
use std::cell::Cell;
use std::os::raw::c_void;

thread_local! {
    /// Set when the allocator refused a block during the current call (one engine runs
    /// on a thread at a time, as for the budget).
    static HIT: Cell<bool> = const { Cell::new(false) };
}

/// The accounting behind the wrapped allocator; lives in a Box the state points to.
struct Acct {
    inner: ffi::lua_Alloc,
    inner_ud: *mut c_void,
    used: Cell<usize>,
    limit: usize,
    enforce: Cell<bool>,
    /// `used` after the last collection the guard ran itself.
    collected_at: Cell<usize>,
    /// Where the count hook last saw plugin code run with over half the limit in use
    /// ("file:line"): the line of an allocation refused inside the VM is lost when the
    /// error unwinds the coroutine, and this is the nearest known.
    near: std::cell::RefCell<String>,
}

unsafe extern "C" fn alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the `Acct` installed with this function; it outlives the wrapping.
    let a = unsafe { &*(ud as *const Acct) };
    // LuaJIT passes osize 0 with a null ptr; shrinking and freeing are never refused.
    let osize = if ptr.is_null() { 0 } else { osize };
    if nsize > osize && a.enforce.get() && a.used.get().saturating_add(nsize - osize) > a.limit {
        HIT.with(|h| h.set(true));
        return std::ptr::null_mut();
    }
    // SAFETY: the same call the state would have made without the wrapper.
    let p = unsafe { (a.inner)(a.inner_ud, ptr, osize, nsize) };
    if !p.is_null() || nsize == 0 {
        a.used.set(a.used.get().saturating_sub(osize) + nsize);
    }
    p
}

/// The accounting of `l`'s state, when the guard is installed on it.
///
/// # Safety
/// `l` must be a live state.
unsafe fn acct_of<'a>(l: *mut ffi::lua_State) -> Option<&'a Acct> {
    let mut ud = std::ptr::null_mut();
    // SAFETY: per the caller.
    let f = unsafe { ffi::lua_getallocf(l, &mut ud) };
    // SAFETY: `ud` belongs to `alloc` when `f` is `alloc`.
    std::ptr::fn_addr_eq(f, alloc as ffi::lua_Alloc).then(|| unsafe { &*(ud as *const Acct) })
}

/// Called from the count hook: once a state's allocations near the limit, a full
/// collection runs, so that garbage not yet collected (LuaJIT collects when the heap
/// doubles) is not counted against a plugin as live memory. At most once per eighth of
/// the limit of growth.
///
/// # Safety
/// `l` must be a live state, inside a hook.
pub(super) unsafe fn relieve(l: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) {
    // SAFETY: per the caller.
    let Some(a) = (unsafe { acct_of(l) }) else {
        return;
    };
    let used = a.used.get();
    if used > a.limit / 2 && a.enforce.get() {
        // SAFETY: inside the hook, with its record.
        if let Some(at) = unsafe { hook_location(l, ar) } {
            let mut n = a.near.borrow_mut();
            n.clear();
            n.push_str(&at);
        }
    }
    if used < a.limit / 4 * 3 || used < a.collected_at.get() + a.limit / 8 {
        return;
    }
    let was = a.enforce.replace(false);
    // SAFETY: a full collection is allowed from a hook; nothing is refused during it.
    unsafe { ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0) };
    a.enforce.set(was);
    a.collected_at.set(a.used.get());
}

/// What a hook or plugin stopped by the limit is reported with (the Lua error itself
/// says only "not enough memory").
pub(super) fn memory_text(limit: usize) -> String {
    format!("plugin memory limit exceeded ({limit} bytes, --plugin-memory-limit)")
}

/// The memory limit of one state; restores the original allocator when dropped.
pub(crate) struct MemGuard {
    state: *mut ffi::lua_State,
    acct: *mut Acct,
}

impl MemGuard {
    /// Wraps the allocator of `state` (the main state of a fresh engine) with a limit of
    /// `limit` bytes; 0 means no limit (nothing is wrapped).
    pub(crate) fn install(state: *mut ffi::lua_State, limit: usize) -> MemGuard {
        if limit == 0 {
            return MemGuard {
                state,
                acct: std::ptr::null_mut(),
            };
        }
        // SAFETY: `state` is live and used on this thread only; the accounting starts at
        // what the state holds now, so frees of older blocks balance.
        unsafe {
            let mut inner_ud = std::ptr::null_mut();
            let inner = ffi::lua_getallocf(state, &mut inner_ud);
            let used = ffi::lua_gc(state, ffi::LUA_GCCOUNT, 0) as usize * 1024
                + ffi::lua_gc(state, ffi::LUA_GCCOUNTB, 0) as usize;
            let acct = Box::into_raw(Box::new(Acct {
                inner,
                inner_ud,
                used: Cell::new(used),
                limit,
                enforce: Cell::new(false),
                collected_at: Cell::new(used),
                near: Default::default(),
            }));
            ffi::lua_setallocf(state, alloc, acct.cast());
            MemGuard { state, acct }
        }
    }

    fn acct(&self) -> Option<&Acct> {
        // SAFETY: a non-null `acct` is the Box made in `install`, freed only in drop.
        unsafe { self.acct.as_ref() }
    }

    /// Turns refusals on (a plugin's code is about to run) or off; on also clears the
    /// hit flag of the previous call.
    #[inline]
    pub(crate) fn enforce(&self, on: bool) {
        if let Some(a) = self.acct() {
            a.enforce.set(on);
            if on {
                HIT.with(|h| h.set(false));
                a.near.borrow_mut().clear();
            }
        }
    }

    /// The limit in bytes (0: none).
    pub(crate) fn limit(&self) -> usize {
        self.acct().map_or(0, |a| a.limit)
    }

    /// The report of a refusal: the limit, and where plugin code was last seen running
    /// near it.
    pub(crate) fn text(&self) -> String {
        let base = memory_text(self.limit());
        match self.acct().map(|a| a.near.borrow().clone()) {
            Some(at) if !at.is_empty() => format!("{at}: {base}"),
            _ => base,
        }
    }

    /// Bytes the state holds now, as its allocator counts them.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.acct().map_or(0, |a| a.used.get())
    }

    /// True when an allocation was refused during the current (or last) call.
    pub(crate) fn hit() -> bool {
        HIT.with(|h| h.get())
    }

    /// After a refusal: a full collection, with nothing refused, so the state gives back
    /// what the failed hook held and the next call starts below the limit.
    pub(crate) fn recover(&self) {
        if let Some(a) = self.acct() {
            a.enforce.set(false);
            // SAFETY: outside any Lua call, on the state's own thread.
            unsafe { ffi::lua_gc(self.state, ffi::LUA_GCCOLLECT, 0) };
            a.collected_at.set(a.used.get());
        }
    }
}

impl Drop for MemGuard {
    fn drop(&mut self) {
        if self.acct.is_null() {
            return;
        }
        // SAFETY: the engine drops its guard before its state (field order), so the
        // state is live; the wrapper only forwarded to `inner`, so blocks taken through
        // it are freed correctly by `inner` from now on.
        unsafe {
            let a = Box::from_raw(self.acct);
            ffi::lua_setallocf(self.state, a.inner, a.inner_ud);
        }
    }
}

/// "file:line" of the Lua function running at a hook call (`ar` is the hook's record).
///
/// # Safety
/// Only inside a hook, with the `ar` the hook was given.
pub(super) unsafe fn hook_location(
    l: *mut ffi::lua_State,
    ar: *mut ffi::lua_Debug,
) -> Option<String> {
    // SAFETY: per the caller; "Sl" fills only fields of `ar` and allocates nothing.
    unsafe {
        if ffi::lua_getinfo(l, c"Sl".as_ptr(), ar) == 0 || (*ar).currentline <= 0 {
            return None;
        }
        let src = std::ffi::CStr::from_ptr((*ar).short_src.as_ptr()).to_string_lossy();
        Some(format!("{src}:{}", (*ar).currentline))
    }
}
