//! The RFC §9.3 hook surface as data: the only place that knows the 17 rows.

/// A (protocol, event) pair of the hook surface; the discriminant indexes [`SURFACE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Event {
    /// http.on_request
    HttpRequest = 0,
    /// http.on_response
    HttpResponse,
    /// ws.on_upgrade
    WsUpgrade,
    /// ws.on_message
    WsMessage,
    /// ws.on_close
    WsClose,
    /// grpc.on_start
    GrpcStart,
    /// grpc.on_data
    GrpcData,
    /// grpc.on_end
    GrpcEnd,
    /// grpc-web.on_start
    GrpcWebStart,
    /// grpc-web.on_data
    GrpcWebData,
    /// grpc-web.on_end
    GrpcWebEnd,
    /// sse.on_event
    SseEvent,
    /// raw.on_chunk
    RawChunk,
    /// tls.on_handshake
    TlsHandshake,
    /// connection.on_connect
    ConnectionConnect,
    /// connection.on_disconnect
    ConnectionDisconnect,
    /// socks5.on_connect
    Socks5Connect,
}

impl Event {
    /// The surface row of this event.
    pub fn row(self) -> &'static Row {
        &SURFACE[self as usize]
    }
}

/// When a pipeline hook runs relative to the proxy's built-in pipeline steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before the built-in steps: the message as the peer sent it (the default).
    PrePipeline,
    /// After the built-in steps: exactly what will be sent.
    PostPipeline,
}

impl Phase {
    /// The option value plugins write ("pre_pipeline" / "post_pipeline").
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PrePipeline => "pre_pipeline",
            Phase::PostPipeline => "post_pipeline",
        }
    }
    /// Parses the option value.
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "pre_pipeline" => Some(Phase::PrePipeline),
            "post_pipeline" => Some(Phase::PostPipeline),
            _ => None,
        }
    }
    pub(crate) fn idx(self) -> usize {
        self as usize
    }
}

/// Action bit: CONTINUE (always allowed).
pub const A_CONTINUE: u8 = 1;
/// Action bit: DROP.
pub const A_DROP: u8 = 2;
/// Action bit: RESPOND (and RESPOND_GRPC on gRPC start rows).
pub const A_RESPOND: u8 = 4;

/// One row of the hook surface.
#[derive(Debug)]
pub struct Row {
    /// Protocol name as plugins write it.
    pub protocol: &'static str,
    /// Event name as plugins write it.
    pub event_name: &'static str,
    /// The typed event.
    pub event: Event,
    /// Lifecycle rows take no phase and get a frozen dict.
    pub lifecycle: bool,
    /// Allowed actions as a bitmask of `A_*`.
    pub actions: u8,
    /// Shape of `msg` (for docs and `luring check`).
    pub msg: &'static str,
}

impl Row {
    /// True when `action` (an `A_*` bit) is allowed on this row.
    pub fn allows(&self, action: u8) -> bool {
        self.actions & action != 0
    }
}

const C: u8 = A_CONTINUE;
const CD: u8 = A_CONTINUE | A_DROP;
const CR: u8 = A_CONTINUE | A_RESPOND;
const CDR: u8 = A_CONTINUE | A_DROP | A_RESPOND;

macro_rules! row {
    ($p:literal, $e:literal, $ev:ident, $lc:literal, $a:ident, $m:literal) => {
        Row {
            protocol: $p,
            event_name: $e,
            event: Event::$ev,
            lifecycle: $lc,
            actions: $a,
            msg: $m,
        }
    };
}

/// The 17 rows, in the order of the spec; `SURFACE[e as usize].event == e`.
#[rustfmt::skip]
pub static SURFACE: [Row; 17] = [
    row!("http", "on_request", HttpRequest, false, CDR, "HTTPMessage (request)"),
    row!("http", "on_response", HttpResponse, false, CR, "HTTPMessage (response)"),
    row!("ws", "on_upgrade", WsUpgrade, false, CDR, "HTTPMessage (request)"),
    row!("ws", "on_message", WsMessage, false, C, "WSMessage"),
    row!("ws", "on_close", WsClose, true, C, "WS close dict"),
    row!("grpc", "on_start", GrpcStart, false, CDR, "GRPCStartMessage"),
    row!("grpc", "on_data", GrpcData, false, C, "GRPCDataMessage"),
    row!("grpc", "on_end", GrpcEnd, true, C, "GRPCEndMessage dict"),
    row!("grpc-web", "on_start", GrpcWebStart, false, CDR, "GRPCStartMessage"),
    row!("grpc-web", "on_data", GrpcWebData, false, C, "GRPCDataMessage"),
    row!("grpc-web", "on_end", GrpcWebEnd, true, C, "GRPCEndMessage dict"),
    row!("sse", "on_event", SseEvent, false, C, "SSEMessage"),
    row!("raw", "on_chunk", RawChunk, false, C, "RawMessage"),
    row!("tls", "on_handshake", TlsHandshake, true, C, "TLS handshake dict"),
    row!("connection", "on_connect", ConnectionConnect, true, CD, "Connection dict"),
    row!("connection", "on_disconnect", ConnectionDisconnect, true, C, "Connection dict"),
    row!("socks5", "on_connect", Socks5Connect, true, CD, "SOCKS5 connect dict"),
];

/// Looks up a row by the names plugins use.
pub fn find(protocol: &str, event: &str) -> Option<&'static Row> {
    SURFACE
        .iter()
        .find(|r| r.protocol == protocol && r.event_name == event)
}
