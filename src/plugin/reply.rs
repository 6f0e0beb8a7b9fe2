//! Replies a hook makes up: the tables of `action.RESPOND{...}` and
//! `action.RESPOND_GRPC{...}` turned into the [`Response`] the proxy sends instead.

use super::{lua_err, msg};
use crate::http::{Body, Headers, Request, Response, Version};
use bytes::Bytes;
use mlua::{Table, Value};

/// `status` of a reply table: integral floats pass, as Lua 5.1 has no integer type.
fn get_status(t: &Table, default: i64) -> mlua::Result<i64> {
    match t.get::<Value>("status")? {
        Value::Nil => Ok(default),
        Value::Integer(i) => Ok(i),
        Value::Number(n) if n.fract() == 0.0 => Ok(n as i64),
        other => Err(lua_err(format!(
            "status must be an integer, got {}",
            other.type_name()
        ))),
    }
}

/// A string field of a reply table, kept as bytes (bodies need not be UTF-8).
fn opt_bytes(t: &Table, key: &str) -> mlua::Result<Option<Bytes>> {
    match t.get::<Value>(key)? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(Bytes::copy_from_slice(&s.as_bytes()))),
        other => Err(lua_err(format!(
            "{key} must be a string, got {}",
            other.type_name()
        ))),
    }
}

/// The response `action.RESPOND{...}` stands for (`None`: the bare `action.RESPOND`).
pub(super) fn build_response(t: Option<&Table>) -> mlua::Result<Response> {
    let mut r = placeholder_response();
    r.status = 200;
    r.body = Body::Full(Bytes::new());
    if let Some(t) = t {
        let s = get_status(t, 200)?;
        // a 1xx cannot end an exchange: it would leave the client waiting for the answer
        r.status = u16::try_from(s)
            .ok()
            .filter(|s| (200..=999).contains(s))
            .ok_or_else(|| {
                lua_err(format!(
                    "status must be 200-999 (a final response), got {s}"
                ))
            })?;
        if let Some(h) = t.get::<Option<Table>>("headers")? {
            r.headers = msg::headers_from_table(&h)?;
        }
        if let Some(b) = opt_bytes(t, "body")? {
            r.body = Body::Full(b);
        }
        if let Some(reason) = opt_bytes(t, "reason")? {
            r.reason = String::from_utf8_lossy(&reason).into_owned();
        }
    }
    Ok(r)
}

/// `grpc-message` text as gRPC percent-encodes it, so any bytes fit a header value.
pub(super) fn percent_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The trailers-only response `action.RESPOND_GRPC{...}` stands for (status 2 unless set).
pub(super) fn build_grpc(t: Option<&Table>) -> mlua::Result<Response> {
    use base64::Engine as _;
    let mut r = placeholder_response();
    r.status = 200;
    r.version = Version::Http2;
    r.body = Body::Full(Bytes::new());
    r.headers.add("content-type", "application/grpc");
    let (status, message, details, trailers) = match t {
        Some(t) => (
            get_status(t, 2)?,
            opt_bytes(t, "message")?,
            opt_bytes(t, "details")?,
            t.get::<Option<Table>>("trailers")?,
        ),
        None => (2, None, None, None),
    };
    r.headers.add("grpc-status", status.to_string());
    if let Some(m) = message {
        r.headers.add("grpc-message", percent_encode(&m));
    }
    if let Some(d) = details {
        r.headers.add(
            "grpc-status-details-bin",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&d),
        );
    }
    if let Some(tr) = trailers {
        for h in msg::headers_from_table(&tr)?.iter() {
            r.headers.add(h.name.clone(), h.value.clone());
        }
    }
    Ok(r)
}

/// What stands in the proxy's `&mut Request` while the real one is in a slot.
pub(super) fn placeholder_request() -> Request {
    Request {
        method: Bytes::new(),
        scheme: String::new(),
        authority: String::new(),
        path: None,
        version: Version::Http11,
        headers: Headers::new(),
        body: Body::Streaming,
        trailers: None,
        timestamp_start: 0.0,
    }
}

/// What stands in the proxy's `&mut Response` while the real one is in a slot (and the
/// base of a response a hook makes up).
pub(super) fn placeholder_response() -> Response {
    Response {
        status: 0,
        reason: String::new(),
        version: Version::Http11,
        headers: Headers::new(),
        body: Body::Streaming,
        trailers: None,
        error: None,
    }
}
