#![no_main]
//! `luring::fuzzing::har_import`; the property test of the same name runs it on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| luring::fuzzing::har_import(data));
