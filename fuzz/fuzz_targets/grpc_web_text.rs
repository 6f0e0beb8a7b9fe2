#![no_main]
//! `luring::fuzzing::grpc_web_text`; the property test of the same name runs it on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| luring::fuzzing::grpc_web_text(data));
