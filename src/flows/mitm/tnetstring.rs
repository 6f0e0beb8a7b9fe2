//! tnetstrings, the encoding of mitmproxy's dump files (mitmproxy/io/tnetstring.py):
//! `LENGTH:DATA TAG`, with TAG one of `,` bytes, `;` text, `#` integer, `^` float,
//! `!` boolean, `~` null, `]` list, `}` dict (keys and values alternating).
//!
//! Sans-IO: [`frame_len`] says how many bytes the next value takes once its prefix is
//! in, and [`parse`] decodes a complete value from a slice, so the caller owns all
//! reading and holds one flow at a time.

use std::fmt;

/// Longest length prefix mitmproxy writes or reads (12 digits).
const MAX_DIGITS: usize = 12;
/// Deepest nesting accepted: a flow nests a handful of levels, garbage may claim more.
const MAX_DEPTH: usize = 64;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `,` bytes.
    Bytes(Vec<u8>),
    /// `;` UTF-8 text.
    Str(String),
    /// `#` integer.
    Int(i64),
    /// `^` float.
    Float(f64),
    /// `!` boolean.
    Bool(bool),
    /// `~` null.
    Null,
    /// `]` list.
    List(Vec<Value>),
    /// `}` dict, in file order.
    Dict(Vec<(Value, Value)>),
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Byte offset within the parsed slice.
    pub at: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} at byte {}", self.why, self.at)
    }
}

fn err<T>(at: usize, why: impl Into<String>) -> Result<T, Error> {
    Err(Error {
        at,
        why: why.into(),
    })
}

/// The total length (prefix, data and tag) of the value `buf` starts with; Ok(None)
/// while the prefix is not complete yet.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(colon) = buf.iter().take(MAX_DIGITS + 1).position(|&c| c == b':') else {
        if buf.len() > MAX_DIGITS || buf.iter().any(|c| !c.is_ascii_digit()) {
            return err(0, "not a tnetstring (no length prefix)");
        }
        return Ok(None);
    };
    if colon == 0 || !buf[..colon].iter().all(u8::is_ascii_digit) {
        return err(0, "not a tnetstring (bad length prefix)");
    }
    let n: usize = std::str::from_utf8(&buf[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Error {
            at: 0,
            why: "length prefix out of range".into(),
        })?;
    Ok(Some(colon + 1 + n + 1))
}

/// Decodes the value `buf` starts with; the value and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<(Value, usize), Error> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<(Value, usize), Error> {
    if depth > MAX_DEPTH {
        return err(at, "nested too deep");
    }
    let len = match frame_len(&buf[at..]) {
        Ok(Some(n)) => n,
        Ok(None) => return err(at, "truncated length prefix"),
        Err(e) => return err(at + e.at, e.why),
    };
    if buf.len() - at < len {
        return err(
            at,
            format!(
                "truncated: the value needs {len} bytes, {} left",
                buf.len() - at
            ),
        );
    }
    let colon = buf[at..]
        .iter()
        .position(|&c| c == b':')
        .expect("frame_len saw it");
    let data = &buf[at + colon + 1..at + len - 1];
    let d0 = at + colon + 1;
    let text = || {
        std::str::from_utf8(data).map_err(|_| Error {
            at: d0,
            why: "text is not UTF-8".into(),
        })
    };
    let v = match buf[at + len - 1] {
        b',' => Value::Bytes(data.to_vec()),
        b';' => Value::Str(text()?.to_string()),
        b'#' => Value::Int(text()?.parse().map_err(|_| Error {
            at: d0,
            why: "bad integer".into(),
        })?),
        b'^' => Value::Float(text()?.parse().map_err(|_| Error {
            at: d0,
            why: "bad float".into(),
        })?),
        b'!' => match data {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return err(d0, "bad boolean"),
        },
        b'~' if data.is_empty() => Value::Null,
        b'~' => return err(d0, "null with data"),
        b']' => Value::List(items(buf, d0, at + len - 1, depth)?),
        b'}' => {
            let v = items(buf, d0, at + len - 1, depth)?;
            if v.len() % 2 != 0 {
                return err(d0, "dict with a key and no value");
            }
            let mut it = v.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Value::Dict(pairs)
        }
        t => return err(at + len - 1, format!("unknown type tag {:?}", t as char)),
    };
    Ok((v, len))
}

/// The values packed in buf[from..to].
fn items(buf: &[u8], mut from: usize, to: usize, depth: usize) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    while from < to {
        let (v, n) = parse_at(&buf[..to], from, depth + 1)?;
        out.push(v);
        from += n;
    }
    Ok(out)
}

impl Value {
    /// The value under `key` in a dict (text or bytes keys: old dumps use bytes).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(d) = self else { return None };
        d.iter()
            .find(|(k, _)| k.bytes() == Some(key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Bytes of a text or bytes value.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// A text or bytes value as a string (lossy), "" for anything else.
    pub fn string(&self) -> String {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// A number as f64.
    pub fn float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// An integer.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A list's items (empty for anything else).
    pub fn list(&self) -> &[Value] {
        match self {
            Value::List(l) => l,
            _ => &[],
        }
    }

    /// True for Bool(true).
    pub fn truthy(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type() {
        let inner: &[u8] = b"3:abc,3:h\xc3\xa9;2:-7#3:1.5^4:true!0:~8:1:x,1:y,}";
        let mut all = format!("{}:", inner.len()).into_bytes();
        all.extend_from_slice(inner);
        all.push(b']');
        let (v, n) = parse(&all).unwrap();
        assert_eq!(n, all.len());
        let Value::List(l) = v else {
            panic!("not a list")
        };
        assert_eq!(l[0], Value::Bytes(b"abc".to_vec()));
        assert_eq!(l[1], Value::Str("hé".into()));
        assert_eq!(l[2], Value::Int(-7));
        assert_eq!(l[3], Value::Float(1.5));
        assert_eq!(l[4], Value::Bool(true));
        assert_eq!(l[5], Value::Null);
        assert_eq!(l[6].get("x"), Some(&Value::Bytes(b"y".to_vec())));
    }

    #[test]
    fn binary_bytes_with_separators_inside() {
        let (v, _) = parse(b"5:\x00:,}],").unwrap();
        assert_eq!(v, Value::Bytes(b"\x00:,}]".to_vec()));
    }

    #[test]
    fn frame_len_needs_the_prefix() {
        assert_eq!(frame_len(b"12").unwrap(), None);
        assert_eq!(frame_len(b"12:").unwrap(), Some(16));
        assert!(frame_len(b"{\"log\"").is_err());
        assert!(frame_len(b"1234567890123:").is_err());
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let good = b"20:3:abc,2:-7#4:true!]";
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [
            &b"3:abc?"[..],
            b"4:true#",
            b"2:xy~",
            b"1:x}",
            b"3:1:x]",
            b"a:b,",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut deep = "0:~".to_string();
        for _ in 0..100 {
            deep = format!("{}:{deep}]", deep.len());
        }
        assert!(parse(deep.as_bytes()).unwrap_err().why.contains("deep"));
    }
}
