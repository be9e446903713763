//! What a tenant makes the server hold for good, and what a user leaves behind: two findings
//! of an attack review, pinned against the real binary.
//!
//! - A: the latest event of every name is kept in memory with its data, by compaction and
//!   across restarts, and sent to every new stream of the tenant; only the number of names
//!   was bounded, so 10,000 names of 1 MiB held 10 GiB per tenant. `--max_tenant_snapshot_bytes`
//!   bounds the bytes of their data.
//! - B: `Idempotency-Key`s were kept by username and outlived the user, so a user created
//!   again under the name was answered with the old user's insert (nothing stored), or got a
//!   422 that told which keys the old user had sent.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const BUDGET: &str = "300000";

/// JSON text of ~`len` bytes: a string (its quotes make it `len + 2` bytes stored).
fn blob(len: usize) -> Value {
    Value::String("x".repeat(len))
}

/// The latest event of each name of `jwt`'s tenant (the snapshot a new stream is sent), as
/// (name, data length, cursor), in cursor order.
async fn snapshot(s: &Server, jwt: &str) -> Vec<(String, usize, u64)> {
    let mut sse = Sse::open(s, jwt, None).await;
    let mut events = Vec::new();
    while let Some(frame) = sse.next_event(Duration::from_millis(700)).await {
        let name = frame.event.clone().unwrap_or_default();
        events.push((name, frame.data.len(), frame.cursor()));
    }
    events
}

async fn admin_insert(
    c: &reqwest::Client,
    s: &Server,
    tenant: &str,
    event: &str,
    data: Value,
) -> (u16, Value) {
    post(
        c,
        s.url("/admin_insert"),
        json!({"admin_token": ADMIN, "tenant_name": tenant, "event": event, "data": data}),
    )
    .await
}

/// The refusal names the limit and the flag, in the API's error shape.
fn assert_over_budget(status: u16, body: &Value) {
    assert_eq!(status, 413, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("--max_tenant_snapshot_bytes"), "{body}");
    assert!(error.contains(BUDGET), "{body}");
}

#[tokio::test]
async fn a_tenants_latest_events_are_bounded_in_bytes_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--max_tenant_snapshot_bytes", BUDGET];
    let c = client();
    let s = Server::start(dir.path(), &flags);
    assert_eq!(create_user(&c, &s, "hoarder", "pw-hoarder", "t").await, 200);
    assert_eq!(
        create_user(&c, &s, "neighbour", "pw-neighbour", "u").await,
        200
    );
    let jwt = login(&c, &s, "hoarder", "pw-hoarder").await;
    let other = login(&c, &s, "neighbour", "pw-neighbour").await;

    // ~100 KB per name: two fit in 300,000 bytes, the third would pass them.
    for name in ["a", "b"] {
        let (status, body) = insert(&c, &s, &jwt, name, blob(100_000)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = insert(&c, &s, &jwt, "c", blob(100_000)).await;
    assert_over_budget(status, &body);
    // The admin's inserts count against the same budget.
    let (status, body) = admin_insert(&c, &s, "t", "c", blob(100_000)).await;
    assert_over_budget(status, &body);
    // Replacing a name with smaller data works, and frees room for another name.
    let (status, body) = insert(&c, &s, &jwt, "a", blob(50_000)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = insert(&c, &s, &jwt, "c", blob(100_000)).await;
    assert_eq!(status, 200, "{body}");
    // 250,006 bytes now: 60 KB more is past the budget, by a new name or a grown one.
    let (status, body) = insert(&c, &s, &jwt, "d", blob(60_000)).await;
    assert_over_budget(status, &body);
    let (status, body) = insert(&c, &s, &jwt, "a", blob(110_000)).await;
    assert_over_budget(status, &body);
    // Another tenant has a budget of its own.
    for name in ["a", "b"] {
        let (status, body) = insert(&c, &s, &other, name, blob(100_000)).await;
        assert_eq!(status, 200, "{body}");
    }

    let before = snapshot(&s, &jwt).await;
    let lengths: Vec<(&str, usize)> = before.iter().map(|(n, l, _)| (n.as_str(), *l)).collect();
    assert_eq!(lengths, [("b", 100_002), ("a", 50_002), ("c", 100_002)]);
    let neighbours = snapshot(&s, &other).await;
    drop(s);

    // After a restart (the log replayed): the same events, and the budget still holds.
    let s = Server::start(dir.path(), &flags);
    assert_eq!(snapshot(&s, &jwt).await, before);
    assert_eq!(snapshot(&s, &other).await, neighbours);
    let (status, body) = insert(&c, &s, &jwt, "d", blob(60_000)).await;
    assert_over_budget(status, &body);
    let (status, body) = insert(&c, &s, &jwt, "d", blob(40_000)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = insert(&c, &s, &other, "c", blob(90_000)).await;
    assert_eq!(status, 200, "{body}");

    // After a clean stop, from the checkpoint it stored (nothing replayed): the byte counts
    // are summed again from the events it holds.
    let before = snapshot(&s, &jwt).await;
    let mut s = s;
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(dir.path(), &flags);
    assert!(
        wait_for_log(&s, "log replayed", WAIT).await,
        "{}",
        s.stderr()
    );
    assert!(
        s.stderr()
            .lines()
            .any(|l| l.contains("log replayed") && l.contains("records=0")),
        "{}",
        s.stderr()
    );
    assert_eq!(snapshot(&s, &jwt).await, before);
    let (status, body) = insert(&c, &s, &jwt, "e", blob(20_000)).await;
    assert_over_budget(status, &body);
    let (status, body) = insert(&c, &s, &jwt, "e", blob(9_000)).await;
    assert_eq!(status, 200, "{body}");
}

/// POST `/insert` with an `Idempotency-Key`.
async fn keyed_insert(
    c: &reqwest::Client,
    s: &Server,
    jwt: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let resp = c
        .post(s.url("/insert"))
        .bearer_auth(jwt)
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn delete_user(c: &reqwest::Client, s: &Server, username: &str) {
    let resp = c
        .post(s.url("/delete_user"))
        .header("x-admin-token", ADMIN)
        .body(json!({ "username": username }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_user_created_again_does_not_inherit_the_deleted_users_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let s = Server::start(dir.path(), &[]);
    let order = json!({"event": "order", "data": {"n": 1}});
    assert_eq!(create_user(&c, &s, "carol", "pw-first", "acme").await, 200);
    let jwt = login(&c, &s, "carol", "pw-first").await;
    let (status, first) = keyed_insert(&c, &s, &jwt, "order-1", order.clone()).await;
    assert_eq!(status, 200, "{first}");

    // A new carol, same tenant, same request: a new event, not the old carol's answer.
    delete_user(&c, &s, "carol").await;
    assert_eq!(create_user(&c, &s, "carol", "pw-second", "acme").await, 200);
    let jwt = login(&c, &s, "carol", "pw-second").await;
    let (status, second) = keyed_insert(&c, &s, &jwt, "order-1", order.clone()).await;
    assert_eq!(status, 200, "{second}");
    assert!(
        second["cursor"].as_u64() > first["cursor"].as_u64(),
        "stored anew: {first} then {second}"
    );
    assert_ne!(second["id"], first["id"]);

    // A new carol in another tenant, another body under that key: 200, not a 422 telling
    // which keys an earlier carol sent. Also after a compaction and a restart: compaction
    // keeps the second carol's keyed insert (the latest `order` of acme) but drops her
    // `UserDeleted`, so the replay meets her key again with no deletion after it.
    delete_user(&c, &s, "carol").await;
    let (status, reply) = post(
        &c,
        s.url("/compact"),
        json!({"admin_token": ADMIN, "retain": "0s"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    drop(s);
    let s = Server::start(dir.path(), &[]);
    assert_eq!(
        create_user(&c, &s, "carol", "pw-third", "elsewhere").await,
        200
    );
    let jwt = login(&c, &s, "carol", "pw-third").await;
    let other = json!({"event": "order", "data": {"n": 2}});
    let (status, third) = keyed_insert(&c, &s, &jwt, "order-1", other.clone()).await;
    assert_eq!(status, 200, "{third}");
    assert!(
        third["cursor"].as_u64() > second["cursor"].as_u64(),
        "{third}"
    );
    // The key is the new carol's now: a retry is answered with her insert.
    let (status, again) = keyed_insert(&c, &s, &jwt, "order-1", other).await;
    assert_eq!((status, &again), (200, &third));
}
