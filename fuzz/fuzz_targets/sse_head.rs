//! Fuzz target `sse_head`: see `broker::fuzzing::sse_head` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::sse_head(data));
