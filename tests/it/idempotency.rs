//! Idempotent inserts (`Idempotency-Key` on `/insert` and `/admin_insert`): a retry answers the
//! first insert's id and cursor and stores nothing, a reused key with another body is 422, the
//! keys survive restarts (from the log and from a checkpoint) and a crash between the write and
//! the answer, hostile keys are 400, and the memory of keys stays bounded.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

/// POST `/insert` with an optional `Idempotency-Key` (raw bytes, so hostile ones can be sent).
async fn keyed_insert(
    c: &reqwest::Client,
    s: &Server,
    jwt: &str,
    key: Option<&[u8]>,
    body: Value,
) -> (u16, Value) {
    let mut req = c
        .post(s.url("/insert"))
        .bearer_auth(jwt)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        req = req.header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(key).unwrap(),
        );
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every event frame of `jwt`'s tenant from the start of the log, read until quiet.
async fn all_events(s: &Server, jwt: &str) -> Vec<Frame> {
    let mut sse = Sse::open(s, jwt, Some("0")).await;
    let mut frames = Vec::new();
    while let Some(frame) = sse.next_event(Duration::from_millis(700)).await {
        frames.push(frame);
    }
    frames
}

/// A server with user `ann` (tenant `acme`) logged in.
async fn with_ann(dir: &std::path::Path, flags: &[&str]) -> (Server, String) {
    let c = client();
    let s = Server::start(dir, flags);
    assert_eq!(create_user(&c, &s, "ann", "pw-ann-123", "acme").await, 200);
    let jwt = login(&c, &s, "ann", "pw-ann-123").await;
    (s, jwt)
}

#[tokio::test]
async fn a_retry_answers_the_first_insert_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let (s, jwt) = with_ann(dir.path(), &[]).await;
    let body = json!({"event": "order", "data": {"n": 1}});
    let (status, first) = keyed_insert(&c, &s, &jwt, Some(b"order-1"), body.clone()).await;
    assert_eq!(status, 200, "{first}");
    for _ in 0..3 {
        let (status, again) = keyed_insert(&c, &s, &jwt, Some(b"order-1"), body.clone()).await;
        assert_eq!(
            (status, &again),
            (200, &first),
            "a retry answers the same id and cursor"
        );
    }
    // The same key with another event, other data: 422, nothing stored.
    for other in [
        json!({"event": "order", "data": {"n": 2}}),
        json!({"event": "refund", "data": {"n": 1}}),
    ] {
        let (status, err) = keyed_insert(&c, &s, &jwt, Some(b"order-1"), other).await;
        assert_eq!(status, 422, "{err}");
        assert!(
            err["error"].as_str().unwrap().contains("Idempotency-Key"),
            "{err}"
        );
    }
    // Another key, or none, is a new insert.
    let (_, second) = keyed_insert(&c, &s, &jwt, Some(b"order-2"), body.clone()).await;
    let (_, plain) = keyed_insert(&c, &s, &jwt, None, body.clone()).await;
    let (_, plain_again) = keyed_insert(&c, &s, &jwt, None, body.clone()).await;
    let cursors: Vec<u64> = [&first, &second, &plain, &plain_again]
        .iter()
        .map(|r| r["cursor"].as_u64().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    // Keys are per caller: bob's "order-1" is his own.
    assert_eq!(create_user(&c, &s, "bob", "pw-bob-123", "acme").await, 200);
    let bob = login(&c, &s, "bob", "pw-bob-123").await;
    let (status, bobs) = keyed_insert(&c, &s, &bob, Some(b"order-1"), body.clone()).await;
    assert_eq!(status, 200);
    assert_ne!(bobs["cursor"], first["cursor"]);

    let events = all_events(&s, &jwt).await;
    assert_eq!(
        events.iter().map(Frame::cursor).collect::<Vec<_>>(),
        [cursors.clone(), vec![bobs["cursor"].as_u64().unwrap()]].concat(),
        "one record per distinct key, none for the retries"
    );
    drop(s);
    let (_, dump, _) = run_broker(&[
        "log",
        "dump",
        "--db",
        dir.path().to_str().unwrap(),
        "--kind",
        "event_inserted",
    ]);
    let keys: Vec<Value> = dump
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["record"]["idempotency_key"].clone())
        .collect();
    assert_eq!(
        keys,
        [
            json!("order-1"),
            json!("order-2"),
            Value::Null,
            Value::Null,
            json!("order-1")
        ]
    );
}

#[tokio::test]
async fn hostile_keys_are_refused_with_400_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let (s, jwt) = with_ann(dir.path(), &[]).await;
    let body = json!({"event": "e", "data": 1});
    let (_, before) = keyed_insert(&c, &s, &jwt, None, body.clone()).await;
    let long = vec![b'k'; 256];
    let hostile: [&[u8]; 5] = [&long, "clé".as_bytes(), b"", b"a\tb", b"\xff\xfe"];
    for key in hostile {
        let (status, err) = keyed_insert(&c, &s, &jwt, Some(key), body.clone()).await;
        assert_eq!(status, 400, "{key:?}: {err}");
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with("Idempotency-Key:"),
            "{key:?}: {err}"
        );
    }
    // Two headers are ambiguous: refused too.
    let resp = c
        .post(s.url("/insert"))
        .bearer_auth(&jwt)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // 255 bytes is the longest accepted.
    let longest = vec![b'k'; 255];
    let (status, ok) = keyed_insert(&c, &s, &jwt, Some(&longest), body.clone()).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(
        ok["cursor"].as_u64().unwrap(),
        before["cursor"].as_u64().unwrap() + 1,
        "the refused inserts stored nothing"
    );
}

#[tokio::test]
async fn keys_survive_restarts_from_the_log_and_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let (mut s, jwt) = with_ann(dir.path(), &[]).await;
    let body = json!({"event": "e", "data": "x"});
    let (_, first) = keyed_insert(&c, &s, &jwt, Some(b"k-restart"), body.clone()).await;

    // kill -9, and no checkpoint at all: the keys come from replaying the log.
    s.kill();
    std::fs::remove_dir_all(dir.path().join("checkpoints")).ok();
    let s = Server::start(dir.path(), &[]);
    assert!(
        wait_for_log(&s, "checkpoint=None", WAIT).await,
        "{}",
        s.stderr()
    );
    let (status, again) = keyed_insert(&c, &s, &jwt, Some(b"k-restart"), body.clone()).await;
    assert_eq!((status, &again), (200, &first));
    let (status, _) = keyed_insert(
        &c,
        &s,
        &jwt,
        Some(b"k-restart"),
        json!({"event": "e", "data": "y"}),
    )
    .await;
    assert_eq!(status, 422);

    // A clean stop stores a checkpoint at the last record: the next start replays nothing,
    // and the keys come from the checkpoint.
    let mut s = s;
    assert_eq!(s.terminate(), Some(0));
    // The checkpoint's keys are the log's.
    let (code, out, err) = run_broker(&[
        "log",
        "replay",
        "--check",
        "--db",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 differences"), "{out}");
    let s = Server::start(dir.path(), &[]);
    assert!(
        wait_for_log(&s, "records=0", WAIT).await,
        "the start replayed records: {}",
        s.stderr()
    );
    let (status, again) = keyed_insert(&c, &s, &jwt, Some(b"k-restart"), body.clone()).await;
    assert_eq!((status, &again), (200, &first));
    assert_eq!(all_events(&s, &jwt).await.len(), 1);
}

#[tokio::test]
async fn the_window_ends_a_keys_memory() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let (s, jwt) = with_ann(dir.path(), &["--idempotency_window_secs", "1"]).await;
    let body = json!({"event": "e", "data": 1});
    let (_, first) = keyed_insert(&c, &s, &jwt, Some(b"k"), body.clone()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, later) = keyed_insert(&c, &s, &jwt, Some(b"k"), body.clone()).await;
    assert_eq!(status, 200);
    assert!(
        later["cursor"].as_u64() > first["cursor"].as_u64(),
        "{later}"
    );
}

// The failpoint exists only in builds with the test feature (scripts/test.sh turns it on).
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn an_insert_retried_after_a_crash_between_its_write_and_its_answer_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("fault");
    std::fs::write(&fault, "").unwrap();
    let env = [("BROKER_FAULT_FILE", fault.to_str().unwrap())];
    let c = client();
    let mut s = Server::start_env(dir.path(), &[], &env);
    assert_eq!(create_user(&c, &s, "ann", "pw-ann-123", "acme").await, 200);
    let jwt = login(&c, &s, "ann", "pw-ann-123").await;
    let body = json!({"event": "pay", "data": {"amount": 42}});
    // The record is written and fsynced, then the process dies before anyone is answered.
    std::fs::write(&fault, "abort_at:log:after_flush").unwrap();
    let resp = c
        .post(s.url("/insert"))
        .bearer_auth(&jwt)
        .header("idempotency-key", "pay-42")
        .body(body.to_string())
        .send()
        .await;
    assert!(
        resp.is_err(),
        "answered although the process should have died: {resp:?}"
    );
    s.kill();
    std::fs::write(&fault, "").unwrap();
    let s = Server::start_env(dir.path(), &[], &env);
    let (status, retried) = keyed_insert(&c, &s, &jwt, Some(b"pay-42"), body.clone()).await;
    assert_eq!(status, 200, "{retried}");
    let events = all_events(&s, &jwt).await;
    assert_eq!(events.len(), 1, "stored once: {events:?}");
    assert_eq!(events[0].cursor(), retried["cursor"].as_u64().unwrap());
    assert_eq!(events[0].json(), json!({"amount": 42}));
}

#[tokio::test]
async fn ten_thousand_keys_from_one_caller_stay_within_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let (s, jwt) = with_ann(dir.path(), &["--fsync", "never", "--metrics_token", "m"]).await;
    let url = s.url("/insert");
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let (c, url, jwt) = (client(), url.clone(), jwt.clone());
        tasks.push(tokio::spawn(async move {
            for n in (worker..10_000).step_by(8) {
                let resp = c
                    .post(&url)
                    .bearer_auth(&jwt)
                    .header("idempotency-key", format!("key-{n:05}"))
                    .body(json!({"event": "e", "data": n}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kept = metric(&s, "broker_idempotency_keys").await;
    assert_eq!(kept, 1000.0, "the per-caller cap holds");
    // The newest keys still answer retries; the oldest were forgotten, so a retry with one
    // of them is a new insert.
    let c = client();
    let newest = (0..10_000u32)
        .map(|n| format!("key-{n:05}"))
        .next_back()
        .unwrap();
    let (status, _) = keyed_insert(
        &c,
        &s,
        &jwt,
        Some(newest.as_bytes()),
        json!({"event": "e", "data": 1}),
    )
    .await;
    assert_eq!(status, 422, "key-09999 is remembered, with data 9999");
    let before = metric(&s, "broker_log_cursor").await;
    let (status, fresh) = keyed_insert(
        &c,
        &s,
        &jwt,
        Some(b"key-00000"),
        json!({"event": "e", "data": 0}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fresh["cursor"].as_f64().unwrap(), before + 1.0);
    assert_eq!(metric(&s, "broker_idempotency_keys").await, 1000.0);
}

#[test]
fn a_zero_window_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().to_str().unwrap();
    let (code, _, err) = run_broker(&["--db", db, "--port", "0", "--idempotency_window_secs", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--idempotency_window_secs"), "{err}");
}
