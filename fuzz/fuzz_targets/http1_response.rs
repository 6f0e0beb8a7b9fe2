#![no_main]
//! `luring::fuzzing::http1_response`; the property test of the same name runs it on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| luring::fuzzing::http1_response(data));
