//! Inputs shared by the criterion benches.

use bytes::Bytes;
use luring::proto::protobuf::{Message, Value};

/// A message of 20 fields of every common kind (about 300 bytes), one of them nested.
pub fn twenty_fields() -> Bytes {
    let mut inner = Message::new();
    inner.push(1, Value::string("nested name"));
    inner.push(2, Value::Varint(42));
    inner.push(3, Value::double(0.25));
    let mut m = Message::new();
    for n in 1..=20u32 {
        let v = match n % 5 {
            0 => Value::string("a string value of some length"),
            1 => Value::Varint(u64::from(n) * 1_000_003),
            2 => Value::double(f64::from(n) / 3.0),
            3 => Value::float(n as f32),
            _ => Value::sint(-i64::from(n) * 77),
        };
        m.push(n, v);
    }
    m.fields[9].value = Value::message(&inner);
    m.encode()
}
