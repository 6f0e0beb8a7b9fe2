//! The userdata of the events whose `msg` is not an HTTP message (`raw.on_chunk`,
//! `ws.on_message`, `sse.on_event`) and of `ctx`. Unlike HTTP message handles they are
//! full mlua userdata made per event, over an `Env` that empties when the chain ends.
//!
//! Their methods (`msg:close()`) are not registered as mlua methods: with methods, mlua
//! wraps `__index` in a Lua function that every field read would go through. `__index`
//! hands them out from the registry instead (`method`), so field reads stay direct.

use super::cold::{bytes_of, lstr, string_of};
use super::Core;
use crate::plugin::{RawChunk, SseEvent, WsMessage};
use mlua::{Error, Lua, MetaMethod, Result, UserData, UserDataMethods, Value};
use std::cell::RefCell;
use std::rc::Rc;

/// Registry name of `RawMessage:close`.
const RAW_CLOSE: &str = "luring.raw_close";
/// Registry name of `WSMessage:close`.
const WS_CLOSE: &str = "luring.ws_close";

/// A message method stored by `install_methods` (or `install` of `grpc`), for `__index`.
pub(super) fn method(lua: &Lua, name: &str) -> Result<Value> {
    lua.named_registry_value::<Value>(name)
}

/// `self` of a method called on userdata `T`: the method was called with `.`, or on
/// another value, when it is not.
pub(super) fn this<T: 'static>(v: &Value, what: &str) -> Result<mlua::UserDataRef<T>> {
    let ud = match v {
        Value::UserData(ud) => ud.borrow::<T>().ok(),
        _ => None,
    };
    ud.ok_or_else(|| {
        Error::runtime(format!(
            "bad argument #1: {what} expected (call it as msg:method(...))"
        ))
    })
}

/// An integer argument: integral floats pass, as Lua 5.1 has no integer type.
pub(super) fn int_arg(v: &Value) -> Option<i64> {
    match *v {
        Value::Integer(i) => Some(i),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(n as i64),
        _ => None,
    }
}

/// The close code `WSMessage:close` sends (1000 when none is given): one an endpoint may
/// put in a close frame (RFC 6455 section 7.4; 1005, 1006 and 1015 may not be sent).
fn ws_close_code(v: &Value) -> Result<u16> {
    if v.is_nil() {
        return Ok(1000);
    }
    match int_arg(v) {
        Some(c @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => Ok(c as u16),
        _ => Err(Error::runtime(format!(
            "close code must be 1000-1003, 1007-1014 or 3000-4999, got {}",
            crate::plugin::describe(v)
        ))),
    }
}

/// Creates `msg:close` of RawMessage and WSMessage once per state.
pub(super) fn install_methods(lua: &Lua) -> Result<()> {
    let raw_close = lua.create_function(|_, ud: Value| {
        this::<LRaw>(&ud, "RawMessage")?.env.with(|c| {
            c.close = true;
            Ok(())
        })
    })?;
    lua.set_named_registry_value(RAW_CLOSE, raw_close)?;
    let ws_close = lua.create_function(|_, (ud, code, reason): (Value, Value, Value)| {
        let w = this::<LWs>(&ud, "WSMessage")?;
        let code = ws_close_code(&code)?;
        let reason = match reason {
            Value::Nil => String::new(),
            v => string_of(&v, "close reason")?,
        };
        // a control frame carries at most 125 bytes, 2 of them the code
        if reason.len() > 123 {
            return Err(Error::runtime("close reason must be at most 123 bytes"));
        }
        w.env.with(|m| {
            m.close.get_or_insert((code, reason));
            Ok(())
        })
    })?;
    lua.set_named_registry_value(WS_CLOSE, ws_close)
}

/// Holds a streaming event's value (raw chunk, WebSocket message, SSE event) for the
/// duration of a chain; empty before and after, so a stashed handle goes dead.
pub(crate) struct Env<T> {
    slot: RefCell<Option<T>>,
}

impl<T> Env<T> {
    /// Holds `v` for one chain.
    pub(crate) fn new(v: T) -> Rc<Self> {
        Rc::new(Env {
            slot: RefCell::new(Some(v)),
        })
    }
    /// The value back, once the chain is over.
    pub(crate) fn take(&self) -> Option<T> {
        self.slot.borrow_mut().take()
    }
    /// Runs `f` on the value, or fails as a stale handle does.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        match self.slot.borrow_mut().as_mut() {
            Some(m) => f(m),
            None => Err(Error::runtime("message is no longer valid")),
        }
    }
}

/// A raw chunk (`raw.on_chunk`).
pub(crate) struct LRaw {
    pub(crate) env: Rc<Env<RawChunk>>,
}

impl UserData for LRaw {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            match &*key {
                b"from_client" => this.env.with(|c| Ok(Value::Boolean(c.from_client))),
                b"data" => this.env.with(|c| lstr(lua, &c.data)),
                b"offset" => this.env.with(|c| Ok(Value::Integer(c.offset as i64))),
                b"close" => method(lua, RAW_CLOSE),
                _ => Ok(Value::Nil),
            }
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                if &*key.as_bytes() != b"data" {
                    return Err(Error::runtime("only RawMessage.data is writable"));
                }
                let b = bytes_of(&v, "data")?;
                this.env.with(|c| {
                    c.data = b;
                    Ok(())
                })
            },
        );
    }
}

/// A WebSocket message (`ws.on_message`).
pub(crate) struct LWs {
    pub(crate) env: Rc<Env<WsMessage>>,
}

impl UserData for LWs {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            if &*key == b"close" {
                return method(lua, WS_CLOSE);
            }
            this.env.with(|w| {
                let close = (w.opcode == crate::proto::ws::CLOSE)
                    .then(|| crate::proto::ws::parse_close(&w.payload));
                Ok(match &*key {
                    b"opcode" => Value::Integer(w.opcode as i64),
                    b"fin" => Value::Boolean(true),
                    b"masked" => Value::Boolean(w.masked),
                    b"payload" => lstr(lua, &w.payload)?,
                    b"compressed" => Value::Boolean(w.compressed),
                    b"from_client" => Value::Boolean(w.from_client),
                    b"close_code" => match close {
                        Some((c, _)) => Value::Integer(c.unwrap_or(1005) as i64),
                        None => Value::Nil,
                    },
                    b"close_reason" => match close {
                        Some((_, r)) => lstr(lua, r.as_bytes())?,
                        None => Value::Nil,
                    },
                    _ => Value::Nil,
                })
            })
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                if &*key.as_bytes() != b"payload" {
                    return Err(Error::runtime("only WSMessage.payload is writable"));
                }
                let b = bytes_of(&v, "payload")?;
                this.env.with(|w| {
                    let control = w.opcode >= crate::proto::ws::CLOSE;
                    if control && b.len() > 125 {
                        return Err(Error::runtime(
                            "a control frame's payload is at most 125 bytes",
                        ));
                    }
                    w.payload = b;
                    w.changed = true;
                    Ok(())
                })
            },
        );
    }
}

/// A server-sent event (`sse.on_event`).
pub(crate) struct LSse {
    pub(crate) env: Rc<Env<SseEvent>>,
}

/// An optional one-line SSE field value (`event`, `id`): a string without line breaks.
fn sse_line(v: &Value, what: &str) -> Result<Option<String>> {
    match v {
        Value::Nil => Ok(None),
        v => {
            let s = string_of(v, what)?;
            if s.contains(['\r', '\n']) {
                return Err(Error::runtime(format!(
                    "{what} must not contain a line break"
                )));
            }
            Ok(Some(s))
        }
    }
}

impl UserData for LSse {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            this.env.with(|s| {
                let e = &s.event;
                Ok(match &*key {
                    b"event" => match &e.event {
                        Some(t) => lstr(lua, t.as_bytes())?,
                        None => Value::Nil,
                    },
                    b"data" => lstr(lua, e.data.as_bytes())?,
                    b"id" => match &e.id {
                        Some(t) => lstr(lua, t.as_bytes())?,
                        None => Value::Nil,
                    },
                    b"retry" => e.retry.map_or(Value::Nil, |r| Value::Integer(r as i64)),
                    b"index" => Value::Integer(s.index as i64),
                    _ => Value::Nil,
                })
            })
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                let key = key.as_bytes();
                match &*key {
                    b"event" => {
                        let t = sse_line(&v, "event")?;
                        this.env.with(|s| {
                            s.event.event = t;
                            Ok(())
                        })?
                    }
                    b"id" => {
                        let t = sse_line(&v, "id")?;
                        this.env.with(|s| {
                            s.event.id = t;
                            Ok(())
                        })?
                    }
                    b"data" => {
                        let d = match v {
                            Value::Nil => String::new(),
                            v => string_of(&v, "data")?,
                        };
                        this.env.with(|s| {
                            s.event.data = d;
                            Ok(())
                        })?
                    }
                    b"retry" => {
                        let r = match v {
                            Value::Nil => None,
                            Value::Integer(i) if i >= 0 => Some(i as u64),
                            Value::Number(n) if n >= 0.0 && n.fract() == 0.0 => Some(n as u64),
                            _ => {
                                return Err(Error::runtime(
                                    "retry must be a non-negative integer or nil",
                                ))
                            }
                        };
                        this.env.with(|s| {
                            s.event.retry = r;
                            Ok(())
                        })?
                    }
                    other => {
                        return Err(Error::runtime(format!(
                            "SSEMessage field '{}' is read-only or unknown",
                            String::from_utf8_lossy(other)
                        )))
                    }
                }
                this.env.with(|s| {
                    s.changed = true;
                    Ok(())
                })
            },
        );
    }
}

/// Read-only `ctx`: one userdata per engine reading the core's refilled `CtxData`, so a
/// chain costs no ctx allocation (ctx holds no message, so reuse cannot leak one).
pub(crate) struct LCtx(pub(crate) Rc<Core>);

impl UserData for LCtx {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            let this = this.0.ctx.borrow();
            Ok(match &*key {
                b"conn_id" => Value::Integer(this.conn_id as i64),
                b"flow_id" => this
                    .flow_id
                    .map_or(Value::Nil, |f| Value::Integer(f as i64)),
                b"client_addr" => lstr(lua, this.client_addr.to_string().as_bytes())?,
                b"server_addr" => match this.server_addr {
                    Some(a) => lstr(lua, a.to_string().as_bytes())?,
                    None => Value::Nil,
                },
                b"sni" => match &this.sni {
                    Some(s) => lstr(lua, s.as_bytes())?,
                    None => Value::Nil,
                },
                b"listener_name" => lstr(lua, this.listener_name.as_bytes())?,
                b"worker" => Value::Integer(this.worker as i64),
                b"plugin" => lstr(lua, this.plugin.as_bytes())?,
                _ => Value::Nil,
            })
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, _, _: mlua::MultiValue| -> Result<()> { Err(Error::runtime("ctx is read-only")) },
        );
    }
}
