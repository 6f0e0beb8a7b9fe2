//! Plugin engine: one LuaJIT state per worker running the register_hook surface.
//!
//! The proxy relies only on the API below; the design is in docs/rfc/001-plugin-engine.md.
//! The engine is sans-IO: it never touches a socket, and when a hook wants a body that
//! is still streaming it returns [`Step::NeedBody`] and lets the proxy buffer it.

mod budget;
mod msg;
mod shared;
pub mod surface;
#[cfg(test)]
mod tests;

pub use surface::{Event, Phase, Row, SURFACE};

use crate::http::{Body, Headers, Request, Response, Version};
use budget::Budget;
use bytes::Bytes;
use mlua::{ffi, AnyUserData, Function, Lua, LuaOptions, StdLib, Table, Thread, Value};
use msg::{Core, Env, LCtx, LRaw, LSse, LWs, Msg, Pending, SlotId};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
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

/// What a failing hook does to its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Log and go on with the next hook (default).
    Skip,
    /// Log and end this chain; the message goes on as mutated so far.
    Abort,
}

impl OnError {
    /// The option value ("skip" / "abort").
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Skip => "skip",
            OnError::Abort => "abort",
        }
    }
}

/// A registered hook, as `luring check` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookInfo {
    /// Protocol of the row.
    pub protocol: &'static str,
    /// Event of the row.
    pub event: &'static str,
    /// Phase; None for lifecycle rows.
    pub phase: Option<Phase>,
    /// Error policy.
    pub on_error: OnError,
    /// Name from the options, or "file.lua:line".
    pub name: String,
    /// Script file name.
    pub plugin: String,
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

/// One load-time problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadIssue {
    /// Plugin file.
    pub file: PathBuf,
    /// Line in that file, when known.
    pub line: Option<usize>,
    /// The spec's error text (or Lua's message).
    pub message: String,
}

/// Every load-time problem of every file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// In file order, then line order.
    pub issues: Vec<LoadIssue>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.line {
                Some(l) => write!(f, "{}:{}: {}", e.file.display(), l, e.message)?,
                None => write!(f, "{}: {}", e.file.display(), e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    fn engine(e: mlua::Error) -> LoadError {
        LoadError {
            issues: vec![LoadIssue {
                file: PathBuf::from("<engine>"),
                line: None,
                message: e.to_string(),
            }],
        }
    }
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

/// Values the init chunk creates and the dispatcher compares by identity.
struct Tokens {
    cont: *const std::ffi::c_void,
    drop: *const std::ffi::c_void,
    respond: *const std::ffi::c_void,
    respond_mt: *const std::ffi::c_void,
    grpc: *const std::ffi::c_void,
    grpc_mt: *const std::ffi::c_void,
    need: *const std::ffi::c_void,
    frozen_newindex: Function,
    /// `function(co, err)`: the traceback of a hook that failed in coroutine `co`.
    errtext: Function,
    _keep: Vec<Table>,
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

const INIT: &str = r#"
local expired = ...
local oxpcall, opcall, tb, tostring, type = xpcall, pcall, debug.traceback, tostring, type
local error, setmetatable = error, setmetatable

-- Compiled traces never call the instruction-count hook, so a budget can only be
-- enforced on interpreted code: the JIT is switched off for this state, for good.
jit.off()
jit.flush()
for _, k in ipairs({"jit", "jit.util", "jit.opt", "jit.profile", "io", "ffi"}) do package.loaded[k] = nil end
jit, io = nil, nil
os.exit = nil
package.loadlib = nil
if package.loaders then package.loaders[3], package.loaders[4] = nil, nil end

local function errtext(co, e) return tb(co, tostring(e)) end

-- A plugin's own pcall must not swallow the budget error of an endless loop.
local function pass(ok, ...)
  if not ok and expired() then error((...), 0) end
  return ok, ...
end
pcall = function(f, ...) return pass(opcall(f, ...)) end
xpcall = function(f, h, ...) return pass(oxpcall(f, h, ...)) end
local ores = coroutine.resume
coroutine.resume = function(co, ...) return pass(ores(co, ...)) end

debug = { traceback = tb }
package.loaded.debug = debug

local function token(n)
  return setmetatable({}, { __tostring = function() return "action." .. n end })
end
local CONTINUE, DROP = token("CONTINUE"), token("DROP")
local RESP_MT = { __tostring = function() return "action.RESPOND{...}" end }
local GRPC_MT = { __tostring = function() return "action.RESPOND_GRPC{...}" end }
local function callable(n, mt)
  return setmetatable({}, {
    __tostring = function() return "action." .. n end,
    __call = function(_, t)
      if t == nil then t = {} end
      if type(t) ~= "table" then error("action." .. n .. " expects a table", 2) end
      return setmetatable(t, mt)
    end,
  })
end
local RESPOND, RESPOND_GRPC = callable("RESPOND", RESP_MT), callable("RESPOND_GRPC", GRPC_MT)
action = { CONTINUE = CONTINUE, DROP = DROP, RESPOND = RESPOND, RESPOND_GRPC = RESPOND_GRPC }
return errtext, CONTINUE, DROP, RESPOND, RESP_MT, RESPOND_GRPC, GRPC_MT, function() end
"#;

struct LoadState {
    file: PathBuf,
    plugin: Rc<str>,
    regs: Vec<(Event, usize, HookEntry)>,
    hooks: Vec<HookInfo>,
    issues: Vec<LoadIssue>,
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

fn log_line(args: mlua::MultiValue) -> String {
    let mut out = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match v {
            Value::String(s) => out.push_str(&s.to_string_lossy()),
            other => out.push_str(&other.to_string().unwrap_or_else(|_| describe(other))),
        }
    }
    out
}

/// Splits "path:12: message" into (12, "message") when it names `file`.
/// Puts `dir/?.lua` and `dir/?/init.lua` first on `package.path` (once per directory).
fn add_module_dir(lua: &Lua, dir: &Path) {
    let Ok(package) = lua.globals().get::<Table>("package") else {
        return;
    };
    let path: String = package.get("path").unwrap_or_default();
    let dir = dir.display();
    let ours = format!("{dir}/?.lua;{dir}/?/init.lua;");
    if !path.contains(&ours) {
        package.set("path", format!("{ours}{path}")).ok();
    }
}

/// Splits Lua's "file:line: message" into the line and the message; the lines after
/// the first (the places `require` looked in) are kept, a traceback is not.
fn split_location(file: &Path, msg: &str) -> (Option<usize>, String) {
    let body = msg.split("\nstack traceback:").next().unwrap_or("");
    let mut rest_lines = body.lines().skip(1).map(str::trim_end).peekable();
    let more = if rest_lines.peek().is_some() {
        rest_lines.fold(String::new(), |acc, l| acc + "\n" + l)
    } else {
        String::new()
    };
    let (line, first) = split_first_line(file, msg);
    (line, first + &more)
}

fn split_first_line(file: &Path, msg: &str) -> (Option<usize>, String) {
    let first = msg.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("runtime error: ").unwrap_or(first);
    let first = first.strip_prefix("syntax error: ").unwrap_or(first);
    let prefix = format!("{}:", file.display());
    if let Some(rest) = first.strip_prefix(&prefix) {
        if let Some((line, m)) = rest.split_once(':') {
            if let Ok(l) = line.parse() {
                return (Some(l), m.trim().to_string());
            }
        }
    }
    (None, first.to_string())
}

impl Engine {
    /// Builds a fresh state from `cfg.files`; every problem of every file is reported.
    pub fn load(cfg: &EngineConfig, worker: usize) -> Result<Engine, LoadError> {
        let libs = StdLib::TABLE
            | StdLib::STRING
            | StdLib::MATH
            | StdLib::OS
            | StdLib::PACKAGE
            | StdLib::BIT
            | StdLib::JIT
            | StdLib::DEBUG;
        // SAFETY: `debug` is needed by the init chunk and removed from plugins' reach by
        // it; no C library loading is left to plugins (loadlib and C searchers removed).
        let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::default()) };
        let rt = Rc::new(Rt {
            budget: Cell::new(cfg.hook_budget),
            plugin: RefCell::new(Rc::from("")),
        });
        let (tok, need) = Self::init(&lua, &rt).map_err(LoadError::engine)?;
        // Outside any callback this is the main state, which lives as long as `lua`.
        let lstate = lua.exec_raw_lua(|raw| raw.state());
        let wd = Budget::install(lstate);
        let core = Core::new(cfg.max_plugin_body, worker);
        core.install(&lua, &need).map_err(LoadError::engine)?;

        let state = Rc::new(RefCell::new(LoadState {
            file: PathBuf::new(),
            plugin: Rc::from(""),
            regs: Vec::new(),
            hooks: Vec::new(),
            issues: Vec::new(),
        }));
        let reg = Self::register_fn(&lua, state.clone()).map_err(LoadError::engine)?;
        lua.globals()
            .set("register_hook", reg)
            .map_err(LoadError::engine)?;

        // Top-level code gets a longer budget than a hook, but still one: `luring check`
        // must not hang on a script that loops at load time.
        let load_budget = (cfg.hook_budget * 10).max(Duration::from_secs(1));
        for file in &cfg.files {
            let plugin: Rc<str> = Rc::from(
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
                    .as_str(),
            );
            {
                let mut s = state.borrow_mut();
                s.file = file.clone();
                s.plugin = plugin.clone();
            }
            *rt.plugin.borrow_mut() = plugin.clone();
            let src = match std::fs::read(file) {
                Ok(s) => s,
                Err(e) => {
                    state.borrow_mut().issues.push(LoadIssue {
                        file: file.clone(),
                        line: None,
                        message: format!("cannot read plugin: {e}"),
                    });
                    continue;
                }
            };
            // a plugin's own modules sit next to it: require("util") finds util.lua there
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                add_module_dir(&lua, dir);
            }
            wd.enter(load_budget);
            let res = lua
                .load(&src[..])
                .set_name(format!("@{}", file.display()))
                .exec();
            wd.leave();
            if let Err(e) = res {
                let text = match &e {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    mlua::Error::RuntimeError(m) => m.clone(),
                    other => other.to_string(),
                };
                let (line, message) = split_location(file, &text);
                state.borrow_mut().issues.push(LoadIssue {
                    file: file.clone(),
                    line,
                    message,
                });
            }
        }
        lua.globals().set("register_hook", Value::Nil).ok();
        let reg_after = lua.create_function(|_, _: mlua::MultiValue| -> mlua::Result<()> {
            Err(lua_err(
                "register_hook: hooks can only be registered while a plugin loads",
            ))
        });
        if let Ok(f) = reg_after {
            lua.globals().set("register_hook", f).ok();
        }

        // The old register_hook closure may still hold `state` until the next GC cycle.
        let (regs, hooks, issues) = {
            let mut s = state.borrow_mut();
            (
                std::mem::take(&mut s.regs),
                std::mem::take(&mut s.hooks),
                std::mem::take(&mut s.issues),
            )
        };
        if !issues.is_empty() {
            return Err(LoadError { issues });
        }
        let mut chains: Vec<[Vec<HookEntry>; 2]> = (0..SURFACE.len())
            .map(|_| [Vec::new(), Vec::new()])
            .collect();
        let mut mask = 0u32;
        for (ev, phase, mut entry) in regs {
            mask |= 1 << ev as u32;
            entry.fref = registry_ref(&lua, &Value::Function(entry._func.clone()))
                .map_err(LoadError::engine)?;
            chains[ev as usize][phase].push(entry);
        }
        let ctx_ud = lua
            .create_userdata(LCtx(core.clone()))
            .map_err(LoadError::engine)?;
        let ctx_ref =
            registry_ref(&lua, &Value::UserData(ctx_ud.clone())).map_err(LoadError::engine)?;
        let idle = lua
            .create_function(|_, ()| Ok(()))
            .map_err(LoadError::engine)?;
        Ok(Engine {
            wd,
            _ctx_ud: ctx_ud,
            ctx_ref,
            core,
            idle,
            lua,
            rt,
            tok,
            pool: RefCell::new(Vec::new()),
            hooks,
            chains,
            mask,
            worker,
            warned: RefCell::new(HashSet::new()),
            stats: Cell::new(EngineStats::default()),
        })
    }

    fn init(lua: &Lua, rt: &Rc<Rt>) -> mlua::Result<(Tokens, Table)> {
        let need = lua.create_table()?;
        let expired = lua.create_function(|_, ()| Ok(Budget::expired()))?;
        let (errtext, cont, drop, respond, respond_mt, grpc, grpc_mt, noop): (
            Function,
            Table,
            Table,
            Table,
            Table,
            Table,
            Table,
            Function,
        ) = lua.load(INIT).set_name("=luring-init").call(expired)?;

        let g = lua.globals();
        g.set("shared", shared::table(lua)?)?;
        let r = rt.clone();
        g.set(
            "print",
            lua.create_function(move |_, args: mlua::MultiValue| {
                tracing::info!(target: "luring::plugin", plugin = %r.plugin.borrow(), "{}", log_line(args));
                Ok(())
            })?,
        )?;
        let log = lua.create_table()?;
        macro_rules! level {
            ($name:literal, $mac:ident) => {{
                let r = rt.clone();
                log.set(
                    $name,
                    lua.create_function(move |_, args: mlua::MultiValue| {
                        tracing::$mac!(target: "luring::plugin", plugin = %r.plugin.borrow(), "{}", log_line(args));
                        Ok(())
                    })?,
                )?;
            }};
        }
        level!("debug", debug);
        level!("info", info);
        level!("warn", warn);
        level!("error", error);
        g.set("log", log)?;

        let tok = Tokens {
            cont: cont.to_pointer(),
            drop: drop.to_pointer(),
            respond: respond.to_pointer(),
            respond_mt: respond_mt.to_pointer(),
            grpc: grpc.to_pointer(),
            grpc_mt: grpc_mt.to_pointer(),
            need: need.to_pointer(),
            frozen_newindex: noop,
            errtext,
            _keep: vec![cont, drop, respond, respond_mt, grpc, grpc_mt, need.clone()],
        };
        Ok((tok, need))
    }

    fn register_fn(lua: &Lua, state: Rc<RefCell<LoadState>>) -> mlua::Result<Function> {
        lua.create_function(move |lua, (p, e, f, opts): (Value, Value, Value, Value)| {
            let line = lua.inspect_stack(1, |d| d.current_line()).flatten();
            let mut st = state.borrow_mut();
            let (file, plugin) = (st.file.clone(), st.plugin.clone());
            let mut errs: Vec<String> = Vec::new();
            let row = match (&p, &e) {
                (Value::String(p), Value::String(e)) => {
                    surface::find(&p.to_string_lossy(), &e.to_string_lossy())
                }
                _ => None,
            };
            if row.is_none() {
                errs.push(format!(
                    "({}, {}) not in RFC §9.3 hook surface",
                    describe(&p),
                    describe(&e)
                ));
            }
            let func = match f {
                Value::Function(f) => Some(f),
                _ => {
                    errs.push("register_hook: handler must be a function".into());
                    None
                }
            };
            let mut phase = Phase::PrePipeline;
            let mut on_error = OnError::Skip;
            let mut name = format!("{}:{}", plugin, line.unwrap_or(0));
            match &opts {
                Value::Nil => {}
                Value::Table(t) => {
                    let ph: Value = t.get("phase")?;
                    if !ph.is_nil() {
                        match row {
                            Some(r) if r.lifecycle => errs.push(format!(
                                "lifecycle event {}.{} takes no phase",
                                r.protocol, r.event_name
                            )),
                            _ => match ph
                                .as_string()
                                .and_then(|s| Phase::parse(&s.to_string_lossy()))
                            {
                                Some(x) => phase = x,
                                None => errs.push(format!("unknown phase '{}'", describe(&ph))),
                            },
                        }
                    }
                    let oe: Value = t.get("on_error")?;
                    if !oe.is_nil() {
                        match oe.as_string().map(|s| s.to_string_lossy()).as_deref() {
                            Some("skip") => on_error = OnError::Skip,
                            Some("abort") => on_error = OnError::Abort,
                            _ => errs.push(format!("unknown on_error '{}'", describe(&oe))),
                        }
                    }
                    match t.get::<Value>("name")? {
                        Value::Nil => {}
                        Value::String(s) => name = s.to_string_lossy(),
                        other => errs.push(format!(
                            "register_hook: name must be a string, got {}",
                            other.type_name()
                        )),
                    }
                }
                other => errs.push(format!(
                    "register_hook: options must be a table, got {}",
                    other.type_name()
                )),
            }
            if !errs.is_empty() {
                for message in errs {
                    st.issues.push(LoadIssue {
                        file: file.clone(),
                        line,
                        message,
                    });
                }
                return Ok(());
            }
            let (Some(row), Some(func)) = (row, func) else {
                return Ok(());
            };
            let phase = if row.lifecycle { None } else { Some(phase) };
            let info = st.hooks.len();
            st.hooks.push(HookInfo {
                protocol: row.protocol,
                event: row.event_name,
                phase,
                on_error,
                name,
                plugin: plugin.to_string(),
            });
            st.regs.push((
                row.event,
                phase.map_or(0, Phase::idx),
                HookEntry {
                    fref: ffi::LUA_NOREF,
                    _func: func,
                    info,
                    on_error,
                    plugin,
                },
            ));
            Ok(())
        })
    }

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

fn get_status(t: &Table, default: i64) -> mlua::Result<i64> {
    match t.get::<Value>("status")? {
        Value::Nil => Ok(default),
        Value::Integer(i) => Ok(i),
        Value::Number(n) if n.fract() == 0.0 => Ok(n as i64),
        other => Err(lua_err(format!(
            "status must be an integer, got {}",
            other.type_name()
        ))),
    }
}

fn opt_bytes(t: &Table, key: &str) -> mlua::Result<Option<Bytes>> {
    match t.get::<Value>(key)? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(Bytes::copy_from_slice(&s.as_bytes()))),
        other => Err(lua_err(format!(
            "{key} must be a string, got {}",
            other.type_name()
        ))),
    }
}

fn build_response(t: Option<&Table>) -> mlua::Result<Response> {
    let mut r = placeholder_response();
    r.status = 200;
    r.body = Body::Full(Bytes::new());
    if let Some(t) = t {
        let s = get_status(t, 200)?;
        // a 1xx cannot end an exchange: it would leave the client waiting for the answer
        r.status = u16::try_from(s)
            .ok()
            .filter(|s| (200..=999).contains(s))
            .ok_or_else(|| {
                lua_err(format!(
                    "status must be 200-999 (a final response), got {s}"
                ))
            })?;
        if let Some(h) = t.get::<Option<Table>>("headers")? {
            r.headers = msg::headers_from_table(&h)?;
        }
        if let Some(b) = opt_bytes(t, "body")? {
            r.body = Body::Full(b);
        }
        if let Some(reason) = opt_bytes(t, "reason")? {
            r.reason = String::from_utf8_lossy(&reason).into_owned();
        }
    }
    Ok(r)
}

fn percent_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn build_grpc(t: Option<&Table>) -> mlua::Result<Response> {
    use base64::Engine as _;
    let mut r = placeholder_response();
    r.status = 200;
    r.version = Version::Http2;
    r.body = Body::Full(Bytes::new());
    r.headers.add("content-type", "application/grpc");
    let (status, message, details, trailers) = match t {
        Some(t) => (
            get_status(t, 2)?,
            opt_bytes(t, "message")?,
            opt_bytes(t, "details")?,
            t.get::<Option<Table>>("trailers")?,
        ),
        None => (2, None, None, None),
    };
    r.headers.add("grpc-status", status.to_string());
    if let Some(m) = message {
        r.headers.add("grpc-message", percent_encode(&m));
    }
    if let Some(d) = details {
        r.headers.add(
            "grpc-status-details-bin",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&d),
        );
    }
    if let Some(tr) = trailers {
        for h in msg::headers_from_table(&tr)?.iter() {
            r.headers.add(h.name.clone(), h.value.clone());
        }
    }
    Ok(r)
}

/// Loads `files` into a scratch state and returns their hooks (for `luring check` and reload).
pub fn check(files: &[PathBuf]) -> Result<Vec<HookInfo>, LoadError> {
    let cfg = EngineConfig {
        files: files.to_vec(),
        ..EngineConfig::default()
    };
    Engine::load(&cfg, 0).map(|e| e.hooks.clone())
}

/// What `luring check` prints: one line per hook (protocol, event, phase, on_error, name).
pub fn format_hooks(hooks: &[HookInfo]) -> String {
    let mut out = String::new();
    for h in hooks {
        out.push_str(&format!(
            "{:<10} {:<14} {:<13} {:<5} {}\n",
            h.protocol,
            h.event,
            h.phase.map_or("-", Phase::as_str),
            h.on_error.as_str(),
            h.name
        ));
    }
    out
}

/// Anchors `v` in the registry; the ref is pushed with one `lua_rawgeti`.
fn registry_ref(lua: &Lua, v: &Value) -> mlua::Result<c_int> {
    lua.exec_raw_lua(|raw| {
        // SAFETY: main state outside callbacks; the pushed value is popped by luaL_ref.
        unsafe {
            if ffi::lua_checkstack(raw.state(), 3) == 0 {
                return Err(mlua::Error::runtime("stack overflow"));
            }
            raw.push_value(v)?;
            Ok(ffi::luaL_ref(raw.state(), ffi::LUA_REGISTRYINDEX))
        }
    })
}
