//! The base64 body of grpc-web-text, streamed: input cut anywhere, even inside a 4-char
//! quantum.
//!
//! Clients encode each frame separately, so a body is a run of base64 segments each of
//! which may end in `=` padding. A quantum that holds padding ends its segment and the
//! next quantum starts fresh, which decodes such runs without looking for frame ends.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};

/// Marks a byte that is not in the standard base64 alphabet.
const INVALID: u8 = 0xff;
/// Marks `=`.
const PAD: u8 = 0xfe;

/// The 6-bit value of each byte, or INVALID / PAD.
const TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b'=' as usize] = PAD;
    t
};

/// Text that is not a run of base64 segments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A byte outside the base64 alphabet (whitespace is skipped, not refused).
    #[error("byte {0:#04x} is not base64")]
    BadByte(u8),
    /// `=` where it cannot be padding (first or second char of a quantum, or data after it).
    #[error("misplaced base64 padding")]
    BadPadding,
    /// The body ended with a single base64 char, which carries no whole byte.
    #[error("base64 body ends inside a quantum")]
    Truncated,
}

/// Decodes a grpc-web-text body chunk by chunk.
#[derive(Debug, Default)]
pub struct TextDecoder {
    /// The chars of the unfinished quantum (6-bit values, or PAD).
    quantum: [u8; 4],
    filled: usize,
}

impl TextDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> TextDecoder {
        TextDecoder::default()
    }

    /// Chars held for an unfinished quantum (0 to 3).
    pub fn pending(&self) -> usize {
        self.filled
    }

    /// The bytes `text` completes. ASCII whitespace is skipped, as base64 decoders in
    /// browsers do.
    pub fn decode(&mut self, text: &[u8]) -> Result<Bytes, TextError> {
        let mut out = BytesMut::with_capacity((self.filled + text.len()) / 4 * 3);
        let mut rest = text;
        // Whole unpadded quanta straight from the input, when nothing is carried over.
        while self.filled == 0 && rest.len() >= 4 {
            let v = [
                TABLE[rest[0] as usize],
                TABLE[rest[1] as usize],
                TABLE[rest[2] as usize],
                TABLE[rest[3] as usize],
            ];
            if v.iter().any(|&x| x >= PAD) {
                break;
            }
            put_quantum(v, 3, &mut out);
            rest = &rest[4..];
        }
        for &b in rest {
            let v = TABLE[b as usize];
            if v == INVALID {
                if b.is_ascii_whitespace() {
                    continue;
                }
                return Err(TextError::BadByte(b));
            }
            let after_pad = self.filled > 0 && self.quantum[self.filled - 1] == PAD;
            if (v == PAD && self.filled < 2) || (after_pad && v != PAD) {
                return Err(TextError::BadPadding);
            }
            self.quantum[self.filled] = v;
            self.filled += 1;
            if self.filled == 4 {
                self.filled = 0;
                let n = quantum_bytes(self.quantum)?;
                put_quantum(self.quantum, n, &mut out);
            }
        }
        Ok(out.freeze())
    }

    /// The body ended: the bytes of an unpadded last quantum, or an error when it cannot
    /// carry whole bytes.
    pub fn finish(&mut self) -> Result<Bytes, TextError> {
        let filled = std::mem::take(&mut self.filled);
        let mut q = self.quantum;
        match filled {
            0 => Ok(Bytes::new()),
            1 => Err(TextError::Truncated),
            _ => {
                q[filled..].fill(PAD);
                let n = quantum_bytes(q)?;
                let mut out = BytesMut::with_capacity(n);
                put_quantum(q, n, &mut out);
                Ok(out.freeze())
            }
        }
    }
}

/// How many bytes a full quantum carries: 3, or 2 / 1 with padding.
fn quantum_bytes(q: [u8; 4]) -> Result<usize, TextError> {
    match (q[0] == PAD, q[1] == PAD, q[2] == PAD, q[3] == PAD) {
        (false, false, false, false) => Ok(3),
        (false, false, false, true) => Ok(2),
        (false, false, true, true) => Ok(1),
        _ => Err(TextError::BadPadding),
    }
}

/// Appends the first `n` bytes of a quantum (PAD slots count as 0).
fn put_quantum(q: [u8; 4], n: usize, out: &mut BytesMut) {
    let six = |x: u8| u32::from(if x >= PAD { 0 } else { x });
    let bits = six(q[0]) << 18 | six(q[1]) << 12 | six(q[2]) << 6 | six(q[3]);
    let b = bits.to_be_bytes();
    out.put_slice(&b[1..1 + n]);
}

/// `frame` as one padded base64 segment (standard alphabet), as grpc-web-text clients
/// write each frame.
pub fn encode_text(frame: &[u8]) -> Bytes {
    Bytes::from(base64::engine::general_purpose::STANDARD.encode(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<u8>, TextError> {
        let mut d = TextDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&d.decode(c)?);
        }
        out.extend_from_slice(&d.finish()?);
        Ok(out)
    }

    #[test]
    fn plain_base64_at_every_split() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..20 {
            let text = encode_text(&data[..len]);
            for cut in 0..=text.len() {
                assert_eq!(
                    decode_all(&[&text[..cut], &text[cut..]]),
                    Ok(data[..len].to_vec()),
                    "len {len} cut at {cut}"
                );
            }
        }
        let text = encode_text(&data);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(decode_all(&bytes), Ok(data));
    }

    #[test]
    fn concatenated_padded_segments() {
        // three frames of lengths that give "==", "=" and no padding
        let parts: [&[u8]; 3] = [
            b"\x00\x00\x00\x00\x02ab",
            b"\x00\x00\x00\x00\x03bcd",
            b"xyz",
        ];
        let text: Vec<u8> = parts.iter().flat_map(|p| encode_text(p).to_vec()).collect();
        assert!(text.windows(3).any(|w| w == b"==A"), "'==' mid-body");
        assert!(text.windows(3).any(|w| w == b"Q=e"), "'=' mid-body");
        let want: Vec<u8> = parts.concat();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let got = decode_all(&[&text[..a], &text[a..b], &text[b..]]);
                assert_eq!(got, Ok(want.clone()), "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn missing_padding_at_the_end_and_whitespace() {
        assert_eq!(decode_all(&[b"aGk"]), Ok(b"hi".to_vec()));
        assert_eq!(decode_all(&[b"aA"]), Ok(b"h".to_vec()));
        assert_eq!(
            decode_all(&[b"aG", b"k=\r\n", b" aGk="]),
            Ok(b"hihi".to_vec())
        );
    }

    #[test]
    fn bad_text() {
        assert_eq!(decode_all(&[b"aGk*"]), Err(TextError::BadByte(b'*')));
        assert_eq!(decode_all(&[b"a-_A"]), Err(TextError::BadByte(b'-')));
        assert_eq!(decode_all(&[b"=AAA"]), Err(TextError::BadPadding));
        assert_eq!(decode_all(&[b"A=AA"]), Err(TextError::BadPadding));
        assert_eq!(decode_all(&[b"AA=A"]), Err(TextError::BadPadding));
        assert_eq!(
            decode_all(&[b"AAA", b"=", b"="]),
            Err(TextError::BadPadding)
        );
        assert_eq!(decode_all(&[b"AAAAA"]), Err(TextError::Truncated));
    }

    #[test]
    fn pending_chars() {
        let mut d = TextDecoder::new();
        assert_eq!(&d.decode(b"aGlo").unwrap()[..], b"hih");
        assert_eq!(d.decode(b"aQ").unwrap().len(), 0);
        assert_eq!(d.pending(), 2);
        assert_eq!(&d.decode(b"==").unwrap()[..], b"i");
        assert_eq!(d.pending(), 0);
    }
}
