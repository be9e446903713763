//! Deleting a user (issue 18): `POST /delete_user` ends everything the user had — listing,
//! logins, tokens, streams (`broker.closed` with reason `deleted`) — keeps their events in the
//! tenant, and frees the name for a new user whom the old tokens do not reach.

use crate::common::*;
use serde_json::json;

async fn delete(c: &reqwest::Client, s: &Server, username: &str) -> (u16, serde_json::Value) {
    let resp = c
        .post(s.url("/delete_user"))
        .header("x-admin-token", ADMIN)
        .body(json!({ "username": username }).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_deleted_user_is_gone_and_a_new_user_of_that_name_gets_nothing_of_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    assert_eq!(create_user(&c, &s, "dora", "old-pw", "t").await, 200);
    let jwt = login(&c, &s, "dora", "old-pw").await;
    let (status, _) = insert(&c, &s, &jwt, "note", json!({"from": "dora"})).await;
    assert_eq!(status, 200);
    let mut stream = Sse::open(&s, &jwt, None).await;
    assert_eq!(
        stream.next_event(WAIT).await.unwrap().event.as_deref(),
        Some("note")
    );

    assert_eq!(delete(&c, &s, "dora").await, (200, json!({"ok": true})));

    // The open stream ends, saying why.
    let mut last = None;
    while let Some(frame) = stream.next_frame(WAIT).await {
        last = Some(frame);
    }
    let last = last.expect("a final frame");
    assert_eq!(last.event.as_deref(), Some("broker.closed"), "{last:?}");
    assert_eq!(last.json()["reason"], "deleted");

    let (status, reply) = post(
        &c,
        s.url("/get_user"),
        json!({"admin_token": ADMIN, "username": "dora"}),
    )
    .await;
    assert_eq!(status, 404, "{reply}");
    let (_, users) = post(&c, s.url("/list_users"), json!({"admin_token": ADMIN})).await;
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["username"] != "dora"),
        "{users}"
    );
    let (status, _) = post(
        &c,
        s.url("/login"),
        json!({"username": "dora", "password": "old-pw"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = insert(&c, &s, &jwt, "note", json!(2)).await;
    assert_eq!(status, 401, "the deleted user's token");
    let (status, reply) = delete(&c, &s, "dora").await;
    assert_eq!(status, 404);
    assert!(reply["error"].as_str().unwrap().contains("dora"), "{reply}");

    // The name is free again; the new user owns nothing of the old one's credentials.
    assert_eq!(create_user(&c, &s, "dora", "new-pw", "t").await, 200);
    let (status, _) = insert(&c, &s, &jwt, "note", json!(3)).await;
    assert_eq!(
        status, 401,
        "an old token must not work for the user created again"
    );
    let (status, _) = post_raw(
        &c,
        s.url("/insert"),
        json!({"event": "note", "data": 4}).to_string(),
        Some(&format!("Basic {}", basic("dora", "old-pw"))),
    )
    .await;
    assert_eq!(status, 401, "the old password");
    let fresh = login(&c, &s, "dora", "new-pw").await;
    // The old user's event is still the tenant's.
    let mut stream = Sse::open(&s, &fresh, None).await;
    let note = stream.next_event(WAIT).await.unwrap();
    assert_eq!(note.json(), json!({"from": "dora"}));
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
