//! Retention (issue 18): with `--retain`, the server compacts by itself every
//! `--compact_interval_secs`, by the rules of `POST /compact`, and counts it in `/metrics`.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn segment_files(db: &std::path::Path) -> usize {
    std::fs::read_dir(db.join("log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

#[test]
fn bad_retention_flags_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().to_str().unwrap();
    for (flags, named) in [
        (["--retain", "7w"], "--retain"),
        (["--retain", "soon"], "--retain"),
        (["--compact_interval_secs", "0"], "--compact_interval_secs"),
    ] {
        let (code, _, err) = run_broker(&[&["--db", db, "--port", "0"][..], &flags[..]].concat());
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert!(err.contains(named), "{flags:?}: {err}");
    }
}

#[tokio::test]
async fn old_segments_shrink_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--segment_bytes",
            "4096",
            "--retain",
            "1s",
            "--compact_interval_secs",
            "1",
            "--metrics_token",
            "m",
        ],
    );
    let c = client();
    assert_eq!(create_user(&c, &s, "ann", "pw", "t").await, 200);
    let jwt = login(&c, &s, "ann", "pw").await;
    for i in 0..40 {
        let (status, _) = insert(
            &c,
            &s,
            &jwt,
            "tick",
            json!({"i": i, "pad": "x".repeat(300)}),
        )
        .await;
        assert_eq!(status, 200);
    }
    // Only the latest `tick` and the user are kept below the retain point: the closed
    // segments compact into one, beside the active one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let compacted = segment_files(dir.path()) <= 2
            && metric(&s, "broker_retention_compactions_total").await >= 1.0
            && metric(&s, "broker_retention_reclaimed_bytes_total").await > 0.0;
        if compacted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic compaction: {} segments\n{}",
            segment_files(dir.path()),
            s.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The counters move a moment before the line is logged: give the line that moment.
    assert!(
        wait_for_log(&s, "retention: log compacted", Duration::from_secs(5)).await,
        "{}",
        s.stderr()
    );
    assert_eq!(
        metric(&s, "broker_retention_compaction_failures_total").await,
        0.0
    );
    let mut stream = Sse::open(&s, &jwt, None).await;
    assert_eq!(stream.next_event(WAIT).await.unwrap().json()["i"], 39);
}
