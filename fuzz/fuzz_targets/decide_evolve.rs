//! Fuzz target `decide_evolve`: see `broker::fuzzing::decide_evolve` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::decide_evolve(data));
