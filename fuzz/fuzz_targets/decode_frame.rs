//! Fuzz target `decode_frame`: see `broker::fuzzing::decode_frames` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::decode_frames(data));
