//! A recorded request made ready once, before a run: its HTTP/1.1 wire bytes, its
//! HTTP/2 parts, and the check of its response body.

use crate::flows::record::RequestRec;
use bytes::Bytes;

/// A recorded request ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The request's bytes on the wire.
    pub wire: Bytes,
    /// It is a HEAD request (the response has no body).
    pub head: bool,
    /// The request as HTTP/2 parts (h2c and h2 targets).
    pub h2: Option<H2Request>,
    /// The connection kind it goes on: an index in the target's `Dialer::endpoints`.
    pub endpoint: u32,
    /// The recorded response body, when bodies are checked (`--check-bodies`).
    pub expect: Option<Bytes>,
    /// A WebSocket upgrade: the recorded conversation that follows its 101.
    pub ws: Option<std::rc::Rc<super::ws_client::WsPlan>>,
}

/// Compares a body as it arrives with the recorded one.
pub struct BodyCheck<'a> {
    expect: Option<&'a [u8]>,
    at: usize,
    same: bool,
}

impl<'a> BodyCheck<'a> {
    /// A check against `expect` (None: anything goes).
    pub fn new(expect: Option<&'a [u8]>) -> Self {
        BodyCheck {
            expect,
            at: 0,
            same: true,
        }
    }

    /// The next part of the body.
    pub fn feed(&mut self, part: &[u8]) {
        if let Some(e) = self.expect {
            let end = self.at + part.len();
            self.same &= e.get(self.at..end) == Some(part);
            self.at = end;
        }
    }

    /// The whole recorded body came, and nothing else.
    pub fn ok(&self) -> bool {
        self.expect.is_none_or(|e| self.same && self.at == e.len())
    }
}

/// A recorded request as HTTP/2 parts, made once.
#[derive(Debug, Clone)]
pub struct H2Request {
    pub(super) method: http::Method,
    pub(super) uri: http::Uri,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Bytes,
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
