#![no_main]
//! `luring::fuzzing::flow_file`; the property test of the same name runs it on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| luring::fuzzing::flow_file(data));
