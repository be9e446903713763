//! Fuzz target `request_inputs`: see `broker::fuzzing::request_inputs` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::request_inputs(data));
