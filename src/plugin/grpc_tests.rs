//! Tests of the gRPC rows and of the stream-ending methods of WSMessage and RawMessage
//! (`luring.protobuf` is tested in protobuf_tests.rs).

use super::tests::{conn, engine, h};
use super::*;
use crate::http::{Body, Headers, Request, Version};
use bytes::Bytes;

const G: GrpcRows = GrpcRows::Grpc;
const PRE: Phase = Phase::PrePipeline;
const POST: Phase = Phase::PostPipeline;

fn call() -> GrpcCall {
    GrpcCall {
        rows: G,
        protocol: "grpc",
        encoding: Some("gzip".into()),
    }
}

fn greq() -> Request {
    let mut headers = Headers::new();
    headers.add("content-type", "application/grpc+proto");
    headers.add("te", "trailers");
    headers.add("x-token", "t1");
    Request {
        method: Bytes::from_static(b"POST"),
        scheme: "https".into(),
        authority: "api.example:443".into(),
        path: Some("/pkg.Greeter/SayHello".into()),
        version: Version::Http2,
        headers,
        body: Body::Streaming,
        trailers: None,
        timestamp_start: 2.0,
    }
}

fn data(from_client: bool, index: u64, payload: &'static [u8]) -> GrpcData {
    GrpcData {
        from_client,
        index,
        compressed: false,
        payload: Bytes::from_static(payload),
        cancel: None,
    }
}

fn start(e: &Engine, rows: GrpcRows, phase: Phase, r: &mut Request) -> Step {
    e.grpc_start(rows, phase, &conn(), 9, r, &call())
}

/// Runs one on_data chain (pre phase) over `d` and returns it.
fn run_data(e: &Engine, mut d: GrpcData) -> GrpcData {
    e.grpc_data(G, PRE, &conn(), 9, &mut d);
    d
}

#[test]
fn start_message_fields() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_start', function(m, ctx)
             local out = {}
             for _, k in ipairs({'service', 'method', 'path', 'authority', 'content_type',
                                 'encoding', 'protocol'}) do
               out[#out + 1] = k .. '=' .. tostring(m[k])
             end
             out[#out + 1] = 'token=' .. m.headers['x-token']
             out[#out + 1] = 'flow=' .. ctx.flow_id .. '/' .. ctx.conn_id
             out[#out + 1] = 'other=' .. tostring(m.nothing)
             m.headers:set('x-seen', table.concat(out, ' '))
           end)"#,
    )]);
    let mut r = greq();
    assert!(matches!(start(&e, G, PRE, &mut r), Step::Continue));
    assert_eq!(
        h(&r, "x-seen").unwrap(),
        "service=pkg.Greeter method=SayHello path=/pkg.Greeter/SayHello \
         authority=api.example:443 content_type=application/grpc+proto encoding=gzip \
         protocol=grpc token=t1 flow=9/7 other=nil"
    );
    // without an authority (HTTP/1.1 grpc-web), the Host header stands in
    r.authority.clear();
    r.headers.add("Host", "web.example");
    r.headers.remove("x-seen");
    let c = GrpcCall {
        rows: GrpcRows::GrpcWeb,
        protocol: "grpc-web-text",
        encoding: None,
    };
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc-web', 'on_start', function(m)
             m.headers:set('x-seen', m.authority .. ' ' .. m.protocol .. ' ' .. tostring(m.encoding))
           end)"#,
    )]);
    e.grpc_start(GrpcRows::GrpcWeb, PRE, &conn(), 1, &mut r, &c);
    assert_eq!(h(&r, "x-seen").unwrap(), "web.example grpc-web-text nil");
}

#[test]
fn start_headers_and_path_changes_land_in_the_request() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_start', function(m)
             m.headers:add('x-added', 'a')
             m.headers['x-token'] = nil
             m.headers:set('te', 'trailers')
             m.path = '/pkg.Greeter/SayGoodbye'
             m.headers:set('x-method', m.method)
           end)
           register_hook('grpc', 'on_start', function(m)
             m.headers:set('x-next', m.path .. ' ' .. m.service)
           end)"#,
    )]);
    let mut r = greq();
    assert!(matches!(start(&e, G, PRE, &mut r), Step::Continue));
    assert_eq!(r.path.as_deref(), Some("/pkg.Greeter/SayGoodbye"));
    assert_eq!(h(&r, "x-added").as_deref(), Some("a"));
    assert_eq!(h(&r, "x-token"), None);
    assert_eq!(h(&r, "x-method").as_deref(), Some("SayGoodbye"));
    assert_eq!(
        h(&r, "x-next").as_deref(),
        Some("/pkg.Greeter/SayGoodbye pkg.Greeter")
    );
    // a whole table replaces the metadata, as for HTTP messages
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_start', function(m) m.headers = { {'a', '1'}, {'a', '2'} } end)"#,
    )]);
    let mut r = greq();
    start(&e, G, PRE, &mut r);
    assert_eq!(r.headers.get_all("a").count(), 2);
    assert_eq!(r.headers.len(), 2);
}

#[test]
fn start_message_refuses_body_bad_paths_and_read_only_fields() {
    let e = engine(&[(
        "p.lua",
        r#"local function try(f) local ok, err = pcall(f) return tostring(ok) .. ':' .. tostring(err) end
           register_hook('grpc', 'on_start', function(m)
             m.headers:set('x-body', try(function() return m.body end))
             m.headers:set('x-path', try(function() m.path = '/not a path' end))
             m.headers:set('x-nil', try(function() m.path = nil end))
             m.headers:set('x-ro', try(function() m.service = 'x' end))
           end)"#,
    )]);
    let mut r = greq();
    start(&e, G, PRE, &mut r);
    assert!(
        h(&r, "x-body")
            .unwrap()
            .contains("GRPCStartMessage has no body"),
        "{:?}",
        h(&r, "x-body")
    );
    assert!(h(&r, "x-path")
        .unwrap()
        .contains("path must be a gRPC path /package.Service/Method"));
    assert!(h(&r, "x-nil").unwrap().starts_with("false:"));
    assert!(h(&r, "x-ro")
        .unwrap()
        .contains("GRPCStartMessage field 'service' is read-only or unknown"));
    assert_eq!(r.path.as_deref(), Some("/pkg.Greeter/SayHello"));
}

#[test]
fn start_actions_per_row() {
    for rows in [GrpcRows::Grpc, GrpcRows::GrpcWeb] {
        let p = if rows == G { "grpc" } else { "grpc-web" };
        let src = format!(
            r#"register_hook('{p}', 'on_start', function(m)
                 local a = m.headers['x-act']
                 if a == 'drop' then return action.DROP end
                 if a == 'respond' then return action.RESPOND{{ status = 403, body = 'no' }} end
                 if a == 'grpc' then
                   return action.RESPOND_GRPC{{ status = 7, message = 'de nied%', details = '\1\2',
                                                trailers = {{ {{'x-why', 'policy'}} }} }}
                 end
                 if a == 'bare' then return action.RESPOND_GRPC end
               end, {{ phase = 'post_pipeline' }})"#
        );
        let e = engine(&[("p.lua", &src)]);
        let act = |a: &str| {
            let mut r = greq();
            r.headers.add("x-act", a.to_string());
            start(&e, rows, POST, &mut r)
        };
        assert!(matches!(act("none"), Step::Continue));
        assert!(matches!(act("drop"), Step::Drop));
        match act("respond") {
            Step::Respond(r) => assert_eq!(r.status, 403),
            other => panic!("{other:?}"),
        }
        match act("grpc") {
            Step::Respond(r) => {
                assert_eq!(r.status, 200);
                assert!(matches!(&r.body, Body::Full(b) if b.is_empty()));
                let hv = |n: &str| r.headers.get(n).map(|v| v.to_vec());
                assert_eq!(hv("content-type").unwrap(), b"application/grpc");
                assert_eq!(hv("grpc-status").unwrap(), b"7");
                assert_eq!(hv("grpc-message").unwrap(), b"de nied%25");
                assert_eq!(hv("grpc-status-details-bin").unwrap(), b"AQI");
                assert_eq!(hv("x-why").unwrap(), b"policy");
            }
            other => panic!("{other:?}"),
        }
        match act("bare") {
            Step::Respond(r) => assert_eq!(r.headers.get("grpc-status").unwrap().as_ref(), b"2"),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.stats().demotions, 0);
        // the other row and the other phase have no hook
        let other = if rows == G { GrpcRows::GrpcWeb } else { G };
        let mut r = greq();
        r.headers.add("x-act", "drop");
        assert!(matches!(start(&e, other, POST, &mut r), Step::Continue));
        assert!(matches!(start(&e, rows, PRE, &mut r), Step::Continue));
        assert!(e.has_grpc(rows) && !e.has_grpc(other));
    }
}

#[test]
fn respond_grpc_is_demoted_outside_the_start_rows() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('http', 'on_request', function() return action.RESPOND_GRPC{ status = 7 } end)
           register_hook('grpc', 'on_data', function() return action.RESPOND_GRPC{ status = 7 } end)
           register_hook('grpc', 'on_data', function() return action.DROP end)
           register_hook('grpc', 'on_data', function() return action.RESPOND{} end)
           register_hook('grpc', 'on_data', function(m) m.payload = m.payload .. '!' end)
           register_hook('grpc', 'on_end', function() return action.DROP end)"#,
    )]);
    let mut r = greq();
    assert!(matches!(
        e.http_request(PRE, &conn(), 1, &mut r),
        Step::Continue
    ));
    let d = run_data(&e, data(true, 0, b"x"));
    assert_eq!(
        d.payload.as_ref(),
        b"x!",
        "demoted actions do not end the chain"
    );
    e.grpc_end(G, &conn(), 9, &GrpcEnd::default());
    assert_eq!(e.stats().demotions, 5);
}

#[test]
fn start_chain_order_phases_and_first_drop() {
    let e = engine(&[
        (
            "a.lua",
            r#"register_hook('grpc', 'on_start', function(m) m.headers:add('x-o', 'post-a') end, { phase = 'post_pipeline' })
               register_hook('grpc', 'on_start', function(m) m.headers:add('x-o', 'pre-a') end)"#,
        ),
        (
            "b.lua",
            r#"register_hook('grpc', 'on_start', function(m)
                 m.headers:add('x-o', 'pre-b')
                 if m.headers['x-stop'] then return action.DROP end
               end)
               register_hook('grpc', 'on_start', function(m) m.headers:add('x-o', 'pre-c') end)"#,
        ),
    ]);
    let order = |r: &Request| {
        r.headers
            .get_all("x-o")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut r = greq();
    start(&e, G, PRE, &mut r);
    start(&e, G, POST, &mut r);
    assert_eq!(order(&r), "pre-a,pre-b,pre-c,post-a");
    let mut r = greq();
    r.headers.add("x-stop", "1");
    assert!(matches!(start(&e, G, PRE, &mut r), Step::Drop));
    assert_eq!(
        order(&r),
        "pre-a,pre-b",
        "mutations before the DROP are kept"
    );
}

#[test]
fn on_error_skip_and_abort() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_start', function(m) m.headers:set('x-1', '1') error('boom') end)
           register_hook('grpc', 'on_start', function(m) m.headers:set('x-2', '2') end)
           register_hook('grpc', 'on_start', function(m) m.headers:set('x-3', '3') error('stop') end,
                         { phase = 'post_pipeline', on_error = 'abort' })
           register_hook('grpc', 'on_start', function(m) return action.DROP end, { phase = 'post_pipeline' })
           register_hook('grpc', 'on_data', function(m) m.payload = 'a' error('x') end, { on_error = 'abort' })
           register_hook('grpc', 'on_data', function(m) m.payload = 'b' end)
           register_hook('grpc', 'on_data', function(m) m.payload = m.payload .. '1' error('y') end,
                         { phase = 'post_pipeline' })
           register_hook('grpc', 'on_data', function(m) m.payload = m.payload .. '2' end,
                         { phase = 'post_pipeline' })"#,
    )]);
    let mut r = greq();
    assert!(matches!(start(&e, G, PRE, &mut r), Step::Continue));
    assert_eq!(
        (h(&r, "x-1"), h(&r, "x-2")),
        (Some("1".into()), Some("2".into()))
    );
    assert!(
        matches!(start(&e, G, POST, &mut r), Step::Continue),
        "abort skips the DROP after it"
    );
    assert_eq!(h(&r, "x-3").as_deref(), Some("3"));
    let d = run_data(&e, data(true, 0, b"x"));
    assert_eq!(
        d.payload.as_ref(),
        b"a",
        "abort keeps the changes made so far"
    );
    let mut d = data(true, 0, b"x");
    e.grpc_data(G, POST, &conn(), 9, &mut d);
    assert_eq!(d.payload.as_ref(), b"x12");
    assert_eq!(e.stats().errors, 4);
}

#[test]
fn data_fields_payload_and_cancel() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_data', function(m, ctx)
             m.payload = string.format('%s|%s|%s|%s|%d', m.payload, tostring(m.from_client),
               m.index, tostring(m.compressed), ctx.flow_id)
             if m.index == 1 then m:cancel(7, 'no more') end
             if m.index == 2 then m:cancel(13) end
           end)
           register_hook('grpc', 'on_data', function(m)
             if m.index == 1 then m:cancel(3, 'second call loses') end
             local ok, err = pcall(function() m.index = 5 end)
             if not ok then m.payload = m.payload .. '|ro' end
           end)"#,
    )]);
    let d = run_data(&e, data(true, 0, b"p"));
    assert_eq!(d.payload.as_ref(), b"p|true|0|false|9|ro");
    assert_eq!(d.cancel, None);
    let mut x = data(false, 1, b"q");
    x.compressed = true;
    let d = run_data(&e, x);
    assert_eq!(d.payload.as_ref(), b"q|false|1|true|9|ro");
    assert_eq!(
        d.cancel,
        Some((7, "no more".into())),
        "the first cancel wins"
    );
    let d = run_data(&e, data(false, 2, b""));
    assert_eq!(d.cancel, Some((13, String::new())));
    assert_eq!(e.stats().errors, 0);
}

#[test]
fn cancel_with_a_bad_status_is_a_hook_error() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_data', function(m)
             local ok, err = pcall(m.cancel, m, 17)
             m.payload = tostring(err)
             local ok2, err2 = pcall(m.cancel, 'x', 1)
             m.payload = m.payload .. '|' .. tostring(err2)
             m:cancel('7')
           end)"#,
    )]);
    let d = run_data(&e, data(true, 0, b""));
    let p = String::from_utf8_lossy(&d.payload).into_owned();
    assert!(
        p.contains("cancel: status must be a gRPC status code 0-16, got 17"),
        "{p}"
    );
    assert!(p.contains("GRPCDataMessage expected"), "{p}");
    assert_eq!(d.cancel, None);
    assert_eq!(e.stats().errors, 1);
}

#[test]
fn stashed_grpc_messages_go_stale() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_start', function(m)
             if old_start then
               local ok, err = pcall(function() return old_start.path end)
               m.headers:set('x-stale', tostring(err))
               local ok2, err2 = pcall(function() return old_start.headers:get('te') end)
               m.headers:set('x-stale-h', tostring(err2))
               local ok3, err3 = pcall(function() return old_data.payload end)
               m.headers:set('x-stale-d', tostring(err3))
             end
             old_start = m
           end)
           register_hook('grpc', 'on_data', function(m) old_data = m end)"#,
    )]);
    let mut r = greq();
    start(&e, G, PRE, &mut r);
    run_data(&e, data(true, 0, b""));
    start(&e, G, PRE, &mut r);
    for n in ["x-stale", "x-stale-h", "x-stale-d"] {
        assert!(
            h(&r, n).unwrap().contains("message is no longer valid"),
            "{n}: {:?}",
            h(&r, n)
        );
    }
}

#[test]
fn end_dict_is_frozen_and_every_hook_runs() {
    let e = engine(&[(
        "p.lua",
        r#"seen = {}
           register_hook('grpc-web', 'on_end', function(m, ctx)
             seen[#seen + 1] = string.format('%d %s %s %d %s=%s f%d', m.status, m.message,
               tostring(m.status_details), #m.trailers, m.trailers[1][1], m.trailers[1][2], ctx.flow_id)
             m.status = 0
             m.trailers[1][2] = 'changed'
             m.trailers[2] = nil
             error('ignored')
           end)
           register_hook('grpc-web', 'on_end', function(m)
             seen[#seen + 1] = string.format('%d %s %d', m.status, m.trailers[1][2], #m.trailers)
           end)"#,
    )]);
    let end = GrpcEnd {
        status: 5,
        message: "not found".into(),
        status_details: Some(Bytes::from_static(b"\x08\x05")),
        trailers: vec![
            ("grpc-status".into(), "5".into()),
            ("x-t".into(), "v".into()),
        ],
    };
    e.grpc_end(GrpcRows::GrpcWeb, &conn(), 4, &end);
    e.grpc_end(G, &conn(), 4, &end);
    let seen: Vec<String> = e.lua.globals().get::<Vec<String>>("seen").unwrap();
    assert_eq!(
        seen,
        ["5 not found \u{8}\u{5} 2 grpc-status=5 f4", "5 5 2"],
        "the second hook sees the original values"
    );
    let e2 = engine(&[(
        "p.lua",
        r#"register_hook('grpc', 'on_end', function(m) got = tostring(m.status_details) .. ' ' .. #m.trailers end)"#,
    )]);
    e2.grpc_end(
        G,
        &conn(),
        1,
        &GrpcEnd {
            status: 2,
            ..GrpcEnd::default()
        },
    );
    assert_eq!(e2.lua.globals().get::<String>("got").unwrap(), "nil 0");
}

#[test]
fn no_hook_leaves_everything_alone() {
    let e = engine(&[(
        "p.lua",
        "register_hook('http', 'on_request', function() end)",
    )]);
    assert!(!e.has_grpc(G) && !e.has_grpc(GrpcRows::GrpcWeb));
    let mut r = greq();
    assert!(matches!(start(&e, G, PRE, &mut r), Step::Continue));
    assert_eq!(r.headers.len(), 3);
    let d = run_data(&e, data(true, 0, b"x"));
    assert_eq!(d.payload.as_ref(), b"x");
    e.grpc_end(G, &conn(), 1, &GrpcEnd::default());
    assert_eq!(e.stats().hook_calls, 0);
}

#[test]
fn ws_close_and_raw_close() {
    let e = engine(&[(
        "p.lua",
        r#"register_hook('ws', 'on_message', function(m)
             if m.payload == 'bye' then m:close(4001, 'done') end
             if m.payload == 'dflt' then m:close() end
             if m.payload == 'bad' then
               local _, e1 = pcall(m.close, m, 1006)
               local _, e2 = pcall(m.close, m, 1000, string.rep('x', 124))
               local _, e3 = pcall(m.close, 1000)
               m.payload = tostring(e1) .. '|' .. tostring(e2) .. '|' .. tostring(e3)
             end
           end)
           register_hook('ws', 'on_message', function(m)
             if m.payload == 'bye' then m:close(1000, 'later') end
           end)
           register_hook('raw', 'on_chunk', function(m) if m.data == 'quit' then m:close() end end)"#,
    )]);
    let ws = |p: &'static [u8]| {
        let mut m = WsMessage {
            opcode: 1,
            payload: Bytes::from_static(p),
            from_client: true,
            ..WsMessage::default()
        };
        e.ws_message(PRE, &conn(), 1, &mut m);
        m
    };
    assert_eq!(ws(b"bye").close, Some((4001, "done".into())));
    assert_eq!(ws(b"dflt").close, Some((1000, String::new())));
    assert_eq!(ws(b"hello").close, None);
    let m = ws(b"bad");
    assert_eq!(m.close, None);
    let p = String::from_utf8_lossy(&m.payload).into_owned();
    assert!(p.contains("close code must be 1000-1003, 1007-1014 or 3000-4999, got 1006"));
    assert!(p.contains("close reason must be at most 123 bytes"));
    assert!(p.contains("WSMessage expected"), "{p}");
    let raw = |d: &'static [u8]| {
        let mut c = RawChunk {
            from_client: true,
            data: Bytes::from_static(d),
            ..RawChunk::default()
        };
        e.raw_chunk(PRE, &conn(), &mut c);
        c.close
    };
    assert!(raw(b"quit"));
    assert!(!raw(b"stay"));
    assert_eq!(e.stats().errors, 0);
}
