//! Plugin engine costs: dispatch, header access from Lua, a full exchange, and the
//! price of the runaway-hook budget (JIT off + instruction-count hook).

#[path = "common/sample.rs"]
mod sample;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use luring::http::{Body, Headers, Request, Response, Version};
use luring::plugin::{ConnInfo, Engine, EngineConfig, GrpcData, GrpcRows, Phase, Step};
use mlua::{ffi, HookTriggers, Lua, VmState};
use sample::twenty_fields;
use std::hint::black_box;
use std::os::raw::{c_int, c_void};
use std::path::PathBuf;
use std::rc::Rc;

fn engine(name: &str, src: &str) -> Engine {
    let dir = std::env::temp_dir().join(format!("luring-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, src).unwrap();
    Engine::load(
        &EngineConfig {
            files: vec![p],
            ..EngineConfig::default()
        },
        0,
    )
    .unwrap()
}

fn conn() -> ConnInfo {
    ConnInfo {
        conn_id: 1,
        client_addr: "127.0.0.1:4000".parse().unwrap(),
        server_addr: None,
        sni: None,
        listener_name: Rc::from("bench"),
        worker: 0,
        tls: None,
    }
}

fn req() -> Request {
    let mut headers = Headers::new();
    for (n, v) in [
        ("Host", "example.com"),
        ("User-Agent", "bench"),
        ("Accept", "*/*"),
        ("X-A", "1"),
    ] {
        headers.add(n, v);
    }
    Request {
        method: Bytes::from_static(b"GET"),
        scheme: "http".into(),
        authority: "example.com".into(),
        path: Some("/".into()),
        version: Version::Http11,
        headers,
        body: Body::Full(Bytes::new()),
        trailers: None,
        timestamp_start: 0.0,
    }
}

fn resp() -> Response {
    let mut headers = Headers::new();
    headers.add("Content-Type", "text/plain");
    Response {
        status: 200,
        reason: "OK".into(),
        version: Version::Http11,
        headers,
        body: Body::Full(Bytes::from_static(b"hi")),
        trailers: None,
        error: None,
    }
}

const LOOP: usize = 100;

/// A grpc.on_data hook that decodes the payload, changes one field and encodes it back.
const PROTOBUF_EDIT: &str = "local pb = luring.protobuf
register_hook('grpc', 'on_data', function(m)
  local msg = pb.decode(m.payload)
  msg[5].value = 'changed'
  m.payload = pb.encode(msg)
end)";

/// Runs grpc.on_data (pre phase) over a fresh copy of `payload`.
fn grpc_data(e: &Engine, c0: &ConnInfo, payload: &Bytes) -> GrpcData {
    let mut d = GrpcData {
        from_client: true,
        payload: payload.clone(),
        ..GrpcData::default()
    };
    e.grpc_data(GrpcRows::Grpc, Phase::PrePipeline, c0, 1, &mut d);
    d
}

/// The plugin of `benches/two-headers.lua`: what the proxy-level comparison loads.
const TWO_HEADERS: &str = include_str!("two-headers.lua");

fn dispatch(c: &mut Criterion) {
    let c0 = conn();
    let e = engine(
        "noop.lua",
        "register_hook('http', 'on_request', function(m, ctx) end)",
    );
    let mut r = req();
    c.bench_function("noop_hook_dispatch", |b| {
        b.iter(|| {
            assert!(matches!(
                e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r)),
                Step::Continue
            ))
        })
    });
    let none = engine("none.lua", "-- no hooks");
    c.bench_function("no_hook_registered", |b| {
        b.iter(|| black_box(none.has(luring::plugin::Event::HttpRequest)))
    });

    let e = engine(
        "get.lua",
        "register_hook('http', 'on_request', function(m) for i = 1, 100 do local v = m.headers:get('x-a') end end)",
    );
    let mut r = req();
    c.bench_function("headers_get_x100_from_lua", |b| {
        b.iter(|| e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r)))
    });
    let e = engine(
        "set.lua",
        "register_hook('http', 'on_request', function(m) for i = 1, 100 do m.headers:set('x-b', 'v') end end)",
    );
    let mut r = req();
    c.bench_function("headers_set_x100_from_lua", |b| {
        b.iter(|| e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r)))
    });
    let e = engine(
        "loop.lua",
        "register_hook('http', 'on_request', function(m) for i = 1, 100 do local v = i end end)",
    );
    let mut r = req();
    c.bench_function("empty_loop_x100_baseline", |b| {
        b.iter(|| e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r)))
    });

    let e = engine(
        "pair.lua",
        "register_hook('http', 'on_request', function(m) m.headers:set('x-proxy', 'luring') end)\n\
         register_hook('http', 'on_response', function(m) if m.status == 200 then m.headers:add('x-seen', m.request.path) end end)",
    );
    let e2 = engine("two-headers.lua", TWO_HEADERS);
    let (rq0, rs0) = (req(), resp());
    c.bench_function("two_headers_plugin", |b| {
        b.iter(|| {
            let mut rq = rq0.clone();
            let mut rs = rs0.clone();
            e2.http_request(Phase::PrePipeline, &c0, 1, &mut rq);
            e2.http_response(Phase::PrePipeline, &c0, 1, &rq, &mut rs);
            black_box((rq, rs))
        })
    });
    c.bench_function("request_response_two_hooks", |b| {
        b.iter(|| {
            let mut rq = req();
            let mut rs = resp();
            e.http_request(Phase::PrePipeline, &c0, 1, &mut rq);
            e.http_response(Phase::PrePipeline, &c0, 1, &rq, &mut rs);
            black_box((rq, rs))
        })
    });
    let wire = twenty_fields();
    let e = engine("pb.lua", PROTOBUF_EDIT);
    assert_ne!(grpc_data(&e, &c0, &wire).payload, wire);
    c.bench_function("grpc_data_protobuf_edit_20_fields", |b| {
        b.iter(|| black_box(grpc_data(&e, &c0, black_box(&wire))))
    });
    let _ = LOOP;
}

/// Best per-iteration time over many short batches: on a shared, overloaded machine
/// the mean measures the scheduler, the minimum still measures the code.
/// `LURING_MINS=substring` runs only the cases whose name contains it (for `perf`).
fn min_per_iter(name: &str, per_iter_div: f64, mut f: impl FnMut()) {
    const BATCH: u32 = 200;
    if let Ok(only) = std::env::var("LURING_MINS") {
        if !name.contains(only.as_str()) {
            return;
        }
    }
    let mut best = f64::MAX;
    for _ in 0..300 {
        let t = std::time::Instant::now();
        for _ in 0..BATCH {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    println!("min-of-batches {name:<32} {:>10.1} ns", best / per_iter_div);
}

/// Prints min-of-batches figures for the headline costs (see `min_per_iter`).
fn mins(_: &mut Criterion) {
    let c0 = conn();
    let e = engine(
        "noop.lua",
        "register_hook('http', 'on_request', function(m, ctx) end)",
    );
    let mut r = req();
    min_per_iter("noop_hook_dispatch", 1.0, || {
        e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r));
    });
    let e = engine(
        "get.lua",
        "register_hook('http', 'on_request', function(m) for i = 1, 100 do local v = m.headers:get('x-a') end end)",
    );
    min_per_iter("headers_get (per get, incl. loop)", 100.0, || {
        e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r));
    });
    let e = engine(
        "getl.lua",
        "register_hook('http', 'on_request', function(m) local h = m.headers for i = 1, 100 do local v = h:get('x-a') end end)",
    );
    min_per_iter("headers_get, h in a local (per get)", 100.0, || {
        e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r));
    });
    handle_floor();
    let e = engine(
        "field.lua",
        "register_hook('http', 'on_request', function(m) for i = 1, 100 do local v = m.headers end end)",
    );
    min_per_iter("msg.headers field (per access)", 100.0, || {
        e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r));
    });
    let e = engine(
        "meth.lua",
        "register_hook('http', 'on_request', function(m) for i = 1, 100 do local v = m.method end end)",
    );
    min_per_iter("msg.method field (per access)", 100.0, || {
        e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r));
    });
    let e = engine(
        "set.lua",
        "register_hook('http', 'on_request', function(m) for i = 1, 100 do m.headers:set('x-b', 'v') end end)",
    );
    min_per_iter("headers_set (per set, incl. loop)", 100.0, || {
        e.http_request(Phase::PrePipeline, &c0, 1, black_box(&mut r));
    });
    let e = engine(
        "pair.lua",
        "register_hook('http', 'on_request', function(m) m.headers:set('x-proxy', 'luring') end)\n\
         register_hook('http', 'on_response', function(m) if m.status == 200 then m.headers:add('x-seen', m.request.path) end end)",
    );
    min_per_iter("request_response_two_hooks", 1.0, || {
        let mut rq = req();
        let mut rs = resp();
        e.http_request(Phase::PrePipeline, &c0, 1, &mut rq);
        e.http_response(Phase::PrePipeline, &c0, 1, &rq, &mut rs);
        black_box((rq, rs));
    });
    let e = engine("two-headers.lua", TWO_HEADERS);
    let (rq0, rs0) = (req(), resp());
    min_per_iter("two_headers_plugin (per request)", 1.0, || {
        let mut rq = rq0.clone();
        let mut rs = rs0.clone();
        e.http_request(Phase::PrePipeline, &c0, 1, &mut rq);
        e.http_response(Phase::PrePipeline, &c0, 1, &rq, &mut rs);
        black_box((rq, rs));
    });
    min_per_iter("  same, clones only (subtract)", 1.0, || {
        black_box((rq0.clone(), rs0.clone()));
    });
    grpc_mins(&c0);
    let lua = Lua::new();
    lua.globals()
        .set("f", lua.create_function(|_, ()| Ok(())).unwrap())
        .unwrap();
    let g = lua
        .load("return function() for i = 1, 100 do f() end end")
        .eval::<mlua::Function>()
        .unwrap();
    min_per_iter("lua_to_rust_call (per call)", 100.0, || {
        g.call::<()>(()).unwrap()
    });
    let src = "local x = 0 for i = 1, 10000 do x = (x + i * 3) % 1000003 end return x";
    for (name, jit, hook) in [
        ("lua_10k_jit_on", true, false),
        ("lua_10k_jit_off", false, false),
        ("lua_10k_jit_off_count_hook", false, true),
    ] {
        let lua = Lua::new();
        lua.load(if jit {
            "jit.on()"
        } else {
            "jit.off() jit.flush()"
        })
        .exec()
        .unwrap();
        if hook {
            lua.set_global_hook(HookTriggers::new().every_nth_instruction(1000), |_, _| {
                Ok(VmState::Continue)
            })
            .unwrap();
        }
        let f = lua.load(src).into_function().unwrap();
        min_per_iter(name, 1.0, || {
            black_box(f.call::<i64>(()).unwrap());
        });
    }
}

/// grpc.on_data: the hook call alone, then a protobuf edit of a 20-field message.
fn grpc_mins(c0: &ConnInfo) {
    let wire = twenty_fields();
    let e = engine(
        "gnoop.lua",
        "register_hook('grpc', 'on_data', function(m) end)",
    );
    min_per_iter("grpc_data noop hook", 1.0, || {
        black_box(grpc_data(&e, c0, &wire));
    });
    let e = engine("pb.lua", PROTOBUF_EDIT);
    min_per_iter("protobuf decode+set+encode, 20 fields", 1.0, || {
        black_box(grpc_data(&e, c0, &wire));
    });
    // the two halves of that edit
    for (name, src) in [
        (
            "protobuf decode only, 20 fields",
            "local pb = luring.protobuf
             register_hook('grpc', 'on_data', function(m) local x = pb.decode(m.payload) end)",
        ),
        (
            "protobuf encode only, 20 fields",
            "local pb, d = luring.protobuf, nil
             register_hook('grpc', 'on_data', function(m)
               d = d or pb.decode(m.payload)
               local x = pb.encode(d)
             end)",
        ),
    ] {
        let e = engine("pbx.lua", src);
        min_per_iter(name, 1.0, || {
            black_box(grpc_data(&e, c0, &wire));
        });
    }
}

/// `__index` of the floor's handle: `headers` gives the handle back, `get` the C
/// function in upvalue 1; no tag, slot or header is looked at.
unsafe extern "C-unwind" fn floor_index(l: *mut ffi::lua_State) -> c_int {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, 2, &mut len);
    match (p.is_null(), len) {
        (false, 7) => ffi::lua_pushvalue(l, 1),
        (false, 3) => ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1)),
        _ => ffi::lua_pushnil(l),
    }
    1
}

/// `get` of the floor's handle: returns a constant 1-byte string.
unsafe extern "C-unwind" fn floor_get(l: *mut ffi::lua_State) -> c_int {
    let _ = ffi::lua_touserdata(l, 1);
    ffi::lua_pushlstring(l, c"1".as_ptr(), 1);
    1
}

unsafe extern "C-unwind" fn floor_hook(_: *mut ffi::lua_State, _: *mut ffi::lua_Debug) {}

/// What `msg.headers:get(name)` costs in the engine's VM configuration (JIT off, count
/// hook every 1000 instructions) when both `__index` calls and `get` do no work: a light
/// userdata whose metatable `__index` and `get` are C functions that return at once.
/// The engine's figure minus this one is what luring's own code costs per get.
fn handle_floor() {
    let lua = Lua::new();
    lua.load("jit.off() jit.flush()").exec().unwrap();
    lua.exec_raw_lua(|raw| {
        // SAFETY: main state outside any callback; every push is consumed by a
        // setmetatable, setglobal or pop.
        unsafe {
            let l = raw.state();
            ffi::lua_sethook(l, Some(floor_hook), ffi::LUA_MASKCOUNT, 1000);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_pushcfunction(l, floor_get);
            ffi::lua_pushcclosure(l, floor_index, 1);
            ffi::lua_setfield(l, -2, c"__index".as_ptr());
            ffi::lua_pushlightuserdata(l, 0x6c75_7200_0000_1234u64 as usize as *mut c_void);
            ffi::lua_pushvalue(l, -2);
            ffi::lua_setmetatable(l, -2);
            ffi::lua_setglobal(l, c"handle".as_ptr());
            ffi::lua_pop(l, 1);
        }
    });
    let f = lua
        .load("local m = handle return function() for i = 1, 100 do local v = m.headers:get('x-a') end end")
        .eval::<mlua::Function>()
        .unwrap();
    min_per_iter("floor: no-op handle.headers:get", 100.0, || {
        f.call::<()>(()).unwrap()
    });
}

/// The floor: one Lua -> Rust call through mlua, on this machine, at this load.
fn floor(c: &mut Criterion) {
    let lua = Lua::new();
    lua.globals()
        .set("f", lua.create_function(|_, ()| Ok(())).unwrap())
        .unwrap();
    let g = lua
        .load("return function() for i = 1, 100 do f() end end")
        .eval::<mlua::Function>()
        .unwrap();
    c.bench_function("lua_to_rust_call_x100", |b| {
        b.iter(|| g.call::<()>(()).unwrap())
    });
}

/// The budget's price on plain Lua: JIT on, JIT off, JIT off with the count hook.
fn budget(c: &mut Criterion) {
    let src = "local x = 0 for i = 1, 10000 do x = (x + i * 3) % 1000003 end return x";
    for (name, jit, hook) in [
        ("lua_10k_jit_on", true, false),
        ("lua_10k_jit_off", false, false),
        ("lua_10k_jit_off_count_hook", false, true),
    ] {
        let lua = Lua::new();
        lua.load(if jit {
            "jit.on()"
        } else {
            "jit.off() jit.flush()"
        })
        .exec()
        .unwrap();
        if hook {
            lua.set_global_hook(HookTriggers::new().every_nth_instruction(1000), |_, _| {
                Ok(VmState::Continue)
            })
            .unwrap();
        }
        let f = lua.load(src).into_function().unwrap();
        c.bench_function(name, |b| b.iter(|| black_box(f.call::<i64>(()).unwrap())));
    }
}

criterion_group!(benches, mins, dispatch, budget, floor);
criterion_main!(benches);
