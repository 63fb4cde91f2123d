#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_fuzz::targets::prekey_bundle(data));
