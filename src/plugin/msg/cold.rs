//! The cold side of `msg`: metamethods and headers methods off the hot path (writes to
//! message fields, `get_all`, `remove`, `pairs`, `#headers`) as mlua functions, and the
//! conversions of the values plugins assign.

use super::tag::{Tag, K_HDR, K_REQ, K_RESP, K_TRL};
use super::{Core, Fail, Msg, STALE};
use crate::http::{Body, Headers, Request, Response};
use bytes::Bytes;
use mlua::{Error, FromLua, Function, Lua, Result, Table, Value};
use std::cell::Cell;
use std::rc::Rc;

/// The metamethods and headers methods that are not on the hot path, as mlua functions.
pub(super) struct Cold {
    pub(super) newindex: Function,
    pub(super) get_all: Function,
    pub(super) remove: Function,
    pub(super) pairs: Function,
    pub(super) len: Function,
}

/// Our tag of a Lua value, for the mlua-side functions.
fn tag_of(v: &Value) -> Option<Tag> {
    match v {
        Value::LightUserData(p) => Tag::decode(p.0),
        _ => None,
    }
}

/// A C accessor's failure text as an mlua error.
fn err(e: Fail) -> Error {
    Error::runtime(e.into_owned())
}

/// `self` of a headers method called through mlua.
fn hdr_tag(v: &Value) -> Result<Tag> {
    match tag_of(v) {
        Some(t) if t.kind == K_HDR || t.kind == K_TRL => Ok(t),
        _ => Err(Error::runtime("bad argument #1: Headers expected")),
    }
}

/// Builds the `Cold` functions over `core`.
pub(super) fn cold_fns(lua: &Lua, core: &Rc<Core>) -> Result<Cold> {
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
pub(super) fn set_req_field(c: &Core, t: Tag, key: &[u8], v: Value) -> Result<()> {
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

/// An assigned body: nil empties it rather than leaving it streaming.
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

/// A field value as bytes; numbers are accepted as Lua would print them.
pub(super) fn bytes_of(v: &Value, what: &str) -> Result<Bytes> {
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

/// As `bytes_of`, for fields the proxy keeps as `String`.
pub(super) fn string_of(v: &Value, what: &str) -> Result<String> {
    let b = bytes_of(v, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| Error::runtime(format!("{what} must be UTF-8")))
}

/// Bytes as a Lua string value.
pub(super) fn lstr(lua: &Lua, b: &[u8]) -> Result<Value> {
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

/// An assigned `headers`/`trailers`: a table, another message's headers, or nil.
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
