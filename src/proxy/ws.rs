//! The WebSocket layer: after a `101 Switching Protocols` to `websocket`, when a plugin
//! hooks ws.on_message or ws.on_close, both directions are read as frames; every
//! message (fragments joined) and control frame goes through ws.on_message and on to
//! the peer, and ws.on_close fires once both directions ended.

use crate::flows::capture::Capture;
use crate::io::{Deadline, Idle, Stream};
use crate::plugin::{ConnInfo, Engine, Event, Phase, WsClose, WsMessage};
use crate::proto::ws::{self, Assembler, Frame, FrameDecoder, CLOSE};
use crate::proxy::body_relay::{ensure_spare, READ_BUF};
use crate::proxy::byte_tunnel::{Peers, TunnelStats};
use crate::proxy::hook_io;
use crate::proxy::worker::Worker;
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::net::Shutdown;

/// Whether the WebSocket layer takes an upgraded connection.
pub(crate) fn wants(engine: Option<&Engine>) -> bool {
    engine.is_some_and(|e| e.has(Event::WsMessage) || e.has(Event::WsClose))
}

/// Whether message hooks or the recorder (`recording`) read payloads: then
/// permessage-deflate is not offered to the server (luring does not inflate), so the
/// payloads hooks see and the flow file keeps are the messages.
pub(crate) fn reads_payloads(engine: Option<&Engine>, recording: bool) -> bool {
    recording || engine.is_some_and(|e| e.has(Event::WsMessage))
}

/// What one WebSocket connection shares between its two directions.
struct Conn<'a> {
    /// The worker, whose runtime performs the waits of message hooks.
    w: &'a Worker,
    /// The plugin engine, when a hook reads messages (None: only the recorder does).
    engine: Option<&'a Engine>,
    /// The flow's recording, when it is recorded.
    rec: RefCell<Option<Box<Capture>>>,
    info: &'a ConnInfo,
    flow_id: u64,
    /// Largest message (`--max-plugin-body`).
    max: usize,
    /// The first close frame, either way.
    close: RefCell<Option<WsClose>>,
    /// Close frames written to their peer: at 2 the closing handshake is complete.
    closes: Cell<u8>,
    /// The close payload a hook's `msg:close(code, reason)` sent one peer; the other
    /// peer gets it in place of the close frame that answers it.
    ended_by_hook: RefCell<Option<Bytes>>,
}

/// Relays frames both ways until both directions ended (or the tunnel idle timeout
/// passed with no byte either way), then fires ws.on_close. Messages go through the hooks when `engine`
/// is given, and into the flow's recording when `rec` is; it is handed back.
pub(crate) async fn relay(
    w: &Worker,
    peers: Peers<'_>,
    engine: Option<&Engine>,
    info: &ConnInfo,
    flow_id: u64,
    rec: Option<Box<Capture>>,
) -> (TunnelStats, Option<Box<Capture>>) {
    let (idle, max) = (w.timeouts.tunnel, w.cfg.max_plugin_body);
    let conn = Conn {
        w,
        engine,
        rec: RefCell::new(rec),
        info,
        flow_id,
        max,
        close: RefCell::new(None),
        closes: Cell::new(0),
        ended_by_hook: RefCell::new(None),
    };
    let deadline = Deadline::new();
    let idle = Idle::shared(&deadline, idle);
    let (up, down) = tokio::join!(
        one_way(
            &conn,
            peers.client,
            peers.client_early,
            peers.upstream,
            true,
            idle
        ),
        one_way(
            &conn,
            peers.upstream,
            peers.upstream_early,
            peers.client,
            false,
            idle
        ),
    );
    let close = conn.close.take().unwrap_or(WsClose {
        close_code: 1006,
        ..WsClose::default()
    });
    if let Some(e) = engine {
        let step = e.ws_close(info, &close);
        hook_io::settle(w, e, step, |s| e.resume_event(s, info, None, &mut ())).await;
    }
    (TunnelStats { up, down }, conn.rec.take())
}

/// One direction: frames from `src`, through the hooks, to `dst`. Returns bytes written.
async fn one_way(
    c: &Conn<'_>,
    src: &Stream,
    mut buf: BytesMut,
    dst: &Stream,
    from_client: bool,
    idle: Idle<'_>,
) -> u64 {
    let dec = FrameDecoder::new(c.max as u64);
    let mut asm = Assembler::new(c.max);
    let mut sent = 0u64;
    // a hook ended the WebSocket from this side: what this peer sends now is dropped
    let mut ended_here = false;
    loop {
        let mut out = BytesMut::new();
        let mut closes_in_out = 0;
        loop {
            // a frame that only starts a message completes none: look for the next one
            let got = match dec.decode(&mut buf) {
                Ok(Some(f)) => asm.push(f).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match got {
                Ok(Some(Some(_))) if ended_here => {}
                Ok(Some(Some(m))) => {
                    let is_close = m.opcode == CLOSE;
                    ended_here = forward(c, m, from_client, &mut out).await;
                    closes_in_out += (is_close || ended_here) as u8;
                }
                Ok(Some(None)) => {}
                Ok(None) => break,
                Err(e) => {
                    // what cannot be framed cannot be hooked: the connection ends abnormally
                    let side = if from_client { "client" } else { "upstream" };
                    tracing::info!(conn = c.info.conn_id, "WebSocket {side}: {}", e.0);
                    src.shutdown(Shutdown::Both);
                    dst.shutdown(Shutdown::Both);
                    return sent;
                }
            }
        }
        if !out.is_empty() {
            sent += out.len() as u64;
            match idle.wait_write(dst.write_all(out.freeze())).await {
                Some(Ok(())) => idle.progress(),
                Some(Err(_)) => {
                    src.shutdown(Shutdown::Read);
                    return sent;
                }
                None => {
                    src.shutdown(Shutdown::Both);
                    dst.shutdown(Shutdown::Both);
                    return sent;
                }
            }
        }
        // counted once written: the other direction may still be sending the first
        c.closes.set(c.closes.get() + closes_in_out);
        if closes_in_out > 0 && c.closes.get() >= 2 {
            // both close frames went through: the connection is over (the other
            // direction's read on `dst` ends with the read shutdown)
            dst.close_write().await;
            dst.shutdown(Shutdown::Read);
            src.shutdown(Shutdown::Both);
            return sent;
        }
        ensure_spare(&mut buf, READ_BUF / 2);
        let Some((res, b)) = idle.wait(src.read(std::mem::take(&mut buf))).await else {
            tracing::debug!(conn = c.info.conn_id, "WebSocket idle: closed");
            src.shutdown(Shutdown::Both);
            dst.shutdown(Shutdown::Both);
            return sent;
        };
        buf = b;
        match res {
            Ok(n) if n > 0 => idle.progress(),
            _ => {
                // a WebSocket has no half-close: one side gone ends the connection
                dst.close_write().await;
                dst.shutdown(Shutdown::Read);
                return sent;
            }
        }
    }
}

/// Runs the hooks on one message and appends the frame to send.
/// Runs the message hooks and encodes what goes on to the peer. True when a hook ended
/// the WebSocket (`msg:close`): a close frame with its code and reason went instead.
async fn forward(c: &Conn<'_>, m: ws::Message, from_client: bool, out: &mut BytesMut) -> bool {
    let mut wm = WsMessage {
        opcode: m.opcode,
        masked: m.mask.is_some(),
        payload: m.payload.clone(),
        compressed: m.compressed,
        from_client,
        changed: false,
        close: None,
    };
    if let Some(e) = c.engine {
        for phase in [Phase::PrePipeline, Phase::PostPipeline] {
            let step = e.ws_message(phase, c.info, c.flow_id, &mut wm);
            let id = Some(c.flow_id);
            hook_io::settle(c.w, e, step, |s| e.resume_event(s, c.info, id, &mut wm)).await;
        }
    }
    if let Some((code, reason)) = wm.close.take() {
        let mut p = BytesMut::with_capacity(2 + reason.len());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(reason.as_bytes());
        let payload = p.freeze();
        *c.ended_by_hook.borrow_mut() = Some(payload.clone());
        c.close.borrow_mut().get_or_insert(WsClose {
            masked: m.mask.is_some(),
            payload: payload.clone(),
            close_code: code,
            close_reason: reason,
        });
        let frame = Frame {
            fin: true,
            rsv1: false,
            opcode: CLOSE,
            mask: m.mask,
            payload,
        };
        ws::encode(&frame, out);
        return true;
    }
    let mut payload: Bytes = if wm.changed {
        wm.payload
    } else {
        m.payload.clone()
    };
    if let Some(r) = c.rec.borrow_mut().as_mut() {
        r.ws_message(from_client, m.opcode, &payload);
    }
    if m.opcode == CLOSE {
        // the answer to a hook's close: this peer gets the hook's code and reason
        if let Some(ours) = c.ended_by_hook.borrow().clone() {
            payload = ours;
        }
        let (code, reason) = ws::parse_close(&payload);
        c.close.borrow_mut().get_or_insert(WsClose {
            masked: m.mask.is_some(),
            payload: payload.clone(),
            close_code: code.unwrap_or(1005),
            close_reason: reason,
        });
    }
    ws::encode(
        &Frame {
            payload,
            ..m.to_frame()
        },
        out,
    );
    false
}
