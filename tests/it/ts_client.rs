//! The TypeScript client (`clients/js`): compiled with `tsc`, then its own `node:test` suite
//! runs against this build's binary (each test starts and restarts its own server).
//!
//! `scripts/test.sh` runs `npm ci` in `clients/js` and sets `BROKER_REQUIRE_JS=1`, so there
//! this test cannot skip.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn typescript_client_builds_and_passes_its_tests_against_the_server() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    if !dir.join("node_modules/typescript").is_dir() {
        assert!(
            std::env::var_os("BROKER_REQUIRE_JS").is_none(),
            "clients/js/node_modules is missing: run scripts/test.sh (it runs npm ci there)"
        );
        eprintln!("skipped: clients/js dependencies not installed");
        return;
    }
    let build = Command::new("node")
        .arg("node_modules/typescript/bin/tsc")
        .args(["-p", "."])
        .current_dir(&dir)
        .output()
        .expect("node must be installed");
    assert!(
        build.status.success(),
        "tsc failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let test = Command::new("node")
        .args(["--test", "--test-concurrency=1", "test/client.test.mjs"])
        .env("BROKER_BIN", env!("CARGO_BIN_EXE_broker"))
        .current_dir(&dir)
        .output()
        .expect("node must be installed");
    let report = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "the client's tests failed:\n{report}\n{}",
        String::from_utf8_lossy(&test.stderr)
    );
    // node:test prints "# pass N" / "# fail 0": the suite must have run something.
    assert!(report.contains("# fail 0"), "{report}");
    assert!(!report.contains("# pass 0"), "{report}");
}
