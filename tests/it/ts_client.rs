//! The TypeScript client (`clients/js`): compiled with `tsc`, its type tests checked
//! (`tsc -p test`), then its own `node:test` suite runs against this build's binary (each test
//! starts and restarts its own server).
//!
//! Needs Node.js and the packages of `clients/js`: a plain `cargo nextest run` lists this test
//! as skipped, and `scripts/test.sh` installs them and runs it (`common::tools`).

use std::process::Command;

#[test]
#[ignore = "needs Node.js and clients/js packages (scripts/test.sh installs them and runs this)"]
fn typescript_client_builds_and_passes_its_tests_against_the_server() {
    let dir = crate::common::tools::npm_packages("clients/js", &["typescript"]);
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
    // The public API's types (test/types.ts: what must and must not compile).
    let types = Command::new("node")
        .arg("node_modules/typescript/bin/tsc")
        .args(["-p", "test"])
        .current_dir(&dir)
        .output()
        .expect("node must be installed");
    assert!(
        types.status.success(),
        "the type tests failed:\n{}{}",
        String::from_utf8_lossy(&types.stdout),
        String::from_utf8_lossy(&types.stderr)
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
