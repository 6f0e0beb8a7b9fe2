use super::reply::{build_grpc, percent_encode};
use super::*;
use crate::http::{Body, Headers, Request, Response, Version};
use bytes::Bytes;
use mlua::Table;
use mlua::{HookTriggers, VmState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Writes plugin files into a fresh directory; returns their paths in order.
pub(super) fn files(srcs: &[(&str, &str)]) -> Vec<PathBuf> {
    let dir =
        crate::scratch::root().join(format!("plugin-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    srcs.iter()
        .map(|(name, src)| {
            let p = dir.join(name);
            std::fs::write(&p, src).unwrap();
            p
        })
        .collect()
}

pub(super) fn engine(srcs: &[(&str, &str)]) -> Engine {
    let cfg = EngineConfig {
        files: files(srcs),
        ..EngineConfig::default()
    };
    match Engine::load(&cfg, 0) {
        Ok(e) => e,
        Err(e) => panic!("load failed:\n{e}"),
    }
}

fn engine_cfg(srcs: &[(&str, &str)], f: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut cfg = EngineConfig {
        files: files(srcs),
        ..EngineConfig::default()
    };
    f(&mut cfg);
    Engine::load(&cfg, 0).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(src: &str) -> String {
    let cfg = EngineConfig {
        files: files(&[("bad.lua", src)]),
        ..EngineConfig::default()
    };
    match Engine::load(&cfg, 0) {
        Ok(_) => panic!("expected a load error"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn conn() -> ConnInfo {
    ConnInfo {
        conn_id: 7,
        client_addr: "127.0.0.1:5555".parse().unwrap(),
        server_addr: None,
        sni: Some("example.com".into()),
        listener_name: Rc::from("main"),
        worker: 0,
        tls: None,
    }
}

fn req() -> Request {
    let mut headers = Headers::new();
    headers.add("Host", "example.com");
    headers.add("X-A", "1");
    headers.add("x-b", "2");
    headers.add("x-a", "3");
    Request {
        method: Bytes::from_static(b"GET"),
        scheme: "http".into(),
        authority: "example.com:8080".into(),
        path: Some("/p?q=1".into()),
        version: Version::Http11,
        headers,
        body: Body::Streaming,
        trailers: None,
        timestamp_start: 1.5,
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
        body: Body::Full(Bytes::from_static(b"hello")),
        trailers: None,
        error: None,
    }
}

pub(super) fn h(r: &Request, name: &str) -> Option<String> {
    r.headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn load_errors_have_spec_text_and_location() {
    let e = load_err("register_hook('http', 'on_nothing', function() end)");
    assert!(
        e.contains("bad.lua:1: (http, on_nothing) not in RFC §9.3 hook surface"),
        "{e}"
    );
    let e = load_err(
        "\n\nregister_hook('ws', 'on_close', function() end, { phase = 'post_pipeline' })",
    );
    assert!(
        e.contains("bad.lua:3: lifecycle event ws.on_close takes no phase"),
        "{e}"
    );
    let e = load_err("register_hook('http', 'on_request', function() end, { phase = 'middle' })");
    assert!(e.contains("bad.lua:1: unknown phase 'middle'"), "{e}");
    let e = load_err("register_hook('http', 'on_request', function() end, { on_error = 'retry' })");
    assert!(e.contains("bad.lua:1: unknown on_error 'retry'"), "{e}");
    let e = load_err("register_hook('http', 'on_request', 42)");
    assert!(
        e.contains("bad.lua:1: register_hook: handler must be a function"),
        "{e}"
    );
    let e = load_err("local x = = 1");
    assert!(
        e.contains("bad.lua:1:") && e.contains("unexpected symbol"),
        "{e}"
    );
    let e = load_err("\nerror('boom at load')");
    assert!(e.contains("bad.lua:2: boom at load"), "{e}");
}

#[test]
fn all_errors_of_all_files_are_collected() {
    let cfg = EngineConfig {
        files: files(&[
            ("a.lua", "register_hook('x', 'y', function() end)\nregister_hook('http', 'on_request', 1)"),
            ("b.lua", "register_hook('http', 'on_request', function() end, { phase = 'p' })\nerror('late')"),
        ]),
        ..EngineConfig::default()
    };
    let e = Engine::load(&cfg, 0).err().unwrap();
    assert_eq!(e.issues.len(), 4, "{e}");
    let s = e.to_string();
    assert!(
        s.contains("a.lua:1: (x, y) not in RFC §9.3 hook surface"),
        "{s}"
    );
    assert!(
        s.contains("a.lua:2: register_hook: handler must be a function"),
        "{s}"
    );
    assert!(s.contains("b.lua:1: unknown phase 'p'"), "{s}");
    assert!(s.contains("b.lua:2: late"), "{s}");
    assert!(check(&cfg.files).is_err());
}

#[test]
fn every_row_is_registrable_and_listed() {
    let mut src = String::new();
    for r in SURFACE.iter() {
        src.push_str(&format!(
            "register_hook('{}', '{}', function() end)\n",
            r.protocol, r.event_name
        ));
        if !r.lifecycle {
            src.push_str(&format!(
                "register_hook('{}', '{}', function() end, {{ phase = 'post_pipeline', on_error = 'abort', name = 'n' }})\n",
                r.protocol, r.event_name
            ));
        }
    }
    let e = engine(&[("all.lua", &src)]);
    assert_eq!(e.hooks().len(), 17 + 10);
    for r in SURFACE.iter() {
        assert!(e.has(r.event));
        assert_eq!(r.event.row().event, r.event);
    }
    let listed = format_hooks(e.hooks());
    assert_eq!(listed.lines().count(), 27);
    assert!(
        listed
            .lines()
            .next()
            .unwrap()
            .starts_with("http       on_request     pre_pipeline  skip  all.lua:1"),
        "{listed}"
    );
    assert!(
        listed.contains("connection on_connect     -             skip"),
        "{listed}"
    );
    let empty = engine(&[("none.lua", "local x = 1")]);
    assert!(!empty.has(Event::HttpRequest));
    assert!(matches!(
        empty.http_request(Phase::PrePipeline, &conn(), 1, &mut req()),
        Step::Continue
    ));
}

#[test]
fn chain_order_across_files_and_phases() {
    let e = engine(&[
        (
            "one.lua",
            r#"register_hook('http', 'on_request', function(m) m.headers:add('x-order', 'a1') end)
               register_hook('http', 'on_request', function(m) m.headers:add('x-order', 'post') end, { phase = 'post_pipeline' })
               register_hook('http', 'on_request', function(m) m.headers:add('x-order', 'a2') end)"#,
        ),
        (
            "two.lua",
            r#"register_hook('http', 'on_request', function(m, ctx)
                 m.headers:add('x-order', 'b1:' .. m.headers:get_all('x-order')[2] .. ':' .. ctx.plugin)
               end)"#,
        ),
    ]);
    let mut r = req();
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    let order: Vec<_> = r
        .headers
        .get_all("x-order")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(order, ["a1", "a2", "b1:a2:two.lua"]);
    assert!(matches!(
        e.http_request(Phase::PostPipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert_eq!(r.headers.get_all("x-order").count(), 4);
}

#[test]
fn first_drop_or_respond_ends_the_chain() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function(m) m.headers:set('x-1', 'y') end)
           register_hook('http', 'on_request', function(m)
             if m.path == '/drop' then return action.DROP end
             return action.RESPOND{ status = 403, headers = { ['content-type'] = 'text/plain' }, body = 'no' }
           end)
           register_hook('http', 'on_request', function(m) m.headers:set('x-3', 'never') end)"#,
    )]);
    let mut r = req();
    match e.http_request(Phase::PrePipeline, &conn(), 1, &mut r) {
        Step::Respond(resp) => {
            assert_eq!(resp.status, 403);
            assert_eq!(resp.body, Body::Full(Bytes::from_static(b"no")));
            assert_eq!(
                resp.headers.get("Content-Type").unwrap().as_ref(),
                b"text/plain"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h(&r, "x-1").as_deref(), Some("y"));
    assert!(h(&r, "x-3").is_none());
    r.path = Some("/drop".into());
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Drop
    ));
}

#[test]
fn respond_headers_as_list_keep_order_and_repeats() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_response', function(m)
             return action.RESPOND{ status = 502, headers = { {'Set-Cookie', 'a=1'}, {'X-Z', 'z'}, {'Set-Cookie', 'b=2'} } }
           end)"#,
    )]);
    let (rq, mut rs) = (req(), resp());
    match e.http_response(Phase::PrePipeline, &conn(), 1, &rq, &mut rs) {
        Step::Respond(r) => {
            let names: Vec<_> = r.headers.iter().map(|f| f.name.clone()).collect();
            assert_eq!(names, ["Set-Cookie", "X-Z", "Set-Cookie"]);
            assert_eq!(r.headers.get_all("set-cookie").count(), 2);
            assert_eq!(r.status, 502);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn respond_grpc_builds_trailers_only_response() {
    let e = engine(&[(
        "g.lua",
        r#"register_hook('grpc', 'on_start', function() return action.RESPOND_GRPC{ status = 7, message = 'de nied%' } end)"#,
    )]);
    let t = Event::GrpcStart.row();
    assert!(t.allows(surface::A_RESPOND));
    // The gRPC layer is not wired yet; the action builder is exercised directly.
    let r = build_grpc(None).unwrap();
    assert_eq!(r.headers.get("grpc-status").unwrap().as_ref(), b"2");
    assert!(e.has(Event::GrpcStart));
    assert_eq!(percent_encode(b"de nied%\n"), "de nied%25%0A");
}

#[test]
fn respond_with_an_interim_status_is_a_hook_error() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function(m) return action.RESPOND{ status = 101 } end)
           register_hook('http', 'on_request', function(m) m.headers:set('x-next', '1') end)"#,
    )]);
    let mut r = req();
    // the error is handled as on_error says (skip): the chain goes on, nothing answers
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert_eq!(h(&r, "x-next").as_deref(), Some("1"));
    assert_eq!(e.stats().errors, 1);
}

#[test]
fn on_error_skip_and_abort() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function(m) m.headers:set('x-1', 'a') ; error('skipped') end)
           register_hook('http', 'on_request', function(m) m.headers:set('x-2', 'b') end)
           register_hook('http', 'on_request', function(m) m.headers:set('x-3', 'c') ; error('abort!') end, { on_error = 'abort', name = 'stopper' })
           register_hook('http', 'on_request', function(m) m.headers:set('x-4', 'never') end)"#,
    )]);
    let mut r = req();
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert_eq!(h(&r, "x-1").as_deref(), Some("a"));
    assert_eq!(h(&r, "x-2").as_deref(), Some("b"));
    assert_eq!(
        h(&r, "x-3").as_deref(),
        Some("c"),
        "abort keeps the mutations so far"
    );
    assert!(h(&r, "x-4").is_none());
    let s = e.stats();
    assert_eq!((s.hook_calls, s.errors), (3, 2));
}

#[test]
fn forbidden_actions_are_demoted_once_logged_and_counted() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_response', function() return action.DROP end)
           register_hook('http', 'on_response', function(m) m.headers:set('x-after', '1') end)
           register_hook('raw', 'on_chunk', function() return action.RESPOND{} end)
           register_hook('connection', 'on_disconnect', function() return action.DROP end)
           register_hook('connection', 'on_connect', function() return 'weird' end)"#,
    )]);
    let rq = req();
    for _ in 0..3 {
        let mut rs = resp();
        assert!(matches!(
            e.http_response(Phase::PrePipeline, &conn(), 1, &rq, &mut rs),
            Step::Continue
        ));
        assert_eq!(rs.headers.get("x-after").unwrap().as_ref(), b"1");
    }
    let mut c = RawChunk {
        from_client: true,
        data: Bytes::from_static(b"abc"),
        offset: 0,
        ..RawChunk::default()
    };
    e.raw_chunk(Phase::PrePipeline, &conn(), &mut c);
    e.on_disconnect(&conn(), &ConnStats::default());
    assert!(matches!(e.on_connect(&conn()), Step::Continue));
    assert_eq!(e.stats().demotions, 6);
    assert_eq!(e.warned.borrow().len(), 4, "logged once per (hook, action)");
}

#[test]
fn lifecycle_dicts_are_frozen_and_on_connect_stops_at_drop() {
    let e = engine(&[(
        "p.lua",
        r#"seen = {}
           register_hook('connection', 'on_connect', function(d) d.conn_id = 99 ; d.extra = 1 ; rawset(d, 'client_addr', 'x') end)
           register_hook('connection', 'on_connect', function(d, ctx)
             seen[#seen + 1] = tostring(d.conn_id) .. ' ' .. d.client_addr .. ' ' .. d.listener_name .. ' ' .. tostring(d.extra) .. ' ' .. ctx.sni
             if d.conn_id == 8 then return action.DROP end
           end)
           register_hook('connection', 'on_connect', function(d) seen[#seen + 1] = 'third' end)
           register_hook('connection', 'on_disconnect', function(d) seen[#seen + 1] = d.duration_ms .. '/' .. d.bytes_in ; return action.DROP end)
           register_hook('connection', 'on_disconnect', function(d) seen[#seen + 1] = 'd2' end)
           register_hook('tls', 'on_handshake', function(d) seen[#seen + 1] = d.side .. tostring(d.client_fingerprint) end)
           register_hook('socks5', 'on_connect', function(d) seen[#seen + 1] = d.target_addr ; return action.DROP end)"#,
    )]);
    let mut c = conn();
    assert!(matches!(e.on_connect(&c), Step::Continue));
    c.conn_id = 8;
    assert!(matches!(e.on_connect(&c), Step::Drop));
    e.on_disconnect(
        &c,
        &ConnStats {
            duration_ms: 2.5,
            bytes_in: 10,
            bytes_out: 20,
            ..Default::default()
        },
    );
    e.tls_handshake(
        &c,
        &TlsInfo {
            side: "client",
            ..Default::default()
        },
    );
    let info = Socks5Info {
        target_addr: "h:1".into(),
        username: None,
    };
    assert!(matches!(e.socks5_connect(&c, &info), Step::Drop));
    let seen: Vec<String> = e
        .lua
        .globals()
        .get::<Table>("seen")
        .unwrap()
        .sequence_values()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(
        seen,
        [
            "7 127.0.0.1:5555 main nil example.com",
            "third",
            "8 127.0.0.1:5555 main nil example.com",
            "2.5/10",
            "d2",
            "clientnil",
            "h:1"
        ]
    );
}

#[test]
fn headers_api() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function(m)
             local h = m.headers
             assert(h:get('x-a') == '1' and h['X-A'] == '1' and h.get(h, 'HOST') == 'example.com')
             assert(h:get('missing') == nil and h['missing'] == nil)
             local all = h:get_all('x-a')
             assert(#all == 2 and all[1] == '1' and all[2] == '3')
             local wire = {}
             for k, v in h:pairs() do wire[#wire + 1] = k .. '=' .. v end
             assert(table.concat(wire, ',') == 'Host=example.com,X-A=1,x-b=2,x-a=3', table.concat(wire, ','))
             h:set('X-a', 'set')
             h:add('x-new', 'n1')
             h:add('x-new', 'n2')
             assert(h:remove('X-B') == 1)
             assert(#h == 4)
             h['x-idx'] = 'i'
             h['x-idx'] = 5
             assert(h:get('x-idx') == '5' and #h:get_all('x-idx') == 1)
             h['X-IDX'] = nil
             assert(h['x-idx'] == nil and #h == 4)
             m.method = 'POST'
             m.path = '/new'
             m.authority = 'other:81'
             assert(m.host == 'other' and m.port == 81 and m.scheme == 'http')
             assert(m.http_version == 'HTTP/1.1' and m.timestamp_start == 1.5)
             m.trailers = { ['x-t'] = 'v' }
             assert(m.trailers:get('x-t') == 'v')
           end)"#,
    )]);
    let mut r = req();
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert_eq!(e.stats().errors, 0, "assertions in the hook failed");
    let wire: Vec<_> = r
        .headers
        .iter()
        .map(|f| {
            format!(
                "{}={}",
                String::from_utf8_lossy(&f.name),
                String::from_utf8_lossy(&f.value)
            )
        })
        .collect();
    assert_eq!(
        wire,
        ["Host=example.com", "X-A=set", "x-new=n1", "x-new=n2"]
    );
    assert_eq!(
        (r.method.as_ref(), r.path.as_deref(), r.authority.as_str()),
        (&b"POST"[..], Some("/new"), "other:81")
    );
    assert_eq!(r.trailers.unwrap().get("X-T").unwrap().as_ref(), b"v");
}

#[test]
fn response_fields_and_read_only_request_view() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_response', function(m, ctx)
             assert(m.status == 200 and m.reason == 'OK' and m.body == 'hello')
             assert(m.request.method == 'GET' and m.request.headers:get('x-b') == '2')
             assert(not pcall(function() m.request.method = 'PUT' end))
             assert(not pcall(function() m.request.headers:set('a', 'b') end))
             assert(not pcall(function() ctx.conn_id = 1 end))
             assert(ctx.conn_id == 7 and ctx.flow_id == 42 and ctx.client_addr == '127.0.0.1:5555')
             assert(ctx.server_addr == nil and ctx.listener_name == 'main' and ctx.worker == 0)
             m.status = 201
             m.reason = 'Created'
             m.body = 'replaced'
             m.headers:set('content-type', 'application/json')
           end)"#,
    )]);
    let rq = req();
    let mut rs = resp();
    assert!(matches!(
        e.http_response(Phase::PostPipeline, &conn(), 42, &rq, &mut rs),
        Step::Continue
    ));
    // The hook was registered for pre_pipeline only: the post chain is empty.
    assert_eq!(e.stats().hook_calls, 0);
    let e = engine(&[(
        "q.lua",
        r#"register_hook('http', 'on_response', function(m, ctx)
             assert(m.status == 200 and m.reason == 'OK' and m.body == 'hello')
             assert(m.request.method == 'GET' and m.request.headers:get('x-b') == '2')
             assert(not pcall(function() m.request.method = 'PUT' end))
             assert(not pcall(function() ctx.conn_id = 1 end))
             assert(ctx.conn_id == 7 and ctx.flow_id == 42 and ctx.client_addr == '127.0.0.1:5555')
             m.status = 201 ; m.reason = 'Created' ; m.body = 'replaced'
             m.headers:set('content-type', 'application/json')
           end, { phase = 'post_pipeline' })"#,
    )]);
    assert!(matches!(
        e.http_response(Phase::PostPipeline, &conn(), 42, &rq, &mut rs),
        Step::Continue
    ));
    assert_eq!(e.stats().errors, 0);
    assert_eq!((rs.status, rs.reason.as_str()), (201, "Created"));
    assert_eq!(rs.body, Body::Full(Bytes::from_static(b"replaced")));
    assert_eq!(
        rs.headers.get("Content-Type").unwrap().as_ref(),
        b"application/json"
    );
}

#[test]
fn lazy_body_suspends_and_resumes_without_rerunning_hooks() {
    let e = engine(&[(
        "p.lua",
        r#"calls = 0
           register_hook('http', 'on_request', function(m) calls = calls + 1 ; m.headers:set('x-before', '1') end)
           register_hook('http', 'on_request', function(m)
             calls = calls + 1
             m.headers:set('x-mid', 'before-yield')
             local b = m.body
             m.headers:set('x-len', tostring(#b))
             m.body = b .. '!'
           end)
           register_hook('http', 'on_request', function(m) calls = calls + 1 ; m.headers:set('x-after', m.body) end)"#,
    )]);
    let mut r = req();
    let s = match e.http_request(Phase::PrePipeline, &conn(), 1, &mut r) {
        Step::NeedBody(s) => s,
        other => panic!("{other:?}"),
    };
    // The proxy sees the mutations made before the yield while it buffers the body.
    assert_eq!(h(&r, "x-mid").as_deref(), Some("before-yield"));
    assert_eq!(h(&r, "x-before").as_deref(), Some("1"));
    r.body = Body::Full(Bytes::from_static(b"payload"));
    assert!(matches!(
        e.resume_request(s, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert_eq!(h(&r, "x-len").as_deref(), Some("7"));
    assert_eq!(h(&r, "x-after").as_deref(), Some("payload!"));
    assert_eq!(r.body, Body::Full(Bytes::from_static(b"payload!")));
    assert_eq!(e.lua.globals().get::<i64>("calls").unwrap(), 3);
    assert_eq!(e.stats().hook_calls, 3);
    // Once the body is Full no suspension happens.
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
}

#[test]
fn lazy_response_body_and_too_large() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_response', function(m) m.headers:set('x-first', m.request.path) ; local _ = m.body ; m.headers:set('x-never', '1') end)
           register_hook('http', 'on_response', function(m) m.headers:set('x-second', 'ran') end)"#,
    )]);
    let rq = req();
    let mut rs = resp();
    rs.body = Body::Streaming;
    let s = match e.http_response(Phase::PrePipeline, &conn(), 1, &rq, &mut rs) {
        Step::NeedBody(s) => s,
        other => panic!("{other:?}"),
    };
    rs.body = Body::TooLarge;
    assert!(matches!(
        e.resume_response(s, &conn(), 1, &rq, &mut rs),
        Step::Continue
    ));
    assert_eq!(rs.headers.get("x-first").unwrap().as_ref(), b"/p?q=1");
    assert!(rs.headers.get("x-never").is_none());
    assert_eq!(rs.headers.get("x-second").unwrap().as_ref(), b"ran");
    assert_eq!(e.stats().errors, 1);
    assert_eq!(rs.body, Body::TooLarge);
}

#[test]
fn too_large_error_text() {
    let e = engine_cfg(
        &[(
            "p.lua",
            r#"register_hook('http', 'on_request', function(m) local ok, err = pcall(function() return m.body end) ; m.headers:set('x-err', tostring(err)) end)"#,
        )],
        |c| c.max_plugin_body = 1234,
    );
    let mut r = req();
    r.body = Body::TooLarge;
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert!(
        h(&r, "x-err")
            .unwrap()
            .contains("body exceeds max-plugin-body (1234 bytes)"),
        "{:?}",
        h(&r, "x-err")
    );
}

#[test]
fn stale_message_errors_after_the_chain() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function(m)
             if stash then
               local ok, err = pcall(function() return stash.method end)
               m.headers:set('x-stale', tostring(ok) .. ' ' .. tostring(err))
               local ok2 = pcall(function() return stash_h:get('host') end)
               local ok3 = pcall(function() return stash.headers:get('host') end)
               m.headers:set('x-stale-h', tostring(ok2) .. ' ' .. tostring(ok3))
             end
             stash, stash_h = m, m.headers
           end)"#,
    )]);
    let mut r = req();
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    let mut r = req();
    e.http_request(Phase::PrePipeline, &conn(), 2, &mut r);
    let v = h(&r, "x-stale").unwrap();
    assert!(
        v.starts_with("false") && v.contains("message is no longer valid"),
        "{v}"
    );
    assert_eq!(h(&r, "x-stale-h").as_deref(), Some("false false"));
}

fn budget_engine(body: &str) -> Engine {
    let src = format!(
        r#"local function spin(x) return x + 1 end
           register_hook('http', 'on_request', function(m)
             if m.path == '/ok' then m.headers:set('x-ok', 'yes') ; return end
             {body}
           end)"#
    );
    engine_cfg(&[("loop.lua", &src)], |c| {
        c.hook_budget = Duration::from_millis(30)
    })
}

fn assert_interrupted(e: &Engine) {
    for round in 1..=2u64 {
        let mut r = req();
        let t = Instant::now();
        assert!(matches!(
            e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
            Step::Continue
        ));
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "runaway hook took {took:?}"
        );
        assert_eq!(e.stats().budget_interrupts, round);
        // The state keeps working for the next call.
        let mut ok = req();
        ok.path = Some("/ok".into());
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut ok);
        assert_eq!(h(&ok, "x-ok").as_deref(), Some("yes"));
    }
}

#[test]
fn runaway_empty_loop_is_interrupted() {
    assert_interrupted(&budget_engine("while true do end"));
}

#[test]
fn runaway_loop_calling_a_function_is_interrupted() {
    assert_interrupted(&budget_engine("local i = 0 while true do i = spin(i) end"));
}

#[test]
fn runaway_loop_cannot_hide_behind_pcall() {
    assert_interrupted(&budget_engine(
        "while true do pcall(function() while true do end end) end",
    ));
}

#[test]
fn runaway_top_level_code_is_a_load_error() {
    let cfg = EngineConfig {
        files: files(&[("top.lua", "while true do end")]),
        hook_budget: Duration::from_millis(10),
        ..EngineConfig::default()
    };
    let err = Engine::load(&cfg, 0).err().unwrap().to_string();
    assert!(err.contains("time budget"), "{err}");
}

/// Why the JIT is off: with it on, a hot loop runs as a trace that never calls the
/// instruction-count hook, so the budget would not see it.
#[test]
fn count_hook_is_blind_inside_jit_traces() {
    use std::sync::atomic::AtomicU64;
    fn hook_calls(jit: bool) -> u64 {
        let lua = Lua::new();
        let n = Rc::new(AtomicU64::new(0));
        let c = n.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(1000),
            move |_, _| {
                c.fetch_add(1, Ordering::Relaxed);
                Ok(VmState::Continue)
            },
        )
        .unwrap();
        let mode = if jit { "jit.on()" } else { "jit.off()" };
        lua.load(format!(
            "{mode} local x = 0 for i = 1, 3000000 do x = x + i end return x"
        ))
        .exec()
        .unwrap();
        n.load(Ordering::Relaxed)
    }
    let (on, off) = (hook_calls(true), hook_calls(false));
    assert!(off >= 6000, "interpreted: {off}");
    assert!(
        on * 10 < off,
        "JIT on: {on} hook calls vs {off} interpreted"
    );
}

#[test]
fn shared_is_visible_across_engines_on_two_threads() {
    let src = r#"register_hook('http', 'on_request', function(m)
                   local n = shared.incr('test-shared-hits')
                   shared.set('test-shared-last', m.path)
                   shared.set('test-shared-ttl', 'x', 0.05)
                   m.headers:set('x-n', tostring(n))
                 end)"#;
    let paths = files(&[("s.lua", src)]);
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let paths = paths.clone();
            std::thread::spawn(move || {
                let e = Engine::load(
                    &EngineConfig {
                        files: paths,
                        ..EngineConfig::default()
                    },
                    w,
                )
                .unwrap();
                for _ in 0..50 {
                    let mut r = req();
                    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
                    assert_eq!(e.stats().errors, 0);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let e = engine(&[(
        "r.lua",
        r#"register_hook('http', 'on_request', function(m)
             m.headers:set('x-hits', tostring(shared.get('test-shared-hits')))
             m.headers:set('x-last', shared.get('test-shared-last'))
             m.headers:set('x-ttl', tostring(shared.get('test-shared-ttl')))
             shared.delete('test-shared-last')
             m.headers:set('x-del', tostring(shared.get('test-shared-last')))
             m.headers:set('x-bad', tostring(pcall(shared.set, 'k', {})))
           end)"#,
    )]);
    std::thread::sleep(Duration::from_millis(80));
    let mut r = req();
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    assert_eq!(h(&r, "x-hits").as_deref(), Some("100"));
    assert_eq!(h(&r, "x-last").as_deref(), Some("/p?q=1"));
    assert_eq!(h(&r, "x-ttl").as_deref(), Some("nil"), "expired by TTL");
    assert_eq!(h(&r, "x-del").as_deref(), Some("nil"));
    assert_eq!(h(&r, "x-bad").as_deref(), Some("false"));
}

#[test]
fn raw_chunk_data_is_rewritable() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('raw', 'on_chunk', function(m) if m.from_client then m.data = m.data:upper() .. m.offset end end)"#,
    )]);
    let mut c = RawChunk {
        from_client: true,
        data: Bytes::from_static(b"abc"),
        offset: 3,
        ..RawChunk::default()
    };
    e.raw_chunk(Phase::PrePipeline, &conn(), &mut c);
    assert_eq!(c.data.as_ref(), b"ABC3");
    assert!(c.from_client && c.offset == 3);
}

#[test]
fn sandbox_and_logging() {
    let e = engine(&[(
        "p.lua",
        r#"assert(jit == nil and io == nil and os.exit == nil and debug.sethook == nil)
           print('hello from', 'plugin', 1)
           log.info('info') ; log.warn('warn') ; log.debug('d') ; log.error('e')
           register_hook('http', 'on_request', function(m) return 12 end)"#,
    )]);
    let mut r = req();
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert_eq!(e.stats().demotions, 1, "an unknown return value is demoted");
}

#[test]
fn hook_yielding_on_its_own_is_an_error_not_a_hang() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function(m) coroutine.yield(1) end)
           register_hook('http', 'on_request', function(m) m.headers:set('x-next', '1') end)"#,
    )]);
    let mut r = req();
    assert!(matches!(
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
        Step::Continue
    ));
    assert_eq!(h(&r, "x-next").as_deref(), Some("1"));
    assert_eq!(e.stats().errors, 1);
}

#[test]
fn annotations_file_is_valid_lua() {
    let lua = Lua::new();
    let src = include_str!("../../lua/luring.d.lua");
    lua.load(src)
        .set_name("@lua/luring.d.lua")
        .into_function()
        .unwrap();
}

#[test]
fn body_error_after_a_wait_is_catchable_where_it_was_read() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function(m)
             local ok, err = pcall(function() return m.body end)
             m.headers:set('x-caught', tostring(ok) .. ' ' .. tostring(err))
           end)"#,
    )]);
    let mut r = req();
    let s = match e.http_request(Phase::PrePipeline, &conn(), 1, &mut r) {
        Step::NeedBody(s) => s,
        other => panic!("{other:?}"),
    };
    r.body = Body::TooLarge;
    assert!(matches!(
        e.resume_request(s, &conn(), 1, &mut r),
        Step::Continue
    ));
    let v = h(&r, "x-caught").unwrap();
    assert!(
        v.starts_with("false") && v.contains("body exceeds max-plugin-body"),
        "{v}"
    );
    assert_eq!(e.stats().errors, 0);
    // The one-shot error did not stay armed: the next call runs normally.
    let mut r = req();
    r.body = Body::Full(Bytes::from_static(b"ok"));
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    assert_eq!(h(&r, "x-caught").as_deref(), Some("true ok"));
}

#[test]
fn dropped_suspension_and_stale_request_view() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_response', function(m)
             if old then
               local ok, err = pcall(function() return old.method end)
               m.headers:set('x-old', tostring(ok) .. ' ' .. tostring(err))
               m.headers:set('x-trl', tostring(pcall(function() return old_h:get('x') end)))
             end
             old, old_h = m.request, m.headers
             if m.status == 202 then local _ = m.body end
           end)"#,
    )]);
    let rq = req();
    let mut rs = resp();
    rs.status = 202;
    rs.body = Body::Streaming;
    match e.http_response(Phase::PrePipeline, &conn(), 1, &rq, &mut rs) {
        Step::NeedBody(s) => drop(s),
        other => panic!("{other:?}"),
    }
    let mut rs = resp();
    e.http_response(Phase::PrePipeline, &conn(), 1, &rq, &mut rs);
    let v = rs.headers.get("x-old").unwrap();
    assert!(
        v.starts_with(b"false") && String::from_utf8_lossy(v).contains("no longer valid"),
        "{v:?}"
    );
    assert_eq!(rs.headers.get("x-trl").unwrap().as_ref(), b"false");
    assert_eq!(e.stats().errors, 0);
}

#[test]
fn require_finds_modules_next_to_the_plugin() {
    let paths = files(&[(
        "p.lua",
        r#"local util = require('sibling_util')
           register_hook('http', 'on_request', function(m) m.headers:set('x-u', util.tag()) end)"#,
    )]);
    let dir = paths[0].parent().unwrap();
    std::fs::write(
        dir.join("sibling_util.lua"),
        "return { tag = function() return 'sib' end }",
    )
    .unwrap();
    let cfg = EngineConfig {
        files: paths,
        ..EngineConfig::default()
    };
    let e = Engine::load(&cfg, 0).unwrap_or_else(|e| panic!("{e}"));
    let mut r = req();
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    assert_eq!(r.headers.get("x-u").map(|v| v.as_ref()), Some(&b"sib"[..]));

    // a missing module is reported with the places searched
    let err = load_err("require('no_such_module_here')");
    assert!(err.contains("bad.lua:1"), "{err}");
    assert!(err.contains("no_such_module_here.lua"), "{err}");
}

#[test]
fn sse_event_fields_read_write_and_validate() {
    let e = engine(&[(
        "sse.lua",
        r#"
register_hook("sse", "on_event", function(ev, ctx)
  assert(ev.index == 3 and ev.event == nil and ev.data == "x\ny" and ev.id == "5")
  assert(ev.retry == 100 and ctx.flow_id == 9)
  assert(not pcall(function() ev.event = "a\nb" end))
  assert(not pcall(function() ev.id = "a\rb" end))
  assert(not pcall(function() ev.retry = -1 end))
  assert(not pcall(function() ev.retry = 1.5 end))
  assert(not pcall(function() ev.index = 0 end))
  ev.event = "update"
  ev.data = ev.data .. "\nz"
  ev.id = nil
  ev.retry = nil
end)
register_hook("sse", "on_event", function(ev)
  assert(ev.event == "update" and ev.data == "x\ny\nz" and ev.id == nil)
end, { phase = "post_pipeline" })
"#,
    )]);
    let mut ev = SseEvent {
        event: crate::proto::sse::Event {
            data: "x\ny".into(),
            has_data: true,
            id: Some("5".into()),
            retry: Some(100),
            ..Default::default()
        },
        index: 3,
        changed: false,
    };
    e.sse_event(Phase::PrePipeline, &conn(), 9, &mut ev);
    assert!(ev.changed);
    e.sse_event(Phase::PostPipeline, &conn(), 9, &mut ev);
    assert_eq!(e.stats().errors, 0, "a hook assertion failed");
    assert_eq!(
        ev.event.serialize().as_ref(),
        b"event: update\ndata: x\ndata: y\ndata: z\n\n"
    );
}

// ---------------------------------------------------------------------------
// memory limit and the hostile-plugin cases of the sandbox (docs/security.md)
// ---------------------------------------------------------------------------

const MEM_LIMIT: usize = 32 << 20;

/// An engine whose on_request hook runs `body` (requests to /ok only set x-ok), with a
/// 32 MiB memory limit and a time budget long enough that the limit acts first.
fn mem_engine(body: &str) -> Engine {
    mem_engine_budget(body, Duration::from_secs(5))
}

fn mem_engine_budget(body: &str, budget: Duration) -> Engine {
    let src = format!(
        r#"register_hook('http', 'on_request', function(m)
             if m.path == '/ok' then m.headers:set('x-ok', 'yes') ; return end
             {body}
             m.headers:set('x-after', 'reached')
           end)"#
    );
    engine_cfg(&[("mem.lua", &src)], |c| {
        c.memory_limit = MEM_LIMIT;
        c.hook_budget = budget;
    })
}

/// The hook fails, counts as a memory interrupt, the state recovers below its limit, and
/// the next call on the same state works.
fn assert_memory_stopped(e: &Engine) {
    for round in 1..=2u64 {
        let mut r = req();
        assert!(matches!(
            e.http_request(Phase::PrePipeline, &conn(), 1, &mut r),
            Step::Continue
        ));
        assert_eq!(h(&r, "x-after"), None, "the hook ran past the limit");
        let s = e.stats();
        assert_eq!((s.errors, s.memory_interrupts), (round, round), "{s:?}");
        assert!(
            e.mem.used() < MEM_LIMIT / 2,
            "not recovered: {} bytes held",
            e.mem.used()
        );
        let mut ok = req();
        ok.path = Some("/ok".into());
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut ok);
        assert_eq!(h(&ok, "x-ok").as_deref(), Some("yes"));
    }
}

#[test]
fn memory_limit_refuses_one_huge_string_before_it_is_allocated() {
    // 1 GiB in one C call: the count hook never sees it, the allocator does
    assert_memory_stopped(&mem_engine("local s = string.rep('x', 2^30)"));
    assert_memory_stopped(&mem_engine(
        "local t = {} for i = 1, 64 do t[i] = string.rep('y', 2^20) end local s = table.concat(t, '', 1, 64)",
    ));
}

#[test]
fn memory_limit_stops_a_table_growing_for_ever() {
    assert_memory_stopped(&mem_engine(
        "local t = {} local i = 0 while true do i = i + 1 ; t[i] = {i} end",
    ));
    assert_memory_stopped(&mem_engine("local s = 'x' while true do s = s .. s end"));
}

#[test]
fn memory_error_is_not_swallowed_by_the_plugins_pcall() {
    assert_memory_stopped(&mem_engine(
        "for i = 1, 3 do pcall(string.rep, 'x', 2^30) end",
    ));
    assert_memory_stopped(&mem_engine(
        "local co = coroutine.create(function() local t = {} while true do t[#t + 1] = {} end end)
         coroutine.resume(co)",
    ));
}

#[test]
fn garbage_does_not_count_against_the_limit() {
    // 200 MB of short-lived strings under a 32 MiB limit
    let e = mem_engine("for i = 1, 2000 do local s = string.rep('y', 100000) .. i end");
    let mut r = req();
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    assert_eq!(h(&r, "x-after").as_deref(), Some("reached"));
    assert_eq!(e.stats().errors, 0);
}

#[test]
fn memory_limit_applies_to_a_plugins_top_level() {
    let cfg = EngineConfig {
        files: files(&[("top.lua", "BIG = string.rep('x', 2^30)")]),
        memory_limit: MEM_LIMIT,
        ..EngineConfig::default()
    };
    let err = Engine::load(&cfg, 0).err().unwrap().to_string();
    assert!(err.contains("plugin memory limit exceeded"), "{err}");
    assert!(err.contains("top.lua"), "{err}");
}

#[test]
fn state_that_keeps_growing_across_calls_fails_its_hooks_and_keeps_working() {
    // each call keeps 4 MiB for good: from the ~8th call on, every call hits the limit
    let e = mem_engine("KEEP = KEEP or {} ; KEEP[#KEEP + 1] = string.rep('k', 4 * 2^20) .. #KEEP");
    for _ in 0..20 {
        let mut r = req();
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    }
    let s = e.stats();
    assert!(s.memory_interrupts >= 10, "{s:?}");
    assert!(e.mem.used() <= MEM_LIMIT, "{}", e.mem.used());
    let mut ok = req();
    ok.path = Some("/ok".into());
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut ok);
    assert_eq!(h(&ok, "x-ok").as_deref(), Some("yes"));
}

/// A hook that misbehaves in `body` fails within the time budget (or at once) and the
/// state serves the next call.
fn assert_fails_and_recovers(body: &str) {
    let e = mem_engine_budget(body, Duration::from_millis(300));
    let t = Instant::now();
    let mut r = req();
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "{body}: took {:?}",
        t.elapsed()
    );
    assert_eq!(h(&r, "x-after"), None, "{body}");
    assert_eq!(e.stats().errors, 1, "{body}");
    let mut ok = req();
    ok.path = Some("/ok".into());
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut ok);
    assert_eq!(h(&ok, "x-ok").as_deref(), Some("yes"), "{body}");
}

#[test]
fn hostile_error_paths_fail_the_hook_and_nothing_else() {
    for body in [
        // an error handler that itself raises
        "xpcall(function() error('a') end, function(e) error('b') end) error('after')",
        // an error handler that never returns: the time budget stops it
        "xpcall(function() error('a') end, function(e) while true do end end)",
        // error objects whose __tostring raises, or never returns
        "error(setmetatable({}, {__tostring = function() error('no text') end}))",
        "error(setmetatable({}, {__tostring = function() while true do end end}))",
        // a hook that yields in a loop
        "while true do coroutine.yield() end",
        // coroutine bombs: nested without end, and created without end
        "local function bomb() coroutine.wrap(bomb)() end bomb()",
        "local all = {} while true do all[#all + 1] = coroutine.create(function() end) end",
        // recursion without end
        "local function f() return 1 + f() end f()",
        // recursion through C functions that call back into Lua
        "local function f() ('x'):gsub('.', f) end f()",
        "local function f() table.sort({3, 2, 1}, function() f() return false end) end f()",
        "local t = setmetatable({}, {__tostring = function(s) return tostring(s) end}) tostring(t)",
    ] {
        assert_fails_and_recovers(body);
    }
    // recursion that the callee turns into an error value or a log line: the state
    // survives and serves the next call
    for body in [
        "local function r() load(r) end r()",
        "local t ; t = setmetatable({}, {__tostring = function() print(t) return 'x' end}) print(t)",
        "local t ; t = setmetatable({}, {__tostring = function() return string.format('%s', t) end}) print(t)",
        "local b = require('string.buffer').new() local t
         t = setmetatable({}, {__tostring = function() b:put(t) return 'x' end}) b:put(t)",
        "local t ; t = setmetatable({}, {__index = function(s, k) return s[k] end}) local _ = t.x",
        "local t ; t = setmetatable({}, {__tostring = function() return table.concat({tostring(t)}) end}) tostring(t)",
    ] {
        let e = mem_engine(body);
        let mut r = req();
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
        let mut ok = req();
        ok.path = Some("/ok".into());
        e.http_request(Phase::PrePipeline, &conn(), 1, &mut ok);
        assert_eq!(h(&ok, "x-ok").as_deref(), Some("yes"), "{body}");
    }
}

#[test]
fn standard_libraries_plugins_get() {
    let e = engine(&[(
        "p.lua",
        r#"
        -- removed: each would block the core, leave the process, or break memory safety
        for _, name in ipairs({'io', 'ffi', 'jit', 'newproxy'}) do
          assert(_G[name] == nil, name)
        end
        for _, name in ipairs({'exit', 'execute', 'remove', 'rename', 'tmpname', 'setlocale'}) do
          assert(os[name] == nil, 'os.' .. name)
        end
        assert(string.dump == nil and package.loadlib == nil)
        assert(debug.getinfo == nil and debug.sethook == nil and debug.getregistry == nil)
        for _, m in ipairs({'io', 'ffi', 'jit', 'os.execute'}) do
          assert(not pcall(require, m), 'require ' .. m)
        end
        -- binary chunks are refused by every loader
        local bc = '\27LJ\2\0'
        local f, err = load(bc) ; assert(f == nil and err:find('binary'), err)
        f, err = loadstring(bc) ; assert(f == nil and err:find('binary'), err)
        f, err = load(function() local s = bc ; bc = nil ; return s end)
        assert(f == nil and err:find('binary'), err)
        assert(not pcall(loadfile) and not pcall(dofile), 'stdin')
        assert(not pcall(collectgarbage, 'stop'))
        -- kept: text chunks, time, environment, math, string, table, bit, coroutines
        assert(load('return 1 + 1')() == 2)
        assert(load('return x', 'c', 't', {x = 5})() == 5)
        assert(type(os.time()) == 'number' and type(os.clock()) == 'number')
        assert(os.date('!%Y', 0) == '1970' and os.difftime(2, 1) == 1)
        assert(os.getenv('PATH') ~= nil)
        assert(math.max(1, 2) == 2 and ('ab'):rep(2) == 'abab' and table.concat({1, 2}) == '12')
        assert(bit.band(6, 3) == 2 and type(debug.traceback()) == 'string')
        assert(coroutine.wrap(function() coroutine.yield(7) end)() == 7)
        assert(collectgarbage('count') > 0)
        collectgarbage()
        assert(require('string.buffer').new():put('z'):tostring() == 'z')
        local pre = {}
        for k in pairs(package.preload) do pre[#pre + 1] = k end
        table.sort(pre)
        assert(table.concat(pre, ',') == 'string.buffer,table.clear,table.new', table.concat(pre, ','))
        for _, m in ipairs({'jit.util', 'jit.profile', 'jit.opt'}) do
          assert(not pcall(require, m), 'require ' .. m)
        end
        local t = require('table.new')(4, 0) ; t[1] = 1 ; require('table.clear')(t) ; assert(t[1] == nil)
        register_hook('http', 'on_request', function(m) m.headers:set('x-std', 'ok') end)"#,
    )]);
    let mut r = req();
    e.http_request(Phase::PrePipeline, &conn(), 1, &mut r);
    assert_eq!(h(&r, "x-std").as_deref(), Some("ok"));
}

#[test]
fn binary_plugin_file_and_module_are_refused() {
    let lua = Lua::new();
    let bytecode = lua
        .load("register_hook('http', 'on_request', function() end)")
        .into_function()
        .unwrap()
        .dump(false);
    let paths = files(&[("bin.lua", "")]);
    std::fs::write(&paths[0], &bytecode).unwrap();
    let err = Engine::load(
        &EngineConfig {
            files: paths.clone(),
            ..EngineConfig::default()
        },
        0,
    )
    .err()
    .expect("a bytecode plugin must not load")
    .to_string();
    assert!(err.contains("binary (bytecode)"), "{err}");

    let dir = paths[0].parent().unwrap();
    std::fs::write(dir.join("binmod.lua"), &bytecode).unwrap();
    std::fs::write(dir.join("user.lua"), "require('binmod')").unwrap();
    let err = Engine::load(
        &EngineConfig {
            files: vec![dir.join("user.lua")],
            ..EngineConfig::default()
        },
        0,
    )
    .err()
    .expect("a bytecode module must not load")
    .to_string();
    assert!(err.contains("binary (bytecode)"), "{err}");
}
