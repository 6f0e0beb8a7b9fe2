//! The grpc-web-text base64 decoder, then the gRPC-web message decoder, on arbitrary
//! text: must never panic, must give the same bytes however the text is cut, and must
//! agree with a standard base64 decoder on what that decoder accepts.
//!
//! Run: `cargo +nightly fuzz run grpc_web_text` from the repository root.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use luring::proto::grpc::{Decoder, TextDecoder, TextError};

/// The bytes of `text` cut at `cut`, or the first error.
fn decode(text: &[u8], cut: usize) -> Result<Vec<u8>, TextError> {
    let mut t = TextDecoder::new();
    let mut out = t.decode(&text[..cut])?.to_vec();
    out.extend_from_slice(&t.decode(&text[cut..])?);
    out.extend_from_slice(&t.finish()?);
    Ok(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, text)) = input.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(text.len());
    let whole = decode(text, text.len());
    assert_eq!(decode(text, cut), whole);
    let mut bytewise = TextDecoder::new();
    let mut out = Vec::new();
    let mut err = None;
    for b in text.chunks(1) {
        match bytewise.decode(b) {
            Ok(d) => out.extend_from_slice(&d),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let bytewise = match err {
        Some(e) => Err(e),
        None => bytewise.finish().map(|d| {
            out.extend_from_slice(&d);
            out
        }),
    };
    assert_eq!(bytewise, whole);

    if let Ok(std) = base64::engine::general_purpose::STANDARD.decode(text) {
        assert_eq!(whole.as_deref(), Ok(&std[..]));
    }
    if let Ok(bin) = whole {
        // Whatever the frames are, decoding them must not panic.
        let mut d = Decoder::new(64, true);
        let mut events = Vec::new();
        if d.feed(bin.into(), &mut events).is_ok() {
            let _ = d.finish();
        }
    }
});
