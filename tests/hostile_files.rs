//! Hostile segment files: a burst of writes that carried a segment far past
//! `--segment_bytes`.

mod common;

use std::path::{Path, PathBuf};

use broker::log::segment;
use common::*;
use serde_json::json;

fn segments(db: &Path) -> Vec<PathBuf> {
    segment::list(&db.join("log"))
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

fn name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

/// Regression: a group commit wrote its whole batch into the active segment, so a burst
/// could carry a segment past the size a reader accepts; now a full segment ends the batch.
#[tokio::test]
async fn a_burst_of_writes_never_carries_a_segment_far_past_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--segment_bytes", "4096"]);
    let c = client();
    assert_eq!(create_user(&c, &s, "u", "pw", "t").await, 200);
    let jwt = login(&c, &s, "u", "pw").await;
    let pad = "x".repeat(1000);
    for round in 0..4 {
        let burst = (0..64).map(|i| {
            let (c, s, jwt, pad) = (&c, &s, &jwt, &pad);
            async move { insert(c, s, jwt, "e", json!({"r": round, "i": i, "pad": pad})).await }
        });
        for (status, body) in futures_util::future::join_all(burst).await {
            assert_eq!(status, 200, "{body}");
        }
    }
    drop(s);
    // One insert's frame is about 1.2 KB: a segment ends with at most one past 4096 bytes.
    for path in segments(dir.path()) {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 4096 + 2048, "{} is {len} bytes", name(&path));
    }
}
