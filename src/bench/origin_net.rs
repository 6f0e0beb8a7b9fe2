//! The replay origin's sockets: the SO_REUSEPORT listeners, one current-thread runtime
//! per thread, and each connection (HTTP/1.1 with pipelining, h2c by its preface,
//! WebSocket replay; with `--tls`, a connection that opens with a TLS handshake gets
//! TLS first, then h2 or HTTP/1.1 as ALPN chose).

use super::h1::parse_request;
use super::origin::Origin;
use super::origin_tls::OriginTls;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use super::origin_h2::Io;

/// Plays the recorded WebSocket conversation of response `i`; `rest` is what the
/// client sent after its upgrade request.
async fn ws_session(origin: &Origin, mut s: impl Io, rest: &[u8], i: usize) {
    use crate::proto::ws;
    let mut script = super::ws_replay::WsScript::new(origin.ws[i].clone());
    let dec = ws::FrameDecoder::new(64 << 20);
    let mut asm = ws::Assembler::new(64 << 20);
    let mut inb = bytes::BytesMut::from(rest);
    let mut out = bytes::BytesMut::new();
    let mut done = script.due(&mut out);
    loop {
        while !done {
            let msg = match dec.decode(&mut inb).map(|f| f.map(|f| asm.push(f))) {
                Ok(Some(Ok(Some(m)))) => m,
                Ok(Some(Ok(None))) => continue,
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => return,
            };
            let reply = |op, payload| ws::Frame {
                fin: true,
                rsv1: false,
                opcode: op,
                mask: None,
                payload,
            };
            match msg.opcode {
                ws::CLOSE => {
                    ws::encode(&reply(ws::CLOSE, msg.payload), &mut out);
                    done = true;
                }
                ws::PING => ws::encode(&reply(ws::PONG, msg.payload), &mut out),
                ws::PONG => {}
                _ => done = script.on_client(&mut out),
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
                return;
            }
            out.clear();
        }
        if done {
            return;
        }
        match s.read_buf(&mut inb).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Binds `n` SO_REUSEPORT sockets on `addr` (the first one picks the port when 0).
pub fn bind(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, String> {
    let mut addr = addr;
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| e.to_string())?;
        let _ = s.set_reuse_address(true);
        s.set_reuse_port(true).map_err(|e| e.to_string())?;
        s.bind(&SockAddr::from(addr))
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        s.listen(1024).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr().map_err(|e| e.to_string())?;
        out.push(l);
    }
    Ok(out)
}

/// Serves on `listeners`, one thread each (TLS too with `tls`); returns once all
/// threads are started.
pub fn start(
    origin: Arc<Origin>,
    listeners: Vec<std::net::TcpListener>,
    tls: Option<Arc<OriginTls>>,
) -> Result<(), String> {
    for (i, l) in listeners.into_iter().enumerate() {
        let o = origin.clone();
        let tls = tls.clone();
        std::thread::Builder::new()
            .name(format!("origin-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(accept_loop(o, l, tls));
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn accept_loop(origin: Arc<Origin>, l: std::net::TcpListener, tls: Option<Arc<OriginTls>>) {
    let Ok(l) = tokio::net::TcpListener::from_std(l) else {
        return;
    };
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                tokio::spawn(serve_tcp(origin.clone(), s, tls.clone()));
            }
            // out of fds or similar: back off instead of spinning
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// Longest a TLS client may take to open and finish its handshake.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// A CONNECT the origin answered: the connection, the authority asked for, and what
/// the client sent after its request.
struct Tunnel<S> {
    s: S,
    authority: String,
    rest: Vec<u8>,
}

/// A TCP connection: with `--tls`, TLS when it opens with a handshake record; else
/// plain HTTP/1.1 or h2c, where a CONNECT opens a tunnel whose content is served the
/// same way (TLS by its first byte, a leaf for the name asked for). So the origin can
/// stand in for the whole internet behind a proxy chained to it.
async fn serve_tcp(origin: Arc<Origin>, s: tokio::net::TcpStream, tls: Option<Arc<OriginTls>>) {
    if let Some(t) = &tls {
        let mut first = [0u8; 1];
        let peek = tokio::time::timeout(HANDSHAKE, s.peek(&mut first)).await;
        if !matches!(peek, Ok(Ok(1))) {
            return;
        }
        if super::origin_tls::is_tls(first[0]) {
            let Ok(local) = s.local_addr() else { return };
            return serve_tls(origin, s, t, &local.ip().to_string()).await;
        }
    }
    let Some(Tunnel {
        mut s,
        authority,
        mut rest,
    }) = serve(origin.clone(), s, false, true).await
    else {
        return;
    };
    if rest.is_empty() {
        rest.reserve(4096);
        match tokio::time::timeout(HANDSHAKE, s.read_buf(&mut rest)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
    let first = rest[0];
    let io = super::origin_h2::Prefixed::new(rest, s);
    match &tls {
        Some(t) if super::origin_tls::is_tls(first) => {
            let host = super::dial::host_of(&authority).to_string();
            serve_tls(origin, io, t, &host).await
        }
        _ => {
            serve(origin, io, false, false).await;
        }
    }
}

/// TLS on `s` (`fallback`: the name of the leaf for a client without SNI), then h2 or
/// HTTP/1.1 as ALPN chose.
async fn serve_tls(origin: Arc<Origin>, s: impl Io, tls: &OriginTls, fallback: &str) {
    let acc = tls.acceptor(fallback);
    let Ok(Ok(t)) = tokio::time::timeout(HANDSHAKE, acc.accept(s)).await else {
        return;
    };
    if t.get_ref().1.alpn_protocol() == Some(b"h2") {
        super::origin_h2::serve(origin, t, Vec::new(), true).await
    } else {
        serve(origin, t, true, false).await;
    }
}

/// One connection: every complete request in the buffer is answered (pipelining
/// works), the answers go out in one write. With `tunnels`, a CONNECT is answered 200
/// and the connection handed back for what it carries.
async fn serve<S: Io>(
    origin: Arc<Origin>,
    mut s: S,
    tls: bool,
    tunnels: bool,
) -> Option<Tunnel<S>> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut start = 0;
    let mut out = Vec::with_capacity(16 * 1024);
    loop {
        let mut close = false;
        let mut delay = std::time::Duration::ZERO;
        // h2c with prior knowledge: the client preface instead of a request
        let h2 = super::origin_h2::preface(&buf);
        if h2 == Some(true) {
            super::origin_h2::serve(origin, s, buf, tls).await;
            return None;
        }
        while h2 == Some(false) {
            match parse_request(&buf[start..]) {
                Ok(Some((req, used))) if tunnels && req.method == "CONNECT" => {
                    let authority = req.target.to_string();
                    start += used;
                    out.extend_from_slice(b"HTTP/1.1 200 Connection established\r\n\r\n");
                    if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
                        return None;
                    }
                    let rest = buf[start..].to_vec();
                    return Some(Tunnel { s, authority, rest });
                }
                Ok(Some((req, used))) => {
                    if tls {
                        origin.counters.tls.fetch_add(1, Relaxed);
                    }
                    let ws = origin.answer_delayed(&req, &mut out, &mut delay);
                    close = req.close;
                    start += used;
                    if let Some(i) = ws {
                        if s.write_all(&out).await.is_ok() && s.flush().await.is_ok() {
                            ws_session(&origin, s, &buf[start..], i).await;
                        }
                        return None;
                    }
                    if close {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    origin.counters.bad.fetch_add(1, Relaxed);
                    let msg = format!("bad request: {}\n", e.0);
                    let head = format!(
                        "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                        msg.len()
                    );
                    out.extend_from_slice(head.as_bytes());
                    out.extend_from_slice(msg.as_bytes());
                    close = true;
                    break;
                }
            }
        }
        buf.drain(..start);
        start = 0;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !out.is_empty() {
            // TLS holds the records until flushed; TCP's flush does nothing
            if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
                return None;
            }
            out.clear();
        }
        if close {
            let _ = s.shutdown().await;
            return None;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
