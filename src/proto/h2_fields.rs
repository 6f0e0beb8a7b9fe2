//! The field rules an HTTP/2 request must meet before luring acts on it, and above
//! all before it is translated to HTTP/1.1, where a field that HTTP/2 frames on its
//! own could split or reframe the message (RFC 9113 sections 8.2 and 8.3.1).
//!
//! The h2 crate refuses most of these already (connection-specific fields and `te`
//! with a malformed-message reset; uppercase names and CR, LF or NUL in values with
//! a connection error); the checks are repeated here so that the translation stays
//! safe whatever the crate's version lets through, and the rules it does not check
//! (whitespace around values, Host against `:authority`, userinfo in `:authority`,
//! `*` as the path of anything but OPTIONS) are added. A request that breaks one is malformed: its stream is reset with
//! PROTOCOL_ERROR and nothing of it goes upstream.

use crate::http::{is_tchar, is_valid_host};

/// Fields that describe one HTTP/1 connection and are malformed in HTTP/2
/// (RFC 9113 8.2.2); `te` is allowed with the value `trailers` only.
const CONNECTION_SPECIFIC: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
];

/// Why a request's pseudo-fields and fields make it malformed, or Ok.
pub fn check_request(parts: &http::request::Parts) -> Result<(), &'static str> {
    // RFC 9113 8.3.1: `*` is for OPTIONS only (the h2 crate refuses other paths that do
    // not start with a slash)
    let path = parts.uri.path_and_query().map(|p| p.as_str());
    if path == Some("*") && parts.method != http::Method::OPTIONS {
        return Err(":path * on a request other than OPTIONS");
    }
    check_fields(parts.uri.authority().map(|a| a.as_str()), &parts.headers)
}

/// Why the fields of a request to `authority` make it malformed, or Ok.
fn check_fields(authority: Option<&str>, fields: &http::HeaderMap) -> Result<(), &'static str> {
    // RFC 9113 8.3.1: no userinfo, and nothing a Host line could not carry either
    if authority.is_some_and(|a| a.is_empty() || !is_valid_host(a.as_bytes())) {
        return Err("invalid :authority");
    }
    let mut length: Option<&[u8]> = None;
    for (name, value) in fields {
        let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
        check_field(name, value)?;
        if CONNECTION_SPECIFIC.contains(&name) {
            return Err("connection-specific field");
        }
        match name {
            b"te" if !value.eq_ignore_ascii_case(b"trailers") => {
                return Err("te other than \"trailers\"")
            }
            b"content-length" => {
                // one decimal number: the length the DATA frames are checked against
                if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                    return Err("invalid content-length");
                }
                if length.is_some_and(|l| l != value) {
                    return Err("conflicting content-length values");
                }
                length = Some(value);
            }
            // a Host that names another site than :authority would send the HTTP/1.1
            // request somewhere else than the hooks and the rules saw (RFC 9113 8.3.1)
            b"host" => match authority {
                Some(a) if !a.as_bytes().eq_ignore_ascii_case(value) => {
                    return Err("host differs from :authority")
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}

/// One field's name and value (RFC 9113 8.2.1).
fn check_field(name: &[u8], value: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b) && !b.is_ascii_uppercase()) {
        return Err("field name not a lowercase token");
    }
    if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err("CR, LF or NUL in a field value");
    }
    let ws = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    if ws(value.first()) || ws(value.last()) {
        return Err("whitespace around a field value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn map(fields: &[(&'static str, &'static [u8])]) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        for (n, v) in fields {
            m.append(
                HeaderName::from_static(n),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn connection_specific_fields_and_te_are_malformed() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            let m = map(&[(name, b"x")]);
            assert!(check_fields(None, &m).is_err(), "{name} accepted");
        }
        assert!(check_fields(None, &map(&[("te", b"trailers")])).is_ok());
        assert!(check_fields(None, &map(&[("te", b"gzip")])).is_err());
        assert!(check_fields(None, &map(&[("te", b"trailers, gzip")])).is_err());
    }

    #[test]
    fn values_with_whitespace_around_or_framing_bytes_are_malformed() {
        assert!(check_fields(None, &map(&[("x", b" a")])).is_err());
        assert!(check_fields(None, &map(&[("x", b"a\t")])).is_err());
        assert!(check_fields(None, &map(&[("x", b"a b")])).is_ok());
        assert!(check_fields(None, &map(&[("x", b"")])).is_ok());
        // the http crate cannot hold these; the byte check still refuses them
        for v in [&b"a\rb"[..], b"a\nb", b"a\0b"] {
            assert!(check_field(b"x", v).is_err(), "{v:?}");
        }
        assert!(check_field(b"X-Up", b"v").is_err());
        assert!(check_field(b"", b"v").is_err());
        assert!(check_field(b"x:y", b"v").is_err());
    }

    #[test]
    fn content_length_is_one_decimal_number() {
        assert!(check_fields(None, &map(&[("content-length", b"5")])).is_ok());
        let same = map(&[("content-length", b"5"), ("content-length", b"5")]);
        assert!(check_fields(None, &same).is_ok());
        let two = map(&[("content-length", b"5"), ("content-length", b"6")]);
        assert!(check_fields(None, &two).is_err());
        for v in [&b"+5"[..], b"-5", b"0x5", b"5, 5", b"5a"] {
            let m = map(&[("content-length", v)]);
            assert!(check_fields(None, &m).is_err(), "{v:?}");
        }
    }

    #[test]
    fn asterisk_is_for_options_only() {
        let parts = |method: &str, uri: &str| {
            let req = http::Request::builder().method(method).uri(uri);
            req.body(()).unwrap().into_parts().0
        };
        assert!(check_request(&parts("OPTIONS", "*")).is_ok());
        assert!(check_request(&parts("GET", "*")).is_err());
        assert!(check_request(&parts("GET", "http://a.example/x")).is_ok());
        assert!(check_request(&parts("GET", "http://u@a.example/x")).is_err());
    }

    #[test]
    fn host_must_agree_with_authority() {
        let m = map(&[("host", b"a.example")]);
        assert!(check_fields(Some("a.example"), &m).is_ok());
        assert!(check_fields(Some("A.Example"), &m).is_ok());
        assert!(check_fields(Some("b.example"), &m).is_err());
        assert!(check_fields(None, &m).is_ok());
        let none = http::HeaderMap::new();
        assert!(check_fields(Some("u@a.example"), &none).is_err());
        assert!(check_fields(Some(""), &none).is_err());
        assert!(check_fields(Some("a.example:8443"), &none).is_ok());
    }
}
