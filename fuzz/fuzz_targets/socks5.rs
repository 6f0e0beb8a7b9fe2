#![no_main]
//! `luring::fuzzing::socks5`; the property test of the same name runs it on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| luring::fuzzing::socks5(data));
