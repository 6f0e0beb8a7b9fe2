//! Server-sent events (the `text/event-stream` format of the HTML standard), sans-IO:
//! a body is cut into blocks (everything up to and including the blank line that ends
//! an event), each block parsed into its fields, and a changed event written back.
//!
//! A block is kept as its raw bytes, so an event nobody changed goes on byte for byte;
//! only a changed one is re-serialized (with `\n` line ends).

use bytes::{Bytes, BytesMut};

/// The fields of one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `event:` (None: the default type, "message").
    pub event: Option<String>,
    /// `data:` lines joined by "\n".
    pub data: String,
    /// Whether the block had a `data` field (an event without one is not dispatched by
    /// browsers, so a rewrite keeps it without).
    pub has_data: bool,
    /// `id:`.
    pub id: Option<String>,
    /// `retry:` in milliseconds.
    pub retry: Option<u64>,
    /// Comment lines and fields of other names, as they came (without line end).
    pub other: Vec<String>,
}

impl Event {
    /// Writes the event in the wire format, ending with the blank line.
    pub fn serialize(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.len() + 64);
        for o in &self.other {
            out.push_str(o);
            out.push('\n');
        }
        if let Some(e) = &self.event {
            field(&mut out, "event", e);
        }
        if let Some(i) = &self.id {
            field(&mut out, "id", i);
        }
        if let Some(r) = self.retry {
            field(&mut out, "retry", &r.to_string());
        }
        if self.has_data || !self.data.is_empty() {
            for line in split_lines(&self.data) {
                field(&mut out, "data", line);
            }
        }
        out.push('\n');
        Bytes::from(out)
    }
}

fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    if !value.is_empty() {
        out.push_str(": ");
        out.push_str(value);
    }
    out.push('\n');
}

/// Lines of `s` split at CRLF, LF or CR; "" is one empty line.
fn split_lines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\r' => {
                out.push(&s[start..i]);
                i += if b.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            b'\n' => {
                out.push(&s[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push(&s[start..]);
    out
}

/// One block of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block's bytes as received, blank line included.
    pub raw: Bytes,
    /// Its event; None for a block of comments only (a keep-alive) or blank lines.
    pub event: Option<Event>,
}

/// Cuts a body into blocks as its bytes arrive.
#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
    /// Where scanning goes on in `buf` (bytes before it hold no block end).
    pos: usize,
    /// Start of the line `pos` is in.
    line_start: usize,
    /// The stream's first block is still to come (a leading BOM is skipped there).
    started: bool,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Bytes held for an unfinished block.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Adds body bytes; returns the blocks they complete.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Block> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(end) = self.block_end() {
            let raw = self.buf.split_to(end).freeze();
            self.pos = 0;
            self.line_start = 0;
            let event = parse_block(&raw, !self.started);
            self.started = true;
            out.push(Block { raw, event });
        }
        out
    }

    /// The stream ended: what is left is an unfinished block, to be passed on as is
    /// (browsers drop it; a proxy does not lose bytes).
    pub fn finish(&mut self) -> Bytes {
        self.pos = 0;
        self.line_start = 0;
        self.buf.split().freeze()
    }

    /// Length of the first complete block: up to the end of its first empty line. A CR
    /// at the very end waits for the next byte, which may make it a CRLF.
    fn block_end(&mut self) -> Option<usize> {
        let b = &self.buf[..];
        while self.pos < b.len() {
            let eol = match b[self.pos] {
                b'\r' => match b.get(self.pos + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => return None,
                },
                b'\n' => 1,
                _ => {
                    self.pos += 1;
                    continue;
                }
            };
            let blank = self.pos == self.line_start;
            self.pos += eol;
            self.line_start = self.pos;
            if blank {
                return Some(self.pos);
            }
        }
        None
    }
}

/// The event of one raw block (None when it holds no field).
fn parse_block(raw: &[u8], stream_start: bool) -> Option<Event> {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    if stream_start && text.starts_with('\u{feff}') {
        text.drain(..3);
    }
    let mut ev = Event::default();
    let mut fields = 0;
    let mut data: Vec<&str> = Vec::new();
    for line in split_lines(&text) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with(':') {
            ev.other.push(line.to_string());
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "event" => ev.event = Some(value.to_string()),
            "data" => data.push(value),
            "id" if !value.contains('\0') => ev.id = Some(value.to_string()),
            // a retry too large for u64 is kept as it came, like any field not understood
            // (it used to count as a field while its value was lost)
            "retry"
                if value.bytes().all(|c| c.is_ascii_digit()) && value.parse::<u64>().is_ok() =>
            {
                ev.retry = value.parse().ok()
            }
            _ => {
                ev.other.push(line.to_string());
                continue;
            }
        }
        fields += 1;
    }
    if fields == 0 {
        return None;
    }
    ev.has_data = !data.is_empty();
    ev.data = data.join("\n");
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(chunks: &[&[u8]]) -> (Vec<Block>, Bytes) {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c));
        }
        let rest = p.finish();
        (out, rest)
    }

    /// Found by the sse fuzz target: an overflowing retry made an event of no field, which
    /// re-serialized to a block that is no event at all.
    #[test]
    fn overflowing_retry_is_kept_as_it_came() {
        let (b, _) = blocks(&[b"retry: 99999999999999999999999

"]);
        assert_eq!(b[0].event, None, "no field understood");
        let (b, _) = blocks(&[b"retry: 99999999999999999999999
data: x

"]);
        let e = b[0].event.clone().unwrap();
        assert_eq!(e.retry, None);
        assert_eq!(e.other, vec!["retry: 99999999999999999999999".to_string()]);
        let (again, _) = blocks(&[b"\n", &e.serialize()]);
        assert_eq!(again[1].event.as_ref(), Some(&e));
    }

    #[test]
    fn events_fields_and_comments() {
        let (b, rest) = blocks(&[
            b": hi\n\nevent: add\ndata: 1\ndata:2\nid: 7\nretry: 300\nx-y: z\n\ndata\n\n",
        ]);
        assert!(rest.is_empty());
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].event, None, "comment only");
        assert_eq!(b[0].raw.as_ref(), b": hi\n\n");
        let e = b[1].event.clone().unwrap();
        assert_eq!(e.event.as_deref(), Some("add"));
        assert_eq!(e.data, "1\n2");
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(e.retry, Some(300));
        assert_eq!(e.other, vec!["x-y: z".to_string()]);
        let e = b[2].event.clone().unwrap();
        assert!(e.has_data && e.data.is_empty());
        // the raw bytes of all blocks are the stream
        let all: Vec<u8> = b.iter().flat_map(|x| x.raw.to_vec()).collect();
        assert_eq!(
            all,
            b": hi\n\nevent: add\ndata: 1\ndata:2\nid: 7\nretry: 300\nx-y: z\n\ndata\n\n"
        );
    }

    #[test]
    fn any_split_and_any_line_end_give_the_same_blocks() {
        let stream: &[u8] = b"data: a\r\n\r\ndata: b\r\rdata: c\n\nevent: e\r\ndata: d\n\r\n";
        let (whole, _) = blocks(&[stream]);
        assert_eq!(whole.len(), 4, "{whole:?}");
        let datas: Vec<String> = whole
            .iter()
            .map(|b| b.event.clone().unwrap().data)
            .collect();
        assert_eq!(datas, ["a", "b", "c", "d"]);
        for cut in 1..stream.len() {
            let (b, rest) = blocks(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(b, whole, "cut at {cut}");
            assert!(rest.is_empty());
        }
        // byte by byte
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(blocks(&bytes).0, whole);
    }

    #[test]
    fn an_unfinished_block_is_returned_at_the_end() {
        let (b, rest) = blocks(&[b"data: 1\n\ndata: 2\n"]);
        assert_eq!(b.len(), 1);
        assert_eq!(rest.as_ref(), b"data: 2\n");
    }

    #[test]
    fn a_leading_bom_is_not_part_of_the_first_field() {
        let (b, _) = blocks(&["\u{feff}event: x\ndata: y\n\n".as_bytes()]);
        assert_eq!(b[0].event.clone().unwrap().event.as_deref(), Some("x"));
    }

    #[test]
    fn serialize_round_trips_through_the_parser() {
        let e = Event {
            event: Some("up".into()),
            data: "line1\nline2".into(),
            has_data: true,
            id: Some("9".into()),
            retry: Some(10),
            other: vec![": note".into()],
        };
        let wire = e.serialize();
        assert_eq!(
            wire.as_ref(),
            b": note\nevent: up\nid: 9\nretry: 10\ndata: line1\ndata: line2\n\n"
        );
        let (b, _) = blocks(&[&wire]);
        assert_eq!(b[0].event.as_ref(), Some(&e));
        // no data field stays without one; an emptied data keeps its (empty) field
        let none = Event {
            id: Some("1".into()),
            ..Event::default()
        };
        assert_eq!(none.serialize().as_ref(), b"id: 1\n\n");
        let empty = Event {
            has_data: true,
            ..Event::default()
        };
        assert_eq!(empty.serialize().as_ref(), b"data\n\n");
    }
}
