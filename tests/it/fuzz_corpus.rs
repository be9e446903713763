//! The fuzz targets' checks on the stable toolchain: every checked-in corpus input, then
//! random inputs from proptest. (`scripts/fuzz.sh` runs the same checks under libFuzzer.)

use std::path::Path;

use proptest::prelude::*;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "no seeds for {target}");
    inputs.push(Vec::new());
    inputs
}

#[test]
fn corpora_pass_every_check() {
    for input in corpus("decode_frame") {
        broker::fuzzing::decode_frames(&input);
    }
    for input in corpus("recover_segment") {
        broker::fuzzing::recover_segment(&input);
    }
    for input in corpus("decide_evolve") {
        broker::fuzzing::decide_evolve(&input);
    }
    for input in corpus("request_inputs") {
        broker::fuzzing::request_inputs(&input);
    }
    for input in corpus("sse_head") {
        broker::fuzzing::sse_head(&input);
    }
    for input in corpus("jwt") {
        broker::fuzzing::jwt(&input);
    }
}

/// The `jwt` target's input for a token signed with its key: time, mode byte, header, claims.
fn signed_jwt_input(now: u64, header: &str, claims: &str) -> Vec<u8> {
    let mut input = now.to_le_bytes().to_vec();
    input.push(0);
    input.extend_from_slice(header.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(claims.as_bytes());
    input
}

/// A valid golden segment with one byte changed, anywhere.
fn golden_with_flip() -> impl Strategy<Value = Vec<u8>> {
    let golden = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("log-format/golden/00000000000000000001.seg"),
    )
    .unwrap();
    let len = golden.len();
    (0..len, any::<u8>(), 0..len).prop_map(move |(at, byte, cut)| {
        let mut bytes = golden.clone();
        bytes[at] ^= byte | 1;
        // Sometimes also torn.
        if cut % 3 == 0 {
            bytes.truncate(cut.max(1));
        }
        // The target prepends a header to inputs starting with an even byte; golden starts 'B'.
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_decode_safely(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        broker::fuzzing::decode_frames(&data);
    }

    #[test]
    fn random_command_sequences_keep_the_invariants(data in proptest::collection::vec(any::<u8>(), 0..240)) {
        broker::fuzzing::decide_evolve(&data);
    }

    #[test]
    fn random_request_inputs_parse_safely(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        broker::fuzzing::request_inputs(&data);
    }

    #[test]
    fn random_sse_heads_keep_the_direct_path_rules(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        broker::fuzzing::sse_head(&data);
    }

    #[test]
    fn sse_shaped_heads_keep_the_direct_path_rules(
        text in "GET /sse[ ?][a-z=&0-9 ]{0,12}( HTTP/1\\.[019])?(\r\n[a-zA-Z-]{1,16}: ?[ -~]{0,12}){0,5}(\r\n){0,2}(GET / HTTP/1\\.1\r\n\r\n)?"
    ) {
        broker::fuzzing::sse_head(text.as_bytes());
    }

    #[test]
    fn random_tokens_and_times_verify_safely(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        broker::fuzzing::jwt(&data);
    }

    #[test]
    fn signed_tokens_are_accepted_only_within_their_claims(
        now in 0u64..4_000,
        iat in 0u64..4_000,
        exp in 0u64..4_000,
        alg in "HS256|HS384|none|hs256",
        iss in "broker|someone|",
        aud in "|,\"aud\":\"broker-sse\"|,\"aud\":5",
    ) {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let claims = format!(
            r#"{{"sub":"bob","iat":{iat},"exp":{exp},"iss":"{iss}","tenant":"t","epoch":3{aud}}}"#
        );
        broker::fuzzing::jwt(&signed_jwt_input(now, &header, &claims));
    }

    #[test]
    fn random_json_shapes_parse_safely(text in "\\{(\"[a-z_]{1,12}\": ?(null|true|[0-9]{1,5}|\"[^\"\\\\]{0,8}\"|\\[\\]|\\{\\}),? ?){0,6}\\}") {
        broker::fuzzing::request_inputs(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn damaged_segments_recover_a_prefix_or_refuse(bytes in golden_with_flip()) {
        broker::fuzzing::recover_segment(&bytes);
    }

    #[test]
    fn random_segments_recover_a_prefix_or_refuse(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        broker::fuzzing::recover_segment(&data);
    }
}
