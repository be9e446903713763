//! Real npm SSE clients against the real binary: the `eventsource` package (what apps use)
//! receives the snapshot and live events, and after a server restart reconnects by itself
//! with `Last-Event-ID`, missing and repeating nothing.
//!
//! `scripts/test.sh` installs the packages (`tests/js/node_modules`) and sets
//! `BROKER_REQUIRE_JS=1`, so there these tests cannot be skipped.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn js_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if dir.join("node_modules/eventsource").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("BROKER_REQUIRE_JS").is_none(),
        "tests/js/node_modules is missing: run scripts/test.sh (it runs npm ci there)"
    );
    eprintln!("skipped: npm clients not installed (scripts/test.sh installs them)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_eventsource_gets_snapshot_live_and_resumes_after_restart() {
    let Some(js) = js_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let flags = ["--port", port.as_str(), "--sse_retry_ms", "200"];
    let mut s = Server::start(dir.path(), &flags);
    let c = client();
    create_user(&c, &s, "js", "pw", "web").await;
    let jwt = login(&c, &s, "js", "pw").await;
    insert(&c, &s, &jwt, "greeting", json!("old hello")).await;
    insert(&c, &s, &jwt, "greeting", json!({"text": "hello"})).await;

    let mut node = Command::new("node")
        .arg(js.join("eventsource_client.mjs"))
        .args([&s.base, &jwt, "7", "30000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node must be installed (scripts/test.sh installs it)");
    let (tx, rx) = mpsc::channel::<Value>();
    let out = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap());
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the npm client did not receive {what}"))
    };
    // Snapshot: only the latest greeting.
    let snap = next("the snapshot");
    assert_eq!(
        (snap["event"].as_str(), &snap["data"]),
        (Some("greeting"), &json!({"text": "hello"}))
    );
    // Live.
    for i in 0..3 {
        insert(&c, &s, &jwt, "counter", json!(i)).await;
    }
    let mut seen: Vec<Value> = (0..3).map(|_| next("live events")).collect();

    // Restart on the same port; the client reconnects with Last-Event-ID on its own.
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(dir.path(), &flags);
    for i in 3..6 {
        let (status, _) = insert(&c, &s, &jwt, "counter", json!(i)).await;
        assert_eq!(status, 200);
    }
    seen.extend((3..6).map(|_| next("events after the restart")));
    let data: Vec<&Value> = seen.iter().map(|e| &e["data"]).collect();
    assert_eq!(
        data,
        (0..6)
            .map(|i| json!(i))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );
    let ids: Vec<u64> = seen
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let status = node.wait().unwrap();
    assert!(
        status.success(),
        "the npm client saw more events than were inserted"
    );
}
