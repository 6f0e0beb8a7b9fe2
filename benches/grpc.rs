//! gRPC message framing and the protobuf wire codec: what a hooked call pays per message.

#[path = "common/sample.rs"]
mod sample;
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use luring::proto::grpc::{encode_message, encode_text, Decoder, Event, TextDecoder};
use luring::proto::protobuf::{Message, Value};
use sample::twenty_fields;

/// 64 messages of 1 KiB payload each, as one body.
fn body() -> Bytes {
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 31) as u8).collect();
    let mut wire = Vec::new();
    for _ in 0..64 {
        wire.extend_from_slice(&encode_message(&payload, false));
    }
    Bytes::from(wire)
}

/// Feeds `body` in reads of `read` bytes; returns the message count.
fn decode(body: &Bytes, read: usize) -> usize {
    let mut dec = Decoder::new(4 << 20, false);
    let mut events = Vec::with_capacity(64);
    let mut at = 0;
    while at < body.len() {
        let end = (at + read).min(body.len());
        dec.feed(body.slice(at..end), &mut events).unwrap();
        at = end;
    }
    assert!(dec.at_boundary());
    events
        .iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .count()
}

fn framing(c: &mut Criterion) {
    let body = body();
    let mut g = c.benchmark_group("grpc_decode_1k_messages");
    g.throughput(Throughput::Bytes(body.len() as u64));
    // Whole messages inside one read: sliced, never copied.
    g.bench_function("one_read", |b| {
        b.iter(|| decode(black_box(&body), body.len()))
    });
    g.bench_function("16k_reads", |b| {
        b.iter(|| decode(black_box(&body), 16 * 1024))
    });
    // Reads shorter than a message: every message straddles reads and is copied once.
    g.bench_function("1000b_reads", |b| b.iter(|| decode(black_box(&body), 1000)));
    let text = encode_text(&body);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("web_text_16k_reads", |b| {
        b.iter(|| {
            let mut t = TextDecoder::new();
            let mut dec = Decoder::new(4 << 20, true);
            let mut events = Vec::with_capacity(64);
            for read in black_box(&text).chunks(16 * 1024) {
                dec.feed(t.decode(read).unwrap(), &mut events).unwrap();
            }
            dec.feed(t.finish().unwrap(), &mut events).unwrap();
            assert_eq!(events.len(), 64);
        })
    });
    g.finish();
}

fn protobuf(c: &mut Criterion) {
    let wire = twenty_fields();
    let decoded = Message::decode(&wire).unwrap();
    assert_eq!(decoded.fields.len(), 20);
    let mut g = c.benchmark_group("protobuf_20_fields");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| Message::decode(black_box(&wire)).unwrap())
    });
    g.bench_function("encode_unchanged", |b| {
        b.iter(|| black_box(&decoded).encode())
    });
    let mut one_changed = decoded.clone();
    one_changed.fields[4].value = Value::string("changed");
    g.bench_function("encode_one_changed", |b| {
        b.iter(|| black_box(&one_changed).encode())
    });
    let fresh = Message {
        fields: decoded
            .fields
            .iter()
            .map(|f| luring::proto::protobuf::Field::new(f.number, f.value.clone()))
            .collect(),
    };
    g.bench_function("encode_new", |b| b.iter(|| black_box(&fresh).encode()));
    g.bench_function("decode_nested_and_reencode", |b| {
        b.iter(|| {
            let m = Message::decode(black_box(&wire)).unwrap();
            let inner = m.get(10).unwrap().value.as_message().unwrap();
            (m.encode(), inner.encode())
        })
    });
    g.finish();
}

criterion_group!(benches, framing, protobuf);
criterion_main!(benches);
