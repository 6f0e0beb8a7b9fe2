#![no_main]
//! `luring::fuzzing::client_hello`; the property test of the same name runs it on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| luring::fuzzing::client_hello(data));
