//! HAR 1.2 (HTTP Archive): the serde model shared by export and import, and the byte
//! and text conversions both sides must agree on. docs/flows.md, "HAR export and
//! import", says what maps to what.
//!
//! The model is lenient on input (every field defaults: Chrome, Firefox and mitmproxy
//! each leave different ones out) and writes `_luring...` fields only when they carry
//! something, so a HAR luring writes stays readable by any HAR tool.

pub mod export;
pub mod import;
#[cfg(test)]
mod tests;
pub mod text;

use serde::{Deserialize, Serialize};
use text::Wtf8;

/// One `{name, value}` pair (headers, query strings, cookies).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct NameValue {
    /// Name.
    pub name: Wtf8,
    /// Value.
    pub value: Wtf8,
    /// The name and value hold bytes that were not UTF-8, one char per byte (latin-1).
    #[serde(rename = "_luringLatin1", skip_serializing_if = "is_false")]
    pub latin1: bool,
}

/// `request.postData`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PostData {
    /// Content-Type of the body.
    pub mime_type: String,
    /// The body: text, or base64 when `encoding` says so.
    pub text: Wtf8,
    /// "base64" for a binary body (HAR 1.2 has it only on responses; luring writes it
    /// on requests too, as the issue asks, and reads it back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// A request.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Request {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: Wtf8,
    /// "HTTP/1.1", "HTTP/2"...
    pub http_version: String,
    /// Header fields in order.
    pub headers: Vec<NameValue>,
    /// Query parameters (written for viewers; import takes the URL).
    pub query_string: Vec<NameValue>,
    /// Cookies (written empty: the Cookie header holds them).
    pub cookies: Vec<NameValue>,
    /// -1: luring does not know the head's size on the wire.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub headers_size: f64,
    /// Body size in bytes (the full size, also when the body was cut).
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub body_size: f64,
    /// The body, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_data: Option<PostData>,
    /// Trailer fields (HAR has no place for them).
    #[serde(rename = "_luringTrailers", skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<NameValue>,
    /// Only the first bytes of the body were recorded.
    #[serde(rename = "_luringBodyCut", skip_serializing_if = "is_false")]
    pub body_cut: bool,
    /// The request target when the URL cannot say it (a path not starting with '/').
    #[serde(rename = "_luringTarget", skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// The request target's parts, for requests whose URL would not round-trip.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct Target {
    /// Scheme ("" for CONNECT).
    pub scheme: String,
    /// host[:port].
    pub authority: String,
    /// Path as sent.
    pub path: String,
}

/// `response.content`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Content {
    /// Size of the decoded body.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub size: f64,
    /// Bytes saved by content-encoding (decoded size minus wire size).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_num")]
    pub compression: Option<f64>,
    /// Content-Type.
    pub mime_type: String,
    /// The decoded body as text, or base64 when `encoding` says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Wtf8>,
    /// "base64" for binary bodies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The body as it was on the wire (still content-encoded), base64; written when
    /// `text` holds the decoded body, so import gets the exact wire bytes back.
    #[serde(rename = "_luringWire", skip_serializing_if = "Option::is_none")]
    pub wire: Option<String>,
    /// `text` is the wire body, still content-encoded (luring could not decode it).
    #[serde(rename = "_luringEncoded", skip_serializing_if = "is_false")]
    pub encoded: bool,
}

/// A response (status 0 with no headers when there was none).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Response {
    /// Status code; 0 when no response came.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub status: f64,
    /// Reason phrase.
    pub status_text: String,
    /// "HTTP/1.1", "HTTP/2"...
    pub http_version: String,
    /// Header fields in order.
    pub headers: Vec<NameValue>,
    /// Cookies (written empty: the Set-Cookie headers hold them).
    pub cookies: Vec<NameValue>,
    /// The body.
    pub content: Content,
    /// The Location header.
    #[serde(rename = "redirectURL")]
    pub redirect_url: Wtf8,
    /// -1: unknown.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub headers_size: f64,
    /// Body size on the wire (the full size, also when the body was cut).
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub body_size: f64,
    /// Why the exchange failed (Chrome's and mitmproxy's field).
    #[serde(rename = "_error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Trailer fields.
    #[serde(rename = "_luringTrailers", skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<NameValue>,
    /// Only the first bytes of the body were recorded.
    #[serde(rename = "_luringBodyCut", skip_serializing_if = "is_false")]
    pub body_cut: bool,
    /// luring made this response itself.
    #[serde(rename = "_luringByProxy", skip_serializing_if = "is_false")]
    pub by_proxy: bool,
}

/// `timings`, milliseconds; -1 where unknown.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct Timings {
    /// Waiting for a connection.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub blocked: f64,
    /// DNS resolution.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub dns: f64,
    /// TCP connect.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub connect: f64,
    /// Sending the request.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub send: f64,
    /// Waiting for the response head.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub wait: f64,
    /// Receiving the response body.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub receive: f64,
    /// TLS handshake.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub ssl: f64,
}

/// One message of `_webSocketMessages`, Chrome's shape.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct WsMessage {
    /// "send" (from the client) or "receive".
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix time in seconds.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub time: f64,
    /// WebSocket opcode.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub opcode: f64,
    /// Text for opcode 1, base64 otherwise.
    pub data: Wtf8,
    /// The exact timestamp, Unix nanoseconds (`time` is a float).
    #[serde(rename = "_luringTs", skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// The payload's full size when only part of it was recorded.
    #[serde(rename = "_luringSize", skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// "base64": a text message whose bytes are not UTF-8 (cut mid-character).
    #[serde(rename = "_luringEncoding", skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// One `log.entries` element.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Entry {
    /// ISO 8601 start time.
    pub started_date_time: String,
    /// Total time in milliseconds.
    #[serde(serialize_with = "num", deserialize_with = "lenient")]
    pub time: f64,
    /// The request.
    pub request: Request,
    /// The response.
    pub response: Response,
    /// Always empty.
    pub cache: Empty,
    /// Timings.
    pub timings: Timings,
    /// The upstream's IP address.
    #[serde(rename = "serverIPAddress", skip_serializing_if = "Option::is_none")]
    pub server_ip_address: Option<String>,
    /// The connection id, as a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// "websocket" for WebSocket flows (Chrome's field).
    #[serde(rename = "_resourceType", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// WebSocket messages (Chrome's field).
    #[serde(rename = "_webSocketMessages", skip_serializing_if = "Option::is_none")]
    pub websocket: Option<Vec<WsMessage>>,
    /// luring's flow id (the `_luring...` fields hold what HAR has no field for).
    #[serde(rename = "_luringFlowId", skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u64>,
    /// Client connection id.
    #[serde(rename = "_luringConn", skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// HTTP/2 stream id.
    #[serde(rename = "_luringStream", skip_serializing_if = "Option::is_none")]
    pub stream: Option<u32>,
    /// Client address.
    #[serde(rename = "_luringClient", skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Upstream address with port.
    #[serde(rename = "_luringServer", skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Proxy mode.
    #[serde(rename = "_luringMode", skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Client-side TLS facts.
    #[serde(rename = "_luringTls", skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::flows::record::TlsRec>,
    /// The four timestamps, Unix nanoseconds (startedDateTime has milliseconds).
    #[serde(rename = "_luringTimes", skip_serializing_if = "Option::is_none")]
    pub times: Option<crate::flows::record::Times>,
    /// The flow's error text.
    #[serde(rename = "_luringError", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// WebSocket messages seen but not recorded.
    #[serde(
        rename = "_luringWebSocketDropped",
        skip_serializing_if = "Option::is_none"
    )]
    pub websocket_dropped: Option<u64>,
    /// Plugins' notes, in order.
    #[serde(rename = "_luringNotes", skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<(String, String)>>,
}

/// An object whose fields are ignored (`cache`): written as `{}`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Empty {}

/// The `log.creator` object.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct Creator {
    /// "luring", "WebInspector" (Chrome), "Firefox", "mitmproxy"...
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Whole numbers as JSON integers (`200`, not `200.0`): some readers want integers.
fn num<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// Reads a number leniently: some writers put null or a numeric string where HAR
/// says number; null reads as 0 (unknown).
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_unit<E>(self) -> Result<f64, E> {
            Ok(0.0)
        }
        fn visit_none<E>(self) -> Result<f64, E> {
            Ok(0.0)
        }
        fn visit_str<E>(self, v: &str) -> Result<f64, E> {
            Ok(v.trim().parse().unwrap_or(0.0))
        }
    }
    d.deserialize_any(V)
}

fn opt_num<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => num(v, s),
        None => s.serialize_none(),
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
