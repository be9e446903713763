//! What format version 3 made visible over HTTP: `POST /admin_insert` (events with no author,
//! into any tenant, which it creates) and a user's scopes as `null` (never set) or `[]`.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

async fn admin_insert(c: &reqwest::Client, s: &Server, body: Value) -> (u16, Value) {
    post(c, s.url("/admin_insert"), body).await
}

#[tokio::test]
async fn the_admin_inserts_into_any_tenant_and_subscribers_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(create_user(&c, &s, "ann", "pw-ann-123", "acme").await, 200);
    let jwt = login(&c, &s, "ann", "pw-ann-123").await;
    let mut sse = Sse::open(&s, &jwt, None).await;

    let (status, reply) = admin_insert(
        &c,
        &s,
        json!({"admin_token": ADMIN, "tenant_name": "acme", "event": "notice", "data": {"m": "hi"}}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(uuid::Uuid::parse_str(reply["id"].as_str().unwrap()).is_ok());
    let frame = sse.next_event(WAIT).await.expect("delivered live");
    assert_eq!(frame.event.as_deref(), Some("notice"));
    assert_eq!(frame.cursor(), reply["cursor"].as_u64().unwrap());
    assert_eq!(frame.json(), json!({"m": "hi"}));

    // A tenant nobody has yet is created by the insert: its first user gets it in the snapshot.
    let (status, fresh) = admin_insert(
        &c,
        &s,
        json!({"admin_token": ADMIN, "tenant_name": "brand-new", "event": "welcome", "data": 1}),
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        create_user(&c, &s, "bob", "pw-bob-123", "brand-new").await,
        200
    );
    let bob = login(&c, &s, "bob", "pw-bob-123").await;
    let mut snapshot = Sse::open(&s, &bob, None).await;
    let first = snapshot.next_event(WAIT).await.expect("snapshot");
    assert_eq!(
        (first.event.as_deref(), first.cursor()),
        (Some("welcome"), fresh["cursor"].as_u64().unwrap())
    );
    // ann's tenant never sees it.
    assert!(sse.next_event(Duration::from_millis(500)).await.is_none());

    // Idempotent like /insert, the admin being one caller.
    let body = json!({"admin_token": ADMIN, "tenant_name": "acme", "event": "notice", "data": 2});
    let keyed = |body: &Value| {
        c.post(s.url("/admin_insert"))
            .header("idempotency-key", "notice-2")
            .body(body.to_string())
            .send()
    };
    let once: Value = keyed(&body).await.unwrap().json().await.unwrap();
    let twice: Value = keyed(&body).await.unwrap().json().await.unwrap();
    assert_eq!(once, twice);
    let mut elsewhere = body.clone();
    elsewhere["tenant_name"] = json!("brand-new");
    assert_eq!(
        keyed(&elsewhere).await.unwrap().status(),
        422,
        "another tenant is another request"
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
    let first: Value = serde_json::from_str(dump.lines().next().unwrap()).unwrap();
    assert_eq!(first["record"]["by"], Value::Null, "no author: the admin");
    assert_eq!(dump.lines().count(), 3);
}

#[tokio::test]
async fn admin_insert_refuses_what_insert_refuses_and_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    // A small body limit: a 413 answered before a megabyte is written would break the pipe of
    // the client still writing it (as in http_api's oversize test).
    let s = Server::start(
        dir.path(),
        &["--max_event_names", "1", "--max_body_bytes", "4096"],
    );
    let ok = json!({"admin_token": ADMIN, "tenant_name": "t", "event": "e", "data": 1});
    let cases: [(Value, u16, &str); 6] = [
        (
            json!({"admin_token": "wrong", "tenant_name": "t", "event": "e", "data": 1}),
            401,
            "admin_token",
        ),
        (
            json!({"admin_token": ADMIN, "event": "e", "data": 1}),
            400,
            "tenant_name",
        ),
        (
            json!({"admin_token": ADMIN, "tenant_name": "", "event": "e", "data": 1}),
            400,
            "tenant_name",
        ),
        (
            json!({"admin_token": ADMIN, "tenant_name": "t", "event": "a\nb", "data": 1}),
            400,
            "event",
        ),
        (
            json!({"admin_token": ADMIN, "tenant_name": "t", "event": "", "data": 1}),
            400,
            "event",
        ),
        (
            json!({"admin_token": ADMIN, "tenant_name": "t", "event": "e"}),
            400,
            "data",
        ),
    ];
    for (body, status, field) in cases {
        let (got, err) = admin_insert(&c, &s, body.clone()).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(
            err["error"].as_str().unwrap().contains(field),
            "{body}: {err}"
        );
    }
    assert_eq!(admin_insert(&c, &s, ok).await.0, 200);
    // --max_event_names applies to the admin's inserts as to anyone's.
    let (status, err) = admin_insert(
        &c,
        &s,
        json!({"admin_token": ADMIN, "tenant_name": "t", "event": "second-name", "data": 1}),
    )
    .await;
    assert_eq!(status, 429, "{err}");
    // The body limit too.
    let big = "x".repeat(10_000);
    let (status, _) = admin_insert(
        &c,
        &s,
        json!({"admin_token": ADMIN, "tenant_name": "t", "event": "e", "data": big}),
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn scopes_are_null_until_set_and_an_empty_list_stays_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let s = Server::start(dir.path(), &[]);
    let create = |username: &str, scopes: Option<Value>| {
        let mut body = json!({"username": username, "password": "pw-123-abc", "admin_token": ADMIN, "tenant_name": "t"});
        if let Some(scopes) = scopes {
            body["scopes"] = scopes;
        }
        post(&c, s.url("/create_user"), body)
    };
    assert_eq!(create("none", None).await.0, 200);
    assert_eq!(create("null", Some(Value::Null)).await.0, 200);
    assert_eq!(create("empty", Some(json!([]))).await.0, 200);
    assert_eq!(create("some", Some(json!(["a:b"]))).await.0, 200);
    let scopes = |username: &'static str| {
        let (c, url) = (client(), s.url("/get_user"));
        async move {
            post(&c, url, json!({"admin_token": ADMIN, "username": username}))
                .await
                .1["scopes"]
                .clone()
        }
    };
    assert_eq!(scopes("none").await, Value::Null);
    assert_eq!(scopes("null").await, Value::Null);
    assert_eq!(scopes("empty").await, json!([]));
    assert_eq!(scopes("some").await, json!(["a:b"]));
    let update = |username: &str, scopes: Value| {
        post(
            &c,
            s.url("/update_user"),
            json!({"admin_token": ADMIN, "username": username, "scopes": scopes}),
        )
    };
    assert_eq!(update("some", json!([])).await.1["scopes"], json!([]));
    assert_eq!(update("empty", Value::Null).await.1["scopes"], Value::Null);
    // An update without `scopes` leaves them as they are.
    let (_, same) = post(
        &c,
        s.url("/update_user"),
        json!({"admin_token": ADMIN, "username": "some", "data": 1}),
    )
    .await;
    assert_eq!(same["scopes"], json!([]));
    // /verify still answers a list: no scopes is an empty one.
    let jwt = login(&c, &s, "none", "pw-123-abc").await;
    let verify = get_json(&c, &s, "/verify", &jwt).await;
    assert_eq!(verify["scopes"], json!([]));
}
