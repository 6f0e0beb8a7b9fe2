//! The gRPC message decoder on arbitrary bodies: must never panic, must give the same
//! messages whether the body comes whole, cut in two, or byte by byte, and the events'
//! wire bytes must be the body (up to the fault, if any).
//!
//! Run: `cargo +nightly fuzz run grpc_frames` from the repository root.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use luring::proto::grpc::{encode_message, Decoder, Event, FrameError};

/// Events of `body` fed in pieces of the given lengths (the rest as one last piece).
fn run(
    max: usize,
    web: bool,
    body: &Bytes,
    cuts: &[usize],
) -> (Vec<Event>, Result<(), FrameError>) {
    let mut d = Decoder::new(max, web);
    let mut out = Vec::new();
    let mut at = 0;
    for &len in cuts.iter().chain(std::iter::once(&body.len())) {
        let end = (at + len).min(body.len());
        if let Err(e) = d.feed(body.slice(at..end), &mut out) {
            return (out, Err(e));
        }
        at = end;
    }
    let end = d.finish();
    (out, end)
}

/// The events with consecutive passthrough pieces merged, so chunkings compare equal.
fn joined(events: &[Event]) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        if let (
            Event::Passthrough { data, last },
            Some(Event::Passthrough {
                data: prev,
                last: prev_last,
            }),
        ) = (e, out.last_mut())
        {
            if !*prev_last {
                *prev = [&prev[..], &data[..]].concat().into();
                *prev_last = *last;
                continue;
            }
        }
        out.push(e.clone());
    }
    out
}

fuzz_target!(|input: &[u8]| {
    // Byte 0: web or not and where to cut; byte 1: the size limit (small, so oversize
    // frames happen).
    let Some((&[mode, max], body)) = input.split_first_chunk::<2>() else {
        return;
    };
    let web = mode & 1 != 0;
    let max = usize::from(max);
    let body = Bytes::copy_from_slice(body);

    let (whole, whole_end) = run(max, web, &body, &[]);
    let wire: Vec<u8> = whole.iter().flat_map(|e| e.wire().to_vec()).collect();
    if whole_end.is_ok() {
        assert_eq!(wire, &body[..]);
    } else {
        assert!(body.starts_with(&wire));
    }
    for e in &whole {
        if let Event::Message(m) = e {
            assert_eq!(encode_message(&m.payload, m.compressed), m.wire);
            assert!(m.payload.len() <= max);
        }
    }

    let split = run(max, web, &body, &[usize::from(mode >> 1)]);
    assert_eq!(joined(&split.0), joined(&whole));
    assert_eq!(split.1, whole_end);

    let ones = vec![1; body.len()];
    let bytewise = run(max, web, &body, &ones);
    assert_eq!(joined(&bytewise.0), joined(&whole));
    assert_eq!(bytewise.1, whole_end);
});
