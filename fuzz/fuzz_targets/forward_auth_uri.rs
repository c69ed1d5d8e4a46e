//! See fuzz/README.md; the property lives in `jwtgate::fuzzing::forward_auth_uri`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jwtgate::fuzzing::forward_auth_uri(data));
