//! Message handles: lazy views over a Rust message held in an engine-owned slot.
//!
//! While a chain runs, the proxy's message is moved into a [`Slot`] of the engine's
//! [`Core`]; the Lua side only holds light userdata whose value is a tag (kind, slot,
//! generation; see `tag`), so a chain allocates nothing in Lua. When the chain returns
//! the message moves back out and the slot's generation changes, so a `msg` a plugin
//! stashed in a global goes dead ("message is no longer valid") without any finaliser
//! or per-call allocation (as in Envoy's Lua filter).
//!
//! The hot accessors (`hot`) are raw `lua_CFunction`s; the rest (`cold`) are mlua
//! functions. `views` holds the userdata of the other events' messages and of `ctx`.
//! Most of the engine's `unsafe` code is in this module.

mod cold;
mod grpc;
mod hot;
mod tag;
#[cfg(test)]
mod tests;
mod views;

pub(crate) use cold::headers_from_table;
pub(crate) use grpc::{LGrpcData, LGrpcStart};
pub(crate) use views::{Env, LCtx, LRaw, LSse, LWs};

use crate::http::{Headers, Request, Response};
use cold::cold_fns;
use hot::{hdr_add, hdr_get, hdr_set, msg_field, push_got, ud_index, Got, Scratch};
use mlua::{ffi, Error, Lua, Result, Table};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;
use tag::{push_tag, Tag, GEN_LIMIT, K_REQ, K_RESP, K_TRL, MAGIC_HI, MAX_SLOTS};

/// A message a slot can hold.
pub(crate) enum Msg {
    Req(Request),
    Resp(Response),
}

/// Getter waiting for the body when a hook suspended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    None,
    Body,
    Trailers,
}

/// One message's place in the `Core`; `gen` outlives the message so old handles fail.
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

/// An accessor's error text; borrowed for the fixed messages, so raising them is free.
type Fail = Cow<'static, str>;
/// What every use of a dead handle raises.
const STALE: &str = "message is no longer valid";

impl Core {
    /// An empty core; `max_body` bounds what `msg.body` reads, `worker` is `ctx.worker`.
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
        views::install_methods(lua)?;
        grpc::install(lua)?;
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
