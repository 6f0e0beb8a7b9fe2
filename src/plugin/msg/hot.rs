//! The hot accessors: message fields, `headers:get/set/add` and header indexing as raw
//! `lua_CFunction`s, which read the slot a handle's tag designates. mlua's generic
//! callback path (registry type checks, reference slots for every argument) would cost
//! several times the work they wrap.

use super::tag::{push_tag, tag_at, Tag, K_HDR, K_REQ, K_RESP, K_TRL};
use super::{Core, Fail, Msg, Pending, SlotId, STALE};
use crate::http::{Body, Version};
use bytes::Bytes;
use mlua::ffi;
use std::borrow::Cow;
use std::os::raw::c_int;

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
pub(super) struct Scratch {
    buf: [std::mem::MaybeUninit<u8>; Scratch::CAP],
    len: usize,
}

impl Scratch {
    const CAP: usize = 128;

    /// An empty scratch: nothing is initialised until `keep` writes it.
    pub(super) fn new() -> Scratch {
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
pub(super) enum Got {
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
pub(super) unsafe fn push_got(l: *mut ffi::lua_State, g: Got, scratch: &Scratch) {
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
pub(super) fn msg_field(
    core: &Core,
    t: Tag,
    key: &[u8],
    sc: &mut Scratch,
) -> std::result::Result<Got, Fail> {
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
                b"error" => match &r.error {
                    Some(e) => sc.keep(e.as_bytes()),
                    None => Got::Nil,
                },
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
pub(super) unsafe extern "C-unwind" fn ud_index(l: *mut ffi::lua_State) -> c_int {
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
pub(super) unsafe extern "C-unwind" fn hdr_get(l: *mut ffi::lua_State) -> c_int {
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
pub(super) unsafe extern "C-unwind" fn hdr_set(l: *mut ffi::lua_State) -> c_int {
    match hdr_write(l, true) {
        Ok(n) => n,
        Err(e) => raise(l, e),
    }
}

/// `headers:add(name, value)`.
pub(super) unsafe extern "C-unwind" fn hdr_add(l: *mut ffi::lua_State) -> c_int {
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
