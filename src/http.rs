//! Version-agnostic HTTP message model shared by the codecs, the proxy and the plugin engine.
//!
//! Heads keep header names exactly as they arrived (case and order) because a proxy must
//! not rewrite what it does not own; lookups are case-insensitive.

use bytes::Bytes;

/// HTTP protocol version of a message as seen on one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
    /// HTTP/2
    Http2,
}

impl Version {
    /// The name plugins and logs use ("HTTP/1.1" ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2.0",
        }
    }
}

/// One header field; name and value are raw bytes as on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Field name with its original case.
    pub name: Bytes,
    /// Field value without surrounding whitespace.
    pub value: Bytes,
}

/// An ordered header list that keeps repeats, case and order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    list: Vec<Header>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self { list: Vec::new() }
    }

    /// An empty list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            list: Vec::with_capacity(n),
        }
    }

    /// Number of fields (repeats counted).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when there is no field.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Fields in wire order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.list.iter()
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.list
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &h.value)
    }

    /// Every value of `name` in wire order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.list
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &h.value)
    }

    /// True when `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a field at the end.
    pub fn add(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.list.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Replaces every field called `name` by one field; keeps the position of the first.
    pub fn set(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        match self
            .list
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(&name))
        {
            Some(i) => {
                self.list[i].value = value;
                let mut j = i + 1;
                while j < self.list.len() {
                    if self.list[j].name.eq_ignore_ascii_case(&name) {
                        self.list.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.list.push(Header { name, value }),
        }
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.list.len();
        self.list
            .retain(|h| !h.name.eq_ignore_ascii_case(name.as_bytes()));
        before - self.list.len()
    }

    /// Keeps only the fields for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        self.list.retain(keep)
    }

    /// True when the comma-separated list in field `name` contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// A request line plus headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token, e.g. "GET".
    pub method: Bytes,
    /// The request target exactly as sent (absolute-form, origin-form, authority-form or "*").
    pub target: Bytes,
    /// Protocol version.
    pub version: Version,
    /// Header fields.
    pub headers: Headers,
}

/// A status line plus headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Protocol version.
    pub version: Version,
    /// Status code.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: Bytes,
    /// Header fields.
    pub headers: Headers,
}

impl RequestHead {
    /// True for the CONNECT method.
    pub fn is_connect(&self) -> bool {
        self.method.as_ref() == b"CONNECT"
    }
    /// True for the HEAD method.
    pub fn is_head(&self) -> bool {
        self.method.as_ref() == b"HEAD"
    }
}

/// Parts of an absolute-form or authority-form request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// "http" or "https" (empty for authority-form).
    pub scheme: String,
    /// Host without brackets for IPv6 literals.
    pub host: String,
    /// Port, defaulted from the scheme when absent.
    pub port: u16,
    /// Path with query, "/" when absent.
    pub path: String,
}

impl Target {
    /// Parses "http://host[:port]/path?q" (absolute-form).
    pub fn parse_absolute(target: &[u8]) -> Option<Target> {
        let s = std::str::from_utf8(target).ok()?;
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        // userinfo is not allowed in http(s) URIs sent to a proxy (RFC 9110 4.2.4)
        if authority.contains('@') {
            return None;
        }
        let (host, port) = split_authority(authority, default_port)?;
        Some(Target {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Parses "host:port" (authority-form, as in CONNECT).
    pub fn parse_authority(target: &[u8]) -> Option<Target> {
        let s = std::str::from_utf8(target).ok()?;
        let (host, port) = split_authority(s, 0)?;
        if port == 0 {
            return None;
        }
        Some(Target {
            scheme: String::new(),
            host,
            port,
            path: String::new(),
        })
    }

    /// "host:port" with brackets around IPv6 literals.
    pub fn authority(&self) -> String {
        authority_of(&self.host, self.port)
    }
}

/// "host:port", with brackets around an IPv6 literal.
pub fn authority_of(host: &str, port: u16) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(host.len() + 8);
    let _ = if host.contains(':') {
        write!(s, "[{host}]:{port}")
    } else {
        write!(s, "{host}:{port}")
    };
    s
}

/// Splits "host[:port]" / "[v6][:port]"; rejects empty hosts and bad ports.
pub fn split_authority(s: &str, default_port: u16) -> Option<(String, u16)> {
    if s.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (host.to_string(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (s.to_string(), default_port),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:~%".contains(&b))
    {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_case_order_and_repeats() {
        let mut h = Headers::new();
        h.add("X-A", "1");
        h.add("x-b", "2");
        h.add("x-a", "3");
        assert_eq!(h.get("x-a").unwrap().as_ref(), b"1");
        assert_eq!(h.get_all("X-A").count(), 2);
        h.set("X-a", "9");
        let names: Vec<_> = h.iter().map(|f| f.name.clone()).collect();
        assert_eq!(names, vec![Bytes::from("X-A"), Bytes::from("x-b")]);
        assert_eq!(h.get("x-a").unwrap().as_ref(), b"9");
        assert_eq!(h.remove("X-B"), 1);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn tokens() {
        let mut h = Headers::new();
        h.add("Connection", "keep-alive, Upgrade");
        assert!(h.has_token("connection", "upgrade"));
        assert!(!h.has_token("connection", "close"));
    }

    #[test]
    fn absolute_targets() {
        let t = Target::parse_absolute(b"http://Example.com:8080/a?b").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("Example.com", 8080, "/a?b")
        );
        let t = Target::parse_absolute(b"http://h?x=1").unwrap();
        assert_eq!(t.path, "/?x=1");
        let t = Target::parse_absolute(b"https://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        assert!(Target::parse_absolute(b"ftp://h/").is_none());
        assert!(Target::parse_absolute(b"http://u@h/").is_none());
        assert!(Target::parse_absolute(b"http:///").is_none());
    }

    #[test]
    fn authority_targets() {
        let t = Target::parse_authority(b"example.com:443").unwrap();
        assert_eq!(t.authority(), "example.com:443");
        assert!(Target::parse_authority(b"example.com").is_none());
        assert_eq!(
            Target::parse_authority(b"[::1]:8443").unwrap().authority(),
            "[::1]:8443"
        );
    }
}

/// A message body as the proxy holds it while hooks run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Not read yet: it streams from peer to peer unless a hook asks for it.
    Streaming,
    /// Read whole (a hook asked for it, or a synthesized message).
    Full(Bytes),
    /// A hook asked for it but it is larger than the plugin body limit; streams unread.
    TooLarge,
}

/// A request in version-agnostic form, as hooks see it and as it will be sent upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Method token.
    pub method: Bytes,
    /// "http" or "https"; empty for CONNECT.
    pub scheme: String,
    /// "host:port" or "host" as the client named it (Host header in origin-form).
    pub authority: String,
    /// Path with query; None for CONNECT.
    pub path: Option<String>,
    /// Version the client spoke.
    pub version: Version,
    /// Header fields.
    pub headers: Headers,
    /// Body state.
    pub body: Body,
    /// Trailers, when known.
    pub trailers: Option<Headers>,
    /// Unix time in seconds when the head was complete.
    pub timestamp_start: f64,
}

/// A response in version-agnostic form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Version the upstream spoke (or the proxy, for synthesized responses).
    pub version: Version,
    /// Header fields.
    pub headers: Headers,
    /// Body state.
    pub body: Body,
    /// Trailers, when known.
    pub trailers: Option<Headers>,
}

impl Request {
    /// Host part of `authority` (without brackets or port).
    pub fn host(&self) -> String {
        split_authority(&self.authority, 0)
            .map(|(h, _)| h)
            .unwrap_or_default()
    }
    /// Port of `authority`, defaulted from the scheme.
    pub fn port(&self) -> u16 {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match split_authority(&self.authority, default) {
            Some((_, p)) => p,
            None => default,
        }
    }
}
