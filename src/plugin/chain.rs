//! Chain running: one hook chain for one event and phase, each hook on a pooled
//! coroutine, its result read as an action, forbidden actions demoted and failures
//! handled by the hook's on_error. This is the hot path of every hooked message.

use super::budget::Budget;
use super::io::{Feed, IoRequest, WaitCtx};
use super::memory::MemGuard;
use super::msg::{Pending, SlotId};
use super::reply::{build_grpc, build_response};
use super::surface::{self, Event, Row};
use super::{describe, Engine, EngineStats, HookEntry, OnError, Step};
use mlua::{ffi, Table, Thread, Value};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;

/// Idle trampoline coroutines kept for reuse.
const POOL_MAX: usize = 16;

/// A hook's result as the dispatcher reads it (tokens compared by identity).
enum Act {
    Continue,
    Drop,
    Respond(Option<Table>),
    RespondGrpc(Option<Table>),
    Unknown,
}

impl Act {
    fn bit(&self) -> u8 {
        match self {
            Act::Continue | Act::Unknown => surface::A_CONTINUE,
            Act::Drop => surface::A_DROP,
            Act::Respond(_) | Act::RespondGrpc(_) => surface::A_RESPOND,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Act::Continue => "CONTINUE",
            Act::Drop => "DROP",
            Act::Respond(_) => "RESPOND",
            Act::RespondGrpc(_) => "RESPOND_GRPC",
            Act::Unknown => "unknown value",
        }
    }
}

/// How a chain run ended: done, or suspended at hook `.0` waiting for a body (`.2`
/// None) or for I/O.
pub(super) enum Outcome {
    Done(Step),
    Suspend(usize, Thread, Option<IoRequest>),
}

/// What a chain passes as `msg`.
#[derive(Clone, Copy)]
pub(super) enum Arg<'a> {
    Slot(SlotId),
    Val(&'a Value),
    Frozen(&'a Table),
    /// A frozen dict holding tables: those are copied on each read (`Engine::frozen`).
    FrozenDeep(&'a Table),
}

impl Engine {
    /// Updates the counters (a `Cell`, so hooks running under `&self` can count).
    fn bump(&self, f: impl FnOnce(&mut EngineStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Classifies a finished hook's first result, at index 1 of `co` (if any).
    ///
    /// # Safety
    /// `co` must be a finished coroutine of this engine's state.
    unsafe fn classify(&self, co: *mut ffi::lua_State) -> Act {
        if ffi::lua_gettop(co) < 1 {
            return Act::Continue;
        }
        match ffi::lua_type(co, 1) {
            ffi::LUA_TNIL => return Act::Continue,
            ffi::LUA_TTABLE => {}
            _ => return Act::Unknown,
        }
        let p = ffi::lua_topointer(co, 1);
        if p == self.tok.cont {
            return Act::Continue;
        }
        if p == self.tok.drop {
            return Act::Drop;
        }
        if p == self.tok.respond {
            return Act::Respond(None);
        }
        if p == self.tok.grpc {
            return Act::RespondGrpc(None);
        }
        if ffi::lua_getmetatable(co, 1) == 0 {
            return Act::Unknown;
        }
        let m = ffi::lua_topointer(co, -1);
        ffi::lua_pop(co, 1);
        let grpc = if m == self.tok.respond_mt {
            false
        } else if m == self.tok.grpc_mt {
            true
        } else {
            return Act::Unknown;
        };
        let t = match self.take_value(co, 1) {
            Value::Table(t) => t,
            _ => return Act::Unknown,
        };
        if grpc {
            Act::RespondGrpc(Some(t))
        } else {
            Act::Respond(Some(t))
        }
    }

    /// Copies value `idx` of coroutine `co` out as an mlua value (cold paths only).
    ///
    /// # Safety
    /// `co` must be a thread of this engine's state, not running.
    pub(super) unsafe fn take_value(&self, co: *mut ffi::lua_State, idx: c_int) -> Value {
        self.lua.exec_raw_lua(|raw| {
            let l = raw.state();
            if ffi::lua_checkstack(l, 2) == 0 {
                return Value::Nil;
            }
            ffi::lua_pushvalue(co, idx);
            ffi::lua_xmove(co, l, 1);
            raw.pop_value()
        })
    }

    /// Counts a forbidden action and warns once per (hook, action): a hook runs per
    /// message, and a log line per message would flood the log.
    fn demote(&self, entry: &HookEntry, ev: Event, act: &Act) {
        self.bump(|s| s.demotions += 1);
        crate::metrics::inc(&self.hook_metrics[entry.info].demotions);
        if self.warned.borrow_mut().insert((
            entry.info,
            act.bit() | ((matches!(act, Act::Unknown) as u8) << 4),
        )) {
            let row = ev.row();
            tracing::warn!(
                target: "luring::plugin",
                plugin = %entry.plugin,
                hook = %self.hooks[entry.info].name,
                action = act.name(),
                "{}.{} does not allow this action; demoted to CONTINUE (logged once)",
                row.protocol,
                row.event_name
            );
        }
    }

    /// Counts and logs a failed hook; what the chain does next is the caller's.
    fn hook_error(&self, entry: &HookEntry, msg: &str) {
        self.bump(|s| s.errors += 1);
        let m = &self.hook_metrics[entry.info];
        crate::metrics::inc(&m.errors);
        if Budget::interrupted() {
            self.bump(|s| s.budget_interrupts += 1);
            crate::metrics::inc(&m.budget_interrupts);
        }
        if MemGuard::hit() {
            self.bump(|s| s.memory_interrupts += 1);
            crate::metrics::inc(&m.memory_interrupts);
        }
        tracing::error!(
            target: "luring::plugin",
            plugin = %entry.plugin,
            hook = %self.hooks[entry.info].name,
            on_error = entry.on_error.as_str(),
            "hook failed: {msg}"
        );
    }

    /// A read-only proxy of a lifecycle dict: writes are dropped, so no hook can change
    /// what the next one sees.
    fn frozen(&self, dict: &Table, deep: bool) -> mlua::Result<Value> {
        let mt = self.lua.create_table()?;
        if deep {
            mt.raw_set("__index", self.tok.deep_index.call::<Value>(dict)?)?;
        } else {
            mt.raw_set("__index", dict.clone())?;
        }
        mt.raw_set("__newindex", self.tok.frozen_newindex.clone())?;
        let t = self.lua.create_table()?;
        t.set_metatable(Some(mt))?;
        Ok(Value::Table(t))
    }

    /// Pushes `v` onto coroutine `co` through the main state (cold paths only).
    ///
    /// # Safety
    /// `co` must be a thread of this engine's state with a free stack slot.
    pub(super) unsafe fn push_value(&self, co: *mut ffi::lua_State, v: &Value) {
        self.lua.exec_raw_lua(|raw| {
            let l = raw.state();
            if ffi::lua_checkstack(l, 3) == 0 || raw.push_value(v).is_err() {
                ffi::lua_pushnil(co);
                return;
            }
            ffi::lua_xmove(l, co, 1);
        })
    }

    /// The message of a hook that failed in `thread`, with its Lua traceback.
    ///
    /// # Safety
    /// `thread` must have just returned an error status from `lua_resume`.
    unsafe fn failure_text(&self, thread: &Thread) -> String {
        let co = thread.state();
        let mut e = if ffi::lua_gettop(co) >= 1 {
            self.take_value(co, -1)
        } else {
            Value::Nil
        };
        if MemGuard::hit() {
            if let Ok(s) = self.lua.create_string(self.mem.text()) {
                e = Value::String(s);
            }
        }
        // An error value's __tostring is plugin code: it runs under the budget too.
        let (hit, was) = (MemGuard::hit(), Budget::interrupted());
        self.wd.enter(self.rt.budget.get());
        let text = self
            .tok
            .errtext
            .call::<mlua::String>((thread.clone(), e.clone()));
        self.wd.leave();
        Budget::keep_interrupted(was);
        match text {
            Ok(s) => s.to_string_lossy(),
            Err(_) if hit => self.mem.text(),
            Err(_) => describe(&e),
        }
    }

    /// Runs hooks `start..` of one chain; `resume` continues a suspended hook first.
    ///
    /// Each hook runs as the body of a pooled coroutine, resumed directly with its
    /// function, `msg` and `ctx` on the coroutine's stack: a finished coroutine can be
    /// started again, so a hook that returns costs one `lua_resume` and no conversion.
    /// A hook that fails leaves its coroutine dead (its stack is kept for the traceback)
    /// and the coroutine is dropped.
    pub(super) fn run(
        &self,
        ev: Event,
        phase: usize,
        start: usize,
        mut resume: Option<Thread>,
        arg: Arg<'_>,
    ) -> Outcome {
        let row = ev.row();
        let chain = &self.chains[ev as usize][phase];
        for (i, entry) in chain.iter().enumerate().skip(start) {
            {
                let mut c = self.core.ctx.borrow_mut();
                if !Rc::ptr_eq(&c.plugin, &entry.plugin) {
                    c.plugin = entry.plugin.clone();
                    *self.rt.plugin.borrow_mut() = entry.plugin.clone();
                }
            }
            let resumed = resume.is_some();
            if resumed && self.wait_failed(entry) {
                // the waiting hook is abandoned: its coroutine is dropped unresumed
                resume = None;
                if entry.on_error == OnError::Abort {
                    return Outcome::Done(Step::Continue);
                }
                continue;
            }
            let thread = match resume.take() {
                Some(t) => t,
                None => match self.take_thread() {
                    Ok(t) => t,
                    Err(e) => {
                        self.hook_error(entry, &e.to_string());
                        return Outcome::Done(Step::Continue);
                    }
                },
            };
            let co = thread.state();
            // SAFETY: `co` is a coroutine of this state that is not running (pooled,
            // or suspended by us); every value pushed is consumed by lua_resume, and
            // results are cleared before the coroutine goes back to the pool.
            let status = unsafe {
                let nargs = if resumed {
                    match self.feed.borrow_mut().take() {
                        Some(Feed::Io(r)) => self.push_io(co, r),
                        _ => self.resume_args(co, arg),
                    }
                } else {
                    match self.start_args(co, entry, arg) {
                        Some(n) => n,
                        None => return Outcome::Done(Step::Continue),
                    }
                };
                self.rt.wait_ctx.set(WaitCtx::Hook(co as *const c_void));
                let t0 = crate::metrics::clock();
                self.wd.enter(self.rt.budget.get());
                self.mem.enforce(true);
                let st = ffi::lua_resume_(co, nargs);
                self.mem.enforce(false);
                self.wd.leave();
                self.hook_metrics[entry.info].observe(t0);
                st
            };
            if status == ffi::LUA_YIELD {
                // SAFETY: a yielded coroutine's stack holds exactly the yielded values.
                match unsafe { self.yielded(co) } {
                    Ok(io) => return Outcome::Suspend(i, thread, io),
                    Err(msg) => self.hook_error(entry, &msg),
                }
                if entry.on_error == OnError::Abort {
                    return Outcome::Done(Step::Continue);
                }
                continue;
            }
            if status != ffi::LUA_OK {
                // SAFETY: the coroutine just failed; it is dropped afterwards.
                let msg = unsafe { self.failure_text(&thread) };
                if MemGuard::hit() {
                    // what the failed hook held is garbage once its coroutine is gone
                    drop(thread);
                    self.mem.recover();
                }
                self.hook_error(entry, &msg);
                if entry.on_error == OnError::Abort {
                    return Outcome::Done(Step::Continue);
                }
                continue;
            }
            // SAFETY: the coroutine finished; its stack holds the hook's results.
            let act = unsafe {
                let a = self.classify(co);
                ffi::lua_settop(co, 0);
                a
            };
            self.give_back(thread);
            if let Some(out) = self.act_outcome(entry, ev, row, act) {
                return out;
            }
        }
        Outcome::Done(Step::Continue)
    }

    /// Why a hook yielded: a body (None), I/O, or neither (an error). Clears the stack.
    ///
    /// # Safety
    /// `co` must be a coroutine of this state that just yielded.
    unsafe fn yielded(&self, co: *mut ffi::lua_State) -> Result<Option<IoRequest>, String> {
        let top = ffi::lua_gettop(co);
        let first = if top >= 1 {
            ffi::lua_topointer(co, 1)
        } else {
            std::ptr::null()
        };
        let r = if top == 1 && first == self.tok.need {
            Ok(None)
        } else if top >= 1 && first == self.tok.io {
            self.io_request(co)
                .map(Some)
                .map_err(|e| format!("bad I/O request: {e}"))
        } else {
            Err(
                "hook yielded from its own body (coroutine.yield outside a coroutine it created)"
                    .into(),
            )
        };
        ffi::lua_settop(co, 0);
        r
    }

    /// True (and the hook counted as failed) when the proxy ended the hook's wait
    /// with [`Engine::fail_wait`].
    #[cold]
    fn wait_failed(&self, entry: &HookEntry) -> bool {
        let mut f = self.feed.borrow_mut();
        let Some(Feed::Fail(why)) = f.take_if(|x| matches!(x, Feed::Fail(_))) else {
            return false;
        };
        drop(f);
        self.hook_error(entry, &why);
        true
    }

    /// Pushes a fresh hook's function, `msg` and `ctx` onto `co`: 2 arguments, or None
    /// (the hook failed) when the stack cannot grow.
    ///
    /// # Safety
    /// `co` must be a coroutine of this state that is not running.
    // Split out of `run` only to keep it readable: inlined, it stays one loop body.
    #[inline]
    unsafe fn start_args(
        &self,
        co: *mut ffi::lua_State,
        entry: &HookEntry,
        arg: Arg<'_>,
    ) -> Option<c_int> {
        self.bump(|s| s.hook_calls += 1);
        crate::metrics::inc(&self.hook_metrics[entry.info].calls);
        if ffi::lua_checkstack(co, 4) == 0 {
            self.hook_error(entry, "stack overflow");
            return None;
        }
        // (`lua_rawgeti_`: mlua-sys's compat `lua_rawgeti` adds a `lua_type`)
        ffi::lua_rawgeti_(co, ffi::LUA_REGISTRYINDEX, entry.fref);
        match arg {
            Arg::Slot(id) => self.core.push_ud(co, id),
            Arg::Val(v) => self.push_value(co, v),
            Arg::Frozen(d) => self.push_value(co, &self.frozen(d, false).unwrap_or(Value::Nil)),
            Arg::FrozenDeep(d) => self.push_value(co, &self.frozen(d, true).unwrap_or(Value::Nil)),
        }
        ffi::lua_rawgeti_(co, ffi::LUA_REGISTRYINDEX, self.ctx_ref);
        Some(2)
    }

    /// What a finished hook's action does to its chain: the chain's outcome, or None to
    /// go on with the next hook (CONTINUE, a demoted action, a bad RESPOND under skip).
    // Split out of `run` only to keep it readable: inlined, it stays one loop body.
    #[inline]
    fn act_outcome(&self, entry: &HookEntry, ev: Event, row: &Row, act: Act) -> Option<Outcome> {
        if !row.allows(act.bit()) || matches!(act, Act::Unknown) {
            self.demote(entry, ev, &act);
            return None;
        }
        let step = match act {
            Act::Continue | Act::Unknown => return None,
            Act::Drop => Step::Drop,
            Act::Respond(t) => match build_response(t.as_ref()) {
                Ok(r) => Step::Respond(r),
                Err(e) => {
                    self.hook_error(entry, &format!("bad action.RESPOND: {e}"));
                    if entry.on_error == OnError::Abort {
                        return Some(Outcome::Done(Step::Continue));
                    }
                    return None;
                }
            },
            Act::RespondGrpc(t) => {
                if !matches!(ev, Event::GrpcStart | Event::GrpcWebStart) {
                    self.demote(entry, ev, &Act::RespondGrpc(None));
                    return None;
                }
                match build_grpc(t.as_ref()) {
                    Ok(r) => Step::Respond(r),
                    Err(e) => {
                        self.hook_error(entry, &format!("bad action.RESPOND_GRPC: {e}"));
                        if entry.on_error == OnError::Abort {
                            return Some(Outcome::Done(Step::Continue));
                        }
                        return None;
                    }
                }
            }
        };
        Some(Outcome::Done(step))
    }

    /// Pushes what the getter a hook suspended in returns; 0 values when it must raise
    /// instead (the budget hook raises at the first instruction after the resume).
    ///
    /// # Safety
    /// `co` must be the suspended coroutine.
    unsafe fn resume_args(&self, co: *mut ffi::lua_State, arg: Arg<'_>) -> c_int {
        let Arg::Slot(id) = arg else { return 0 };
        let p = self.core.take_pending(id);
        if p == Pending::None || ffi::lua_checkstack(co, 3) == 0 {
            return 0;
        }
        match self.core.push_resumed(co, id, p) {
            Ok(()) => 1,
            Err(e) => {
                self.wd.fail_next(e.into_owned());
                0
            }
        }
    }

    /// A startable coroutine: a pooled one, else a new one (its body cleared).
    fn take_thread(&self) -> mlua::Result<Thread> {
        match self.pool.borrow_mut().pop() {
            Some(t) => Ok(t),
            None => {
                let t = self.lua.create_thread(self.idle.clone())?;
                // SAFETY: a new coroutine holds only its body; clearing it leaves an
                // empty, startable coroutine.
                unsafe { ffi::lua_settop(t.state(), 0) };
                Ok(t)
            }
        }
    }

    /// Pools a finished coroutine; past `POOL_MAX` it is left to the GC.
    fn give_back(&self, t: Thread) {
        let mut p = self.pool.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(t);
        }
    }

    /// Hooks in one chain: 0 lets an event skip building its hook arguments.
    pub(super) fn chain_len(&self, ev: Event, phase: usize) -> usize {
        self.chains[ev as usize][phase].len()
    }
}
