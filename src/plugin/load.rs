//! Loading: building an [`Engine`] from plugin files, `register_hook` and its checks
//! against the surface, the load errors `luring check` reports, and what it lists.

use super::budget::Budget;
use super::memory::MemGuard;
use super::msg::{Core, LCtx};
use super::surface::{self, Event, Phase, SURFACE};
use super::{describe, lua_err, Engine, EngineConfig, EngineStats, HookEntry, Rt};
use mlua::{ffi, Function, Lua, LuaOptions, StdLib, Table, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

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
    /// A failure of the engine itself (not of a plugin), in the shape callers print.
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

/// What `register_hook` collects while the files of one `Engine::load` run.
struct LoadState {
    file: PathBuf,
    plugin: Rc<str>,
    regs: Vec<(Event, usize, HookEntry)>,
    hooks: Vec<HookInfo>,
    issues: Vec<LoadIssue>,
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
            notes: super::flow_notes::NoteBook::new(cfg.record),
            wait_ctx: Cell::new(super::io::WaitCtx::Load),
        });
        let (tok, need) = Self::init(&lua, &rt).map_err(LoadError::engine)?;
        // Outside any callback this is the main state, which lives as long as `lua`.
        let lstate = lua.exec_raw_lua(|raw| raw.state());
        let wd = Budget::install(lstate);
        let mem = MemGuard::install(lstate, cfg.memory_limit);
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
            Self::load_file(&lua, (&wd, &mem), &rt, &state, file, load_budget);
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
        // looked up once here, so a hook call bumps its cells without a map lookup
        let hook_metrics = hooks
            .iter()
            .map(|h| {
                let event = format!("{}.{}", h.protocol, h.event);
                crate::metrics::hook_stat(&h.plugin, &h.name, &event)
            })
            .collect();
        Ok(Engine {
            mem,
            wd,
            feed: RefCell::new(None),
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
            hook_metrics,
        })
    }

    /// Runs one plugin file's top level; its problems go to `state`, so the next file
    /// still loads and every problem of every file is reported at once.
    fn load_file(
        lua: &Lua,
        (wd, mem): (&Budget, &MemGuard),
        rt: &Rt,
        state: &RefCell<LoadState>,
        file: &Path,
        budget: Duration,
    ) {
        let plugin: Rc<str> = Rc::from(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .as_str(),
        );
        {
            let mut s = state.borrow_mut();
            s.file = file.to_path_buf();
            s.plugin = plugin.clone();
        }
        *rt.plugin.borrow_mut() = plugin.clone();
        let src = match std::fs::read(file) {
            Ok(s) => s,
            Err(e) => {
                state.borrow_mut().issues.push(LoadIssue {
                    file: file.to_path_buf(),
                    line: None,
                    message: format!("cannot read plugin: {e}"),
                });
                return;
            }
        };
        // a plugin's own modules sit next to it: require("util") finds util.lua there
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            add_module_dir(lua, dir);
        }
        if src.first() == Some(&0x1b) {
            state.borrow_mut().issues.push(LoadIssue {
                file: file.to_path_buf(),
                line: None,
                message: "is a binary (bytecode) chunk: plugins load Lua source text only".into(),
            });
            return;
        }
        wd.enter(budget);
        mem.enforce(true);
        // text only: LuaJIT does not verify bytecode, so a binary chunk could break
        // memory safety
        let res = lua
            .load(&src[..])
            .set_name(format!("@{}", file.display()))
            .set_mode(mlua::ChunkMode::Text)
            .exec();
        mem.enforce(false);
        wd.leave();
        if let Err(e) = res {
            if MemGuard::hit() {
                mem.recover();
            }
            let text = match &e {
                _ if MemGuard::hit() => mem.text(),
                mlua::Error::SyntaxError { message, .. } => message.clone(),
                mlua::Error::RuntimeError(m) => m.clone(),
                other => other.to_string(),
            };
            let (line, message) = split_location(file, &text);
            state.borrow_mut().issues.push(LoadIssue {
                file: file.to_path_buf(),
                line,
                message,
            });
        }
    }

    /// The `register_hook` global of a loading state: checks a registration against the
    /// surface and records it (or its problems) in `state`.
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
}

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

/// Splits "path:12: message" into (12, "message") when it names `file`.
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
