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
#[derive(Clone, Debug, Default)]
pub struct Headers {
    list: Vec<Header>,
    /// A bit per [`known_bit`] name that may be present (a superset: set on insertion,
    /// recomputed on removal), so looking up an absent well-known name costs no scan.
    known: u16,
    /// The HTTP/2 head these fields were read from, kept while no change touches a
    /// field such a head carries: the fields go back into an h2 head as that map (taken
    /// out, or cloned) instead of a field-by-field rebuild (about 600 instructions a
    /// field).
    h2_head: Option<Box<http::HeaderMap>>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Eq for Headers {}

/// Bits of the field names the proxy itself looks up on every message.
pub mod known_names {
    /// Host.
    pub const HOST: u16 = 1;
    /// Connection.
    pub const CONNECTION: u16 = 1 << 1;
    /// Proxy-Connection.
    pub const PROXY_CONNECTION: u16 = 1 << 2;
    /// Keep-Alive.
    pub const KEEP_ALIVE: u16 = 1 << 3;
    /// TE.
    pub const TE: u16 = 1 << 4;
    /// Trailer.
    pub const TRAILER: u16 = 1 << 5;
    /// Upgrade.
    pub const UPGRADE: u16 = 1 << 6;
    /// Proxy-Authorization.
    pub const PROXY_AUTHORIZATION: u16 = 1 << 7;
    /// Proxy-Authenticate.
    pub const PROXY_AUTHENTICATE: u16 = 1 << 8;
    /// Transfer-Encoding.
    pub const TRANSFER_ENCODING: u16 = 1 << 9;
    /// Content-Length.
    pub const CONTENT_LENGTH: u16 = 1 << 10;
    /// Expect.
    pub const EXPECT: u16 = 1 << 11;
    /// The hop-by-hop names of RFC 9110 7.6.1 (plus Proxy-Connection).
    pub const HOP_BY_HOP: u16 = CONNECTION
        | PROXY_CONNECTION
        | KEEP_ALIVE
        | TE
        | TRAILER
        | UPGRADE
        | PROXY_AUTHORIZATION
        | PROXY_AUTHENTICATE;
    /// Fields an HTTP/2 head never carries (RFC 9113 8.2.2; Host goes as `:authority`).
    /// TE is not among them: `te: trailers` stays.
    pub const H2_DROPPED: u16 =
        HOST | CONNECTION | PROXY_CONNECTION | KEEP_ALIVE | TRANSFER_ENCODING | UPGRADE;
}

/// True for a field an HTTP/2 head leaves out (RFC 9113 8.2.2): the connection-specific
/// ones, Host (sent as `:authority`), and TE unless it says `trailers`. `bit` is the
/// name's [`known_bit`].
pub fn h2_head_leaves_out(bit: u16, value: &[u8]) -> bool {
    bit & known_names::H2_DROPPED != 0 || (bit == known_names::TE && value != b"trailers")
}

/// True for a non-empty token (RFC 9110 5.1), the only thing a field name may be.
fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| is_tchar(b))
}

/// A field value with CR, LF and NUL already replaced (see [`safe_value`]): one a
/// caller sets again and again checks it once.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct SafeValue(Bytes);

impl SafeValue {
    /// `value` made safe.
    pub fn new(value: Bytes) -> SafeValue {
        SafeValue(safe_value(value))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `value` with CR, LF and NUL replaced by SP (what RFC 9110 5.5 asks of recipients).
fn safe_value(value: Bytes) -> Bytes {
    let bad = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
    if !value.iter().any(bad) {
        return value;
    }
    value
        .iter()
        .map(|b| if bad(b) { b' ' } else { *b })
        .collect::<Vec<u8>>()
        .into()
}

/// The [`known_names`] bit of `name` (case-insensitive), 0 for any other name.
#[inline]
pub fn known_bit(name: &[u8]) -> u16 {
    use known_names::*;
    // Length and first letter rule out almost every other name before any comparison.
    let Some(&first) = name.first() else { return 0 };
    let (bit, lower): (u16, &[u8]) = match (name.len(), first | 0x20) {
        (2, b't') => (TE, b"te"),
        (4, b'h') => (HOST, b"host"),
        (6, b'e') => (EXPECT, b"expect"),
        (7, b't') => (TRAILER, b"trailer"),
        (7, b'u') => (UPGRADE, b"upgrade"),
        (10, b'c') => (CONNECTION, b"connection"),
        (10, b'k') => (KEEP_ALIVE, b"keep-alive"),
        (14, b'c') => (CONTENT_LENGTH, b"content-length"),
        (16, b'p') => (PROXY_CONNECTION, b"proxy-connection"),
        (17, b't') => (TRANSFER_ENCODING, b"transfer-encoding"),
        (18, b'p') => (PROXY_AUTHENTICATE, b"proxy-authenticate"),
        (19, b'p') => (PROXY_AUTHORIZATION, b"proxy-authorization"),
        _ => return 0,
    };
    if token_eq_lower(name, lower) {
        bit
    } else {
        0
    }
}

/// Case-insensitive equality of a token (RFC 9110 5.6.2) with a lowercase name, eight
/// bytes at a time. Setting bit 5 lowercases letters and leaves '-' and digits alone; the
/// only other byte it maps onto a name byte is CR (onto '-'), which no token holds.
#[inline]
fn token_eq_lower(token: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let n = token.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return token.iter().zip(lower).all(|(&a, &b)| a | 0x20 == b);
    }
    let mut at = 0;
    while at + 8 < n {
        if word(token, at) | CASE != word(lower, at) {
            return false;
        }
        at += 8;
    }
    // the last eight bytes, overlapping the previous word when n is not a multiple of 8
    word(token, n - 8) | CASE == word(lower, n - 8)
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            list: Vec::with_capacity(n),
            known: 0,
            h2_head: None,
        }
    }

    /// Keeps `map`, the HTTP/2 head these fields were just read from in its order, for
    /// [`Headers::h2_head`]; a map holding a field an h2 head would leave out is not kept.
    pub fn keep_h2_head(&mut self, map: http::HeaderMap) {
        let leaves_out = |f: &Header| h2_head_leaves_out(known_bit(&f.name), &f.value);
        if !self.may_have(known_names::H2_DROPPED | known_names::TE)
            || !self.list.iter().any(leaves_out)
        {
            self.h2_head = Some(Box::new(map));
        }
    }

    /// The HTTP/2 head form of these fields, when they were read from one and no change
    /// since touched a field it carries.
    pub fn h2_head(&self) -> Option<&http::HeaderMap> {
        self.h2_head.as_deref()
    }

    /// [`Headers::h2_head`], taken out: for a head sent once (the list stays as it is).
    pub fn take_h2_head(&mut self) -> Option<http::HeaderMap> {
        self.h2_head.take().map(|m| *m)
    }

    /// Forgets the h2 head form unless the field changed (`bit`, its [`known_bit`]) is
    /// one such a head leaves out.
    fn changed(&mut self, bit: u16) {
        if bit & known_names::H2_DROPPED == 0 {
            self.h2_head = None;
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

    /// True when a field named by one of the `bits` may be present ([`known_names`]);
    /// false means none is.
    pub fn may_have(&self, bits: u16) -> bool {
        self.known & bits != 0
    }

    /// False when `name` is a well-known name that is certainly absent. Inlined into
    /// small entry points (`get`, `get_all`, `remove`, `has_token`) so that for a name
    /// written in the code the bit is found at compile time: looking it up from the
    /// bytes costs more than the test it saves.
    #[inline(always)]
    fn worth_scanning(&self, name: &[u8]) -> bool {
        let bit = known_bit(name);
        bit == 0 || self.known & bit != 0
    }

    /// First value of `name` (case-insensitive).
    #[inline]
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        if !self.worth_scanning(name.as_bytes()) {
            return None;
        }
        self.find(name.as_bytes())
    }

    /// The first value of `name`, looked for field by field.
    fn find(&self, name: &[u8]) -> Option<&Bytes> {
        // Bytes equal ignoring ASCII case are still equal with bit 5 set, so length and
        // first byte rule most fields out before the byte-wise comparison.
        let first = name.first().map_or(0, |&b| b | 0x20);
        self.list
            .iter()
            .find(|h| {
                h.name.len() == name.len()
                    && h.name.first().is_none_or(|&b| b | 0x20 == first)
                    && h.name.eq_ignore_ascii_case(name)
            })
            .map(|h| &h.value)
    }

    /// Every value of `name` in wire order.
    #[inline]
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        let list = if self.worth_scanning(name.as_bytes()) {
            &self.list[..]
        } else {
            &[]
        };
        list.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| &h.value)
    }

    /// True when `name` appears exactly once, with exactly `value`.
    #[inline]
    pub fn is_single(&self, name: &str, value: &[u8]) -> bool {
        let mut values = self.get_all(name);
        values.next().is_some_and(|v| v.as_ref() == value) && values.next().is_none()
    }

    /// True when `name` is present.
    #[inline]
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a field at the end. A name that is not a token is ignored, and CR, LF
    /// and NUL in the value become SP: whatever plugins set, the head stays well framed.
    pub fn add(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        if !is_field_name(&name) {
            return;
        }
        self.push_wire(name, safe_value(value.into()));
    }

    /// Appends a field a parser took from the wire, which is valid already.
    pub(crate) fn push_wire(&mut self, name: Bytes, value: Bytes) {
        let bit = known_bit(&name);
        self.known |= bit;
        if self.h2_head.is_some() {
            self.changed(bit);
        }
        self.list.push(Header { name, value });
    }

    /// Replaces every field called `name` by one field; keeps the position of the first.
    /// Names and values are checked as in [`Headers::add`].
    pub fn set(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        if !is_field_name(&name) {
            return;
        }
        self.replace(name, safe_value(value.into()));
    }

    /// [`Headers::set`] of a value made safe once and kept by the caller (see
    /// [`SafeValue`]), under a name written in the code.
    pub fn set_safe(&mut self, name: &'static str, value: &SafeValue) {
        debug_assert!(is_field_name(name.as_bytes()));
        self.replace(Bytes::from_static(name.as_bytes()), value.0.clone());
    }

    /// Puts `value` in place of the first `name` field and removes the others, or
    /// appends it; both are valid already.
    fn replace(&mut self, name: Bytes, value: Bytes) {
        if self.h2_head.is_some() {
            self.changed(known_bit(&name));
        }
        let pos = if self.worth_scanning(&name) {
            self.list
                .iter()
                .position(|h| h.name.eq_ignore_ascii_case(&name))
        } else {
            None
        };
        match pos {
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
            None => {
                self.known |= known_bit(&name);
                self.list.push(Header { name, value })
            }
        }
    }

    /// Removes every field called `name`; returns how many were removed.
    #[inline]
    pub fn remove(&mut self, name: &str) -> usize {
        if !self.worth_scanning(name.as_bytes()) {
            return 0;
        }
        self.remove_present(name)
    }

    /// [`Headers::remove`] of a name that may be present.
    fn remove_present(&mut self, name: &str) -> usize {
        let before = self.list.len();
        self.list
            .retain(|h| !h.name.eq_ignore_ascii_case(name.as_bytes()));
        let bit = known_bit(name.as_bytes());
        self.known &= !bit;
        let removed = before - self.list.len();
        if removed > 0 {
            self.changed(bit);
        }
        removed
    }

    /// Keeps only the fields for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Header) -> bool) {
        self.retain_known(|h, _| keep(h));
    }

    /// [`Headers::retain`] with each field's [`known_bit`] handed to `keep`: one
    /// lookup per field decides and rebuilds the known bits at once.
    pub fn retain_known(&mut self, mut keep: impl FnMut(&Header, u16) -> bool) {
        let mut known = 0;
        let mut touched = false;
        self.list.retain(|h| {
            let bit = known_bit(&h.name);
            let kept = keep(h, bit);
            if kept {
                known |= bit;
            } else if bit & known_names::H2_DROPPED == 0 {
                // any other name, well-known or not, is in the h2 head form
                touched = true;
            }
            kept
        });
        self.known = known;
        if touched {
            self.h2_head = None;
        }
    }

    /// True when the comma-separated list in field `name` contains `token` (case-insensitive).
    #[inline]
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.worth_scanning(name.as_bytes()) && self.lists_token(name.as_bytes(), token)
    }

    /// [`Headers::has_token`], field by field.
    fn lists_token(&self, name: &[u8], token: &str) -> bool {
        self.list
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .any(|h| {
                h.value
                    .split(|&b| b == b',')
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

/// Host and port of "host[:port]" for `scheme` (the port defaults from it); an
/// unusable authority gives an empty host.
pub fn host_port_of(scheme: &str, authority: &str) -> (String, u16) {
    let default = if scheme == "https" { 443 } else { 80 };
    split_authority(authority, default).unwrap_or((String::new(), default))
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

/// RFC 9110 5.6.2 token character.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Whether a Host value is `uri-host [ ":" port ]` in the characters RFC 3986 allows
/// there (empty is allowed: RFC 9112 3.2). Anything else (spaces, `/`, `@`, a list of
/// hosts) is a value two hops could read as different hosts.
pub fn is_valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| HOST_BYTES[b as usize])
}

/// The bytes [`is_valid_host`] lets through (RFC 3986 reg-name, IP literal brackets,
/// port colon): one load per byte of every request's Host, where a chain of
/// comparisons took about ten instructions.
static HOST_BYTES: [bool; 256] = alphanumeric_and(b"-._~%!$&'()*+,;=:[]");

/// Token characters (RFC 9110 5.6.2) as a lookup table, since names are checked per byte.
static TCHAR: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// A byte table that holds ASCII letters and digits and the bytes of `extra`.
const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
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
    fn known_names_are_found_in_any_case_and_nothing_else_is() {
        use known_names::*;
        for (name, bit) in [
            ("te", TE),
            ("HOST", HOST),
            ("Expect", EXPECT),
            ("Trailer", TRAILER),
            ("upgrade", UPGRADE),
            ("Connection", CONNECTION),
            ("KEEP-ALIVE", KEEP_ALIVE),
            ("Content-Length", CONTENT_LENGTH),
            ("proxy-connection", PROXY_CONNECTION),
            ("Transfer-Encoding", TRANSFER_ENCODING),
            ("Proxy-Authenticate", PROXY_AUTHENTICATE),
            ("Proxy-Authorization", PROXY_AUTHORIZATION),
        ] {
            assert_eq!(known_bit(name.as_bytes()), bit, "{name}");
        }
        for other in [
            "",
            "t",
            "tf",
            "hosts",
            "Date",
            "Content-Type",
            "Content-Lengths",
            "Content_Length",
            "Connectiom",
            "xonnection",
            "Transfer-Encodinh",
        ] {
            assert_eq!(known_bit(other.as_bytes()), 0, "{other}");
        }
    }

    #[test]
    fn absent_known_names_are_answered_without_a_scan_and_stay_right() {
        let mut h = Headers::new();
        h.add("Content-Length", "5");
        assert!(h.may_have(known_names::CONTENT_LENGTH));
        assert!(!h.may_have(known_names::HOP_BY_HOP));
        assert_eq!(h.get("connection"), None);
        h.set("CONNECTION", "close");
        assert!(h.has_token("connection", "close"));
        assert_eq!(h.remove("Connection"), 1);
        assert!(!h.may_have(known_names::CONNECTION));
        h.add("Upgrade", "websocket");
        h.retain(|f| f.name.as_ref() != b"Upgrade");
        assert!(!h.may_have(known_names::UPGRADE));
        assert!(h.may_have(known_names::CONTENT_LENGTH));
    }

    #[test]
    fn fields_that_would_break_the_head_are_refused_or_made_safe() {
        let mut h = Headers::new();
        h.add("bad name", "x");
        h.add("", "x");
        h.set("X-Split:", "x");
        assert!(h.is_empty());
        h.add("X-Inject", "a\r\nEvil: 1\0");
        h.set("X-Set", "b\nc");
        assert_eq!(h.get("x-inject").unwrap().as_ref(), b"a  Evil: 1 ");
        assert_eq!(h.get("x-set").unwrap().as_ref(), b"b c");
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
    /// For a response luring made because the flow failed: the reason hooks see as
    /// `msg.error` ("connect refused", "upstream timeout"...); None otherwise.
    pub error: Option<String>,
}

impl Request {
    /// Host part of `authority` (without brackets or port).
    pub fn host(&self) -> String {
        self.host_port().0
    }
    /// Port of `authority`, defaulted from the scheme.
    pub fn port(&self) -> u16 {
        self.host_port().1
    }
    /// Host and port of `authority` in one parse; the port defaults from the scheme.
    pub fn host_port(&self) -> (String, u16) {
        host_port_of(&self.scheme, &self.authority)
    }
}
