//! WebSocket replay, sans-IO: after the recorded 101, the server's recorded messages
//! are played in turn with the client's. Those recorded before the client's first
//! message go at once; each message the client sends releases the server messages
//! recorded after the matching client message, up to the next one.
//!
//! The recorded 101 carries the `Sec-WebSocket-Accept` of the recorded client's key;
//! a client that sends another key (any real one: keys are random) gets the value
//! computed from its own, or it would refuse the handshake.

use crate::flows::record::{ResponseRec, WsMessageRec};
use crate::proto::ws::{self, Frame};
use bytes::{Bytes, BytesMut};

/// RFC 6455's GUID, appended to the client's key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` that answers `key`: base64 of SHA-1 of key and GUID.
pub fn accept_for(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim_ascii());
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// The HTTP/1.1 head of recorded 101 `resp` for a client that sent `key`, when the
/// recorded `Sec-WebSocket-Accept` does not answer it: the recorded head with that
/// field's value replaced (added at the end when the recording has none). None when
/// the recorded head fits, or the client sent no key.
pub fn head_for_key(resp: &ResponseRec, key: Option<&[u8]>) -> Option<bytes::Bytes> {
    let accept = accept_for(key?);
    let is_accept =
        |f: &crate::flows::record::Field| f.0.eq_ignore_ascii_case(b"sec-websocket-accept");
    let recorded = resp.headers.iter().find(|f| is_accept(f));
    if recorded.is_some_and(|f| f.1.trim_ascii() == accept.as_bytes()) {
        return None;
    }
    let mut r = resp.clone();
    match r.headers.iter_mut().find(|f| is_accept(f)) {
        Some(f) => f.1 = serde_bytes::ByteBuf::from(accept.into_bytes()),
        None => r
            .headers
            .push(crate::flows::record::field("Sec-WebSocket-Accept", &accept)),
    }
    Some(super::h1::encode_response(&r).head)
}

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
        while let Some(m) = self.msgs.get(self.pos).filter(|m| !m.from_client) {
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
        if let Some(i) = self.msgs[self.pos..].iter().position(|m| m.from_client) {
            self.pos += i + 1;
        }
        self.due(out)
    }
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
    fn accept_is_computed_from_the_clients_key() {
        // RFC 6455, section 1.3
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(accept_for(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let f = crate::flows::record::field;
        let resp = ResponseRec {
            status: 101,
            reason: "Switching Protocols".into(),
            headers: vec![
                f("Upgrade", "websocket"),
                f("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                f("Connection", "Upgrade"),
            ],
            ..Default::default()
        };
        assert_eq!(head_for_key(&resp, Some(key)), None, "the recorded key");
        assert_eq!(head_for_key(&resp, None), None);
        let other = b"x3JJHMbDL1EzLkh9GBhXDw==";
        let head = head_for_key(&resp, Some(other)).unwrap();
        assert_eq!(
            &head[..],
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\nConnection: Upgrade\r\n\r\n",
                accept_for(other)
            )
            .as_bytes()
        );
        // a recording without the field gets one
        let mut bare = resp.clone();
        bare.headers.remove(1);
        let head = head_for_key(&bare, Some(key)).unwrap();
        assert!(head.ends_with(
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        ));
    }

    #[test]
    fn server_messages_follow_the_client_turns() {
        let mut s = WsScript::new(vec![
            m(false, 1, "hello"),
            m(true, 1, "q1"),
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
