//! Recovery: a torn last frame is cut away with a warning; damage anywhere else refuses to
//! start with a message naming file and offset, and `broker log verify` lists it.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::json;

/// Fills a log with a user and `events` inserts, then stops the server cleanly.
async fn fill(db: &Path, events: usize, extra: &[&str]) {
    let mut s = Server::start(db, extra);
    let c = client();
    assert_eq!(create_user(&c, &s, "u", "pw", "t").await, 200);
    let jwt = login(&c, &s, "u", "pw").await;
    for i in 0..events {
        let (status, _) = insert(&c, &s, &jwt, "e", json!({"i": i, "pad": "x".repeat(40)})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(s.terminate(), Some(0));
}

fn segments(db: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(db.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

async fn cursors_present(s: &Server) -> Vec<u64> {
    let c = client();
    let jwt = login(&c, s, "u", "pw").await;
    let (_, health) = post_raw(&c, s.url("/login"), "{}".into(), None).await;
    let _ = health;
    let newest = admin_cursor(&c, s).await;
    let mut sse = Sse::open(s, &jwt, Some("0")).await;
    let mut out = Vec::new();
    while out.last().is_none_or(|c| *c < newest) {
        out.push(sse.next_event(WAIT).await.expect("event").cursor());
    }
    out
}

#[tokio::test]
async fn a_torn_last_frame_is_cut_away_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20, &[]).await;
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);

    let (code, out, _) = run_broker(&["log", "verify", "--db", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "verify must report the torn tail: {out}");
    assert!(out.contains("torn tail"), "{out}");

    let s = Server::start(dir.path(), &[]);
    assert!(wait_for_log(&s, "torn tail", std::time::Duration::from_secs(5)).await);
    let warning = s.stderr();
    assert!(
        warning.contains("torn tail") && warning.contains("WARN"),
        "{warning}"
    );
    // The user (cursor 1) and 19 of the 20 events remain.
    assert_eq!(cursors_present(&s).await, (2..=20).collect::<Vec<_>>());
    drop(s);
    let (code, out, _) = run_broker(&["log", "verify", "--db", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_flipped_byte_in_a_middle_frame_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 20, &[]).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let err = Server::try_start(dir.path(), &[])
        .err()
        .expect("the server must refuse to start");
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "message does not name the file: {err}");
    assert!(
        err.contains("offset"),
        "message does not name the offset: {err}"
    );
    assert!(err.contains("broker log verify"), "{err}");

    let (code, out, _) = run_broker(&["log", "verify", "--db", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("damage") && out.contains(name), "{out}");
    // Nothing was changed by the refused start.
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

#[tokio::test]
async fn a_torn_tail_in_an_older_segment_is_damage_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200, &["--segment_bytes", "4096"]).await;
    let all = segments(dir.path());
    assert!(all.len() >= 3);
    let first = &all[0];
    let len = std::fs::metadata(first).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(first)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = Server::try_start(dir.path(), &["--segment_bytes", "4096"])
        .err()
        .expect("must refuse");
    assert!(
        err.contains(first.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
}

#[tokio::test]
async fn restarts_with_small_segments_keep_every_record() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 150, &["--segment_bytes", "4096"]).await;
    let s = Server::start(dir.path(), &["--segment_bytes", "4096"]);
    assert_eq!(cursors_present(&s).await, (2..=151).collect::<Vec<_>>());
}

/// Where the intact records of a segment file end, by recovery's own scan (any other
/// fault fails the test); zeros may follow them.
fn records_end(path: &Path, bytes: &[u8]) -> usize {
    let scan = broker::log::recovery::scan_segment(
        path,
        bytes,
        broker::state::Record::cursor_of,
        0,
        |_, _| {},
    )
    .unwrap();
    assert!(scan.fault.is_none(), "{:?}", scan.fault);
    scan.valid_len as usize
}

#[tokio::test]
async fn zeros_a_killed_server_reserved_are_cut_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let c = client();
    assert_eq!(create_user(&c, &s, "u", "pw", "t").await, 200);
    let jwt = login(&c, &s, "u", "pw").await;
    for i in 0..20 {
        let (status, _) = insert(&c, &s, &jwt, "e", json!({"i": i})).await;
        assert_eq!(status, 200);
    }
    s.kill();
    let last = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let end = records_end(&last, &bytes);
    assert!(
        bytes.len() > end && bytes[end..].iter().all(|b| *b == 0),
        "the segment should go on in zeros past its records ({} of {} bytes)",
        end,
        bytes.len()
    );
    // Zeros after the last segment's records are no fault to `broker log verify`.
    let (code, out, _) = run_broker(&["log", "verify", "--db", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let mut s = Server::start(dir.path(), &[]);
    // Read back from the log, past the reserved space a new write puts after them.
    let jwt = login(&c, &s, "u", "pw").await;
    assert_eq!(insert(&c, &s, &jwt, "e", json!({"i": 20})).await.0, 200);
    assert_eq!(cursors_present(&s).await, (2..=22).collect::<Vec<_>>());
    assert!(!s.stderr().contains("torn tail"), "{}", s.stderr());
    // A clean stop leaves the segment ending with its last record.
    assert_eq!(s.terminate(), Some(0));
    let bytes = std::fs::read(&last).unwrap();
    assert_eq!(records_end(&last, &bytes), bytes.len());
}

#[tokio::test]
async fn zeros_after_the_records_of_an_older_segment_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200, &["--segment_bytes", "4096"]).await;
    let all = segments(dir.path());
    assert!(all.len() >= 3);
    let first = &all[0];
    let mut bytes = std::fs::read(first).unwrap();
    assert_eq!(
        records_end(first, &bytes),
        bytes.len(),
        "a closed segment has no zeros"
    );
    bytes.extend_from_slice(&[0; 64]);
    std::fs::write(first, &bytes).unwrap();
    let err = Server::try_start(dir.path(), &["--segment_bytes", "4096"])
        .err()
        .expect("must refuse");
    let name = first.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains("64 zero bytes"), "{err}");
    let (code, out, _) = run_broker(&["log", "verify", "--db", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("64 zero bytes") && out.contains(name), "{out}");
    assert_eq!(std::fs::read(first).unwrap(), bytes);
}

/// `POST /get_user` as the admin: the user's fields.
async fn stored_user(c: &reqwest::Client, s: &Server, username: &str) -> serde_json::Value {
    let (status, body) = post(
        c,
        s.url("/get_user"),
        json!({"username": username, "admin_token": ADMIN}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// An update that moves a user and changes their password is one record: a crash that
/// tears its write keeps both changes or neither, never a move under the old password.
#[tokio::test]
async fn an_update_with_a_password_torn_by_a_crash_applies_whole_or_not_at_all() {
    let c = client();
    // Where the update's frame starts and ends in the last segment.
    let setup = |db: PathBuf| {
        let c = c.clone();
        async move {
            let mut s = Server::start(&db, &[]);
            assert_eq!(create_user(&c, &s, "u", "old password", "t").await, 200);
            assert_eq!(s.terminate(), Some(0));
            let last = segments(&db).pop().unwrap();
            let start = records_end(&last, &std::fs::read(&last).unwrap());
            let mut s = Server::start(&db, &[]);
            let (status, body) = post(
                &c,
                s.url("/update_user"),
                json!({"username": "u", "admin_token": ADMIN, "tenant_name": "moved",
                       "email": "u@example.com", "password": "new password"}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(s.terminate(), Some(0));
            let end = records_end(&last, &std::fs::read(&last).unwrap());
            (last, start, end)
        }
    };

    // Not torn: both changes hold after a restart.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path().to_owned()).await;
    let s = Server::start(dir.path(), &[]);
    let user = stored_user(&c, &s, "u").await;
    assert_eq!(user["tenant_name"], "moved", "{user}");
    assert_eq!(user["email"], "u@example.com", "{user}");
    login(&c, &s, "u", "new password").await;
    drop(s);

    // Torn anywhere in its write: neither change holds, and the old password still works.
    for keep in [8, 60, usize::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let (last, start, end) = setup(dir.path().to_owned()).await;
        let cut = start + keep.min(end - start - 1);
        let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
        file.set_len(cut as u64).unwrap();
        drop(file);
        let s = Server::start(dir.path(), &[]);
        assert!(wait_for_log(&s, "torn tail", WAIT).await, "cut at {cut}");
        let user = stored_user(&c, &s, "u").await;
        assert_eq!(
            user["tenant_name"], "t",
            "cut at {cut} of {start}..{end}: {user}"
        );
        assert_eq!(
            user["email"],
            serde_json::Value::Null,
            "cut at {cut}: {user}"
        );
        login(&c, &s, "u", "old password").await;
        let (status, _) = post(
            &c,
            s.url("/login"),
            json!({"username": "u", "password": "new password"}),
        )
        .await;
        assert_eq!(status, 401, "cut at {cut}");
    }
}
