//! See fuzz/README.md; the property lives in `jwtgate::fuzzing::content_length`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jwtgate::fuzzing::content_length(data));
