//! The replay origin's HTTP/2, over cleartext (h2c, prior knowledge) or TLS (h2 by
//! ALPN): the h2 crate serves each stream its recorded response from the recorded
//! fields, with trailers.

use super::matching::RequestView;
use super::origin::Origin;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `buf` opens with the HTTP/2 client preface: None while too short to say.
pub fn preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// A stream that first yields bytes already read from it (the preface and more).
pub struct Prefixed<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, whose first bytes `pre` were already read off it.
    pub fn new(pre: Vec<u8>, inner: S) -> Self {
        Prefixed { pre, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let p = self.pos;
            buf.put_slice(&self.pre[p..p + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection of the origin can be: TCP, or TLS over it.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Serves an HTTP/2 connection (over TLS: `tls`) whose first bytes, `read`, were
/// already taken off it.
pub async fn serve(origin: Arc<Origin>, s: impl Io, read: Vec<u8>, tls: bool) {
    let io = Prefixed {
        pre: read,
        pos: 0,
        inner: s,
    };
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        origin.counters.h2.fetch_add(1, Relaxed);
        if tls {
            origin.counters.tls.fetch_add(1, Relaxed);
        }
        tokio::spawn(stream(origin.clone(), req, respond));
    }
}

/// Header fields HTTP/2 forbids (connection-specific), dropped from recorded HTTP/1 heads.
const H1_ONLY: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

fn header_map(fields: &[crate::flows::record::Field]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (n, v) in fields {
        if H1_ONLY.iter().any(|h| n.eq_ignore_ascii_case(h.as_bytes())) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n),
            http::HeaderValue::from_bytes(v),
        ) {
            m.append(n, v);
        }
    }
    m
}

async fn stream(
    origin: Arc<Origin>,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(c) = chunk else { return };
        let _ = body.flow_control().release_capacity(c.len());
        data.extend_from_slice(&c);
    }
    let headers: Vec<(&[u8], &[u8])> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
        .collect();
    let authority = parts.uri.authority().map_or("", |a| a.as_str());
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let view = RequestView {
        method: parts.method.as_str(),
        authority,
        target,
        headers: &headers,
        body: &data,
    };
    let (status, fields, body, trailers) = match origin.lookup(&view) {
        Ok(i) => {
            let d = origin.delay(i);
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            let r = &origin.recorded[i];
            let body = Bytes::copy_from_slice(&r.body.data);
            (
                r.status,
                header_map(&r.headers),
                body,
                header_map(&r.trailers),
            )
        }
        Err(what) => {
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&what) {
                h.insert("x-luring-bench-unmatched", v);
            }
            let body = Bytes::from(format!("{what}\n"));
            (origin.unmatched_status(), h, body, http::HeaderMap::new())
        }
    };
    let mut resp = http::Response::new(());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    *resp.headers_mut() = fields;
    let head_only = parts.method == http::Method::HEAD;
    let empty = head_only || (body.is_empty() && trailers.is_empty());
    let Ok(mut send) = respond.send_response(resp, empty) else {
        return;
    };
    if empty {
        return;
    }
    // h2 queues the data and sends it as the peer's flow-control window allows
    if send.send_data(body, trailers.is_empty()).is_ok() && !trailers.is_empty() {
        let _ = send.send_trailers(trailers);
    }
}
