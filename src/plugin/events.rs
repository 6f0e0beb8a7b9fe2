//! Events: the per-event entry points the proxy calls on an [`Engine`], and the values
//! they hand to hooks. Each moves the proxy's value into what a hook sees as `msg`,
//! runs the chain and moves the (possibly changed) value back.

use super::chain::{Arg, Outcome};
use super::msg::{Env, LRaw, LSse, LWs, Msg, SlotId};
use super::reply::{placeholder_request, placeholder_response};
use super::{Engine, Event, Phase, Step, Suspended};
use crate::http::{Request, Response};
use bytes::Bytes;
use mlua::{Lua, Table, Value};
use std::rc::Rc;

/// The connection a hook runs for (becomes `ctx`).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Connection id, unique per process.
    pub conn_id: u64,
    /// Peer address of the client.
    pub client_addr: std::net::SocketAddr,
    /// Upstream address once connected.
    pub server_addr: Option<std::net::SocketAddr>,
    /// TLS SNI the client sent, if any.
    pub sni: Option<String>,
    /// Name of the listener that accepted the connection.
    pub listener_name: Rc<str>,
    /// Worker (core) index.
    pub worker: usize,
    /// The client-side TLS handshake, when luring terminated TLS and records flows.
    pub tls: Option<Rc<TlsInfo>>,
}

/// Figures reported to connection.on_disconnect.
#[derive(Clone, Debug, Default)]
pub struct ConnStats {
    /// Connection lifetime in milliseconds.
    pub duration_ms: f64,
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
    /// Bytes read from upstreams for this client's exchanges and tunnels.
    pub upstream_bytes_in: u64,
    /// Bytes written to upstreams for them.
    pub upstream_bytes_out: u64,
    /// Why the connection ended badly; None on a clean close.
    pub error: Option<String>,
}

/// One chunk of an opaque byte stream (raw.on_chunk).
#[derive(Clone, Debug, Default)]
pub struct RawChunk {
    /// Direction.
    pub from_client: bool,
    /// The bytes; hooks may replace them.
    pub data: Bytes,
    /// Bytes seen before this chunk in that direction.
    pub offset: u64,
    /// A hook called `msg:close()`: close both sides of the tunnel after this chunk.
    pub close: bool,
}

/// One server-sent event (sse.on_event); hooks may change its fields.
#[derive(Clone, Debug, Default)]
pub struct SseEvent {
    /// The event's fields.
    pub event: crate::proto::sse::Event,
    /// 0-based position among the stream's events.
    pub index: u64,
    /// Set when a hook assigned a field: the event is then re-serialized.
    pub changed: bool,
}

/// One WebSocket message or control frame (ws.on_message); hooks may replace `payload`.
#[derive(Clone, Debug, Default)]
pub struct WsMessage {
    /// 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// The frame was masked (client to server).
    pub masked: bool,
    /// The payload (as sent: luring does not negotiate permessage-deflate when hooked).
    pub payload: Bytes,
    /// RSV1 was set (permessage-deflate).
    pub compressed: bool,
    /// Direction.
    pub from_client: bool,
    /// Set when a hook assigned `payload`.
    pub changed: bool,
    /// A hook called `msg:close(code, reason)`: end the WebSocket with a close frame of
    /// that code and reason to both peers (the first call wins).
    pub close: Option<(u16, String)>,
}

/// The close dict of ws.on_close: the first close frame seen, or 1006 when none came.
#[derive(Clone, Debug, Default)]
pub struct WsClose {
    /// The close frame was masked (sent by the client).
    pub masked: bool,
    /// Its payload.
    pub payload: Bytes,
    /// Close code (1005 when the frame had none, 1006 for an abnormal closure).
    pub close_code: u16,
    /// Close reason.
    pub close_reason: String,
}

/// The TLS handshake dict of tls.on_handshake.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    /// "server" (proxy facing the client) or "client" (proxy facing the upstream).
    pub side: &'static str,
    /// SNI.
    pub sni: Option<String>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// "TLSv1.3"...
    pub version_name: Option<String>,
    /// IANA cipher suite name.
    pub cipher_name: Option<String>,
    /// Subject of the peer certificate, if one was sent.
    pub peer_cert_subject: Option<String>,
    /// JA4 of the ClientHello (server side only).
    pub client_fingerprint: Option<String>,
    /// JA3 MD5 of the ClientHello (server side only).
    pub ja3: Option<String>,
    /// JA3 input string (server side only).
    pub ja3_string: Option<String>,
}

/// The SOCKS5 connect dict of socks5.on_connect.
#[derive(Clone, Debug, Default)]
pub struct Socks5Info {
    /// "host:port" the client asked for.
    pub target_addr: String,
    /// Username, when the client authenticated.
    pub username: Option<String>,
}

impl Engine {
    /// Refills the one `ctx` userdata for this call; fields that did not change are not
    /// rewritten, so a connection's chains clone no string.
    pub(super) fn ctx(&self, conn: &ConnInfo, flow_id: Option<u64>) {
        let mut d = self.core.ctx.borrow_mut();
        d.conn_id = conn.conn_id;
        d.flow_id = flow_id;
        self.rt.notes.flow.set(flow_id);
        d.client_addr = conn.client_addr;
        d.server_addr = conn.server_addr;
        if d.sni != conn.sni {
            d.sni.clone_from(&conn.sni);
        }
        if !Rc::ptr_eq(&d.listener_name, &conn.listener_name) {
            d.listener_name = conn.listener_name.clone();
        }
        d.worker = conn.worker;
    }

    /// Moves `req` into a message slot for a chain; None (and `req` left as it was)
    /// when no slot can be had.
    pub(super) fn open_request(&self, req: &mut Request) -> Option<SlotId> {
        let m = Msg::Req(std::mem::replace(req, placeholder_request()));
        match self.core.open(m, false) {
            Ok(id) => Some(id),
            Err(m) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments");
                if let Msg::Req(r) = m {
                    *req = r;
                }
                None
            }
        }
    }

    /// [`Engine::open_request`] for a response.
    fn open_response(&self, resp: &mut Response) -> Option<SlotId> {
        let m = Msg::Resp(std::mem::replace(resp, placeholder_response()));
        match self.core.open(m, false) {
            Ok(id) => Some(id),
            Err(m) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments");
                if let Msg::Resp(r) = m {
                    *resp = r;
                }
                None
            }
        }
    }

    /// http.on_request and ws.on_upgrade: `req` moves into a slot for the chain.
    fn request_event(
        &self,
        ev: Event,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        if self.chain_len(ev, phase.idx()) == 0 {
            return Step::Continue;
        }
        let Some(id) = self.open_request(req) else {
            return Step::Continue;
        };
        self.ctx(conn, Some(flow_id));
        let out = self.run(ev, phase.idx(), 0, None, Arg::Slot(id));
        self.finish_req(out, ev, phase.idx(), id, req, None)
    }

    /// Moves the request back out of its slot once the chain ran or suspended; `val`
    /// is the `msg` of an event that passes a value, kept for a resume.
    pub(super) fn finish_req(
        &self,
        out: Outcome,
        ev: Event,
        phase: usize,
        id: SlotId,
        req: &mut Request,
        val: Option<Value>,
    ) -> Step {
        *req = match self.core.take(id) {
            Some(Msg::Req(r)) => r,
            _ => placeholder_request(),
        };
        self.suspend_or_release(out, ev, phase, id, val)
    }

    /// A finished chain frees its slot; a suspended one keeps it in the `Suspended`.
    fn suspend_or_release(
        &self,
        out: Outcome,
        ev: Event,
        phase: usize,
        id: SlotId,
        val: Option<Value>,
    ) -> Step {
        match out {
            Outcome::Done(s) => {
                self.core.release(id);
                s
            }
            Outcome::Suspend(idx, thread, io) => {
                let s = Suspended {
                    event: ev,
                    phase,
                    idx,
                    thread,
                    slot: Some(id),
                    val,
                    frozen: None,
                    env: None,
                    core: self.core.clone(),
                };
                match io {
                    None => Step::NeedBody(s),
                    Some(r) => Step::Wait(s, r),
                }
            }
        }
    }

    /// As `finish_req` for a response; its `resp.request` view goes dead first.
    fn finish_resp(
        &self,
        out: Outcome,
        ev: Event,
        phase: usize,
        id: SlotId,
        resp: &mut Response,
    ) -> Step {
        self.core.clear_request(id);
        *resp = match self.core.take(id) {
            Some(Msg::Resp(r)) => r,
            _ => placeholder_response(),
        };
        self.suspend_or_release(out, ev, phase, id, None)
    }

    /// http.on_request for one phase; `req` carries the hooks' mutations afterwards.
    pub fn http_request(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        self.request_event(Event::HttpRequest, phase, conn, flow_id, req)
    }

    /// ws.on_upgrade for one phase (an HTTP request message, like http.on_request).
    pub fn ws_upgrade(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        self.request_event(Event::WsUpgrade, phase, conn, flow_id, req)
    }

    /// http.on_response for one phase; `resp.request` is a read-only view of `req`.
    pub fn http_response(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        req: &Request,
        resp: &mut Response,
    ) -> Step {
        let ev = Event::HttpResponse;
        if self.chain_len(ev, phase.idx()) == 0 {
            return Step::Continue;
        }
        let Some(id) = self.open_response(resp) else {
            return Step::Continue;
        };
        self.ctx(conn, Some(flow_id));
        self.core.set_request(id, req);
        let out = self.run(ev, phase.idx(), 0, None, Arg::Slot(id));
        self.finish_resp(out, ev, phase.idx(), id, resp)
    }

    /// Continues a request chain after the proxy set `req.body` to Full or TooLarge.
    pub fn resume_request(
        &self,
        mut s: Suspended,
        conn: &ConnInfo,
        flow_id: u64,
        req: &mut Request,
    ) -> Step {
        let Some(id) = s.slot.take() else {
            return Step::Continue;
        };
        if s.event == Event::HttpResponse {
            tracing::error!(target: "luring::plugin", "resume_request called with a suspended response chain");
            self.core.release(id);
            return Step::Continue;
        }
        if let Err(Msg::Req(r)) = self
            .core
            .put(id, Msg::Req(std::mem::replace(req, placeholder_request())))
        {
            *req = r;
            return Step::Continue;
        }
        self.ctx(conn, Some(flow_id));
        let thread = s.thread.clone();
        let val = s.val.take();
        let arg = match &val {
            Some(v) => Arg::Val(v),
            None => Arg::Slot(id),
        };
        let out = self.run(s.event, s.phase, s.idx, Some(thread), arg);
        self.finish_req(out, s.event, s.phase, id, req, val)
    }

    /// Continues a response chain after the proxy set `resp.body` to Full or TooLarge.
    pub fn resume_response(
        &self,
        mut s: Suspended,
        conn: &ConnInfo,
        flow_id: u64,
        req: &Request,
        resp: &mut Response,
    ) -> Step {
        let Some(id) = s.slot.take() else {
            return Step::Continue;
        };
        if s.event != Event::HttpResponse {
            tracing::error!(target: "luring::plugin", "resume_response called with a suspended request chain");
            self.core.release(id);
            return Step::Continue;
        }
        if let Err(Msg::Resp(r)) = self.core.put(
            id,
            Msg::Resp(std::mem::replace(resp, placeholder_response())),
        ) {
            *resp = r;
            return Step::Continue;
        }
        self.ctx(conn, Some(flow_id));
        self.core.set_request(id, req);
        let thread = s.thread.clone();
        let out = self.run(s.event, s.phase, s.idx, Some(thread), Arg::Slot(id));
        self.finish_resp(out, s.event, s.phase, id, resp)
    }

    /// raw.on_chunk for one phase; hooks may replace `chunk.data`.
    pub fn raw_chunk(&self, phase: Phase, conn: &ConnInfo, chunk: &mut RawChunk) -> Step {
        self.value_event(Event::RawChunk, phase, conn, None, chunk, |env| LRaw {
            env,
        })
    }

    /// Runs sse.on_event hooks of `phase` on one event.
    pub fn sse_event(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        ev: &mut SseEvent,
    ) -> Step {
        self.value_event(Event::SseEvent, phase, conn, Some(flow_id), ev, |env| {
            LSse { env }
        })
    }

    /// Runs the chain of a value event over `m`, which its hooks share through the
    /// userdata `view` makes. `m` is back when the chain ends; while a hook waits
    /// (`Step::Wait`) it stays with the `Suspended`, and [`Engine::resume_event`] gives
    /// it back. Only CONTINUE is allowed on these rows, so the step carries nothing else.
    pub(super) fn value_event<T: Default + 'static, U: mlua::UserData + 'static>(
        &self,
        ev: Event,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: Option<u64>,
        m: &mut T,
        view: impl FnOnce(Rc<Env<T>>) -> U,
    ) -> Step {
        if self.chain_len(ev, phase.idx()) == 0 {
            return Step::Continue;
        }
        let env = Env::new(std::mem::take(m));
        let u = match self.lua.create_userdata(view(env.clone())) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments: {e}");
                if let Some(back) = env.take() {
                    *m = back;
                }
                return Step::Continue;
            }
        };
        self.ctx(conn, flow_id);
        let v = Value::UserData(u);
        let out = self.run(ev, phase.idx(), 0, None, Arg::Val(&v));
        self.settle_value(out, ev, phase.idx(), v, env, m)
    }

    /// A value event's chain waits (its message stays in `env`), or ended (it is back in `m`).
    fn settle_value<T: 'static>(
        &self,
        out: Outcome,
        event: Event,
        phase: usize,
        v: Value,
        env: Rc<Env<T>>,
        m: &mut T,
    ) -> Step {
        if let Outcome::Suspend(idx, thread, Some(io)) = out {
            let s = Suspended {
                event,
                phase,
                idx,
                thread,
                slot: None,
                val: Some(v),
                frozen: None,
                env: Some(env),
                core: self.core.clone(),
            };
            return Step::Wait(s, io);
        }
        if let Some(back) = env.take() {
            *m = back;
        }
        match out {
            Outcome::Done(s) => s,
            // these messages have no body to wait for
            Outcome::Suspend(..) => Step::Continue,
        }
    }

    /// Continues a value or lifecycle chain after its wait (the proxy called `feed_io`
    /// or `fail_wait` first). `m` is the value event's message, given back when the
    /// chain ends (`&mut ()` for a lifecycle event); `flow_id` as in the first call.
    pub fn resume_event<T: 'static>(
        &self,
        mut s: Suspended,
        conn: &ConnInfo,
        flow_id: Option<u64>,
        m: &mut T,
    ) -> Step {
        let Some(v) = s.val.take() else {
            return Step::Continue;
        };
        self.ctx(conn, flow_id);
        let thread = Some(s.thread.clone());
        if let (Some(deep), Value::Table(dict)) = (s.frozen, &v) {
            let arg = if deep {
                Arg::FrozenDeep(dict)
            } else {
                Arg::Frozen(dict)
            };
            let out = self.run(s.event, s.phase, s.idx, thread, arg);
            return self.settle_lifecycle(out, s.event, dict.clone(), deep);
        }
        match s.env.take().map(|e| e.downcast::<Env<T>>()) {
            Some(Ok(env)) => {
                let out = self.run(s.event, s.phase, s.idx, thread, Arg::Val(&v));
                self.settle_value(out, s.event, s.phase, v, env, m)
            }
            _ => {
                tracing::error!(target: "luring::plugin", "resume_event called with another event's message");
                Step::Continue
            }
        }
    }

    /// Runs a lifecycle chain over a frozen dict; only on_connect rows can end with Drop.
    fn lifecycle(
        &self,
        ev: Event,
        conn: &ConnInfo,
        fill: impl FnOnce(&Lua, &Table) -> mlua::Result<()>,
    ) -> Step {
        self.lifecycle_flow(ev, conn, None, false, fill)
    }

    /// As `lifecycle`, for the rows of one flow (`ctx.flow_id` is set); `deep` when the
    /// dict holds tables, which each hook then reads as copies.
    pub(super) fn lifecycle_flow(
        &self,
        ev: Event,
        conn: &ConnInfo,
        flow_id: Option<u64>,
        deep: bool,
        fill: impl FnOnce(&Lua, &Table) -> mlua::Result<()>,
    ) -> Step {
        if self.chain_len(ev, 0) == 0 {
            return Step::Continue;
        }
        let made = (|| {
            let t = self.lua.create_table()?;
            fill(&self.lua, &t)?;
            Ok::<_, mlua::Error>(t)
        })();
        let dict = match made {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(target: "luring::plugin", "cannot build hook arguments: {e}");
                return Step::Continue;
            }
        };
        self.ctx(conn, flow_id);
        let arg = if deep {
            Arg::FrozenDeep(&dict)
        } else {
            Arg::Frozen(&dict)
        };
        let out = self.run(ev, 0, 0, None, arg);
        self.settle_lifecycle(out, ev, dict, deep)
    }

    /// A lifecycle chain waits (its dict stays with the `Suspended`), or ended.
    fn settle_lifecycle(&self, out: Outcome, event: Event, dict: Table, deep: bool) -> Step {
        match out {
            Outcome::Done(s) => s,
            Outcome::Suspend(idx, thread, Some(io)) => {
                let s = Suspended {
                    event,
                    phase: 0,
                    idx,
                    thread,
                    slot: None,
                    val: Some(Value::Table(dict)),
                    frozen: Some(deep),
                    env: None,
                    core: self.core.clone(),
                };
                Step::Wait(s, io)
            }
            Outcome::Suspend(..) => Step::Continue,
        }
    }

    /// connection.on_connect: Continue, or Drop to close the socket before any layer exists.
    pub fn on_connect(&self, conn: &ConnInfo) -> Step {
        self.lifecycle(Event::ConnectionConnect, conn, |_, t| {
            t.raw_set("conn_id", conn.conn_id)?;
            t.raw_set("client_addr", conn.client_addr.to_string())?;
            t.raw_set("listener_name", &*conn.listener_name)
        })
    }

    /// connection.on_disconnect: every hook runs; nothing to decide.
    pub fn on_disconnect(&self, conn: &ConnInfo, stats: &ConnStats) -> Step {
        self.lifecycle(Event::ConnectionDisconnect, conn, |_, t| {
            t.raw_set("conn_id", conn.conn_id)?;
            t.raw_set("client_addr", conn.client_addr.to_string())?;
            t.raw_set("duration_ms", stats.duration_ms)?;
            t.raw_set("bytes_in", stats.bytes_in)?;
            t.raw_set("bytes_out", stats.bytes_out)?;
            t.raw_set("upstream_bytes_in", stats.upstream_bytes_in)?;
            t.raw_set("upstream_bytes_out", stats.upstream_bytes_out)?;
            t.raw_set("error", stats.error.as_deref())
        })
    }

    /// tls.on_handshake, once per side.
    pub fn tls_handshake(&self, conn: &ConnInfo, info: &TlsInfo) -> Step {
        self.lifecycle(Event::TlsHandshake, conn, |_, t| {
            t.raw_set("side", info.side)?;
            t.raw_set("sni", info.sni.as_deref())?;
            t.raw_set("alpn", info.alpn.as_deref())?;
            t.raw_set("version_name", info.version_name.as_deref())?;
            t.raw_set("cipher_name", info.cipher_name.as_deref())?;
            t.raw_set("peer_cert_subject", info.peer_cert_subject.as_deref())?;
            t.raw_set("client_fingerprint", info.client_fingerprint.as_deref())?;
            t.raw_set("ja3", info.ja3.as_deref())?;
            t.raw_set("ja3_string", info.ja3_string.as_deref())
        })
    }

    /// ws.on_close (lifecycle) once both directions of a WebSocket ended.
    pub fn ws_close(&self, conn: &ConnInfo, c: &WsClose) -> Step {
        self.lifecycle(Event::WsClose, conn, |lua, t| {
            t.raw_set("opcode", 8)?;
            t.raw_set("fin", true)?;
            t.raw_set("masked", c.masked)?;
            t.raw_set("payload", lua.create_string(&c.payload)?)?;
            t.raw_set("close_code", c.close_code)?;
            t.raw_set("close_reason", c.close_reason.as_str())?;
            t.raw_set("compressed", false)
        })
    }

    /// Runs ws.on_message hooks of `phase` on one message.
    pub fn ws_message(
        &self,
        phase: Phase,
        conn: &ConnInfo,
        flow_id: u64,
        m: &mut WsMessage,
    ) -> Step {
        self.value_event(Event::WsMessage, phase, conn, Some(flow_id), m, |env| LWs {
            env,
        })
    }

    /// socks5.on_connect: Continue, or Drop to abort before any upstream connection.
    pub fn socks5_connect(&self, conn: &ConnInfo, info: &Socks5Info) -> Step {
        self.lifecycle(Event::Socks5Connect, conn, |_, t| {
            t.raw_set("conn_id", conn.conn_id)?;
            t.raw_set("client_addr", conn.client_addr.to_string())?;
            t.raw_set("target_addr", info.target_addr.as_str())?;
            t.raw_set("username", info.username.as_deref())
        })
    }
}
