//! Scopes enforced (issue 18, `--enforce_scopes true`): inserting event E needs `E:write` or
//! `*:write` (403 naming the scope otherwise, nothing stored); a stream carries only the names
//! the user holds `E:read` or `*:read` for — in the snapshot, in catch-up from the ring and
//! from the log, and live — with `id:` still the global cursor. Without the flag nothing
//! changes (15.x).

use crate::common::*;
use serde_json::{Value, json};

async fn user(c: &reqwest::Client, s: &Server, name: &str, scopes: Value) {
    let (status, body) = post(
        c,
        s.url("/create_user"),
        json!({"username": name, "password": "pw", "admin_token": ADMIN, "tenant_name": "t", "scopes": scopes}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn events(stream: &mut Sse) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Some(frame) = stream
        .next_event(std::time::Duration::from_millis(700))
        .await
    {
        out.push((frame.event.clone().unwrap(), frame.json()));
    }
    out
}

#[tokio::test]
async fn without_the_flag_scopes_gate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    user(&c, &s, "free", json!([])).await;
    let jwt = login(&c, &s, "free", "pw").await;
    assert_eq!(insert(&c, &s, &jwt, "anything", json!(1)).await.0, 200);
    let mut stream = Sse::open(&s, &jwt, None).await;
    assert_eq!(
        events(&mut stream).await,
        vec![("anything".into(), json!(1))]
    );
}

#[tokio::test]
async fn inserting_needs_the_write_scope_of_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--enforce_scopes", "true"]);
    let c = client();
    user(&c, &s, "w", json!(["temp:write", "humidity:read"])).await;
    user(&c, &s, "all", json!(["*:write"])).await;
    let jwt = login(&c, &s, "w", "pw").await;
    let (status, reply) = insert(&c, &s, &jwt, "temp", json!(21)).await;
    assert_eq!(status, 200, "{reply}");
    let before = reply["cursor"].as_u64().unwrap();
    for name in ["humidity", "Temp", "temp:write", "*"] {
        let (status, reply) = insert(&c, &s, &jwt, name, json!(1)).await;
        assert_eq!(status, 403, "{name}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(message.contains(&format!("{name}:write")), "{message}");
    }
    // Basic is held to the same rule.
    let (status, _) = post_raw(
        &c,
        s.url("/insert"),
        json!({"event": "humidity", "data": 1}).to_string(),
        Some("Basic dzpwdw=="),
    )
    .await;
    assert_eq!(status, 403);
    // Bad input is still 400 first (no scope oracle for invalid names), wrong types too.
    assert_eq!(insert(&c, &s, &jwt, "a\nb", json!(1)).await.0, 400);
    let (status, _) = post_raw(
        &c,
        s.url("/insert"),
        json!({"event": 5, "data": 1}).to_string(),
        Some(&format!("Bearer {jwt}")),
    )
    .await;
    assert_eq!(status, 400);
    // Nothing refused was stored.
    let all = login(&c, &s, "all", "pw").await;
    let (status, reply) = insert(&c, &s, &all, "a:b", json!("wildcard")).await;
    assert_eq!(status, 200, "*:write grants any name, colons too: {reply}");
    assert_eq!(reply["cursor"].as_u64().unwrap(), before + 1);
}

#[tokio::test]
async fn streams_carry_only_readable_names_in_snapshot_catch_up_and_live() {
    let dir = tempfile::tempdir().unwrap();
    // A ring of 2 frames: catch-up past it reads the log.
    let s = Server::start(
        dir.path(),
        &["--enforce_scopes", "true", "--sse_buffer", "2"],
    );
    let c = client();
    user(&c, &s, "writer", json!(["*:write"])).await;
    user(&c, &s, "reader", json!(["temp:read", "rain:write"])).await;
    user(&c, &s, "everything", json!(["*:read"])).await;
    user(&c, &s, "nothing", json!(["temp:write"])).await;
    let writer = login(&c, &s, "writer", "pw").await;
    let mut temps = Vec::new();
    for (name, data) in [
        ("temp", 1),
        ("rain", 2),
        ("temp", 3),
        ("wind", 4),
        ("rain", 5),
    ] {
        let (_, reply) = insert(&c, &s, &writer, name, json!(data)).await;
        if name == "temp" {
            temps.push(reply["cursor"].as_u64().unwrap());
        }
    }
    let reader = login(&c, &s, "reader", "pw").await;
    // Snapshot: the latest temp only.
    let mut snap = Sse::open(&s, &reader, None).await;
    let first = snap.next_event(WAIT).await.unwrap();
    assert_eq!(
        (first.event.as_deref(), first.json()),
        (Some("temp"), json!(3))
    );
    assert_eq!(first.cursor(), temps[1], "id: stays the global cursor");
    // Catch-up from the log (the ring holds 2 of 5): every temp, nothing else.
    let mut resumed = Sse::open(&s, &reader, Some("0")).await;
    let caught: Vec<u64> = resumed
        .take(2, WAIT)
        .await
        .iter()
        .map(Frame::cursor)
        .collect();
    assert_eq!(caught, temps);
    // Live: other names pass by unseen, the next temp arrives.
    for (name, data) in [("rain", 6), ("wind", 7), ("temp", 8)] {
        insert(&c, &s, &writer, name, json!(data)).await;
    }
    for stream in [&mut snap, &mut resumed] {
        let next = stream.next_event(WAIT).await.unwrap();
        assert_eq!(
            (next.event.as_deref(), next.json()),
            (Some("temp"), json!(8))
        );
        assert!(
            stream
                .next_event(std::time::Duration::from_millis(300))
                .await
                .is_none()
        );
    }
    // *:read sees every name; no read scope at all sees none (the stream is open, empty).
    let everything = login(&c, &s, "everything", "pw").await;
    let names: Vec<String> = events(&mut Sse::open(&s, &everything, None).await)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        ["rain", "wind", "temp"],
        "the snapshot, in cursor order"
    );
    let nothing = login(&c, &s, "nothing", "pw").await;
    assert!(
        events(&mut Sse::open(&s, &nothing, Some("0")).await)
            .await
            .is_empty()
    );

    // New scopes end the stream (they move the credential epoch) and a new login reads anew.
    let (status, _) = post(
        &c,
        s.url("/update_user"),
        json!({"admin_token": ADMIN, "username": "reader", "scopes": ["wind:read"]}),
    )
    .await;
    assert_eq!(status, 200);
    let mut last = None;
    while let Some(frame) = snap.next_frame(WAIT).await {
        last = Some(frame);
    }
    let last = last.unwrap();
    assert_eq!(last.event.as_deref(), Some("broker.closed"));
    assert_eq!(last.json()["reason"], "credentials_changed");
    let reader = login(&c, &s, "reader", "pw").await;
    let got = events(&mut Sse::open(&s, &reader, None).await).await;
    assert_eq!(got, vec![("wind".to_owned(), json!(7))]);
}
