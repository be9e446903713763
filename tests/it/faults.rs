//! Disk faults injected into the log writer of the real binary (feature `fault-injection`,
//! which `scripts/test.sh` turns on): writes get 503 and store nothing while reads and SSE go
//! on; writing resumes by itself when the fault clears; the log never holds a corrupt or
//! unacknowledged-but-visible record.
#![cfg(feature = "fault-injection")]

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

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

/// `GET /ready` until it answers `want`, polling (the free-space floor is read at most once a
/// second, a log fault probed at most once a second); returns the last body.
async fn ready_until(s: &Server, want: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let resp = reqwest::get(s.url("/ready")).await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Readiness (issue 18): `/ready` is 503 with the reason while writes would be refused — the
/// free-space floor, a log write fault — and 200 again once they would not, by itself (a
/// faulty log is probed, so a node out of rotation needs no write to come back); `GET /`
/// (liveness) stays 200 throughout.
#[tokio::test]
async fn ready_is_503_with_the_reason_while_writes_would_fail() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("fault");
    let free = dir.path().join("free");
    std::fs::write(&fault, "").unwrap();
    std::fs::write(&free, "").unwrap();
    let env = [
        ("BROKER_FAULT_FILE", fault.to_str().unwrap()),
        ("BROKER_FAULT_FREE_BYTES_FILE", free.to_str().unwrap()),
    ];
    let s = Server::start_env(
        &dir.path().join("db"),
        &["--min_free_bytes", "1000000"],
        &env,
    );
    let c = client();
    assert_eq!(ready_until(&s, 200).await, json!({"status": "ready"}));
    create_user(&c, &s, "r", "pw", "t").await;
    let jwt = login(&c, &s, "r", "pw").await;

    std::fs::write(&free, "10").unwrap();
    let body = ready_until(&s, 503).await;
    assert_eq!(body["reason"], "disk_low", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--min_free_bytes"),
        "{body}"
    );
    assert_eq!(insert(&c, &s, &jwt, "e", json!(1)).await.0, 507);
    assert_eq!(reqwest::get(s.url("/")).await.unwrap().status(), 200);
    std::fs::write(&free, "").unwrap();
    ready_until(&s, 200).await;

    for kind in ["eio", "fsync_error"] {
        std::fs::write(&fault, kind).unwrap();
        assert_eq!(insert(&c, &s, &jwt, "e", json!(kind)).await.0, 503);
        let body = ready_until(&s, 503).await;
        assert_eq!(body["reason"], "log_fault", "{kind}: {body}");
        // The error names no path or OS detail: /ready is public.
        assert!(!body["error"].as_str().unwrap().contains('/'), "{body}");
        // A burst of checks while the disk is faulty: each a quick 503, never a 500, and
        // the probes they may cause are at most one a second.
        let burst: Vec<_> = (0..20)
            .map(|_| tokio::spawn(reqwest::get(s.url("/ready"))))
            .collect();
        for answer in burst {
            assert_eq!(answer.await.unwrap().unwrap().status(), 503, "{kind}");
        }
        assert_eq!(reqwest::get(s.url("/")).await.unwrap().status(), 200);
        // The disk comes back: ready again with no write in between.
        std::fs::write(&fault, "").unwrap();
        assert_eq!(ready_until(&s, 200).await, json!({"status": "ready"}));
        assert_eq!(insert(&c, &s, &jwt, "e", json!("after")).await.0, 200);
    }
    // Only GET and HEAD.
    let resp = c.post(s.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = c.head(s.url("/ready")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Regression: a checkpoint whose save failed after the writer's last batch was not picked up
/// by the next save, which then claimed the failed one's events for the per-tenant index:
/// history and resumes read through the index missed them, after a restart too.
#[tokio::test]
async fn a_checkpoint_that_fails_late_leaves_no_event_out_of_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("fault");
    std::fs::write(&fault, "").unwrap();
    let db = dir.path().join("db");
    let env = [("BROKER_FAULT_FILE", fault.to_str().unwrap())];
    let flags = ["--checkpoint_records", "1", "--sse_buffer", "1"];
    let mut s = Server::start_env(&db, &flags, &env);
    let c = client();
    create_user(&c, &s, "f", "pw", "t").await;
    let jwt = login(&c, &s, "f", "pw").await;
    assert_eq!(insert(&c, &s, &jwt, "e", json!("first")).await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // This insert's checkpoint fails 0.8 s later; the next insert is published meanwhile.
    std::fs::write(&fault, "fail_at:checkpoint:save").unwrap();
    assert_eq!(insert(&c, &s, &jwt, "e", json!("failed-save")).await.0, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&fault, "").unwrap();
    assert_eq!(insert(&c, &s, &jwt, "e", json!("after")).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        wait_for_log(&s, "checkpoint not stored", WAIT).await,
        "{}",
        s.stderr()
    );
    // A clean stop stores a checkpoint (with the index) after the failure.
    assert_eq!(s.terminate(), Some(0));

    let s = Server::start_env(&db, &flags, &env);
    let page = get_json(&c, &s, "/events?after=0&limit=10", &jwt).await;
    let data: Vec<&serde_json::Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(
        data,
        [&json!("first"), &json!("failed-save"), &json!("after")],
        "{page}"
    );
    let mut stream = Sse::open(&s, &jwt, Some("0")).await;
    let mut resumed = Vec::new();
    while let Some(frame) = stream.next_event(Duration::from_millis(700)).await {
        resumed.push(frame.json());
    }
    assert_eq!(
        resumed,
        [json!("first"), json!("failed-save"), json!("after")]
    );
}

/// Regression: when the log could not grow (a full disk past the space check's reach: a
/// quota, `ulimit -f`), inserts failed with 503 but `/ready`'s probe, an empty write and an
/// fsync, succeeded: the node said ready between every two failures. The probe now writes
/// the span the next batches take, and stays 503 until that span can be written. And the
/// limit's SIGXFSZ no longer kills the server.
#[tokio::test]
async fn ready_stays_503_while_the_log_cannot_grow() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_file_size_limit(dir.path(), &[], 600 * 1024);
    let c = client();
    create_user(&c, &s, "g", "pw", "t").await;
    let jwt = login(&c, &s, "g", "pw").await;
    let data = "x".repeat(4000);
    let mut acked = 0;
    let mut refused = None;
    for _ in 0..400 {
        match insert(&c, &s, &jwt, "e", json!(data)).await {
            (200, _) => acked += 1,
            (status, body) => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("the log reached the limit");
    assert_eq!(status, 503, "{body}");
    assert!(acked > 50, "only {acked} inserts before the limit");
    // Over more than one probe interval: never ready, and every insert still refused.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let resp = reqwest::get(s.url("/ready")).await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 503, "ready while the log cannot grow: {body}");
        assert_eq!(body["reason"], "log_fault", "{body}");
        assert_eq!(insert(&c, &s, &jwt, "e", json!(data)).await.0, 503);
    }
    // Alive, and everything acknowledged is readable.
    assert_eq!(reqwest::get(s.url("/")).await.unwrap().status(), 200);
    let history = get_json(&c, &s, "/events?limit=1000", &jwt).await;
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(acked),
        "{history}"
    );
}

/// The wrong reset code that voids a live code is written after its answer: waiting for the
/// record's fsync made that answer slower for a user with a pending reset than for one
/// without (an attack review). A disk fault then does not show in the answer either, and the
/// code stays refused on this node until the records are written by a later wrong try.
#[tokio::test]
async fn the_try_that_voids_a_reset_code_answers_before_its_records_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let fault = dir.path().join("fault");
    std::fs::write(&fault, "").unwrap();
    let db = dir.path().join("db");
    let env = [("BROKER_FAULT_FILE", fault.to_str().unwrap())];
    let flags = ["--max_failures", "20"];
    let mut s = Server::start_env(&db, &flags, &env);
    let c = client();
    create_user(&c, &s, "forgot", "old-pw", "t").await;
    let (status, issued) = post(
        &c,
        s.url("/create_totp"),
        json!({"admin_token": ADMIN, "username": "forgot"}),
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    let code = issued["totp"].as_str().unwrap().to_owned();
    let reset =
        |user: &str, code: &str| json!({"username": user, "totp": code, "password": "new-pw"});
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..4 {
        assert_eq!(
            post(&c, s.url("/password_reset"), reset("forgot", wrong))
                .await
                .0,
            401
        );
    }
    let before = admin_cursor(&c, &s).await;
    std::fs::write(&fault, "eio").unwrap();
    // The fifth: 401 as for a user without a code, not the write's 503.
    let (status, reply) = post(&c, s.url("/password_reset"), reset("forgot", wrong)).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(
        reply,
        post(&c, s.url("/password_reset"), reset("nobody", wrong))
            .await
            .1
    );
    // Not on record, yet refused here: the count stays until it is.
    let (status, _) = post(&c, s.url("/password_reset"), reset("forgot", &code)).await;
    assert_eq!(status, 401, "the right code after five wrong ones");
    std::fs::write(&fault, "").unwrap();
    assert_eq!(admin_cursor(&c, &s).await, before, "nothing was stored");
    // The next wrong try writes them, and the code is void across a restart.
    assert_eq!(
        post(&c, s.url("/password_reset"), reset("forgot", wrong))
            .await
            .0,
        401
    );
    let deadline = std::time::Instant::now() + WAIT;
    while admin_cursor(&c, &s).await == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the void is not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(&db, &flags);
    let (status, _) = post(&c, s.url("/password_reset"), reset("forgot", &code)).await;
    assert_eq!(status, 401, "void across a restart");
    login(&c, &s, "forgot", "old-pw").await;
}
