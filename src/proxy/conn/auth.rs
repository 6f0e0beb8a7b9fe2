//! Proxy authentication (`--proxy-auth USER:PASS`): Basic credentials on forward-proxy
//! requests and CONNECT, and the 407 that asks for them.

use bytes::Bytes;

/// The 407 a forward proxy with `--proxy-auth` gives a request without valid credentials.
pub fn proxy_auth_required() -> Bytes {
    let body = "luring: proxy authentication required\n";
    Bytes::from(format!(
        "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"luring\"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// True when a `Proxy-Authorization` value carries Basic credentials equal to
/// `expected` (`USER:PASS`).
pub fn basic_credentials_match(value: &[u8], expected: &str) -> bool {
    use base64::Engine as _;
    let value = value.trim_ascii();
    let Some(sp) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, token) = value.split_at(sp);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return false;
    }
    match base64::engine::general_purpose::STANDARD.decode(token.trim_ascii()) {
        Ok(decoded) => decoded == expected.as_bytes(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_proxy_credentials() {
        // "bob:pw" in base64
        assert!(basic_credentials_match(b"Basic Ym9iOnB3", "bob:pw"));
        assert!(basic_credentials_match(b"  basic   Ym9iOnB3 ", "bob:pw"));
        assert!(!basic_credentials_match(b"Basic Ym9iOnB4", "bob:pw"));
        assert!(!basic_credentials_match(b"Bearer Ym9iOnB3", "bob:pw"));
        assert!(!basic_credentials_match(b"Basic !!!", "bob:pw"));
        assert!(!basic_credentials_match(b"Basic", "bob:pw"));
        let r = proxy_auth_required();
        let s = std::str::from_utf8(&r).unwrap();
        assert!(s.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"));
        assert!(s.contains("proxy-authenticate: Basic realm=\"luring\"\r\n"));
        let body_len = s.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(s.contains(&format!("content-length: {body_len}\r\n")));
    }
}
