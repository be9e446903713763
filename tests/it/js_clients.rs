//! Real SSE clients against the real binary, each through the same scenario: the snapshot,
//! live events, then a server restart after which the client resumes by itself with
//! `Last-Event-ID`, missing and repeating nothing.
//!
//! - the npm `eventsource` package (a standard EventSource for Node; JWT through its `fetch`
//!   option);
//! - `@microsoft/fetch-event-source` (fetch with headers: broker-client's technique);
//! - Chromium's native `EventSource` in headless Chromium (playwright-core), from a page of
//!   another origin: one subscriber with single-use tickets, one with the session cookie;
//!   and broker-client (`clients/js`) in the same page, with each of its two transports.
//!
//! Needs Node.js, the npm packages and Chromium: a plain `cargo nextest run` lists these tests
//! as skipped, and `scripts/test.sh` installs them and runs them (`common::tools`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::tools;
use crate::common::*;
use serde_json::{Value, json};

fn js_dir() -> PathBuf {
    tools::npm_packages(
        "tests/js",
        &[
            "eventsource",
            "@microsoft/fetch-event-source",
            "playwright-core",
        ],
    )
}

/// Compiles `clients/js` (tsc) and returns its `dist/`.
fn ts_client_dist() -> PathBuf {
    let dir = tools::npm_packages("clients/js", &["typescript"]);
    let build = Command::new("node")
        .args(["node_modules/typescript/bin/tsc", "-p", "."])
        .current_dir(&dir)
        .output()
        .expect("node must be installed");
    assert!(
        build.status.success(),
        "tsc failed: {}",
        String::from_utf8_lossy(&build.stdout)
    );
    dir.join("dist")
}

/// A node script's JSON lines, one per event.
struct Client {
    node: Child,
    lines: mpsc::Receiver<Value>,
}

impl Client {
    fn spawn(script: &Path, args: &[&str], dist: Option<&Path>) -> Client {
        let mut node = Command::new("node")
            .arg(script)
            .args(args)
            .envs(dist.map(|d| ("BROKER_CLIENT_DIST", d)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (scripts/test.sh installs it)");
        let (tx, lines) = mpsc::channel::<Value>();
        let out = node.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap());
            }
        });
        Client { node, lines }
    }

    /// Collects events until every client named in `clients` has `n` of them.
    fn until(&self, seen: &mut BTreeMap<String, Vec<Value>>, clients: &[&str], n: usize) {
        while clients.iter().any(|c| seen.get(*c).map_or(0, Vec::len) < n) {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(45))
                .unwrap_or_else(|_| panic!("the clients stopped at {seen:?}, expected {n} each"));
            let client = line["client"].as_str().unwrap_or("default").to_owned();
            seen.entry(client).or_default().push(line);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

/// Snapshot, 3 live events, a restart, 3 more: every client in `clients` must see exactly
/// the latest greeting and then counters 0..6 in cursor order.
/// With `page_origin`, the client's page is served on its own port (another origin, allowed
/// by `--origin`); the port is chosen here so that the server knows it before the page exists.
async fn restart_scenario(script: &str, clients: &[&str], page_origin: bool) {
    let js = js_dir();
    let dist = page_origin.then(ts_client_dist);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let page_port = free_port().to_string();
    let origin = format!("http://127.0.0.1:{page_port}");
    let mut flags = vec!["--port", port.as_str(), "--sse_retry_ms", "200"];
    if page_origin {
        flags.extend(["--origin", origin.as_str()]);
    }
    let mut s = Server::start(dir.path(), &flags);
    let c = client();
    create_user(&c, &s, "js", "pw", "web").await;
    let jwt = login(&c, &s, "js", "pw").await;
    insert(&c, &s, &jwt, "greeting", json!("old hello")).await;
    insert(&c, &s, &jwt, "greeting", json!({"text": "hello"})).await;

    let client = Client::spawn(
        &js.join(script),
        &[&s.base, &jwt, "7", "90000", "js", "pw", &page_port],
        dist.as_deref(),
    );
    let mut seen = BTreeMap::new();
    client.until(&mut seen, clients, 1);
    for i in 0..3 {
        insert(&c, &s, &jwt, "counter", json!(i)).await;
    }
    client.until(&mut seen, clients, 4);

    // Restart on the same port; the clients reconnect with Last-Event-ID on their own.
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(dir.path(), &flags);
    for i in 3..6 {
        let (status, _) = insert(&c, &s, &jwt, "counter", json!(i)).await;
        assert_eq!(status, 200);
    }
    client.until(&mut seen, clients, 7);

    for name in clients {
        let events = &seen[*name];
        assert_eq!(events.len(), 7, "{name}: {events:?}");
        assert_eq!(
            (events[0]["event"].as_str(), &events[0]["data"]),
            (Some("greeting"), &json!({"text": "hello"})),
            "{name}: the snapshot holds only the latest greeting"
        );
        let data: Vec<&Value> = events[1..].iter().map(|e| &e["data"]).collect();
        let expected: Vec<Value> = (0..6).map(|i| json!(i)).collect();
        assert_eq!(
            data,
            expected.iter().collect::<Vec<_>>(),
            "{name}: every counter once, in order"
        );
        let ids: Vec<u64> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{name}: {ids:?}");
    }
    let mut client = client;
    let status = client.node.wait().unwrap();
    assert!(
        status.success(),
        "the client saw more events than were inserted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and tests/js packages (scripts/test.sh installs them and runs this)"]
async fn npm_eventsource_gets_snapshot_live_and_resumes_after_restart() {
    restart_scenario("eventsource_client.mjs", &["default"], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and tests/js packages (scripts/test.sh installs them and runs this)"]
async fn fetch_event_source_gets_snapshot_live_and_resumes_after_restart() {
    restart_scenario("fetch_event_source_client.mjs", &["default"], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and npm packages (scripts/test.sh installs them and runs this)"]
async fn chromium_native_eventsource_with_ticket_and_cookie_resumes_after_restart() {
    tools::chromium();
    restart_scenario(
        "chromium_eventsource.mjs",
        &["ticket", "cookie", "broker-client", "broker-client-es"],
        true,
    )
    .await;
}

/// A standard EventSource (the npm `eventsource` package) sees why its stream ended (issue
/// 18): `broker.closed` with `reason: "revoked"` and the resume cursor as `lastEventId`, and
/// then gives up when its reconnect with the void token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and tests/js packages (scripts/test.sh installs them and runs this)"]
async fn npm_eventsource_is_told_why_its_stream_closed() {
    let js = js_dir();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--sse_retry_ms", "100"]);
    let c = client();
    create_user(&c, &s, "leaving", "pw", "web").await;
    let jwt = login(&c, &s, "leaving", "pw").await;
    let (_, reply) = insert(&c, &s, &jwt, "greeting", json!("hi")).await;
    let cursor = reply["cursor"].as_u64().unwrap();
    let client = Client::spawn(
        &js.join("closed_reason_client.mjs"),
        &[&s.base, &jwt, "30000"],
        None,
    );
    let next = || client.lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(next(), json!({"open": true}));
    let (status, _) = post(
        &c,
        s.url("/revoke_user"),
        json!({"admin_token": ADMIN, "username": "leaving"}),
    )
    .await;
    assert_eq!(status, 200);
    let closed = next();
    assert_eq!(closed["event"], "broker.closed", "{closed}");
    assert_eq!(closed["data"]["reason"], "revoked", "{closed}");
    let id: u64 = closed["id"].as_str().unwrap().parse().unwrap();
    assert!(id >= cursor, "{closed}");
    assert_eq!(next(), json!({"gave_up": true}));
    let mut client = client;
    assert!(client.node.wait().unwrap().success());
}
