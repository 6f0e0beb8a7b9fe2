//! SOCKS5 mode (`--mode socks5`): the handshake over the client socket,
//! socks5.on_connect, the connect and its reply; then the connection goes on as an
//! accepted CONNECT tunnel would (TLS interception, HTTP inside the tunnel, or a raw
//! relay).

use super::{ClientConn, Layer};
use crate::io::Stream;
use crate::plugin::{Event, Socks5Info, Step};
use crate::proto::socks5::{self as proto, BadRequest, Parsed, Reply};
use crate::proxy::exchange::log::{AccessRecord, TunnelLog};
use crate::proxy::front::h1::Tunnel;
use crate::proxy::hook_io;
use crate::proxy::upstream::{self, ConnectError};
use crate::proxy::worker::Worker;
use bytes::{Buf, Bytes, BytesMut};
use std::net::{Shutdown, SocketAddr};

/// The handshake, then the tunnel to the requested target; one access-log line per
/// tunnel, as for CONNECT, whose status is the SOCKS5 reply code.
pub(super) async fn serve(c: &mut ClientConn) -> Layer {
    let accepted = match handshake(&c.w, &c.io.stream, &mut c.io.buf).await {
        Ok(a) => a,
        Err(why) => {
            tracing::debug!(conn = c.info.conn_id, "{why}");
            return Layer::Done;
        }
    };
    let record = AccessRecord::start(
        format!("SOCKS5 CONNECT {}", accepted.req.target()),
        format!("user={}", accepted.username.as_deref().unwrap_or("-")),
    );
    let written_before = c.io.stream.bytes_moved().1;
    let t0 = crate::metrics::clock();
    let (next, reply) = connect(c, &accepted).await;
    // SOCKS5 reply codes are not HTTP statuses: success counts as 2xx, a refusal as 5xx
    let class = reply
        .as_ref()
        .map(|r| if r.code() == 0 { 200 } else { 502 });
    crate::metrics::request(crate::metrics::Proto::Socks5, class, t0);
    if c.w.cfg.access_log {
        // written when the tunnel ends, with all it carried
        c.tunnel_log = Some(TunnelLog {
            record,
            status: reply.map(|r| u16::from(r.code())),
            written_before,
        });
    }
    next
}

/// socks5.on_connect, the connect and its reply; also the reply sent (None: dropped by
/// a hook, or the client left).
async fn connect(c: &mut ClientConn, accepted: &Accepted) -> (Layer, Option<Reply>) {
    let engine = c.w.engine();
    if let Some(e) = engine.filter(|e| e.has(Event::Socks5Connect)) {
        let dict = Socks5Info {
            target_addr: accepted.req.target(),
            username: accepted.username.clone(),
        };
        let step = e.socks5_connect(&c.info, &dict);
        let step = hook_io::settle(&c.w, &e, step, |s| {
            e.resume_event(s, &c.info, None, &mut ())
        })
        .await;
        if let Step::Drop = step {
            tracing::debug!(conn = c.info.conn_id, "dropped by socks5.on_connect");
            c.io.stream.shutdown(Shutdown::Both);
            return (Layer::Done, None);
        }
    }
    let host = accepted.req.host_text();
    let port = accepted.req.port;
    let up = match upstream::dial(&c.w, &host, port).await {
        Ok(u) => u,
        Err(e) => {
            let target = accepted.req.target();
            tracing::info!(conn = c.info.conn_id, "SOCKS5 {target}: {}", e.text());
            let code = reply_for(&e);
            c.io.write(Bytes::from(proto::reply(code, UNSPECIFIED)))
                .await;
            return (Layer::Done, Some(code));
        }
    };
    c.info.server_addr = Some(up.addr);
    let ok = proto::reply(Reply::Succeeded, UNSPECIFIED);
    if !c.io.write(Bytes::from(ok)).await {
        up.stream.shutdown(Shutdown::Both);
        return (Layer::Done, None);
    }
    let tunnel = Tunnel {
        authority: crate::http::authority_of(&host, port),
        host,
        port,
        up,
        by_sni: false,
    };
    (Layer::Tunnel(Box::new(tunnel)), Some(Reply::Succeeded))
}

/// A request the handshake accepted.
struct Accepted {
    /// Where the client wants to go.
    pub req: proto::Request,
    /// The username, when the client authenticated.
    pub username: Option<String>,
}

/// Why the handshake ended without a request; logged at debug level.
type Refused = String;

/// The address the SOCKS5 replies carry when there is no bound address to report.
const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Runs the method negotiation, the optional username/password check (`--proxy-auth`)
/// and reads the request, all within the head timeout. Bytes the client sent after its
/// request stay in `buf`.
async fn handshake(w: &Worker, stream: &Stream, buf: &mut BytesMut) -> Result<Accepted, Refused> {
    let t = w.timeouts.head;
    match tokio::time::timeout(t, negotiate(w, stream, buf)).await {
        Ok(r) => r,
        Err(_) => Err(format!("SOCKS5 handshake not finished within {t:?}")),
    }
}

async fn negotiate(w: &Worker, stream: &Stream, buf: &mut BytesMut) -> Result<Accepted, Refused> {
    let methods = read_msg(stream, buf, proto::parse_greeting)
        .await?
        .map_err(|m| m.0.to_string())?;
    let auth = w.cfg.proxy_auth.as_deref();
    let method = match auth {
        Some(_) if methods.contains(&proto::USER_PASS) => proto::USER_PASS,
        None if methods.contains(&proto::NO_AUTH) => proto::NO_AUTH,
        _ => proto::NO_ACCEPTABLE,
    };
    send(stream, &proto::method_reply(method)).await?;
    if method == proto::NO_ACCEPTABLE {
        return Err(match auth {
            Some(_) => "SOCKS5 client does not offer username/password (--proxy-auth is set)",
            None => "SOCKS5 client offers no method without authentication",
        }
        .into());
    }
    let mut username = None;
    if let Some(expected) = auth {
        let c = read_msg(stream, buf, proto::parse_credentials)
            .await?
            .map_err(|m| m.0.to_string())?;
        let ok = credentials_match(expected, &c.username, &c.password);
        send(stream, &proto::auth_reply(ok)).await?;
        let name = String::from_utf8_lossy(&c.username).into_owned();
        if !ok {
            return Err(format!("SOCKS5 authentication failed for user '{name}'"));
        }
        username = Some(name);
    }
    let req = match read_msg(stream, buf, proto::parse_request).await? {
        Ok(r) => r,
        Err(BadRequest::AddressType) => {
            send(stream, &proto::reply(Reply::AddressType, UNSPECIFIED)).await?;
            return Err("SOCKS5 request with an unknown address type".into());
        }
        Err(BadRequest::Malformed(m)) => {
            send(stream, &proto::reply(Reply::GeneralFailure, UNSPECIFIED)).await?;
            return Err(format!("bad SOCKS5 request: {}", m.0));
        }
    };
    if req.command != proto::CONNECT {
        send(
            stream,
            &proto::reply(Reply::CommandNotSupported, UNSPECIFIED),
        )
        .await?;
        return Err(format!(
            "SOCKS5 command {} is not supported (CONNECT only)",
            req.command
        ));
    }
    Ok(Accepted { req, username })
}

/// `USER:PASS` of `--proxy-auth` against what the client sent.
pub(crate) fn credentials_match(expected: &str, user: &[u8], pass: &[u8]) -> bool {
    let (u, p) = expected.split_once(':').unwrap_or((expected, ""));
    u.as_bytes() == user && p.as_bytes() == pass
}

/// Reads until `parse` has a whole message; the outer error is the connection's end.
async fn read_msg<T, E>(
    stream: &Stream,
    buf: &mut BytesMut,
    parse: impl Fn(&[u8]) -> Result<Parsed<T>, E>,
) -> Result<Result<T, E>, Refused> {
    loop {
        match parse(buf) {
            Ok(Parsed::Done(v, n)) => {
                buf.advance(n);
                return Ok(Ok(v));
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => return Ok(Err(e)),
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        let (res, b) = stream.read(std::mem::take(buf)).await;
        *buf = b;
        match res {
            Ok(n) if n > 0 => {}
            Ok(_) => return Err("client closed during the SOCKS5 handshake".into()),
            Err(e) => return Err(format!("SOCKS5 handshake: {e}")),
        }
    }
}

async fn send(stream: &Stream, b: &[u8]) -> Result<(), Refused> {
    stream
        .write_all(Bytes::copy_from_slice(b))
        .await
        .map_err(|e| format!("SOCKS5 handshake: {e}"))
}

/// The reply for an upstream that could not be reached.
fn reply_for(e: &ConnectError) -> Reply {
    match e {
        ConnectError::Resolve(_) => Reply::HostUnreachable,
        ConnectError::Timeout(_) => Reply::TtlExpired,
        // `upstream::describe` words a refused connect exactly so
        ConnectError::Connect(t) if t.ends_with("connection refused") => Reply::ConnectionRefused,
        ConnectError::Connect(_) | ConnectError::Tls(_) => Reply::GeneralFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_compared_whole() {
        assert!(credentials_match("bob:pw", b"bob", b"pw"));
        assert!(credentials_match("bob:p:w", b"bob", b"p:w"));
        assert!(!credentials_match("bob:pw", b"bob", b"pw2"));
        assert!(!credentials_match("bob:pw", b"bo", b"pw"));
        assert!(!credentials_match("bob:pw", b"", b""));
    }

    #[test]
    fn connect_errors_map_to_replies() {
        let refused = ConnectError::Connect(
            "cannot connect to upstream 127.0.0.1:1: connection refused".into(),
        );
        assert_eq!(reply_for(&refused), Reply::ConnectionRefused);
        assert_eq!(
            reply_for(&ConnectError::Resolve("x".into())),
            Reply::HostUnreachable
        );
        assert_eq!(
            reply_for(&ConnectError::Timeout("x".into())),
            Reply::TtlExpired
        );
    }
}
