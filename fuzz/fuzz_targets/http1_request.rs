//! Request head parser plus body decoder on arbitrary bytes: must never panic, and `scan`
//! and `decode` must agree on where the body ends however the input is split.
//!
//! Run: `cargo +nightly fuzz run http1_request` from the repository root.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use luring::proto::http1::{parse_request_head, request_body_kind, BodyDecoder, Limits};

fuzz_target!(|input: &[u8]| {
    // The first byte picks where the body is split, so splits are explored too.
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_head_size: 4096,
        max_headers: 32,
    };
    let Ok(Some((head, n))) = parse_request_head(data, &limits) else {
        return;
    };
    let Ok(kind) = request_body_kind(&head) else {
        return;
    };
    let body = &data[n..];
    let cut = usize::from(split).min(body.len());

    let mut scanner = BodyDecoder::new(kind);
    let mut pending = body[..cut].to_vec();
    let mut scanned = Ok(0usize);
    for next in [&body[cut..], &[][..]] {
        match scanner.scan(&pending) {
            Ok(s) => {
                assert!(s.done || s.consumed == pending.len());
                scanned = scanned.map(|t| t + s.consumed);
                pending.drain(..s.consumed);
                if s.done {
                    break;
                }
            }
            Err(e) => {
                scanned = Err(e);
                break;
            }
        }
        pending.extend_from_slice(next);
    }

    let mut decoder = BodyDecoder::new(kind);
    let mut decoded = Ok(0usize);
    let mut payload = 0usize;
    let mut buf = BytesMut::from(&body[..cut]);
    for next in [&body[cut..], &[][..]] {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(d) => {
                decoded = decoded.map(|t| t + before - buf.len());
                payload += d.data.iter().map(|b| b.len()).sum::<usize>();
                if d.done {
                    break;
                }
            }
            Err(e) => {
                decoded = Err(e);
                break;
            }
        }
        buf.extend_from_slice(next);
    }
    assert_eq!(scanned, decoded);
    assert_eq!(scanner.is_done(), decoder.is_done());
    if let Ok(framed) = decoded {
        assert!(payload <= framed);
    }
});
