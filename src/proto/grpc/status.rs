//! Call status in trailers: `grpc-status`, the percent-encoded `grpc-message`, the base64
//! `grpc-status-details-bin`, and the trailers-only response a proxy sends when it answers
//! a call itself.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::Bytes;

use super::frame::encode_trailers;
use super::text::encode_text;

/// Status code names, indexed by code (gRPC's `statuscodes.md`).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Status code 2, what a call that ended without a readable status gets.
pub const UNKNOWN: u32 = 2;

/// Trailer names the status helpers write themselves; extra trailers cannot replace them.
const RESERVED: [&str; 4] = [
    "content-type",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
];

/// The name of a status code ("OK" .. "UNAUTHENTICATED"), None past 16.
pub fn code_name(code: u32) -> Option<&'static str> {
    NAMES.get(code as usize).copied()
}

/// The code of a status name, case-insensitive ("permission_denied" -> 7).
pub fn code_from_name(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
}

/// `grpc-message` form of `msg`: its UTF-8 bytes outside 0x20..=0x7E, and `%`, as `%XX`.
pub fn percent_encode(msg: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

/// A `grpc-message` decoded. Lenient, as the spec asks: a `%` not followed by two hex
/// digits stays as it is, and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi << 4 | lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// `grpc-status-details-bin` value of `details`: standard base64 without padding, which
/// the gRPC spec says binary headers should be sent as.
pub fn encode_details(details: &[u8]) -> String {
    STANDARD_NO_PAD.encode(details)
}

/// A `-bin` header value decoded: standard base64, padded or not.
pub fn decode_details(value: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(value.trim())
}

/// The outcome of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `grpc-status` (0 OK .. 16 UNAUTHENTICATED; other numbers pass as they are).
    pub code: u32,
    /// `grpc-message`, decoded.
    pub message: String,
    /// `grpc-status-details-bin`, decoded (a serialized `google.rpc.Status`).
    pub details: Option<Bytes>,
}

impl Status {
    /// A status with no details.
    pub fn new(code: u32, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The status in a set of trailers (names lowercase), None without `grpc-status`.
    /// An unreadable code counts as UNKNOWN, undecodable details as absent.
    pub fn from_trailers<N: AsRef<str>, V: AsRef<str>>(fields: &[(N, V)]) -> Option<Status> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n.as_ref() == name)
                .map(|(_, v)| v.as_ref())
        };
        let code = get("grpc-status")?.trim().parse().unwrap_or(UNKNOWN);
        Some(Status {
            code,
            message: get("grpc-message").map(percent_decode).unwrap_or_default(),
            details: get("grpc-status-details-bin")
                .and_then(|v| decode_details(v).ok())
                .map(Bytes::from),
        })
    }
}

/// The status trailers, in order: `grpc-status`, `grpc-message` (when not empty),
/// `grpc-status-details-bin` (when given), then `extra`.
///
/// Extra trailers with the names above or `content-type`, pseudo-header names, names
/// that are not lowercase tokens once lowercased, and values with CR, LF or NUL are
/// dropped, so the list can always be written as HTTP/2 trailers or a gRPC-web block.
pub fn status_trailers<N: AsRef<str>, V: AsRef<str>>(
    status: &Status,
    extra: &[(N, V)],
) -> Vec<(String, String)> {
    let mut out = vec![("grpc-status".to_string(), status.code.to_string())];
    if !status.message.is_empty() {
        out.push(("grpc-message".into(), percent_encode(&status.message)));
    }
    if let Some(d) = &status.details {
        out.push(("grpc-status-details-bin".into(), encode_details(d)));
    }
    for (name, value) in extra {
        let name = name.as_ref().to_ascii_lowercase();
        let value = value.as_ref();
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let value_ok = !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        if name_ok && value_ok && !RESERVED.contains(&name.as_str()) {
            out.push((name, value.to_string()));
        }
    }
    out
}

/// Headers of a trailers-only gRPC response (HTTP 200, `:status` not included):
/// `content-type: application/grpc`, then the status trailers.
pub fn trailers_only<N: AsRef<str>, V: AsRef<str>>(
    status: &Status,
    extra: &[(N, V)],
) -> Vec<(String, String)> {
    let mut out = vec![("content-type".to_string(), "application/grpc".to_string())];
    out.extend(status_trailers(status, extra));
    out
}

/// Body of a trailers-only gRPC-web response: the status trailers as one trailer frame,
/// base64 for grpc-web-text (`text`). The response headers carry the content type.
pub fn web_trailers_only_body<N: AsRef<str>, V: AsRef<str>>(
    status: &Status,
    extra: &[(N, V)],
    text: bool,
) -> Bytes {
    let frame = encode_trailers(&status_trailers(status, extra));
    if text {
        encode_text(&frame)
    } else {
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{Decoder, Event};
    use super::super::text::TextDecoder;
    use super::*;

    #[test]
    fn code_names() {
        assert_eq!(code_name(0), Some("OK"));
        assert_eq!(code_name(7), Some("PERMISSION_DENIED"));
        assert_eq!(code_name(16), Some("UNAUTHENTICATED"));
        assert_eq!(code_name(17), None);
        for c in 0..17 {
            assert_eq!(code_from_name(code_name(c).unwrap()), Some(c));
        }
        assert_eq!(code_from_name("not_found"), Some(5));
        assert_eq!(code_from_name("NOPE"), None);
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("plain text ~!"), "plain text ~!");
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("a\r\nb\x7f"), "a%0D%0Ab%7F");
        assert_eq!(percent_encode("é☺"), "%C3%A9%E2%98%BA");
        for s in ["", "x", "100% sure", "ünïcødé\n\t", "%%%", "\u{0}"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        // lenient decoding
        assert_eq!(percent_decode("%41%4a%zz%4"), "AJ%zz%4");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%FF!"), "\u{fffd}!");
        assert_eq!(percent_decode("%E2%98%BA"), "☺");
    }

    #[test]
    fn details_base64() {
        assert_eq!(encode_details(b"\x08\x07"), "CAc");
        assert_eq!(decode_details("CAc").unwrap(), b"\x08\x07");
        assert_eq!(decode_details("CAc=").unwrap(), b"\x08\x07");
        assert_eq!(decode_details("").unwrap(), b"");
        assert!(decode_details("C").is_err());
        assert!(decode_details("CA-c").is_err());
    }

    #[test]
    fn trailers_only_headers() {
        let st = Status {
            code: 7,
            message: "denied: 100%".into(),
            details: Some(Bytes::from_static(b"\x08\x07")),
        };
        let extra = [
            ("X-Reason", "policy"),
            ("grpc-status", "0"),
            (":status", "200"),
            ("content-type", "text/plain"),
            ("bad name", "v"),
            ("x-inject", "a\r\nb"),
        ];
        let h = trailers_only(&st, &extra);
        let want: Vec<(String, String)> = [
            ("content-type", "application/grpc"),
            ("grpc-status", "7"),
            ("grpc-message", "denied: 100%25"),
            ("grpc-status-details-bin", "CAc"),
            ("x-reason", "policy"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(h, want);
        assert_eq!(Status::from_trailers(&h[1..]), Some(st));
        let ok = trailers_only::<&str, &str>(&Status::new(0, ""), &[]);
        assert_eq!(ok.len(), 2, "no empty grpc-message: {ok:?}");
    }

    #[test]
    fn status_from_trailers() {
        assert_eq!(Status::from_trailers::<&str, &str>(&[]), None);
        assert_eq!(
            Status::from_trailers(&[("grpc-status", "x"), ("grpc-message", "a%20b")]),
            Some(Status::new(UNKNOWN, "a b"))
        );
        assert_eq!(
            Status::from_trailers(&[("grpc-status", "5"), ("grpc-status-details-bin", "!!")]),
            Some(Status::new(5, ""))
        );
    }

    #[test]
    fn web_bodies_decode_to_the_same_trailers() {
        let st = Status::new(16, "who are you?");
        let extra = [("x-a", "1")];
        let want = status_trailers(&st, &extra);
        let bin = web_trailers_only_body(&st, &extra, false);
        let text = web_trailers_only_body(&st, &extra, true);
        let mut t = TextDecoder::new();
        let mut from_text = t.decode(&text).unwrap().to_vec();
        from_text.extend_from_slice(&t.finish().unwrap());
        assert_eq!(from_text, bin.to_vec());
        let mut d = Decoder::new(1024, true);
        let mut out = Vec::new();
        d.feed(bin, &mut out).unwrap();
        let [Event::Trailers(tr)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(tr.fields, want);
        assert!(d.trailers_seen());
    }
}
