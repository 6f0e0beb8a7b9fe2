//! How a recorded flow reads to a person: its URL and host (the way mitmproxy spells
//! them, so filters agree), header look-ups, human sizes and local times.

use super::record::{Field, HttpFlow, RequestRec, TunnelFlow};

/// A flow of either kind, borrowed: what filters, `show` and `stats` look at.
#[derive(Clone, Copy, Debug)]
pub enum FlowRef<'a> {
    /// An HTTP exchange.
    Http(&'a HttpFlow),
    /// An opaque tunnel.
    Tunnel(&'a TunnelFlow),
}

/// The value of the first header field named `name` (ASCII case-insensitive).
pub fn header<'a>(fields: &'a [Field], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

/// Splits "host", "host:port" or "[v6]:port" into host and port (None when absent or
/// not a number), like mitmproxy's `parse_authority(check=False)`.
pub fn split_authority(a: &str) -> (&str, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (&rest[..end], port);
        }
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (a, None),
        },
        _ => (a, None),
    }
}

/// The default port of a scheme, when it has one.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A CONNECT request (authority form: no scheme, no path).
fn is_connect(r: &RequestRec) -> bool {
    r.method.eq_ignore_ascii_case("CONNECT")
}

/// The Host header of HTTP/1, the authority of HTTP/2 (mitmproxy's `host_header`).
fn host_header(r: &RequestRec) -> Option<String> {
    let h = || header(&r.headers, "host").map(|v| String::from_utf8_lossy(v).into_owned());
    if r.version.starts_with("HTTP/2") && !r.authority.is_empty() {
        return Some(r.authority.clone());
    }
    h().filter(|s| !s.is_empty())
}

/// The host the request went to (mitmproxy's `request.host`): the authority's host.
pub fn host(r: &RequestRec) -> &str {
    split_authority(&r.authority).0
}

/// The host named by the request itself, preferring Host/:authority over the
/// connection's target (mitmproxy's `pretty_host`).
pub fn pretty_host(r: &RequestRec) -> String {
    match host_header(r) {
        Some(h) => split_authority(&h).0.to_string(),
        None => host(r).to_string(),
    }
}

/// scheme://host[:port]path with the default port left out.
fn unparse(scheme: &str, host: &str, port: u16, path: &str) -> String {
    let path = if path == "*" { "" } else { path };
    if default_port(scheme) == Some(port) {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{port}{path}")
    }
}

/// The request's full URL as mitmproxy's `pretty_url` spells it: what `~u` matches
/// and what `show` prints.
pub fn url(r: &RequestRec) -> String {
    if is_connect(r) {
        return r.authority.clone();
    }
    let fallback = default_port(&r.scheme).unwrap_or(443);
    let (h, p) = match host_header(r) {
        Some(hh) => {
            let (h, p) = split_authority(&hh);
            (h.to_string(), p.unwrap_or(fallback))
        }
        None => {
            let (h, p) = split_authority(&r.authority);
            (h.to_string(), p.unwrap_or(fallback))
        }
    };
    unparse(&r.scheme, &h, p, &r.path)
}

/// "HTTP/1.0", "HTTP/1.1", "HTTP/2", "websocket" or "tunnel": the protocol a flow is
/// counted under in `stats`.
pub fn protocol(f: FlowRef<'_>) -> &'static str {
    match f {
        FlowRef::Tunnel(_) => "tunnel",
        FlowRef::Http(h) if is_websocket(h) => "websocket",
        FlowRef::Http(h) => match h.request.version.as_str() {
            "HTTP/1.0" => "HTTP/1.0",
            v if v.starts_with("HTTP/2") => "HTTP/2",
            "HTTP/1.1" => "HTTP/1.1",
            _ => "other",
        },
    }
}

/// The flow became a WebSocket: it carries messages, or its 101 answered an
/// `Upgrade: websocket` (mitmproxy sets `flow.websocket` at that moment).
pub fn is_websocket(h: &HttpFlow) -> bool {
    if !h.websocket.is_empty() {
        return true;
    }
    let upgraded = h.response.as_ref().is_some_and(|r| r.status == 101);
    upgraded
        && header(&h.request.headers, "upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"))
}

/// Sizes the way mitmproxy prints them: 0b, 512b, 1.5k, 3.2m, 1.0g.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["k", "m", "g", "t"];
    if n < 1024 {
        return format!("{n}b");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", UNITS[i])
}

/// Milliseconds between two Unix-nanosecond times; None when either is missing.
pub fn duration_ms(start: u64, end: u64) -> Option<u64> {
    (start != 0 && end >= start).then(|| (end - start) / 1_000_000)
}

/// HH:MM:SS.mmm in the local time zone ("--:--:--.---" for a missing time).
pub fn local_hms(ns: u64) -> String {
    if ns == 0 {
        return "--:--:--.---".into();
    }
    let secs = (ns / 1_000_000_000) as libc::time_t;
    let ms = (ns / 1_000_000) % 1000;
    // SAFETY: localtime_r only writes into the tm we hand it; a zeroed tm is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals for the duration of the call.
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return "--:--:--.---".into();
    }
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::record::field;

    fn req(version: &str, authority: &str, headers: Vec<Field>) -> RequestRec {
        RequestRec {
            method: "GET".into(),
            scheme: "https".into(),
            authority: authority.into(),
            path: "/p?q=1".into(),
            version: version.into(),
            headers,
            ..Default::default()
        }
    }

    #[test]
    fn authority_forms() {
        assert_eq!(split_authority("a.test"), ("a.test", None));
        assert_eq!(split_authority("a.test:8443"), ("a.test", Some(8443)));
        assert_eq!(split_authority("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_authority("[::1]"), ("::1", None));
        assert_eq!(split_authority("a.test:x"), ("a.test:x", None));
    }

    #[test]
    fn url_prefers_host_header_and_drops_default_port() {
        let r = req("HTTP/1.1", "10.0.0.1:443", vec![field("Host", "a.test")]);
        assert_eq!(url(&r), "https://a.test/p?q=1");
        assert_eq!(host(&r), "10.0.0.1");
        assert_eq!(pretty_host(&r), "a.test");
        let r = req("HTTP/1.1", "a.test:8443", vec![]);
        assert_eq!(url(&r), "https://a.test:8443/p?q=1");
        let r = req("HTTP/2", "b.test", vec![field("host", "ignored.test")]);
        assert_eq!(url(&r), "https://b.test/p?q=1");
        let mut c = req("HTTP/1.1", "c.test:443", vec![]);
        c.method = "CONNECT".into();
        assert_eq!(url(&c), "c.test:443");
    }

    #[test]
    fn sizes_read_like_mitmproxy() {
        assert_eq!(human_size(0), "0b");
        assert_eq!(human_size(1023), "1023b");
        assert_eq!(human_size(1536), "1.5k");
        assert_eq!(human_size(5 << 20), "5.0m");
        assert_eq!(human_size(3 << 30), "3.0g");
    }

    #[test]
    fn local_time_has_milliseconds() {
        let s = local_hms(1_700_000_000_123_000_000);
        assert_eq!(s.len(), 12, "{s}");
        assert!(s.ends_with(".123"), "{s}");
        assert_eq!(local_hms(0), "--:--:--.---");
        assert_eq!(duration_ms(1_000_000, 36_000_000), Some(35));
        assert_eq!(duration_ms(0, 5), None);
    }
}
