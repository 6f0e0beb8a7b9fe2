#![no_main]
//! `luring::fuzzing::protobuf`; the property test of the same name runs it on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| luring::fuzzing::protobuf(data));
