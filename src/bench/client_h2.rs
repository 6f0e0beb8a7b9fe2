//! The driver's HTTP/2 over cleartext (h2c, prior knowledge): one h2 connection
//! shared by `--streams` workers, each sending one request at a time on it.

use crate::flows::record::RequestRec;
use bytes::Bytes;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::net::TcpStream;

/// A recorded request as HTTP/2 parts, made once.
#[derive(Debug, Clone)]
pub struct H2Request {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
}

/// Fields HTTP/2 forbids or makes anew (connection-specific, framing, Host: the
/// authority goes in :authority).
const DROP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
];

impl H2Request {
    /// The parts of `req` (the recorded authority becomes :authority); None when the
    /// method or URI cannot be made.
    pub fn new(req: &RequestRec) -> Option<H2Request> {
        let scheme = if req.scheme.is_empty() {
            "http"
        } else {
            &req.scheme
        };
        let path = if req.path.is_empty() { "/" } else { &req.path };
        let uri = format!("{scheme}://{}{path}", req.authority).parse().ok()?;
        let mut headers = http::HeaderMap::new();
        for (n, v) in &req.headers {
            if DROP.iter().any(|d| n.eq_ignore_ascii_case(d.as_bytes())) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n),
                http::HeaderValue::from_bytes(v),
            ) {
                headers.append(n, v);
            }
        }
        Some(H2Request {
            method: req.method.parse().ok()?,
            uri,
            headers,
            body: Bytes::copy_from_slice(&req.body.data),
        })
    }
}

/// One h2 connection, made on first use and dropped on error; shared by its streams.
pub type Slot = Rc<RefCell<Option<h2::client::SendRequest<Bytes>>>>;

async fn connect(addr: SocketAddr) -> Result<h2::client::SendRequest<Bytes>, &'static str> {
    let s = TcpStream::connect(addr).await.map_err(|_| "connect")?;
    let _ = s.set_nodelay(true);
    let (send, conn) = h2::client::handshake(s).await.map_err(|_| "connect")?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Sends `req` on the slot's connection (made if needed); the status and body length.
pub async fn exchange(
    slot: &Slot,
    addr: SocketAddr,
    req: &H2Request,
) -> Result<(u16, u64), &'static str> {
    let existing = slot.borrow().clone();
    let send = match existing {
        Some(s) => s,
        None => {
            let s = connect(addr).await?;
            *slot.borrow_mut() = Some(s.clone());
            s
        }
    };
    let r = once(send, req).await;
    if r.is_err() {
        slot.borrow_mut().take();
    }
    r
}

async fn once(
    send: h2::client::SendRequest<Bytes>,
    req: &H2Request,
) -> Result<(u16, u64), &'static str> {
    let mut send = send.ready().await.map_err(|_| "io")?;
    let mut r = http::Request::new(());
    *r.method_mut() = req.method.clone();
    *r.uri_mut() = req.uri.clone();
    *r.headers_mut() = req.headers.clone();
    let (resp, mut stream) = send
        .send_request(r, req.body.is_empty())
        .map_err(|_| "io")?;
    if !req.body.is_empty() {
        stream.send_data(req.body.clone(), true).map_err(|_| "io")?;
    }
    let resp = resp.await.map_err(|_| "io")?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(chunk) = body.data().await {
        let c = chunk.map_err(|_| "io")?;
        n += c.len() as u64;
        let _ = body.flow_control().release_capacity(c.len());
    }
    Ok((status, n))
}
