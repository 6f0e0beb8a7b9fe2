//! Message handles: lazy views over a Rust message held in an engine-owned slot.
//!
//! While a chain runs, the proxy's message is moved into a [`Slot`] of the engine's
//! [`Core`]; the Lua side only holds light userdata whose value is a tag (kind, slot,
//! generation; see `Tag`), so a chain allocates nothing in Lua. When the chain returns
//! the message moves back out and the slot's generation changes, so a `msg` a plugin
//! stashed in a global goes dead ("message is no longer valid") without any finaliser
//! or per-call allocation (as in Envoy's Lua filter).
//!
//! The hot accessors (message fields, `headers:get/set/add`, header indexing) are raw
//! `lua_CFunction`s: mlua's generic callback path (registry type checks, reference
//! slots for every argument) cost several times the work they wrap. This is the only
//! module of the engine with `unsafe` code besides the budget hook.

use super::{RawChunk, SseEvent, WsMessage};
use crate::http::{Body, Headers, Request, Response, Version};
use bytes::Bytes;
use mlua::{
    ffi, Error, FromLua, Function, Lua, MetaMethod, Result, Table, UserData, UserDataMethods, Value,
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

// A message or headers handle is a light userdata whose pointer value is the tag:
//
//   bits 63..39  MAGIC_HI (25 bits)   bit 38  read-only   bits 37..36  kind - 1
//   bits 35..20  slot index (16 bits) bits 19..0  generation (20 bits)
//
// LuaJIT (64-bit, GC64 or not) keeps 47 bits of a light userdata: the low 39 bits as
// they are and the upper 25 bits through a per-state table of at most 254 "segments"
// (`lj_lightud_intern`, lj_udata.c; `LJ_LIGHTUD_BITS_LO` = 39 in lj_obj.h). Every
// 64-bit value round-trips exactly through `lua_pushlightuserdata`/`lua_touserdata`
// (tested in `light_userdata_round_trip`); a new upper-bits pattern costs a segment
// (an allocation the first time, an error once 254 are in use). All tags share one
// upper pattern, interned in `Core::install`, so pushing a tag later never allocates
// and never raises. MAGIC_HI has bit 62 set: no user-space pointer (what mlua or
// LuaJIT push as light userdata) can carry it.
const LO_BITS: u32 = 39;
const LO_MASK: u64 = (1 << LO_BITS) - 1;
const MAGIC_HI: u64 = 0x6c75_7200_0000_0000;
const GEN_BITS: u32 = 20;
const SLOT_BITS: u32 = 16;
/// A slot whose generation reaches this is retired (see `Core::release`).
const GEN_LIMIT: u32 = 1 << GEN_BITS;
const MAX_SLOTS: usize = 1 << SLOT_BITS;
// The encoding needs 64-bit pointers (and LuaJIT's 64-bit light userdata).
const _: () = assert!(std::mem::size_of::<usize>() == 8);

/// What a message or headers handle designates (see the layout above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tag {
    kind: u8,
    ro: u8,
    slot: u32,
    gen: u32,
}

impl Tag {
    fn encode(self) -> *mut c_void {
        debug_assert!((K_REQ..=K_TRL).contains(&self.kind));
        debug_assert!(self.gen < GEN_LIMIT && (self.slot as usize) < MAX_SLOTS);
        let u = MAGIC_HI
            | (self.ro as u64 & 1) << 38
            | ((self.kind as u64 - 1) & 3) << 36
            | (self.slot as u64) << GEN_BITS
            | self.gen as u64;
        u as usize as *mut c_void
    }

    /// The tag a light userdata value carries, or None for any other pointer.
    fn decode(p: *mut c_void) -> Option<Tag> {
        let u = p as usize as u64;
        if u & !LO_MASK != MAGIC_HI {
            return None;
        }
        Some(Tag {
            kind: ((u >> 36) & 3) as u8 + 1,
            ro: ((u >> 38) & 1) as u8,
            slot: ((u >> GEN_BITS) & ((1 << SLOT_BITS) - 1)) as u32,
            gen: (u & (GEN_LIMIT as u64 - 1)) as u32,
        })
    }
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
    /// K_REQ or K_RESP: the kind of the message handle (`Core::push_ud`).
    kind: u8,
    /// Response slots: the proxy's request while a run is in progress.
    req_ptr: *const Request,
    /// Response slots: slot of the read-only `resp.request` view, once created.
    view: Option<SlotId>,
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
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    pub(crate) ctx: RefCell<CtxData>,
    need: Cell<c_int>,
    /// Slots whose generation ran out (`GEN_LIMIT`), kept off the free list.
    retired: RefCell<Vec<u32>>,
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
    pub(crate) fn new(max_body: usize, worker: usize) -> Rc<Core> {
        Rc::new(Core {
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
            need: Cell::new(ffi::LUA_NOREF),
            retired: RefCell::new(Vec::new()),
            max_body,
        })
    }

    /// Installs the light-userdata metatable and the C accessors; `need` is the token a
    /// getter yields.
    pub(crate) fn install(self: &Rc<Self>, lua: &Lua, need: &Table) -> Result<()> {
        let cold = cold_fns(lua, self)?;
        let core_ptr = Rc::as_ptr(self) as *mut c_void;
        lua.exec_raw_lua(|raw| -> Result<()> {
            let l = raw.state();
            // SAFETY: main state outside any callback; every push is balanced by a
            // luaL_ref, a setfield, a setmetatable or a pop, and the stack has room
            // (checked first). Interning the tags' light-userdata segment can only
            // raise once 254 segments are in use; a fresh state uses a handful.
            unsafe {
                if ffi::lua_checkstack(l, 10) == 0 {
                    return Err(Error::runtime("stack overflow"));
                }
                raw.push(need)?;
                self.need.set(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX));
                // Intern the tags' segment now, so no later tag push allocates or raises.
                ffi::lua_pushlightuserdata(l, MAGIC_HI as usize as *mut c_void);
                ffi::lua_pop(l, 1);

                // One metatable for every light userdata of this state (Lua has one per
                // type for non-table, non-full-userdata values): it dispatches on the
                // tag's kind and refuses anything without the tag's magic.
                ffi::lua_createtable(l, 0, 4);
                let mt = ffi::lua_gettop(l);
                // methods table: upvalue 2 of `ud_index`; the hot methods are also
                // upvalues 3-5, which `ud_index` returns by the key's bytes
                ffi::lua_createtable(l, 0, 6);
                for (name, f) in [
                    (c"get", hdr_get as ffi::lua_CFunction),
                    (c"set", hdr_set),
                    (c"add", hdr_add),
                ] {
                    ffi::lua_pushlightuserdata(l, core_ptr);
                    ffi::lua_pushcclosure(l, f, 1);
                    ffi::lua_setfield(l, -2, name.as_ptr());
                }
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
                ffi::lua_insert(l, methods);
                for name in [c"get", c"set", c"add"] {
                    ffi::lua_getfield(l, methods + 1, name.as_ptr());
                }
                ffi::lua_pushcclosure(l, ud_index, 5);
                ffi::lua_setfield(l, mt, c"__index".as_ptr());
                raw.push(&cold.newindex)?;
                ffi::lua_setfield(l, mt, c"__newindex".as_ptr());
                raw.push(&cold.len)?;
                ffi::lua_setfield(l, mt, c"__len".as_ptr());
                ffi::lua_pushboolean(l, 0);
                ffi::lua_setfield(l, mt, c"__metatable".as_ptr());
                // lua_setmetatable on a light userdata sets the type's base metatable
                // (what debug.setmetatable does); it flushes traces, none exist yet.
                ffi::lua_pushlightuserdata(l, std::ptr::null_mut());
                ffi::lua_pushvalue(l, mt);
                ffi::lua_setmetatable(l, -2);
                ffi::lua_settop(l, mt - 1);
            }
            Ok(())
        })
    }

    /// Moves `msg` into a fresh slot. Its handle is a light userdata (`push_ud`), so
    /// nothing is created in Lua; it fails only when `MAX_SLOTS` messages are open.
    // The message comes back on failure so the proxy keeps it; boxing would allocate.
    #[allow(clippy::result_large_err)]
    pub(crate) fn open(&self, msg: Msg, ro: bool) -> std::result::Result<SlotId, Msg> {
        let mut slots = self.slots.borrow_mut();
        let mut free = self.free.borrow_mut();
        let idx = match free.pop() {
            Some(i) => i,
            None if slots.len() < MAX_SLOTS => {
                slots.push(Slot {
                    gen: 0,
                    used: false,
                    ro: false,
                    msg: None,
                    kind: K_REQ,
                    req_ptr: std::ptr::null(),
                    view: None,
                    pending: Pending::None,
                });
                (slots.len() - 1) as u32
            }
            None => {
                // Every index is open or retired: restart the retired ones at
                // generation 0. A handle stashed 2^36 chains ago could then alias a
                // live message (the u32 generation before this wrapped per slot,
                // after 2^32 chains on slot 0).
                let mut retired = self.retired.borrow_mut();
                if retired.is_empty() {
                    return Err(msg);
                }
                for &i in retired.iter() {
                    slots[i as usize].gen = 0;
                }
                free.append(&mut retired);
                free.pop()
                    .expect("retired slots were moved to the free list")
            }
        };
        let s = &mut slots[idx as usize];
        s.used = true;
        s.ro = ro;
        s.kind = match msg {
            Msg::Req(_) => K_REQ,
            Msg::Resp(_) => K_RESP,
        };
        s.msg = Some(msg);
        Ok(SlotId { idx, gen: s.gen })
    }

    /// Pushes the slot's message handle onto `l` (any thread of this state).
    ///
    /// # Safety
    /// `l` must be a thread of the core's state with a free stack slot.
    pub(crate) unsafe fn push_ud(&self, l: *mut ffi::lua_State, id: SlotId) {
        let (kind, ro) = match self.slots.borrow().get(id.idx as usize) {
            Some(s) => (s.kind, s.ro as u8),
            None => (K_REQ, 0),
        };
        push_tag(
            l,
            Tag {
                kind,
                ro,
                slot: id.idx,
                gen: id.gen,
            },
        );
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

    /// Frees the slot (and its request view): every handle of it goes stale. Touches
    /// no Lua state, so it is safe after the engine is gone. A slot whose generation
    /// reaches `GEN_LIMIT` (the 20 bits a handle carries) is retired instead of reused,
    /// until every slot index is (see `open`).
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
            s.gen += 1;
            s.req_ptr = std::ptr::null();
            s.pending = Pending::None;
            if s.gen >= GEN_LIMIT {
                self.retired.borrow_mut().push(id.idx);
            } else {
                self.free.borrow_mut().push(id.idx);
            }
            s.view.take()
        };
        if let Some(v) = view {
            self.release(v);
        }
    }

    /// Response slots: `resp.request` reads `r` until `clear_request`.
    pub(crate) fn set_request(&self, id: SlotId, r: &Request) {
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[id.idx as usize];
        s.req_ptr = r;
        if let Some(v) = s.view {
            slots[v.idx as usize].msg = Some(Msg::Req(r.clone()));
        }
    }

    /// Ends the `set_request` window; a stashed `resp.request` goes dead.
    pub(crate) fn clear_request(&self, id: SlotId) {
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[id.idx as usize];
        s.req_ptr = std::ptr::null();
        if let Some(v) = s.view {
            slots[v.idx as usize].msg = None;
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
            kind: K_REQ,
            ro: 0,
            slot: id.idx,
            gen: id.gen,
        };
        let mut sc = Scratch::new();
        let key: &[u8] = if p == Pending::Body {
            b"body"
        } else {
            b"trailers"
        };
        match msg_field(self, tag, key, &mut sc) {
            Ok(Got::Need) => Err("body is not available".into()),
            Ok(g) => {
                push_got(l, g, &sc);
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

/// Pushes the light userdata handle of `t`.
///
/// # Safety
/// `l` must be a thread of the core's state with a free stack slot, and the tags'
/// segment interned (`Core::install`), so that the push neither allocates nor raises.
#[inline]
unsafe fn push_tag(l: *mut ffi::lua_State, t: Tag) {
    ffi::lua_pushlightuserdata(l, t.encode());
}

/// Our tag at stack slot `idx`, or None for any other value (`lua_touserdata` gives
/// NULL for non-userdata and a real address for full userdata: neither has the magic).
///
/// # Safety
/// `l` must be a valid state and `idx` an acceptable index.
#[inline]
unsafe fn tag_at(l: *mut ffi::lua_State, idx: c_int) -> Option<Tag> {
    Tag::decode(ffi::lua_touserdata(l, idx))
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

/// Stack room for a short value copied out of a slot borrow.
///
/// Pushing a string can run a GC step, hence Lua code, so values leave the borrow
/// before the push. A short one is copied here rather than cloned: cloning a `String`
/// allocates, and cloning a `Bytes` is an indirect call plus, for a value sharing the
/// read buffer, an atomic increment (and a decrement on drop).
struct Scratch {
    buf: [std::mem::MaybeUninit<u8>; Scratch::CAP],
    len: usize,
}

impl Scratch {
    const CAP: usize = 128;

    fn new() -> Scratch {
        Scratch {
            buf: [std::mem::MaybeUninit::uninit(); Scratch::CAP],
            len: 0,
        }
    }

    /// `v` as a `Got`: copied into the scratch when short, else into a new `Bytes`.
    fn keep(&mut self, v: &[u8]) -> Got {
        if v.len() > Self::CAP {
            return Got::Bytes(Bytes::copy_from_slice(v));
        }
        // SAFETY: `buf` holds CAP bytes and `v` at most that many.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), self.buf.as_mut_ptr().cast::<u8>(), v.len())
        };
        self.len = v.len();
        Got::Short
    }

    /// As `keep`, but a long value shares `v`'s buffer instead of being copied.
    fn keep_bytes(&mut self, v: &Bytes) -> Got {
        if v.len() > Self::CAP {
            Got::Bytes(v.clone())
        } else {
            self.keep(v)
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by `keep`.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast(), self.len) }
    }
}

/// A value computed under a slot borrow, pushed after the borrow ends.
enum Got {
    Nil,
    /// The bytes held by the call's `Scratch`.
    Short,
    Bytes(Bytes),
    Str(Cow<'static, str>),
    Int(i64),
    Num(f64),
    /// `msg.headers`, `msg.trailers`: a handle.
    Tag(Tag),
    View(Option<SlotId>),
    Need,
}

/// Pushes a `Got` (`Got::Short` from `scratch`).
unsafe fn push_got(l: *mut ffi::lua_State, g: Got, scratch: &Scratch) {
    match g {
        Got::Nil | Got::Need | Got::View(_) => ffi::lua_pushnil(l),
        Got::Short => push_bytes(l, scratch.bytes()),
        Got::Bytes(b) => {
            push_bytes(l, &b);
        }
        Got::Str(s) => {
            push_bytes(l, s.as_bytes());
        }
        Got::Int(i) => ffi::lua_pushinteger(l, i as _),
        Got::Num(n) => ffi::lua_pushnumber(l, n),
        Got::Tag(t) => push_tag(l, t),
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

/// One message field (`request` may open a slot, see `msg_index`).
fn msg_field(core: &Core, t: Tag, key: &[u8], sc: &mut Scratch) -> std::result::Result<Got, Fail> {
    let max = core.max_body;
    let got = core.with_msg(t, |s| {
        let ro = s.ro as u8;
        let hdr = Tag {
            kind: K_HDR,
            ro,
            ..t
        };
        let trl = Tag { kind: K_TRL, ..hdr };
        Ok(match s.msg.as_mut() {
            Some(Msg::Req(r)) => match key {
                b"headers" => Got::Tag(hdr),
                b"method" => sc.keep_bytes(&r.method),
                b"scheme" => sc.keep(r.scheme.as_bytes()),
                b"authority" => sc.keep(r.authority.as_bytes()),
                b"host" => Got::Str(r.host().into()),
                b"port" => Got::Int(r.port() as i64),
                b"path" => match &r.path {
                    Some(p) => sc.keep(p.as_bytes()),
                    None => Got::Nil,
                },
                b"http_version" => ver(r.version),
                b"body" => body_got(&r.body, max)?,
                // trailers come after the body: asking for them reads it first
                b"trailers" => match r.trailers {
                    None if matches!(r.body, Body::Streaming) => body_got(&r.body, max)?,
                    Some(_) => Got::Tag(trl),
                    None => Got::Nil,
                },
                b"timestamp_start" => Got::Num(r.timestamp_start),
                _ => Got::Nil,
            },
            Some(Msg::Resp(r)) => match key {
                b"headers" => Got::Tag(hdr),
                b"status" => Got::Int(r.status as i64),
                b"reason" => sc.keep(r.reason.as_bytes()),
                b"http_version" => ver(r.version),
                b"body" => body_got(&r.body, max)?,
                b"trailers" => match r.trailers {
                    None if matches!(r.body, Body::Streaming) => body_got(&r.body, max)?,
                    Some(_) => Got::Tag(trl),
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

/// `__index` of every light userdata: message fields for message handles, methods and
/// header values for headers handles, an error for anything else.
///
/// Upvalues (see `Core::install`): 1 the core, 2 the headers methods table, 3-5 the
/// methods `get`, `set`, `add`.
unsafe extern "C-unwind" fn ud_index(l: *mut ffi::lua_State) -> c_int {
    let Some(t) = tag_at(l, 1) else {
        return raise(l, Fail::from("attempt to index a userdata value"));
    };
    // `msg.headers` and `headers:get/set/add` are most of the lookups plugins make, so
    // they are answered from the tag and the key's bytes alone: no core, no slot (a
    // stale handle still yields a headers handle, which fails on first use). Comparing
    // a few bytes costs less than fetching the core to compare interned pointers.
    // A number key is converted in place, as `msg_index`/`hdr_index` would anyway.
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, 2, &mut len);
    let key: &[u8] = if p.is_null() {
        &[]
    } else {
        // SAFETY: the string stays referenced by stack slot 2 for the whole call.
        std::slice::from_raw_parts(p as *const u8, len)
    };
    let is_msg = t.kind == K_REQ || t.kind == K_RESP;
    if is_msg {
        if key == b"headers" {
            push_tag(l, Tag { kind: K_HDR, ..t });
            return 1;
        }
    } else {
        let up = match key {
            b"get" => 3,
            b"set" => 4,
            b"add" => 5,
            _ => 0,
        };
        if up != 0 {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(up));
            return 1;
        }
    }
    let core = core_of(l);
    let r = if is_msg {
        msg_index(l, core, t)
    } else {
        hdr_index(l, core, t)
    };
    match r {
        Ok(n) => n,
        Err(e) => raise(l, e),
    }
}

/// Argument 2 of a C function as bytes (numbers are converted in place, as Lua does).
///
/// # Safety
/// `l` must be a valid state inside a C function with at least two arguments' worth of
/// stack; the slice lives as long as argument 2 stays on the stack untouched.
unsafe fn str_arg2<'a>(l: *mut ffi::lua_State) -> std::result::Result<&'a [u8], Fail> {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, 2, &mut len);
    if p.is_null() {
        return Err("bad argument #2: string expected".into());
    }
    Ok(std::slice::from_raw_parts(p as *const u8, len))
}

// A C function may use LUA_MINSTACK (20) stack slots without `lua_checkstack`; the
// accessors below push at most 4 values.
unsafe fn msg_index(
    l: *mut ffi::lua_State,
    core: &Core,
    t: Tag,
) -> std::result::Result<c_int, Fail> {
    let key = str_arg2(l)?;
    let mut sc = Scratch::new();
    let got = msg_field(core, t, key, &mut sc)?;
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
        Got::View(v) => request_view(l, core, t, v),
        g => {
            push_got(l, g, &sc);
            Ok(1)
        }
    }
}

/// `resp.request`: a read-only copy of the proxy's request, made on first access.
unsafe fn request_view(
    l: *mut ffi::lua_State,
    core: &Core,
    t: Tag,
    view: Option<SlotId>,
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
                .map_err(|_| Fail::from("too many open messages"))?;
            core.with_msg(t, |s| {
                s.view = Some(id);
                Ok(())
            })?;
            id
        }
    };
    push_tag(
        l,
        Tag {
            kind: K_REQ,
            ro: 1,
            slot: v.idx,
            gen: v.gen,
        },
    );
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
    let name = str_arg2(l)?;
    let name = if name.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        std::str::from_utf8_unchecked(name)
    } else {
        std::str::from_utf8(name).map_err(|_| Fail::from("bad header name"))?
    };
    let mut sc = Scratch::new();
    let got = core.with_headers(t, false, |h| match h.get(name) {
        None => Got::Nil,
        Some(v) => sc.keep_bytes(v),
    })?;
    push_got(l, got, &sc);
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

/// `__index` of headers (from `ud_index`): a method, else the first value of that
/// header.
unsafe fn hdr_index(
    l: *mut ffi::lua_State,
    core: &Core,
    t: Tag,
) -> std::result::Result<c_int, Fail> {
    ffi::lua_pushvalue(l, 2);
    ffi::lua_rawget_(l, ffi::lua_upvalueindex(2));
    if ffi::lua_type(l, -1) != ffi::LUA_TNIL {
        return Ok(1);
    }
    ffi::lua_settop(l, 2);
    hdr_get_impl(l, core, t)
}

/// The metamethods and headers methods that are not on the hot path, as mlua functions.
struct Cold {
    newindex: Function,
    get_all: Function,
    remove: Function,
    pairs: Function,
    len: Function,
}

/// Our tag of a Lua value, for the mlua-side functions.
fn tag_of(v: &Value) -> Option<Tag> {
    match v {
        Value::LightUserData(p) => Tag::decode(p.0),
        _ => None,
    }
}

fn err(e: Fail) -> Error {
    Error::runtime(e.into_owned())
}

fn hdr_tag(v: &Value) -> Result<Tag> {
    match tag_of(v) {
        Some(t) if t.kind == K_HDR || t.kind == K_TRL => Ok(t),
        _ => Err(Error::runtime("bad argument #1: Headers expected")),
    }
}

fn cold_fns(lua: &Lua, core: &Rc<Core>) -> Result<Cold> {
    let c = core.clone();
    let get_all = lua.create_function(move |lua, (h, name): (Value, String)| {
        let t = hdr_tag(&h)?;
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
    let remove = lua.create_function(move |_, (h, name): (Value, String)| {
        let t = hdr_tag(&h)?;
        c.with_headers(t, true, |h| h.remove(&name)).map_err(err)
    })?;
    let c = core.clone();
    let pairs = lua.create_function(move |lua, h: Value| {
        let t = hdr_tag(&h)?;
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
    let len = lua.create_function(move |_, (h, _): (Value, mlua::MultiValue)| {
        let t = match tag_of(&h) {
            Some(t) if t.kind == K_HDR || t.kind == K_TRL => t,
            _ => return Err(Error::runtime("attempt to get length of a userdata value")),
        };
        c.with_headers(t, false, |h| h.len()).map_err(err)
    })?;
    let c = core.clone();
    let newindex = lua.create_function(move |lua, (u, key, v): (Value, Value, Value)| {
        let t = match tag_of(&u) {
            Some(t) if t.kind == K_REQ || t.kind == K_RESP => t,
            // headers["x-a"] = v sets (replaces every line), = nil removes, mirroring
            // headers["x-a"] reading as get
            Some(t) if t.kind == K_HDR || t.kind == K_TRL => {
                let name = String::from_lua(key, lua)
                    .map_err(|_| Error::runtime("header names are strings"))?;
                let value = match v {
                    Value::Nil => None,
                    v => Some(Bytes::copy_from_slice(
                        &mlua::String::from_lua(v, lua)
                            .map_err(|_| Error::runtime("header values are strings"))?
                            .as_bytes(),
                    )),
                };
                return c
                    .with_headers(t, true, |h| match value {
                        Some(v) => h.set(name, v),
                        None => {
                            h.remove(&name);
                        }
                    })
                    .map_err(err);
            }
            _ => return Err(Error::runtime("attempt to index a userdata value")),
        };
        let key = mlua::String::from_lua(key, lua)?;
        if t.kind == K_REQ {
            set_req_field(&c, t, &key.as_bytes(), v)
        } else {
            set_resp_field(&c, t, &key.as_bytes(), v)
        }
    })?;
    Ok(Cold {
        newindex,
        get_all,
        remove,
        pairs,
        len,
    })
}

/// `msg.key = v` on a request handle.
fn set_req_field(c: &Core, t: Tag, key: &[u8], v: Value) -> Result<()> {
    if t.ro != 0 {
        return Err(Error::runtime("msg.request is read-only"));
    }
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
    match key {
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
        other => set_common_field(c, other, v, &set).unwrap_or_else(|| {
            Err(Error::runtime(format!(
                "request field '{}' is read-only or unknown",
                String::from_utf8_lossy(other)
            )))
        }),
    }
}

/// The parts requests and responses share, for the setters below.
trait MessageParts {
    fn parts(&mut self) -> (&mut Body, &mut Headers, &mut Option<Headers>);
}

impl MessageParts for Request {
    fn parts(&mut self) -> (&mut Body, &mut Headers, &mut Option<Headers>) {
        (&mut self.body, &mut self.headers, &mut self.trailers)
    }
}

impl MessageParts for Response {
    fn parts(&mut self) -> (&mut Body, &mut Headers, &mut Option<Headers>) {
        (&mut self.body, &mut self.headers, &mut self.trailers)
    }
}

/// Applies a change to the message behind a handle (fails when the handle is stale).
type Setter<'a, T> = dyn Fn(&mut dyn FnMut(&mut T)) -> Result<()> + 'a;

/// `msg.body`, `msg.headers` and `msg.trailers` assignments on either message kind;
/// None for any other key.
fn set_common_field<T: MessageParts>(
    c: &Core,
    key: &[u8],
    v: Value,
    set: &Setter<'_, T>,
) -> Option<Result<()>> {
    let r = match key {
        b"body" => body_from(v).and_then(|b| set(&mut |m| *m.parts().0 = b.clone())),
        b"headers" => headers_from(c, v)
            .and_then(|h| set(&mut |m| *m.parts().1 = h.clone().unwrap_or_default())),
        b"trailers" => headers_from(c, v).and_then(|h| set(&mut |m| *m.parts().2 = h.clone())),
        _ => return None,
    };
    Some(r)
}

/// `msg.key = v` on a response handle.
fn set_resp_field(c: &Core, t: Tag, key: &[u8], v: Value) -> Result<()> {
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
    match key {
        b"status" => {
            let s = match v {
                Value::Integer(i) if (100..=999).contains(&i) => i as u16,
                Value::Number(n) if (100.0..=999.0).contains(&n) && n.fract() == 0.0 => n as u16,
                _ => return Err(Error::runtime("status must be an integer in 100..999")),
            };
            set(&mut |r| r.status = s)
        }
        b"reason" => {
            let s = string_of(&v, "reason")?;
            set(&mut |r| r.reason = s.clone())
        }
        other => set_common_field(c, other, v, &set).unwrap_or_else(|| {
            Err(Error::runtime(format!(
                "response field '{}' is read-only or unknown",
                String::from_utf8_lossy(other)
            )))
        }),
    }
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

fn headers_from(core: &Core, v: Value) -> Result<Option<Headers>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => headers_from_table(&t).map(Some),
        Value::LightUserData(_) => {
            let t = hdr_tag(&v)?;
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

/// A WebSocket message (`ws.on_message`).
pub(crate) struct LWs {
    pub(crate) env: Rc<Env<WsMessage>>,
}

impl UserData for LWs {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            this.env.with(|w| {
                let close = (w.opcode == crate::proto::ws::CLOSE)
                    .then(|| crate::proto::ws::parse_close(&w.payload));
                Ok(match &*key {
                    b"opcode" => Value::Integer(w.opcode as i64),
                    b"fin" => Value::Boolean(true),
                    b"masked" => Value::Boolean(w.masked),
                    b"payload" => lstr(lua, &w.payload)?,
                    b"compressed" => Value::Boolean(w.compressed),
                    b"from_client" => Value::Boolean(w.from_client),
                    b"close_code" => match close {
                        Some((c, _)) => Value::Integer(c.unwrap_or(1005) as i64),
                        None => Value::Nil,
                    },
                    b"close_reason" => match close {
                        Some((_, r)) => lstr(lua, r.as_bytes())?,
                        None => Value::Nil,
                    },
                    _ => Value::Nil,
                })
            })
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                if &*key.as_bytes() != b"payload" {
                    return Err(Error::runtime("only WSMessage.payload is writable"));
                }
                let b = bytes_of(&v, "payload")?;
                this.env.with(|w| {
                    let control = w.opcode >= crate::proto::ws::CLOSE;
                    if control && b.len() > 125 {
                        return Err(Error::runtime(
                            "a control frame's payload is at most 125 bytes",
                        ));
                    }
                    w.payload = b;
                    w.changed = true;
                    Ok(())
                })
            },
        );
    }
}

/// A server-sent event (`sse.on_event`).
pub(crate) struct LSse {
    pub(crate) env: Rc<Env<SseEvent>>,
}

/// An optional one-line SSE field value (`event`, `id`): a string without line breaks.
fn sse_line(v: &Value, what: &str) -> Result<Option<String>> {
    match v {
        Value::Nil => Ok(None),
        v => {
            let s = string_of(v, what)?;
            if s.contains(['\r', '\n']) {
                return Err(Error::runtime(format!(
                    "{what} must not contain a line break"
                )));
            }
            Ok(Some(s))
        }
    }
}

impl UserData for LSse {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            this.env.with(|s| {
                let e = &s.event;
                Ok(match &*key {
                    b"event" => match &e.event {
                        Some(t) => lstr(lua, t.as_bytes())?,
                        None => Value::Nil,
                    },
                    b"data" => lstr(lua, e.data.as_bytes())?,
                    b"id" => match &e.id {
                        Some(t) => lstr(lua, t.as_bytes())?,
                        None => Value::Nil,
                    },
                    b"retry" => e.retry.map_or(Value::Nil, |r| Value::Integer(r as i64)),
                    b"index" => Value::Integer(s.index as i64),
                    _ => Value::Nil,
                })
            })
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                let key = key.as_bytes();
                match &*key {
                    b"event" => {
                        let t = sse_line(&v, "event")?;
                        this.env.with(|s| {
                            s.event.event = t;
                            Ok(())
                        })?
                    }
                    b"id" => {
                        let t = sse_line(&v, "id")?;
                        this.env.with(|s| {
                            s.event.id = t;
                            Ok(())
                        })?
                    }
                    b"data" => {
                        let d = match v {
                            Value::Nil => String::new(),
                            v => string_of(&v, "data")?,
                        };
                        this.env.with(|s| {
                            s.event.data = d;
                            Ok(())
                        })?
                    }
                    b"retry" => {
                        let r = match v {
                            Value::Nil => None,
                            Value::Integer(i) if i >= 0 => Some(i as u64),
                            Value::Number(n) if n >= 0.0 && n.fract() == 0.0 => Some(n as u64),
                            _ => {
                                return Err(Error::runtime(
                                    "retry must be a non-negative integer or nil",
                                ))
                            }
                        };
                        this.env.with(|s| {
                            s.event.retry = r;
                            Ok(())
                        })?
                    }
                    other => {
                        return Err(Error::runtime(format!(
                            "SSEMessage field '{}' is read-only or unknown",
                            String::from_utf8_lossy(other)
                        )))
                    }
                }
                this.env.with(|s| {
                    s.changed = true;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            method: Bytes::from_static(b"GET"),
            scheme: "http".into(),
            authority: "example.com".into(),
            path: Some("/".into()),
            version: Version::Http11,
            headers: Headers::new(),
            body: Body::Full(Bytes::new()),
            trailers: None,
            timestamp_start: 0.0,
        }
    }

    fn open(core: &Core) -> SlotId {
        match core.open(Msg::Req(req()), false) {
            Ok(id) => id,
            Err(_) => panic!("no slot"),
        }
    }

    /// A state with the core installed (as `Engine::load` does, without the sandbox).
    fn state() -> (Lua, Rc<Core>) {
        let lua = Lua::new();
        let core = Core::new(1024, 0);
        let need = lua.create_table().unwrap();
        core.install(&lua, &need).unwrap();
        (lua, core)
    }

    /// What LuaJIT gives back for a light userdata we pushed.
    fn round_trip(lua: &Lua, u: u64) -> u64 {
        lua.exec_raw_lua(|raw| {
            // SAFETY: one value pushed and popped on the main state.
            unsafe {
                let l = raw.state();
                ffi::lua_pushlightuserdata(l, u as usize as *mut c_void);
                assert_eq!(ffi::lua_type(l, -1), ffi::LUA_TLIGHTUSERDATA);
                let back = ffi::lua_touserdata(l, -1) as usize as u64;
                ffi::lua_pop(l, 1);
                back
            }
        })
    }

    #[test]
    fn light_userdata_round_trip() {
        let (lua, _core) = state();
        // Boundary values of the tag layout and of LuaJIT's 47-bit / segment split.
        for u in [
            0,
            1,
            LO_MASK,
            LO_MASK + 1,
            (1 << 47) - 1,
            1 << 47,
            MAGIC_HI,
            MAGIC_HI | LO_MASK,
            1 << 63,
            u64::MAX,
            u64::MAX - LO_MASK,
        ] {
            assert_eq!(round_trip(&lua, u), u, "{u:#x}");
        }
        let extremes = [
            (K_REQ, 0, 0, 0),
            (K_TRL, 1, MAX_SLOTS as u32 - 1, GEN_LIMIT - 1),
            (K_RESP, 0, 0x5a5a, 0x5_a5a5),
            (K_HDR, 1, 1, 1),
        ];
        for (kind, ro, slot, gen) in extremes {
            let t = Tag {
                kind,
                ro,
                slot,
                gen,
            };
            let u = t.encode() as usize as u64;
            assert_eq!(u & !LO_MASK, MAGIC_HI);
            assert_eq!(round_trip(&lua, u), u);
            assert_eq!(Tag::decode(t.encode()), Some(t));
        }
        for foreign in [
            0u64,
            0x7fff_dead_beef,
            0x5555_0000_1000,
            MAGIC_HI ^ (1 << 39),
        ] {
            assert_eq!(Tag::decode(foreign as usize as *mut c_void), None);
        }
    }

    #[test]
    fn foreign_light_userdata_is_refused_not_trusted() {
        let (lua, _core) = state();
        // mlua's NULL is a light userdata, the only kind mlua hands to Lua code; it and
        // any other pointer without the magic get the errors a plain userdata gives.
        lua.globals().set("null", Value::NULL).unwrap();
        lua.globals()
            .set(
                "odd",
                Value::LightUserData(mlua::LightUserData(0x7fff_1234_5678 as *mut c_void)),
            )
            .unwrap();
        let errs: Vec<String> = lua
            .load(
                r#"
                local out = {}
                for _, u in ipairs({null, odd}) do
                  for _, f in ipairs({
                    function() return u.method end,
                    function() return u.get end,
                    function() u.method = 'PUT' end,
                    function() return #u end,
                  }) do
                    local ok, e = pcall(f)
                    assert(not ok)
                    out[#out + 1] = tostring(e)
                  end
                  assert(getmetatable(u) == false)
                  assert(type(u) == 'userdata')
                  assert(tostring(u):find('^userdata: '))
                end
                return out
            "#,
            )
            .eval()
            .unwrap();
        assert_eq!(errs.len(), 8);
        for e in &errs {
            assert!(
                e.contains("attempt to index a userdata value")
                    || e.contains("attempt to get length of a userdata value"),
                "{e}"
            );
        }
    }

    #[test]
    fn handles_go_stale_and_methods_check_their_self() {
        let (lua, core) = state();
        let id = open(&core);
        lua.exec_raw_lua(|raw| {
            // SAFETY: one value pushed and stored on the main state.
            unsafe {
                core.push_ud(raw.state(), id);
                ffi::lua_setglobal(raw.state(), c"m".as_ptr());
            }
        });
        let f: Function = lua
            .load(
                r#"
                local h = m.headers
                h:set('x-a', '1')
                assert(m.headers == h and h:get('x-a') == '1' and m.method == 'GET')
                assert(not pcall(h.get, m, 'x-a'))       -- a message is not headers
                assert(not pcall(h.get, 'str', 'x-a'))
                stash_h = h
                return function()
                  local ok1, e1 = pcall(function() return m.method end)
                  local ok2, e2 = pcall(function() return stash_h:get('x-a') end)
                  local ok3, e3 = pcall(function() m.path = '/' end)
                  assert(not ok1 and not ok2 and not ok3)
                  return tostring(e1) .. '|' .. tostring(e2) .. '|' .. tostring(e3)
                end
            "#,
            )
            .eval()
            .unwrap();
        let Some(Msg::Req(r)) = core.take(id) else {
            panic!("message gone")
        };
        assert_eq!(r.headers.get("x-a").unwrap().as_ref(), b"1");
        core.release(id);
        let e: String = f.call(()).unwrap();
        assert_eq!(e.matches(STALE).count(), 3, "{e}");
    }

    #[test]
    fn a_slot_retires_when_its_generation_runs_out() {
        let core = Core::new(1024, 0);
        let first = open(&core);
        core.release(first);
        let mut last = first;
        for _ in 1..GEN_LIMIT {
            last = open(&core);
            assert_eq!(last.idx, first.idx);
            core.release(last);
        }
        assert_eq!(last.gen, GEN_LIMIT - 1);
        // Slot 0 is retired: the next message gets a new index, so no handle of slot 0
        // can alias it.
        let next = open(&core);
        assert_ne!(next.idx, first.idx);
        assert!(core.take(first).is_none() && core.take(last).is_none());
    }
}
