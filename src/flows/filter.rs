//! mitmproxy's filter expressions (`~d example.com & ~m POST`): the parser and the
//! matcher over recorded flows. The grammar, the fields each operator looks at and
//! each regex's flags follow mitmproxy's `flowfilter.py` (tests/flowfilter_vs_mitmproxy.py
//! checks the two agree); docs/flows.md lists the few differences.

use super::describe::{self, FlowRef};
use super::record::{BodyRec, Field, HttpFlow, TunnelFlow};
use regex::bytes::Regex as BytesRegex;
use regex::Regex;
use std::borrow::Cow;
use std::fmt;
use std::io::Read;

/// Which message of an exchange an operator looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Request or response.
    Both,
    /// The request (and client WebSocket messages / tunnel bytes).
    Request,
    /// The response (and server WebSocket messages / tunnel bytes).
    Response,
}

/// A parsed filter expression.
#[derive(Clone, Debug)]
pub enum Filter {
    /// `~all`.
    All,
    /// `~http`: HTTP flows.
    Http,
    /// `~tcp`: tunnel flows.
    Tcp,
    /// `~websocket`.
    WebSocket,
    /// `~e`: the flow failed.
    Error,
    /// `~q`: a request with no response.
    NoResponse,
    /// `~s`: a response.
    HasResponse,
    /// `~a`: the response is a script, stylesheet, image or font.
    Asset,
    /// `~d`: the request's host or Host header.
    Domain(Regex),
    /// `~u` or a bare word: the full URL.
    Url(Regex),
    /// `~src`: the client address.
    Src(Regex),
    /// `~dst`: the upstream address.
    Dst(Regex),
    /// `~meta`: plugins' notes, one "key: value" line each.
    Meta(Regex),
    /// `~m`: the method.
    Method(BytesRegex),
    /// `~h`, `~hq`, `~hs`: a "name: value" header line.
    Header(Side, BytesRegex),
    /// `~b`, `~bq`, `~bs`: the body (content-decoded) or WebSocket / tunnel bytes.
    Body(Side, BytesRegex),
    /// `~t`, `~tq`, `~ts`: a Content-Type header value.
    ContentType(Side, BytesRegex),
    /// `~c`: the response status.
    Code(u32),
    /// `!`.
    Not(Box<Filter>),
    /// `&`, and expressions side by side.
    And(Vec<Filter>),
    /// `|`.
    Or(Vec<Filter>),
}

/// A filter that does not parse: what is wrong and where (a byte offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The expression.
    pub expr: String,
    /// Byte offset of the problem.
    pub pos: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let col = self.expr[..self.pos.min(self.expr.len())].chars().count();
        write!(
            f,
            "bad filter at column {}: {}\n  {}\n  {}^",
            col + 1,
            self.msg,
            self.expr,
            " ".repeat(col)
        )
    }
}

impl std::error::Error for ParseError {}

/// The regex flags mitmproxy gives each operator.
#[derive(Clone, Copy)]
enum Flags {
    None,
    IgnoreCase,
    MultiLine,
    DotAll,
}

/// What follows an operator: nothing, a regex, or a number.
enum Arg {
    Unary(Filter),
    Str(fn(Regex) -> Filter, Flags),
    Bytes(fn(BytesRegex) -> Filter, Flags),
    Int,
}

/// The operator named `code` (without its `~`), or why it is refused.
fn operator(code: &str) -> Result<Arg, String> {
    use Flags::*;
    Ok(match code {
        "all" => Arg::Unary(Filter::All),
        "http" => Arg::Unary(Filter::Http),
        "tcp" => Arg::Unary(Filter::Tcp),
        "websocket" => Arg::Unary(Filter::WebSocket),
        "e" => Arg::Unary(Filter::Error),
        "q" => Arg::Unary(Filter::NoResponse),
        "s" => Arg::Unary(Filter::HasResponse),
        "a" => Arg::Unary(Filter::Asset),
        "d" => Arg::Str(Filter::Domain, IgnoreCase),
        "u" => Arg::Str(Filter::Url, IgnoreCase),
        "src" => Arg::Str(Filter::Src, None),
        "dst" => Arg::Str(Filter::Dst, None),
        "meta" => Arg::Str(Filter::Meta, MultiLine),
        "m" => Arg::Bytes(Filter::Method, IgnoreCase),
        "h" => Arg::Bytes(|r| Filter::Header(Side::Both, r), MultiLine),
        "hq" => Arg::Bytes(|r| Filter::Header(Side::Request, r), MultiLine),
        "hs" => Arg::Bytes(|r| Filter::Header(Side::Response, r), MultiLine),
        "b" => Arg::Bytes(|r| Filter::Body(Side::Both, r), DotAll),
        "bq" => Arg::Bytes(|r| Filter::Body(Side::Request, r), DotAll),
        "bs" => Arg::Bytes(|r| Filter::Body(Side::Response, r), DotAll),
        "t" => Arg::Bytes(|r| Filter::ContentType(Side::Both, r), None),
        "tq" => Arg::Bytes(|r| Filter::ContentType(Side::Request, r), None),
        "ts" => Arg::Bytes(|r| Filter::ContentType(Side::Response, r), None),
        "c" => Arg::Int,
        "marked" | "marker" | "replay" | "replayq" | "replays" | "comment" | "udp" | "dns" => {
            return Err(format!(
                "~{code} is a mitmproxy operator that luring flows do not support"
            ))
        }
        _ => return Err(format!("unknown operator ~{code}")),
    })
}

/// Characters that end a bare word (mitmproxy: `CharsNotIn("()~'\"" + whitespace)`).
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '~' | '\'' | '"')
}

/// A recursive-descent parser over the expression's bytes.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Filter {
    /// Parses a mitmproxy filter expression.
    pub fn parse(expr: &str) -> Result<Filter, ParseError> {
        let mut p = Parser { s: expr, pos: 0 };
        p.skip_ws();
        if p.at_end() {
            return Err(p.err(0, "empty filter expression"));
        }
        // Expressions side by side at the top level are and-ed, as in mitmproxy
        // (`pp.OneOrMore(expr)`), and bind more loosely than `|`.
        let mut all = vec![p.or()?];
        loop {
            p.skip_ws();
            match p.peek() {
                None => break,
                Some(')') => return Err(p.err(p.pos, "unbalanced ')'")),
                Some(_) => all.push(p.or()?),
            }
        }
        Ok(if all.len() == 1 {
            all.pop().unwrap()
        } else {
            Filter::And(all)
        })
    }
}

impl Parser<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            expr: self.s.to_string(),
            pos,
            msg: msg.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    /// Consumes `c` after optional whitespace.
    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Filter, ParseError> {
        let mut v = vec![self.and()?];
        while self.eat('|') {
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Filter::Or(v)
        })
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut v = vec![self.not()?];
        while self.eat('&') {
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Filter::And(v)
        })
    }

    fn not(&mut self) -> Result<Filter, ParseError> {
        if self.eat('!') {
            return Ok(Filter::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Filter, ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(self.err(start, "expected an expression")),
            Some('(') => {
                self.pos += 1;
                let inner = self.or()?;
                if !self.eat(')') {
                    return Err(self.err(self.pos, "expected ')'"));
                }
                Ok(inner)
            }
            Some(')') => Err(self.err(start, "expected an expression before ')'")),
            Some('~') => self.operator(),
            Some(_) => {
                let word = self.regex_text()?;
                Ok(Filter::Url(
                    str_regex(&word, Flags::IgnoreCase).map_err(|e| self.err(start, e))?,
                ))
            }
        }
    }

    /// `~code` and its argument.
    fn operator(&mut self) -> Result<Filter, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let name_len = self.s[self.pos..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(self.s.len() - self.pos);
        let code = &self.s[self.pos..self.pos + name_len];
        self.pos += name_len;
        // mitmproxy wants a word end after the operator; luring also takes a
        // parenthesis there, so `(~q)` works.
        if !self
            .peek()
            .is_none_or(|c| c.is_whitespace() || c == '(' || c == ')')
        {
            return Err(self.err(self.pos, format!("expected a space after ~{code}")));
        }
        let arg = operator(code).map_err(|m| self.err(start, m))?;
        self.skip_ws();
        let at = self.pos;
        match arg {
            Arg::Unary(f) => Ok(f),
            Arg::Str(make, flags) => {
                let text = self.argument(code)?;
                Ok(make(str_regex(&text, flags).map_err(|e| self.err(at, e))?))
            }
            Arg::Bytes(make, flags) => {
                let text = self.argument(code)?;
                Ok(make(
                    bytes_regex(&text, flags).map_err(|e| self.err(at, e))?,
                ))
            }
            Arg::Int => {
                let digits = self.s[at..]
                    .find(|c: char| c.is_whitespace() || c == ')')
                    .unwrap_or(self.s.len() - at);
                let text = &self.s[at..at + digits];
                let code_num = text
                    .parse::<u32>()
                    .map_err(|_| self.err(at, format!("~{code} needs a status code")))?;
                self.pos += digits;
                Ok(Filter::Code(code_num))
            }
        }
    }

    /// The regex after an operator.
    fn argument(&mut self, code: &str) -> Result<String, ParseError> {
        match self.peek() {
            None | Some('(' | ')' | '~') => {
                Err(self.err(self.pos, format!("~{code} needs a regex")))
            }
            _ => self.regex_text(),
        }
    }

    /// A quoted string or a bare word.
    fn regex_text(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.pos += 1;
                self.quoted(q, start)
            }
            _ => {
                let len = self.s[start..]
                    .find(ends_word)
                    .unwrap_or(self.s.len() - start);
                if len == 0 {
                    return Err(self.err(start, "expected a regex"));
                }
                self.pos += len;
                Ok(self.s[start..self.pos].to_string())
            }
        }
    }

    /// The rest of a quoted string: pyparsing's `QuotedString(q, escChar="\\")`
    /// turns \t \n \f \r into those characters and `\x` into `x` for any other x.
    fn quoted(&mut self, q: char, start: usize) -> Result<String, ParseError> {
        let mut out = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(match e {
                        't' => '\t',
                        'n' => '\n',
                        'f' => '\x0c',
                        'r' => '\r',
                        other => other,
                    }),
                    None => break,
                },
                c if c == q => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err(self.err(start, "unterminated quoted string"))
    }
}

/// A text regex with mitmproxy's flags for its operator.
fn str_regex(text: &str, flags: Flags) -> Result<Regex, String> {
    regex::RegexBuilder::new(text)
        .case_insensitive(matches!(flags, Flags::IgnoreCase))
        .multi_line(matches!(flags, Flags::MultiLine))
        .dot_matches_new_line(matches!(flags, Flags::DotAll))
        .build()
        .map_err(|e| format!("bad regex {text:?}: {e}"))
}

/// A bytes regex like Python's `re.compile(text.encode())`: ASCII classes and case
/// folding, `.` matches any byte, so binary bodies match as in mitmproxy.
fn bytes_regex(text: &str, flags: Flags) -> Result<BytesRegex, String> {
    let build = |unicode: bool| {
        regex::bytes::RegexBuilder::new(text)
            .unicode(unicode)
            .case_insensitive(matches!(flags, Flags::IgnoreCase))
            .multi_line(matches!(flags, Flags::MultiLine))
            .dot_matches_new_line(matches!(flags, Flags::DotAll))
            .build()
    };
    // Without Unicode mode a non-ASCII literal may be refused; with it, it matches
    // its UTF-8 bytes, which is what Python does with the encoded pattern.
    build(false)
        .or_else(|_| build(true))
        .map_err(|e| format!("bad regex {text:?}: {e}"))
}

impl Filter {
    /// Whether the flow matches.
    pub fn matches(&self, f: FlowRef<'_>) -> bool {
        match (self, f) {
            (Filter::All, _) => true,
            (Filter::Not(x), f) => !x.matches(f),
            (Filter::And(v), f) => v.iter().all(|x| x.matches(f)),
            (Filter::Or(v), f) => v.iter().any(|x| x.matches(f)),
            (Filter::Error, FlowRef::Http(h)) => h.error.is_some(),
            (Filter::Error, FlowRef::Tunnel(t)) => t.error.is_some(),
            (Filter::Src(r), FlowRef::Http(h)) => addr_matches(r, &h.client),
            (Filter::Src(r), FlowRef::Tunnel(t)) => addr_matches(r, &t.client),
            (Filter::Dst(r), FlowRef::Http(h)) => addr_matches(r, &h.server),
            (Filter::Dst(r), FlowRef::Tunnel(t)) => addr_matches(r, &t.server),
            (Filter::Meta(r), FlowRef::Http(h)) => r.is_match(&notes_text(&h.notes)),
            (Filter::Meta(r), FlowRef::Tunnel(_)) => r.is_match(""),
            (Filter::Tcp, f) => matches!(f, FlowRef::Tunnel(_)),
            (Filter::Body(side, r), FlowRef::Tunnel(t)) => tunnel_body(*side, r, t),
            (_, FlowRef::Tunnel(_)) => false,
            (f, FlowRef::Http(h)) => f.matches_http(h),
        }
    }

    /// The operators that only look at HTTP flows (mitmproxy's `@only(http.HTTPFlow)`).
    fn matches_http(&self, h: &HttpFlow) -> bool {
        let req = &h.request;
        let resp = h.response.as_ref();
        match self {
            Filter::Http => true,
            Filter::WebSocket => describe::is_websocket(h),
            Filter::NoResponse => resp.is_none(),
            Filter::HasResponse => resp.is_some(),
            Filter::Asset => resp.is_some_and(|r| is_asset(&r.headers)),
            Filter::Domain(r) => {
                r.is_match(describe::host(req)) || r.is_match(&describe::pretty_host(req))
            }
            Filter::Url(r) => r.is_match(&describe::url(req)),
            Filter::Method(r) => r.is_match(req.method.as_bytes()),
            Filter::Code(c) => resp.is_some_and(|r| u32::from(r.status) == *c),
            Filter::ContentType(side, r) => {
                let q = *side != Side::Response && content_type_matches(r, &req.headers);
                let s = *side != Side::Request
                    && resp.is_some_and(|x| content_type_matches(r, &x.headers));
                q || s
            }
            Filter::Header(side, r) => {
                let q = *side != Side::Response && r.is_match(&header_block(&req.headers));
                let s = *side != Side::Request
                    && resp.is_some_and(|x| r.is_match(&header_block(&x.headers)));
                q || s
            }
            Filter::Body(side, r) => http_body(*side, r, h),
            _ => false,
        }
    }
}

/// Headers as mitmproxy's `bytes(headers)`: "name: value" lines joined by CRLF with a
/// final CRLF, names in their recorded case. `~h` regexes run over this block.
fn header_block(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn content_type_matches(r: &BytesRegex, fields: &[Field]) -> bool {
    fields
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case(b"content-type") && r.is_match(v))
}

/// mitmproxy's `~a` content types (case-sensitive, searched anywhere in the value).
fn is_asset(fields: &[Field]) -> bool {
    static ASSETS: std::sync::OnceLock<BytesRegex> = std::sync::OnceLock::new();
    let re = ASSETS.get_or_init(|| {
        BytesRegex::new(
            "(?-u)text/javascript|application/x-javascript|application/javascript\
             |text/css|image/.*|font/.*|application/font.*",
        )
        .expect("asset regex")
    });
    content_type_matches(re, fields)
}

fn addr_matches(r: &Regex, addr: &str) -> bool {
    !addr.is_empty() && r.is_match(addr)
}

/// Notes as mitmproxy's `~meta` sees metadata: "key: value" lines.
fn notes_text(notes: &[(String, String)]) -> String {
    let lines: Vec<String> = notes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    lines.join("\n")
}

fn http_body(side: Side, r: &BytesRegex, h: &HttpFlow) -> bool {
    let req = side != Side::Response && r.is_match(&decoded(&h.request.headers, &h.request.body));
    let resp = side != Side::Request
        && h.response
            .as_ref()
            .is_some_and(|x| r.is_match(&decoded(&x.headers, &x.body)));
    req || resp
        || h.websocket.iter().any(|m| {
            let wanted = match side {
                Side::Both => true,
                Side::Request => m.from_client,
                Side::Response => !m.from_client,
            };
            wanted && r.is_match(&m.data)
        })
}

fn tunnel_body(side: Side, r: &BytesRegex, t: &TunnelFlow) -> bool {
    t.chunks.iter().any(|c| {
        let wanted = match side {
            Side::Both => true,
            Side::Request => c.from_client,
            Side::Response => !c.from_client,
        };
        wanted && r.is_match(&c.data)
    })
}

/// Largest decoded body a filter looks at; a compression bomb is searched only this far.
const MAX_DECODED: u64 = 64 << 20;

/// The body with its Content-Encoding undone (gzip, deflate, zstd), as mitmproxy's
/// `get_content(strict=False)`: an encoding it cannot undo leaves the bytes as stored.
fn decoded<'a>(headers: &[Field], body: &'a BodyRec) -> Cow<'a, [u8]> {
    let raw = Cow::Borrowed(body.data.as_slice());
    let Some(enc) = describe::header(headers, "content-encoding") else {
        return raw;
    };
    let enc = String::from_utf8_lossy(enc).trim().to_ascii_lowercase();
    let data = body.data.as_slice();
    let mut out = Vec::new();
    let ok = match enc.as_str() {
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(data)
            .take(MAX_DECODED)
            .read_to_end(&mut out)
            .is_ok(),
        "deflate" => {
            flate2::read::ZlibDecoder::new(data)
                .take(MAX_DECODED)
                .read_to_end(&mut out)
                .is_ok()
                || {
                    out.clear();
                    flate2::read::DeflateDecoder::new(data)
                        .take(MAX_DECODED)
                        .read_to_end(&mut out)
                        .is_ok()
                }
        }
        "zstd" => zstd::stream::read::Decoder::new(data)
            .and_then(|d| d.take(MAX_DECODED).read_to_end(&mut out))
            .is_ok(),
        _ => false,
    };
    if ok {
        Cow::Owned(out)
    } else {
        raw
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
