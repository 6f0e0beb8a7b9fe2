//! The gRPC layer: when a plugin hooks the grpc (or grpc-web) rows, a call's bodies are
//! cut into length-prefixed messages as they stream, each through on_data and on
//! (re-compressed and re-framed only when a hook changed it); on_start runs in the
//! request event after http.on_request, and on_end once per call, from the trailers or
//! synthesized with status 2 when the call ends abnormally. Nothing waits for the end
//! of a stream: a message goes on as soon as it is whole.

use crate::http::{Headers, Request};
use crate::plugin::{ConnInfo, Engine, GrpcCall, GrpcData, GrpcEnd, GrpcRows, Phase, Step};
use crate::proto::grpc::{self, Decoder, Encoding, Event, Protocol, Status, TextDecoder};
use crate::proxy::h2_stream::Incoming;
use crate::proxy::hook_io;
use crate::proxy::worker::Worker;
use bytes::{Bytes, BytesMut};
use h2::SendStream;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// One gRPC call the layer takes, shared by its two directions.
pub struct Call {
    /// The worker, whose runtime performs the waits of the call's hooks.
    w: Rc<Worker>,
    engine: Rc<Engine>,
    info: ConnInfo,
    flow_id: u64,
    /// What on_start sees besides the request.
    pub start: GrpcCall,
    protocol: Protocol,
    /// `--max-grpc-message`.
    max: usize,
    /// The call's path, for warnings.
    path: String,
    /// on_end has fired.
    ended: Cell<bool>,
    /// A hook's `msg:cancel(status, message)`.
    cancel: RefCell<Option<(u32, String)>>,
}

impl Call {
    /// The call `req` is, when its content type says gRPC and a plugin hooks the
    /// matching rows; None otherwise (the call then takes the plain HTTP path).
    pub fn of(
        w: &Rc<Worker>,
        engine: Option<&Rc<Engine>>,
        req: &Request,
        info: &ConnInfo,
        flow_id: u64,
    ) -> Option<Rc<Call>> {
        let engine = engine?;
        let ct = req.headers.get("content-type")?;
        let protocol = grpc::detect(std::str::from_utf8(ct).ok()?)?;
        let rows = match protocol {
            Protocol::Grpc => GrpcRows::Grpc,
            _ => GrpcRows::GrpcWeb,
        };
        if !engine.has_grpc(rows) {
            return None;
        }
        let encoding = req
            .headers
            .get("grpc-encoding")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        Some(Rc::new(Call {
            w: w.clone(),
            engine: engine.clone(),
            info: info.clone(),
            flow_id,
            start: GrpcCall {
                rows,
                protocol: protocol.as_str(),
                encoding,
            },
            protocol,
            max: w.cfg.max_grpc_message,
            path: req.path.clone().unwrap_or_default(),
            ended: Cell::new(false),
            cancel: RefCell::new(None),
        }))
    }

    /// The reading of one direction's body; `encoding` is that side's `grpc-encoding`.
    pub fn direction(self: &Rc<Self>, from_client: bool, encoding: Option<&[u8]>) -> Direction {
        let encoding = encoding.and_then(|v| std::str::from_utf8(v).ok());
        Direction {
            call: self.clone(),
            dec: Decoder::new(self.max, self.protocol.is_web()),
            text: self.protocol.is_text().then(TextDecoder::new),
            from_client,
            index: 0,
            encoding: Encoding::from_header(encoding).ok(),
            hooked: self.engine.has(self.start.rows.data()),
            warned: false,
        }
    }

    /// The wire form of the call.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether an on_data hook of the call's rows is registered.
    pub fn hooks_data(&self) -> bool {
        self.engine.has(self.start.rows.data())
    }

    /// A hook's cancel, once one came.
    pub fn cancelled(&self) -> Option<(u32, String)> {
        self.cancel.borrow().clone()
    }

    /// Fires on_end once, with the status and trailers the call ended with.
    pub fn end(&self, status: Status, trailers: Vec<(String, String)>) {
        if self.ended.replace(true) {
            return;
        }
        let end = GrpcEnd {
            status: status.code,
            message: status.message,
            status_details: status.details,
            trailers,
        };
        let rows = self.start.rows;
        let step = self.engine.grpc_end(rows, &self.info, self.flow_id, &end);
        if let Step::Wait(..) = step {
            // the call is over and its end fires from places that cannot wait (a
            // stream's last frame, a drop): the waiting chain finishes on its own task
            let (w, e, info, id) = (
                self.w.clone(),
                self.engine.clone(),
                self.info.clone(),
                Some(self.flow_id),
            );
            crate::io::spawn(async move {
                hook_io::settle(&w, &e, step, |s| e.resume_event(s, &info, id, &mut ())).await;
            });
        }
    }

    /// Fires on_end from a set of trailers (or the headers of a trailers-only answer);
    /// trailers without `grpc-status` end the call as UNKNOWN.
    pub fn end_with(&self, fields: &Headers) {
        let list: Vec<(String, String)> = fields
            .iter()
            .map(|f| {
                let name = String::from_utf8_lossy(&f.name).to_ascii_lowercase();
                (name, String::from_utf8_lossy(&f.value).into_owned())
            })
            .collect();
        let status = Status::from_trailers(&list).unwrap_or_else(|| {
            Status::new(grpc::status::UNKNOWN, "no grpc-status in the trailers")
        });
        self.end(status, list);
    }

    /// Fires on_end for a plain HTTP answer to the call (a hook's RESPOND), with the
    /// status a gRPC client reads from it (the gRPC HTTP-to-status mapping).
    pub fn end_http(&self, http_status: u16) {
        let code = match http_status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => 14,
            _ => grpc::status::UNKNOWN,
        };
        self.end(Status::new(code, format!("HTTP {http_status}")), Vec::new());
    }

    /// Fires on_end with status 2 (UNKNOWN): the call ended abnormally.
    pub fn end_abnormally(&self, why: &str) {
        self.end(Status::new(grpc::status::UNKNOWN, why), Vec::new());
    }
}

impl Drop for Call {
    /// A call dropped before its status (reset, dropped, failed upstream, client gone)
    /// still fires on_end once, as UNKNOWN: the fronts need no call at every exit.
    fn drop(&mut self) {
        if !self.ended.get() {
            self.end_abnormally("the call ended without a status");
        }
    }
}

/// One direction of a call: its messages through on_data.
pub struct Direction {
    call: Rc<Call>,
    dec: Decoder,
    text: Option<TextDecoder>,
    from_client: bool,
    index: u64,
    /// None: an encoding luring cannot undo; messages then pass unhooked.
    encoding: Option<Encoding>,
    /// An on_data hook is registered.
    hooked: bool,
    warned: bool,
}

impl Direction {
    /// Takes the next piece of the body; returns what goes on to the peer (whole
    /// messages, the bytes of a message still incomplete held back). Err: the body is
    /// not gRPC framing; what came so far has gone on.
    pub async fn feed(&mut self, piece: Bytes) -> Result<Bytes, String> {
        let binary = match &mut self.text {
            Some(t) => t.decode(&piece).map_err(|e| e.to_string())?,
            None => piece,
        };
        let mut events = Vec::new();
        let fed = self.dec.feed(binary, &mut events);
        let mut out = BytesMut::new();
        for ev in events {
            let wire = self.pass(ev).await;
            match &self.text {
                Some(_) => out.extend_from_slice(&grpc::encode_text(&wire)),
                None if out.is_empty() => out = BytesMut::from(wire),
                None => out.extend_from_slice(&wire),
            }
            if self.call.cancelled().is_some() {
                break;
            }
        }
        fed.map_err(|e| e.to_string())?;
        Ok(out.freeze())
    }

    /// The body ended: what an unpadded last base64 quantum completes goes on; an
    /// unfinished message is an error.
    pub async fn finish(&mut self) -> Result<Bytes, String> {
        let mut out = Bytes::new();
        if let Some(t) = &mut self.text {
            let last = t.finish().map_err(|e| e.to_string())?;
            if !last.is_empty() {
                self.text = None;
                let wire = self.feed(last).await;
                self.text = Some(TextDecoder::new());
                out = grpc::encode_text(&wire?);
            }
        }
        self.dec.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// A whole body through the hooks (gRPC-web request bodies, which clients send
    /// whole): what goes on, or the hook's cancel.
    pub async fn feed_all(&mut self, body: Bytes) -> Result<Bytes, CallError> {
        let fed = self.feed(body).await;
        let mut out = BytesMut::from(&fed.map_err(CallError::Framing)?[..]);
        if let Some(c) = self.call.cancelled() {
            return Err(CallError::Cancelled(c.0, c.1));
        }
        out.extend_from_slice(&self.finish().await.map_err(CallError::Framing)?);
        Ok(out.freeze())
    }

    /// The call that this direction belongs to.
    pub fn call(&self) -> &Rc<Call> {
        &self.call
    }

    /// What goes on for one decoded event.
    async fn pass(&mut self, ev: Event) -> Bytes {
        match ev {
            Event::Message(m) if self.hooked && self.call.cancelled().is_none() => {
                self.hook(m).await
            }
            Event::Trailers(t) => {
                self.call.end(
                    Status::from_trailers(&t.fields)
                        .unwrap_or_else(|| Status::new(grpc::status::UNKNOWN, "no grpc-status")),
                    t.fields,
                );
                t.wire
            }
            Event::Oversize { header, len, .. } => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        conn = self.call.info.conn_id,
                        "gRPC call {}: a message of {len} bytes is over --max-grpc-message \
                         ({}); it passes unhooked",
                        self.call.path,
                        self.call.max
                    );
                }
                header
            }
            other => other.wire().clone(),
        }
    }

    /// Runs on_data on one message; a message no hook changed goes on byte for byte.
    async fn hook(&mut self, m: grpc::Message) -> Bytes {
        let Some(enc) = self.encoding else {
            return m.wire;
        };
        let payload = match grpc::decode_payload(enc, m.compressed, &m.payload, self.call.max) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(
                    conn = self.call.info.conn_id,
                    "gRPC call {}: message {} passes unhooked: {e}",
                    self.call.path,
                    self.index
                );
                self.index += 1;
                return m.wire;
            }
        };
        let mut d = GrpcData {
            from_client: self.from_client,
            index: self.index,
            compressed: m.compressed,
            payload: payload.clone(),
            cancel: None,
        };
        self.index += 1;
        let call = &self.call;
        let (e, info, id) = (&*call.engine, &call.info, Some(call.flow_id));
        for phase in [Phase::PrePipeline, Phase::PostPipeline] {
            let step = e.grpc_data(call.start.rows, phase, info, call.flow_id, &mut d);
            hook_io::settle(&call.w, e, step, |s| e.resume_event(s, info, id, &mut d)).await;
        }
        if let Some(c) = d.cancel {
            call.cancel.borrow_mut().get_or_insert(c);
            return Bytes::new();
        }
        let unchanged = d.payload.as_ptr() == payload.as_ptr() && d.payload.len() == payload.len();
        if unchanged {
            return m.wire;
        }
        let body = match m.compressed {
            true => grpc::compress(enc, &d.payload),
            false => d.payload,
        };
        grpc::encode_message(&body, m.compressed)
    }
}

/// Why a gRPC body could not go on as messages.
#[derive(Debug)]
pub enum CallError {
    /// It is not gRPC framing (or not base64 for grpc-web-text).
    Framing(String),
    /// A hook's `msg:cancel(status, message)`.
    Cancelled(u32, String),
}

/// The end of a relayed h2 body.
pub enum Relayed {
    /// The trailers that ended it, passed on.
    Trailers(http::HeaderMap),
    /// It ended without trailers.
    End,
    /// A hook cancelled the call: nothing more went on.
    Cancelled(u32, String),
}

/// Relays an h2 body through `dir`, message by message, then its trailers; the
/// receive window opens only as the other side takes the data.
pub async fn relay(
    body: &mut Incoming,
    tx: &mut SendStream<Bytes>,
    dir: &mut Direction,
) -> Result<Relayed, String> {
    while let Some(chunk) = crate::proxy::h2_stream::next_data(&mut body.rx, tx).await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let len = chunk.len();
        let out = dir.feed(chunk).await?;
        if let Some((status, message)) = dir.call.cancelled() {
            return Ok(Relayed::Cancelled(status, message));
        }
        // recorded as it goes on, hooks' rewrites included
        body.see(&out);
        crate::proxy::h2_stream::send_data(tx, out, false)
            .await
            .map_err(|e| e.to_string())?;
        let _ = body.rx.flow_control().release_capacity(len);
    }
    let last = dir.finish().await?;
    body.see(&last);
    if !last.is_empty() {
        crate::proxy::h2_stream::send_data(tx, last, false)
            .await
            .map_err(|e| e.to_string())?;
    }
    match body.rx.trailers().await.map_err(|e| e.to_string())? {
        Some(t) => {
            body.see_trailers(&t);
            tx.send_trailers(t.clone()).map_err(|e| e.to_string())?;
            Ok(Relayed::Trailers(t))
        }
        None => {
            tx.send_data(Bytes::new(), true)
                .map_err(|e| e.to_string())?;
            Ok(Relayed::End)
        }
    }
}

/// The h2 trailers that carry a status to the client (a cancel, a failed call).
pub fn status_trailers(status: u32, message: &str) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in grpc::status_trailers::<&str, &str>(&Status::new(status, message), &[]) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            map.append(n, v);
        }
    }
    map
}
