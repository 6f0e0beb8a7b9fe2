//! Plugin engine: one LuaJIT state per worker running the register_hook surface.
//!
//! The proxy relies only on the API below; the design is in docs/rfc/001-plugin-engine.md.
//! The engine is sans-IO: it never touches a socket, and when a hook wants a body that
//! is still streaming it returns [`Step::NeedBody`] and lets the proxy buffer it; when
//! a hook waits on I/O (`luring.sleep`, cosockets...) it returns [`Step::Wait`] with an
//! [`IoRequest`] the proxy performs (see `io`).
//!
//! Where things are: `load` builds an [`Engine`] from plugin files (`sandbox` sets up
//! its Lua state), `events` holds the entry points the proxy calls per event, `chain`
//! runs one hook chain for them (`grpc` those of the gRPC rows), `reply` turns RESPOND
//! actions into responses, `msg` holds the handles hooks see as `msg` and `ctx`, and
//! `protobuf` is the codec plugins get as `luring.protobuf`.

mod budget;
mod chain;
mod events;
pub mod flow_notes;
mod grpc;
#[cfg(test)]
mod grpc_tests;
mod io;
mod load;
mod memory;
mod msg;
mod protobuf;
mod reply;
mod sandbox;
mod shared;
pub mod surface;
#[cfg(test)]
mod tests;

pub use events::{
    ConnInfo, ConnStats, RawChunk, Socks5Info, SseEvent, TlsInfo, WsClose, WsMessage,
};
pub use grpc::{GrpcCall, GrpcData, GrpcEnd, GrpcRows};
pub use io::{ConnectCall, HttpCall, IoRequest, IoResult, Recv};
pub use load::{check, format_hooks, HookInfo, LoadError, LoadIssue, OnError};
pub use surface::{Event, Phase, Row, SURFACE};

use crate::http::Response;
use budget::Budget;
use mlua::{AnyUserData, Function, Lua, Thread, Value};
use msg::{Core, SlotId};
use sandbox::Tokens;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::os::raw::c_int;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// What the engine loads and the limits it enforces.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Plugin files, in load order (chain order follows it).
    pub files: Vec<PathBuf>,
    /// Largest body a hook may read (`msg.body`); larger bodies raise an error in the hook.
    pub max_plugin_body: usize,
    /// Wall-clock budget of one hook call before it is interrupted as an error.
    pub hook_budget: Duration,
    /// The proxy records flows: `luring.flow_note` and `luring.skip_recording` are kept.
    pub record: bool,
    /// Bytes one state may hold while plugin code runs; 0 = no limit.
    pub memory_limit: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            files: Vec::new(),
            max_plugin_body: 16 << 20,
            hook_budget: Duration::from_millis(100),
            record: false,
            memory_limit: 256 << 20,
        }
    }
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
    /// A hook waits for this I/O: perform it, hand the result to [`Engine::feed_io`]
    /// (or end the wait with [`Engine::fail_wait`]), then resume as for `NeedBody`.
    Wait(Suspended, IoRequest),
}

/// Where a chain stopped to wait for a body; hand it back to `resume_*`.
pub struct Suspended {
    event: Event,
    phase: usize,
    idx: usize,
    thread: Thread,
    slot: Option<SlotId>,
    /// The `msg` of an event that passes a value (gRPC on_start), for the later hooks.
    val: Option<Value>,
    /// `val` is a lifecycle dict, passed frozen (`true`: deep) to the later hooks.
    frozen: Option<bool>,
    /// The message a value event's hooks share (an `Env`), given back when the chain ends.
    env: Option<Rc<dyn std::any::Any>>,
    core: Rc<Core>,
}

impl Suspended {
    /// Which hook call this is (event, phase, hook index): the proxy's hook timeout
    /// counts from the first wait of a call.
    pub fn hook_key(&self) -> (Event, usize, usize) {
        (self.event, self.phase, self.idx)
    }
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
    /// Hooks stopped by the state's memory limit.
    pub memory_interrupts: u64,
}

/// One registered hook as its chain runs it.
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
    /// Plugins' notes for the flow recorder.
    notes: flow_notes::NoteBook,
    /// Where Lua code runs now: whether `luring.sleep` and the like may wait.
    wait_ctx: Cell<io::WaitCtx>,
}

/// One worker's plugin engine: a LuaJIT state and its hook chains. Not `Send`.
pub struct Engine {
    /// First field: dropped before `lua`, whose allocator it wraps.
    mem: memory::MemGuard,
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
    /// What resumes a hook waiting on I/O (set by `feed_io` / `fail_wait`).
    feed: RefCell<Option<io::Feed>>,
    /// Per-hook metrics, by `HookInfo` index (shared with the worker's metrics).
    hook_metrics: Vec<Rc<crate::metrics::HookStat>>,
    _ctx_ud: AnyUserData,
}

/// A runtime error with our text (Lua code sees it as the message it raised).
fn lua_err(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

/// A Lua value in an error or log message: scalars as Lua prints them, others by type.
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
}
