//! The admin console at `/console`, end to end in headless Chromium (playwright-core,
//! `tests/js/console_e2e.mjs`): sign in (kept over a reload, forgotten at sign-out), users
//! paged and sorted by the server, a user's detail, create, edit, revoke and delete with
//! confirmations, two-factor enrolment verified by a code computed from the QR's URI, tenants
//! from a list, the event history with its chart, the live tail with the events' own times,
//! hostile names shown as text, long names and a phone that keep the layout. Screenshots are
//! kept in `target/test-artifacts/console/`; with `BROKER_DOCS_SCREENSHOTS=1` the test also
//! writes the documentation's, `docs/console/*.png`.
//!
//! Needs Chromium and the npm packages: a plain `cargo nextest run` lists this test as
//! skipped, and `scripts/test.sh` installs them and runs it (`common::tools`).

use std::path::PathBuf;
use std::process::Command;

use crate::common::tools;
use crate::common::*;
use serde_json::json;

fn requirements() -> PathBuf {
    tools::chromium();
    tools::npm_packages("tests/js", &["playwright-core"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and tests/js packages (scripts/test.sh installs them and runs this)"]
async fn console_signs_in_manages_users_and_watches_events_live() {
    let js = requirements();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/console");
    let _ = std::fs::remove_dir_all(&artifacts);
    let base = s.base.clone();
    let script = js.join("console_e2e.mjs");
    let out_dir = artifacts.clone();
    // Off by default: every run would otherwise rewrite the committed pictures (the times
    // they show change).
    let docs = std::env::var_os("BROKER_DOCS_SCREENSHOTS")
        .is_some_and(|v| v == "1")
        .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([base.as_str(), ADMIN, out_dir.to_str().unwrap()])
            .args(docs.iter())
            .output()
            .expect("node must be installed (scripts/test.sh installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "console e2e failed (screenshots in {}):\n{stderr}",
        artifacts.display()
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");

    // What the console did is what the server holds.
    let c = client();
    let (status, carol) = post(
        &c,
        s.url("/get_user"),
        json!({"admin_token": ADMIN, "username": "carol"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(carol["revoked"], true);
    assert_eq!(carol["tenant_name"], "acme");
    assert_eq!(carol["email"], "carol@example.org");
    assert_eq!(carol["scopes"], json!(["news:get", "news:put"]));
    assert_eq!(carol["data"], json!({"team": "blue"}));
    assert_eq!(carol["two_factor"], false);
    let (_, user1) = post(
        &c,
        s.url("/get_user"),
        json!({"admin_token": ADMIN, "username": "user1"}),
    )
    .await;
    assert_eq!(user1["two_factor"], true, "enrolled from the console");
    for shot in [
        "users",
        "user-detail",
        "two-factor",
        "events",
        "live",
        "phone",
    ] {
        let path = artifacts.join(format!("{shot}.png"));
        let bytes = std::fs::read(&path).unwrap_or_else(|_| panic!("{} missing", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
    }
}
