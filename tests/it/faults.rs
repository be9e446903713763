//! Disk faults injected into the log writer of the real binary (feature `fault-injection`,
//! which `scripts/test.sh` turns on): writes get 503 and store nothing while reads and SSE go
//! on; writing resumes by itself when the fault clears; the log never holds a corrupt or
//! unacknowledged-but-visible record.
#![cfg(feature = "fault-injection")]

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn writes_fail_cleanly_under_disk_faults_and_resume_when_they_clear() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("fault");
    std::fs::write(&fault, "").unwrap();
    let db = dir.path().join("db");
    let env = [("BROKER_FAULT_FILE", fault.to_str().unwrap())];
    let s = Server::start_env(&db, &[], &env);
    let c = client();
    create_user(&c, &s, "f", "pw", "t").await;
    let jwt = login(&c, &s, "f", "pw").await;
    let mut stream = Sse::open(&s, &jwt, None).await;
    let (status, _) = insert(&c, &s, &jwt, "e", json!("before")).await;
    assert_eq!(status, 200);
    assert_eq!(
        stream.next_event(WAIT).await.unwrap().json(),
        json!("before")
    );

    let mut acknowledged = vec![json!("before")];
    for kind in ["short_write", "eio", "enospc", "fsync_error"] {
        std::fs::write(&fault, kind).unwrap();
        let (status, body) = insert(&c, &s, &jwt, "e", json!(format!("lost-{kind}"))).await;
        assert_eq!(status, 503, "{kind}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("nothing was stored"),
            "{body}"
        );
        // Reads go on: health, login, a new stream's snapshot.
        assert_eq!(reqwest::get(s.url("/")).await.unwrap().status(), 200);
        login(&c, &s, "f", "pw").await;
        let mut fresh = Sse::open(&s, &jwt, None).await;
        let snap = fresh.next_event(WAIT).await.unwrap();
        assert_eq!(
            snap.json(),
            *acknowledged.last().unwrap(),
            "{kind}: the snapshot shows only what was stored"
        );
        // The fault clears: writing resumes without a restart, and the stream gets it.
        std::fs::write(&fault, "").unwrap();
        let tag = json!(format!("after-{kind}"));
        let (status, _) = insert(&c, &s, &jwt, "e", tag.clone()).await;
        assert_eq!(status, 200, "{kind}: writing did not resume");
        assert_eq!(
            stream.next_event(WAIT).await.unwrap().json(),
            tag,
            "{kind}: the failed insert must never be seen"
        );
        acknowledged.push(tag);
    }
    drop(s);
    let (code, out, _) = run_broker(&["log", "verify", "--db", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let s = Server::start(&db, &[]);
    let jwt = login(&c, &s, "f", "pw").await;
    let mut all = Sse::open(&s, &jwt, Some("0")).await;
    let events: Vec<_> = all
        .take(acknowledged.len(), WAIT)
        .await
        .into_iter()
        .map(|f| f.json())
        .collect();
    assert_eq!(events, acknowledged);
    assert!(
        all.next_event(Duration::from_millis(500)).await.is_none(),
        "an unacknowledged insert survived"
    );
}

#[tokio::test]
async fn a_crash_between_write_and_fsync_leaves_a_log_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("fault");
    std::fs::write(&fault, "").unwrap();
    let db = dir.path().join("db");
    let env = [("BROKER_FAULT_FILE", fault.to_str().unwrap())];
    let s = Server::start_env(&db, &[], &env);
    let c = client();
    create_user(&c, &s, "f", "pw", "t").await;
    let jwt = login(&c, &s, "f", "pw").await;
    assert_eq!(insert(&c, &s, &jwt, "e", json!(1)).await.0, 200);
    std::fs::write(&fault, "crash_after_write").unwrap();
    let resp = c
        .post(s.url("/insert"))
        .bearer_auth(&jwt)
        .body(json!({"event": "e", "data": 2}).to_string())
        .send()
        .await;
    assert!(
        resp.is_err() || resp.unwrap().status() != 200,
        "a crashed write was acknowledged"
    );
    drop(s);
    std::fs::write(&fault, "").unwrap();
    let s = Server::start(&db, &[]);
    let jwt = login(&c, &s, "f", "pw").await;
    assert_eq!(insert(&c, &s, &jwt, "e", json!(3)).await.0, 200);
    drop(s);
    let (code, out, _) = run_broker(&["log", "verify", "--db", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}
