//! WebSocket frames (RFC 6455 section 5), sans-IO: a decoder that takes one whole frame
//! at a time off a buffer, an encoder, and an assembler that turns fragments into
//! messages while control frames pass between them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Opcode: continuation frame.
pub const CONTINUATION: u8 = 0;
/// Opcode: text message.
pub const TEXT: u8 = 1;
/// Opcode: binary message.
pub const BINARY: u8 = 2;
/// Opcode: close.
pub const CLOSE: u8 = 8;
/// Opcode: ping.
pub const PING: u8 = 9;
/// Opcode: pong.
pub const PONG: u8 = 10;

/// One frame, its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Last frame of its message.
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub rsv1: bool,
    /// Opcode (low 4 bits).
    pub opcode: u8,
    /// The masking key the sender used (client frames).
    pub mask: Option<[u8; 4]>,
    /// The payload, unmasked.
    pub payload: Bytes,
}

/// A protocol violation; the text says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError(pub &'static str);

/// Takes whole frames off a buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    max_payload: u64,
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max_payload` bytes.
    pub fn new(max_payload: u64) -> Self {
        FrameDecoder { max_payload }
    }

    /// The next frame when `buf` holds all of it (consumed from `buf`), else None.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WsError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x30 != 0 {
            return Err(WsError("RSV2/RSV3 set without an extension"));
        }
        let opcode = b0 & 0x0f;
        let fin = b0 & 0x80 != 0;
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(WsError("reserved opcode"));
        }
        let control = opcode >= CLOSE;
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    (u64::from_be_bytes(a), 10)
                }
                None => return Ok(None),
            },
            n => (n as u64, 2),
        };
        if control && (len > 125 || !fin) {
            return Err(WsError("control frame fragmented or over 125 bytes"));
        }
        if len > self.max_payload {
            return Err(WsError("frame payload over the size limit"));
        }
        let mask = if masked {
            let Some(k) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        let total = at + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(at);
        let mut payload = buf.split_to(len as usize);
        if let Some(k) = mask {
            apply_mask(&mut payload, k);
        }
        Ok(Some(Frame {
            fin,
            rsv1: b0 & 0x40 != 0,
            opcode,
            mask,
            payload: payload.freeze(),
        }))
    }
}

/// XORs `data` with the masking key (its own inverse).
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Appends the wire form of `f` to `out` (masked with `f.mask` when it has one).
pub fn encode(f: &Frame, out: &mut BytesMut) {
    let len = f.payload.len();
    out.reserve(len + 14);
    out.put_u8((f.fin as u8) << 7 | (f.rsv1 as u8) << 6 | (f.opcode & 0x0f));
    let mbit = if f.mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.put_u8(mbit | len as u8),
        126..=0xffff => {
            out.put_u8(mbit | 126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(mbit | 127);
            out.put_u64(len as u64);
        }
    }
    match f.mask {
        Some(k) => {
            out.put_slice(&k);
            let start = out.len();
            out.put_slice(&f.payload);
            apply_mask(&mut out[start..], k);
        }
        None => out.put_slice(&f.payload),
    }
}

/// A whole message (data) or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// TEXT, BINARY, CLOSE, PING or PONG.
    pub opcode: u8,
    /// RSV1 of its first frame.
    pub compressed: bool,
    /// The masking key of its first frame, if masked.
    pub mask: Option<[u8; 4]>,
    /// The payload of all its frames.
    pub payload: Bytes,
    /// How many frames carried it.
    pub frames: usize,
}

impl Message {
    /// The message as one frame (fragmentation is not kept: RFC 6455 section 5.4 lets an
    /// intermediary that knows the extensions in use change it).
    pub fn to_frame(&self) -> Frame {
        Frame {
            fin: true,
            rsv1: self.compressed,
            opcode: self.opcode,
            mask: self.mask,
            payload: self.payload.clone(),
        }
    }
}

/// Joins the fragments of data messages; control frames come out as they arrive.
#[derive(Debug)]
pub struct Assembler {
    max_message: usize,
    partial: Option<(Message, BytesMut)>,
}

impl Assembler {
    /// An assembler refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Assembler {
            max_message,
            partial: None,
        }
    }

    /// Adds a frame; returns the message it completes, if any.
    pub fn push(&mut self, f: Frame) -> Result<Option<Message>, WsError> {
        if f.opcode >= CLOSE {
            return Ok(Some(Message {
                opcode: f.opcode,
                compressed: f.rsv1,
                mask: f.mask,
                payload: f.payload,
                frames: 1,
            }));
        }
        match (f.opcode, self.partial.take()) {
            (CONTINUATION, None) => Err(WsError("continuation frame without a message")),
            (CONTINUATION, Some((mut m, mut buf))) => {
                if buf.len() + f.payload.len() > self.max_message {
                    return Err(WsError("message over the size limit"));
                }
                buf.extend_from_slice(&f.payload);
                m.frames += 1;
                if f.fin {
                    m.payload = buf.freeze();
                    Ok(Some(m))
                } else {
                    self.partial = Some((m, buf));
                    Ok(None)
                }
            }
            (_, Some(_)) => Err(WsError("new message before the last one ended")),
            (op, None) => {
                let m = Message {
                    opcode: op,
                    compressed: f.rsv1,
                    mask: f.mask,
                    payload: Bytes::new(),
                    frames: 1,
                };
                if f.fin {
                    Ok(Some(Message {
                        payload: f.payload,
                        ..m
                    }))
                } else {
                    self.partial = Some((m, BytesMut::from(&f.payload[..])));
                    Ok(None)
                }
            }
        }
    }
}

/// Code and reason of a close payload (None: no code; 1005 in the dicts).
pub fn parse_close(payload: &[u8]) -> (Option<u16>, String) {
    if payload.len() < 2 {
        return (None, String::new());
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (
        Some(code),
        String::from_utf8_lossy(&payload[2..]).into_owned(),
    )
}

/// The GUID RFC 6455 section 1.3 appends to a client's key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value a server answers to `Sec-WebSocket-Key: key`
/// (RFC 6455 section 4.2.2): base64 of the SHA-1 of the key and the GUID.
pub fn accept_for(key: &[u8]) -> String {
    use base64::Engine;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim_ascii());
    ctx.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// A close payload with `code` and `reason`.
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + reason.len());
    b.put_u16(code);
    b.put_slice(reason.as_bytes());
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(f: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        encode(f, &mut out);
        out
    }

    #[test]
    fn frames_round_trip_at_every_length_form() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let f = Frame {
                    fin: true,
                    rsv1: len % 2 == 1,
                    opcode: BINARY,
                    mask,
                    payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
                };
                let mut w = wire(&f);
                let whole = w.len();
                // any prefix is incomplete
                for cut in [0, 1, whole / 2, whole - 1] {
                    let mut part = BytesMut::from(&w[..cut]);
                    assert_eq!(FrameDecoder::new(1 << 20).decode(&mut part), Ok(None));
                }
                w.extend_from_slice(b"next");
                let got = FrameDecoder::new(1 << 20).decode(&mut w).unwrap().unwrap();
                assert_eq!(got, f, "len {len}");
                assert_eq!(&w[..], b"next");
            }
        }
    }

    #[test]
    fn a_masked_frame_from_the_rfc() {
        // RFC 6455 section 5.7: a masked "Hello"
        let mut w = BytesMut::from(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ][..],
        );
        let f = FrameDecoder::new(1024).decode(&mut w).unwrap().unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload.as_ref()),
            (true, TEXT, &b"Hello"[..])
        );
        assert_eq!(f.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(
            &wire(&f)[..],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn violations_are_refused() {
        let d = FrameDecoder::new(100);
        for bad in [
            &[0x83u8, 0][..],                     // reserved opcode 3
            &[0x91, 0],                           // RSV3
            &[0x09, 0],                           // fragmented ping
            &[0x89, 126, 0, 126],                 // ping over 125 bytes
            &[0x82, 127, 0, 0, 0, 0, 0, 0, 1, 0], // 256 bytes, over the limit
        ] {
            assert!(d.decode(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fragments_join_and_control_frames_pass_between_them() {
        let mut a = Assembler::new(1024);
        let frag = |fin, opcode, p: &'static [u8]| Frame {
            fin,
            rsv1: false,
            opcode,
            mask: Some([9, 9, 9, 9]),
            payload: Bytes::from_static(p),
        };
        assert_eq!(a.push(frag(false, TEXT, b"hel")), Ok(None));
        let ping = a.push(frag(true, PING, b"p")).unwrap().unwrap();
        assert_eq!((ping.opcode, ping.payload.as_ref()), (PING, &b"p"[..]));
        assert_eq!(a.push(frag(false, CONTINUATION, b"lo ")), Ok(None));
        let m = a.push(frag(true, CONTINUATION, b"you")).unwrap().unwrap();
        assert_eq!(
            (m.opcode, m.payload.as_ref(), m.frames),
            (TEXT, &b"hello you"[..], 3)
        );
        assert_eq!(m.mask, Some([9, 9, 9, 9]));
        assert!(a.push(frag(true, CONTINUATION, b"x")).is_err());
        let mut small = Assembler::new(4);
        assert_eq!(small.push(frag(false, BINARY, b"abc")), Ok(None));
        assert!(small.push(frag(true, CONTINUATION, b"de")).is_err());
    }

    #[test]
    fn the_accept_of_the_rfc_example_key() {
        // RFC 6455 section 1.3
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_for(b" dGhlIHNhbXBsZSBub25jZQ== "),
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ==")
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(
            parse_close(&close_payload(1000, "bye")),
            (Some(1000), "bye".into())
        );
        assert_eq!(parse_close(b""), (None, String::new()));
    }
}
