//! gRPC and gRPC-web at message level, sans-IO: telling a call apart by its content type,
//! its method from the path, the length-prefixed messages of its body (and gRPC-web's
//! trailer frame), the base64 of grpc-web-text, grpc-encoding compression, and the
//! status trailers a proxy writes when it answers a call itself.
//!
//! Every message keeps its exact wire bytes, so a message no hook changed goes on byte
//! for byte; only a changed one is framed anew.

pub mod compress;
pub mod frame;
pub mod status;
pub mod text;
pub mod web;

pub use compress::{compress, decode_payload, decompress, CompressError, Encoding};
pub use frame::{
    encode_message, encode_message_into, encode_trailers, parse_trailers, Decoder, Event,
    FrameError, Message, Trailers, HEADER_LEN,
};
pub use status::{
    code_from_name, code_name, decode_details, encode_details, percent_decode, percent_encode,
    status_trailers, trailers_only, web_trailers_only_body, Status,
};
pub use text::{encode_text, TextDecoder, TextError};

/// Which of the three wire forms a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// gRPC over HTTP/2: `application/grpc[+fmt]`.
    Grpc,
    /// gRPC-web, binary: `application/grpc-web[+fmt]`.
    GrpcWeb,
    /// gRPC-web, base64 body: `application/grpc-web-text[+fmt]`.
    GrpcWebText,
}

impl Protocol {
    /// The name the hooks see: "grpc", "grpc-web" or "grpc-web-text".
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::GrpcWebText => "grpc-web-text",
        }
    }

    /// Whether the body may end with a trailer frame (flag 0x80) instead of HTTP trailers.
    pub fn is_web(self) -> bool {
        !matches!(self, Protocol::Grpc)
    }

    /// Whether the body is base64 text.
    pub fn is_text(self) -> bool {
        matches!(self, Protocol::GrpcWebText)
    }

    /// The content type of a response the proxy writes itself for this protocol.
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Grpc => "application/grpc",
            Protocol::GrpcWeb => "application/grpc-web+proto",
            Protocol::GrpcWebText => "application/grpc-web-text+proto",
        }
    }
}

/// The protocol of a `Content-Type` value, or None when it is no gRPC type.
///
/// Parameters (`;charset=...`) and case are ignored; any `+format` suffix is accepted
/// (`+proto`, `+json`, ...) since framing does not depend on the message format.
pub fn detect(content_type: &str) -> Option<Protocol> {
    let media = content_type.split(';').next()?.trim();
    let (kind, sub) = media.split_once('/')?;
    if !kind.eq_ignore_ascii_case("application") {
        return None;
    }
    let (base, format) = match sub.split_once('+') {
        Some((b, f)) => (b, Some(f)),
        None => (sub, None),
    };
    if format.is_some_and(|f| f.is_empty() || f.contains(|c: char| c.is_ascii_whitespace())) {
        return None;
    }
    [
        ("grpc", Protocol::Grpc),
        ("grpc-web", Protocol::GrpcWeb),
        ("grpc-web-text", Protocol::GrpcWebText),
    ]
    .into_iter()
    .find(|(name, _)| base.eq_ignore_ascii_case(name))
    .map(|(_, p)| p)
}

/// `(service, method)` of a gRPC path `/pkg.Service/Method`, None for any other path.
///
/// A service without a package (`/Greeter/SayHello`) is accepted: protobuf files without
/// a `package` line produce such paths.
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#'))
    };
    let dots_ok = !service.starts_with('.') && !service.ends_with('.') && !service.contains("..");
    (ok(service) && ok(method) && dots_ok).then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let cases = [
            ("application/grpc", Some(Protocol::Grpc)),
            ("application/grpc+proto", Some(Protocol::Grpc)),
            ("Application/GRPC+json; charset=utf-8", Some(Protocol::Grpc)),
            ("application/grpc;foo=bar", Some(Protocol::Grpc)),
            (" application/grpc ", Some(Protocol::Grpc)),
            ("application/grpc-web", Some(Protocol::GrpcWeb)),
            ("application/grpc-web+proto", Some(Protocol::GrpcWeb)),
            ("APPLICATION/GRPC-WEB+PROTO", Some(Protocol::GrpcWeb)),
            ("application/grpc-web-text", Some(Protocol::GrpcWebText)),
            (
                "application/grpc-web-text+proto",
                Some(Protocol::GrpcWebText),
            ),
            (
                "application/grpc-web-text+proto;x=1",
                Some(Protocol::GrpcWebText),
            ),
            ("application/grpc+", None),
            ("application/grpcx", None),
            ("application/grpc-webx", None),
            ("application/grpc-web-textual", None),
            ("text/grpc", None),
            ("application/json", None),
            ("application", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(detect(ct), want, "{ct:?}");
        }
        assert_eq!(Protocol::Grpc.as_str(), "grpc");
        assert_eq!(Protocol::GrpcWeb.as_str(), "grpc-web");
        assert_eq!(Protocol::GrpcWebText.as_str(), "grpc-web-text");
        assert!(Protocol::GrpcWebText.is_web() && Protocol::GrpcWebText.is_text());
        assert!(!Protocol::Grpc.is_web() && !Protocol::GrpcWeb.is_text());
        for p in [Protocol::Grpc, Protocol::GrpcWeb, Protocol::GrpcWebText] {
            assert_eq!(detect(p.content_type()), Some(p));
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(parse_path("/a.b.c.Svc/M_1"), Some(("a.b.c.Svc", "M_1")));
        assert_eq!(
            parse_path("/Greeter/SayHello"),
            Some(("Greeter", "SayHello"))
        );
        for bad in [
            "",
            "/",
            "//M",
            "/pkg.Svc/",
            "/pkg.Svc",
            "pkg.Svc/M",
            "/pkg.Svc/M/x",
            "/pkg.Svc/M?x=1",
            "/pkg.Svc/M#f",
            "/pkg Svc/M",
            "/.Svc/M",
            "/pkg..Svc/M",
            "/pkg.Svc./M",
            "/pkg.Svc/Mé",
        ] {
            assert_eq!(parse_path(bad), None, "{bad:?}");
        }
    }
}
