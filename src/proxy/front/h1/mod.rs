//! The HTTP/1 client front: read a request head, run the exchange (request event,
//! upstream leg, response event), stream the response back, and repeat while both
//! sides keep the connection alive. A CONNECT that succeeds, or an upgrade, ends
//! HTTP on the connection: that is handed back to the connection driver.

mod grpc_web;
mod over_h2;
mod request;
mod response;
mod state;

pub use state::{H1Route, Outcome, Tunnel};

use crate::http::RequestHead;
use crate::metrics;
use crate::proto::http1::{parse_request_head, HeadError};
use crate::proxy::conn::client::{ClientConn, IDLE_READ_BUF};
use crate::proxy::exchange::log::{sent_status, AccessRecord, TunnelLog};
use crate::proxy::exchange::recording;
use crate::proxy::recycled::Recycled;
use crate::proxy::worker::Counters;
use bytes::BytesMut;
use state::{Front, Half, Next};
use std::net::Shutdown;
use tokio::sync::watch;

/// Serves HTTP/1 requests on the connection until it ends or becomes a tunnel.
pub async fn serve(c: &mut ClientConn, route: Box<H1Route>) -> Outcome {
    let mut front = Front { route };
    let mut drain = c.w.draining.subscribe();
    loop {
        if c.w.is_draining() && c.io.buf.is_empty() {
            return Outcome::Close;
        }
        let Some(head) = read_head(c, &mut drain).await else {
            return Outcome::Close;
        };
        c.requests += 1;
        Counters::bump(&c.w.counters.requests);
        // what the protocol label needs is read only when metrics are on
        let m = metrics::clock().map(|t0| (t0, head.headers.get("content-type").cloned()));
        c.io.status.set(0);
        // in a recycled block, not inline: the exchange's future is several KiB, and
        // inline every idle connection would hold it (a fresh box per request cost 2.6%
        // more instructions)
        let next = Recycled::new(|| exchange(c, &mut front, head)).await;
        if let Some((t0, ctype)) = m {
            let status = c.io.status.get();
            let sse = c.io.event_stream.replace(false);
            let proto = metrics::http_proto(false, ctype.as_deref(), status, sse);
            metrics::request(proto, sent_status(status), Some(t0));
        }
        recording::finish(&c.w, &c.info, c.io.rec.take());
        match next {
            Next::KeepAlive => {}
            Next::Close => return Outcome::Close,
            Next::Tunnel(t) => return Outcome::Tunnel(t),
        }
    }
}

/// One exchange, with its access-log line when there is an access log.
async fn exchange(c: &mut ClientConn, front: &mut Front, head: RequestHead) -> Next {
    if c.w.cfg.access_log {
        return logged_exchange(c, front, head).await;
    }
    match request::exchange(c, front, head).await {
        Half::Over(next) => next,
        Half::Sent(sent) => response::respond(c, sent).await,
    }
}

/// [`request::exchange`] and [`response::respond`] followed by its access-log line.
async fn logged_exchange(c: &mut ClientConn, front: &mut Front, head: RequestHead) -> Next {
    let scheme = front.route.intercept.as_ref().map_or("", |i| i.scheme);
    let host = head.headers.get("host").cloned().unwrap_or_default();
    let record = AccessRecord::http(
        &head.method,
        &head.target,
        head.version.as_str(),
        scheme,
        &host,
    );
    c.io.status.set(0);
    c.io.answer_error.set(None);
    let sent0 = c.io.sent.get();
    let written_before = c.io.stream.bytes_moved().1;
    let next = match request::exchange(c, front, head).await {
        Half::Over(next) => next,
        Half::Sent(sent) => response::respond(c, sent).await,
    };
    if let Next::Tunnel(_) = next {
        // one line per tunnel, when it ends, with all it carried
        c.tunnel_log = Some(TunnelLog {
            record,
            status: sent_status(c.io.status.get()),
            written_before,
        });
        return next;
    }
    let sent = c.io.sent.get() - sent0;
    let status = sent_status(c.io.status.get());
    let error = c.io.answer_error.take();
    record.finish_with(
        c.info.client_addr,
        status,
        sent,
        c.info.conn_id,
        error.as_deref(),
    );
    next
}

/// Reads one request head. None: the connection is over (EOF, timeout, bad head
/// answered, drain).
async fn read_head(c: &mut ClientConn, drain: &mut watch::Receiver<bool>) -> Option<RequestHead> {
    let t = c.w.timeouts;
    let conn = c.info.conn_id;
    let io = &mut c.io;
    let mut started = c.requests == 0 || !io.buf.is_empty();
    io.read_deadline.arm(if started { t.head } else { t.idle });
    // the error answers below are boxed: inline, their futures would make every idle
    // connection's task larger
    loop {
        if !io.buf.is_empty() {
            match parse_request_head(&io.buf, &c.w.limits) {
                Ok(Some((head, n))) => {
                    let _ = io.buf.split_to(n);
                    return Some(head);
                }
                Ok(None) => {}
                Err(e @ (HeadError::TooLarge(_) | HeadError::TooManyHeaders(_))) => {
                    let why = format!("request head rejected: {e}");
                    Box::pin(io.fail(conn, 431, &why)).await;
                    return None;
                }
                Err(e @ HeadError::VersionNotSupported(_)) => {
                    let why = format!("request refused: {e}");
                    Box::pin(io.fail(conn, 505, &why)).await;
                    return None;
                }
                Err(e) => {
                    let why = format!("bad request: {e}");
                    Box::pin(io.fail(conn, 400, &why)).await;
                    return None;
                }
            }
            if !started {
                started = true;
                io.read_deadline.arm(t.head);
            }
        }
        if io.buf.is_empty() && io.buf.capacity() > 4 * IDLE_READ_BUF {
            // a large head or body went through: wait for the next one with a small
            // buffer, not with what that one needed
            io.buf = BytesMut::with_capacity(IDLE_READ_BUF);
        } else if io.buf.capacity() - io.buf.len() < 512 {
            io.buf.reserve(if io.buf.is_empty() {
                IDLE_READ_BUF
            } else {
                8 * 1024
            });
        }
        let idle = io.buf.is_empty();
        let b = std::mem::take(&mut io.buf);
        // an empty buffer is taken only once bytes come: an idle keep-alive connection
        // then holds none
        let read = io.stream.read_when_ready(b, IDLE_READ_BUF);
        tokio::select! {
            r = io.read_deadline.limit(read) => match r {
                Ok((Ok(n), b)) if n > 0 => io.buf = b,
                Ok((Ok(_), _)) => return None,
                Ok((Err(e), _)) => {
                    tracing::debug!(conn, "client read failed: {e}");
                    return None;
                }
                Err(_) => {
                    // dropped io_uring read: shut down so it completes (see io docs)
                    if idle {
                        io.stream.shutdown(Shutdown::Both);
                    } else {
                        Box::pin(io.fail(conn, 408, "request head not received in time")).await;
                    }
                    return None;
                }
            },
            _ = drain.changed(), if idle => {
                io.stream.shutdown(Shutdown::Both);
                return None;
            }
        }
    }
}
