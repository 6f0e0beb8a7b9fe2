//! The gRPC-web layer: what the fronts add for calls made as gRPC-web (HTTP/1.1 or h2,
//! binary or text). With grpc-web.* hooks: the request body (sent whole by every
//! gRPC-web client) through on_data, the response body through on_data as it streams,
//! its trailer frame driving on_end, and RESPOND_GRPC / msg:cancel answered with a
//! trailer frame. With `--grpc-web` in reverse mode: the call translated to native gRPC
//! toward an h2 upstream and back (`proto/grpc/web.rs` does the bytes).

use crate::config::Mode;
use crate::http::{Body, Headers, Request, Response};
use crate::proto::grpc::{self, web, Protocol, Status};
use crate::proto::http1::{encode_chunk, encode_last_chunk};
use crate::proxy::body_relay::{self, H1Body, RelayError, Sink};
use crate::proxy::exchange::Source;
use crate::proxy::grpc::{Call, CallError, Direction};
use crate::proxy::h2_stream;
use bytes::{Bytes, BytesMut};
use h2::SendStream;
use std::rc::Rc;

/// A gRPC-web call on an HTTP/1.1 front, when a plugin hooks the grpc-web rows (native
/// gRPC needs h2, so only the gRPC-web content types count there).
pub fn h1_call(
    w: &Rc<crate::proxy::worker::Worker>,
    engine: Option<&Rc<crate::plugin::Engine>>,
    req: &Request,
    info: &crate::plugin::ConnInfo,
    flow_id: u64,
) -> Option<Rc<Call>> {
    Call::of(w, engine, req, info, flow_id).filter(|c| c.protocol().is_web())
}

/// A trailers-only answer (RESPOND_GRPC: the status in the headers) as a gRPC-web
/// client reads it: 200, the call's content type, the status in a trailer frame
/// (base64 for text). Any other answer is left as it is.
pub fn web_reply(protocol: Protocol, mut r: Response) -> Response {
    let empty = matches!(&r.body, Body::Full(b) if b.is_empty());
    if !protocol.is_web() || !empty || !r.headers.contains("grpc-status") {
        return r;
    }
    let fields: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            let name = String::from_utf8_lossy(&h.name).to_ascii_lowercase();
            (name, String::from_utf8_lossy(&h.value).into_owned())
        })
        .filter(|(n, _)| n != "content-type" && n != "content-length")
        .collect();
    r.body = Body::Full(web::ResponseEncoder::new(protocol).end(&fields));
    r.headers = Headers::new();
    r.headers
        .add("content-type", web::web_content_type(protocol, None));
    r
}

/// A hook answered the call: on_end fires from the answer, which is then made right
/// for the call's protocol.
pub fn respond_call(call: &Call, r: Response) -> Response {
    match r.headers.contains("grpc-status") {
        true => call.end_with(&r.headers),
        false => call.end_http(r.status),
    }
    web_reply(call.protocol(), r)
}

/// The answer to a call a hook cancelled before any response (on_end fires from it).
pub fn cancelled_reply(call: &Call, status: u32, message: &str) -> Response {
    let st = Status::new(status, message);
    let mut headers = Headers::new();
    for (name, value) in grpc::trailers_only::<&str, &str>(&st, &[]) {
        headers.add(name, value);
    }
    call.end(st, Vec::new());
    let r = Response {
        status: 200,
        reason: "OK".into(),
        version: crate::http::Version::Http11,
        headers,
        body: Body::Full(Bytes::new()),
        trailers: None,
        error: None,
    };
    web_reply(call.protocol(), r)
}

/// The trailer frame that ends a response body a hook cancelled mid-stream.
pub fn cancel_frame(protocol: Protocol, status: u32, message: &str) -> Bytes {
    let fields = grpc::status_trailers::<&str, &str>(&Status::new(status, message), &[]);
    web::ResponseEncoder::new(protocol).end(&fields)
}

/// Runs a gRPC-web request body through on_data, whole: gRPC-web clients cannot stream
/// a request (browsers' fetch), so nothing waits that would not anyway. A body over
/// `limit` or not gRPC framing goes on unhooked. Err: a hook cancelled the call.
pub async fn hook_request(
    src: &mut Source<'_>,
    req: &mut Request,
    call: &Rc<Call>,
    limit: usize,
) -> Result<(), (u32, String)> {
    if !call.hooks_data() {
        return Ok(());
    }
    let body = match std::mem::replace(&mut req.body, Body::Streaming) {
        Body::Full(b) => b,
        Body::Streaming => match src.buffer(limit).await {
            Ok((Body::Full(b), t)) => {
                req.trailers = t;
                b
            }
            Ok((other, t)) => {
                req.body = other;
                req.trailers = t;
                return Ok(());
            }
            Err(why) => {
                tracing::debug!("gRPC-web request body: {why}");
                return Err((grpc::status::UNKNOWN, why));
            }
        },
        other => {
            req.body = other;
            return Ok(());
        }
    };
    let mut dir = call.direction(true, req.headers.get("grpc-encoding").map(|v| &v[..]));
    req.body = Body::Full(match dir.feed_all(body.clone()).await {
        Ok(b) => b,
        Err(CallError::Cancelled(status, message)) => return Err((status, message)),
        Err(CallError::Framing(why)) => {
            tracing::info!("gRPC-web request body passes unhooked: {why}");
            body
        }
    });
    Ok(())
}

/// The reading of a response body for the call's hooks, when the response is the
/// call's gRPC-web answer; a trailers-only answer fires on_end from its headers now.
pub fn response_direction(call: &Rc<Call>, resp: &Response) -> Option<Direction> {
    if resp.headers.contains("grpc-status") {
        call.end_with(&resp.headers);
    }
    let ct = resp.headers.get("content-type")?;
    let web = grpc::detect(std::str::from_utf8(ct).ok()?)?.is_web();
    (resp.status == 200 && web && matches!(resp.body, Body::Streaming)).then(|| {
        let enc = resp.headers.get("grpc-encoding").map(|v| &v[..]);
        call.direction(false, enc)
    })
}

/// One piece of a response body through `dir`: what goes on, and whether a hook
/// cancelled the call (then the status frame ends what goes on).
async fn through(dir: &mut Direction, piece: Bytes) -> Result<(Bytes, bool), RelayError> {
    let out = dir.feed(piece).await.map_err(RelayError::Malformed)?;
    match dir.call().cancelled() {
        Some((status, message)) => {
            let call = dir.call().clone();
            let mut b = BytesMut::from(&out[..]);
            b.extend_from_slice(&cancel_frame(call.protocol(), status, &message));
            call.end(Status::new(status, message), Vec::new());
            Ok((b.freeze(), true))
        }
        None => Ok((out, false)),
    }
}

/// Relays an HTTP/1 upstream's gRPC-web response body through `dir` to an HTTP/1
/// client (chunked when `chunked`, else ending with the connection), `head` first.
/// A hook's cancel ends the body with its status frame; the upstream's rest is left
/// unread (its connection is then not reused). Returns the bytes written.
pub async fn relay_h1(
    body: &mut H1Body<'_>,
    sink: Sink<'_>,
    head: BytesMut,
    chunked: bool,
    dir: &mut Direction,
) -> Result<u64, RelayError> {
    let frame = |payload: &[u8], out: &mut BytesMut| match chunked {
        true if payload.is_empty() => {}
        true => encode_chunk(payload, out),
        false => out.extend_from_slice(payload),
    };
    let mut out = head;
    let mut written = 0u64;
    loop {
        let mut done = body.dec.is_done();
        let mut cancelled = false;
        if !body.buf.is_empty() {
            let d = body
                .dec
                .decode(body.buf)
                .map_err(|e| RelayError::Malformed(e.to_string()))?;
            for piece in d.data {
                let (bytes, c) = through(dir, piece).await?;
                frame(&bytes, &mut out);
                if c {
                    cancelled = true;
                    break;
                }
            }
            done = d.done;
        }
        let eof = !done && !cancelled && body.buf.is_empty() && {
            if !out.is_empty() {
                written += out.len() as u64;
                body_relay::send(sink.stream, vec![out.split().freeze()], sink.limit)
                    .await
                    .map_err(RelayError::Sink)?;
            }
            let n = body_relay::read_some(body.stream, body.buf, body.timeout).await;
            match n {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => return Err(RelayError::Source(e.to_string())),
            }
        };
        if eof {
            body.dec
                .eof()
                .map_err(|e| RelayError::Source(e.to_string()))?;
        }
        if done || cancelled || eof {
            if !cancelled {
                let last = dir.finish().await.map_err(RelayError::Malformed)?;
                frame(&last, &mut out);
            }
            if chunked {
                encode_last_chunk(None, &mut out);
            }
            written += out.len() as u64;
            body_relay::send(sink.stream, vec![out.freeze()], sink.limit)
                .await
                .map_err(RelayError::Sink)?;
            return Ok(written);
        }
    }
}

/// Relays an HTTP/1 upstream's gRPC-web response body through `dir` to an h2 client
/// stream. Returns the bytes sent.
pub async fn relay_h1_to_h2(
    body: &mut H1Body<'_>,
    tx: &mut SendStream<Bytes>,
    dir: &mut Direction,
) -> Result<u64, String> {
    let mut n = 0u64;
    loop {
        let mut done = body.dec.is_done();
        if !body.buf.is_empty() {
            let d = body.dec.decode(body.buf).map_err(|e| e.to_string())?;
            for piece in d.data {
                let (bytes, cancelled) = through(dir, piece).await.map_err(|e| format!("{e:?}"))?;
                n += bytes.len() as u64;
                h2_stream::send_data(tx, bytes, cancelled)
                    .await
                    .map_err(|e| e.to_string())?;
                if cancelled {
                    return Ok(n);
                }
            }
            done = d.done;
        }
        if !done {
            match body_relay::read_some(body.stream, body.buf, body.timeout).await {
                Ok(0) => {
                    body.dec.eof().map_err(|e| e.to_string())?;
                    done = true;
                }
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        if done {
            let last = dir.finish().await?;
            n += last.len() as u64;
            h2_stream::send_data(tx, last, true)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(n);
        }
    }
}

/// What `--grpc-web` does with a request: nothing (None), answer a CORS preflight, or
/// translate a call of this protocol.
pub enum Gateway {
    /// An `OPTIONS` preflight, answered by luring.
    Preflight(Response),
    /// A gRPC-web call to translate.
    Call(Protocol),
}

/// Whether `--grpc-web` takes `req` (reverse mode only: the upstream is the gRPC server).
pub fn gateway(cfg: &crate::config::Config, mode: &Mode, req: &Request) -> Option<Gateway> {
    if !cfg.grpc_web || !matches!(mode, Mode::Reverse(_)) {
        return None;
    }
    let h = &req.headers;
    let get = |n: &str| h.get(n).map(|v| &v[..]);
    let pre = web::preflight(
        &req.method,
        get("access-control-request-method"),
        get("origin"),
        get("access-control-request-headers"),
    );
    if let Some(fields) = pre {
        let mut headers = Headers::new();
        for (n, v) in fields {
            headers.add(n, v);
        }
        headers.add("content-length", "0");
        return Some(Gateway::Preflight(Response {
            status: 204,
            reason: "No Content".into(),
            version: req.version,
            headers,
            body: Body::Full(Bytes::new()),
            trailers: None,
            error: None,
        }));
    }
    let ct = std::str::from_utf8(get("content-type")?).ok()?;
    grpc::detect(ct).filter(|p| p.is_web()).map(Gateway::Call)
}

/// The request as the native gRPC call it stands for: content type, `te: trailers`,
/// the body decoded from base64 for text. Err: a text body that is not base64.
pub fn to_grpc_request(req: &mut Request, protocol: Protocol, body: Bytes) -> Result<(), String> {
    let ct = req
        .headers
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    req.headers.set("content-type", web::grpc_content_type(&ct));
    req.headers.set("te", "trailers");
    // gRPC-web-only fields; the upstream speaks gRPC
    for name in [
        "content-length",
        "x-grpc-web",
        "x-accept-content-transfer-encoding",
    ] {
        req.headers.remove(name);
    }
    req.body = Body::Full(web::request_body(protocol, body)?);
    Ok(())
}

/// The upstream's native gRPC response head as the gRPC-web client gets it: its content
/// type, no length (the body changes), the CORS fields for a browser (`origin`).
pub fn from_grpc_response(resp: &mut Response, protocol: Protocol, origin: Option<&Bytes>) {
    let ct = resp
        .headers
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let grpc_answer = ct.as_deref().and_then(grpc::detect) == Some(Protocol::Grpc);
    if grpc_answer || resp.headers.contains("grpc-status") {
        resp.headers.set(
            "content-type",
            web::web_content_type(protocol, ct.as_deref()),
        );
    }
    resp.headers.remove("content-length");
    for (n, v) in web::cors_headers(origin.map(|o| &o[..])) {
        resp.headers.set(n, v);
    }
}

/// A native gRPC response body re-emitted as gRPC-web, through the call's hooks when a
/// plugin hooks the grpc-web rows (they see the body as the client gets it).
pub struct WebBody {
    enc: web::ResponseEncoder,
    dir: Option<Direction>,
    protocol: Protocol,
}

impl WebBody {
    /// The body of a call made as `protocol`.
    pub fn new(protocol: Protocol, dir: Option<Direction>) -> WebBody {
        WebBody {
            enc: web::ResponseEncoder::new(protocol),
            dir,
            protocol,
        }
    }

    /// One upstream DATA chunk: what goes to the client, and whether a hook cancelled.
    pub async fn data(&mut self, chunk: Bytes) -> Result<(Bytes, bool), String> {
        let web = self.enc.data(chunk);
        match &mut self.dir {
            Some(d) => through(d, web).await.map_err(|e| format!("{e:?}")),
            None => Ok((web, false)),
        }
    }

    /// The end: the trailers (or a trailers-only answer's status fields) as the frame.
    pub async fn end(&mut self, trailers: &[(String, String)]) -> Result<Bytes, String> {
        let tail = self.enc.end(trailers);
        match &mut self.dir {
            Some(d) => {
                let mut out = BytesMut::from(&d.feed(tail).await?[..]);
                out.extend_from_slice(&d.finish().await?);
                Ok(out.freeze())
            }
            None => Ok(tail),
        }
    }

    /// The protocol the client speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

/// The fields for the trailer frame: the upstream's trailers, else (a trailers-only
/// answer) the status fields of its headers, else UNKNOWN.
pub fn trailer_fields(trailers: Option<&http::HeaderMap>, head: &Headers) -> Vec<(String, String)> {
    let pairs = |h: &Headers| -> Vec<(String, String)> {
        h.iter()
            .map(|f| {
                let n = String::from_utf8_lossy(&f.name).to_ascii_lowercase();
                (n, String::from_utf8_lossy(&f.value).into_owned())
            })
            .collect()
    };
    match trailers {
        Some(t) => pairs(&h2_stream::from_header_map(t)),
        None => {
            let list = pairs(head);
            let fields = web::status_fields(list.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            match fields.is_empty() {
                false => fields,
                true => grpc::status_trailers::<&str, &str>(
                    &Status::new(grpc::status::UNKNOWN, "upstream sent no grpc-status"),
                    &[],
                ),
            }
        }
    }
}

/// Ends a client h2 stream with a hook's status: h2 trailers for gRPC, a trailer frame
/// in the body for gRPC-web (whose clients read no h2 trailers); on_end fires from it.
pub fn send_status(tx: &mut SendStream<Bytes>, call: &Call, status: u32, message: &str) {
    let _ = match call.protocol().is_web() {
        true => tx.send_data(cancel_frame(call.protocol(), status, message), true),
        false => tx.send_trailers(crate::proxy::grpc::status_trailers(status, message)),
    };
    call.end(Status::new(status, message), Vec::new());
}
