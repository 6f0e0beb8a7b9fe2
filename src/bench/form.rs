//! Form bodies as the replay key sees them, sans-IO: the (name, value) fields of an
//! `application/x-www-form-urlencoded` or `multipart/form-data` request body, so that
//! `--ignore-form-field` can leave some out (mitmproxy's
//! `server_replay_ignore_payload_params`).
//!
//! As in mitmproxy, the kind of body is told by the Content-Type alone (multipart
//! first), urlencoded names and values are compared decoded (`a+b` and `a%20b` are one
//! value), and a body that yields no field at all is keyed by its raw bytes.

/// One form field: name and value, decoded.
pub type FormField = (Vec<u8>, Vec<u8>);

/// Which kind of form a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormKind {
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data`.
    Multipart,
}

/// The kind and fields of `body` under `content_type`, in body order; None when the
/// body is not a form or has no field.
pub fn fields(content_type: &[u8], body: &[u8]) -> Option<(FormKind, Vec<FormField>)> {
    let ct = content_type.to_ascii_lowercase();
    let (kind, found) = if contains(&ct, b"multipart/form-data") {
        (
            FormKind::Multipart,
            multipart(&boundary(content_type)?, body),
        )
    } else if contains(&ct, b"application/x-www-form-urlencoded") {
        (FormKind::UrlEncoded, urlencoded(body))
    } else {
        return None;
    };
    (!found.is_empty()).then_some((kind, found))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `boundary` parameter of a multipart Content-Type.
fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    param(content_type, b"boundary")
        .filter(|b| !b.is_empty())
        .map(<[u8]>::to_vec)
}

/// Parameter `name` of a header value `token; a=1; b="2"`, unquoted.
fn param<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    value.split(|&c| c == b';').skip(1).find_map(|p| {
        let (k, v) = split_once(p, b'=')?;
        if !k.trim_ascii().eq_ignore_ascii_case(name) {
            return None;
        }
        let v = v.trim_ascii();
        Some(
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v),
        )
    })
}

fn split_once(b: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == sep)?;
    Some((&b[..i], &b[i + 1..]))
}

/// `a=1&b=x+y`: fields split on `&`, `+` as space, percent escapes decoded; a field
/// without `=` has an empty value and empty fields are skipped (Python's
/// `parse_qsl(keep_blank_values=True)`, which mitmproxy uses).
pub fn urlencoded(body: &[u8]) -> Vec<FormField> {
    body.split(|&c| c == b'&')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (n, v) = split_once(f, b'=').unwrap_or((f, b""));
            (unescape(n), unescape(v))
        })
        .collect()
}

/// Percent-decodes `s` with `+` as space; a `%` not followed by two hex digits stays.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (s[i], escape_at(s, i)) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(if c == b'+' { b' ' } else { c });
                i += 1;
            }
        }
    }
    out
}

/// The byte of the `%XX` escape at `i`, if there is one.
fn escape_at(s: &[u8], i: usize) -> Option<u8> {
    let hex = |k: usize| (*s.get(k)? as char).to_digit(16);
    Some((hex(i + 1)? * 16 + hex(i + 2)?) as u8)
}

/// The parts of a multipart body: each part's `name` (from its Content-Disposition)
/// and its content; parts without a name are skipped. Delimiters are `--boundary` at
/// the start of a line (RFC 2046), the CRLF before one belongs to it, not to the part.
pub fn multipart(boundary: &[u8], body: &[u8]) -> Vec<FormField> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut out = Vec::new();
    // the first delimiter may open the body; later ones follow a CRLF
    let Some(mut pos) = find_delim(body, &delim, 0) else {
        return out;
    };
    loop {
        let after = pos + delim.len();
        if body[after..].starts_with(b"--") {
            break; // the close delimiter
        }
        let Some(start) = find(&body[after..], b"\r\n").map(|i| after + i + 2) else {
            break;
        };
        let next = find_delim(body, &delim, start);
        // a body cut before its close delimiter still yields its last part
        let end = next.map_or(body.len(), |n| n.saturating_sub(2).max(start));
        if let Some(f) = part(&body[start..end]) {
            out.push(f);
        }
        match next {
            Some(n) => pos = n,
            None => break,
        }
    }
    out
}

/// The next delimiter at or after `from`: at the very start, or after a CRLF.
fn find_delim(body: &[u8], delim: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i <= body.len() {
        let at = i + find(&body[i..], delim)?;
        if at == 0 || (at >= 2 && &body[at - 2..at] == b"\r\n") {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// One part's headers and content: its name and its content bytes.
fn part(p: &[u8]) -> Option<FormField> {
    // a part without header fields (it starts with its blank line) has no name
    let i = find(p, b"\r\n\r\n").filter(|_| !p.starts_with(b"\r\n"))?;
    let (head, content) = (&p[..i], &p[i + 4..]);
    let name = head.split(|&c| c == b'\n').find_map(|line| {
        let (k, v) = split_once(line, b':')?;
        if !k.trim_ascii().eq_ignore_ascii_case(b"content-disposition") {
            return None;
        }
        // `name`, not `filename`
        param(v, b"name")
    })?;
    Some((name.to_vec(), content.to_vec()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[FormField]) -> Vec<(String, String)> {
        v.iter()
            .map(|(n, v)| {
                let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                (s(n), s(v))
            })
            .collect()
    }

    fn p(n: &str, v: &str) -> (String, String) {
        (n.into(), v.into())
    }

    #[test]
    fn urlencoded_fields_are_decoded_as_python_does() {
        let ct = b"application/x-www-form-urlencoded; charset=UTF-8";
        let (kind, f) = fields(ct, b"a=1&b=x+y%21&&flag&c=%zz&d=%4").unwrap();
        assert_eq!(kind, FormKind::UrlEncoded);
        assert_eq!(
            pairs(&f),
            [
                p("a", "1"),
                p("b", "x y!"),
                p("flag", ""),
                p("c", "%zz"),
                p("d", "%4")
            ]
        );
        assert_eq!(pairs(&urlencoded(b"n%61me=v=w")), [p("name", "v=w")]);
        // not a form, or a form with no field: the raw body keys it
        assert_eq!(fields(b"text/plain", b"a=1"), None);
        assert_eq!(fields(ct, b"&&"), None);
    }

    #[test]
    fn multipart_fields_by_name_whatever_the_boundary() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nabc\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nline1\r\nline2 --XyZ not a delimiter\r\n--XyZ\r\n\r\nno headers\r\n--XyZ\r\nContent-Disposition: form-data; name=q\r\n\r\n\r\n--XyZ--\r\nepilogue";
        let ct = b"multipart/form-data; boundary=\"XyZ\"";
        assert_eq!(
            pairs(&fields(ct, body).unwrap().1),
            [
                p("token", "abc"),
                p("file", "line1\r\nline2 --XyZ not a delimiter"),
                p("q", "")
            ]
        );
        assert_eq!(
            boundary(b"multipart/form-data; charset=x; BOUNDARY=b1"),
            Some(b"b1".to_vec())
        );
        assert_eq!(fields(b"multipart/form-data", body), None, "no boundary");
    }

    #[test]
    fn a_multipart_body_cut_short_keeps_its_last_part() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\npartial";
        assert_eq!(
            pairs(&multipart(b"b", body)),
            [p("a", "1"), p("c", "partial")]
        );
        assert!(multipart(b"b", b"no delimiter here").is_empty());
        assert!(multipart(b"b", b"--b").is_empty());
    }
}
