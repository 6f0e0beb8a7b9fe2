//! Tests of the gRPC rows and of the stream-ending methods of WSMessage and RawMessage
//! (`luring.protobuf` is tested in protobuf_tests.rs).

use super::tests::{conn, engine};
use super::*;
use bytes::Bytes;

const PRE: Phase = Phase::PrePipeline;

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
