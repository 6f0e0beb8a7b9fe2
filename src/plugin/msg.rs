//! Message userdata: lazy views over a Rust message held in an engine-owned slot.
//!
//! While a chain runs, the proxy's message is moved into a [`Slot`] of the engine's
//! [`Core`]; the Lua side only holds plain userdata tagged with (slot, generation). When
//! the chain returns the message moves back out and the slot's generation changes, so a
//! `msg` a plugin stashed in a global goes dead ("message is no longer valid") without
//! any finaliser or per-call Rust allocation (as in Envoy's Lua filter).
//!
//! The hot accessors (message fields, `headers:get/set/add`, header indexing) are raw
//! `lua_CFunction`s: mlua's generic callback path (registry type checks, reference
//! slots for every argument) cost several times the work they wrap. This is the only
//! module of the engine with `unsafe` code besides the budget hook.

use super::RawChunk;
use crate::http::{Body, Headers, Request, Response, Version};
use bytes::Bytes;
use mlua::{
    ffi, Error, Function, Lua, MetaMethod, Result, Table, UserData, UserDataMethods, Value,
};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;

/// Holds a raw chunk for the duration of a chain; empty before and after.
pub(crate) struct Env<T> {
    slot: RefCell<Option<T>>,
}

impl<T> Env<T> {
    pub(crate) fn new(v: T) -> Rc<Self> {
        Rc::new(Env {
            slot: RefCell::new(Some(v)),
        })
    }
    pub(crate) fn take(&self) -> Option<T> {
        self.slot.borrow_mut().take()
    }
    fn with<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        match self.slot.borrow_mut().as_mut() {
            Some(m) => f(m),
            None => Err(Error::runtime("message is no longer valid")),
        }
    }
}

/// A message a slot can hold.
pub(crate) enum Msg {
    Req(Request),
    Resp(Response),
}

const K_REQ: u8 = 1;
const K_RESP: u8 = 2;
const K_HDR: u8 = 3;
const K_TRL: u8 = 4;
const MAGIC: u32 = 0x6c75_7267;

/// The whole payload of a message or headers userdata: plain data, no finaliser.
#[repr(C)]
#[derive(Clone, Copy)]
struct Tag {
    magic: u32,
    kind: u8,
    ro: u8,
    slot: u32,
    gen: u32,
}

/// Getter waiting for the body when a hook suspended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    None,
    Body,
    Trailers,
}

struct Slot {
    gen: u32,
    used: bool,
    ro: bool,
    msg: Option<Msg>,
    /// True once `msg.headers` was created for this message (it sits in the anchor
    /// table, see `Core::anchor`).
    headers: bool,
    /// Response slots: the proxy's request while a run is in progress.
    req_ptr: *const Request,
    /// Response slots: slot of the read-only `resp.request` view, once created.
    view: Option<u32>,
    pending: Pending,
}

/// What `ctx` shows; refilled before each chain run (and each resume).
pub(crate) struct CtxData {
    pub(crate) conn_id: u64,
    pub(crate) flow_id: Option<u64>,
    pub(crate) client_addr: std::net::SocketAddr,
    pub(crate) server_addr: Option<std::net::SocketAddr>,
    pub(crate) sni: Option<String>,
    pub(crate) listener_name: Rc<str>,
    pub(crate) worker: usize,
    pub(crate) plugin: Rc<str>,
}

/// Engine-owned state the C accessors reach through a light-userdata upvalue.
pub(crate) struct Core {
    /// The main state.
    state: *mut ffi::lua_State,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    pub(crate) ctx: RefCell<CtxData>,
    mt_req: Cell<c_int>,
    mt_resp: Cell<c_int>,
    mt_hdr: Cell<c_int>,
    need: Cell<c_int>,
    /// Registry ref of the anchor table: slot `i`'s message userdata at `2i+1`, its
    /// `msg.headers` userdata at `2i+2`. They stay there until the slot is reused
    /// (stale userdata hold no Rust value, so keeping them a little longer is harmless),
    /// which costs a chain two `rawseti` instead of a `luaL_ref`/`luaL_unref` pair.
    anchor: Cell<c_int>,
    /// `lua_topointer` of the interned strings "get", "set", "add" (kept alive as keys
    /// of the headers methods table): the headers `__index` compares keys by identity.
    hdr_keys: Cell<[usize; 3]>,
    max_body: usize,
}

/// A slot handed out for one chain; `gen` makes stale handles harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotId {
    idx: u32,
    gen: u32,
}

type Fail = Cow<'static, str>;
const STALE: &str = "message is no longer valid";

impl Core {
    pub(crate) fn new(state: *mut ffi::lua_State, max_body: usize, worker: usize) -> Rc<Core> {
        Rc::new(Core {
            state,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            ctx: RefCell::new(CtxData {
                conn_id: 0,
                flow_id: None,
                client_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                server_addr: None,
                sni: None,
                listener_name: Rc::from(""),
                worker,
                plugin: Rc::from(""),
            }),
            mt_req: Cell::new(ffi::LUA_NOREF),
            mt_resp: Cell::new(ffi::LUA_NOREF),
            mt_hdr: Cell::new(ffi::LUA_NOREF),
            need: Cell::new(ffi::LUA_NOREF),
            anchor: Cell::new(ffi::LUA_NOREF),
            hdr_keys: Cell::new([0; 3]),
            max_body,
        })
    }

    /// Builds the metatables and C accessors; `need` is the token a getter yields.
    pub(crate) fn install(self: &Rc<Self>, lua: &Lua, need: &Table) -> Result<()> {
        let cold = cold_fns(lua, self)?;
        let core_ptr = Rc::as_ptr(self) as *mut c_void;
        lua.exec_raw_lua(|raw| -> Result<()> {
            let l = raw.state();
            // SAFETY: main state outside any callback; every push is balanced by a
            // luaL_ref or a setfield, and the stack has room (checked first).
            unsafe {
                if ffi::lua_checkstack(l, 8) == 0 {
                    return Err(Error::runtime("stack overflow"));
                }
                raw.push(need)?;
                self.need.set(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX));
                ffi::lua_createtable(l, 64, 0);
                self.anchor.set(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX));
                for (kind, cell) in [(K_REQ, &self.mt_req), (K_RESP, &self.mt_resp)] {
                    ffi::lua_createtable(l, 0, 3);
                    ffi::lua_pushlightuserdata(l, core_ptr);
                    ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, self.anchor.get() as _);
                    ffi::lua_pushcclosure(l, msg_index, 2);
                    ffi::lua_setfield(l, -2, c"__index".as_ptr());
                    raw.push(if kind == K_REQ {
                        &cold.req_newindex
                    } else {
                        &cold.resp_newindex
                    })?;
                    ffi::lua_setfield(l, -2, c"__newindex".as_ptr());
                    ffi::lua_pushboolean(l, 0);
                    ffi::lua_setfield(l, -2, c"__metatable".as_ptr());
                    cell.set(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX));
                }
                ffi::lua_createtable(l, 0, 4);
                // methods table: upvalue 1 of the headers __index; the hot methods are
                // also upvalues 3-5, found by key identity (`hdr_keys`)
                ffi::lua_createtable(l, 0, 6);
                let mut keys = [0usize; 3];
                for (i, (name, f)) in [
                    (c"get", hdr_get as ffi::lua_CFunction),
                    (c"set", hdr_set),
                    (c"add", hdr_add),
                ]
                .into_iter()
                .enumerate()
                {
                    ffi::lua_pushlightuserdata(l, core_ptr);
                    ffi::lua_pushcclosure(l, f, 1);
                    ffi::lua_setfield(l, -2, name.as_ptr());
                    ffi::lua_pushstring(l, name.as_ptr());
                    keys[i] = ffi::lua_topointer(l, -1) as usize;
                    ffi::lua_pop(l, 1);
                }
                self.hdr_keys.set(keys);
                for (name, f) in [
                    (c"get_all", &cold.get_all),
                    (c"remove", &cold.remove),
                    (c"pairs", &cold.pairs),
                ] {
                    raw.push(f)?;
                    ffi::lua_setfield(l, -2, name.as_ptr());
                }
                let methods = ffi::lua_gettop(l);
                ffi::lua_pushlightuserdata(l, core_ptr);
                for name in [c"get", c"set", c"add"] {
                    ffi::lua_getfield(l, methods, name.as_ptr());
                }
                ffi::lua_pushcclosure(l, hdr_index, 5);
                ffi::lua_setfield(l, -2, c"__index".as_ptr());
                raw.push(&cold.len)?;
                ffi::lua_setfield(l, -2, c"__len".as_ptr());
                ffi::lua_pushboolean(l, 0);
                ffi::lua_setfield(l, -2, c"__metatable".as_ptr());
                self.mt_hdr.set(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX));
            }
            Ok(())
        })
    }

    /// Moves `msg` into a fresh slot and creates its userdata (anchored until `release`).
    // The message comes back on failure so the proxy keeps it; boxing would allocate.
    #[allow(clippy::result_large_err)]
    pub(crate) fn open(&self, msg: Msg, ro: bool) -> std::result::Result<SlotId, Msg> {
        let idx = {
            let mut slots = self.slots.borrow_mut();
            match self.free.borrow_mut().pop() {
                Some(i) => i,
                None => {
                    slots.push(Slot {
                        gen: 0,
                        used: false,
                        ro: false,
                        msg: None,
                        headers: false,
                        req_ptr: std::ptr::null(),
                        view: None,
                        pending: Pending::None,
                    });
                    (slots.len() - 1) as u32
                }
            }
        };
        let kind = match msg {
            Msg::Req(_) => K_REQ,
            Msg::Resp(_) => K_RESP,
        };
        let gen = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[idx as usize];
            s.gen = s.gen.wrapping_add(1);
            s.used = true;
            s.ro = ro;
            s.msg = Some(msg);
            s.headers = false;
            s.gen
        };
        let id = SlotId { idx, gen };
        let l = self.state;
        // SAFETY: `l` is the live main state (engines are single-threaded and the
        // state outlives the core's use); the anchor table and the userdata are pushed,
        // the userdata goes into the table and the table is popped.
        let made = unsafe {
            if ffi::lua_checkstack(l, 3) == 0 {
                false
            } else {
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, self.anchor.get() as _);
                push_tag(l, self, kind, id, ro);
                ffi::lua_rawseti_(l, -2, 2 * idx as c_int + 1);
                ffi::lua_pop(l, 1);
                true
            }
        };
        if !made {
            let m = self.take(id);
            self.release(id);
            return Err(m.expect("slot just filled"));
        }
        Ok(id)
    }

    /// Pushes the slot's message userdata onto `l` (any thread of this state).
    ///
    /// # Safety
    /// `l` must be a thread of the core's state with two free stack slots.
    pub(crate) unsafe fn push_ud(&self, l: *mut ffi::lua_State, id: SlotId) {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, self.anchor.get() as _);
        ffi::lua_rawgeti_(l, -1, 2 * id.idx as c_int + 1);
        ffi::lua_replace(l, -2);
    }

    /// Moves the message out (the slot stays allocated for a suspended chain).
    pub(crate) fn take(&self, id: SlotId) -> Option<Msg> {
        let mut slots = self.slots.borrow_mut();
        let s = slots.get_mut(id.idx as usize)?;
        if s.gen != id.gen || !s.used {
            return None;
        }
        s.msg.take()
    }

    /// Puts a message back into a suspended chain's slot.
    #[allow(clippy::result_large_err)]
    pub(crate) fn put(&self, id: SlotId, m: Msg) -> std::result::Result<(), Msg> {
        let mut slots = self.slots.borrow_mut();
        match slots.get_mut(id.idx as usize) {
            Some(s) if s.gen == id.gen && s.used => {
                s.msg = Some(m);
                Ok(())
            }
            _ => Err(m),
        }
    }

    /// Frees the slot (and its request view): every userdata of it goes stale. Touches
    /// no Lua state (the anchored userdata are replaced when the slot is reused), so it
    /// is safe after the engine is gone.
    pub(crate) fn release(&self, id: SlotId) {
        let view = {
            let mut slots = self.slots.borrow_mut();
            let Some(s) = slots.get_mut(id.idx as usize) else {
                return;
            };
            if s.gen != id.gen || !s.used {
                return;
            }
            s.used = false;
            s.msg = None;
            s.gen = s.gen.wrapping_add(1);
            s.req_ptr = std::ptr::null();
            s.pending = Pending::None;
            s.headers = false;
            s.view.take()
        };
        self.free.borrow_mut().push(id.idx);
        if let Some(v) = view {
            let gen = self.slots.borrow()[v as usize].gen;
            self.release(SlotId { idx: v, gen });
        }
    }

    /// Response slots: `resp.request` reads `r` until `clear_request`.
    pub(crate) fn set_request(&self, id: SlotId, r: &Request) {
        let view = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[id.idx as usize];
            s.req_ptr = r;
            s.view
        };
        if let Some(v) = view {
            let mut slots = self.slots.borrow_mut();
            slots[v as usize].msg = Some(Msg::Req(r.clone()));
        }
    }

    /// Ends the `set_request` window; a stashed `resp.request` goes dead.
    pub(crate) fn clear_request(&self, id: SlotId) {
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[id.idx as usize];
        s.req_ptr = std::ptr::null();
        if let Some(v) = s.view {
            slots[v as usize].msg = None;
        }
    }

    /// The getter a suspended hook waits in, cleared.
    pub(crate) fn take_pending(&self, id: SlotId) -> Pending {
        let mut slots = self.slots.borrow_mut();
        std::mem::replace(&mut slots[id.idx as usize].pending, Pending::None)
    }

    /// After a body wait: pushes what the waiting getter returns, or the error it raises.
    ///
    /// # Safety
    /// `l` must be the suspended thread with a free stack slot.
    pub(crate) unsafe fn push_resumed(
        &self,
        l: *mut ffi::lua_State,
        id: SlotId,
        p: Pending,
    ) -> std::result::Result<(), Fail> {
        let tag = Tag {
            magic: MAGIC,
            kind: K_REQ,
            ro: 0,
            slot: id.idx,
            gen: id.gen,
        };
        match msg_field(
            self,
            tag,
            if p == Pending::Body {
                b"body"
            } else {
                b"trailers"
            },
        ) {
            Ok(Got::Need) => Err("body is not available".into()),
            Ok(g) => {
                push_got(l, self, g);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn with_msg<R>(
        &self,
        t: Tag,
        f: impl FnOnce(&mut Slot) -> std::result::Result<R, Fail>,
    ) -> std::result::Result<R, Fail> {
        let mut slots = self.slots.try_borrow_mut().map_err(|_| Fail::from(STALE))?;
        match slots.get_mut(t.slot as usize) {
            Some(s) if s.gen == t.gen && s.used && s.msg.is_some() => f(s),
            _ => Err(STALE.into()),
        }
    }

    fn with_headers<R>(
        &self,
        t: Tag,
        write: bool,
        f: impl FnOnce(&mut Headers) -> R,
    ) -> std::result::Result<R, Fail> {
        if write && t.ro != 0 {
            return Err("headers are read-only here".into());
        }
        self.with_msg(t, |s| {
            let trailers = t.kind == K_TRL;
            let h = match s.msg.as_mut() {
                Some(Msg::Req(r)) if trailers => r.trailers.as_mut(),
                Some(Msg::Resp(r)) if trailers => r.trailers.as_mut(),
                Some(Msg::Req(r)) => Some(&mut r.headers),
                Some(Msg::Resp(r)) => Some(&mut r.headers),
                None => None,
            };
            match h {
                Some(h) => Ok(f(h)),
                None => Err("trailers are no longer present".into()),
            }
        })
    }
}

/// Pushes a new tagged userdata with its kind's metatable.
///
/// # Safety
/// `l` must be a thread of the core's state with two free stack slots.
unsafe fn push_tag(l: *mut ffi::lua_State, core: &Core, kind: u8, id: SlotId, ro: bool) {
    let p = ffi::lua_newuserdata(l, std::mem::size_of::<Tag>()) as *mut Tag;
    p.write_unaligned(Tag {
        magic: MAGIC,
        kind,
        ro: ro as u8,
        slot: id.idx,
        gen: id.gen,
    });
    let mt = match kind {
        K_REQ => core.mt_req.get(),
        K_RESP => core.mt_resp.get(),
        _ => core.mt_hdr.get(),
    };
    ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, mt as _);
    ffi::lua_setmetatable(l, -2);
}

/// Reads our tag from stack slot `idx`, or None for any other value.
///
/// # Safety
/// `l` must be a valid state and `idx` an acceptable index.
unsafe fn tag_at(l: *mut ffi::lua_State, idx: c_int) -> Option<Tag> {
    if ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA
        || ffi::lua_objlen(l, idx) != std::mem::size_of::<Tag>()
    {
        return None;
    }
    let t = (ffi::lua_touserdata(l, idx) as *const Tag).read_unaligned();
    (t.magic == MAGIC).then_some(t)
}

/// The core a C accessor was registered with (upvalue 1).
///
/// # Safety
/// Only for the closures built in `Core::install`; the engine keeps the `Rc<Core>` alive
/// for as long as its state can run code.
unsafe fn core_of<'a>(l: *mut ffi::lua_State) -> &'a Core {
    &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const Core)
}

/// Pushes a string. mlua-sys's `lua_pushlstring` (5.1 compat) also calls
/// `lua_tolstring` on the result for its return value; this does not.
///
/// # Safety
/// `l` must be a valid state with a free stack slot.
#[inline]
unsafe fn push_bytes(l: *mut ffi::lua_State, b: &[u8]) {
    if b.is_empty() {
        ffi::lua_pushlstring_(l, c"".as_ptr(), 0);
    } else {
        ffi::lua_pushlstring_(l, b.as_ptr().cast(), b.len());
    }
}

/// Raises `e` as a Lua error; nothing with a destructor is left alive in this frame.
unsafe fn raise(l: *mut ffi::lua_State, e: Fail) -> c_int {
    ffi::lua_pushlstring(l, e.as_ptr().cast(), e.len());
    drop(e);
    ffi::lua_error(l)
}

/// A value computed under a slot borrow, pushed after the borrow ends.
enum Got {
    Nil,
    Bytes(Bytes),
    Str(Cow<'static, str>),
    Int(i64),
    Num(f64),
    /// `msg.headers`: whether its userdata exists already.
    Headers(bool),
    NewTrailers(Tag),
    View(Option<u32>),
    Need,
}

/// Pushes a `Got` (the trailers case creates a userdata).
unsafe fn push_got(l: *mut ffi::lua_State, core: &Core, g: Got) {
    match g {
        Got::Nil | Got::Need | Got::View(_) | Got::Headers(_) => ffi::lua_pushnil(l),
        Got::Bytes(b) => {
            push_bytes(l, &b);
        }
        Got::Str(s) => {
            push_bytes(l, s.as_bytes());
        }
        Got::Int(i) => ffi::lua_pushinteger(l, i as _),
        Got::Num(n) => ffi::lua_pushnumber(l, n),
        Got::NewTrailers(t) => push_tag(
            l,
            core,
            K_TRL,
            SlotId {
                idx: t.slot,
                gen: t.gen,
            },
            t.ro != 0,
        ),
    }
}

fn body_got(b: &Body, max: usize) -> std::result::Result<Got, Fail> {
    match b {
        Body::Full(bytes) => Ok(Got::Bytes(bytes.clone())),
        Body::Streaming => Ok(Got::Need),
        Body::TooLarge => Err(format!("body exceeds max-plugin-body ({max} bytes)").into()),
    }
}

fn ver(v: Version) -> Got {
    Got::Str(Cow::Borrowed(v.as_str()))
}

/// One message field (`headers` and `request` create userdata, see `msg_index`).
fn msg_field(core: &Core, t: Tag, key: &[u8]) -> std::result::Result<Got, Fail> {
    let max = core.max_body;
    let got = core.with_msg(t, |s| {
        let ro = s.ro as u8;
        let trl = Tag {
            kind: K_TRL,
            ro,
            ..t
        };
        Ok(match s.msg.as_mut() {
            Some(Msg::Req(r)) => match key {
                b"headers" => Got::Headers(s.headers),
                b"method" => Got::Bytes(r.method.clone()),
                b"scheme" => Got::Str(r.scheme.clone().into()),
                b"authority" => Got::Str(r.authority.clone().into()),
                b"host" => Got::Str(r.host().into()),
                b"port" => Got::Int(r.port() as i64),
                b"path" => match &r.path {
                    Some(p) => Got::Str(p.clone().into()),
                    None => Got::Nil,
                },
                b"http_version" => ver(r.version),
                b"body" => body_got(&r.body, max)?,
                // trailers come after the body: asking for them reads it first
                b"trailers" => match r.trailers {
                    None if matches!(r.body, Body::Streaming) => body_got(&r.body, max)?,
                    Some(_) => Got::NewTrailers(trl),
                    None => Got::Nil,
                },
                b"timestamp_start" => Got::Num(r.timestamp_start),
                _ => Got::Nil,
            },
            Some(Msg::Resp(r)) => match key {
                b"headers" => Got::Headers(s.headers),
                b"status" => Got::Int(r.status as i64),
                b"reason" => Got::Str(r.reason.clone().into()),
                b"http_version" => ver(r.version),
                b"body" => body_got(&r.body, max)?,
                b"trailers" => match r.trailers {
                    None if matches!(r.body, Body::Streaming) => body_got(&r.body, max)?,
                    Some(_) => Got::NewTrailers(trl),
                    None => Got::Nil,
                },
                b"request" => Got::View(s.view),
                _ => Got::Nil,
            },
            None => return Err(STALE.into()),
        })
    })?;
    Ok(got)
}

/// `__index` of requests and responses.
unsafe extern "C-unwind" fn msg_index(l: *mut ffi::lua_State) -> c_int {
    let core = core_of(l);
    let r = msg_index_impl(l, core);
    match r {
        Ok(n) => n,
        Err(e) => raise(l, e),
    }
}

/// The tag of argument 1 of a metamethod, unchecked.
///
/// # Safety
/// Only for the `__index` metamethods built in `Core::install`. Their metatables are
/// protected (`__metatable`), the debug library is gone and the functions are stored
/// nowhere else, so Lua can only call them with one of our tagged userdata as argument
/// 1 (the VM passes the object being indexed).
unsafe fn trusted_tag(l: *mut ffi::lua_State) -> Tag {
    let t = (ffi::lua_touserdata(l, 1) as *const Tag).read_unaligned();
    debug_assert!(t.magic == MAGIC);
    t
}

// A C function may use LUA_MINSTACK (20) stack slots without `lua_checkstack`; the
// accessors below push at most 4 values.
unsafe fn msg_index_impl(l: *mut ffi::lua_State, core: &Core) -> std::result::Result<c_int, Fail> {
    let t = trusted_tag(l);
    let mut len = 0usize;
    let k = ffi::lua_tolstring(l, 2, &mut len);
    if k.is_null() {
        return Err("bad argument #2: string expected".into());
    }
    // SAFETY: Lua strings stay alive while on the stack (slot 2, untouched below).
    let key = std::slice::from_raw_parts(k as *const u8, len);
    let got = msg_field(core, t, key)?;
    match got {
        Got::Need => {
            core.with_msg(t, |s| {
                s.pending = if key == b"body" {
                    Pending::Body
                } else {
                    Pending::Trailers
                };
                Ok(())
            })?;
            ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, core.need.get() as _);
            // The engine resumes this frame with the getter's value (push_resumed).
            Ok(ffi::lua_yield(l, 1))
        }
        Got::Headers(true) => {
            // upvalue 2 is the anchor table (see `Core::install`)
            ffi::lua_rawgeti_(l, ffi::lua_upvalueindex(2), 2 * t.slot as c_int + 2);
            Ok(1)
        }
        Got::Headers(false) => {
            // first `msg.headers` of this message: create and anchor its userdata
            push_tag(
                l,
                core,
                K_HDR,
                SlotId {
                    idx: t.slot,
                    gen: t.gen,
                },
                t.ro != 0,
            );
            ffi::lua_pushvalue(l, -1);
            ffi::lua_rawseti_(l, ffi::lua_upvalueindex(2), 2 * t.slot as c_int + 2);
            core.with_msg(t, |s| {
                s.headers = true;
                Ok(())
            })?;
            Ok(1)
        }
        Got::View(v) => request_view(l, core, t, v),
        g => {
            push_got(l, core, g);
            Ok(1)
        }
    }
}

/// `resp.request`: a read-only copy of the proxy's request, made on first access.
unsafe fn request_view(
    l: *mut ffi::lua_State,
    core: &Core,
    t: Tag,
    view: Option<u32>,
) -> std::result::Result<c_int, Fail> {
    let v = match view {
        Some(v) => v,
        None => {
            let p = core.with_msg(t, |s| Ok(s.req_ptr))?;
            if p.is_null() {
                return Err(STALE.into());
            }
            // SAFETY: `req_ptr` is set from a `&Request` borrowed by the engine call
            // running this Lua code, and cleared before that call returns.
            let copy = (*p).clone();
            let id = core
                .open(Msg::Req(copy), true)
                .map_err(|_| Fail::from("out of memory"))?;
            core.with_msg(t, |s| {
                s.view = Some(id.idx);
                Ok(())
            })?;
            id.idx
        }
    };
    // upvalue 2 of `msg_index` is the anchor table
    ffi::lua_rawgeti_(l, ffi::lua_upvalueindex(2), 2 * v as c_int + 1);
    Ok(1)
}

/// A header name or value argument: strings as they are, numbers printed.
unsafe fn arg_bytes(
    l: *mut ffi::lua_State,
    idx: c_int,
    what: &str,
) -> std::result::Result<Bytes, Fail> {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TSTRING => {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, idx, &mut len);
            Ok(Bytes::copy_from_slice(std::slice::from_raw_parts(
                p as *const u8,
                len,
            )))
        }
        ffi::LUA_TNUMBER => Ok(Bytes::from(number_text(ffi::lua_tonumber(l, idx)))),
        ty => {
            let name = std::ffi::CStr::from_ptr(ffi::lua_typename(l, ty)).to_string_lossy();
            Err(format!("{what} must be a string, got {name}").into())
        }
    }
}

/// Numbers as mlua converts them: integral values without a fraction.
fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n >= i64::MIN as f64 && n < i64::MAX as f64 {
        (n as i64).to_string()
    } else {
        n.to_string()
    }
}

unsafe fn self_tag(l: *mut ffi::lua_State) -> std::result::Result<Tag, Fail> {
    match tag_at(l, 1) {
        Some(t) if t.kind == K_HDR || t.kind == K_TRL => Ok(t),
        _ => Err("bad argument #1: Headers expected".into()),
    }
}

/// `headers:get(name)`.
unsafe extern "C-unwind" fn hdr_get(l: *mut ffi::lua_State) -> c_int {
    let core = core_of(l);
    match self_tag(l).and_then(|t| hdr_get_impl(l, core, t)) {
        Ok(n) => n,
        Err(e) => raise(l, e),
    }
}

/// The first value of header `name` (argument 2) of headers `t`.
unsafe fn hdr_get_impl(
    l: *mut ffi::lua_State,
    core: &Core,
    t: Tag,
) -> std::result::Result<c_int, Fail> {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, 2, &mut len);
    if p.is_null() {
        return Err("bad argument #2: string expected".into());
    }
    // SAFETY: the string is kept alive by its stack slot.
    let name = std::slice::from_raw_parts(p as *const u8, len);
    let name = if name.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        std::str::from_utf8_unchecked(name)
    } else {
        std::str::from_utf8(name).map_err(|_| Fail::from("bad header name"))?
    };
    let v = core.with_headers(t, false, |h| h.get(name).cloned())?;
    match v {
        Some(b) => {
            push_bytes(l, &b);
        }
        None => ffi::lua_pushnil(l),
    }
    Ok(1)
}

/// `headers:set(name, value)`.
unsafe extern "C-unwind" fn hdr_set(l: *mut ffi::lua_State) -> c_int {
    match hdr_write(l, true) {
        Ok(n) => n,
        Err(e) => raise(l, e),
    }
}

/// `headers:add(name, value)`.
unsafe extern "C-unwind" fn hdr_add(l: *mut ffi::lua_State) -> c_int {
    match hdr_write(l, false) {
        Ok(n) => n,
        Err(e) => raise(l, e),
    }
}

unsafe fn hdr_write(l: *mut ffi::lua_State, replace: bool) -> std::result::Result<c_int, Fail> {
    let core = core_of(l);
    let t = self_tag(l)?;
    let n = arg_bytes(l, 2, "header name")?;
    let v = arg_bytes(l, 3, "header value")?;
    core.with_headers(t, true, |h| if replace { h.set(n, v) } else { h.add(n, v) })?;
    Ok(0)
}

/// `__index` of headers: a method, else the first value of that header.
///
/// Upvalues (see `Core::install`): 1 the methods table, 2 the core, 3-5 the methods
/// `get`, `set`, `add`, which are found by comparing the key with the interned names.
unsafe extern "C-unwind" fn hdr_index(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: upvalue 2 is the core pointer (see `Core::install`).
    let core = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(2)) as *const Core);
    if ffi::lua_type(l, 2) == ffi::LUA_TSTRING {
        let k = ffi::lua_topointer(l, 2) as usize;
        let keys = core.hdr_keys.get();
        if let Some(i) = keys.iter().position(|&p| p == k) {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(3 + i as c_int));
            return 1;
        }
    }
    ffi::lua_pushvalue(l, 2);
    ffi::lua_rawget_(l, ffi::lua_upvalueindex(1));
    if ffi::lua_type(l, -1) != ffi::LUA_TNIL {
        return 1;
    }
    ffi::lua_settop(l, 2);
    match hdr_get_impl(l, core, trusted_tag(l)) {
        Ok(n) => n,
        Err(e) => raise(l, e),
    }
}

/// The headers and message methods that are not on the hot path, as mlua functions.
struct Cold {
    req_newindex: Function,
    resp_newindex: Function,
    get_all: Function,
    remove: Function,
    pairs: Function,
    len: Function,
}

/// Our tag of a Lua value (validated: size and magic), for the mlua-side functions.
fn tag_of(lua: &Lua, v: &Value) -> Option<Tag> {
    let Value::UserData(_) = v else { return None };
    lua.exec_raw_lua(|raw| {
        // SAFETY: one value pushed and popped on the current state.
        unsafe {
            if ffi::lua_checkstack(raw.state(), 2) == 0 {
                return None;
            }
            raw.push_value(v).ok()?;
            let t = tag_at(raw.state(), -1);
            ffi::lua_pop(raw.state(), 1);
            t
        }
    })
}

fn err(e: Fail) -> Error {
    Error::runtime(e.into_owned())
}

fn hdr_tag(lua: &Lua, v: &Value) -> Result<Tag> {
    match tag_of(lua, v) {
        Some(t) if t.kind == K_HDR || t.kind == K_TRL => Ok(t),
        _ => Err(Error::runtime("bad argument #1: Headers expected")),
    }
}

fn cold_fns(lua: &Lua, core: &Rc<Core>) -> Result<Cold> {
    let c = core.clone();
    let get_all = lua.create_function(move |lua, (h, name): (Value, String)| {
        let t = hdr_tag(lua, &h)?;
        let vals: Vec<Bytes> = c
            .with_headers(t, false, |h| h.get_all(&name).cloned().collect())
            .map_err(err)?;
        let out = lua.create_table()?;
        for (i, v) in vals.iter().enumerate() {
            out.raw_set(i + 1, lua.create_string(v)?)?;
        }
        Ok(out)
    })?;
    let c = core.clone();
    let remove = lua.create_function(move |lua, (h, name): (Value, String)| {
        let t = hdr_tag(lua, &h)?;
        c.with_headers(t, true, |h| h.remove(&name)).map_err(err)
    })?;
    let c = core.clone();
    let pairs = lua.create_function(move |lua, h: Value| {
        let t = hdr_tag(lua, &h)?;
        let list: Vec<(Bytes, Bytes)> = c
            .with_headers(t, false, |h| {
                h.iter()
                    .map(|f| (f.name.clone(), f.value.clone()))
                    .collect()
            })
            .map_err(err)?;
        let i = Cell::new(0usize);
        lua.create_function(move |lua, _: mlua::MultiValue| {
            let k = i.get();
            i.set(k + 1);
            match list.get(k) {
                Some((n, v)) => Ok((lstr(lua, n)?, lstr(lua, v)?)),
                None => Ok((Value::Nil, Value::Nil)),
            }
        })
    })?;
    let c = core.clone();
    let len = lua.create_function(move |lua, (h, _): (Value, mlua::MultiValue)| {
        let t = hdr_tag(lua, &h)?;
        c.with_headers(t, false, |h| h.len()).map_err(err)
    })?;
    let c = core.clone();
    let req_newindex =
        lua.create_function(move |lua, (u, key, v): (Value, mlua::String, Value)| {
            let t = tag_of(lua, &u).ok_or_else(|| Error::runtime("bad self"))?;
            if t.ro != 0 {
                return Err(Error::runtime("msg.request is read-only"));
            }
            let key = key.as_bytes();
            let set = |f: &mut dyn FnMut(&mut Request)| -> Result<()> {
                c.with_msg(t, |s| match s.msg.as_mut() {
                    Some(Msg::Req(r)) => {
                        f(r);
                        Ok(())
                    }
                    _ => Err(STALE.into()),
                })
                .map_err(err)
            };
            match &*key {
                b"method" => {
                    let b = bytes_of(&v, "method")?;
                    set(&mut |r| r.method = b.clone())
                }
                b"scheme" => {
                    let s = string_of(&v, "scheme")?;
                    set(&mut |r| r.scheme = s.clone())
                }
                b"authority" => {
                    let s = string_of(&v, "authority")?;
                    set(&mut |r| r.authority = s.clone())
                }
                b"path" => {
                    let p = match v {
                        Value::Nil => None,
                        v => Some(string_of(&v, "path")?),
                    };
                    set(&mut |r| r.path = p.clone())
                }
                b"body" => {
                    let b = body_from(v)?;
                    set(&mut |r| r.body = b.clone())
                }
                b"headers" => {
                    let h = headers_from(lua, &c, v)?.unwrap_or_default();
                    set(&mut |r| r.headers = h.clone())
                }
                b"trailers" => {
                    let h = headers_from(lua, &c, v)?;
                    set(&mut |r| r.trailers = h.clone())
                }
                other => Err(Error::runtime(format!(
                    "request field '{}' is read-only or unknown",
                    String::from_utf8_lossy(other)
                ))),
            }
        })?;
    let c = core.clone();
    let resp_newindex =
        lua.create_function(move |lua, (u, key, v): (Value, mlua::String, Value)| {
            let t = tag_of(lua, &u).ok_or_else(|| Error::runtime("bad self"))?;
            let key = key.as_bytes();
            let set = |f: &mut dyn FnMut(&mut Response)| -> Result<()> {
                c.with_msg(t, |s| match s.msg.as_mut() {
                    Some(Msg::Resp(r)) => {
                        f(r);
                        Ok(())
                    }
                    _ => Err(STALE.into()),
                })
                .map_err(err)
            };
            match &*key {
                b"status" => {
                    let s = match v {
                        Value::Integer(i) if (100..=999).contains(&i) => i as u16,
                        Value::Number(n) if (100.0..=999.0).contains(&n) && n.fract() == 0.0 => {
                            n as u16
                        }
                        _ => return Err(Error::runtime("status must be an integer in 100..999")),
                    };
                    set(&mut |r| r.status = s)
                }
                b"reason" => {
                    let s = string_of(&v, "reason")?;
                    set(&mut |r| r.reason = s.clone())
                }
                b"body" => {
                    let b = body_from(v)?;
                    set(&mut |r| r.body = b.clone())
                }
                b"headers" => {
                    let h = headers_from(lua, &c, v)?.unwrap_or_default();
                    set(&mut |r| r.headers = h.clone())
                }
                b"trailers" => {
                    let h = headers_from(lua, &c, v)?;
                    set(&mut |r| r.trailers = h.clone())
                }
                other => Err(Error::runtime(format!(
                    "response field '{}' is read-only or unknown",
                    String::from_utf8_lossy(other)
                ))),
            }
        })?;
    Ok(Cold {
        req_newindex,
        resp_newindex,
        get_all,
        remove,
        pairs,
        len,
    })
}

fn body_from(v: Value) -> Result<Body> {
    match v {
        Value::String(s) => Ok(Body::Full(Bytes::copy_from_slice(&s.as_bytes()))),
        Value::Nil => Ok(Body::Full(Bytes::new())),
        other => Err(Error::runtime(format!(
            "body must be a string, got {}",
            other.type_name()
        ))),
    }
}

fn bytes_of(v: &Value, what: &str) -> Result<Bytes> {
    match v {
        Value::String(s) => Ok(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Integer(i) => Ok(Bytes::from(i.to_string())),
        Value::Number(n) => Ok(Bytes::from(n.to_string())),
        other => Err(Error::runtime(format!(
            "{what} must be a string, got {}",
            other.type_name()
        ))),
    }
}

fn string_of(v: &Value, what: &str) -> Result<String> {
    let b = bytes_of(v, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| Error::runtime(format!("{what} must be UTF-8")))
}

fn lstr(lua: &Lua, b: &[u8]) -> Result<Value> {
    Ok(Value::String(lua.create_string(b)?))
}

/// Reads a header table in either form plugins use: `{name = value}` or `{{name, value}, ...}`.
pub(crate) fn headers_from_table(t: &Table) -> Result<Headers> {
    let mut h = Headers::new();
    let n = t.raw_len();
    if n > 0 {
        for i in 1..=n {
            let pair: Table = t.raw_get(i)?;
            let name: Value = pair.raw_get(1)?;
            let value: Value = pair.raw_get(2)?;
            h.add(
                bytes_of(&name, "header name")?,
                bytes_of(&value, "header value")?,
            );
        }
    } else {
        for kv in t.pairs::<Value, Value>() {
            let (k, v) = kv?;
            match v {
                Value::Table(list) => {
                    for i in 1..=list.raw_len() {
                        let item: Value = list.raw_get(i)?;
                        h.add(
                            bytes_of(&k, "header name")?,
                            bytes_of(&item, "header value")?,
                        );
                    }
                }
                v => h.add(bytes_of(&k, "header name")?, bytes_of(&v, "header value")?),
            }
        }
    }
    Ok(h)
}

fn headers_from(lua: &Lua, core: &Core, v: Value) -> Result<Option<Headers>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => headers_from_table(&t).map(Some),
        Value::UserData(_) => {
            let t = hdr_tag(lua, &v)?;
            core.with_headers(t, false, |h| h.clone())
                .map(Some)
                .map_err(err)
        }
        other => Err(Error::runtime(format!(
            "headers must be a table, got {}",
            other.type_name()
        ))),
    }
}

/// A raw chunk (`raw.on_chunk`).
pub(crate) struct LRaw {
    pub(crate) env: Rc<Env<RawChunk>>,
}

impl UserData for LRaw {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            match &*key {
                b"from_client" => this.env.with(|c| Ok(Value::Boolean(c.from_client))),
                b"data" => this.env.with(|c| lstr(lua, &c.data)),
                b"offset" => this.env.with(|c| Ok(Value::Integer(c.offset as i64))),
                _ => Ok(Value::Nil),
            }
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                if &*key.as_bytes() != b"data" {
                    return Err(Error::runtime("only RawMessage.data is writable"));
                }
                let b = bytes_of(&v, "data")?;
                this.env.with(|c| {
                    c.data = b;
                    Ok(())
                })
            },
        );
    }
}

/// Read-only `ctx`: one userdata per engine reading the core's refilled `CtxData`, so a
/// chain costs no ctx allocation (ctx holds no message, so reuse cannot leak one).
pub(crate) struct LCtx(pub(crate) Rc<Core>);

impl UserData for LCtx {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            let this = this.0.ctx.borrow();
            Ok(match &*key {
                b"conn_id" => Value::Integer(this.conn_id as i64),
                b"flow_id" => this
                    .flow_id
                    .map_or(Value::Nil, |f| Value::Integer(f as i64)),
                b"client_addr" => lstr(lua, this.client_addr.to_string().as_bytes())?,
                b"server_addr" => match this.server_addr {
                    Some(a) => lstr(lua, a.to_string().as_bytes())?,
                    None => Value::Nil,
                },
                b"sni" => match &this.sni {
                    Some(s) => lstr(lua, s.as_bytes())?,
                    None => Value::Nil,
                },
                b"listener_name" => lstr(lua, this.listener_name.as_bytes())?,
                b"worker" => Value::Integer(this.worker as i64),
                b"plugin" => lstr(lua, this.plugin.as_bytes())?,
                _ => Value::Nil,
            })
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, _, _: mlua::MultiValue| -> Result<()> { Err(Error::runtime("ctx is read-only")) },
        );
    }
}
