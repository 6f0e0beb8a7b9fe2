#![no_main]
//! `luring::fuzzing::http1_request`, differential against http_desync_guardian.

#[path = "../src/desync.rs"]
mod desync;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    luring::fuzzing::http1_request(data, &desync::classify)
});
