//! One HTTP exchange, whatever the HTTP version on either side: the request and
//! response events (pre_pipeline hooks, the pipeline steps, post_pipeline hooks, body
//! reads for hooks), routing, the replies luring makes itself, and the access-log
//! record. The HTTP/1 and HTTP/2 client fronts (proxy/front/) feed it, and the
//! upstream legs (proxy/upstream/) carry what it decides.

pub mod log;
pub mod pipeline;
pub mod recording;
pub mod reply;
pub mod route;
pub mod rules;
pub mod source;

use crate::config::secs;
use crate::http::{Body, Headers, Request, Response};
use crate::plugin::{ConnInfo, Engine, Event, GrpcCall, GrpcRows, Phase, Step, Suspended};
use crate::proxy::hook_io::HookIo;
use crate::proxy::worker::Worker;
use bytes::Bytes;
pub use source::Source;

/// Runs a message event: `message_event` when a hook is registered for it, the
/// pipeline steps alone (no future) when none is.
macro_rules! event {
    ($f:expr, $msg:expr, $src:expr) => {{
        let msg = $msg;
        let f = $f;
        if msg.hooked(f) {
            $crate::proxy::exchange::message_event(f, msg, $src).await
        } else {
            msg.without_hooks(f)
        }
    }};
}
pub(crate) use event;

/// What every event of one exchange needs: the worker, the connection's context for
/// hooks, the engine of this exchange (a reload never changes it mid-flow) and the
/// flow id.
#[derive(Clone, Copy)]
pub struct Flow<'a> {
    /// The worker that owns the connection.
    pub w: &'a Worker,
    /// Context handed to hooks.
    pub info: &'a ConnInfo,
    /// The plugin engine, when plugins are loaded.
    pub engine: Option<&'a Engine>,
    /// This exchange's id (ctx.flow_id).
    pub id: u64,
    /// The HTTP/1 client's socket: when a hook's wait ends and the client has gone,
    /// the hook is abandoned and the message dropped (HTTP/2 streams watch for their
    /// reset instead).
    pub client_fd: Option<std::os::fd::RawFd>,
}

impl Flow<'_> {
    /// Whether the response's head goes to the client with nothing reading or changing
    /// its fields but the hop-by-hop strip: no response or SSE hook, no recorder, no
    /// response rewrite. Such a head can be relayed as the bytes it arrived in.
    pub fn response_untouched(&self) -> bool {
        let hooked = |e: &Engine| e.has(Event::HttpResponse) || e.has(Event::SseEvent);
        !self.engine.is_some_and(hooked)
            && self.w.recorder.is_none()
            && !self.w.pipeline.rewrites_responses()
    }
}

/// The outcome of a message event (hooks and pipeline steps).
#[derive(Debug)]
pub enum Decision {
    /// Go on with the message as it now is.
    Forward,
    /// A hook dropped it.
    Drop,
    /// A hook answered it.
    Respond(Response),
    /// Reading the body for a hook failed; the text says why.
    Failed(String),
}

/// A message event: the message, and how the engine and the pipeline steps are called
/// on it.
pub enum Message<'a> {
    /// A request; `upgrade` is the protocol the client asks to switch to, if any.
    Request {
        /// The request.
        req: &'a mut Request,
        /// The Upgrade value of an HTTP/1.1 upgrade request.
        upgrade: Option<&'a Bytes>,
        /// The gRPC call it starts, when the gRPC layer takes it.
        grpc: Option<&'a GrpcCall>,
    },
    /// A response to `0`.
    Response(&'a Request, &'a mut Response),
}

impl Message<'_> {
    /// The events this message fires, in order, in each phase: a WebSocket handshake
    /// runs ws.on_upgrade after http.on_request.
    fn events(&self) -> &'static [Event] {
        match self {
            Message::Request {
                upgrade: Some(p), ..
            } if p.eq_ignore_ascii_case(b"websocket") => &[Event::HttpRequest, Event::WsUpgrade],
            // a gRPC call runs its on_start row after http.on_request, in each phase
            Message::Request { grpc: Some(c), .. } => match c.rows {
                GrpcRows::Grpc => &[Event::HttpRequest, Event::GrpcStart],
                GrpcRows::GrpcWeb => &[Event::HttpRequest, Event::GrpcWebStart],
            },
            Message::Request { .. } => &[Event::HttpRequest],
            Message::Response(..) => &[Event::HttpResponse],
        }
    }

    fn pipeline(&mut self, f: &Flow<'_>) {
        match self {
            Message::Request { req, upgrade, .. } => {
                f.w.pipeline.on_request(req);
                if let Some(p) = upgrade {
                    // the pipeline strips Upgrade and Connection as hop-by-hop; an upgrade
                    // needs them on the next hop, and post_pipeline sees what is sent
                    req.headers.set("connection", "upgrade");
                    req.headers.set("upgrade", (*p).clone());
                    // message hooks and the recorder read payloads; luring does not inflate
                    if p.eq_ignore_ascii_case(b"websocket")
                        && crate::proxy::ws::reads_payloads(f.engine, f.w.recorder.is_some())
                    {
                        req.headers.remove("sec-websocket-extensions");
                    }
                }
            }
            Message::Response(req, resp) => f.w.pipeline.on_response(req, resp),
        }
    }

    fn call(&mut self, e: &Engine, ev: Event, phase: Phase, f: &Flow<'_>) -> Step {
        match self {
            Message::Request { req, .. } if ev == Event::WsUpgrade => {
                e.ws_upgrade(phase, f.info, f.id, req)
            }
            Message::Request {
                req, grpc: Some(c), ..
            } if ev != Event::HttpRequest => e.grpc_start(c.rows, phase, f.info, f.id, req, c),
            Message::Request { req, .. } => e.http_request(phase, f.info, f.id, req),
            Message::Response(req, resp) => e.http_response(phase, f.info, f.id, req, resp),
        }
    }

    fn resume(&mut self, e: &Engine, s: Suspended, f: &Flow<'_>) -> Step {
        match self {
            Message::Request { req, .. } => e.resume_request(s, f.info, f.id, req),
            Message::Response(req, resp) => e.resume_response(s, f.info, f.id, req, resp),
        }
    }

    /// Whether a hook of this message's events is registered. Without one the event is
    /// only the pipeline steps: [`Message::without_hooks`] runs them at once, and no
    /// future is built for it (this runs twice for every request).
    #[inline]
    pub fn hooked(&self, f: &Flow<'_>) -> bool {
        f.engine
            .is_some_and(|e| self.events().iter().any(|&ev| e.has(ev)))
    }

    /// The event of a message no hook looks at: the pipeline steps.
    #[inline]
    pub fn without_hooks(mut self, f: &Flow<'_>) -> Decision {
        self.pipeline(f);
        Decision::Forward
    }

    /// The body and trailers a hook that reads the body fills.
    fn body(&mut self) -> (&mut Body, &mut Option<Headers>) {
        match self {
            Message::Request { req, .. } => (&mut req.body, &mut req.trailers),
            Message::Response(_, resp) => (&mut resp.body, &mut resp.trailers),
        }
    }
}

/// Runs one message event: pre_pipeline hooks, the pipeline steps, post_pipeline hooks
/// (spec section 3). A hook that reads a streaming body gets it from `src`.
/// Callers go through [`event!`], which skips the future when nothing is hooked.
pub async fn message_event(f: &Flow<'_>, mut msg: Message<'_>, src: &mut Source<'_>) -> Decision {
    let events = msg.events();
    // made at a hook's first wait; dropping it (event over, or client gone) shuts down
    // the cosockets its hooks left open
    let mut hio: Option<Box<HookIo>> = None;
    for phase in [Phase::PrePipeline, Phase::PostPipeline] {
        if phase == Phase::PostPipeline {
            msg.pipeline(f);
        }
        let Some(e) = f.engine else { continue };
        for &ev in events.iter().filter(|&&ev| e.has(ev)) {
            let mut step = msg.call(e, ev, phase, f);
            loop {
                match step {
                    Step::Continue => break,
                    Step::Drop => return Decision::Drop,
                    Step::Respond(r) => return Decision::Respond(r),
                    Step::NeedBody(s) => {
                        let (body, trailers) = msg.body();
                        if matches!(body, Body::Streaming) {
                            match src.buffer(f.w.cfg.max_plugin_body).await {
                                Ok((b, t)) => {
                                    *body = b;
                                    *trailers = t;
                                }
                                Err(why) => return Decision::Failed(why),
                            }
                        }
                        step = msg.resume(e, s, f);
                    }
                    Step::Wait(s, req) => {
                        let io = hio.get_or_insert_with(|| {
                            Box::new(HookIo::new(secs(f.w.cfg.hook_timeout)))
                        });
                        match io.wait(f.w, s.hook_key(), req).await {
                            Ok(r) => e.feed_io(r),
                            Err(why) => e.fail_wait(why),
                        }
                        if f.client_fd.is_some_and(crate::io::os::peer_gone) {
                            tracing::debug!(
                                conn = f.info.conn_id,
                                "the client went away while a hook waited: the hook is abandoned"
                            );
                            return Decision::Drop;
                        }
                        step = msg.resume(e, s, f);
                    }
                }
            }
        }
    }
    Decision::Forward
}
