//! Fuzz target `jwt`: see `broker::fuzzing::jwt` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::jwt(data));
