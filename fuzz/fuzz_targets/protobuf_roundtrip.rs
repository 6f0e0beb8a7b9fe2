//! The schema-less protobuf codec on arbitrary bytes: must never panic; whatever decodes
//! must encode back to the same bytes, and a canonical re-encoding must decode to the same
//! fields.
//!
//! Run: `cargo +nightly fuzz run protobuf_roundtrip` from the repository root.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use luring::proto::protobuf::{Field, Message, Value};

/// Numbers and values of the fields, without their raw bytes.
fn values(m: &Message) -> Vec<(u32, Value)> {
    m.fields
        .iter()
        .map(|f| (f.number, f.value.clone()))
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let data = Bytes::copy_from_slice(input);
    let Ok(m) = Message::decode(&data) else {
        return;
    };
    assert_eq!(m.encode(), data);
    assert!(m.fields.iter().all(Field::is_unchanged));

    let canonical = Message {
        fields: m
            .fields
            .iter()
            .map(|f| Field::new(f.number, f.value.clone()))
            .collect(),
    };
    let re = Message::decode(&canonical.encode()).expect("canonical bytes decode");
    assert_eq!(values(&re), values(&m));

    // One level of nesting: a value that parses as a message round-trips too.
    for f in &m.fields {
        if let (Some(inner), Value::Len(b) | Value::Group(b)) = (f.value.as_message(), &f.value) {
            assert_eq!(&inner.encode(), b);
        }
    }
});
