//! The SSE layer: a `text/event-stream` response body, when a plugin hooks
//! sse.on_event, is cut into events as it streams; each event goes through the hooks
//! and on to the client at once (re-serialized only when a hook changed it).

use crate::http::Headers;
use crate::plugin::{ConnInfo, Engine, Event, Phase, SseEvent};
use crate::proto::http1::{encode_chunk, encode_last_chunk};
use crate::proto::sse::Parser;
use crate::proxy::body_relay::{self, H1Body, RelayError, Sink};
use crate::proxy::hook_io;
use crate::proxy::worker::Worker;
use bytes::{Bytes, BytesMut};
use std::rc::Rc;

/// Whether a response is an event stream the SSE layer should take.
/// A compressed stream (or one with transfer codings besides chunked) passes unhooked:
/// its bytes are not the event text.
pub fn applies(engine: Option<&Engine>, status: u16, headers: &Headers) -> bool {
    // the cheap checks first: this runs for every response
    if status != 200 || !engine.is_some_and(|e| e.has(Event::SseEvent)) {
        return false;
    }
    let identity = headers
        .get("content-encoding")
        .is_none_or(|v| v.trim_ascii().eq_ignore_ascii_case(b"identity"));
    let plain_transfer = headers
        .get_all("transfer-encoding")
        .all(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    identity
        && plain_transfer
        && headers.get("content-type").is_some_and(|v| {
            let v = v.as_ref();
            let mime = v.split(|&b| b == b';').next().unwrap_or(v).trim_ascii();
            mime.eq_ignore_ascii_case(b"text/event-stream")
        })
}

/// Runs the hooks over the events of one stream.
pub struct Rewriter<'a> {
    parser: Parser,
    /// The worker, whose runtime performs the waits of sse.on_event hooks.
    w: Rc<Worker>,
    engine: &'a Engine,
    /// A copy, so the rewriter borrows nothing of the connection that relays.
    info: ConnInfo,
    flow_id: u64,
    index: u64,
    /// An event grew past this many bytes: the rest of the stream passes unhooked.
    max: usize,
    passthrough: bool,
}

impl<'a> Rewriter<'a> {
    /// A rewriter for one response; `max` bounds one event (`--max-plugin-body`).
    pub fn new(w: &Rc<Worker>, engine: &'a Engine, info: &ConnInfo, flow_id: u64) -> Self {
        Rewriter {
            parser: Parser::new(),
            w: w.clone(),
            engine,
            info: info.clone(),
            flow_id,
            index: 0,
            max: w.cfg.max_plugin_body,
            passthrough: false,
        }
    }

    /// Body bytes in, the bytes to send on out (whole events only).
    pub async fn feed(&mut self, data: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        if self.passthrough {
            out.extend_from_slice(data);
            return out;
        }
        for block in self.parser.feed(data) {
            let Some(event) = block.event else {
                out.extend_from_slice(&block.raw);
                continue;
            };
            let mut ev = SseEvent {
                event,
                index: self.index,
                changed: false,
            };
            self.index += 1;
            let (e, info, id) = (self.engine, &self.info, Some(self.flow_id));
            for phase in [Phase::PrePipeline, Phase::PostPipeline] {
                let step = e.sse_event(phase, info, self.flow_id, &mut ev);
                hook_io::settle(&self.w, e, step, |s| e.resume_event(s, info, id, &mut ev)).await;
            }
            if ev.changed {
                out.extend_from_slice(&ev.event.serialize());
            } else {
                out.extend_from_slice(&block.raw);
            }
        }
        if self.parser.pending() > self.max {
            tracing::warn!(
                conn = self.info.conn_id,
                "an event of this stream is over {} bytes: the rest of the stream is \
                 passed on without sse.on_event",
                self.max
            );
            self.passthrough = true;
            out.extend_from_slice(&self.parser.finish());
        }
        out
    }

    /// The stream ended: an unfinished last block goes on as it came.
    pub fn finish(&mut self) -> Bytes {
        self.parser.finish()
    }
}

/// Relays an HTTP/1 upstream body through `rw` to an HTTP/1 client: chunked when
/// `chunked` (trailers kept), else as raw bytes ending with the connection. `head`
/// goes out first. Returns the bytes written.
pub async fn relay_http1(
    body: &mut H1Body<'_>,
    sink: Sink<'_>,
    head: BytesMut,
    chunked: bool,
    rw: &mut Rewriter<'_>,
) -> Result<u64, RelayError> {
    let H1Body {
        stream: src,
        buf: src_buf,
        dec,
        timeout,
        tap,
    } = body;
    let (src, timeout) = (*src, *timeout);
    let (dst, limit) = (sink.stream, sink.limit);
    let mut out = head;
    let mut written = 0u64;
    let frame = |payload: &[u8], out: &mut BytesMut| {
        if chunked {
            encode_chunk(payload, out);
        } else {
            out.extend_from_slice(payload);
        }
    };
    loop {
        let mut trailers = None;
        let mut done = dec.is_done();
        if !src_buf.is_empty() {
            let d = dec
                .decode(src_buf)
                .map_err(|e| RelayError::Malformed(e.to_string()))?;
            for piece in d.data {
                let events = rw.feed(&piece).await.freeze();
                if let Some(t) = tap.as_deref_mut() {
                    t.see(&events);
                }
                frame(&events, &mut out);
            }
            done = d.done;
            trailers = d.trailers;
        }
        if let Some(why) = dec.fault() {
            body_relay::send(dst, vec![out.freeze()], limit)
                .await
                .map_err(RelayError::Sink)?;
            return Err(RelayError::Malformed(format!("bad chunked framing: {why}")));
        }
        if done {
            let rest = rw.finish();
            if let Some(t) = tap.as_deref_mut() {
                t.see(&rest);
            }
            frame(&rest, &mut out);
            if chunked {
                encode_last_chunk(trailers.as_ref(), &mut out);
            }
            written += out.len() as u64;
            body_relay::send(dst, vec![out.freeze()], limit)
                .await
                .map_err(RelayError::Sink)?;
            return Ok(written);
        }
        if !out.is_empty() {
            written += out.len() as u64;
            body_relay::send(dst, vec![out.split().freeze()], limit)
                .await
                .map_err(RelayError::Sink)?;
        }
        match body_relay::read_some(src, src_buf, timeout).await {
            Ok(0) => {
                dec.eof().map_err(|e| RelayError::Source(e.to_string()))?;
                let rest = rw.finish();
                if let Some(t) = tap.as_deref_mut() {
                    t.see(&rest);
                }
                frame(&rest, &mut out);
                if chunked {
                    encode_last_chunk(None, &mut out);
                }
                written += out.len() as u64;
                body_relay::send(dst, vec![out.freeze()], limit)
                    .await
                    .map_err(RelayError::Sink)?;
                return Ok(written);
            }
            Ok(_) => {}
            Err(e) => return Err(RelayError::Source(e.to_string())),
        }
    }
}
