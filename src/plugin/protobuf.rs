//! `luring.protobuf`: the schema-less codec of `crate::proto::protobuf` for hooks that
//! read or change gRPC payloads.
//!
//! A message is a Lua sequence of fields `{number =, wire_type =, value =}`. Round trips
//! are exact. Nearly every encoder writes fields canonically (minimal varints), and those
//! are written again from their value, which gives the same bytes. The rare field whose
//! bytes are not canonical keeps them in a weak table keyed by its field table, out of
//! the plugin's sight, and `encode` writes them back while its number, wire type and
//! value are unchanged (through `Field::encode_into`, so the codec decides).

use crate::proto::protobuf::{Field, Message, Value as Pb, WireType, MAX_FIELD_NUMBER};
use bytes::{Bytes, BytesMut};
use mlua::{ffi, Error, Lua, Result, Table, Value};
use std::os::raw::c_int;

// The functions are raw `lua_CFunction`s, as the hot message accessors are: through
// mlua's generic callback path, every table read or write of a field costs a protected
// call, which made a 20-field message 15 µs instead of a few.
//
// Upvalues of the three functions: the weak table of raw bytes, then the field keys
// (interned once, so setting a field costs no string lookup).
const UP_RAWS: c_int = 1;
const UP_NUMBER: c_int = 2;
const UP_WIRE_TYPE: c_int = 3;
const UP_VALUE: c_int = 4;

/// Largest integer a Lua number holds exactly; larger values travel as decimal strings.
const EXACT: u64 = 1 << 53;

/// Builds the `luring.protobuf` table for one state.
pub(super) fn table(lua: &Lua) -> Result<Table> {
    // Weak keys: the bytes go with the field table they belong to.
    let raws = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.raw_set("__mode", "k")?;
    raws.set_metatable(Some(mt))?;
    let t = lua.create_table()?;
    for (name, f) in [
        ("decode", pb_decode as ffi::lua_CFunction),
        ("decode_message", pb_decode_message),
        ("encode", pb_encode),
    ] {
        let func = lua.exec_raw_lua(|raw| -> Result<Value> {
            let l = raw.state();
            // SAFETY: main state outside any callback, stack room checked; the pushes
            // are consumed by lua_pushcclosure, whose result pop_value takes.
            unsafe {
                if ffi::lua_checkstack(l, 6) == 0 {
                    return Err(Error::runtime("stack overflow"));
                }
                raw.push(&raws)?;
                for k in ["number", "wire_type", "value"] {
                    ffi::lua_pushlstring_(l, k.as_ptr().cast(), k.len());
                }
                ffi::lua_pushcclosure(l, f, 4);
                Ok(raw.pop_value())
            }
        })?;
        let Value::Function(func) = func else {
            return Err(Error::runtime("lua_pushcclosure pushed no function"));
        };
        t.raw_set(name, func)?;
    }
    Ok(t)
}

/// Raises `msg` as a Lua error; the `String` is gone before the jump.
unsafe fn raise(l: *mut ffi::lua_State, msg: String) -> c_int {
    ffi::lua_pushlstring_(l, msg.as_ptr().cast(), msg.len());
    drop(msg);
    ffi::lua_error(l)
}

/// Pushes bytes as a Lua string.
unsafe fn push_bytes(l: *mut ffi::lua_State, b: &[u8]) {
    ffi::lua_pushlstring_(
        l,
        if b.is_empty() {
            c"".as_ptr()
        } else {
            b.as_ptr().cast()
        },
        b.len(),
    );
}

/// The Lua type name of stack slot `idx`.
unsafe fn type_at(l: *mut ffi::lua_State, idx: c_int) -> String {
    let name = ffi::lua_typename(l, ffi::lua_type(l, idx));
    std::ffi::CStr::from_ptr(name)
        .to_string_lossy()
        .into_owned()
}

/// The string at `idx` (it stays valid while the value stays on the stack).
unsafe fn str_at<'a>(l: *mut ffi::lua_State, idx: c_int) -> Option<&'a [u8]> {
    if ffi::lua_type(l, idx) != ffi::LUA_TSTRING {
        return None;
    }
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, idx, &mut len);
    Some(std::slice::from_raw_parts(p.cast(), len))
}

/// `luring.protobuf.decode(bytes)`: malformed input is an error.
unsafe extern "C-unwind" fn pb_decode(l: *mut ffi::lua_State) -> c_int {
    let m = match str_at(l, 1) {
        Some(b) => Message::decode(&Bytes::copy_from_slice(b)),
        None => {
            let e = format!(
                "protobuf.decode: bytes (a string) expected, got {}",
                type_at(l, 1)
            );
            return raise(l, e);
        }
    };
    match m {
        Ok(m) => push_message(l, &m),
        Err(e) => raise(l, format!("protobuf.decode: {e}")),
    }
}

/// `luring.protobuf.decode_message(value)`: nil for anything that is not a message.
unsafe extern "C-unwind" fn pb_decode_message(l: *mut ffi::lua_State) -> c_int {
    match str_at(l, 1).map(|b| Message::decode(&Bytes::copy_from_slice(b))) {
        Some(Ok(m)) => push_message(l, &m),
        _ => {
            ffi::lua_pushnil(l);
            1
        }
    }
}

/// Pushes `m` as a sequence of field tables; returns 1 (the values pushed).
///
/// A C function may use LUA_MINSTACK (20) slots unchecked; this uses at most 5.
unsafe fn push_message(l: *mut ffi::lua_State, m: &Message) -> c_int {
    ffi::lua_createtable(l, m.fields.len().min(1 << 24) as c_int, 0);
    for (i, f) in m.fields.iter().enumerate() {
        ffi::lua_createtable(l, 0, 3);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(UP_NUMBER));
        ffi::lua_pushnumber(l, f64::from(f.number));
        ffi::lua_rawset(l, -3);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(UP_WIRE_TYPE));
        ffi::lua_pushnumber(l, f64::from(f.value.wire_type() as u8));
        ffi::lua_rawset(l, -3);
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(UP_VALUE));
        match &f.value {
            Pb::Varint(v) | Pb::I64(v) if *v <= EXACT => ffi::lua_pushnumber(l, *v as f64),
            Pb::Varint(v) | Pb::I64(v) => push_bytes(l, v.to_string().as_bytes()),
            Pb::I32(v) => ffi::lua_pushnumber(l, f64::from(*v)),
            Pb::Len(b) | Pb::Group(b) => push_bytes(l, b),
        }
        ffi::lua_rawset(l, -3);
        if let Some(raw) = f.raw().filter(|r| !canonical(f, r)) {
            ffi::lua_pushvalue(l, -1);
            push_bytes(l, raw);
            ffi::lua_rawset(l, ffi::lua_upvalueindex(UP_RAWS));
        }
        ffi::lua_rawseti_(l, -2, (i + 1) as c_int);
    }
    1
}

/// `luring.protobuf.encode(message)`.
unsafe extern "C-unwind" fn pb_encode(l: *mut ffi::lua_State) -> c_int {
    match encode_table(l) {
        Ok(out) => {
            push_bytes(l, &out);
            1
        }
        Err(e) => raise(l, e),
    }
}

/// The bytes of the message table at index 1. Only raw reads touch Lua, and they never
/// raise, so nothing can jump over the buffer.
unsafe fn encode_table(l: *mut ffi::lua_State) -> std::result::Result<BytesMut, String> {
    if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
        return Err(format!(
            "protobuf.encode: message table expected, got {}",
            type_at(l, 1)
        ));
    }
    ffi::lua_settop(l, 1);
    let n = ffi::lua_objlen(l, 1);
    let mut out = BytesMut::with_capacity(n * 8);
    for i in 1..=n {
        ffi::lua_rawgeti_(l, 1, i.min(c_int::MAX as usize) as c_int);
        let f = field_at(l).map_err(|e| format!("protobuf.encode: field #{i}: {e}"))?;
        f.encode_into(&mut out);
        ffi::lua_settop(l, 1);
    }
    Ok(out)
}

/// Pushes `t[key]` for the table at `t` and the key in upvalue `up`.
unsafe fn get(l: *mut ffi::lua_State, t: c_int, up: c_int) {
    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(up));
    ffi::lua_rawget_(l, t);
}

/// The field table at index 2 as the codec's field, with its decoded bytes when it
/// kept some. Leaves number, wire type, value and raw bytes at 3..6.
unsafe fn field_at(l: *mut ffi::lua_State) -> std::result::Result<Field, String> {
    if ffi::lua_type(l, 2) != ffi::LUA_TTABLE {
        return Err("not a field table".into());
    }
    get(l, 2, UP_NUMBER);
    get(l, 2, UP_WIRE_TYPE);
    get(l, 2, UP_VALUE);
    let number = match int_at(l, 3) {
        Some(n @ 1..) if n <= i64::from(MAX_FIELD_NUMBER) => n as u32,
        _ => return Err("number must be an integer 1..2^29-1".into()),
    };
    let wt = match ffi::lua_type(l, 4) {
        ffi::LUA_TNIL if ffi::lua_type(l, 5) == ffi::LUA_TSTRING => WireType::Len,
        ffi::LUA_TNIL => WireType::Varint,
        _ => int_at(l, 4)
            .and_then(|w| u8::try_from(w).ok())
            .and_then(WireType::from_bits)
            .filter(|w| *w != WireType::EndGroup)
            .ok_or("wire_type must be 0, 1, 2, 3 or 5")?,
    };
    let value = match wt {
        WireType::Varint => Pb::Varint(u64_at(l, 5)?),
        WireType::I64 => Pb::I64(u64_at(l, 5)?),
        WireType::I32 => Pb::I32(u32_at(l, 5)?),
        WireType::Len => Pb::Len(bytes_at(l, 5)?),
        WireType::StartGroup | WireType::EndGroup => Pb::Group(bytes_at(l, 5)?),
    };
    ffi::lua_pushvalue(l, 2);
    ffi::lua_rawget_(l, ffi::lua_upvalueindex(UP_RAWS));
    if let Some(raw) = str_at(l, 6) {
        if let Ok(mut m) = Message::decode(&Bytes::copy_from_slice(raw)) {
            if let Some(mut f) = m.fields.pop().filter(|_| m.fields.is_empty()) {
                // the codec writes the kept bytes again if number and value still match
                f.number = number;
                f.value = value;
                return Ok(f);
            }
        }
    }
    Ok(Field::new(number, value))
}

/// An integral number at `idx` (Lua 5.1 numbers are doubles).
unsafe fn int_at(l: *mut ffi::lua_State, idx: c_int) -> Option<i64> {
    if ffi::lua_type(l, idx) != ffi::LUA_TNUMBER {
        return None;
    }
    let n = ffi::lua_tonumber(l, idx);
    (n.fract() == 0.0 && n.abs() < 9.2e18).then_some(n as i64)
}

/// A 64-bit value: an integral number (negative ones as two's complement, as int64 is on
/// the wire), a boolean, or a decimal string (how values past 2^53 are decoded).
unsafe fn u64_at(l: *mut ffi::lua_State, idx: c_int) -> std::result::Result<u64, String> {
    let bad = || String::from("value must be an integer (number or decimal string)");
    match ffi::lua_type(l, idx) {
        ffi::LUA_TBOOLEAN => Ok(u64::from(ffi::lua_toboolean(l, idx) != 0)),
        ffi::LUA_TNUMBER => {
            let n = ffi::lua_tonumber(l, idx);
            if n.fract() != 0.0 {
                Err(bad())
            } else if (0.0..18446744073709551616.0).contains(&n) {
                Ok(n as u64)
            } else if n >= -9223372036854775808.0 {
                Ok(n as i64 as u64)
            } else {
                Err(bad())
            }
        }
        ffi::LUA_TSTRING => {
            let s = std::str::from_utf8(str_at(l, idx).unwrap_or_default()).map_err(|_| bad())?;
            s.parse::<u64>()
                .or_else(|_| s.parse::<i64>().map(|i| i as u64))
                .map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// A 32-bit value: as `u64_at`, within -2^31..2^32 (negative: sfixed32).
unsafe fn u32_at(l: *mut ffi::lua_State, idx: c_int) -> std::result::Result<u32, String> {
    let n = u64_at(l, idx)?;
    u32::try_from(n)
        .ok()
        .or_else(|| i32::try_from(n as i64).ok().map(|i| i as u32))
        .ok_or_else(|| "a fixed32 value must be in -2^31..2^32-1".into())
}

/// A length-delimited or group value: a string of bytes.
unsafe fn bytes_at(l: *mut ffi::lua_State, idx: c_int) -> std::result::Result<Bytes, String> {
    match str_at(l, idx) {
        Some(b) => Ok(Bytes::copy_from_slice(b)),
        None => Err(format!(
            "value of a length-delimited field must be a string, got {}",
            type_at(l, idx)
        )),
    }
}

/// Length of `v` as a minimal varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Whether `raw` is the canonical encoding of `f`. Each varint in it is at least its
/// minimal length, and the minimal form is unique, so equal lengths mean equal bytes.
fn canonical(f: &Field, raw: &[u8]) -> bool {
    let tag = varint_len(u64::from(f.number) << 3);
    let body = match &f.value {
        Pb::Varint(v) => varint_len(*v),
        Pb::I64(_) => 8,
        Pb::I32(_) => 4,
        Pb::Len(b) => varint_len(b.len() as u64) + b.len(),
        // the end tag has the start tag's length: only its low 3 bits differ
        Pb::Group(b) => b.len() + tag,
    };
    raw.len() == tag + body
}

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;
