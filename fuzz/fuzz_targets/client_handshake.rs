#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgate::fuzzing::client_handshake(data));
