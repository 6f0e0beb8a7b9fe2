//! Where a request goes: the version-agnostic request made from what the client sent,
//! with scheme, authority and path set by the proxy mode (forward, reverse, inside an
//! intercepted tunnel).

use crate::config::Mode;
use crate::http::{Body, Request, RequestHead, Target, Version};
use bytes::Bytes;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a request cannot be routed: the status and text of the answer.
pub type Refusal = (u16, String);

/// The target of an intercepted tunnel's requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intercept {
    /// "https" after TLS interception, "http" for plain HTTP inside the tunnel.
    pub scheme: &'static str,
    /// host[:port], the scheme's default port left out.
    pub authority: String,
}

impl Intercept {
    /// The target of requests inside a tunnel to `authority` that speak `scheme`.
    pub fn new(scheme: &'static str, authority: &str) -> Intercept {
        let default = if scheme == "https" { ":443" } else { ":80" };
        Intercept {
            scheme,
            authority: authority
                .strip_suffix(default)
                .unwrap_or(authority)
                .to_string(),
        }
    }
}

/// Where every request of an HTTP/2 session goes unless a hook re-routes it.
#[derive(Clone, Debug)]
pub struct Target2 {
    /// "https" or "http".
    pub scheme: String,
    /// host[:port] as requests name it.
    pub authority: String,
    /// Path prefix (reverse mode).
    pub path_prefix: String,
}

/// Unix time now, in seconds (a message's `timestamp_start`).
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn utf8_path(target: &[u8]) -> Result<String, Refusal> {
    String::from_utf8(target.to_vec()).map_err(|_| (400, "request target is not UTF-8".into()))
}

/// `path` behind a reverse upstream's path prefix (most have none: no copy then).
fn prefixed(prefix: &str, path: String) -> String {
    if prefix.is_empty() {
        return path;
    }
    let mut p = String::with_capacity(prefix.len() + path.len());
    p.push_str(prefix);
    p.push_str(&path);
    p
}

/// The path of an origin-form, asterisk or absolute-form target.
fn path_of(target: &[u8]) -> Result<String, Refusal> {
    if target.starts_with(b"/") || target == b"*" {
        return utf8_path(target);
    }
    Target::parse_absolute(target)
        .map(|t| t.path)
        .ok_or((400, "bad request target".into()))
}

/// The request an HTTP/1 head asks for, routed as `mode` routes it, or inside an
/// intercepted tunnel to `intercept`.
pub fn h1_request(
    head: RequestHead,
    mode: &Mode,
    intercept: Option<&Intercept>,
) -> Result<Request, Refusal> {
    let RequestHead {
        method,
        target,
        version,
        headers,
    } = head;
    // one pass over the fields: whether the first Host is valid, whether there is another
    let (host_valid, second_host) = {
        let mut hosts = headers.get_all("host");
        let valid = hosts.next().map(|h| crate::http::is_valid_host(h));
        (valid, hosts.next().is_some())
    };
    // RFC 9112 section 3.2: two Host lines make the target ambiguous between hops
    if second_host {
        return Err((400, "more than one Host header".into()));
    }
    let is_connect = method.as_ref() == b"CONNECT";
    // RFC 9112 3.2.4: the asterisk-form is for OPTIONS only
    if target.as_ref() == b"*" && method.as_ref() != b"OPTIONS" {
        return Err((
            400,
            "request target * on a request other than OPTIONS".into(),
        ));
    }
    match host_valid {
        Some(false) => return Err((400, "invalid Host header".into())),
        // RFC 9112 3.2: an HTTP/1.1 request without Host is refused, whatever its target
        // (a CONNECT names its target in the request line and is let through)
        None if version == Version::Http11 && !is_connect => {
            return Err((400, "HTTP/1.1 request without Host".into()))
        }
        _ => {}
    }
    let mut req = Request {
        method,
        scheme: String::new(),
        authority: String::new(),
        path: None,
        version,
        headers,
        body: Body::Streaming,
        trailers: None,
        timestamp_start: now_unix(),
    };
    if let Some(Intercept { scheme, authority }) = intercept {
        if is_connect {
            return Err((405, "CONNECT inside an intercepted tunnel".into()));
        }
        req.path = Some(path_of(&target)?);
        req.scheme = (*scheme).into();
        req.authority = authority.clone();
        return Ok(req);
    }
    match mode {
        Mode::Regular | Mode::Upstream(_) if is_connect => {
            let t = Target::parse_authority(&target)
                .ok_or((400, "CONNECT target must be host:port".to_string()))?;
            req.authority = t.authority();
        }
        Mode::Regular | Mode::Upstream(_) => {
            let t = forward_target(&target)?;
            req.authority = match t.port {
                // the default port left out, IPv6 literals still bracketed
                80 => crate::http::authority_of(&t.host, 0)
                    .trim_end_matches(":0")
                    .to_string(),
                _ => t.authority(),
            };
            req.scheme = t.scheme;
            req.path = Some(t.path);
        }
        // every request of a SOCKS5 or transparent connection comes through its tunnel
        Mode::Socks5 => return Err((400, "not a request inside a SOCKS5 tunnel".into())),
        Mode::Transparent => {
            return Err((400, "not a request inside a redirected connection".into()))
        }
        Mode::Reverse(_) if is_connect => {
            return Err((405, "CONNECT is not accepted by a reverse proxy".into()))
        }
        Mode::Reverse(up) => {
            let path = path_of(&target)?;
            req.scheme = up.scheme.clone();
            req.authority = up.authority();
            req.path = Some(prefixed(&up.path_prefix, path));
        }
    }
    Ok(req)
}

/// The absolute-form target a forward proxy needs.
fn forward_target(target: &Bytes) -> Result<Target, Refusal> {
    let t = Target::parse_absolute(target).ok_or_else(|| {
        if target.starts_with(b"/") {
            (
                400,
                "a forward proxy needs an absolute URI (http://host/path)".to_string(),
            )
        } else {
            (400, "bad request target".to_string())
        }
    })?;
    if t.scheme != "http" {
        return Err((
            501,
            format!("{}:// requests without CONNECT are not supported", t.scheme),
        ));
    }
    Ok(t)
}

/// The request of an h2 stream, routed to the session's `target`. Hooks and pipeline
/// steps see the client's `:authority` as Host, as an HTTP/1 request carries it (it
/// goes back into `:authority` upstream).
pub fn h2_request(parts: http::request::Parts, target: &Target2) -> Result<Request, Refusal> {
    if parts.method == http::Method::CONNECT {
        return Err((501, "CONNECT over HTTP/2 is not supported".into()));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = crate::proxy::h2_stream::from_h2_head(parts.headers);
    if let Some(a) = parts.uri.authority().filter(|_| !headers.contains("host")) {
        headers.add("host", a.as_str().to_string());
    }
    Ok(Request {
        method: Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
        scheme: target.scheme.clone(),
        authority: target.authority.clone(),
        path: Some(prefixed(&target.path_prefix, path.to_string())),
        version: Version::Http2,
        headers,
        body: Body::Streaming,
        trailers: None,
        timestamp_start: now_unix(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Headers;

    fn head(method: &'static str, target: &'static str, host: Option<&str>) -> RequestHead {
        let mut headers = Headers::new();
        if let Some(h) = host {
            headers.add("Host", h.to_string());
        }
        RequestHead {
            method: Bytes::from_static(method.as_bytes()),
            target: Bytes::from_static(target.as_bytes()),
            version: Version::Http11,
            headers,
        }
    }

    fn reverse(url: &str) -> Mode {
        Mode::parse(&format!("reverse:{url}")).unwrap()
    }

    #[test]
    fn forward_proxies_take_absolute_uris_and_connect() {
        let r = h1_request(
            head("GET", "http://a.example/x?q", Some("a.example")),
            &Mode::Regular,
            None,
        )
        .unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.authority.as_str()),
            ("http", "a.example")
        );
        assert_eq!(r.path.as_deref(), Some("/x?q"));
        let r = h1_request(
            head("GET", "http://a.example:8080/", Some("other.example")),
            &Mode::Regular,
            None,
        )
        .unwrap();
        assert_eq!(r.authority, "a.example:8080");
        let r = h1_request(head("CONNECT", "a.example:443", None), &Mode::Regular, None).unwrap();
        assert_eq!(
            (r.authority.as_str(), r.path.as_deref()),
            ("a.example:443", None)
        );
        let e = h1_request(head("GET", "/x", Some("a")), &Mode::Regular, None).unwrap_err();
        assert_eq!(e.0, 400);
        let e =
            h1_request(head("GET", "https://a/x", Some("a")), &Mode::Regular, None).unwrap_err();
        assert_eq!(e.0, 501);
        let e = h1_request(head("CONNECT", "nohost", None), &Mode::Regular, None).unwrap_err();
        assert_eq!(e.0, 400);
    }

    #[test]
    fn reverse_mode_prefixes_paths_and_needs_host() {
        let mode = reverse("http://127.0.0.1:9000/api");
        let r = h1_request(head("GET", "/v1", Some("x")), &mode, None).unwrap();
        assert_eq!(r.authority, "127.0.0.1:9000");
        assert_eq!(r.path.as_deref(), Some("/api/v1"));
        let e = h1_request(head("GET", "/v1", None), &mode, None).unwrap_err();
        assert_eq!(e.0, 400);
        let e = h1_request(head("CONNECT", "a:1", Some("x")), &mode, None).unwrap_err();
        assert_eq!(e.0, 405);
        let mut two = head("GET", "/", Some("x"));
        two.headers.add("host", "y".to_string());
        assert_eq!(h1_request(two, &mode, None).unwrap_err().0, 400);
    }

    #[test]
    fn tunnel_requests_go_to_the_tunnel_target() {
        let i = Intercept::new("https", "a.example:443");
        assert_eq!(i.authority, "a.example");
        let r = h1_request(
            head("GET", "/p", Some("a.example")),
            &Mode::Regular,
            Some(&i),
        )
        .unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.authority.as_str()),
            ("https", "a.example")
        );
        let r = h1_request(
            head("GET", "https://a.example/q", Some("a.example")),
            &Mode::Socks5,
            Some(&i),
        )
        .unwrap();
        assert_eq!(r.path.as_deref(), Some("/q"));
        let e = h1_request(head("CONNECT", "b:1", None), &Mode::Regular, Some(&i)).unwrap_err();
        assert_eq!(e.0, 405);
        assert_eq!(Intercept::new("http", "a:8080").authority, "a:8080");
    }

    #[test]
    fn http11_needs_exactly_one_valid_host_in_every_mode() {
        let i = Intercept::new("https", "a.example:443");
        let modes = [Mode::Regular, reverse("http://127.0.0.1:9000")];
        for (mode, target) in [(&modes[0], "http://a.example/"), (&modes[1], "/")] {
            for intercept in [None, Some(&i)] {
                let e = h1_request(head("GET", target, None), mode, intercept).unwrap_err();
                assert_eq!(e.0, 400, "{mode:?} {intercept:?}: missing Host");
                for bad in ["a b", "a, b", "a/b", "a@b", "a\tb", "a?b", "a#b", "\"a\""] {
                    let e =
                        h1_request(head("GET", target, Some(bad)), mode, intercept).unwrap_err();
                    assert_eq!(e.0, 400, "{mode:?}: Host {bad:?} accepted");
                }
                for good in [
                    "a.example",
                    "a.example:8080",
                    "[::1]:80",
                    "",
                    "xn--e-1a.example",
                ] {
                    let r = h1_request(head("GET", target, Some(good)), mode, intercept);
                    assert!(r.is_ok(), "{mode:?}: Host {good:?} refused: {:?}", r.err());
                }
            }
        }
        // HTTP/1.0 may leave Host out, and so may a CONNECT (its target names the host)
        let mut old = head("GET", "http://a.example/", None);
        old.version = Version::Http10;
        assert!(h1_request(old, &Mode::Regular, None).is_ok());
        assert!(h1_request(head("CONNECT", "a:1", None), &Mode::Regular, None).is_ok());
    }
}
