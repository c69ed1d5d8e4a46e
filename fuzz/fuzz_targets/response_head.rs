//! See fuzz/README.md; the property lives in `jwtgate::fuzzing::response_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jwtgate::fuzzing::response_head(data));
