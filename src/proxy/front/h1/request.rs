//! One HTTP/1 exchange up to the response head: the request event, then the request
//! sent upstream (pooled connection first, retried once when that is safe), or a
//! CONNECT tunnel opened.

use super::over_h2;
use super::state::*;
use crate::flows::record::now_ns;
use crate::http::{Body, Request, RequestHead, ResponseHead, Version};
use crate::proto::http1::{request_body_kind, BodyDecoder, HeadError};
use crate::proxy::body_relay::H1Body;
use crate::proxy::conn::auth;
use crate::proxy::conn::client::ClientConn;
use crate::proxy::exchange::recording;
use crate::proxy::exchange::route::{self};
use crate::proxy::exchange::{self, reply, rules, Decision, Message};
use crate::proxy::grpc_web;
use crate::proxy::h1_wire;
use crate::proxy::upstream::h1::{self as up1, Answer, SendError, Upload, Waits};
use crate::proxy::upstream::{self, Key, Upstream};
use crate::proxy::worker_tls::Alpn;
use bytes::{Bytes, BytesMut};
use std::net::Shutdown;

/// One request/response exchange.
pub(super) async fn exchange(c: &mut ClientConn, front: &mut Front, head: RequestHead) -> Half {
    let conn = c.info.conn_id;
    let kind = match request_body_kind(&head) {
        Ok(k) => k,
        Err(e @ HeadError::CodingNotImplemented) => {
            return Half::Over(fail(c, 501, &format!("request refused: {e}")).await)
        }
        Err(e) => return Half::Over(fail(c, 400, &format!("bad request: {e}")).await),
    };
    let mut asked = Asked {
        version: head.version,
        keep_alive: rules::client_keep_alive(head.version, &head.headers),
        is_head: head.is_head(),
        upgrade: rules::upgrade_requested(head.version, &head.headers),
        dec: BodyDecoder::new(kind),
        owe_continue: head.headers.has_token("expect", "100-continue"),
    };
    if let Some(expected) = &c.w.cfg.proxy_auth {
        // only the forward proxy's own requests: a tunnel was authorised by its CONNECT
        let ok = front.route.intercept.is_some()
            || head
                .headers
                .get("proxy-authorization")
                .is_some_and(|v| auth::basic_credentials_match(v, expected));
        if !ok {
            c.io.status.set(407);
            tracing::info!(conn, "407: no valid proxy credentials");
            let _ = c.io.write(auth::proxy_auth_required()).await;
            return Half::Over(Next::Close);
        }
    }
    let mut req = match route::h1_request(head, &c.w.mode, front.route.intercept.as_ref()) {
        Ok(r) => r,
        Err((status, text)) => return Half::Over(fail(c, status, &text).await),
    };
    let engine = c.w.engine();
    let hooks = Hooks {
        engine: engine.as_deref(),
        id: c.w.next_conn_id(),
    };
    let call = grpc_web::h1_call(&c.w, engine.as_ref(), &req, &c.info, hooks.id);
    let decision = {
        let mut src = client_body(
            &mut c.io,
            &mut asked.dec,
            &mut asked.owe_continue,
            c.w.timeouts.body,
        );
        let msg = Message::Request {
            req: &mut req,
            upgrade: asked.upgrade.as_ref(),
            grpc: call.as_ref().map(|k| &k.start),
        };
        exchange::event!(&flow!(c, hooks), msg, &mut src)
    };
    if req.method.as_ref() != b"CONNECT" {
        c.io.rec.set(recording::start(&flow!(c, hooks), &req, 0));
    }
    match decision {
        Decision::Forward => {}
        Decision::Drop => {
            tracing::debug!(conn, "request dropped by plugin");
            c.io.record(|r| r.error("dropped by plugin"));
            return Half::Over(Next::Close);
        }
        Decision::Respond(resp) => {
            let resp = match &call {
                Some(k) => grpc_web::respond_call(k, resp),
                None => resp,
            };
            // a request body left unread would be taken for the next request
            let close = !asked.keep_alive || !asked.dec.is_done();
            return Half::Over(answer(c, resp, &asked, close).await);
        }
        Decision::Failed(why) => return Half::Over(fail(c, 400, &why).await),
    }
    if req.method.as_ref() == b"CONNECT" {
        return Half::Over(Box::pin(tunnel(c, hooks, req)).await);
    }
    if let Some(g) = grpc_web::gateway(&c.w.cfg, &c.w.mode, &req) {
        let key = c.w.pool_key(&req.scheme, &req.authority);
        let web = super::grpc_web::Gw { hooks, call, key };
        return Half::Over(Box::pin(super::grpc_web::serve(c, web, g, req, &mut asked)).await);
    }
    if let Some(k) = &call {
        if let Err((status, message)) = hook_request(c, &mut req, &mut asked, k).await {
            let resp = grpc_web::cancelled_reply(k, status, &message);
            let close = !asked.keep_alive || !asked.dec.is_done();
            return Half::Over(answer(c, resp, &asked, close).await);
        }
        c.io.record(|r| r.request_body(&req.body));
    }
    // a plugin that replaced the body without reading it leaves the client's body unread
    if matches!(req.body, Body::Full(_)) && !asked.dec.is_done() {
        asked.keep_alive = false;
    }
    let key = c.w.pool_key(&req.scheme, &req.authority);
    if over_h2::known(c, &key) {
        return Half::Over(Box::pin(over_h2::exchange(c, hooks, &mut req, &mut asked, &key)).await);
    }
    // a gRPC-web call's response is read for its hooks
    let wire = call.is_none() && flow!(c, hooks).response_untouched();
    let (up, answer) = match send(c, front, &key, hooks, &mut req, &mut asked, wire).await {
        Ok(x) => x,
        Err(NotSent::Answered(next)) => return Half::Over(next),
        Err(NotSent::OverH2) => {
            let next = Box::pin(over_h2::exchange(c, hooks, &mut req, &mut asked, &key)).await;
            return Half::Over(next);
        }
    };
    if !answer.complete {
        // the upstream answered before taking the whole body
        asked.keep_alive = false;
    }
    let id = hooks.id;
    Half::Sent(Sent {
        engine: engine.clone(),
        id,
        req,
        asked,
        rhead: answer.head,
        up,
        key,
        upload_complete: answer.complete,
        grpc: call,
    })
}

/// A gRPC-web call's request body through grpc-web.on_data (read whole).
async fn hook_request(
    c: &mut ClientConn,
    req: &mut Request,
    asked: &mut Asked,
    call: &std::rc::Rc<crate::proxy::grpc::Call>,
) -> Result<(), (u32, String)> {
    let mut src = client_body(
        &mut c.io,
        &mut asked.dec,
        &mut asked.owe_continue,
        c.w.timeouts.body,
    );
    grpc_web::hook_request(&mut src, req, call, c.w.cfg.max_plugin_body).await
}

/// A new upstream connection for `key` (reporting a failed early connect once instead
/// of trying again).
async fn open(
    c: &mut ClientConn,
    front: &mut Front,
    key: &Key,
    hooks: Hooks<'_>,
    req: &Request,
) -> Result<Upstream, Next> {
    if let Some((k, e)) = front.route.ahead_failed.take() {
        if k == *key {
            return Err(fail_flow(c, hooks, req, e).await);
        }
    }
    let spare = front.route.spare.take();
    match crate::proxy::hooks::open_upstream(&c.w, &c.info, key, Alpn::Http1, spare).await {
        Ok(up) => Ok(up),
        Err(e) => Err(fail_flow(c, hooks, req, e.flow_error()).await),
    }
}

/// Sends the request upstream and reads the final response head, on a pooled
/// connection first; a request that failed on a reused connection before any answer is
/// sent again on a new one when that is safe. `wire`: the final head may stay as bytes.
async fn send(
    c: &mut ClientConn,
    front: &mut Front,
    key: &Key,
    hooks: Hooks<'_>,
    req: &mut Request,
    asked: &mut Asked,
    wire: bool,
) -> Result<(Upstream, Answer), NotSent> {
    let retryable = rules::retryable(req, asked.dec.is_done());
    let mut attempt = 0;
    loop {
        attempt += 1;
        // the pool first (no future for it: most requests take this path)
        let pooled = match attempt {
            1 => upstream::reuse(&c.w, key),
            _ => None,
        };
        let mut up = match pooled {
            Some(up) => up,
            // rare paths are boxed: their futures would otherwise make every request's
            // future larger, and it is copied on every call
            None => {
                let up = Box::pin(open(c, front, key, hooks, req))
                    .await
                    .map_err(NotSent::Answered)?;
                c.io.record(|r| r.times.upstream_connected = now_ns());
                up
            }
        };
        c.info.server_addr = Some(up.addr);
        let mut head = h1_wire::upstream_request_head(req, asked.dec.kind());
        if let (true, Some(chain)) = (up.via_chain, &c.w.chain) {
            h1_wire::to_proxy_form(&mut head, req, chain.auth.as_deref());
        }
        let streamed = !matches!(req.body, Body::Full(_)) && !asked.dec.is_done();
        if streamed && asked.owe_continue && !asked.dec.is_done() {
            asked.owe_continue = false;
            if !c.io.write(Bytes::from_static(reply::CONTINUE_100)).await {
                up.stream.shutdown(Shutdown::Both);
                return Err(Next::Close.into());
            }
        }
        let waits = Waits {
            upstream: c.w.timeouts.upstream,
            deadline: &c.upstream_deadline,
            limits: &c.w.upstream_limits,
            wire,
        };
        let sent = if streamed {
            let mut rec = c.io.rec.take();
            let body = H1Body {
                stream: &c.io.stream,
                buf: &mut c.io.buf,
                dec: &mut asked.dec,
                timeout: c.w.timeouts.body,
                tap: rec.as_mut().map(|r| &mut r.req_body),
            };
            let sent = Box::pin(up1::send_streaming(&mut up, head, Upload::H1(body), waits)).await;
            c.io.rec.set(rec);
            sent
        } else {
            let parts = match &req.body {
                Body::Full(b) => vec![h1_wire::full_body_wire(b, req.trailers.as_ref(), true)],
                _ => Vec::new(),
            };
            up1::send_ready(&mut up, head, parts, waits).await
        };
        let e = match sent {
            Ok(answer) => {
                let pass_on = req.version == Version::Http11 && !answer.interim.is_empty();
                if pass_on && !interim(c, &answer.interim).await {
                    up.stream.shutdown(Shutdown::Both);
                    return Err(Next::Close.into());
                }
                return Ok((up, answer));
            }
            Err(e) => e,
        };
        up.stream.shutdown(Shutdown::Both);
        match e {
            SendError::Client(why) => {
                tracing::debug!(conn = c.info.conn_id, "client failed during upload: {why}");
                c.io.record(|r| r.error(format!("client failed during upload: {why}")));
                return Err(Next::Close.into());
            }
            SendError::BadBody(why) => {
                return Err(fail(c, 400, &format!("bad request body: {why}"))
                    .await
                    .into());
            }
            SendError::Upstream(up1::RespError::Closed)
                if up.reused && retryable && attempt == 1 => {}
            SendError::Upstream(e) if c.w.cfg.http2 && over_h2::speaks_only_h2(&up, &e) => {
                over_h2::remember(c, key);
                // it never read the request: sent again over h2 when the body is at hand
                if matches!(req.body, Body::Full(_)) || asked.dec.is_done() {
                    return Err(NotSent::OverH2);
                }
                let mut f = e.flow_error(c.w.timeouts.upstream);
                f.text.push_str(
                    " (it speaks HTTP/2 only; the request body was already sent, so it is \
                     not sent again: later requests go over HTTP/2)",
                );
                return Err(fail_flow(c, hooks, req, f).await.into());
            }
            SendError::Upstream(e) => {
                let mut f = e.flow_error(c.w.timeouts.upstream);
                if over_h2::speaks_only_h2(&up, &e) {
                    f.text.push_str(
                        " (it agreed to no ALPN protocol when offered http/1.1: it may \
                         speak HTTP/2 only, and --no-http2 keeps luring from speaking it)",
                    );
                }
                return Err(fail_flow(c, hooks, req, f).await.into());
            }
        }
    }
}

/// Why [`send`] returned no response.
enum NotSent {
    /// The client was answered (or is gone): what happens next.
    Answered(Next),
    /// The upstream speaks only h2: the request goes there over h2.
    OverH2,
}

impl From<Next> for NotSent {
    fn from(n: Next) -> NotSent {
        NotSent::Answered(n)
    }
}

/// Passes interim (1xx) responses on; false when the client went away.
async fn interim(c: &ClientConn, heads: &[ResponseHead]) -> bool {
    for h in heads {
        let mut out = BytesMut::new();
        crate::proto::http1::encode_response_head(h, &mut out);
        if !c.io.write(out.freeze()).await {
            return false;
        }
    }
    true
}

/// CONNECT: connect to the target and answer 200; the tunnel goes on in the driver.
async fn tunnel(c: &mut ClientConn, hooks: Hooks<'_>, req: Request) -> Next {
    let host = req.host();
    let port = req.port();
    let up = match upstream::dial(&c.w, &host, port).await {
        Ok(u) => u,
        Err(e) => return fail_flow(c, hooks, &req, e.flow_error()).await,
    };
    c.info.server_addr = Some(up.addr);
    c.io.status.set(200);
    let established = Bytes::from_static(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    if !c.io.write(established).await {
        up.stream.shutdown(Shutdown::Both);
        return Next::Close;
    }
    Next::Tunnel(Box::new(Tunnel {
        host,
        port,
        authority: req.authority,
        up,
        by_sni: false,
    }))
}
