//! Arbitrary bytes as a frame stream: decoding and record validation must never panic,
//! and whatever decodes must re-encode to the same bytes.
#![no_main]

use broker::log::frame;
use broker::state::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        let Ok((payload, len)) = frame::decode(&data[at..]) else {
            break;
        };
        if let Ok(record) = Record::decode(payload) {
            assert_eq!(Record::cursor_of(payload), Some(record.cursor));
            let again = Record::decode(&record.encode()).expect("re-encoded record decodes");
            assert_eq!(again, record);
        }
        at += len;
    }
});
