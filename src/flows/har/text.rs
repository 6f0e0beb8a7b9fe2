//! Bytes in a JSON text format: HAR strings, base64, ISO 8601 times and
//! content-encoding, each written one way on export and read back the same way.

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io::Read;

/// A HAR string read as raw bytes: valid UTF-8, or WTF-8 where the writer put lone
/// surrogates. mitmproxy writes bodies it cannot decode as Python's "surrogateescape"
/// text (byte 0x80..0xFF becomes U+DC80..U+DCFF); serde_json hands those through as
/// WTF-8 only when asked for bytes, so every text field is read this way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wtf8(pub Vec<u8>);

impl Wtf8 {
    /// Wraps a string.
    pub fn text(s: &str) -> Self {
        Wtf8(s.as_bytes().to_vec())
    }

    /// The text as a string, lossy.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl Serialize for Wtf8 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Export only ever puts UTF-8 here; lossy keeps a bug from writing bad JSON.
        s.serialize_str(&String::from_utf8_lossy(&self.0))
    }
}

impl<'de> Deserialize<'de> for Wtf8 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(Wtf8Visitor)
    }
}

struct Wtf8Visitor;

impl serde::de::Visitor<'_> for Wtf8Visitor {
    type Value = Wtf8;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Wtf8, E> {
        Ok(Wtf8(v.to_vec()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Wtf8, E> {
        Ok(Wtf8::text(v))
    }
    // Some writers put numbers or null where HAR says string.
    fn visit_unit<E>(self) -> Result<Wtf8, E> {
        Ok(Wtf8::default())
    }
    fn visit_none<E>(self) -> Result<Wtf8, E> {
        Ok(Wtf8::default())
    }
    fn visit_bool<E>(self, v: bool) -> Result<Wtf8, E> {
        Ok(Wtf8::text(&v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Wtf8, E> {
        Ok(Wtf8::text(&v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Wtf8, E> {
        Ok(Wtf8::text(&v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Wtf8, E> {
        Ok(Wtf8::text(&v.to_string()))
    }
}

/// How text in a HAR maps back to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8, lone surrogates U+DC80..U+DCFF back to the bytes they escaped.
    Utf8,
    /// One byte per char up to U+00FF (falls back to UTF-8 if a char is above).
    Latin1,
}

/// The bytes a HAR text stands for.
pub fn text_to_bytes(text: &[u8], cs: Charset) -> Vec<u8> {
    let chars = wtf8_chars(text);
    if cs == Charset::Latin1 && chars.iter().all(|&c| c <= 0xFF) {
        return chars.iter().map(|&c| c as u8).collect();
    }
    let mut out = Vec::with_capacity(text.len());
    for c in chars {
        match c {
            0xDC80..=0xDCFF => out.push((c - 0xDC00) as u8),
            _ => match char::from_u32(c) {
                Some(ch) => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
                None => out.extend_from_slice("\u{FFFD}".as_bytes()),
            },
        }
    }
    out
}

/// Code points of WTF-8 (UTF-8 that may encode surrogates); a bad byte reads as itself.
fn wtf8_chars(b: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let (len, init) = match c {
            0x00..=0x7F => (1, c as u32),
            0xC0..=0xDF => (2, (c & 0x1F) as u32),
            0xE0..=0xEF => (3, (c & 0x0F) as u32),
            0xF0..=0xF7 => (4, (c & 0x07) as u32),
            _ => (0, 0),
        };
        let cont = |k: usize| b.get(i + k).filter(|&&x| x & 0xC0 == 0x80);
        if len == 0 || (1..len).any(|k| cont(k).is_none()) {
            out.push(0xDC00 + c as u32); // stray byte: keep it as its surrogate escape
            i += 1;
            continue;
        }
        let mut v = init;
        for k in 1..len {
            v = (v << 6) | (b[i + k] & 0x3F) as u32;
        }
        out.push(v);
        i += len;
    }
    out
}

/// The charset a Content-Type names, when it is one whose text maps back byte for byte.
pub fn charset_of(content_type: &str) -> Option<Charset> {
    let lower = content_type.to_ascii_lowercase();
    let cs = lower.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == "charset").then(|| v.trim().trim_matches('"').to_string())
    })?;
    match cs.as_str() {
        "utf-8" | "utf8" | "us-ascii" | "ascii" => Some(Charset::Utf8),
        "iso-8859-1" | "latin-1" | "latin1" | "iso8859-1" => Some(Charset::Latin1),
        _ => None,
    }
}

/// Unix seconds as a float (mitmproxy's and Chrome's times) to nanoseconds, 0 for
/// none. The whole seconds are split off first: multiplying 1.7e9 s by 1e9 at once
/// loses the last digits a float can still hold for the fraction.
pub fn secs_to_ns(s: f64) -> u64 {
    if s.is_nan() || s <= 0.0 {
        return 0;
    }
    let whole = s.trunc();
    (whole as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(((s - whole) * 1e9).round() as u64)
}

/// Standard base64.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes base64, forgiving whitespace and missing padding.
pub fn unb64(text: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let e = &base64::engine::general_purpose::STANDARD;
    e.decode(&clean).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(&clean)
            .ok()
    })
}

/// A body as HAR text: itself when every reader takes the text back as the same
/// bytes, else base64 (the bool). Readers turn text into bytes by the Content-Type's
/// charset, and without one mitmproxy uses latin-1 (UTF-8 for JSON) while browsers
/// use UTF-8: so non-ASCII text goes as text only under a UTF-8 charset or JSON.
pub fn body_text(data: &[u8], content_type: &str) -> (String, bool) {
    let utf8_for_all = match charset_of(content_type) {
        Some(cs) => cs == Charset::Utf8,
        None => content_type.to_ascii_lowercase().contains("json"),
    };
    match std::str::from_utf8(data) {
        Ok(s) if data.is_ascii() || utf8_for_all => (s.to_string(), false),
        _ => (b64(data), true),
    }
}

/// ISO 8601 UTC with milliseconds, as Chrome writes it.
pub fn iso8601(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let ms = (ns / 1_000_000) % 1000;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses ISO 8601 date-times as HAR writers emit them ("...Z", "+02:00", any
/// fraction); Unix nanoseconds, None when unreadable.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s.trim();
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &s[19..];
    let mut frac_ns = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &r[digits.len()..];
        let mut padded = digits.chars().take(9).collect::<String>();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let r = rest.get(1..)?.replace(':', "");
            let (oh, om) = (
                r.get(0..2)?.parse::<i64>().ok()?,
                r.get(2..4).unwrap_or("0").parse::<i64>().ok()?,
            );
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)?).ok()
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Largest decoded body export produces; past it the body stays encoded (a
/// decompression bomb must not eat the memory export promises to keep flat).
const MAX_DECODED: u64 = 64 << 20;

/// Removes a content-encoding luring can undo (gzip, deflate, zstd); None for others.
pub fn decode_content(coding: &str, data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let r: Box<dyn Read + '_> = match coding.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(data)),
        "deflate" if data.first().is_some_and(|b| b & 0x0F == 8) => {
            Box::new(flate2::read::ZlibDecoder::new(data))
        }
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(data)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(data).ok()?),
        "identity" | "" => return Some(data.to_vec()),
        _ => return None,
    };
    r.take(MAX_DECODED + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= MAX_DECODED).then_some(out)
}

/// Applies a content-encoding (import: HAR holds decoded bodies, a flow holds wire
/// bytes); None for codings luring cannot produce (br...).
pub fn encode_content(coding: &str, data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let level = flate2::Compression::default();
    match coding.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            e.finish().ok()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            e.finish().ok()
        }
        "zstd" => zstd::bulk::compress(data, 3).ok(),
        "identity" | "" => Some(data.to_vec()),
        _ => None,
    }
}
