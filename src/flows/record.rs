//! What a flow file holds: one record per HTTP exchange (with its WebSocket messages),
//! per opaque tunnel, plus the file's metadata and the recorder's drop counts.
//!
//! Records are MessagePack maps keyed by field name, and every struct takes defaults
//! for missing fields: a newer luring may add fields and an older reader skips them
//! (docs/flows.md, "Evolving the format").

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// One header field as raw bytes: name (with its case as seen) and value.
pub type Field = (ByteBuf, ByteBuf);

/// Makes a header field from anything byte-like.
pub fn field(name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Field {
    (
        ByteBuf::from(name.as_ref().to_vec()),
        ByteBuf::from(value.as_ref().to_vec()),
    )
}

/// The first record of every file: who wrote it and how.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct Meta {
    /// The writer, e.g. "luring 0.1.0" or "luring flows import (HAR)".
    pub writer: String,
    /// When the file was started, Unix nanoseconds.
    pub started_ns: u64,
    /// Header names whose values were replaced by "[redacted]".
    pub redacted: Vec<String>,
    /// Largest body kept per message, in bytes.
    pub max_body: u64,
}

/// A message body as it was on the wire: transfer framing removed, content-encoding
/// kept, cut at the recorder's limit.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct BodyRec {
    /// The bytes kept (all of them unless `cut`).
    pub data: ByteBuf,
    /// The body's full size in bytes, kept or not.
    pub size: u64,
    /// Only the first `data.len()` bytes were kept.
    pub cut: bool,
}

/// A request as the client sent it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct RequestRec {
    /// Method token.
    pub method: String,
    /// "http" or "https" ("" for CONNECT).
    pub scheme: String,
    /// host[:port] the request was for.
    pub authority: String,
    /// Path with query, as sent ("" for CONNECT).
    pub path: String,
    /// "HTTP/1.0", "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
    /// Header fields in wire order with their case (HTTP/2: lower case, no pseudo-headers).
    pub headers: Vec<Field>,
    /// The body.
    pub body: BodyRec,
    /// Trailer fields, when the body had any.
    pub trailers: Vec<Field>,
}

/// A response as the upstream sent it, or as luring made it (`by_proxy`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct ResponseRec {
    /// Status code.
    pub status: u16,
    /// Reason phrase (HTTP/1), "" on HTTP/2.
    pub reason: String,
    /// "HTTP/1.0", "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
    /// Header fields in wire order.
    pub headers: Vec<Field>,
    /// The body.
    pub body: BodyRec,
    /// Trailer fields.
    pub trailers: Vec<Field>,
    /// luring (a plugin's RESPOND, or an error answer) made this response; no upstream did.
    pub by_proxy: bool,
}

/// TLS facts of one side of a connection.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct TlsRec {
    /// Server name asked for.
    pub sni: String,
    /// Protocol agreed by ALPN ("" when none).
    pub alpn: String,
    /// "TLSv1.2" or "TLSv1.3".
    pub version: String,
    /// The client's JA4 fingerprint (client side only).
    pub ja4: String,
}

/// Timestamps of a flow, Unix nanoseconds; 0 when the moment never came.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Times {
    /// The request head was complete.
    pub request_start: u64,
    /// The upstream connection was ready (0 when a pooled one was reused).
    pub upstream_connected: u64,
    /// The response head arrived.
    pub response_head: u64,
    /// The exchange ended (last body byte, or the failure).
    pub end: u64,
}

/// One WebSocket message.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct WsMessageRec {
    /// Sent by the client (false: by the server).
    pub from_client: bool,
    /// Opcode: 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// When it was relayed, Unix nanoseconds.
    pub ts: u64,
    /// The payload (cut at the body limit).
    pub data: ByteBuf,
    /// The payload's full size.
    pub size: u64,
}

/// One HTTP exchange (an HTTP/1 request/response or an HTTP/2 stream).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct HttpFlow {
    /// Flow id (ctx.flow_id); unique within one run.
    pub id: u64,
    /// The client connection it rode on (ctx.conn_id).
    pub conn: u64,
    /// The HTTP/2 stream id (0 on HTTP/1).
    pub stream: u32,
    /// Client address.
    pub client: String,
    /// Upstream address ("" when none was reached).
    pub server: String,
    /// The proxy mode: "regular", "reverse", "socks5"...
    pub mode: String,
    /// TLS toward the client, when intercepted or terminated.
    pub client_tls: Option<TlsRec>,
    /// The request.
    pub request: RequestRec,
    /// The response, when one was sent.
    pub response: Option<ResponseRec>,
    /// Timestamps.
    pub times: Times,
    /// Why the flow failed, when it did.
    pub error: Option<String>,
    /// WebSocket messages after a 101, in order.
    pub websocket: Vec<WsMessageRec>,
    /// Messages seen but not kept (past the per-flow limit).
    pub websocket_dropped: u64,
    /// Plugins' notes (luring.flow_note), in the order written.
    pub notes: Vec<(String, String)>,
}

/// A chunk of an opaque tunnel, kept with `--record-raw`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct RawChunkRec {
    /// Sent by the client.
    pub from_client: bool,
    /// When it was relayed, Unix nanoseconds.
    pub ts: u64,
    /// The bytes.
    pub data: ByteBuf,
}

/// A connection relayed as opaque bytes: TLS passthrough, a raw relay, a tunnel to a
/// protocol luring does not parse.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct TunnelFlow {
    /// Flow id.
    pub id: u64,
    /// Client connection id.
    pub conn: u64,
    /// Client address.
    pub client: String,
    /// Upstream address.
    pub server: String,
    /// host:port the client asked for (CONNECT, SOCKS5) or the SNI.
    pub target: String,
    /// "connect", "socks5", "tls-passthrough", "raw", "upgrade".
    pub kind: String,
    /// TLS facts read from the ClientHello, when there was one.
    pub client_tls: Option<TlsRec>,
    /// Opened, Unix nanoseconds.
    pub start: u64,
    /// Closed, Unix nanoseconds.
    pub end: u64,
    /// Bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
    /// Why it ended badly, when it did.
    pub error: Option<String>,
    /// The bytes, with `--record-raw` (cut at the body limit per direction).
    pub chunks: Vec<RawChunkRec>,
}

/// The recorder fell behind and dropped flows (written when it catches up).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Drops {
    /// Flows dropped since the previous Drops record.
    pub dropped: u64,
    /// Flows dropped since the file was started.
    pub total: u64,
    /// When, Unix nanoseconds.
    pub ts: u64,
}

/// One record of a flow file.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// File metadata (always first).
    Meta(Meta),
    /// An HTTP exchange.
    Http(Box<HttpFlow>),
    /// An opaque tunnel.
    Tunnel(Box<TunnelFlow>),
    /// A drop count.
    Drops(Drops),
}

/// The frame kind of an HTTP flow record.
pub const KIND_HTTP: u8 = 2;

impl Record {
    /// The record kind's byte in the frame header.
    pub fn kind(&self) -> u8 {
        match self {
            Record::Meta(_) => 1,
            Record::Http(_) => KIND_HTTP,
            Record::Tunnel(_) => 3,
            Record::Drops(_) => 4,
        }
    }
}

/// Unix time now, in nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
