//! The flow file's framing: a 16-byte file header, then length-prefixed records, each
//! with its kind, flags and a CRC-32 of its stored bytes. docs/flows.md is the
//! reference; this module is its only implementation.
//!
//! Records are appended whole, so a file cut anywhere (a SIGKILL, a full disk, a copy
//! of a file still being written) reads back up to its last complete record.

use super::capture::Capture;
use super::record::{Drops, HttpFlow, Meta, Record, TunnelFlow, KIND_HTTP};
use std::io::{self, Read, Write};

/// The first eight bytes of every flow file.
pub const MAGIC: &[u8; 8] = b"LURFLOWS";
/// The format version this luring writes and the newest it reads.
pub const VERSION: u16 = 1;
/// Bytes of the file header: magic, version (u16 LE), reserved.
pub const FILE_HEADER_LEN: usize = 16;
/// Bytes of a record's frame header: length (u32 LE), kind, flags, reserved (u16),
/// CRC-32 of kind, flags, reserved and the stored payload (u32 LE).
pub const FRAME_HEADER_LEN: usize = 12;
/// Largest stored payload a reader accepts; a larger length means a corrupt frame.
pub const MAX_RECORD: u32 = 1 << 30;
/// Payloads at least this long are stored zstd-compressed; below it compression costs
/// more CPU than it saves bytes (per-record zstd on a 1.5 KiB flow was a fifth of the
/// recording proxy's CPU).
const COMPRESS_MIN: usize = 4096;
/// Flag bit: the payload is one zstd frame.
const FLAG_ZSTD: u8 = 1;

/// The file header for this version.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Encodes one record as a complete frame (header and payload).
pub fn encode(rec: &Record) -> io::Result<Vec<u8>> {
    Encoder::new()?.encode(rec)
}

/// Encodes records, reusing one zstd context (making a context per record costs more
/// than compressing a small record).
pub struct Encoder {
    z: zstd::bulk::Compressor<'static>,
}

impl Encoder {
    /// A new encoder.
    pub fn new() -> io::Result<Self> {
        Ok(Encoder {
            z: zstd::bulk::Compressor::new(1)?,
        })
    }

    /// One record as a complete frame.
    pub fn encode(&mut self, rec: &Record) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(rec, &mut out)?;
        Ok(out)
    }

    /// Appends one record's frame to `out`: the payload is encoded in place behind a
    /// header filled in after, so a small record is copied only once.
    pub fn encode_into(&mut self, rec: &Record, out: &mut Vec<u8>) -> io::Result<()> {
        self.frame_into(rec.kind(), payload_hint(rec), out, |out| {
            match rec {
                Record::Meta(m) => rmp_serde::encode::write_named(out, m),
                Record::Http(f) => rmp_serde::encode::write_named(out, f),
                Record::Tunnel(t) => rmp_serde::encode::write_named(out, t),
                Record::Drops(d) => rmp_serde::encode::write_named(out, d),
            }
            .map_err(io::Error::other)
        })
    }

    /// Appends a frame of `kind` whose MessagePack payload `write` appends (`hint`: the
    /// bytes of bodies it holds, to size the buffer once).
    pub fn frame_into(
        &mut self,
        kind: u8,
        hint: usize,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let start = out.len();
        out.reserve(FRAME_HEADER_LEN + 1024 + hint);
        out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        if let Err(e) = write(out) {
            out.truncate(start);
            return Err(e);
        }
        let body_at = start + FRAME_HEADER_LEN;
        let mut flags = 0;
        if out.len() - body_at >= COMPRESS_MIN {
            let z = self.z.compress(&out[body_at..]);
            let z = z.inspect_err(|_| out.truncate(start))?;
            out.truncate(body_at);
            out.extend_from_slice(&z);
            flags = FLAG_ZSTD;
        }
        let len = out.len() - body_at;
        if len as u64 >= MAX_RECORD as u64 {
            out.truncate(start);
            return Err(io::Error::other("record too large for a flow file"));
        }
        let crc = checksum([kind, flags, 0, 0], &out[body_at..]);
        let h = &mut out[start..body_at];
        h[..4].copy_from_slice(&(len as u32).to_le_bytes());
        h[4] = kind;
        h[5] = flags;
        h[8..12].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }
}

/// The bytes of a record's bodies and messages, to size its encoding buffer.
fn payload_hint(rec: &Record) -> usize {
    match rec {
        Record::Http(f) => {
            let fields = |h: &[super::record::Field]| {
                h.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>()
            };
            let resp = f
                .response
                .as_ref()
                .map_or(0, |r| r.body.data.len() + fields(&r.headers));
            let ws: usize = f.websocket.iter().map(|m| m.data.len() + 32).sum();
            f.request.body.data.len() + fields(&f.request.headers) + resp + ws
        }
        Record::Tunnel(t) => t.chunks.iter().map(|c| c.data.len() + 32).sum(),
        Record::Meta(_) | Record::Drops(_) => 0,
    }
}

/// Writes a new flow file: the header, then whole records. Records are gathered in
/// memory and go to `out` whole, at [`FlowWriter::flush`] or once 256 KiB are pending.
pub struct FlowWriter<W: Write> {
    /// Always Some until [`FlowWriter::into_inner`] takes it.
    out: Option<W>,
    enc: Encoder,
    pending: Vec<u8>,
}

/// Pending bytes that make [`FlowWriter::write`] write them out.
const PENDING_MAX: usize = 256 * 1024;

impl<W: Write> FlowWriter<W> {
    /// Starts a file: writes the header and the `meta` record.
    pub fn new(mut out: W, meta: &Meta) -> io::Result<Self> {
        out.write_all(&file_header())?;
        let mut w = Self::appending(out)?;
        w.write(&Record::Meta(meta.clone()))?;
        Ok(w)
    }

    /// Appends to a file whose header and records are already written.
    pub fn appending(out: W) -> io::Result<Self> {
        Ok(FlowWriter {
            out: Some(out),
            enc: Encoder::new()?,
            pending: Vec::with_capacity(PENDING_MAX + 64 * 1024),
        })
    }

    /// Appends one record.
    pub fn write(&mut self, rec: &Record) -> io::Result<()> {
        self.enc.encode_into(rec, &mut self.pending)?;
        self.maybe_write_pending()
    }

    /// Writes a recorded HTTP flow from its capture (the frame `write` would make of
    /// the [`HttpFlow`] it describes, made with less work).
    pub fn write_capture(&mut self, c: &mut Capture) -> io::Result<()> {
        let hint = c.payload_hint();
        self.enc
            .frame_into(KIND_HTTP, hint, &mut self.pending, |out| {
                c.write_record(out);
                Ok(())
            })?;
        self.maybe_write_pending()
    }

    fn maybe_write_pending(&mut self) -> io::Result<()> {
        if self.pending.len() >= PENDING_MAX {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> io::Result<()> {
        let r = match self.out.as_mut() {
            Some(out) if !self.pending.is_empty() => out.write_all(&self.pending),
            _ => Ok(()),
        };
        self.pending.clear();
        r
    }

    /// Writes what is pending and flushes `out`.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.out.as_mut().map_or(Ok(()), |o| o.flush())
    }

    /// The underlying writer, after what is pending.
    pub fn into_inner(mut self) -> W {
        let _ = self.write_pending();
        self.out.take().expect("taken once")
    }
}

impl<W: Write> Drop for FlowWriter<W> {
    /// What is pending is written (best effort): a writer dropped without a flush
    /// still leaves whole records.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Why reading stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not a flow file at all.
    #[error("not a luring flow file (no LURFLOWS magic at offset 0)")]
    NotFlows,
    /// Written by a newer luring.
    #[error(
        "flow file format version {0} is newer than this luring reads (up to {VERSION}): \
         read it with a newer luring"
    )]
    Newer(u16),
    /// The file ends inside a record.
    #[error(
        "truncated record at offset {0}: the file ends inside it (flows before it are intact)"
    )]
    Truncated(u64),
    /// A record's bytes are damaged.
    #[error("corrupt record at offset {offset}: {why} (flows before it are intact)")]
    Corrupt {
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The file could not be read.
    #[error("reading the flow file: {0}")]
    Io(#[from] io::Error),
}

/// Reads a flow file record by record with flat memory. After an error it yields
/// nothing more.
pub struct FlowReader<R: Read> {
    input: R,
    offset: u64,
    /// Format version of the file.
    pub version: u16,
    done: bool,
    /// Records of kinds this luring does not know, skipped.
    pub skipped_unknown: u64,
}

impl<R: Read> FlowReader<R> {
    /// Checks the file header.
    pub fn new(mut input: R) -> Result<Self, ReadError> {
        let mut h = [0u8; FILE_HEADER_LEN];
        match read_full(&mut input, &mut h)? {
            n if n < 8 || &h[..8] != MAGIC => return Err(ReadError::NotFlows),
            n if n < FILE_HEADER_LEN => return Err(ReadError::Truncated(0)),
            _ => {}
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version > VERSION {
            return Err(ReadError::Newer(version));
        }
        Ok(FlowReader {
            input,
            offset: FILE_HEADER_LEN as u64,
            version,
            done: false,
            skipped_unknown: 0,
        })
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record; None at a clean end of file.
    pub fn next_record(&mut self) -> Option<Result<Record, ReadError>> {
        while !self.done {
            match self.frame() {
                Ok(Some(Some(r))) => return Some(Ok(r)),
                Ok(Some(None)) => self.skipped_unknown += 1,
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    /// One frame: None at end of file, Some(None) for a kind this version skips.
    fn frame(&mut self) -> Result<Option<Option<Record>>, ReadError> {
        let at = self.offset;
        let mut h = [0u8; FRAME_HEADER_LEN];
        match read_full(&mut self.input, &mut h)? {
            0 => return Ok(None),
            n if n < FRAME_HEADER_LEN => return Err(ReadError::Truncated(at)),
            _ => {}
        }
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (kind, flags) = (h[4], h[5]);
        let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let corrupt = |why: String| ReadError::Corrupt { offset: at, why };
        if len >= MAX_RECORD || flags & !FLAG_ZSTD != 0 || h[6] != 0 || h[7] != 0 {
            return Err(corrupt(format!(
                "bad frame header (length {len}, flags {flags:#x})"
            )));
        }
        let mut payload = Vec::new();
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut payload)?;
        if got < len as usize {
            return Err(ReadError::Truncated(at));
        }
        self.offset += (FRAME_HEADER_LEN + payload.len()) as u64;
        if checksum([h[4], h[5], h[6], h[7]], &payload) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        if flags & FLAG_ZSTD != 0 {
            payload = decompress(&payload).map_err(|e| corrupt(format!("zstd: {e}")))?;
        }
        let rec = decode(kind, &payload).map_err(|e| corrupt(format!("decoding: {e}")))?;
        Ok(Some(rec))
    }
}

impl<R: Read> Iterator for FlowReader<R> {
    type Item = Result<Record, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Decompresses one zstd frame, refusing to grow past the record limit.
fn decompress(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(payload)?
        .take(MAX_RECORD as u64 * 4)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Decodes a payload of a known kind; Ok(None) for a kind added by a later version.
fn decode(kind: u8, payload: &[u8]) -> Result<Option<Record>, rmp_serde::decode::Error> {
    Ok(Some(match kind {
        1 => Record::Meta(from_msgpack::<Meta>(payload)?),
        2 => Record::Http(Box::new(from_msgpack::<HttpFlow>(payload)?)),
        3 => Record::Tunnel(Box::new(from_msgpack::<TunnelFlow>(payload)?)),
        4 => Record::Drops(from_msgpack::<Drops>(payload)?),
        _ => return Ok(None),
    }))
}

/// Deepest MessagePack nesting a record may have; real records nest a few levels.
const MAX_DEPTH: usize = 32;

/// One record's MessagePack. The depth is capped well under rmp-serde's default of 1024:
/// serde recurses once per level (unknown fields too), and a file nesting a thousand
/// arrays overflowed a 2 MiB thread stack (found by the flow_file fuzz target).
fn from_msgpack<'a, T: serde::Deserialize<'a>>(
    payload: &'a [u8],
) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
}

/// CRC-32 over a frame's kind, flags and reserved bytes and its stored payload, so a
/// flipped kind is caught as surely as a flipped payload byte.
fn checksum(kind_flags: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&kind_flags);
    h.update(payload);
    h.finalize()
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Opens a flow file for reading, buffered.
pub fn open(path: &std::path::Path) -> Result<FlowReader<io::BufReader<std::fs::File>>, ReadError> {
    let f = std::fs::File::open(path)?;
    FlowReader::new(io::BufReader::with_capacity(256 * 1024, f))
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
