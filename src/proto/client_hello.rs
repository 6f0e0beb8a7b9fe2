//! Sans-IO TLS ClientHello parser and JA4 / JA3 fingerprints.
//!
//! Runs on the raw bytes the client sent, before rustls sees them, so the proxy can
//! pick a leaf certificate, decide on passthrough and fingerprint the client without
//! committing to a TLS session. Bytes in, a [`ClientHello`] out; no IO, no clock.

use std::borrow::Cow;
use std::fmt::Write as _;

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// TLS record content type for handshake messages.
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
/// Largest record payload a conforming peer sends (RFC 8446 section 5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
/// Largest ClientHello accepted. Real ones are under 2 KiB (a few KiB with
/// post-quantum key shares); the cap keeps a hostile peer from making us buffer
/// megabytes before the handshake even starts.
pub const MAX_CLIENT_HELLO_LEN: usize = 64 * 1024;

/// Extension type numbers the parser decodes.
mod ext {
    pub const SERVER_NAME: u16 = 0x0000;
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    pub const EC_POINT_FORMATS: u16 = 0x000b;
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    pub const ALPN: u16 = 0x0010;
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
}

/// Why bytes could not be read as a TLS ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The first record is not a TLS handshake record.
    #[error("not a TLS handshake record")]
    NotHandshake,
    /// The handshake message is not a ClientHello.
    #[error("handshake message is not a ClientHello (type {0})")]
    NotClientHello(u8),
    /// A record header is invalid (version or length).
    #[error("invalid TLS record header")]
    BadRecord,
    /// The ClientHello is larger than [`MAX_CLIENT_HELLO_LEN`].
    #[error("ClientHello too large ({0} bytes)")]
    TooLarge(usize),
    /// The ClientHello body is truncated or inconsistent.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// The fields of a ClientHello that matter for interception and fingerprinting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` of the hello body (0x0303 for TLS 1.2 and 1.3 clients).
    pub legacy_version: u16,
    /// Versions from the supported_versions extension, in order, GREASE included.
    pub supported_versions: Vec<u16>,
    /// Cipher suites in the client's order, GREASE included.
    pub cipher_suites: Vec<u16>,
    /// Extension types in the client's order, GREASE included.
    pub extensions: Vec<u16>,
    /// First host_name of the server_name extension.
    pub sni: Option<String>,
    /// ALPN protocol names in order (raw bytes: not necessarily UTF-8).
    pub alpn: Vec<Vec<u8>>,
    /// Supported groups (named curves) in order, GREASE included.
    pub supported_groups: Vec<u16>,
    /// EC point formats in order.
    pub ec_point_formats: Vec<u8>,
    /// Signature algorithms in order, GREASE included.
    pub signature_algorithms: Vec<u16>,
    /// Bytes of input (whole records) that carried this ClientHello.
    pub consumed: usize,
}

/// Peeks at the first bytes of a connection: `Some(true)` if they start a TLS
/// handshake record, `Some(false)` if they cannot, `None` if more bytes are needed.
///
/// Three bytes decide (like mitmproxy's `starts_like_tls_record`); when six are
/// available the handshake type must also be ClientHello.
pub fn is_tls_client_hello_start(buf: &[u8]) -> Option<bool> {
    match buf {
        [] => None,
        [t, ..] if *t != CONTENT_HANDSHAKE => Some(false),
        [_] => None,
        [_, major, ..] if *major != 0x03 => Some(false),
        [_, _] => None,
        [_, _, minor, ..] if *minor > 0x04 => Some(false),
        [_, _, _, _, _, hs, ..] => Some(*hs == HANDSHAKE_CLIENT_HELLO),
        _ => Some(true),
    }
}

/// Parses a ClientHello from the start of `buf` (TLS records as received).
///
/// Returns `Ok(None)` while the hello is incomplete; handles a hello split across
/// several records. Never panics; garbage and oversize input are errors.
pub fn parse_client_hello(buf: &[u8]) -> Result<Option<ClientHello>, HelloError> {
    let Some((body, consumed)) = reassemble(buf)? else {
        return Ok(None);
    };
    let mut hello = parse_body(&body)?;
    hello.consumed = consumed;
    Ok(Some(hello))
}

/// A ClientHello body and the number of input bytes its records took.
type Reassembled<'a> = (Cow<'a, [u8]>, usize);

/// Collects the handshake message from one or more records. Borrows when the
/// hello fits in the first record (the common case) and copies only otherwise.
fn reassemble(buf: &[u8]) -> Result<Option<Reassembled<'_>>, HelloError> {
    let mut pos = 0usize;
    // `single` borrows the first record's payload; `joined` is used only once a
    // second record is needed.
    let mut single: Option<&[u8]> = None;
    let mut joined: Vec<u8> = Vec::new();
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(header) = rest.get(..5) else {
            if is_tls_client_hello_start(rest) == Some(false) {
                return Err(HelloError::NotHandshake);
            }
            return Ok(None);
        };
        if header[0] != CONTENT_HANDSHAKE {
            return Err(HelloError::NotHandshake);
        }
        // the same versions is_tls_client_hello_start lets through (SSL 3.0 to TLS 1.3)
        if header[1] != 0x03 || header[2] > 0x04 {
            return Err(HelloError::BadRecord);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD_PAYLOAD {
            return Err(HelloError::BadRecord);
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Ok(None);
        };
        pos += 5 + len;
        let have: &[u8] = if pos == 5 + len {
            single = Some(fragment);
            fragment
        } else {
            if let Some(first) = single.take() {
                joined.extend_from_slice(first);
            }
            joined.extend_from_slice(fragment);
            &joined
        };
        if have[0] != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::NotClientHello(have[0]));
        }
        let [_, l0, l1, l2, ..] = *have else {
            continue;
        };
        let msg_len = (usize::from(l0) << 16) | (usize::from(l1) << 8) | usize::from(l2);
        if msg_len + 4 > MAX_CLIENT_HELLO_LEN {
            return Err(HelloError::TooLarge(msg_len + 4));
        }
        if have.len() >= msg_len + 4 {
            let body = match single {
                Some(first) => Cow::Borrowed(&first[4..msg_len + 4]),
                None => Cow::Owned(joined[4..msg_len + 4].to_vec()),
            };
            return Ok(Some((body, pos)));
        }
    }
}

/// A bounds-checked big-endian reader; every accessor fails instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.buf.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec_u8(&mut self, what: &'static str) -> Result<Reader<'a>, HelloError> {
        let n = usize::from(self.u8(what)?);
        Ok(Reader::new(self.take(n, what)?))
    }

    fn vec_u16(&mut self, what: &'static str) -> Result<Reader<'a>, HelloError> {
        let n = usize::from(self.u16(what)?);
        Ok(Reader::new(self.take(n, what)?))
    }

    fn u16_list(mut self, what: &'static str) -> Result<Vec<u16>, HelloError> {
        if !self.buf.len().is_multiple_of(2) {
            return Err(HelloError::Malformed(what));
        }
        let mut out = Vec::with_capacity(self.buf.len() / 2);
        while !self.is_empty() {
            out.push(self.u16(what)?);
        }
        Ok(out)
    }
}

fn parse_body(body: &[u8]) -> Result<ClientHello, HelloError> {
    let mut r = Reader::new(body);
    let mut hello = ClientHello {
        legacy_version: r.u16("version")?,
        ..ClientHello::default()
    };
    r.take(32, "random")?;
    let session_id = r.vec_u8("session id")?;
    if session_id.buf.len() > 32 {
        return Err(HelloError::Malformed("session id"));
    }
    hello.cipher_suites = r.vec_u16("cipher suites")?.u16_list("cipher suites")?;
    r.vec_u8("compression methods")?;
    if r.is_empty() {
        // A hello without an extensions block is legal (old TLS 1.0 clients).
        return Ok(hello);
    }
    let mut exts = r.vec_u16("extensions")?;
    if !r.is_empty() {
        return Err(HelloError::Malformed("trailing bytes after extensions"));
    }
    while !exts.is_empty() {
        let typ = exts.u16("extension type")?;
        let data = exts.vec_u16("extension data")?;
        hello.extensions.push(typ);
        parse_extension(&mut hello, typ, data)?;
    }
    Ok(hello)
}

fn parse_extension(
    hello: &mut ClientHello,
    typ: u16,
    mut data: Reader<'_>,
) -> Result<(), HelloError> {
    match typ {
        ext::SERVER_NAME => {
            // An empty server_name extension is what servers echo; tolerate it.
            if data.is_empty() {
                return Ok(());
            }
            let mut list = data.vec_u16("server name list")?;
            while !list.is_empty() {
                let name_type = list.u8("server name type")?;
                let name = list.vec_u16("server name")?;
                if name_type == 0 && hello.sni.is_none() {
                    hello.sni = Some(String::from_utf8_lossy(name.buf).into_owned());
                }
            }
        }
        ext::ALPN => {
            let mut list = data.vec_u16("alpn list")?;
            while !list.is_empty() {
                hello.alpn.push(list.vec_u8("alpn protocol")?.buf.to_vec());
            }
        }
        ext::SUPPORTED_GROUPS => {
            hello.supported_groups = data
                .vec_u16("supported groups")?
                .u16_list("supported groups")?;
        }
        ext::EC_POINT_FORMATS => {
            hello.ec_point_formats = data.vec_u8("ec point formats")?.buf.to_vec();
        }
        ext::SIGNATURE_ALGORITHMS => {
            hello.signature_algorithms = data
                .vec_u16("signature algorithms")?
                .u16_list("signature algorithms")?;
        }
        ext::SUPPORTED_VERSIONS => {
            hello.supported_versions = data
                .vec_u8("supported versions")?
                .u16_list("supported versions")?;
        }
        _ => {}
    }
    Ok(())
}

/// True for the RFC 8701 GREASE values (0x0a0a, 0x1a1a, ... 0xfafa).
pub fn is_grease(v: u16) -> bool {
    (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// JA4 TLS version code for a protocol version number.
fn ja4_version(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// First 12 hex characters of SHA-256, or twelve zeros for empty input (JA4 rule).
fn sha256_12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".to_owned();
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(12);
    for b in &digest[..6] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn hex4_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v:04x}");
    }
    out
}

/// JA4 ALPN code: first and last character of the first ALPN value, or of its
/// hex form when either end is not ASCII alphanumeric; "00" without ALPN.
fn ja4_alpn(alpn: &[Vec<u8>]) -> String {
    let Some(first) = alpn.first() else {
        return "00".to_owned();
    };
    let (Some(&a), Some(&b)) = (first.first(), first.last()) else {
        return "00".to_owned();
    };
    if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() {
        return [char::from(a), char::from(b)].iter().collect();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [
        char::from(HEX[usize::from(a >> 4)]),
        char::from(HEX[usize::from(b & 0x0f)]),
    ]
    .iter()
    .collect()
}

/// JA4 fingerprint (FoxIO spec, TLS over TCP), e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
pub fn ja4(hello: &ClientHello) -> String {
    let version = hello
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(hello.legacy_version);
    let sni = if hello.extensions.contains(&ext::SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let mut ciphers: Vec<u16> = hello
        .cipher_suites
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .collect();
    let exts: Vec<u16> = hello
        .extensions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .collect();
    let mut a = String::with_capacity(40);
    let _ = write!(
        a,
        "t{}{}{:02}{:02}{}",
        ja4_version(version),
        sni,
        ciphers.len().min(99),
        exts.len().min(99),
        ja4_alpn(&hello.alpn)
    );
    ciphers.sort_unstable();
    let b = sha256_12(&hex4_list(&ciphers));
    let mut sorted_exts: Vec<u16> = exts
        .into_iter()
        .filter(|v| *v != ext::SERVER_NAME && *v != ext::ALPN)
        .collect();
    sorted_exts.sort_unstable();
    let mut c_in = hex4_list(&sorted_exts);
    let sigs: Vec<u16> = hello
        .signature_algorithms
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .collect();
    if !sorted_exts.is_empty() && !sigs.is_empty() {
        c_in.push('_');
        c_in.push_str(&hex4_list(&sigs));
    }
    let c = sha256_12(&c_in);
    a.push('_');
    a.push_str(&b);
    a.push('_');
    a.push_str(&c);
    a
}

fn dash_list<T: std::fmt::Display>(out: &mut String, values: impl Iterator<Item = T>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push('-');
        }
        let _ = write!(out, "{v}");
    }
}

/// JA3 input string (salesforce spec, GREASE removed):
/// `version,ciphers,extensions,groups,point_formats`, decimal, dash-separated.
pub fn ja3_string(hello: &ClientHello) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(s, "{},", hello.legacy_version);
    dash_list(
        &mut s,
        hello.cipher_suites.iter().filter(|v| !is_grease(**v)),
    );
    s.push(',');
    dash_list(&mut s, hello.extensions.iter().filter(|v| !is_grease(**v)));
    s.push(',');
    dash_list(
        &mut s,
        hello.supported_groups.iter().filter(|v| !is_grease(**v)),
    );
    s.push(',');
    dash_list(&mut s, hello.ec_point_formats.iter());
    s
}

/// JA3 fingerprint: lowercase hex MD5 of [`ja3_string`].
pub fn ja3(hello: &ClientHello) -> String {
    let digest = Md5::digest(ja3_string(hello).as_bytes());
    let mut out = String::with_capacity(32);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests;
