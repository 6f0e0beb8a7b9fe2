//! The gRPC rows' messages. GRPCStartMessage is a view over the call's request, which
//! sits in a slot as an HTTP request does: `headers` is the same Headers handle, so a
//! hook's changes land in the proxy's request. GRPCDataMessage is over an `Env`, as the
//! other streaming messages are.

use super::cold::{bytes_of, lstr, set_req_field, string_of};
use super::tag::{Tag, K_HDR, K_REQ};
use super::views::{int_arg, method, this, Env};
use super::{Core, Msg, SlotId, STALE};
use crate::plugin::{describe, GrpcData};
use crate::proto::grpc::parse_path;
use mlua::{Error, LightUserData, Lua, MetaMethod, Result, UserData, UserDataMethods, Value};
use std::rc::Rc;

/// Registry name of `GRPCDataMessage:cancel`.
const GRPC_CANCEL: &str = "luring.grpc_cancel";

/// GRPCStartMessage (`grpc.on_start`, `grpc-web.on_start`): the call's request in slot
/// `id`, and what the proxy knows of the call besides it.
pub(crate) struct LGrpcStart {
    pub(crate) core: Rc<Core>,
    pub(crate) id: SlotId,
    pub(crate) protocol: &'static str,
    pub(crate) encoding: Option<String>,
}

impl LGrpcStart {
    fn tag(&self, kind: u8) -> Tag {
        Tag {
            kind,
            ro: 0,
            slot: self.id.idx,
            gen: self.id.gen,
        }
    }

    /// The request-derived field `key` (None for the others, and for absent values),
    /// copied out: making the Lua string can run a GC step, hence Lua code, which must
    /// not find the slot borrowed. Fails once the chain is over.
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.core
            .with_msg(self.tag(K_REQ), |s| {
                let Some(Msg::Req(r)) = s.msg.as_ref() else {
                    return Err(STALE.into());
                };
                let path = r.path.as_deref().unwrap_or("");
                let hdr = |n: &str| r.headers.get(n).map(|v| v.to_vec());
                Ok(match key {
                    b"path" => r.path.as_ref().map(|p| p.as_bytes().to_vec()),
                    b"service" => parse_path(path).map(|(s, _)| s.as_bytes().to_vec()),
                    b"method" => parse_path(path).map(|(_, m)| m.as_bytes().to_vec()),
                    // HTTP/2's :authority is in `authority`; an HTTP/1.1 grpc-web call
                    // may only have its Host header
                    b"authority" if r.authority.is_empty() => hdr("host"),
                    b"authority" => Some(r.authority.as_bytes().to_vec()),
                    b"content_type" => hdr("content-type"),
                    _ => None,
                })
            })
            .map_err(|e| Error::runtime(e.into_owned()))
    }

    /// `msg.path = p`: only a gRPC path, since the new path names the method called.
    fn set_path(&self, v: &Value) -> Result<()> {
        let p = string_of(v, "path")?;
        if parse_path(&p).is_none() {
            return Err(Error::runtime(format!(
                "path must be a gRPC path /package.Service/Method, got '{p}'"
            )));
        }
        self.core
            .with_msg(self.tag(K_REQ), |s| match s.msg.as_mut() {
                Some(Msg::Req(r)) => {
                    r.path = Some(p);
                    Ok(())
                }
                _ => Err(STALE.into()),
            })
            .map_err(|e| Error::runtime(e.into_owned()))
    }
}

impl UserData for LGrpcStart {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            if &*key == b"headers" {
                // as `msg.headers` of an HTTP message: a stale handle fails on first use
                return Ok(Value::LightUserData(LightUserData(
                    this.tag(K_HDR).encode(),
                )));
            }
            let got = this.read(&key)?;
            match &*key {
                b"protocol" => lstr(lua, this.protocol.as_bytes()),
                b"encoding" => match &this.encoding {
                    Some(e) => lstr(lua, e.as_bytes()),
                    None => Ok(Value::Nil),
                },
                b"body" => Err(Error::runtime(
                    "GRPCStartMessage has no body: each message of the call comes to on_data",
                )),
                _ => match got {
                    Some(b) => lstr(lua, &b),
                    None => Ok(Value::Nil),
                },
            }
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| match &*key.as_bytes() {
                b"path" => this.set_path(&v),
                b"headers" => set_req_field(&this.core, this.tag(K_REQ), b"headers", v),
                other => Err(Error::runtime(format!(
                    "GRPCStartMessage field '{}' is read-only or unknown",
                    String::from_utf8_lossy(other)
                ))),
            },
        );
    }
}

/// GRPCDataMessage (`grpc.on_data`, `grpc-web.on_data`): one message of a call.
pub(crate) struct LGrpcData {
    pub(crate) env: Rc<Env<GrpcData>>,
}

impl UserData for LGrpcData {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            match &*key {
                b"from_client" => this.env.with(|d| Ok(Value::Boolean(d.from_client))),
                b"index" => this.env.with(|d| Ok(Value::Integer(d.index as i64))),
                b"compressed" => this.env.with(|d| Ok(Value::Boolean(d.compressed))),
                b"payload" => {
                    // a clone shares the buffer; the copy into Lua happens unborrowed
                    let p = this.env.with(|d| Ok(d.payload.clone()))?;
                    lstr(lua, &p)
                }
                b"cancel" => method(lua, GRPC_CANCEL),
                _ => this.env.with(|_| Ok(Value::Nil)),
            }
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                if &*key.as_bytes() != b"payload" {
                    return Err(Error::runtime("only GRPCDataMessage.payload is writable"));
                }
                let b = bytes_of(&v, "payload")?;
                this.env.with(|d| {
                    d.payload = b;
                    Ok(())
                })
            },
        );
    }
}

/// Creates `GRPCDataMessage:cancel` once per state.
pub(super) fn install(lua: &Lua) -> Result<()> {
    let cancel = lua.create_function(|_, (ud, status, message): (Value, Value, Value)| {
        let d = this::<LGrpcData>(&ud, "GRPCDataMessage")?;
        let status = match int_arg(&status) {
            Some(s @ 0..=16) => s as u32,
            _ => {
                return Err(Error::runtime(format!(
                    "cancel: status must be a gRPC status code 0-16, got {}",
                    describe(&status)
                )))
            }
        };
        let message = match message {
            Value::Nil => String::new(),
            v => string_of(&v, "cancel message")?,
        };
        d.env.with(|m| {
            m.cancel.get_or_insert((status, message));
            Ok(())
        })
    })?;
    lua.set_named_registry_value(GRPC_CANCEL, cancel)
}
