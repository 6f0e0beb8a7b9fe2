//! WebSocket replay, sans-IO: after the recorded 101, the server's recorded messages
//! are played in turn with the client's. Those recorded before the client's first
//! message go at once; each message the client sends releases the server messages
//! recorded after the matching client message, up to the next one.

use crate::flows::record::WsMessageRec;
use crate::proto::ws::{self, Frame};
use bytes::{Bytes, BytesMut};

/// Where a replay is in the recorded conversation.
#[derive(Debug, Clone)]
pub struct WsScript {
    msgs: Vec<WsMessageRec>,
    pos: usize,
}

impl WsScript {
    /// A script over the recorded messages, in recorded order.
    pub fn new(msgs: Vec<WsMessageRec>) -> Self {
        WsScript { msgs, pos: 0 }
    }

    /// The server frames due now: those before the next recorded client message.
    pub fn due(&mut self, out: &mut BytesMut) -> bool {
        let mut closed = false;
        while let Some(m) = self.msgs.get(self.pos) {
            if m.from_client {
                // a client's ping or pong is no turn: clients send those on timers,
                // and the session answers pings itself
                if matches!(m.opcode, ws::PING | ws::PONG) {
                    self.pos += 1;
                    continue;
                }
                break;
            }
            ws::encode(
                &Frame {
                    fin: true,
                    rsv1: false,
                    opcode: m.opcode,
                    mask: None,
                    payload: Bytes::copy_from_slice(&m.data),
                },
                out,
            );
            closed |= m.opcode == ws::CLOSE;
            self.pos += 1;
        }
        closed
    }

    /// A client data message arrived: it stands for the next recorded client message,
    /// and what the server sent after that one is due. Returns true once the server
    /// has sent its close.
    pub fn on_client(&mut self, out: &mut BytesMut) -> bool {
        if let Some(i) = self.msgs[self.pos..].iter().position(is_turn) {
            self.pos += i + 1;
        }
        self.due(out)
    }
}

/// A recorded client data message: what releases the server's next messages.
fn is_turn(m: &WsMessageRec) -> bool {
    m.from_client && matches!(m.opcode, ws::TEXT | ws::BINARY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn m(from_client: bool, opcode: u8, data: &str) -> WsMessageRec {
        WsMessageRec {
            from_client,
            opcode,
            data: ByteBuf::from(data.as_bytes().to_vec()),
            size: data.len() as u64,
            ts: 0,
        }
    }

    fn frames(mut b: BytesMut) -> Vec<(u8, String)> {
        let d = ws::FrameDecoder::new(1 << 20);
        let mut v = Vec::new();
        while let Some(f) = d.decode(&mut b).unwrap() {
            assert!(f.mask.is_none(), "server frames are not masked");
            v.push((f.opcode, String::from_utf8_lossy(&f.payload).to_string()));
        }
        v
    }

    #[test]
    fn server_messages_follow_the_client_turns() {
        let mut s = WsScript::new(vec![
            m(false, 1, "hello"),
            m(true, 1, "q1"),
            m(true, 9, "client ping: no turn"),
            m(false, 1, "a1"),
            m(false, 2, "a1b"),
            m(true, 1, "q2"),
            m(false, 8, "\x03\x01"),
        ]);
        let mut out = BytesMut::new();
        assert!(!s.due(&mut out));
        assert_eq!(frames(out.split()), [(1, "hello".to_string())]);
        assert!(!s.on_client(&mut out));
        assert_eq!(frames(out.split()), [(1, "a1".into()), (2, "a1b".into())]);
        assert!(s.on_client(&mut out), "the recorded close ends it");
        assert_eq!(frames(out.split())[0].0, ws::CLOSE);
        assert!(!s.on_client(&mut out), "past the end: nothing more");
        assert!(out.is_empty());
    }
}
