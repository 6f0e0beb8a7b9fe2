//! The driver's HTTP/1.1 response reader, sans-IO: fed whatever bytes arrived, it says
//! how many it used and when the response is complete. Bodies are counted, not kept,
//! so that a large response costs the driver no copies.

use super::h1::ParseError;

/// Most header fields a response may have.
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Reads one response; `feed` it bytes until it reports completion.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    head_request: bool,
    /// Status code (0 until the head is read).
    pub status: u16,
    /// Body bytes seen (without framing).
    pub body_len: u64,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

impl ResponseReader {
    /// A reader for the response to a request; HEAD responses have no body.
    pub fn new(head_request: bool) -> Self {
        ResponseReader {
            state: State::Head,
            head_request,
            status: 0,
            body_len: 0,
            keep_alive: true,
        }
    }

    /// The response is complete.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The peer closed the connection: completes a close-delimited body, else false.
    pub fn eof(&mut self) -> bool {
        if self.state == State::UntilClose {
            self.state = State::Done;
        }
        self.done()
    }

    /// Consumes from the start of `buf`; returns the bytes used. Bytes left over are
    /// an incomplete line, to be fed again with more after them.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ParseError> {
        self.feed_with(buf, &mut |_| {})
    }

    /// [`ResponseReader::feed`], handing each piece of body (framing removed) to `sink`.
    pub fn feed_with(
        &mut self,
        buf: &[u8],
        sink: &mut impl FnMut(&[u8]),
    ) -> Result<usize, ParseError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            let used = match self.state {
                State::Done => return Ok(pos),
                State::Head => self.head(rest)?,
                State::Length(n) => {
                    let k = n.min(rest.len() as u64);
                    sink(&rest[..k as usize]);
                    self.body_len += k;
                    self.state = if k == n {
                        State::Done
                    } else {
                        State::Length(n - k)
                    };
                    k as usize
                }
                State::UntilClose => {
                    sink(rest);
                    self.body_len += rest.len() as u64;
                    rest.len()
                }
                State::ChunkSize => self.chunk_size(rest)?,
                State::ChunkData(n) => {
                    let k = n.min(rest.len() as u64);
                    sink(&rest[..k as usize]);
                    self.body_len += k;
                    self.state = if k == n {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(n - k)
                    };
                    k as usize
                }
                State::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        self.state = State::ChunkSize;
                        2
                    }
                    [] | [b'\r'] => 0,
                    _ => return Err(ParseError("chunk not followed by CRLF".into())),
                },
                State::Trailers => match rest.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        self.state = State::Done;
                        2
                    }
                    Some(i) => i + 2,
                    None => 0,
                },
            };
            if used == 0 && self.state != State::Done {
                return Ok(pos);
            }
            pos += used;
        }
    }

    fn head(&mut self, buf: &[u8]) -> Result<usize, ParseError> {
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(0),
            Err(e) => return Err(ParseError(e.to_string())),
        };
        let status = r.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            return Ok(n); // an interim response: the real one follows
        }
        self.status = status;
        let find = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let token = |v: &[u8], t: &str| {
            v.split(|&c| c == b',')
                .any(|x| x.trim_ascii().eq_ignore_ascii_case(t.as_bytes()))
        };
        let conn = find("connection");
        self.keep_alive = if r.version == Some(1) {
            !conn.is_some_and(|v| token(v, "close"))
        } else {
            conn.is_some_and(|v| token(v, "keep-alive"))
        };
        let no_body = self.head_request || status < 200 || status == 204 || status == 304;
        self.state = if no_body {
            State::Done
        } else if find("transfer-encoding").is_some_and(|v| token(v, "chunked")) {
            State::ChunkSize
        } else if let Some(v) = find("content-length") {
            let len: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ParseError("bad content-length".into()))?;
            if len == 0 {
                State::Done
            } else {
                State::Length(len)
            }
        } else {
            self.keep_alive = false;
            State::UntilClose
        };
        Ok(n)
    }

    fn chunk_size(&mut self, buf: &[u8]) -> Result<usize, ParseError> {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            return Ok(0);
        };
        let hex = buf[..eol].split(|&c| c == b';').next().unwrap_or(b"");
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| ParseError("bad chunk size".into()))?;
        self.state = if size == 0 {
            State::Trailers
        } else {
            State::ChunkData(size)
        };
        Ok(eol + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` split at every point into two pieces, as a socket might deliver it.
    fn read_split(wire: &[u8], head: bool) -> Vec<(u16, u64, bool, usize)> {
        let mut out = Vec::new();
        for cut in 0..=wire.len() {
            let mut r = ResponseReader::new(head);
            let mut buf = wire[..cut].to_vec();
            let mut used = r.feed(&buf).unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&wire[cut..]);
            used = r.feed(&buf).unwrap();
            assert!(r.done(), "cut at {cut}");
            out.push((r.status, r.body_len, r.keep_alive, buf.len() - used));
        }
        out
    }

    #[test]
    fn length_and_chunked_bodies_in_any_split() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloNEXT";
        for r in read_split(wire, false) {
            assert_eq!(r, (200, 5, true, 4));
        }
        let wire = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nGrpc-Status: 0\r\n\r\n";
        for r in read_split(wire, false) {
            assert_eq!(r, (201, 5, true, 0));
        }
    }

    #[test]
    fn interim_head_and_close_delimited() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        for r in read_split(wire, false) {
            assert_eq!(r, (204, 0, true, 0));
        }
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nConnection: close\r\n\r\n";
        for r in read_split(wire, true) {
            assert_eq!(r, (200, 0, false, 0));
        }
        let mut r = ResponseReader::new(false);
        assert_eq!(r.feed(b"HTTP/1.0 200 OK\r\n\r\nabc").unwrap(), 22);
        assert!(!r.done());
        assert!(r.eof());
        assert_eq!((r.body_len, r.keep_alive), (3, false));
    }

    #[test]
    fn the_sink_gets_the_body_without_framing_in_any_split() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..=wire.len() {
            let mut r = ResponseReader::new(false);
            let mut body = Vec::new();
            let mut buf = wire[..cut].to_vec();
            let used = r
                .feed_with(&buf, &mut |b| body.extend_from_slice(b))
                .unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&wire[cut..]);
            r.feed_with(&buf, &mut |b| body.extend_from_slice(b))
                .unwrap();
            assert!(r.done());
            assert_eq!(body, b"abcde", "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ResponseReader::new(false)
            .feed(b"NOT HTTP\r\n\r\n")
            .is_err());
        let mut r = ResponseReader::new(false);
        assert!(r
            .feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
            .is_err());
    }
}
