//! Message userdata: lazy views over a Rust message held in an envelope for one chain.
//!
//! The message is moved into an [`Env`] while hooks run and moved back out afterwards;
//! the userdata only holds the `Rc<Env>`, so a `msg` a plugin stashed in a global goes
//! dead ("message is no longer valid") once the chain returns, as in Envoy's Lua filter.

use super::RawChunk;
use crate::http::{Body, Headers, Request, Response, Version};
use bytes::Bytes;
use mlua::{AnyUserData, Error, Lua, MetaMethod, Result, Table, UserData, UserDataMethods, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Holds a message for the duration of a chain; empty before and after.
pub(crate) struct Env<T> {
    slot: RefCell<Option<T>>,
}

impl<T> Env<T> {
    pub(crate) fn new(v: T) -> Rc<Self> {
        Rc::new(Env {
            slot: RefCell::new(Some(v)),
        })
    }
    pub(crate) fn take(&self) -> Option<T> {
        self.slot.borrow_mut().take()
    }
    pub(crate) fn put(&self, v: T) {
        *self.slot.borrow_mut() = Some(v);
    }
    fn set(&self, f: impl FnOnce(&mut T)) -> Result<()> {
        self.with(|m| {
            f(m);
            Ok(())
        })
    }
    fn with<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        match self.slot.borrow_mut().as_mut() {
            Some(m) => f(m),
            None => Err(Error::runtime("message is no longer valid")),
        }
    }
}

/// Values the body getter needs without a Rust borrow on the engine.
pub(crate) struct BodyCfg {
    /// Returned by `__index` when the body must be read first; the Lua wrapper yields it.
    pub need: Table,
    pub max: usize,
}

fn body_value(lua: &Lua, b: &Body) -> Result<Value> {
    match b {
        Body::Full(bytes) => Ok(Value::String(lua.create_string(bytes)?)),
        Body::Streaming => match lua.app_data_ref::<BodyCfg>() {
            Some(c) => Ok(Value::Table(c.need.clone())),
            None => Ok(Value::Nil),
        },
        Body::TooLarge => {
            let max = lua.app_data_ref::<BodyCfg>().map(|c| c.max).unwrap_or(0);
            Err(Error::runtime(format!(
                "body exceeds max-plugin-body ({max} bytes)"
            )))
        }
    }
}

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

fn bytes_of(v: &Value, what: &str) -> Result<Bytes> {
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

fn string_of(v: &Value, what: &str) -> Result<String> {
    let b = bytes_of(v, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| Error::runtime(format!("{what} must be UTF-8")))
}

fn lstr(lua: &Lua, b: &[u8]) -> Result<Value> {
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

fn headers_from(v: Value) -> Result<Option<Headers>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => headers_from_table(&t).map(Some),
        Value::UserData(ud) => {
            let h = ud.borrow::<LHeaders>()?;
            h.with(|h| Ok(h.clone())).map(Some)
        }
        other => Err(Error::runtime(format!(
            "headers must be a table, got {}",
            other.type_name()
        ))),
    }
}

/// Which header list of which envelope a Headers object views.
#[derive(Clone)]
enum HSrc {
    Req(Rc<Env<Request>>),
    ReqTrailers(Rc<Env<Request>>),
    Resp(Rc<Env<Response>>),
    RespTrailers(Rc<Env<Response>>),
}

/// `msg.headers` / `msg.trailers`.
pub(crate) struct LHeaders {
    src: HSrc,
    read_only: bool,
}

impl LHeaders {
    fn with<R>(&self, f: impl FnOnce(&mut Headers) -> Result<R>) -> Result<R> {
        let missing = || Error::runtime("trailers are no longer present");
        match &self.src {
            HSrc::Req(e) => e.with(|m| f(&mut m.headers)),
            HSrc::Resp(e) => e.with(|m| f(&mut m.headers)),
            HSrc::ReqTrailers(e) => e.with(|m| f(m.trailers.as_mut().ok_or_else(missing)?)),
            HSrc::RespTrailers(e) => e.with(|m| f(m.trailers.as_mut().ok_or_else(missing)?)),
        }
    }
    fn write<R>(&self, f: impl FnOnce(&mut Headers) -> Result<R>) -> Result<R> {
        if self.read_only {
            return Err(Error::runtime("headers are read-only here"));
        }
        self.with(f)
    }
}

fn get_first(lua: &Lua, h: &LHeaders, name: &[u8]) -> Result<Value> {
    let name = std::str::from_utf8(name).map_err(|_| Error::runtime("bad header name"))?;
    h.with(|h| match h.get(name) {
        Some(v) => lstr(lua, v),
        None => Ok(Value::Nil),
    })
}

impl UserData for LHeaders {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("get", |lua, this, name: mlua::String| {
            get_first(lua, this, &name.as_bytes())
        });
        m.add_method("get_all", |lua, this, name: String| {
            let t = lua.create_table()?;
            this.with(|h| {
                for (i, v) in h.get_all(&name).enumerate() {
                    t.raw_set(i + 1, lua.create_string(v)?)?;
                }
                Ok(())
            })?;
            Ok(t)
        });
        m.add_method("set", |_, this, (name, value): (Value, Value)| {
            let (n, v) = (
                bytes_of(&name, "header name")?,
                bytes_of(&value, "header value")?,
            );
            this.write(|h| {
                h.set(n, v);
                Ok(())
            })
        });
        m.add_method("add", |_, this, (name, value): (Value, Value)| {
            let (n, v) = (
                bytes_of(&name, "header name")?,
                bytes_of(&value, "header value")?,
            );
            this.write(|h| {
                h.add(n, v);
                Ok(())
            })
        });
        m.add_method("remove", |_, this, name: String| {
            this.write(|h| Ok(h.remove(&name)))
        });
        m.add_method("pairs", |lua, this, ()| {
            let list: Vec<(Bytes, Bytes)> = this.with(|h| {
                Ok(h.iter()
                    .map(|f| (f.name.clone(), f.value.clone()))
                    .collect())
            })?;
            let i = Cell::new(0usize);
            lua.create_function(move |lua, _: mlua::MultiValue| {
                let k = i.get();
                i.set(k + 1);
                match list.get(k) {
                    Some((n, v)) => Ok((lstr(lua, n)?, lstr(lua, v)?)),
                    None => Ok((Value::Nil, Value::Nil)),
                }
            })
        });
        m.add_meta_method(MetaMethod::Index, |lua, this, name: mlua::String| {
            get_first(lua, this, &name.as_bytes())
        });
        m.add_meta_method(MetaMethod::Len, |_, this, ()| this.with(|h| Ok(h.len())));
    }
}

/// Where `resp.request` reads from: the proxy's `&Request`, valid only while a chain runs.
pub(crate) struct ReqRef {
    ptr: Cell<*const Request>,
    view: RefCell<Option<(Rc<Env<Request>>, AnyUserData)>>,
}

impl ReqRef {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(ReqRef {
            ptr: Cell::new(std::ptr::null()),
            view: RefCell::new(None),
        })
    }
    /// Points at the proxy's request for the duration of a resume; `clear` must follow.
    pub(crate) fn set(&self, r: &Request) {
        self.ptr.set(r);
        if let Some((env, _)) = &*self.view.borrow() {
            env.put(r.clone());
        }
    }
    pub(crate) fn clear(&self) {
        self.ptr.set(std::ptr::null());
        if let Some((env, _)) = &*self.view.borrow() {
            env.take();
        }
    }
    fn get(&self, lua: &Lua) -> Result<Value> {
        if let Some((_, ud)) = &*self.view.borrow() {
            return Ok(Value::UserData(ud.clone()));
        }
        let p = self.ptr.get();
        if p.is_null() {
            return Err(Error::runtime("message is no longer valid"));
        }
        // SAFETY: `ptr` is set from a `&Request` borrowed by the engine call that is
        // running this Lua code, and cleared before that call returns.
        let copy = unsafe { (*p).clone() };
        let env = Env::new(copy);
        let ud = lua.create_userdata(LReq::new(env.clone(), true))?;
        *self.view.borrow_mut() = Some((env, ud.clone()));
        Ok(Value::UserData(ud))
    }
}

/// A request (`http.on_request`, `ws.on_upgrade`) or the read-only `resp.request` view.
pub(crate) struct LReq {
    env: Rc<Env<Request>>,
    read_only: bool,
    headers: RefCell<Option<AnyUserData>>,
}

impl LReq {
    pub(crate) fn new(env: Rc<Env<Request>>, read_only: bool) -> Self {
        LReq {
            env,
            read_only,
            headers: RefCell::new(None),
        }
    }
}

fn cached_headers(
    lua: &Lua,
    slot: &RefCell<Option<AnyUserData>>,
    make: impl FnOnce() -> LHeaders,
) -> Result<Value> {
    if let Some(ud) = &*slot.borrow() {
        return Ok(Value::UserData(ud.clone()));
    }
    let ud = lua.create_userdata(make())?;
    *slot.borrow_mut() = Some(ud.clone());
    Ok(Value::UserData(ud))
}

fn version(v: Version) -> &'static str {
    v.as_str()
}

impl UserData for LReq {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            match &*key {
                b"headers" => {
                    // Validity is checked on use, but a dead message should fail here too.
                    this.env.with(|_| Ok(()))?;
                    let (env, ro) = (this.env.clone(), this.read_only);
                    cached_headers(lua, &this.headers, || LHeaders {
                        src: HSrc::Req(env),
                        read_only: ro,
                    })
                }
                b"method" => this.env.with(|r| lstr(lua, &r.method)),
                b"scheme" => this.env.with(|r| lstr(lua, r.scheme.as_bytes())),
                b"authority" => this.env.with(|r| lstr(lua, r.authority.as_bytes())),
                b"host" => this.env.with(|r| lstr(lua, r.host().as_bytes())),
                b"port" => this.env.with(|r| Ok(Value::Integer(r.port() as i64))),
                b"path" => this.env.with(|r| match &r.path {
                    Some(p) => lstr(lua, p.as_bytes()),
                    None => Ok(Value::Nil),
                }),
                b"http_version" => this.env.with(|r| lstr(lua, version(r.version).as_bytes())),
                b"body" => this.env.with(|r| body_value(lua, &r.body)),
                b"trailers" => this.env.with(|r| match r.trailers {
                    // trailers come after the body: asking for them reads it first
                    None if matches!(r.body, Body::Streaming) => body_value(lua, &r.body),
                    Some(_) => Ok(Value::UserData(lua.create_userdata(LHeaders {
                        src: HSrc::ReqTrailers(this.env.clone()),
                        read_only: this.read_only,
                    })?)),
                    None => Ok(Value::Nil),
                }),
                b"timestamp_start" => this.env.with(|r| Ok(Value::Number(r.timestamp_start))),
                _ => Ok(Value::Nil),
            }
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                if this.read_only {
                    return Err(Error::runtime("msg.request is read-only"));
                }
                let key = key.as_bytes();
                match &*key {
                    b"method" => {
                        let b = bytes_of(&v, "method")?;
                        this.env.set(|r| r.method = b)
                    }
                    b"scheme" => {
                        let s = string_of(&v, "scheme")?;
                        this.env.set(|r| r.scheme = s)
                    }
                    b"authority" => {
                        let s = string_of(&v, "authority")?;
                        this.env.set(|r| r.authority = s)
                    }
                    b"path" => {
                        let p = match v {
                            Value::Nil => None,
                            v => Some(string_of(&v, "path")?),
                        };
                        this.env.set(|r| r.path = p)
                    }
                    b"body" => {
                        let b = body_from(v)?;
                        this.env.set(|r| r.body = b)
                    }
                    b"headers" => {
                        let h = headers_from(v)?.unwrap_or_default();
                        this.env.set(|r| r.headers = h)
                    }
                    b"trailers" => {
                        let h = headers_from(v)?;
                        this.env.set(|r| r.trailers = h)
                    }
                    other => Err(Error::runtime(format!(
                        "request field '{}' is read-only or unknown",
                        String::from_utf8_lossy(other)
                    ))),
                }
            },
        );
    }
}

/// A response (`http.on_response`).
pub(crate) struct LResp {
    env: Rc<Env<Response>>,
    req: Rc<ReqRef>,
    headers: RefCell<Option<AnyUserData>>,
}

impl LResp {
    pub(crate) fn new(env: Rc<Env<Response>>, req: Rc<ReqRef>) -> Self {
        LResp {
            env,
            req,
            headers: RefCell::new(None),
        }
    }
}

impl UserData for LResp {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            match &*key {
                b"headers" => {
                    this.env.with(|_| Ok(()))?;
                    let env = this.env.clone();
                    cached_headers(lua, &this.headers, || LHeaders {
                        src: HSrc::Resp(env),
                        read_only: false,
                    })
                }
                b"status" => this.env.with(|r| Ok(Value::Integer(r.status as i64))),
                b"reason" => this.env.with(|r| lstr(lua, r.reason.as_bytes())),
                b"http_version" => this.env.with(|r| lstr(lua, version(r.version).as_bytes())),
                b"body" => this.env.with(|r| body_value(lua, &r.body)),
                b"trailers" => this.env.with(|r| match r.trailers {
                    // trailers come after the body: asking for them reads it first
                    None if matches!(r.body, Body::Streaming) => body_value(lua, &r.body),
                    Some(_) => Ok(Value::UserData(lua.create_userdata(LHeaders {
                        src: HSrc::RespTrailers(this.env.clone()),
                        read_only: false,
                    })?)),
                    None => Ok(Value::Nil),
                }),
                b"request" => {
                    this.env.with(|_| Ok(()))?;
                    this.req.get(lua)
                }
                _ => Ok(Value::Nil),
            }
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, v): (mlua::String, Value)| {
                let key = key.as_bytes();
                match &*key {
                    b"status" => {
                        let s = match v {
                            Value::Integer(i) if (100..=999).contains(&i) => i as u16,
                            Value::Number(n)
                                if (100.0..=999.0).contains(&n) && n.fract() == 0.0 =>
                            {
                                n as u16
                            }
                            _ => {
                                return Err(Error::runtime("status must be an integer in 100..999"))
                            }
                        };
                        this.env.set(|r| r.status = s)
                    }
                    b"reason" => {
                        let s = string_of(&v, "reason")?;
                        this.env.set(|r| r.reason = s)
                    }
                    b"body" => {
                        let b = body_from(v)?;
                        this.env.set(|r| r.body = b)
                    }
                    b"headers" => {
                        let h = headers_from(v)?.unwrap_or_default();
                        this.env.set(|r| r.headers = h)
                    }
                    b"trailers" => {
                        let h = headers_from(v)?;
                        this.env.set(|r| r.trailers = h)
                    }
                    other => Err(Error::runtime(format!(
                        "response field '{}' is read-only or unknown",
                        String::from_utf8_lossy(other)
                    ))),
                }
            },
        );
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
                this.env.set(|c| c.data = b)
            },
        );
    }
}

/// What `ctx` shows; refilled before each chain run (and each resume).
pub(crate) struct CtxData {
    pub(crate) conn_id: u64,
    pub(crate) flow_id: Option<u64>,
    pub(crate) client_addr: std::net::SocketAddr,
    pub(crate) server_addr: Option<std::net::SocketAddr>,
    pub(crate) sni: Option<String>,
    pub(crate) listener_name: Rc<str>,
    pub(crate) worker: usize,
    pub(crate) plugin: Rc<str>,
}

/// Read-only `ctx`: one userdata per engine, refilled per call, so a chain costs no
/// ctx allocation (ctx holds no message, so reuse cannot leak one).
pub(crate) struct LCtx(pub(crate) RefCell<CtxData>);

impl UserData for LCtx {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: mlua::String| {
            let key = key.as_bytes();
            let this = this.0.borrow();
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
