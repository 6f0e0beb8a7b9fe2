//! The driver's side of a recorded WebSocket conversation, sans-IO: the recorded
//! upgrade request with a fresh key, the check of the answer's `Sec-WebSocket-Accept`,
//! then the client's recorded data messages (masked, RFC 6455 section 5.3) in recorded
//! order, each sent once the server messages recorded before it have come, then a
//! close. Bytes in, bytes out; the framing is `proto::ws`.

use super::schedule::Rng;
use crate::flows::record::{HttpFlow, RequestRec};
use crate::proto::ws::{self, Frame};
use bytes::{Bytes, BytesMut};

/// Largest message the driver takes from a server (as the replay origin's limit).
const MAX_MESSAGE: usize = 64 << 20;

/// Messages and payload bytes of the WebSocket conversations of a run (data messages
/// only: text and binary; control frames are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WsCounts {
    /// Conversations that went through to the server's close.
    pub conversations: u64,
    /// Data messages sent.
    pub sent_msgs: u64,
    /// Data messages received.
    pub recv_msgs: u64,
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
}

impl WsCounts {
    /// Adds another run's (or conversation's) counts.
    pub fn merge(&mut self, o: &WsCounts) {
        self.conversations += o.conversations;
        self.sent_msgs += o.sent_msgs;
        self.recv_msgs += o.recv_msgs;
        self.sent_bytes += o.sent_bytes;
        self.recv_bytes += o.recv_bytes;
    }
}

/// Why a conversation failed: the error kind counted.
pub type WsFail = &'static str;

/// One client message to send once `after` server data messages have come.
#[derive(Debug, Clone)]
struct Send {
    opcode: u8,
    payload: Bytes,
    after: usize,
}

/// A recorded WebSocket conversation made ready to replay from the client side.
#[derive(Debug, Clone)]
pub struct WsPlan {
    /// The upgrade request without its key field and the empty line.
    head: Bytes,
    sends: Vec<Send>,
    /// Server data messages recorded.
    expect: usize,
    /// The close payload sent at the end: the client's recorded one, else 1000.
    close: Bytes,
}

fn is(f: &crate::flows::record::Field, name: &str) -> bool {
    f.0.eq_ignore_ascii_case(name.as_bytes())
}

fn is_data(opcode: u8) -> bool {
    matches!(opcode, ws::TEXT | ws::BINARY)
}

/// The flow is a WebSocket upgrade its server accepted (a 101): its messages follow.
pub fn is_websocket(flow: &HttpFlow) -> bool {
    let upgrade = flow.request.headers.iter().any(|f| {
        is(f, "upgrade")
            && f.1
                .split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    });
    upgrade && flow.response.as_ref().is_some_and(|r| r.status == 101)
}

impl WsPlan {
    /// The plan of `flow`'s conversation, its upgrade being `req` (the recorded request
    /// with `--header` applied) in absolute-form when `absolute` (a forward proxy).
    pub fn new(flow: &HttpFlow, req: &RequestRec, absolute: bool) -> WsPlan {
        let mut r = req.clone();
        // a key of its own per conversation; no extension offered, since the driver
        // speaks none (permessage-deflate would need it to inflate what it counts)
        r.headers
            .retain(|f| !is(f, "sec-websocket-key") && !is(f, "sec-websocket-extensions"));
        r.body = Default::default();
        r.trailers.clear();
        // an upgrade is an http(s) request: a forward proxy reads its absolute form so
        match r.scheme.as_str() {
            "ws" => r.scheme = "http".into(),
            "wss" => r.scheme = "https".into(),
            _ => {}
        }
        let mut head = super::h1::encode_request(&r, absolute);
        // the empty line goes after the key, which each conversation adds
        head.truncate(head.len() - 2);
        head.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\n");
        let (mut sends, mut expect) = (Vec::new(), 0);
        let mut close = ws::close_payload(1000, "");
        for m in &flow.websocket {
            match (m.from_client, m.opcode) {
                (false, op) if is_data(op) => expect += 1,
                (true, op) if is_data(op) => sends.push(Send {
                    opcode: op,
                    payload: Bytes::copy_from_slice(&m.data),
                    after: expect,
                }),
                (true, ws::CLOSE) => close = Bytes::copy_from_slice(&m.data),
                // pings and pongs depend on timers, not on the conversation
                _ => {}
            }
        }
        WsPlan {
            head: head.into(),
            sends,
            expect,
            close,
        }
    }

    /// Server data messages the recording has.
    pub fn expected(&self) -> usize {
        self.expect
    }
}

/// One conversation in progress.
#[derive(Debug)]
pub struct WsConversation<'p> {
    plan: &'p WsPlan,
    accept: String,
    open: bool,
    next: usize,
    got: usize,
    close_sent: bool,
    done: bool,
    masks: Rng,
    dec: ws::FrameDecoder,
    asm: ws::Assembler,
    /// What was sent and received so far.
    pub counts: WsCounts,
}

impl<'p> WsConversation<'p> {
    /// Starts a conversation with `key` (16 random bytes, RFC 6455 section 4.1): its
    /// upgrade request is appended to `out`.
    pub fn start(plan: &'p WsPlan, key: [u8; 16], out: &mut BytesMut) -> Self {
        use base64::Engine;
        let k = base64::engine::general_purpose::STANDARD.encode(key);
        out.extend_from_slice(&plan.head);
        out.extend_from_slice(b"Sec-WebSocket-Key: ");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&key[8..]);
        WsConversation {
            plan,
            accept: ws::accept_for(k.as_bytes()),
            open: false,
            next: 0,
            got: 0,
            close_sent: false,
            done: false,
            // masks from the key's random bytes: one system call per conversation
            // rather than per frame
            masks: Rng::new(u64::from_le_bytes(seed)),
            dec: ws::FrameDecoder::new(MAX_MESSAGE as u64),
            asm: ws::Assembler::new(MAX_MESSAGE),
            counts: WsCounts::default(),
        }
    }

    /// The server's close came (or it closed the connection after ours): the
    /// conversation is over.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Takes what arrived off the front of `inb` and appends what is to be sent now
    /// (client messages whose turn came, pongs, the close) to `out`.
    pub fn feed(&mut self, inb: &mut BytesMut, out: &mut BytesMut) -> Result<(), WsFail> {
        if !self.open {
            match self.upgrade_answer(inb)? {
                0 => return Ok(()),
                n => {
                    let _ = inb.split_to(n);
                    self.open = true;
                    self.pump(out);
                }
            }
        }
        while !self.done {
            let f = match self.dec.decode(inb) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return Err("ws-protocol"),
            };
            let Some(m) = self.asm.push(f).map_err(|_| "ws-protocol")? else {
                continue;
            };
            match m.opcode {
                ws::PING => self.frame(ws::PONG, m.payload, out),
                ws::CLOSE => {
                    if self.got < self.plan.expect || self.next < self.plan.sends.len() {
                        return Err("ws-short");
                    }
                    if !self.close_sent {
                        // the answer to a server's close carries its code back
                        let code = m.payload.slice(..m.payload.len().min(2));
                        self.frame(ws::CLOSE, code, out);
                        self.close_sent = true;
                    }
                    self.done = true;
                }
                op if is_data(op) => {
                    self.got += 1;
                    self.counts.recv_msgs += 1;
                    self.counts.recv_bytes += m.payload.len() as u64;
                    self.pump(out);
                }
                _ => {}
            }
        }
        if self.done {
            self.counts.conversations = 1;
        }
        Ok(())
    }

    /// The server closed the connection: the end once our close went and everything
    /// expected came (some servers close without answering a close), else a failure.
    pub fn eof(&mut self) -> Result<(), WsFail> {
        match (self.open, self.close_sent && self.got >= self.plan.expect) {
            (false, _) => Err("io"),
            (true, true) => {
                self.done = true;
                self.counts.conversations = 1;
                Ok(())
            }
            (true, false) => Err("ws-short"),
        }
    }

    /// The length of the 101 head at the start of `inb` once all of it came (0 until
    /// then); a refusal or a wrong accept is a failure.
    fn upgrade_answer(&self, inb: &[u8]) -> Result<usize, WsFail> {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(inb) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(0),
            Err(_) => return Err("parse"),
        };
        if r.code != Some(101) {
            return Err("ws-upgrade");
        }
        let accept = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value.trim_ascii());
        if accept != Some(self.accept.as_bytes()) {
            return Err("ws-accept");
        }
        Ok(n)
    }

    /// Sends the client messages whose turn came, then the close once nothing more is
    /// to be sent or awaited.
    fn pump(&mut self, out: &mut BytesMut) {
        let plan = self.plan;
        while let Some(s) = plan.sends.get(self.next).filter(|s| s.after <= self.got) {
            self.counts.sent_msgs += 1;
            self.counts.sent_bytes += s.payload.len() as u64;
            self.frame(s.opcode, s.payload.clone(), out);
            self.next += 1;
        }
        let all = self.next == self.plan.sends.len() && self.got >= self.plan.expect;
        if all && !self.close_sent {
            self.frame(ws::CLOSE, self.plan.close.clone(), out);
            self.close_sent = true;
        }
    }

    fn frame(&mut self, opcode: u8, payload: Bytes, out: &mut BytesMut) {
        let mask = (self.masks.next_u64() as u32).to_le_bytes();
        let f = Frame {
            fin: true,
            rsv1: false,
            opcode,
            mask: Some(mask),
            payload,
        };
        ws::encode(&f, out);
    }
}

#[cfg(test)]
#[path = "ws_client_tests.rs"]
mod tests;
