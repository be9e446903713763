//! Fuzz target `recover_segment`: see `broker::fuzzing::recover_segment` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::recover_segment(data));
