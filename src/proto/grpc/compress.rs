//! Message compression named by `grpc-encoding`: identity, gzip and deflate.
//!
//! gRPC's "deflate" is the zlib format (RFC 1950), as grpc-core and grpc-java write it.
//! Decoding also takes raw deflate (RFC 1951) when the zlib header is missing, as HTTP
//! clients do for `Content-Encoding: deflate`; encoding always writes zlib.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;

/// A `grpc-encoding` luring can undo and redo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// No compression (`identity`, or no header).
    Identity,
    /// `gzip`.
    Gzip,
    /// `deflate` (zlib format).
    Deflate,
}

/// A payload that cannot be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    /// A `grpc-encoding` luring does not know: the caller relays the call unhooked or
    /// answers UNIMPLEMENTED, as the gRPC spec has servers do.
    #[error("unsupported grpc-encoding {0:?}")]
    Unsupported(String),
    /// The compressed flag is set but the call has no grpc-encoding (gRPC: INTERNAL).
    #[error("compressed message without a grpc-encoding")]
    NoEncoding,
    /// The payload inflates past the limit.
    #[error("decompressed message over {0} bytes")]
    TooLarge(usize),
    /// The compressed stream is broken.
    #[error("corrupt {0} payload: {1}")]
    Corrupt(&'static str, String),
}

impl Encoding {
    /// The encoding a `grpc-encoding` value names (None: the header is absent).
    pub fn from_header(value: Option<&str>) -> Result<Encoding, CompressError> {
        let Some(v) = value.map(str::trim) else {
            return Ok(Encoding::Identity);
        };
        [Encoding::Identity, Encoding::Gzip, Encoding::Deflate]
            .into_iter()
            .find(|e| v.eq_ignore_ascii_case(e.as_str()))
            .ok_or_else(|| CompressError::Unsupported(v.to_string()))
    }

    /// The name in `grpc-encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }
}

/// The payload of a message as the hooks see it: inflated when its compressed flag is
/// set, at most `max_out` bytes.
pub fn decode_payload(
    enc: Encoding,
    compressed: bool,
    payload: &Bytes,
    max_out: usize,
) -> Result<Bytes, CompressError> {
    match (compressed, enc) {
        (false, _) => Ok(payload.clone()),
        (true, Encoding::Identity) => Err(CompressError::NoEncoding),
        (true, enc) => decompress(enc, payload, max_out),
    }
}

/// `data` inflated, refusing to produce more than `max_out` bytes (zip bombs).
pub fn decompress(enc: Encoding, data: &Bytes, max_out: usize) -> Result<Bytes, CompressError> {
    let limit = max_out as u64 + 1;
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max_out));
    let read = match enc {
        Encoding::Identity => {
            if data.len() > max_out {
                return Err(CompressError::TooLarge(max_out));
            }
            return Ok(data.clone());
        }
        Encoding::Gzip => GzDecoder::new(&data[..]).take(limit).read_to_end(&mut out),
        Encoding::Deflate if has_zlib_header(data) => ZlibDecoder::new(&data[..])
            .take(limit)
            .read_to_end(&mut out),
        Encoding::Deflate => DeflateDecoder::new(&data[..])
            .take(limit)
            .read_to_end(&mut out),
    };
    read.map_err(|e| CompressError::Corrupt(enc.as_str(), e.to_string()))?;
    if out.len() > max_out {
        return Err(CompressError::TooLarge(max_out));
    }
    Ok(Bytes::from(out))
}

/// Whether `data` starts with a zlib header (RFC 1950: method 8, check bits).
fn has_zlib_header(data: &[u8]) -> bool {
    data.len() >= 2
        && data[0] & 0x0f == 8
        && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0
}

/// `data` compressed with `enc` (identity: unchanged).
pub fn compress(enc: Encoding, data: &Bytes) -> Bytes {
    // Writing into a Vec cannot fail.
    let done = |r: std::io::Result<Vec<u8>>| Bytes::from(r.expect("compressing into memory"));
    match enc {
        Encoding::Identity => data.clone(),
        Encoding::Gzip => {
            let mut e = GzEncoder::new(
                Vec::with_capacity(data.len() / 2 + 32),
                Compression::default(),
            );
            done(e.write_all(data).and_then(|_| e.finish()))
        }
        Encoding::Deflate => {
            let mut e = ZlibEncoder::new(
                Vec::with_capacity(data.len() / 2 + 16),
                Compression::default(),
            );
            done(e.write_all(data).and_then(|_| e.finish()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        Bytes::from(
            (0..5000u32)
                .flat_map(|i| (i % 97).to_le_bytes())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn header_values() {
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        assert_eq!(
            Encoding::from_header(Some("identity")),
            Ok(Encoding::Identity)
        );
        assert_eq!(Encoding::from_header(Some(" GZIP ")), Ok(Encoding::Gzip));
        assert_eq!(
            Encoding::from_header(Some("deflate")),
            Ok(Encoding::Deflate)
        );
        assert_eq!(
            Encoding::from_header(Some("snappy")),
            Err(CompressError::Unsupported("snappy".into()))
        );
        for e in [Encoding::Identity, Encoding::Gzip, Encoding::Deflate] {
            assert_eq!(Encoding::from_header(Some(e.as_str())), Ok(e));
        }
    }

    #[test]
    fn round_trips() {
        let data = sample();
        for enc in [Encoding::Identity, Encoding::Gzip, Encoding::Deflate] {
            let packed = compress(enc, &data);
            assert_eq!(
                decompress(enc, &packed, data.len()),
                Ok(data.clone()),
                "{enc:?}"
            );
            assert_eq!(
                decompress(enc, &packed, data.len() - 1),
                Err(CompressError::TooLarge(data.len() - 1)),
                "{enc:?}"
            );
        }
        assert_eq!(&compress(Encoding::Gzip, &data)[..2], &[0x1f, 0x8b]);
        assert!(has_zlib_header(&compress(Encoding::Deflate, &data)));
        assert_eq!(compress(Encoding::Gzip, &Bytes::new()).len(), 20);
    }

    #[test]
    fn raw_deflate_is_accepted() {
        let data = sample();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
        e.write_all(&data).unwrap();
        let raw = Bytes::from(e.finish().unwrap());
        assert!(!has_zlib_header(&raw));
        assert_eq!(decompress(Encoding::Deflate, &raw, 1 << 20), Ok(data));
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let zeros = Bytes::from(vec![0u8; 8 << 20]);
        let bomb = compress(Encoding::Gzip, &zeros);
        assert!(bomb.len() < 16 << 10);
        assert_eq!(
            decompress(Encoding::Gzip, &bomb, 1 << 20),
            Err(CompressError::TooLarge(1 << 20))
        );
    }

    #[test]
    fn corrupt_and_truncated_payloads() {
        let packed = compress(Encoding::Gzip, &sample());
        let cut = packed.slice(..packed.len() / 2);
        assert!(matches!(
            decompress(Encoding::Gzip, &cut, 1 << 20),
            Err(CompressError::Corrupt("gzip", _))
        ));
        let junk = Bytes::from_static(b"not compressed at all");
        assert!(decompress(Encoding::Gzip, &junk, 1 << 20).is_err());
        assert!(decompress(Encoding::Deflate, &junk, 1 << 20).is_err());
    }

    #[test]
    fn payloads_by_flag() {
        let data = sample();
        let packed = compress(Encoding::Deflate, &data);
        assert_eq!(
            decode_payload(Encoding::Deflate, true, &packed, 1 << 20),
            Ok(data)
        );
        assert_eq!(
            decode_payload(Encoding::Deflate, false, &packed, 1),
            Ok(packed.clone()),
            "an uncompressed message of a compressed call"
        );
        assert_eq!(
            decode_payload(Encoding::Identity, true, &packed, 1 << 20),
            Err(CompressError::NoEncoding)
        );
    }
}
