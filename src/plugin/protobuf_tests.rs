//! `luring.protobuf` driven from Lua, as plugins use it.

use super::super::tests::engine;
use super::*;
use mlua::Function;

/// Runs `src` as a plugin's top level and returns its global function `f`.
fn lua_fn(src: &str) -> (crate::plugin::Engine, Function) {
    let e = engine(&[("p.lua", src)]);
    let f = e.lua.globals().get::<Function>("f").unwrap();
    (e, f)
}

fn bytes(f: &Function, b: &[u8]) -> Vec<u8> {
    let lua_s = f.call::<mlua::String>(mlua::BString::from(b)).unwrap();
    lua_s.as_bytes().to_vec()
}

/// A message with every wire type, canonical: varint, big varint, fixed64, string,
/// nested message, fixed32, group, a repeated field.
fn sample() -> Bytes {
    let mut m = Message::new();
    m.push(1, Pb::Varint(150));
    m.push(2, Pb::Varint(u64::MAX));
    m.push(3, Pb::I64(7));
    m.push(4, Pb::string("héllo"));
    let mut inner = Message::new();
    inner.push(1, Pb::string("in"));
    m.push(5, Pb::message(&inner));
    m.push(6, Pb::I32(0xdead_beef));
    m.push(7, Pb::Group(Bytes::from_static(b"\x08\x01")));
    m.push(1, Pb::Varint(0));
    m.encode()
}

#[test]
fn decode_gives_fields_and_values() {
    let (_e, f) = lua_fn(
        r#"function f(b)
             local m = luring.protobuf.decode(b)
             local out = {}
             for _, x in ipairs(m) do
               out[#out + 1] = string.format('%d/%d/%s', x.number, x.wire_type, tostring(x.value))
             end
             return table.concat(out, ' ')
           end"#,
    );
    let s = String::from_utf8(bytes(&f, &sample())).unwrap();
    assert_eq!(
        s,
        "1/0/150 2/0/18446744073709551615 3/1/7 4/2/héllo 5/2/\n\u{2}in 6/5/3735928559 \
         7/3/\u{8}\u{1} 1/0/0"
    );
}

#[test]
fn unchanged_tables_round_trip_exactly() {
    let (e, f) = lua_fn(
        r#"local pb = luring.protobuf
           function f(b) return pb.encode(pb.decode(b)) end
           function g(b)
             local m, n = pb.decode(b), {}
             for i = #m, 1, -1 do n[#n + 1] = m[i] end
             return pb.encode(n)
           end"#,
    );
    let s = sample();
    assert_eq!(bytes(&f, &s), s.to_vec());
    // not canonical: a 2-byte varint for 1, a padded tag, a padded length
    let odd: &[u8] = b"\x08\x81\x00\x90\x00\x05\x22\x82\x00hi\x08\x01";
    assert_eq!(bytes(&f, odd), odd);
    assert_eq!(bytes(&f, b""), b"");
    // a field keeps its bytes in another table too
    let g = e.lua.globals().get::<Function>("g").unwrap();
    assert_eq!(
        bytes(&g, odd),
        b"\x08\x01\x22\x82\x00hi\x90\x00\x05\x08\x81\x00"
    );
}

#[test]
fn a_changed_field_alone_is_rewritten() {
    let (_e, f) = lua_fn(
        r#"function f(b)
             local m = luring.protobuf.decode(b)
             m[1].value = 2           -- was a padded varint 1
             m[3].value = 'hey'       -- was 'hi' with a padded length
             return luring.protobuf.encode(m)
           end"#,
    );
    let odd: &[u8] = b"\x08\x81\x00\x90\x00\x05\x22\x82\x00hi";
    assert_eq!(bytes(&f, odd), b"\x08\x02\x90\x00\x05\x22\x03hey");
}

#[test]
fn nested_messages_and_new_tables() {
    let (e, f) = lua_fn(
        r#"local pb = luring.protobuf
           function f(b)
             local m = pb.decode(b)
             local inner = pb.decode_message(m[5].value)
             inner[1].value = 'IN'
             m[5].value = pb.encode(inner)
             assert(pb.decode_message(m[1].value) == nil)   -- a number
             assert(pb.decode_message('\255') == nil)       -- not a message
             return pb.encode(m)
           end
           function g()
             return pb.encode({
               { number = 1, value = 'text' },               -- wire type 2 by default
               { number = 2, value = -1 },                    -- int64 -1: ten bytes
               { number = 3, value = true },
               { number = 4, wire_type = 5, value = -2 },     -- sfixed32
               { number = 5, wire_type = 1, value = '18446744073709551615' },
               { number = 6, wire_type = 3, value = '\8\1' },
             })
           end"#,
    );
    let mut want = Message::decode(&sample()).unwrap();
    let mut inner = Message::new();
    inner.push(1, Pb::string("IN"));
    want.fields[4].value = Pb::message(&inner);
    assert_eq!(bytes(&f, &sample()), want.encode().to_vec());
    let g = e.lua.globals().get::<Function>("g").unwrap();
    let got = g.call::<mlua::String>(()).unwrap();
    let m = Message::decode(&Bytes::copy_from_slice(&got.as_bytes())).unwrap();
    let values: Vec<Pb> = m.fields.iter().map(|f| f.value.clone()).collect();
    assert_eq!(
        values,
        [
            Pb::string("text"),
            Pb::Varint(u64::MAX),
            Pb::Varint(1),
            Pb::I32(0xffff_fffe),
            Pb::I64(u64::MAX),
            Pb::Group(Bytes::from_static(b"\x08\x01")),
        ]
    );
}

#[test]
fn bad_input_and_bad_tables_raise() {
    let (_e, f) = lua_fn(
        r#"local pb = luring.protobuf
           function f(b)
             local out = {}
             for _, c in ipairs({
               function() return pb.decode(b) end,
               function() return pb.encode({ { number = 0, value = 1 } }) end,
               function() return pb.encode({ { number = 1, wire_type = 4, value = 1 } }) end,
               function() return pb.encode({ { number = 1, wire_type = 2, value = 1 } }) end,
               function() return pb.encode({ { number = 1, value = 1.5 } }) end,
               function() return pb.encode({ { number = 1, wire_type = 5, value = 2^32 } }) end,
               function() return pb.encode({ 'x' }) end,
               function() return pb.decode(nil) end,
             }) do
               local ok, err = pcall(c)
               out[#out + 1] = tostring(ok) .. ' ' .. tostring(err)
             end
             return table.concat(out, '\0')
           end"#,
    );
    let s = String::from_utf8(bytes(&f, b"\x08")).unwrap();
    let lines: Vec<&str> = s.split('\0').collect();
    let want = [
        "protobuf.decode: malformed protobuf at byte 1: TruncatedVarint",
        "protobuf.encode: field #1: number must be an integer 1..2^29-1",
        "wire_type must be 0, 1, 2, 3 or 5",
        "value of a length-delimited field must be a string, got number",
        "value must be an integer",
        "a fixed32 value must be in -2^31..2^32-1",
        "protobuf.encode: field #1: not a field table",
        "protobuf.decode: bytes (a string) expected, got nil",
    ];
    assert_eq!(lines.len(), want.len(), "{s}");
    for (l, w) in lines.iter().zip(want) {
        assert!(l.starts_with("false ") && l.contains(w), "{l} / {w}");
    }
}
