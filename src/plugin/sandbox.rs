//! The Lua state's sandbox: the init chunk that locks the standard library down and
//! creates the `action` tokens, the identities the dispatcher compares results by, and
//! the globals plugins log and share through (`print`, `log`, `shared`), and `luring`
//! (the helpers: `luring.protobuf`, and the waiting calls of `io`).

use super::budget::Budget;
use super::memory::MemGuard;
use super::{describe, protobuf, shared, Engine, Rt};
use mlua::{Function, Lua, Table, Value};
use std::rc::Rc;

/// Values the init chunk creates and the dispatcher compares by identity.
pub(super) struct Tokens {
    pub(super) cont: *const std::ffi::c_void,
    pub(super) drop: *const std::ffi::c_void,
    pub(super) respond: *const std::ffi::c_void,
    pub(super) respond_mt: *const std::ffi::c_void,
    pub(super) grpc: *const std::ffi::c_void,
    pub(super) grpc_mt: *const std::ffi::c_void,
    pub(super) need: *const std::ffi::c_void,
    /// What a hook waiting on I/O yields first (io.lua).
    pub(super) io: *const std::ffi::c_void,
    pub(super) frozen_newindex: Function,
    /// `function(dict)`: the `__index` of a frozen dict with nested tables.
    pub(super) deep_index: Function,
    /// `function(co, err)`: the traceback of a hook that failed in coroutine `co`.
    pub(super) errtext: Function,
    _keep: Vec<Table>,
}

/// Run once per state with `expired`; returns what `Tokens` holds. Plugins load after it,
/// so nothing they do can reach the removed libraries.
const INIT: &str = r#"
local expired = ...
local oxpcall, opcall, tb, tostring, type = xpcall, pcall, debug.traceback, tostring, type
local error, setmetatable = error, setmetatable

-- Native-stack nesting: a resume, and a library function that calls back into Lua from
-- C, each recurse on the worker thread's stack (string.gsub keeps an 8 KiB buffer per
-- level), and LuaJIT has no limit of its own: without one, a plugin could overflow the
-- stack and abort the process. Nesting stops at MAX_NEST, as Lua 5.1 stops C calls at 200.
local MAX_NEST, nest = 100, 0
local function unnest_rethrow(ok, ...)
  nest = nest - 1
  if ok then return ... end
  error((...), 0)
end
local function guarded(f, name)
  return function(...)
    if nest >= MAX_NEST then error(name .. ": calls into Lua nested too deep", 2) end
    nest = nest + 1
    return unnest_rethrow(opcall(f, ...))
  end
end

-- Compiled traces never call the instruction-count hook, so a budget can only be
-- enforced on interpreted code: the JIT is switched off for this state, for good.
jit.off()
jit.flush()
-- (preload too: jit.profile would run a plugin's callback at any time, outside budgets)
for _, k in ipairs({"jit", "jit.util", "jit.opt", "jit.profile", "io", "ffi"}) do
  package.loaded[k], package.preload[k] = nil, nil
end
jit, io = nil, nil
package.loadlib = nil
if package.loaders then package.loaders[3], package.loaders[4] = nil, nil end

-- What plugins keep of os: the clock and the environment. Gone: exit (ends every
-- worker), execute (forks a shell and blocks the core until it exits), remove, rename
-- and tmpname (file system calls block the core; io is gone too), setlocale
-- (process-wide: would change number formatting in every worker).
for _, k in ipairs({"exit", "execute", "remove", "rename", "tmpname", "setlocale"}) do os[k] = nil end

-- LuaJIT does not verify bytecode: a crafted binary chunk can read and write memory
-- at will. Every way to load code takes source text only, and string.dump, which
-- only makes bytecode, goes too.
string.dump = nil
local oload, oloadfile, select = load, loadfile, select
local function text_only(f, err)
  if f == nil and type(err) == "string" and err:find("wrong mode", 1, true) then
    err = "binary (bytecode) chunks are refused: plugins load Lua source text only"
  end
  return f, err
end
local gload = guarded(oload, "load")
load = function(chunk, name, _, ...)
  local l = type(chunk) == "function" and gload or oload
  if select('#', ...) > 0 then return text_only(l(chunk, name, "t", ...)) end
  return text_only(l(chunk, name, "t"))
end
loadstring = load
-- no path means stdin, which would block the worker for good
local function need_path(path, fn)
  if type(path) ~= "string" then error(fn .. ": a file path is required", 3) end
end
loadfile = function(path, _, ...)
  need_path(path, "loadfile")
  if select('#', ...) > 0 then return text_only(oloadfile(path, "t", ...)) end
  return text_only(oloadfile(path, "t"))
end
dofile = function(path)
  need_path(path, "dofile")
  local f = assert(text_only(oloadfile(path, "t")))
  return f()
end
if package.loaders then
  local searchpath, fmt = package.searchpath, string.format
  package.loaders[2] = function(name)
    local path, err = searchpath(name, package.path)
    if not path then return err end
    local f, lerr = text_only(oloadfile(path, "t"))
    if not f then
      error(fmt("error loading module '%s' from file '%s':\n\t%s", name, path, lerr), 2)
    end
    return f
  end
end

-- A userdata finalizer would run at collection time, outside any hook's budget.
newproxy = nil
-- The collector's tuning is the state's, shared by every plugin: "stop" would let
-- garbage pile up to the memory limit. Plugins may collect and read the count.
local ocollect = collectgarbage
collectgarbage = function(opt, arg)
  if opt == nil or opt == "collect" or opt == "count" or opt == "step" then
    return ocollect(opt, arg)
  end
  error("collectgarbage: option '" .. tostring(opt) .. "' is not available to plugins", 2)
end

local function errtext(co, e) return tb(co, tostring(e)) end

-- A plugin's own pcall must not swallow the budget error of an endless loop.
local function pass(ok, ...)
  if not ok and expired() then error((...), 0) end
  return ok, ...
end
pcall = function(f, ...) return pass(opcall(f, ...)) end
xpcall = function(f, h, ...) return pass(oxpcall(f, h, ...)) end
-- (nesting: see MAX_NEST)
local ores, ocreate = coroutine.resume, coroutine.create
local function unnest(...) nest = nest - 1 ; return ... end
coroutine.resume = function(co, ...)
  if type(co) ~= "thread" then return ores(co, ...) end
  if nest >= MAX_NEST then return false, "coroutines nested too deep" end
  nest = nest + 1
  return pass(unnest(ores(co, ...)))
end
local resume = coroutine.resume
local ogsub, osort = string.gsub, table.sort
local ggsub, gsort = guarded(ogsub, "string.gsub"), guarded(osort, "table.sort")
string.gsub = function(s, p, r, n)
  if type(r) == "string" then return ogsub(s, p, r, n) end
  return ggsub(s, p, r, n)
end
table.sort = function(t, cmp)
  if cmp == nil then return osort(t) end
  return gsort(t, cmp)
end
table.foreach, table.foreachi = nil, nil
local function wrapped(ok, ...)
  if ok then return ... end
  error((...), 0)
end
coroutine.wrap = function(f)
  local co = ocreate(f)
  return function(...) return wrapped(resume(co, ...)) end
end

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

-- A frozen dict's nested tables (grpc on_end's trailers) are copied on each read, so a
-- hook that writes into one cannot change what the next hook sees.
local next = next
local function copy(t)
  local c = {}
  for k, v in next, t do
    if type(v) == "table" then v = copy(v) end
    c[k] = v
  end
  return c
end
local function deep_index(dict)
  return function(_, k)
    local v = dict[k]
    if type(v) == "table" then return copy(v) end
    return v
  end
end
return errtext, CONTINUE, DROP, RESPOND, RESP_MT, RESPOND_GRPC, GRPC_MT, function() end, deep_index
"#;

/// One log line from `print`/`log.*` arguments, tab-separated as Lua's `print` does.
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

impl Engine {
    /// Runs the init chunk and sets the globals; `need` is the token a body getter yields.
    pub(super) fn init(lua: &Lua, rt: &Rc<Rt>) -> mlua::Result<(Tokens, Table)> {
        let need = lua.create_table()?;
        let expired = lua.create_function(|_, ()| Ok(Budget::expired() || MemGuard::hit()))?;
        let (errtext, cont, drop, respond, respond_mt, grpc, grpc_mt, noop, deep_index): (
            Function,
            Table,
            Table,
            Table,
            Table,
            Table,
            Table,
            Function,
            Function,
        ) = lua.load(INIT).set_name("=luring-init").call(expired)?;

        let g = lua.globals();
        g.set("shared", shared::table(lua)?)?;
        let luring = lua.create_table()?;
        luring.raw_set("protobuf", protobuf::table(lua)?)?;
        super::flow_notes::install(lua, &luring, rt)?;
        let io = super::io::install(lua, &luring, rt)?;
        g.set("luring", luring)?;
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
            io: io.to_pointer(),
            frozen_newindex: noop,
            deep_index,
            errtext,
            _keep: vec![
                cont,
                drop,
                respond,
                respond_mt,
                grpc,
                grpc_mt,
                need.clone(),
                io,
            ],
        };
        Ok((tok, need))
    }
}
