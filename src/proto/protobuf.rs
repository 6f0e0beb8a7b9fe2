//! Protocol Buffers wire format without a schema, for plugins that look into gRPC
//! payloads: a message is an ordered list of fields (number, wire type, value), decoded
//! and encoded back.
//!
//! Round trips are exact. Every decoded field keeps its raw bytes (tag included), and
//! encoding re-emits them while the field's number and value still match, so field
//! order, non-minimal varints, and unknown or repeated fields survive untouched; only
//! fields that were changed or added are written in canonical form.
//!
//! Groups (wire types 3 and 4, proto2's deprecated `group`) are supported minimally: a
//! group is one field whose value is the bytes between its start and end tags, kept as
//! they are and decodable as a message on request like a length-delimited value. They
//! are rare, but refusing them would make a whole proto2 message unreadable to plugins
//! for the sake of one field. Nesting of groups is bounded by [`MAX_GROUP_DEPTH`]. An end
//! tag without its start, wire types 6 and 7, field number 0, truncated varints or
//! fixed-width values, varints over 10 bytes or 64 bits, and lengths past the end are
//! refused with a [`DecodeError`] that says what and where.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

/// Deepest nesting of groups inside groups that decoding follows.
pub const MAX_GROUP_DEPTH: usize = 64;

/// Highest field number the format allows (2^29 - 1).
pub const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// The low 3 bits of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireType {
    /// 0: int32, int64, uint32, uint64, sint32, sint64, bool, enum.
    Varint = 0,
    /// 1: fixed64, sfixed64, double.
    I64 = 1,
    /// 2: string, bytes, embedded messages, packed repeated fields.
    Len = 2,
    /// 3: start of a group.
    StartGroup = 3,
    /// 4: end of a group.
    EndGroup = 4,
    /// 5: fixed32, sfixed32, float.
    I32 = 5,
}

/// A field's value as the wire carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1, little-endian on the wire.
    I64(u64),
    /// Wire type 2: the bytes after the length.
    Len(Bytes),
    /// Wire types 3..4: the encoded fields between the start and end tags.
    Group(Bytes),
    /// Wire type 5, little-endian on the wire.
    I32(u32),
}

/// What was wrong with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input ends inside a varint.
    TruncatedVarint,
    /// A varint over 10 bytes, or over 64 bits.
    VarintTooLong,
    /// The input ends inside a fixed32 or fixed64.
    TruncatedFixed,
    /// A length-delimited value runs past the end of the input.
    LengthPastEnd,
    /// Wire type 6 or 7.
    BadWireType(u8),
    /// Field number 0.
    FieldNumberZero,
    /// A tag over 32 bits (field number past 2^29 - 1).
    FieldNumberTooLarge,
    /// An end-group tag without the matching start (its field number).
    UnexpectedEndGroup(u32),
    /// A group whose end tag never comes (its field number).
    UnterminatedGroup(u32),
    /// Groups nested deeper than [`MAX_GROUP_DEPTH`].
    GroupTooDeep,
}

/// Malformed input: what, and the byte offset where the bad element starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf at byte {offset}: {kind:?}")]
pub struct DecodeError {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Offset in the decoded buffer.
    pub offset: usize,
}

/// One field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field number (1 ..= 2^29 - 1).
    pub number: u32,
    /// The value.
    pub value: Value,
    /// The field's bytes as decoded, tag included; re-emitted while they still say
    /// `number` and `value`.
    raw: Option<Bytes>,
}

/// A message: its fields in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The fields, in order; repeated numbers are kept as separate fields.
    pub fields: Vec<Field>,
}

impl WireType {
    /// The wire type of the low 3 bits of a tag, None for 6 and 7.
    pub fn from_bits(bits: u8) -> Option<WireType> {
        Some(match bits {
            0 => WireType::Varint,
            1 => WireType::I64,
            2 => WireType::Len,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::I32,
            _ => return None,
        })
    }
}

impl Value {
    /// The wire type this value is written with (a group: StartGroup).
    pub fn wire_type(&self) -> WireType {
        match self {
            Value::Varint(_) => WireType::Varint,
            Value::I64(_) => WireType::I64,
            Value::Len(_) => WireType::Len,
            Value::Group(_) => WireType::StartGroup,
            Value::I32(_) => WireType::I32,
        }
    }

    /// A length-delimited value or a group decoded as a message, when it parses cleanly.
    /// Any bytes may happen to parse: only the schema can say a field is a message.
    pub fn as_message(&self) -> Option<Message> {
        match self {
            Value::Len(b) | Value::Group(b) => Message::decode(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a length-delimited value.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Len(b) => Some(b),
            _ => None,
        }
    }

    /// A length-delimited value as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The integer of a varint, fixed64 or fixed32 (uint32/64, fixed32/64, bool, enum).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Varint(v) | Value::I64(v) => Some(v),
            Value::I32(v) => Some(u64::from(v)),
            _ => None,
        }
    }

    /// Two's complement of a varint or fixed value (int32/64, sfixed32/64).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Varint(v) | Value::I64(v) => Some(v as i64),
            Value::I32(v) => Some(i64::from(v as i32)),
            _ => None,
        }
    }

    /// A zigzag varint (sint32/64).
    pub fn as_sint(&self) -> Option<i64> {
        match *self {
            Value::Varint(v) => Some(zigzag_decode(v)),
            _ => None,
        }
    }

    /// A fixed64 as a double.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::I64(v) => Some(f64::from_bits(v)),
            _ => None,
        }
    }

    /// A fixed32 as a float.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::I32(v) => Some(f32::from_bits(v)),
            _ => None,
        }
    }

    /// The varints of a packed repeated field, None if it is not a clean run of them.
    pub fn packed_varints(&self) -> Option<Vec<u64>> {
        let b = self.as_bytes()?;
        let mut out = Vec::with_capacity(b.len());
        let mut pos = 0;
        while pos < b.len() {
            out.push(read_varint(b, &mut pos).ok()?);
        }
        Some(out)
    }

    /// A zigzag varint (sint32/64) value.
    pub fn sint(v: i64) -> Value {
        Value::Varint(zigzag_encode(v))
    }

    /// A double value.
    pub fn double(v: f64) -> Value {
        Value::I64(v.to_bits())
    }

    /// A float value.
    pub fn float(v: f32) -> Value {
        Value::I32(v.to_bits())
    }

    /// A string value.
    pub fn string(s: &str) -> Value {
        Value::Len(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// An embedded message value.
    pub fn message(m: &Message) -> Value {
        Value::Len(m.encode())
    }

    /// A packed repeated field of varints.
    pub fn packed(values: &[u64]) -> Value {
        let mut out = BytesMut::with_capacity(values.len() * 2);
        for &v in values {
            put_varint(v, &mut out);
        }
        Value::Len(out.freeze())
    }
}

/// Zigzag-decodes a sint varint.
pub fn zigzag_decode(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Zigzag-encodes a value for a sint varint.
pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

impl Field {
    /// A new field (encoded in canonical form).
    pub fn new(number: u32, value: Value) -> Field {
        Field {
            number,
            value,
            raw: None,
        }
    }

    /// The bytes this field was decoded from, tag included.
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw.as_ref()
    }

    /// Whether encoding re-emits the decoded bytes: the field was decoded and its number
    /// and value are as they were.
    pub fn is_unchanged(&self) -> bool {
        let Some(raw) = &self.raw else {
            return false;
        };
        let mut pos = 0;
        match read_field(raw, &mut pos, 0) {
            Ok((number, value)) => number == self.number && value.is(&self.value, raw),
            Err(_) => false,
        }
    }

    /// Appends the field's wire bytes to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        match &self.raw {
            Some(raw) if self.is_unchanged() => out.put_slice(raw),
            _ => self.encode_canonical(out),
        }
    }

    /// Writes the field from number and value, minimal varints.
    fn encode_canonical(&self, out: &mut BytesMut) {
        let tag = |wt: WireType| u64::from(self.number) << 3 | wt as u64;
        put_varint(tag(self.value.wire_type()), out);
        match &self.value {
            Value::Varint(v) => put_varint(*v, out),
            Value::I64(v) => out.put_u64_le(*v),
            Value::I32(v) => out.put_u32_le(*v),
            Value::Len(b) => {
                put_varint(b.len() as u64, out);
                out.put_slice(b);
            }
            Value::Group(b) => {
                out.put_slice(b);
                put_varint(tag(WireType::EndGroup), out);
            }
        }
    }
}

impl Message {
    /// An empty message.
    pub fn new() -> Message {
        Message::default()
    }

    /// Decodes `data`; values and raw bytes are slices of it, not copies.
    pub fn decode(data: &Bytes) -> Result<Message, DecodeError> {
        // Fields are rarely under 2 bytes; a guess that saves the first regrowths.
        let mut fields = Vec::with_capacity((data.len() / 4).min(32));
        let mut pos = 0;
        while pos < data.len() {
            let start = pos;
            let (number, value) = read_field(data, &mut pos, 0)?;
            fields.push(Field {
                number,
                value: value.to_value(data),
                raw: Some(data.slice(start..pos)),
            });
        }
        Ok(Message { fields })
    }

    /// The wire bytes: decoded fields as they came unless changed, the rest canonical.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends the wire bytes to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        for f in &self.fields {
            f.encode_into(out);
        }
    }

    /// About the encoded size, for buffer capacity.
    fn encoded_len_hint(&self) -> usize {
        self.fields
            .iter()
            .map(|f| match (&f.raw, &f.value) {
                (Some(r), _) => r.len(),
                (None, Value::Len(b) | Value::Group(b)) => b.len() + 10,
                (None, _) => 15,
            })
            .sum()
    }

    /// The fields numbered `number`, in order.
    pub fn get_all(&self, number: u32) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(move |f| f.number == number)
    }

    /// The last field numbered `number` (for a singular field, the last one wins).
    pub fn get(&self, number: u32) -> Option<&Field> {
        self.fields.iter().rev().find(|f| f.number == number)
    }

    /// The last field numbered `number`, to change.
    pub fn get_mut(&mut self, number: u32) -> Option<&mut Field> {
        self.fields.iter_mut().rev().find(|f| f.number == number)
    }

    /// Appends a field.
    pub fn push(&mut self, number: u32, value: Value) {
        self.fields.push(Field::new(number, value));
    }

    /// Sets a singular field: changes the last one numbered `number` and drops the
    /// earlier ones, or appends one.
    pub fn set(&mut self, number: u32, value: Value) {
        let Some(last) = self.fields.iter().rposition(|f| f.number == number) else {
            return self.push(number, value);
        };
        self.fields[last].value = value;
        let mut i = 0;
        self.fields.retain(|f| {
            i += 1;
            f.number != number || i - 1 == last
        });
    }

    /// Removes every field numbered `number`; returns how many there were.
    pub fn remove(&mut self, number: u32) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| f.number != number);
        before - self.fields.len()
    }
}

/// A value as read: byte values are ranges of the input, so reading costs no reference
/// counting and comparing a raw field with its value needs no slice of it.
#[derive(Debug)]
enum Read {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(Range<usize>),
    Group(Range<usize>),
}

impl Read {
    /// The value, byte values sliced out of `data` (the buffer it was read from).
    fn to_value(&self, data: &Bytes) -> Value {
        match *self {
            Read::Varint(v) => Value::Varint(v),
            Read::I64(v) => Value::I64(v),
            Read::I32(v) => Value::I32(v),
            Read::Len(ref r) => Value::Len(data.slice(r.clone())),
            Read::Group(ref r) => Value::Group(data.slice(r.clone())),
        }
    }

    /// Whether it equals `v`, byte values read from `data`.
    fn is(&self, v: &Value, data: &[u8]) -> bool {
        match (self, v) {
            (Read::Varint(a), Value::Varint(b)) | (Read::I64(a), Value::I64(b)) => a == b,
            (Read::I32(a), Value::I32(b)) => a == b,
            (Read::Len(r), Value::Len(b)) | (Read::Group(r), Value::Group(b)) => {
                // An untouched value is a slice of the same bytes: no need to compare them.
                let a = &data[r.clone()];
                std::ptr::eq(a, &b[..]) || a == &b[..]
            }
            _ => false,
        }
    }
}

/// Reads one field at `pos`, moving `pos` past it; `depth` is the group nesting.
fn read_field(data: &[u8], pos: &mut usize, depth: usize) -> Result<(u32, Read), DecodeError> {
    let start = *pos;
    let err = |kind, offset| DecodeError { kind, offset };
    let tag = read_varint(data, pos).map_err(|k| err(k, start))?;
    let tag = u32::try_from(tag).map_err(|_| err(ErrorKind::FieldNumberTooLarge, start))?;
    let number = tag >> 3;
    if number == 0 {
        return Err(err(ErrorKind::FieldNumberZero, start));
    }
    let wt = WireType::from_bits((tag & 7) as u8)
        .ok_or_else(|| err(ErrorKind::BadWireType((tag & 7) as u8), start))?;
    let at = *pos;
    let value = match wt {
        WireType::Varint => Read::Varint(read_varint(data, pos).map_err(|k| err(k, at))?),
        WireType::I64 => {
            let b = fixed::<8>(data, pos).ok_or_else(|| err(ErrorKind::TruncatedFixed, at))?;
            Read::I64(u64::from_le_bytes(b))
        }
        WireType::I32 => {
            let b = fixed::<4>(data, pos).ok_or_else(|| err(ErrorKind::TruncatedFixed, at))?;
            Read::I32(u32::from_le_bytes(b))
        }
        WireType::Len => {
            let len = read_varint(data, pos).map_err(|k| err(k, at))?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| pos.checked_add(l))
                .filter(|&e| e <= data.len())
                .ok_or_else(|| err(ErrorKind::LengthPastEnd, at))?;
            let r = *pos..end;
            *pos = end;
            Read::Len(r)
        }
        WireType::StartGroup => Read::Group(read_group(data, pos, number, depth)?),
        WireType::EndGroup => return Err(err(ErrorKind::UnexpectedEndGroup(number), start)),
    };
    Ok((number, value))
}

/// Reads the fields of a group up to its end tag; returns where the bytes between the
/// tags are.
fn read_group(
    data: &[u8],
    pos: &mut usize,
    number: u32,
    depth: usize,
) -> Result<Range<usize>, DecodeError> {
    if depth >= MAX_GROUP_DEPTH {
        return Err(DecodeError {
            kind: ErrorKind::GroupTooDeep,
            offset: *pos,
        });
    }
    let content = *pos;
    loop {
        if *pos >= data.len() {
            return Err(DecodeError {
                kind: ErrorKind::UnterminatedGroup(number),
                offset: content,
            });
        }
        let tag_at = *pos;
        let mut peek = *pos;
        let tag = read_varint(data, &mut peek).map_err(|kind| DecodeError {
            kind,
            offset: tag_at,
        })?;
        if tag & 7 == WireType::EndGroup as u64 && tag >> 3 == u64::from(number) {
            *pos = peek;
            return Ok(content..tag_at);
        }
        read_field(data, pos, depth + 1)?;
    }
}

/// Reads a varint at `pos` (at most 10 bytes, at most 64 bits), moving `pos` past it.
fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, ErrorKind> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&b) = data.get(*pos + i) else {
            return Err(ErrorKind::TruncatedVarint);
        };
        if i == 9 && b > 1 {
            return Err(ErrorKind::VarintTooLong);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *pos += i + 1;
            return Ok(v);
        }
    }
    Err(ErrorKind::VarintTooLong)
}

/// N bytes at `pos`, moving `pos` past them.
fn fixed<const N: usize>(data: &[u8], pos: &mut usize) -> Option<[u8; N]> {
    let b = data.get(*pos..pos.checked_add(N)?)?;
    *pos += N;
    b.try_into().ok()
}

/// Appends `v` as a minimal varint.
pub fn put_varint(mut v: u64, out: &mut BytesMut) {
    while v >= 0x80 {
        out.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;
