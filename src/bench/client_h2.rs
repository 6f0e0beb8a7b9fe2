//! The driver's HTTP/2, over cleartext (h2c, prior knowledge) or TLS (h2 by ALPN): one
//! h2 connection per endpoint shared by `--streams` workers, each sending one request
//! at a time on it.

use super::dial::Dialer;
use super::prepared::{BodyCheck, H2Request, Prepared};
use bytes::Bytes;
use std::cell::RefCell;
use std::rc::Rc;

/// The h2 connections of one pool slot, by endpoint, made on first use and dropped
/// on error; shared by the slot's streams.
pub type Slot = Rc<RefCell<Vec<(u32, h2::client::SendRequest<Bytes>)>>>;

async fn connect(dialer: &Dialer, ep: u32) -> Result<h2::client::SendRequest<Bytes>, &'static str> {
    let c = dialer.dial(ep).await?;
    if dialer.endpoints[ep as usize].tls.is_some() && !c.is_h2() {
        return Err("alpn");
    }
    let (send, conn) = h2::client::handshake(c).await.map_err(|_| "connect")?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Drops the slot's connection of endpoint `ep` (after an error or a timeout).
pub fn forget(slot: &Slot, ep: u32) {
    slot.borrow_mut().retain(|(e, _)| *e != ep);
}

/// Sends `r2` (the HTTP/2 form of `req`) on the slot's connection of its endpoint
/// (made if needed); the status, the body length, and whether the body is the
/// recorded one.
pub async fn exchange(
    slot: &Slot,
    dialer: &Dialer,
    req: &Prepared,
    r2: &H2Request,
) -> Result<(u16, u64, bool), &'static str> {
    let ep = req.endpoint;
    let existing = slot
        .borrow()
        .iter()
        .find(|(e, _)| *e == ep)
        .map(|(_, s)| s.clone());
    let send = match existing {
        Some(s) => s,
        None => {
            let s = connect(dialer, ep).await?;
            slot.borrow_mut().push((ep, s.clone()));
            s
        }
    };
    let r = once(send, r2, req.expect.as_deref()).await;
    if r.is_err() {
        forget(slot, ep);
    }
    r
}

async fn once(
    send: h2::client::SendRequest<Bytes>,
    req: &H2Request,
    expect: Option<&[u8]>,
) -> Result<(u16, u64, bool), &'static str> {
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
    let mut check = BodyCheck::new(expect);
    let mut n = 0u64;
    while let Some(chunk) = body.data().await {
        let c = chunk.map_err(|_| "io")?;
        n += c.len() as u64;
        check.feed(&c);
        let _ = body.flow_control().release_capacity(c.len());
    }
    Ok((status, n, check.ok()))
}
