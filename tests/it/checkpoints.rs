//! Checkpoints: a small state is snapshotted at every checkpoint, a large one only after
//! records in proportion to its size (the tenant index still goes in every time), and a
//! clean stop snapshots either, so the next start replays nothing.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

/// `records=` of the start's "log replayed" line.
fn replayed(s: &Server) -> u64 {
    let err = s.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("log replayed"))
        .unwrap_or_else(|| panic!("no 'log replayed' line: {err}"));
    let at = line.find("records=").expect("records=") + "records=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Small inserts one at a time, each given the time for its background checkpoint (a
/// checkpoint is skipped while the one before is still being stored).
async fn paced_inserts(c: &reqwest::Client, s: &Server, jwt: &str, n: usize) {
    for i in 0..n {
        assert_eq!(insert(c, s, jwt, "small", json!(i)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn start(db: &std::path::Path) -> Server {
    let s = Server::start(db, &["--checkpoint_records", "1"]);
    assert!(
        wait_for_log(&s, "log replayed", WAIT).await,
        "{}",
        s.stderr()
    );
    s
}

#[tokio::test]
async fn a_large_state_is_snapshotted_by_its_size_and_a_clean_stop_snapshots_it() {
    let c = client();

    // A small state: every record's checkpoint holds it, so a crash replays (almost) nothing.
    let small = tempfile::tempdir().unwrap();
    let mut s = start(small.path()).await;
    assert_eq!(create_user(&c, &s, "ann", "pw-ann-123", "acme").await, 200);
    let jwt = login(&c, &s, "ann", "pw-ann-123").await;
    paced_inserts(&c, &s, &jwt, 6).await;
    s.kill();
    let mut s = start(small.path()).await;
    assert!(replayed(&s) <= 1, "{}", s.stderr());
    s.kill();

    // A state above the size stored at every checkpoint (the latest event of five names,
    // 900 KB each): once it is snapshotted, the next snapshot waits for one record per 32 of
    // its bytes, so after a crash the small inserts since are replayed from the log.
    let large = tempfile::tempdir().unwrap();
    let mut s = start(large.path()).await;
    assert_eq!(create_user(&c, &s, "bob", "pw-bob-123", "bolt").await, 200);
    let jwt = login(&c, &s, "bob", "pw-bob-123").await;
    let big = "x".repeat(900_000);
    for i in 0..5 {
        assert_eq!(
            insert(&c, &s, &jwt, &format!("big{i}"), json!(big)).await.0,
            200
        );
    }
    // These let the snapshot of the five big events be stored (the big inserts came faster
    // than their checkpoints); the six after them get only the tenant index.
    paced_inserts(&c, &s, &jwt, 3).await;
    paced_inserts(&c, &s, &jwt, 6).await;
    s.kill();
    let mut s = start(large.path()).await;
    let tail = replayed(&s);
    assert!((6..=9).contains(&tail), "replayed {tail}: {}", s.stderr());
    // Nothing is lost: the replay rebuilt what the snapshot did not hold.
    let history = get_json(&c, &s, "/events?limit=100", &jwt).await;
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 14, "{history}");

    // A clean stop stores the large state: the next start replays nothing.
    assert_eq!(s.terminate(), Some(0));
    let s = start(large.path()).await;
    assert_eq!(replayed(&s), 0, "{}", s.stderr());
}

#[tokio::test]
async fn a_resume_through_the_tenant_index_never_sends_another_tenants_event() {
    use broker::engine::checkpoint::{Checkpoints, TenantEvents};

    let dir = tempfile::tempdir().unwrap();
    let c = client();
    // A ring of one event, so a resume from 0 reads the log through the index.
    let flags = ["--sse_buffer", "1"];
    let mut s = Server::start(dir.path(), &flags);
    assert_eq!(create_user(&c, &s, "ann", "pw-ann-123", "acme").await, 200);
    assert_eq!(create_user(&c, &s, "bob", "pw-bob-123", "bolt").await, 200);
    let ann = login(&c, &s, "ann", "pw-ann-123").await;
    let bob = login(&c, &s, "bob", "pw-bob-123").await;
    let (_, a1) = insert(&c, &s, &ann, "a", json!(1)).await;
    let (_, b1) = insert(&c, &s, &bob, "b", json!("bolt's")).await;
    let (_, a2) = insert(&c, &s, &ann, "a", json!(2)).await;
    let bolt_cursor = b1["cursor"].as_u64().expect("cursor");
    assert_eq!(s.terminate(), Some(0));

    // What a tail lost under `--fsync never` and written again can leave: the index naming,
    // for acme, a cursor that holds bolt's event.
    {
        let store = Checkpoints::open(&dir.path().join("checkpoints")).unwrap();
        let stale: TenantEvents = [("acme", bolt_cursor)].into_iter().collect();
        store.save(None, Vec::new(), &stale, 0).unwrap();
    }

    let s = Server::start(dir.path(), &flags);
    let mut sse = Sse::open(&s, &ann, Some("0")).await;
    let mut cursors = Vec::new();
    while let Some(frame) = sse.next_event(Duration::from_millis(700)).await {
        assert!(!frame.data.contains("bolt's"), "{frame:?}");
        cursors.push(frame.cursor());
    }
    let expected: Vec<u64> = [&a1, &a2]
        .iter()
        .map(|r| r["cursor"].as_u64().unwrap())
        .collect();
    assert_eq!(cursors, expected);
}
