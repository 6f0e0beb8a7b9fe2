//! What the HTTP/1 front keeps across a connection's exchanges and within one: where
//! requests go, what the client asked of its connection, and the answers luring
//! writes itself.

use crate::http::{Request, Response, Version};
use crate::plugin::Engine;
use crate::proto::http1::BodyDecoder;
use crate::proxy::conn::client::ClientConn;
use crate::proxy::exchange::reply::{self, FlowError};
use crate::proxy::exchange::route::Intercept;
use crate::proxy::exchange::{Decision, Message, Source};
use crate::proxy::upstream::{Key, Spare, Upstream};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// Where this connection's requests go, beyond what the mode says.
#[derive(Default)]
pub struct H1Route {
    /// Inside an intercepted tunnel: its target.
    pub intercept: Option<Intercept>,
    /// A connection made ahead of the client's TLS handshake failed: the first request
    /// to that upstream gets this answer instead of a second try.
    pub ahead_failed: Option<(Key, FlowError)>,
    /// The plain connection the tunnel opened, for the first TLS connection upstream.
    pub spare: Option<Spare>,
}

/// An accepted CONNECT (its 200 sent): the tunnel's target and upstream connection.
pub struct Tunnel {
    /// Host the client named.
    pub host: String,
    /// Port the client named.
    pub port: u16,
    /// host:port as the client named it.
    pub authority: String,
    /// The connection to the target.
    pub up: Upstream,
    /// The client never named the target (transparent mode): a ClientHello's SNI
    /// names it for TLS.
    pub by_sni: bool,
}

/// How the HTTP/1 front ended.
pub enum Outcome {
    /// The connection is over.
    Close,
    /// A CONNECT was accepted: the tunnel goes on in the driver.
    Tunnel(Box<Tunnel>),
}

/// What happens after one exchange.
pub(super) enum Next {
    /// Read the next request.
    KeepAlive,
    /// The connection is over.
    Close,
    /// A CONNECT was accepted.
    Tunnel(Box<Tunnel>),
}

/// The front's state across the connection's exchanges.
pub(super) struct Front {
    pub(super) route: Box<H1Route>,
}

/// What the client said about its connection and body in one request.
pub(super) struct Asked {
    pub(super) version: Version,
    pub(super) keep_alive: bool,
    pub(super) is_head: bool,
    /// The protocol an upgrade asks for.
    pub(super) upgrade: Option<Bytes>,
    /// The request body's framing state.
    pub(super) dec: BodyDecoder,
    /// The client waits for `100 Continue` before its body.
    pub(super) owe_continue: bool,
}

/// An exchange whose request went upstream and whose response head came back: what
/// the response half needs. The request half returns it instead of awaiting the
/// response half itself, so the serve loop awaits each half directly (a future handed
/// down through one more async call is copied once more per request).
pub(super) struct Sent {
    pub(super) engine: Option<std::rc::Rc<Engine>>,
    pub(super) id: u64,
    pub(super) req: Request,
    pub(super) asked: Asked,
    pub(super) rhead: crate::proto::http1::ParsedResponse,
    pub(super) up: Upstream,
    pub(super) key: Key,
    /// The whole request body went upstream.
    pub(super) upload_complete: bool,
    /// The gRPC-web call, when a plugin hooks the grpc-web rows.
    pub(super) grpc: Option<std::rc::Rc<crate::proxy::grpc::Call>>,
}

/// How the request half of an exchange ended.
// Sent is large, but it is made once per request and moved once: boxing it would add
// an allocation per request to save one copy.
#[allow(clippy::large_enum_variant)]
pub(super) enum Half {
    /// It is over: what happens next.
    Over(Next),
    /// The response half follows.
    Sent(Sent),
}

/// The plugin engine and flow id of the exchange in progress.
#[derive(Clone, Copy)]
pub(super) struct Hooks<'e> {
    pub(super) engine: Option<&'e Engine>,
    pub(super) id: u64,
}

/// The flow of the exchange in progress; the fields are borrowed one by one so the
/// client's buffer stays free for the body source.
macro_rules! flow {
    ($c:expr, $hooks:expr) => {
        $crate::proxy::exchange::Flow {
            w: &$c.w,
            info: &$c.info,
            engine: $hooks.engine,
            id: $hooks.id,
            client_fd: $c.fd,
        }
    };
}
pub(super) use flow;

/// The client's request body as a hook reads it (100 Continue sent first if owed).
pub(super) fn client_body<'a>(
    io: &'a mut crate::proxy::conn::client::ClientIo,
    dec: &'a mut BodyDecoder,
    owe_continue: &'a mut bool,
    timeout: std::time::Duration,
) -> Source<'a> {
    Source::H1 {
        body: crate::proxy::body_relay::H1Body {
            stream: &io.stream,
            buf: &mut io.buf,
            dec,
            timeout,
            tap: None,
        },
        owe_continue: Some(owe_continue),
    }
}

/// Writes a response luring makes (a plugin's RESPOND) and says what happens next.
pub(super) async fn answer(c: &ClientConn, resp: Response, asked: &Asked, close: bool) -> Next {
    let close = close || c.w.is_draining();
    c.io.status.set(resp.status);
    c.io.record(|r| r.response(&resp, true));
    let wire = reply::h1_bytes(resp, asked.is_head, close, asked.version);
    if !c.io.write(wire).await || close {
        return Next::Close;
    }
    Next::KeepAlive
}

/// A rare path's future, boxed: the error answers are awaited in many places of the
/// exchange, and inline each would make the exchange's future (copied whole as it
/// starts, for every request) larger by its size.
type Rare<'a> = Pin<Box<dyn Future<Output = Next> + 'a>>;

/// Answers with an error and closes.
pub(super) fn fail<'a>(c: &'a ClientConn, status: u16, text: &'a str) -> Rare<'a> {
    Box::pin(async move {
        c.io.fail(c.info.conn_id, status, text).await;
        Next::Close
    })
}

/// Answers a flow that failed upstream, and closes: luring's error response goes
/// through http.on_response first (`msg.error` says why), so a hook can log it, change
/// it or answer with its own page.
pub(super) fn fail_flow<'a>(
    c: &'a ClientConn,
    hooks: Hooks<'a>,
    req: &'a Request,
    e: FlowError,
) -> Rare<'a> {
    Box::pin(fail_flow_now(c, hooks, req, e))
}

async fn fail_flow_now(c: &ClientConn, hooks: Hooks<'_>, req: &Request, e: FlowError) -> Next {
    tracing::info!(conn = c.info.conn_id, status = e.status, "{}", e.text);
    let mut resp = e.response();
    let decision = {
        let msg = Message::Response(req, &mut resp);
        crate::proxy::exchange::event!(&flow!(c, hooks), msg, &mut Source::Whole)
    };
    match decision {
        Decision::Drop => return Next::Close,
        Decision::Respond(r) => resp = r,
        Decision::Forward | Decision::Failed(_) => {}
    }
    c.io.send_error(resp, &e.text).await;
    Next::Close
}
