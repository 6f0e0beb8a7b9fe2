//! Request and response heads.

use std::mem::MaybeUninit;

use crate::http::{is_tchar, known_names, Headers, RequestHead, ResponseHead, Version};
use bytes::{BufMut, Bytes, BytesMut};

use super::byte_scan::{field_line, tchar_run, visible_run};
use super::{known, BodyKind};

/// Limits applied while parsing a head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest head accepted, in bytes (request line + headers + CRLFCRLF).
    pub max_head_size: usize,
    /// Largest number of header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_size: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// Why a head was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head is larger than `max_head_size` (answer 431).
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    /// More than `max_headers` fields (answer 431).
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Not valid HTTP/1.x (answer 400); the text says what was wrong.
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    /// A well-formed request line of HTTP/2 or later (answer 505, as nginx does).
    #[error("HTTP version {0}.x not supported")]
    VersionNotSupported(u8),
    /// A request body in a transfer coding luring does not know (answer 501, RFC 9112
    /// 6.1): the next hop could not be trusted to frame it as luring does.
    #[error("transfer coding not implemented")]
    CodingNotImplemented,
}

/// Header slots kept on the stack; a head with more fields (under a larger
/// `max_headers`) is parsed again with slots on the heap. Uninitialised slots cost
/// nothing to set up, so a generous size is free.
const STACK_HEADERS: usize = 128;

type Slot<'b> = MaybeUninit<httparse::Header<'b>>;

/// Parses a request head. `Ok(None)`: incomplete, read more.
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Only the first max_head_size bytes can hold an acceptable head, so never parse more:
    // an endless head costs at most one bounded parse per read.
    let window = &buf[..buf.len().min(limits.max_head_size)];
    let mut slots = [Slot::uninit(); STACK_HEADERS];
    let stack = limits.max_headers.min(STACK_HEADERS);
    if let Some(plain) = scan_plain_request(window, &mut slots[..stack]) {
        return Ok(Some(plain));
    }
    match request_with(buf.len(), window, limits, &mut slots[..stack]) {
        // only a head with that many fields pays for slots on the heap
        Err(HeadError::TooManyHeaders(_)) if limits.max_headers > STACK_HEADERS => {
            let mut slots = vec![Slot::uninit(); limits.max_headers];
            request_with(buf.len(), window, limits, &mut slots)
        }
        r => r,
    }
}

/// The parse of [`request_with`] without httparse, for request heads as clients send
/// them nearly always: a token method, one space, a target of visible ASCII, one space,
/// `HTTP/1.0` or `HTTP/1.1`, CRLF, then only plain `Name: value` CRLF lines (as
/// `byte_scan::field_line` takes them), at most as many as `slots` holds. None for
/// anything else (an empty line first, a bare LF, whitespace around a value, obs-text in
/// the target, an incomplete head), which then goes to httparse. A head this takes
/// parses there to an equal `RequestHead` ([`plain_request_agrees`]).
pub(super) fn scan_plain_request<'b>(
    window: &'b [u8],
    slots: &mut [Slot<'b>],
) -> Option<(RequestHead, usize)> {
    let method_len = tchar_run(window)?;
    if method_len == 0 || window[method_len] != b' ' {
        return None;
    }
    let target_at = method_len + 1;
    let target_len = visible_run(&window[target_at..])?;
    let version_at = target_at + target_len + 1;
    if target_len == 0 || window[version_at - 1] != b' ' {
        return None;
    }
    let minor = match window.get(version_at..version_at + 10)? {
        b"HTTP/1.1\r\n" => 1,
        b"HTTP/1.0\r\n" => 0,
        _ => return None,
    };
    let (fields, n) = plain_fields(window, version_at + 10, slots)?;
    let method = &window[..method_len];
    let target = &window[target_at..target_at + target_len];
    Some((model_request(window, n, method, target, minor, fields), n))
}

/// The plain field lines from `p` up to the blank line (`byte_scan::field_line`), as
/// httparse would hand them out, in the first of `slots`; and where the head ends. None
/// for a line that is not plain, more lines than `slots`, or no blank line yet.
fn plain_fields<'h, 'b>(
    window: &'b [u8],
    mut p: usize,
    slots: &'h mut [Slot<'b>],
) -> Option<(&'h mut [httparse::Header<'b>], usize)> {
    let mut fields = 0;
    while window.get(p..p + 2)? != b"\r\n" {
        let slot = slots.get_mut(fields)?;
        let (colon, value_end) = field_line(window, p)?;
        slot.write(httparse::Header {
            // SAFETY: `field_line` takes only token characters (ASCII) as a name.
            name: unsafe { std::str::from_utf8_unchecked(&window[p..colon]) },
            value: &window[colon + 2..value_end],
        });
        fields += 1;
        p = value_end + 2;
    }
    // SAFETY: the first `fields` slots were written above, and `MaybeUninit<T>` has the
    // layout of `T`.
    let headers = unsafe {
        std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast::<httparse::Header<'b>>(), fields)
    };
    Some((headers, p + 2))
}

/// Checks that a head [`scan_plain_request`] takes parses to the same `RequestHead`
/// through httparse (the fuzz targets and unit tests call it).
pub fn plain_request_agrees(buf: &[u8], limits: &Limits) {
    let window = &buf[..buf.len().min(limits.max_head_size)];
    let mut slots = vec![Slot::uninit(); limits.max_headers];
    let Some(fast) = scan_plain_request(window, &mut slots) else {
        return;
    };
    let mut slots = vec![Slot::uninit(); limits.max_headers];
    match request_with(buf.len(), window, limits, &mut slots) {
        Ok(Some(slow)) => assert_eq!(slow, fast, "{:?}", String::from_utf8_lossy(buf)),
        other => panic!(
            "{:?} passed the plain scan, httparse says {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn request_with<'b>(
    full_len: usize,
    window: &'b [u8],
    limits: &Limits,
    slots: &mut [Slot<'b>],
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial(full_len, limits),
        Err(httparse::Error::Version) => {
            return match later_version(window) {
                LaterVersion::Major(major) => Err(HeadError::VersionNotSupported(major)),
                LaterVersion::HigherMinor(at) => {
                    // read as HTTP/1.1 (RFC 9112 2.3): parse a copy that says so
                    let mut copy = window.to_vec();
                    copy[at] = b'1';
                    match parse_request_head(&copy, limits) {
                        Ok(None) => partial(full_len, limits),
                        r => r,
                    }
                }
                LaterVersion::Undecided => partial(full_len, limits),
                LaterVersion::No => Err(HeadError::Malformed("unsupported HTTP version")),
            };
        }
        Err(e) => return Err(map_error(e, window, limits)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let head = model_request(
        window,
        n,
        method.as_bytes(),
        target.as_bytes(),
        minor,
        req.headers,
    );
    Ok(Some((head, n)))
}

/// The request head model of a complete parse of `window[..n]`, whose parts (slices of
/// `window`) come from httparse or from [`scan_plain_request`].
fn model_request(
    window: &[u8],
    n: usize,
    method: &[u8],
    target: &[u8],
    minor: u8,
    fields: &[httparse::Header<'_>],
) -> RequestHead {
    let raw = Bytes::copy_from_slice(&window[..n]);
    let cut = Cutter {
        base: window.as_ptr() as usize,
        raw: &raw,
    };
    RequestHead {
        method: cut.slice_or(method, known::method),
        target: cut.slice(target),
        version: version(minor),
        headers: cut.headers(fields),
    }
}

/// Parses a response head. `Ok(None)`: incomplete, read more.
pub fn parse_response_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    parse_response_with(buf, limits, model_response)
}

/// Parses a response head with httparse and hands the parse to `build`. The slots live
/// on the stack unless the head has more fields than that (under a larger
/// `max_headers`), when it is parsed again with slots on the heap.
pub(super) fn parse_response_with<T>(
    buf: &[u8],
    limits: &Limits,
    build: impl Fn(&httparse::Response<'_, '_>, &[u8], usize) -> T,
) -> Result<Option<(T, usize)>, HeadError> {
    let window = &buf[..buf.len().min(limits.max_head_size)];
    let mut slots = [Slot::uninit(); STACK_HEADERS];
    let stack = limits.max_headers.min(STACK_HEADERS);
    match response_with(buf.len(), window, limits, &mut slots[..stack], &build) {
        Err(HeadError::TooManyHeaders(_)) if limits.max_headers > STACK_HEADERS => {
            let mut slots = vec![Slot::uninit(); limits.max_headers];
            response_with(buf.len(), window, limits, &mut slots, &build)
        }
        r => r,
    }
}

fn response_with<'b, T>(
    full_len: usize,
    window: &'b [u8],
    limits: &Limits,
    slots: &mut [Slot<'b>],
    build: &impl Fn(&httparse::Response<'_, 'b>, &'b [u8], usize) -> T,
) -> Result<Option<(T, usize)>, HeadError> {
    if let Some((res, n)) = scan_plain_response(window, slots) {
        return Ok(Some((build(&res, window, n), n)));
    }
    httparse_response(full_len, window, limits, slots, build)
}

/// [`response_with`] through httparse alone.
pub(super) fn httparse_response<'b, T>(
    full_len: usize,
    window: &'b [u8],
    limits: &Limits,
    slots: &mut [Slot<'b>],
    build: &impl Fn(&httparse::Response<'_, 'b>, &'b [u8], usize) -> T,
) -> Result<Option<(T, usize)>, HeadError> {
    let mut res = httparse::Response::new(&mut []);
    // Default config: obs-fold, whitespace before the colon and leading whitespace are all
    // rejected in responses too (RFC 9112 5.2 lets a proxy answer 502 instead of unfolding).
    let config = httparse::ParserConfig::default();
    let n = match config.parse_response_with_uninit_headers(&mut res, window, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial(full_len, limits),
        Err(e) => return Err(map_error(e, window, limits)),
    };
    if res.version.is_none() || res.reason.is_none() {
        return Err(HeadError::Malformed("incomplete status line"));
    }
    match res.code {
        None => Err(HeadError::Malformed("incomplete status line")),
        Some(s) if s < 100 => Err(HeadError::Malformed("status code below 100")),
        Some(_) => Ok(Some((build(&res, window, n), n))),
    }
}

/// The status line as upstreams send it nearly always: `HTTP/1.0` or `HTTP/1.1`, a
/// three-digit status, and either no reason or one space and a non-empty reason of
/// printable ASCII, then CRLF. Returns the minor version, the status, the reason's range
/// and where the field lines start; None for any other line.
pub(super) fn plain_status_line(window: &[u8]) -> Option<(u8, u16, (usize, usize), usize)> {
    let line = window.get(..13)?;
    let minor = match line[..9] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', m @ (b'0' | b'1'), b' '] => m - b'0',
        _ => return None,
    };
    let digit = |b: u8| b.is_ascii_digit().then(|| u16::from(b - b'0'));
    let status = digit(line[9])? * 100 + digit(line[10])? * 10 + digit(line[11])?;
    let (reason, p) = match line[12] {
        b'\r' => ((0, 0), 12),
        b' ' => {
            let len = window[13..]
                .iter()
                .position(|&b| !(b' '..=b'~').contains(&b))?;
            (len > 0).then_some(((13, 13 + len), 13 + len))?
        }
        _ => return None,
    };
    if window.get(p..p + 2)? != b"\r\n" {
        return None;
    }
    Some((minor, status, reason, p + 2))
}

/// What httparse makes of a response head with a plain status line (at least 100) and
/// only plain field lines (`byte_scan::field_line`), at most as many as `slots` holds,
/// made without it: the parse a response hook's field list is built from. None for any
/// other head, which httparse then parses; [`plain_response_agrees`] checks the two
/// agree.
pub(super) fn scan_plain_response<'h, 'b>(
    window: &'b [u8],
    slots: &'h mut [Slot<'b>],
) -> Option<(httparse::Response<'h, 'b>, usize)> {
    let (minor, status, reason, p) = plain_status_line(window)?;
    if status < 100 {
        return None;
    }
    let (headers, n) = plain_fields(window, p, slots)?;
    let response = httparse::Response {
        version: Some(minor),
        code: Some(status),
        // SAFETY: the reason is printable ASCII.
        reason: Some(unsafe { std::str::from_utf8_unchecked(&window[reason.0..reason.1]) }),
        headers,
    };
    Some((response, n))
}

/// Checks that a head [`scan_plain_response`] takes is parsed by httparse to the same
/// field-list head (the fuzz targets and unit tests call it).
pub fn plain_response_agrees(buf: &[u8], limits: &Limits) {
    let window = &buf[..buf.len().min(limits.max_head_size)];
    let mut slots = vec![Slot::uninit(); limits.max_headers];
    let Some((res, n)) = scan_plain_response(window, &mut slots) else {
        return;
    };
    let fast = model_response(&res, window, n);
    let mut slots = vec![Slot::uninit(); limits.max_headers];
    match httparse_response(buf.len(), window, limits, &mut slots, &model_response) {
        Ok(Some((slow, m))) => {
            assert_eq!(m, n, "head length of {:?}", String::from_utf8_lossy(buf));
            assert_eq!(slow, fast, "{:?}", String::from_utf8_lossy(buf));
        }
        other => panic!(
            "{:?} passed the plain scan, httparse says {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// The response head model of a complete parse of `window[..n]`.
pub(super) fn model_response(
    res: &httparse::Response<'_, '_>,
    window: &[u8],
    n: usize,
) -> ResponseHead {
    let raw = Bytes::copy_from_slice(&window[..n]);
    let cut = Cutter {
        base: window.as_ptr() as usize,
        raw: &raw,
    };
    let reason = match res.reason.unwrap_or_default() {
        // httparse blanks reasons holding obs-text; a proxy should pass them through as sent.
        "" => raw_reason(&raw),
        r => cut.slice(r.as_bytes()),
    };
    ResponseHead {
        version: version(res.version.unwrap_or(1)),
        status: res.code.unwrap_or_default(),
        reason,
        headers: cut.headers(res.headers),
    }
}

fn partial<T>(full_len: usize, limits: &Limits) -> Result<Option<T>, HeadError> {
    // A head that is still open after max_head_size bytes can only end up too large.
    if full_len >= limits.max_head_size {
        Err(HeadError::TooLarge(limits.max_head_size))
    } else {
        Ok(None)
    }
}

pub(super) fn version(minor: u8) -> Version {
    if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    }
}

/// Turns httparse's borrowed slices into `Bytes` sharing one copy of the head.
struct Cutter<'a> {
    base: usize,
    raw: &'a Bytes,
}

impl Cutter<'_> {
    fn slice(&self, s: &[u8]) -> Bytes {
        if s.is_empty() {
            return Bytes::new();
        }
        let start = (s.as_ptr() as usize).wrapping_sub(self.base);
        match start.checked_add(s.len()) {
            Some(end) if end <= self.raw.len() => self.raw.slice(start..end),
            // httparse only hands out slices of its input; copying keeps us panic-free anyway.
            _ => Bytes::copy_from_slice(s),
        }
    }

    #[inline]
    fn slice_or(&self, s: &[u8], table: fn(&[u8]) -> Option<&'static [u8]>) -> Bytes {
        match table(s) {
            Some(k) => Bytes::from_static(k),
            None => self.slice(s),
        }
    }

    fn headers(&self, fields: &[httparse::Header<'_>]) -> Headers {
        // room for the few fields the proxy or a plugin adds, so adding one does not
        // copy the list into a new allocation
        let mut headers = Headers::with_capacity(fields.len() + 4);
        for h in fields {
            headers.push_wire(
                self.slice_or(h.name.as_bytes(), known::name),
                self.slice_or(h.value, known::value),
            );
        }
        headers
    }
}

/// The reason phrase taken straight from the status line ("HTTP/1.1 200 " is 13 bytes).
pub(super) fn raw_reason(raw: &Bytes) -> Bytes {
    let start = raw
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let line_end = raw[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(raw.len(), |i| start + i);
    let mut end = line_end;
    if end > start && raw[end - 1] == b'\r' {
        end -= 1;
    }
    if end <= start + 13 {
        return Bytes::new();
    }
    raw.slice(start + 13..end)
}

/// What a request line that httparse refused for its version says about it.
enum LaterVersion {
    /// Well formed, of HTTP/2 or later (`GET / HTTP/2.0`): RFC 9110 answers 505.
    Major(u8),
    /// Well formed, of HTTP/1.2 to 1.9: read as HTTP/1.1, as RFC 9112 asks (and nginx
    /// does). The index of the minor digit in the window.
    HigherMinor(usize),
    /// The line has not ended and may still become such a line: wait for more.
    Undecided,
    /// Anything else: malformed.
    No,
}

/// Looks at a request line refused for its version; only runs on the error path. A
/// prefix of a line gets [`LaterVersion::Undecided`] or the whole line's answer.
fn later_version(window: &[u8]) -> LaterVersion {
    let Some(start) = window.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return LaterVersion::No;
    };
    let rest = &window[start..];
    let (line, ended) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]), true),
        None => (rest.strip_suffix(b"\r").unwrap_or(rest), false),
    };
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return LaterVersion::No;
    };
    if method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| b.is_ascii_graphic())
    {
        return LaterVersion::No;
    }
    const FORM: &[u8] = b"HTTP/D.D";
    let fits = version.len() <= FORM.len()
        && version.iter().zip(FORM).all(|(&b, &f)| match f {
            b'D' => b.is_ascii_digit(),
            _ => b == f,
        });
    if !fits || version.get(5) == Some(&b'0') {
        return LaterVersion::No;
    }
    if !ended {
        return LaterVersion::Undecided;
    }
    if version.len() != FORM.len() {
        return LaterVersion::No;
    }
    // HTTP/M.m with digits (`fits`), M not 0
    match (version[5], version[7]) {
        // the minor digit is the line's last byte
        (b'1', minor) if minor >= b'2' => LaterVersion::HigherMinor(start + line.len() - 1),
        (major, _) if major >= b'2' => LaterVersion::Major(major - b'0'),
        _ => LaterVersion::No,
    }
}

fn map_error(e: httparse::Error, window: &[u8], limits: &Limits) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders(limits.max_headers),
        httparse::Error::HeaderName => HeadError::Malformed(diagnose_field_line(window)),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid character in field value"),
        httparse::Error::NewLine => HeadError::Malformed("bad line ending"),
        httparse::Error::Status => HeadError::Malformed("bad status line"),
        httparse::Error::Token => HeadError::Malformed("bad request line"),
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
    }
}

/// Explains a rejected field line; only runs on the error path. It looks at the first
/// byte after each field name, which is where httparse stops, so a prefix of the input
/// gets the same explanation as the whole of it.
fn diagnose_field_line(window: &[u8]) -> &'static str {
    let mut lines = window
        .split(|&b| b == b'\n')
        .skip_while(|l| l.is_empty() || *l == b"\r");
    // The start line parsed fine, otherwise httparse would have reported that instead.
    lines.next();
    for (i, line) in lines.enumerate() {
        let name_len = line.iter().take_while(|&&b| is_tchar(b)).count();
        return match (line.get(name_len), name_len) {
            // An unterminated last line, or the end of the head.
            (None, _) | (Some(b'\r'), 0) => break,
            (Some(b':'), 0) => "empty field name",
            (Some(b':'), _) => continue,
            (Some(b' ' | b'\t'), 0) if i == 0 => "whitespace before first header field",
            (Some(b' ' | b'\t'), 0) => "obs-fold line folding",
            (Some(b' ' | b'\t'), _) => "whitespace between field name and colon",
            (Some(b'\r'), _) => "field line without colon",
            _ => "invalid character in field name",
        };
    }
    "invalid field name"
}

/// Appends the wire form of a request head (ends with CRLFCRLF).
pub fn encode_request_head(head: &RequestHead, out: &mut BytesMut) {
    encode_request_parts(&head.method, &head.target, head.version, &head.headers, out);
}

/// [`encode_request_head`] of a head given by its parts.
pub fn encode_request_parts(
    method: &[u8],
    target: &[u8],
    version: Version,
    headers: &Headers,
    out: &mut BytesMut,
) {
    let line = method.len() + target.len() + 12;
    out.reserve(line + fields_len(headers) + 2);
    put_token(out, method);
    out.put_u8(b' ');
    put_target(out, target);
    out.put_u8(b' ');
    out.extend_from_slice(version_str(version));
    out.extend_from_slice(b"\r\n");
    put_fields(out, headers);
    out.extend_from_slice(b"\r\n");
}

/// Appends the wire form of a response head (ends with CRLFCRLF).
pub fn encode_response_head(head: &ResponseHead, out: &mut BytesMut) {
    let line = head.reason.len() + 15;
    out.reserve(line + fields_len(&head.headers) + 2);
    out.extend_from_slice(version_str(head.version));
    out.put_u8(b' ');
    put_status(out, head.status);
    put_text(out, &head.reason);
    out.extend_from_slice(b"\r\n");
    put_fields(out, &head.headers);
    out.extend_from_slice(b"\r\n");
}

/// Canonical reason phrase for a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// Appends a status code as three digits and a space. Out-of-range codes are clamped
/// rather than allowed to shift the line (status-code = 3DIGIT, RFC 9112 4).
pub(super) fn put_status(out: &mut BytesMut, status: u16) {
    let status = status.min(999);
    out.put_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
}

/// `n` in decimal, without leading zeros, written into `digits`.
pub fn decimal(n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &digits[at..]
}

fn version_str(v: Version) -> &'static [u8] {
    match v {
        Version::Http10 => b"HTTP/1.0",
        // An HTTP/2 message relayed over HTTP/1 is sent as HTTP/1.1.
        Version::Http11 | Version::Http2 => b"HTTP/1.1",
    }
}

fn fields_len(headers: &Headers) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum()
}

/// Appends `name: value CRLF` lines. [`Headers`] holds only fields that are safe to
/// write (see [`Headers::add`]), so they are copied as they are.
///
/// The lines are written straight into the reserved room and the length set once:
/// `extend_from_slice` per piece checked the capacity and moved the length four times a
/// field.
pub(crate) fn put_fields(out: &mut BytesMut, headers: &Headers) {
    let len = fields_len(headers);
    out.reserve(len);
    let start = out.len();
    let room = &mut out.spare_capacity_mut()[..len];
    let mut at = 0;
    for h in headers {
        for piece in [&h.name[..], b": ", &h.value[..], b"\r\n"] {
            // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and an initialised byte
            // is a valid `MaybeUninit<u8>`.
            let piece = unsafe { &*(piece as *const [u8] as *const [MaybeUninit<u8>]) };
            room[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
    }
    // `fields_len` counted these very pieces
    assert_eq!(at, len);
    // SAFETY: the `len` bytes after `start` were all written above.
    unsafe { out.set_len(start + len) };
}

/// Appends a reason phrase with CR, LF and NUL replaced by SP.
fn put_text(out: &mut BytesMut, text: &[u8]) {
    // A fold without early exit vectorises; it finds all candidates (and HT) at once, and
    // only then is the exact check run.
    let low = text.iter().fold(0u8, |acc, &b| acc | u8::from(b < 0x0e));
    if low == 0 || !text.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        out.extend_from_slice(text);
        return;
    }
    out.extend(text.iter().map(|&b| {
        if b == b'\r' || b == b'\n' || b == 0 {
            b' '
        } else {
            b
        }
    }));
}

/// Appends the method, dropping bytes that could end the token early.
fn put_token(out: &mut BytesMut, token: &[u8]) {
    if token.iter().all(|&b| is_tchar(b)) {
        out.extend_from_slice(token);
    } else {
        out.extend(token.iter().copied().filter(|&b| is_tchar(b)));
    }
}

/// Appends the target, percent-encoding SP and control bytes so it stays one token.
fn put_target(out: &mut BytesMut, target: &[u8]) {
    let bad = |b: u8| b <= b' ' || b == 0x7f;
    if !target.iter().any(|&b| bad(b)) {
        out.extend_from_slice(target);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in target {
        if bad(b) {
            out.put_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.put_u8(b);
        }
    }
}

/// Body framing of a request (RFC 9112 6.3); conflicting/invalid framing is an error (400).
pub fn request_body_kind(head: &RequestHead) -> Result<BodyKind, HeadError> {
    if has_framing_lookalike(&head.headers) {
        return Err(HeadError::Malformed(
            "field name resembling Transfer-Encoding or Content-Length",
        ));
    }
    let framing = Framing::of(&head.headers)?;
    if framing.te {
        // RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
        if head.version == Version::Http10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        // Request smuggling defence (RFC 9112 6.3 point 3, 11.2): a request carrying both
        // can be framed differently by two hops, so it is refused rather than repaired.
        if framing.length.is_some() {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        // A request body without chunked last has no knowable end (RFC 9112 6.3 point 4).
        if !framing.chunked_last {
            return Err(HeadError::Malformed(
                "chunked is not the final transfer coding",
            ));
        }
        if framing.unknown_coding {
            return Err(HeadError::CodingNotImplemented);
        }
        return Ok(BodyKind::Chunked);
    }
    Ok(match framing.length {
        Some(n) => BodyKind::Length(n),
        None => BodyKind::Empty,
    })
}

/// Body framing of a response to a request with `method` (HEAD, CONNECT 2xx, 1xx/204/304 have none).
pub fn response_body_kind(method: &[u8], head: &ResponseHead) -> Result<BodyKind, HeadError> {
    response_kind(method, head.status, head.version, || {
        Framing::of(&head.headers)
    })
}

/// [`response_body_kind`] of a head whose framing fields `framing` reads (only called
/// when the status and method let the response have a body).
pub(super) fn response_kind(
    method: &[u8],
    status: u16,
    version: Version,
    framing: impl FnOnce() -> Result<Framing, HeadError>,
) -> Result<BodyKind, HeadError> {
    if method == b"HEAD"
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (method == b"CONNECT" && (200..300).contains(&status))
    {
        return Ok(BodyKind::Empty);
    }
    let framing = framing()?;
    if framing.te {
        // Unlike hyper and like nginx, both fields in a response are refused (502) rather
        // than TE winning: forwarding would need the proxy to strip Content-Length, and a
        // client that trusts it instead would desynchronise (response splitting).
        if framing.length.is_some() {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        // HTTP/1.0 cannot use Transfer-Encoding (RFC 9112 6.1): its framing is faulty, and
        // reading until close is the one reading that cannot desynchronise.
        if version == Version::Http10 || !framing.chunked_last {
            return Ok(BodyKind::CloseDelimited);
        }
        return Ok(BodyKind::Chunked);
    }
    Ok(match framing.length {
        Some(n) => BodyKind::Length(n),
        None => BodyKind::CloseDelimited,
    })
}

/// Whether `buf` starts with a whole HTTP/1 request line: a method of capitals, a
/// target, and `HTTP/1.0` or `HTTP/1.1`. Strict on purpose: it decides whether a
/// tunnel's bytes are treated as HTTP, so other protocols must not match.
pub fn looks_like_request_start(buf: &[u8]) -> bool {
    let Some(end) = buf.iter().take(8192).position(|&b| b == b'\n') else {
        return false;
    };
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    (1..=20).contains(&method.len())
        && method.iter().all(u8::is_ascii_uppercase)
        && matches!(
            target.first(),
            Some(b'/' | b'*' | b'a'..=b'z' | b'A'..=b'Z')
        )
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// Whether a field is named like Transfer-Encoding or Content-Length with other
/// delimiters or trailing symbols ("Transfer_Encoding", "Content-Length'"). Such a name
/// is a token of its own (RFC 9110 5.1) that luring ignores for framing and would
/// forward, while servers that fold '_' into '-' (CGI-style) read it as framing: the
/// request is refused instead (found by the http1_request fuzz target's differential).
fn has_framing_lookalike(headers: &Headers) -> bool {
    const SHORTEST: usize = b"contentlength".len();
    headers.iter().any(|h| {
        let n = &h.name;
        if n.len() < SHORTEST
            || n.eq_ignore_ascii_case(b"transfer-encoding")
            || n.eq_ignore_ascii_case(b"content-length")
        {
            return false;
        }
        let mut letters = n.iter().filter(|b| b.is_ascii_alphanumeric());
        let same = |word: &[u8], letters: &mut dyn Iterator<Item = &u8>| {
            word.iter()
                .all(|w| letters.next().is_some_and(|b| b.eq_ignore_ascii_case(w)))
                && letters.next().is_none()
        };
        match n.iter().find(|b| b.is_ascii_alphanumeric()) {
            Some(b't' | b'T') => {
                same(b"transferencoding", &mut letters) || joined(n, b"transfer", b"encoding")
            }
            Some(b'c' | b'C') => {
                same(b"contentlength", &mut letters) || joined(n, b"content", b"length")
            }
            _ => false,
        }
    })
}

/// Whether `name` is `first`, any one byte in place of the '-', then `second`, with
/// only symbols around ("Content2Length", "content_-length"), case aside.
fn joined(name: &[u8], first: &[u8], second: &[u8]) -> bool {
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let skip = |s: &[u8]| -> usize { s.iter().position(alnum).unwrap_or(s.len()) };
    let name = &name[skip(name)..];
    let Some(rest) = name.get(first.len() + 1..) else {
        return false;
    };
    if !name[..first.len()].eq_ignore_ascii_case(first) {
        return false;
    }
    let rest = &rest[skip(rest)..];
    rest.len() >= second.len()
        && rest[..second.len()].eq_ignore_ascii_case(second)
        && !rest[second.len()..].iter().any(alnum)
}

/// Whether Transfer-Encoding names chunked as its final (and only chunked) coding.
pub fn chunked_is_final(headers: &Headers) -> bool {
    Framing::of(headers).is_ok_and(|f| f.chunked_last)
}

/// Transfer codings of the HTTP registry that a request may carry (RFC 9112 7); any
/// other (`xchunked`, `chunked-x`) is how smuggling probes look for a hop that reads it
/// as chunked, so such requests are refused.
const KNOWN_CODINGS: [&[u8]; 5] = [b"chunked", b"gzip", b"deflate", b"compress", b"identity"];

/// What the framing fields of a head say.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Framing {
    /// Transfer-Encoding is present.
    pub(super) te: bool,
    /// chunked is the last transfer coding (and appears only there).
    pub(super) chunked_last: bool,
    /// The one Content-Length value, if present.
    pub(super) length: Option<u64>,
    /// A coding other than the registered chunked, gzip, deflate, compress, identity.
    pub(super) unknown_coding: bool,
}

impl Framing {
    fn of(headers: &Headers) -> Result<Framing, HeadError> {
        let mut f = Framing::default();
        if !headers.may_have(known_names::TRANSFER_ENCODING | known_names::CONTENT_LENGTH) {
            return Ok(f);
        }
        for h in headers {
            if h.name.eq_ignore_ascii_case(b"transfer-encoding") {
                f.transfer_encoding(&h.value)?;
            } else if h.name.eq_ignore_ascii_case(b"content-length") {
                f.content_length(&h.value)?;
            }
        }
        Ok(f)
    }

    /// Takes in one Transfer-Encoding field, in the order the fields came.
    pub(super) fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), HeadError> {
        self.te = true;
        for coding in value.split(|&b| b == b',') {
            let coding = trim_ows(coding);
            if coding.is_empty() {
                // Empty list elements are allowed (RFC 9110 5.6.1).
                continue;
            }
            if self.chunked_last {
                // chunked must be last and applied once (RFC 9112 7).
                return Err(HeadError::Malformed(
                    "chunked is not the final transfer coding",
                ));
            }
            let (name, params) = match coding.iter().position(|&b| b == b';') {
                Some(i) => (trim_ows(&coding[..i]), true),
                None => (coding, false),
            };
            // A coding that is not a token (quoted, a control byte, a space inside) is
            // where two parsers disagree on whether it names chunked, so it is refused
            // rather than read as some other coding.
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(HeadError::Malformed("invalid transfer coding"));
            }
            self.chunked_last = name.eq_ignore_ascii_case(b"chunked");
            self.unknown_coding |= !KNOWN_CODINGS.iter().any(|c| name.eq_ignore_ascii_case(c));
            // chunked takes no parameters (RFC 9112 7.1); a parser that does not expect
            // them may not see chunked at all.
            if self.chunked_last && params {
                return Err(HeadError::Malformed("parameters on the chunked coding"));
            }
        }
        Ok(())
    }

    /// Takes in one Content-Length field.
    pub(super) fn content_length(&mut self, value: &[u8]) -> Result<(), HeadError> {
        // "5, 5" and repeated fields are one length; anything else is a conflict that a
        // different hop could resolve differently (RFC 9110 8.6).
        for v in value.split(|&b| b == b',') {
            let n = parse_length(trim_ows(v))?;
            match self.length {
                Some(m) if m != n => {
                    return Err(HeadError::Malformed("conflicting Content-Length values"))
                }
                _ => self.length = Some(n),
            }
        }
        Ok(())
    }
}

/// The field value without the optional whitespace (SP, HTAB) around it (RFC 9110 5.6.3);
/// other bytes `trim_ascii` would strip (FF, CR, LF) are left for the checks to refuse.
fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// The Transfer-Encoding value to send on when the body is relayed chunked, or `None`
/// when the head already carries exactly one `Transfer-Encoding: chunked`. Every other
/// spelling that was accepted (`CHUNKED`, OWS around it, several fields, codings before
/// chunked) is sent on as one field in one spelling, so the next hop cannot read the
/// framing differently from luring.
pub fn transfer_encoding_to_send(headers: &Headers) -> Option<Bytes> {
    let mut fields = headers.get_all("transfer-encoding");
    match (fields.next(), fields.next()) {
        (Some(v), None) if v.as_ref() == b"chunked" => return None,
        (None, _) => return Some(Bytes::from_static(b"chunked")),
        _ => {}
    }
    let mut out = Vec::new();
    let mut last_chunked = false;
    for v in headers.get_all("transfer-encoding") {
        for coding in v.split(|&b| b == b',') {
            let coding = trim_ows(coding);
            if coding.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend(coding.iter().map(u8::to_ascii_lowercase));
            last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        }
    }
    if !last_chunked {
        // the caller frames the body as chunked itself
        return Some(Bytes::from_static(b"chunked"));
    }
    Some(Bytes::from(out))
}

fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HeadError::Malformed("invalid Content-Length"))?;
    }
    Ok(n)
}
