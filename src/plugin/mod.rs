//! Plugin engine: one LuaJIT state per worker running the register_hook surface.
//!
//! The proxy relies only on the API below; the design is in docs/rfc/001-plugin-engine.md.
//! The engine is sans-IO: it never touches a socket, and when a hook wants a body that
//! is still streaming it returns [`Step::NeedBody`] and lets the proxy buffer it.

mod budget;
mod load;
mod msg;
mod reply;
mod sandbox;
mod shared;
pub mod surface;
#[cfg(test)]
mod tests;

pub use load::{check, format_hooks, HookInfo, LoadError, LoadIssue, OnError};
pub use surface::{Event, Phase, Row, SURFACE};

use crate::http::{Body, Headers, Request, Response, Version};
use budget::Budget;
use bytes::Bytes;
use mlua::{ffi, AnyUserData, Function, Lua, Table, Thread, Value};
use msg::{Core, Env, LRaw, LSse, LWs, Msg, Pending, SlotId};
use reply::{build_grpc, build_response};
use sandbox::Tokens;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::os::raw::c_int;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// Idle trampoline coroutines kept for reuse.
const POOL_MAX: usize = 16;

/// What the engine loads and the limits it enforces.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Plugin files, in load order (chain order follows it).
    pub files: Vec<PathBuf>,
    /// Largest body a hook may read (`msg.body`); larger bodies raise an error in the hook.
    pub max_plugin_body: usize,
    /// Wall-clock budget of one hook call before it is interrupted as an error.
    pub hook_budget: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            files: Vec::new(),
            max_plugin_body: 16 << 20,
            hook_budget: Duration::from_millis(100),
        }
    }
}

/// The connection a hook runs for (becomes `ctx`).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Connection id, unique per process.
    pub conn_id: u64,
    /// Peer address of the client.
    pub client_addr: std::net::SocketAddr,
    /// Upstream address once connected.
    pub server_addr: Option<std::net::SocketAddr>,
    /// TLS SNI the client sent, if any.
    pub sni: Option<String>,
    /// Name of the listener that accepted the connection.
    pub listener_name: Rc<str>,
    /// Worker (core) index.
    pub worker: usize,
}

/// Figures reported to connection.on_disconnect.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    /// Connection lifetime in milliseconds.
    pub duration_ms: f64,
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
}

/// One chunk of an opaque byte stream (raw.on_chunk).
#[derive(Clone, Debug)]
pub struct RawChunk {
    /// Direction.
    pub from_client: bool,
    /// The bytes; hooks may replace them.
    pub data: Bytes,
    /// Bytes seen before this chunk in that direction.
    pub offset: u64,
}

/// One server-sent event (sse.on_event); hooks may change its fields.
#[derive(Clone, Debug, Default)]
pub struct SseEvent {
    /// The event's fields.
    pub event: crate::proto::sse::Event,
    /// 0-based position among the stream's events.
    pub index: u64,
    /// Set when a hook assigned a field: the event is then re-serialized.
    pub changed: bool,
}

/// One WebSocket message or control frame (ws.on_message); hooks may replace `payload`.
#[derive(Clone, Debug, Default)]
pub struct WsMessage {
    /// 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// The frame was masked (client to server).
    pub masked: bool,
    /// The payload (as sent: luring does not negotiate permessage-deflate when hooked).
    pub payload: Bytes,
    /// RSV1 was set (permessage-deflate).
    pub compressed: bool,
    /// Direction.
    pub from_client: bool,
    /// Set when a hook assigned `payload`.
    pub changed: bool,
}

/// The close dict of ws.on_close: the first close frame seen, or 1006 when none came.
#[derive(Clone, Debug, Default)]
pub struct WsClose {
    /// The close frame was masked (sent by the client).
    pub masked: bool,
    /// Its payload.
    pub payload: Bytes,
    /// Close code (1005 when the frame had none, 1006 for an abnormal closure).
    pub close_code: u16,
    /// Close reason.
    pub close_reason: String,
}

/// The TLS handshake dict of tls.on_handshake.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    /// "server" (proxy facing the client) or "client" (proxy facing the upstream).
    pub side: &'static str,
    /// SNI.
    pub sni: Option<String>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// "TLSv1.3"...
    pub version_name: Option<String>,
    /// IANA cipher suite name.
    pub cipher_name: Option<String>,
    /// Subject of the peer certificate, if one was sent.
    pub peer_cert_subject: Option<String>,
    /// JA4 of the ClientHello (server side only).
    pub client_fingerprint: Option<String>,
    /// JA3 MD5 of the ClientHello (server side only).
    pub ja3: Option<String>,
    /// JA3 input string (server side only).
    pub ja3_string: Option<String>,
}

/// The SOCKS5 connect dict of socks5.on_connect.
#[derive(Clone, Debug, Default)]
pub struct Socks5Info {
    /// "host:port" the client asked for.
    pub target_addr: String,
    /// Username, when the client authenticated.
    pub username: Option<String>,
}

/// The outcome of a chain, for the proxy.
#[derive(Debug)]
pub enum Step {
    /// Go on with the (possibly mutated) message.
    Continue,
    /// Drop the connection / reset the stream (see spec section 3).
    Drop,
    /// Answer with this response instead.
    Respond(Response),
    /// A hook read a streaming body: buffer it, set `body` to Full or TooLarge, then resume.
    NeedBody(Suspended),
}

/// Where a chain stopped to wait for a body; hand it back to `resume_*`.
pub struct Suspended {
    event: Event,
    phase: usize,
    idx: usize,
    thread: Thread,
    slot: Option<SlotId>,
    core: Rc<Core>,
}

impl Drop for Suspended {
    fn drop(&mut self) {
        // A chain the proxy gave up on (connection closed) frees its message slot here.
        if let Some(id) = self.slot.take() {
            self.core.release(id);
        }
    }
}

impl fmt::Debug for Suspended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suspended")
            .field("event", &self.event)
            .field("phase", &self.phase)
            .field("hook", &self.idx)
            .finish()
    }
}

/// Counters of one engine (one worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Hook invocations (a resumed hook counts once).
    pub hook_calls: u64,
    /// Hooks that raised an error (budget interrupts included).
    pub errors: u64,
    /// Forbidden actions demoted to CONTINUE.
    pub demotions: u64,
    /// Hooks interrupted by the per-call budget.
    pub budget_interrupts: u64,
}

struct HookEntry {
    /// Registry ref of `_func`, pushed straight onto the hook's coroutine.
    fref: c_int,
    _func: Function,
    info: usize,
    on_error: OnError,
    plugin: Rc<str>,
}

/// State shared with the Rust closures living inside the Lua state.
struct Rt {
    budget: Cell<Duration>,
    plugin: RefCell<Rc<str>>,
}

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

enum Outcome {
    Done(Step),
    Suspend(usize, Thread),
}

/// What a chain passes as `msg`.
#[derive(Clone, Copy)]
enum Arg<'a> {
    Slot(SlotId),
    Val(&'a Value),
    Frozen(&'a Table),
}

/// One worker's plugin engine: a LuaJIT state and its hook chains. Not `Send`.
pub struct Engine {
    wd: Budget,
    lua: Lua,
    rt: Rc<Rt>,
    tok: Tokens,
    core: Rc<Core>,
    /// Registry ref of `ctx_ud`.
    ctx_ref: c_int,
    /// Body of a fresh coroutine until its first hook replaces it.
    idle: Function,
    pool: RefCell<Vec<Thread>>,
    hooks: Vec<HookInfo>,
    chains: Vec<[Vec<HookEntry>; 2]>,
    mask: u32,
    worker: usize,
    warned: RefCell<HashSet<(usize, u8)>>,
    stats: Cell<EngineStats>,
    _ctx_ud: AnyUserData,
}

fn lua_err(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string_lossy(),
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.type_name().to_string(),
    }
}

impl Engine {
    /// Every registered hook in chain order.
    pub fn hooks(&self) -> &[HookInfo] {
        &self.hooks
    }

    /// True when at least one hook is registered for `event` (any phase).
    #[inline]
    pub fn has(&self, event: Event) -> bool {
        self.mask & (1 << event as u32) != 0
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        self.stats.get()
    }

    /// The worker index this engine was loaded for.
    pub fn worker(&self) -> usize {
        self.worker
    }

    fn bump(&self, f: impl FnOnce(&mut EngineStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn ctx(&self, conn: &ConnInfo, flow_id: Option<u64>) {
        let mut d = self.core.ctx.borrow_mut();
        d.conn_id = conn.conn_id;
        d.flow_id = flow_id;
        d.client_addr = conn.client_addr;
        d.server_addr = conn.server_addr;
        if d.sni != conn.sni {
            d.sni.clone_from(&conn.sni);
        }
        if !Rc::ptr_eq(&d.listener_name, &conn.listener_name) {
            d.listener_name = conn.listener_name.clone();
        }
        d.worker = conn.worker;
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
    unsafe fn take_value(&self, co: *mut ffi::lua_State, idx: c_int) -> Value {
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

    fn demote(&self, entry: &HookEntry, ev: Event, act: &Act) {
        self.bump(|s| s.demotions += 1);
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

    fn hook_error(&self, entry: &HookEntry, msg: &str) {
        self.bump(|s| s.errors += 1);
        if Budget::interrupted() {
            self.bump(|s| s.budget_interrupts += 1);
        }
        tracing::error!(
            target: "luring::plugin",
            plugin = %entry.plugin,
            hook = %self.hooks[entry.info].name,
            on_error = entry.on_error.as_str(),
            "hook failed: {msg}"
        );
    }

    fn frozen(&self, dict: &Table) -> mlua::Result<Value> {
        let mt = self.lua.create_table()?;
        mt.raw_set("__index", dict.clone())?;
        mt.raw_set("__newindex", self.tok.frozen_newindex.clone())?;
        let t = self.lua.create_table()?;
        t.set_metatable(Some(mt))?;
        Ok(Value::Table(t))
    }

    /// Pushes `v` onto coroutine `co` through the main state (cold paths only).
    ///
    /// # Safety
    /// `co` must be a thread of this engine's state with a free stack slot.
    unsafe fn push_value(&self, co: *mut ffi::lua_State, v: &Value) {
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
        let e = if ffi::lua_gettop(co) >= 1 {
            self.take_value(co, -1)
        } else {
            Value::Nil
        };
        match self
            .tok
            .errtext
            .call::<mlua::String>((thread.clone(), e.clone()))
        {
            Ok(s) => s.to_string_lossy(),
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
    fn run(
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
                    self.resume_args(co, arg)
                } else {
                    self.bump(|s| s.hook_calls += 1);
                    if ffi::lua_checkstack(co, 4) == 0 {
                        self.hook_error(entry, "stack overflow");
                        return Outcome::Done(Step::Continue);
                    }
                    // (`lua_rawgeti_`: mlua-sys's compat `lua_rawgeti` adds a `lua_type`)
                    ffi::lua_rawgeti_(co, ffi::LUA_REGISTRYINDEX, entry.fref);
                    match arg {
                        Arg::Slot(id) => self.core.push_ud(co, id),
                        Arg::Val(v) => self.push_value(co, v),
                        Arg::Frozen(d) => {
                            self.push_value(co, &self.frozen(d).unwrap_or(Value::Nil))
                        }
                    }
                    ffi::lua_rawgeti_(co, ffi::LUA_REGISTRYINDEX, self.ctx_ref);
                    2
                };
                self.wd.enter(self.rt.budget.get());
                let st = ffi::lua_resume_(co, nargs);
                self.wd.leave();
                st
            };
            if status == ffi::LUA_YIELD {
                // SAFETY: a yielded coroutine's stack holds exactly the yielded values.
                let need = unsafe {
                    let n = ffi::lua_gettop(co) == 1 && ffi::lua_topointer(co, 1) == self.tok.need;
                    ffi::lua_settop(co, 0);
                    n
                };
                if need {
                    return Outcome::Suspend(i, thread);
                }
                self.hook_error(entry, "hook yielded from its own body (coroutine.yield outside a coroutine it created)");
                if entry.on_error == OnError::Abort {
                    return Outcome::Done(Step::Continue);
                }
                continue;
            }
            if status != ffi::LUA_OK {
                // SAFETY: the coroutine just failed; it is dropped afterwards.
                let msg = unsafe { self.failure_text(&thread) };
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
            if !row.allows(act.bit()) || matches!(act, Act::Unknown) {
                self.demote(entry, ev, &act);
                continue;
            }
            let step = match act {
                Act::Continue | Act::Unknown => continue,
                Act::Drop => Step::Drop,
                Act::Respond(t) => match build_response(t.as_ref()) {
                    Ok(r) => Step::Respond(r),
                    Err(e) => {
                        self.hook_error(entry, &format!("bad action.RESPOND: {e}"));
                        if entry.on_error == OnError::Abort {
                            return Outcome::Done(Step::Continue);
                        }
                        continue;
                    }
                },
                Act::RespondGrpc(t) => {
                    if !matches!(ev, Event::GrpcStart | Event::GrpcWebStart) {
                        self.demote(entry, ev, &Act::RespondGrpc(None));
                        continue;
                    }
                    match build_grpc(t.as_ref()) {
                        Ok(r) => Step::Respond(r),
                        Err(e) => {
                            self.hook_error(entry, &format!("bad action.RESPOND_GRPC: {e}"));
                            if entry.on_error == OnError::Abort {
                                return Outcome::Done(Step::Continue);
                            }
                            continue;
                        }
                    }
                }
            };
            return Outcome::Done(step);
        }
        Outcome::Done(Step::Continue)
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

    fn give_back(&self, t: Thread) {
        let mut p = self.pool.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(t);
        }
    }

    fn chain_len(&self, ev: Event, phase: usize) -> usize {
        self.chains[ev as usize][phase].len()
    }

    fn request_event(
        &self,
        ev: Event,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        if self.chain_len(ev, phase.idx()) == 0 {
            return Step::Continue;
        }
        let m = Msg::Req(std::mem::replace(req, placeholder_request()));
        let id = match self.core.open(m, false) {
            Ok(id) => id,
            Err(m) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments");
                if let Msg::Req(r) = m {
                    *req = r;
                }
                return Step::Continue;
            }
        };
        self.ctx(conn, Some(flow_id));
        let out = self.run(ev, phase.idx(), 0, None, Arg::Slot(id));
        self.finish_req(out, ev, phase.idx(), id, req)
    }

    fn finish_req(
        &self,
        out: Outcome,
        ev: Event,
        phase: usize,
        id: SlotId,
        req: &mut Request,
    ) -> Step {
        *req = match self.core.take(id) {
            Some(Msg::Req(r)) => r,
            _ => placeholder_request(),
        };
        self.suspend_or_release(out, ev, phase, id)
    }

    fn suspend_or_release(&self, out: Outcome, ev: Event, phase: usize, id: SlotId) -> Step {
        match out {
            Outcome::Done(s) => {
                self.core.release(id);
                s
            }
            Outcome::Suspend(idx, thread) => Step::NeedBody(Suspended {
                event: ev,
                phase,
                idx,
                thread,
                slot: Some(id),
                core: self.core.clone(),
            }),
        }
    }

    fn finish_resp(
        &self,
        out: Outcome,
        ev: Event,
        phase: usize,
        id: SlotId,
        resp: &mut Response,
    ) -> Step {
        self.core.clear_request(id);
        *resp = match self.core.take(id) {
            Some(Msg::Resp(r)) => r,
            _ => placeholder_response(),
        };
        self.suspend_or_release(out, ev, phase, id)
    }

    /// http.on_request for one phase; `req` carries the hooks' mutations afterwards.
    pub fn http_request(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        self.request_event(Event::HttpRequest, phase, conn, flow_id, req)
    }

    /// ws.on_upgrade for one phase (an HTTP request message, like http.on_request).
    pub fn ws_upgrade(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        self.request_event(Event::WsUpgrade, phase, conn, flow_id, req)
    }

    /// http.on_response for one phase; `resp.request` is a read-only view of `req`.
    pub fn http_response(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &Request,
        resp: &mut Response,
    ) -> Step {
        let ev = Event::HttpResponse;
        if self.chain_len(ev, phase.idx()) == 0 {
            return Step::Continue;
        }
        let m = Msg::Resp(std::mem::replace(resp, placeholder_response()));
        let id = match self.core.open(m, false) {
            Ok(id) => id,
            Err(m) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments");
                if let Msg::Resp(r) = m {
                    *resp = r;
                }
                return Step::Continue;
            }
        };
        self.ctx(conn, Some(flow_id));
        self.core.set_request(id, req);
        let out = self.run(ev, phase.idx(), 0, None, Arg::Slot(id));
        self.finish_resp(out, ev, phase.idx(), id, resp)
    }

    /// Continues a request chain after the proxy set `req.body` to Full or TooLarge.
    pub fn resume_request(
        &self,
        mut s: Suspended,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        let Some(id) = s.slot.take() else {
            return Step::Continue;
        };
        if s.event == Event::HttpResponse {
            tracing::error!(target: "luring::plugin", "resume_request called with a suspended response chain");
            self.core.release(id);
            return Step::Continue;
        }
        if let Err(Msg::Req(r)) = self
            .core
            .put(id, Msg::Req(std::mem::replace(req, placeholder_request())))
        {
            *req = r;
            return Step::Continue;
        }
        self.ctx(conn, Some(flow_id));
        let thread = s.thread.clone();
        let out = self.run(s.event, s.phase, s.idx, Some(thread), Arg::Slot(id));
        self.finish_req(out, s.event, s.phase, id, req)
    }

    /// Continues a response chain after the proxy set `resp.body` to Full or TooLarge.
    pub fn resume_response(
        &self,
        mut s: Suspended,
        conn: &ConnInfo,
        flow_id: u64,
        req: &Request,
        resp: &mut Response,
    ) -> Step {
        let Some(id) = s.slot.take() else {
            return Step::Continue;
        };
        if s.event != Event::HttpResponse {
            tracing::error!(target: "luring::plugin", "resume_response called with a suspended request chain");
            self.core.release(id);
            return Step::Continue;
        }
        if let Err(Msg::Resp(r)) = self.core.put(
            id,
            Msg::Resp(std::mem::replace(resp, placeholder_response())),
        ) {
            *resp = r;
            return Step::Continue;
        }
        self.ctx(conn, Some(flow_id));
        self.core.set_request(id, req);
        let thread = s.thread.clone();
        let out = self.run(s.event, s.phase, s.idx, Some(thread), Arg::Slot(id));
        self.finish_resp(out, s.event, s.phase, id, resp)
    }

    /// raw.on_chunk for one phase; hooks may replace `chunk.data`.
    pub fn raw_chunk(&self, phase: Phase, conn: &ConnInfo, chunk: &mut RawChunk) {
        let ev = Event::RawChunk;
        if self.chain_len(ev, phase.idx()) == 0 {
            return;
        }
        let hollow = RawChunk {
            from_client: chunk.from_client,
            data: Bytes::new(),
            offset: chunk.offset,
        };
        let env = Env::new(std::mem::replace(chunk, hollow));
        if let Ok(m) = self.lua.create_userdata(LRaw { env: env.clone() }) {
            self.ctx(conn, None);
            let msg = Value::UserData(m);
            // Only CONTINUE is allowed here, so the outcome carries nothing for the proxy.
            let _ = self.run(ev, phase.idx(), 0, None, Arg::Val(&msg));
        }
        if let Some(c) = env.take() {
            *chunk = c;
        }
    }

    /// Runs sse.on_event hooks of `phase` on one event.
    pub fn sse_event(&self, phase: Phase, conn: &ConnInfo, flow_id: u64, ev: &mut SseEvent) {
        let e = Event::SseEvent;
        if self.chain_len(e, phase.idx()) == 0 {
            return;
        }
        let env = Env::new(std::mem::take(ev));
        if let Ok(m) = self.lua.create_userdata(LSse { env: env.clone() }) {
            self.ctx(conn, Some(flow_id));
            let msg = Value::UserData(m);
            // Only CONTINUE is allowed here, so the outcome carries nothing for the proxy.
            let _ = self.run(e, phase.idx(), 0, None, Arg::Val(&msg));
        }
        if let Some(back) = env.take() {
            *ev = back;
        }
    }

    /// Runs a lifecycle chain over a frozen dict; only on_connect rows can end with Drop.
    fn lifecycle(
        &self,
        ev: Event,
        conn: &ConnInfo,
        fill: impl FnOnce(&Lua, &Table) -> mlua::Result<()>,
    ) -> Step {
        if self.chain_len(ev, 0) == 0 {
            return Step::Continue;
        }
        let made = (|| {
            let t = self.lua.create_table()?;
            fill(&self.lua, &t)?;
            Ok::<_, mlua::Error>(t)
        })();
        let dict = match made {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments: {e}");
                return Step::Continue;
            }
        };
        self.ctx(conn, None);
        match self.run(ev, 0, 0, None, Arg::Frozen(&dict)) {
            Outcome::Done(s) => s,
            Outcome::Suspend(..) => Step::Continue,
        }
    }

    /// connection.on_connect: Continue, or Drop to close the socket before any layer exists.
    pub fn on_connect(&self, conn: &ConnInfo) -> Step {
        self.lifecycle(Event::ConnectionConnect, conn, |_, t| {
            t.raw_set("conn_id", conn.conn_id)?;
            t.raw_set("client_addr", conn.client_addr.to_string())?;
            t.raw_set("listener_name", &*conn.listener_name)
        })
    }

    /// connection.on_disconnect: every hook runs; nothing to decide.
    pub fn on_disconnect(&self, conn: &ConnInfo, stats: &ConnStats) {
        self.lifecycle(Event::ConnectionDisconnect, conn, |_, t| {
            t.raw_set("conn_id", conn.conn_id)?;
            t.raw_set("client_addr", conn.client_addr.to_string())?;
            t.raw_set("duration_ms", stats.duration_ms)?;
            t.raw_set("bytes_in", stats.bytes_in)?;
            t.raw_set("bytes_out", stats.bytes_out)
        });
    }

    /// tls.on_handshake, once per side.
    pub fn tls_handshake(&self, conn: &ConnInfo, info: &TlsInfo) {
        self.lifecycle(Event::TlsHandshake, conn, |_, t| {
            t.raw_set("side", info.side)?;
            t.raw_set("sni", info.sni.as_deref())?;
            t.raw_set("alpn", info.alpn.as_deref())?;
            t.raw_set("version_name", info.version_name.as_deref())?;
            t.raw_set("cipher_name", info.cipher_name.as_deref())?;
            t.raw_set("peer_cert_subject", info.peer_cert_subject.as_deref())?;
            t.raw_set("client_fingerprint", info.client_fingerprint.as_deref())?;
            t.raw_set("ja3", info.ja3.as_deref())?;
            t.raw_set("ja3_string", info.ja3_string.as_deref())
        });
    }

    /// socks5.on_connect: Continue, or Drop to abort before any upstream connection.
    /// ws.on_close (lifecycle) once both directions of a WebSocket ended.
    pub fn ws_close(&self, conn: &ConnInfo, c: &WsClose) {
        self.lifecycle(Event::WsClose, conn, |lua, t| {
            t.raw_set("opcode", 8)?;
            t.raw_set("fin", true)?;
            t.raw_set("masked", c.masked)?;
            t.raw_set("payload", lua.create_string(&c.payload)?)?;
            t.raw_set("close_code", c.close_code)?;
            t.raw_set("close_reason", c.close_reason.as_str())?;
            t.raw_set("compressed", false)
        });
    }

    /// Runs ws.on_message hooks of `phase` on one message.
    pub fn ws_message(&self, phase: Phase, conn: &ConnInfo, flow_id: u64, m: &mut WsMessage) {
        let e = Event::WsMessage;
        if self.chain_len(e, phase.idx()) == 0 {
            return;
        }
        let env = Env::new(std::mem::take(m));
        if let Ok(u) = self.lua.create_userdata(LWs { env: env.clone() }) {
            self.ctx(conn, Some(flow_id));
            let msg = Value::UserData(u);
            // Only CONTINUE is allowed here, so the outcome carries nothing for the proxy.
            let _ = self.run(e, phase.idx(), 0, None, Arg::Val(&msg));
        }
        if let Some(back) = env.take() {
            *m = back;
        }
    }

    pub fn socks5_connect(&self, conn: &ConnInfo, info: &Socks5Info) -> Step {
        self.lifecycle(Event::Socks5Connect, conn, |_, t| {
            t.raw_set("conn_id", conn.conn_id)?;
            t.raw_set("client_addr", conn.client_addr.to_string())?;
            t.raw_set("target_addr", info.target_addr.as_str())?;
            t.raw_set("username", info.username.as_deref())
        })
    }
}

fn placeholder_request() -> Request {
    Request {
        method: Bytes::new(),
        scheme: String::new(),
        authority: String::new(),
        path: None,
        version: Version::Http11,
        headers: Headers::new(),
        body: Body::Streaming,
        trailers: None,
        timestamp_start: 0.0,
    }
}

fn placeholder_response() -> Response {
    Response {
        status: 0,
        reason: String::new(),
        version: Version::Http11,
        headers: Headers::new(),
        body: Body::Streaming,
        trailers: None,
    }
}
