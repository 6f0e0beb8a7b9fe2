//! Tests of the handle machinery as a whole: tag encoding through LuaJIT, foreign
//! light userdata, stale handles and slot retirement.

use super::tag::{Tag, GEN_LIMIT, K_HDR, K_REQ, K_RESP, K_TRL, LO_MASK, MAGIC_HI, MAX_SLOTS};
use super::*;
use crate::http::{Body, Headers, Request, Version};
use bytes::Bytes;
use mlua::{Function, Lua, Value};

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
