//! Waiting hooks, sans-IO: `luring.sleep`, `luring.http_request`, `luring.tcp_connect`
//! (cosockets) and `luring.redis` yield the hook's coroutine with an [`IoRequest`]; the
//! chain stops with [`super::Step::Wait`], the proxy does the I/O on its own runtime and
//! feeds an [`IoResult`] back ([`Engine::feed_io`]) before resuming the chain. The engine
//! never sees a socket: a cosocket is a number the proxy maps to its connection.
//! The Lua half (argument checks, cosocket and Redis objects) is `io.lua`.

use super::{Engine, Rt};
use bytes::Bytes;
use mlua::{ffi, Lua, Table, Thread, Value};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;
use std::time::Duration;

/// I/O a waiting hook asked for; the proxy performs it and answers with an [`IoResult`].
#[derive(Debug)]
pub enum IoRequest {
    /// `luring.sleep(seconds)`.
    Sleep(Duration),
    /// `luring.http_request{...}`.
    Http(HttpCall),
    /// `luring.tcp_connect(host, port, opts)`.
    Connect(ConnectCall),
    /// `sock:send(data)`.
    Send {
        /// Cosocket id.
        sock: u32,
        /// Bytes to write.
        data: Bytes,
        /// Per-operation limit (`sock:set_timeout`).
        timeout: Option<Duration>,
    },
    /// `sock:receive(...)` and `sock:receive_until(...)`.
    Recv {
        /// Cosocket id.
        sock: u32,
        /// What to read.
        how: Recv,
        /// Per-operation limit.
        timeout: Option<Duration>,
    },
    /// `sock:close()`.
    Close(u32),
    /// `sock:keepalive()`: back to the worker's pool.
    Keepalive(u32),
}

/// A subrequest.
#[derive(Debug)]
pub struct HttpCall {
    /// Method token.
    pub method: String,
    /// Absolute http or https URL.
    pub url: String,
    /// Request headers in order.
    pub headers: Vec<(Bytes, Bytes)>,
    /// Request body (empty: none).
    pub body: Bytes,
    /// Whole-call limit.
    pub timeout: Option<Duration>,
}

/// A cosocket connect.
#[derive(Debug)]
pub struct ConnectCall {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS with upstream verification.
    pub tls: bool,
    /// Name for SNI and verification (default: `host`).
    pub sni: Option<String>,
    /// Connect limit.
    pub timeout: Option<Duration>,
}

/// What `sock:receive` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recv {
    /// Exactly this many bytes.
    Bytes(usize),
    /// One line, without its LF (and CR).
    Line,
    /// Everything until the peer closes.
    All,
    /// Up to this delimiter (consumed, not returned).
    Until(Bytes),
}

/// The outcome of an [`IoRequest`], as the hook receives it.
#[derive(Debug)]
pub enum IoResult {
    /// `true` (sleep, close, keepalive).
    Done,
    /// Bytes written.
    Sent(usize),
    /// Bytes read.
    Data(Bytes),
    /// A connected cosocket and how many times it was reused from the pool.
    Socket {
        /// Cosocket id.
        id: u32,
        /// 0 for a new connection.
        reused: u32,
    },
    /// A subrequest's response.
    Http {
        /// Status code.
        status: u16,
        /// Header fields in order.
        headers: Vec<(Bytes, Bytes)>,
        /// The whole body.
        body: Bytes,
    },
    /// `nil, err`.
    Failed(String),
}

/// What resumes a waiting hook.
pub(super) enum Feed {
    Io(IoResult),
    /// The wait ended without a result (hook timeout): the hook is abandoned as failed.
    Fail(String),
}

/// Where Lua code runs now: whether it may wait (`check`).
#[derive(Clone, Copy)]
pub(super) enum WaitCtx {
    /// Top-level plugin code.
    Load,
    /// A hook, in this coroutine.
    Hook(*const c_void),
}

/// `can_wait(co)` for io.lua: true, or false and why this call cannot wait.
fn check(rt: &Rt, running: Option<Thread>) -> (bool, Option<String>) {
    match rt.wait_ctx.get() {
        WaitCtx::Load => (
            false,
            Some("top-level plugin code cannot wait; call it from a hook".into()),
        ),
        WaitCtx::Hook(co) if running.is_none_or(|t| t.to_pointer() != co) => (
            false,
            Some("only the hook's own coroutine can wait, not one it created".into()),
        ),
        WaitCtx::Hook(..) => (true, None),
    }
}

/// Runs io.lua over the `luring` table; returns the IO token.
pub(super) fn install(lua: &Lua, luring: &Table, rt: &Rc<Rt>) -> mlua::Result<Table> {
    let io = lua.create_table()?;
    let r = rt.clone();
    let can = lua.create_function(move |_, co: Option<Thread>| Ok(check(&r, co)))?;
    lua.load(include_str!("io.lua"))
        .set_name("=luring-io")
        .call::<()>((io.clone(), can, luring.clone()))?;
    Ok(io)
}

fn bytes_of(v: &Value) -> Option<Bytes> {
    match v {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        _ => None,
    }
}

fn text_of(v: &Value) -> Option<String> {
    bytes_of(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn secs_of(v: &Value) -> Option<Duration> {
    let s = match v {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        _ => return None,
    };
    Duration::try_from_secs_f64(s).ok()
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 => Some(*n as i64),
        _ => None,
    }
}

/// Builds the request io.lua yielded (`op`, then its arguments, already checked there).
fn parse(a: &[Value]) -> Result<IoRequest, String> {
    let at = |i: usize| a.get(i).unwrap_or(&Value::Nil);
    let op = text_of(at(0)).unwrap_or_default();
    let sock = || int_of(at(1)).map(|i| i as u32).ok_or("bad cosocket");
    Ok(match op.as_str() {
        "sleep" => IoRequest::Sleep(secs_of(at(1)).ok_or("bad duration")?),
        "http" => {
            let mut headers = Vec::new();
            if let Value::Table(t) = at(3) {
                let flat: Vec<Value> = t.sequence_values().filter_map(Result::ok).collect();
                for p in flat.chunks(2) {
                    if let [n, v] = p {
                        headers.push((
                            bytes_of(n).ok_or("bad header")?,
                            bytes_of(v).ok_or("bad header")?,
                        ));
                    }
                }
            }
            IoRequest::Http(HttpCall {
                method: text_of(at(1)).ok_or("bad method")?,
                url: text_of(at(2)).ok_or("bad url")?,
                headers,
                body: bytes_of(at(4)).unwrap_or_default(),
                timeout: secs_of(at(5)),
            })
        }
        "connect" => IoRequest::Connect(ConnectCall {
            host: text_of(at(1)).ok_or("bad host")?,
            port: int_of(at(2))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("bad port")?,
            tls: matches!(at(3), Value::Boolean(true)),
            sni: text_of(at(4)),
            timeout: secs_of(at(5)),
        }),
        "send" => IoRequest::Send {
            sock: sock()?,
            data: bytes_of(at(2)).unwrap_or_default(),
            timeout: secs_of(at(3)),
        },
        "recv" => {
            let how = match text_of(at(2)).as_deref() {
                Some("line") => Recv::Line,
                Some("all") => Recv::All,
                Some("bytes") => Recv::Bytes(int_of(at(3)).ok_or("bad count")? as usize),
                Some("until") => Recv::Until(bytes_of(at(3)).ok_or("bad delimiter")?),
                _ => return Err("bad receive pattern".into()),
            };
            IoRequest::Recv {
                sock: sock()?,
                how,
                timeout: secs_of(at(4)),
            }
        }
        "close" => IoRequest::Close(sock()?),
        "keepalive" => IoRequest::Keepalive(sock()?),
        other => return Err(format!("unknown I/O request '{other}'")),
    })
}

/// The values a waiting hook gets back.
fn reply(lua: &Lua, r: IoResult) -> mlua::Result<Vec<Value>> {
    Ok(match r {
        IoResult::Done => vec![Value::Boolean(true)],
        IoResult::Sent(n) => vec![Value::Integer(n as i64)],
        IoResult::Data(b) => vec![Value::String(lua.create_string(&b)?)],
        IoResult::Socket { id, reused } => vec![
            Value::Integer(id as i64),
            Value::Nil,
            Value::Integer(reused as i64),
        ],
        IoResult::Http {
            status,
            headers,
            body,
        } => {
            let t = lua.create_table_with_capacity(headers.len() * 2, 0)?;
            for (i, (n, v)) in headers.iter().enumerate() {
                t.raw_set(2 * i + 1, lua.create_string(n)?)?;
                t.raw_set(2 * i + 2, lua.create_string(v)?)?;
            }
            vec![
                Value::Integer(status as i64),
                Value::Table(t),
                Value::String(lua.create_string(&body)?),
            ]
        }
        IoResult::Failed(e) => vec![Value::Nil, Value::String(lua.create_string(&e)?)],
    })
}

impl Engine {
    /// Hands the result of the I/O a hook waits for to the engine; the next
    /// `resume_request`/`resume_response` resumes the hook with it.
    pub fn feed_io(&self, r: IoResult) {
        *self.feed.borrow_mut() = Some(Feed::Io(r));
    }

    /// Ends the waiting hook as failed with `why` (hook timeout) at the next resume:
    /// its coroutine is dropped, and its on_error decides what the chain does next.
    pub fn fail_wait(&self, why: String) {
        *self.feed.borrow_mut() = Some(Feed::Fail(why));
    }

    /// The request a hook yielded with the IO token, from values 2.. of `co`.
    ///
    /// # Safety
    /// `co` must be a coroutine of this state that just yielded.
    pub(super) unsafe fn io_request(&self, co: *mut ffi::lua_State) -> Result<IoRequest, String> {
        let top = ffi::lua_gettop(co);
        let args: Vec<Value> = (2..=top).map(|i| self.take_value(co, i)).collect();
        parse(&args)
    }

    /// Pushes the values the waiting hook's `yield` returns; their count.
    ///
    /// # Safety
    /// `co` must be the suspended coroutine.
    pub(super) unsafe fn push_io(&self, co: *mut ffi::lua_State, r: IoResult) -> c_int {
        // Building the reply only fails when Lua is out of memory: the hook gets nil.
        let vals = reply(&self.lua, r).unwrap_or_else(|_| vec![Value::Nil]);
        if ffi::lua_checkstack(co, vals.len() as c_int + 1) == 0 {
            return 0;
        }
        for v in &vals {
            self.push_value(co, v);
        }
        vals.len() as c_int
    }
}
