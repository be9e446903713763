//! Secrets at rest: everything the server creates under `--db` is its user's alone (0700
//! directories, 0600 files), and a data directory or biscuit key left open to others is
//! named in a warning with the command that closes it.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::json;

/// Gives this test process (and so the servers it starts) the usual permissive umask, so the
/// modes checked below come from the server and not from whoever runs the tests.
fn permissive_umask() {
    // SAFETY: umask(2) only replaces a process-wide integer; it cannot fail. Other tests of
    // this file set the same value.
    unsafe {
        libc::umask(0o022);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Every path under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    let mut i = 0;
    while i < found.len() {
        if found[i].is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&found[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            found.extend(children);
        }
        i += 1;
    }
    found
}

#[tokio::test]
async fn everything_under_the_data_directory_is_owner_only() {
    permissive_umask();
    let tmp = tempfile::tempdir().unwrap();
    // Not there yet: the server creates it.
    let db = tmp.path().join("data");
    let mut s = Server::start(&db, &["--segment_bytes", "4096"]);
    let c = client();
    assert_eq!(create_user(&c, &s, "owner", "pw", "t").await, 200);
    let jwt = login(&c, &s, "owner", "pw").await;
    for i in 0..40 {
        let (status, body) = insert(&c, &s, &jwt, "e", json!({ "i": i })).await;
        assert_eq!(status, 200, "{body}");
    }
    // A clean stop writes a checkpoint (fjall's own files).
    assert_eq!(s.terminate(), Some(0), "{}", s.stderr());

    let paths = walk(&db);
    for expected in ["log/LOCK", "biscuit.key", "checkpoints"] {
        assert!(
            paths.contains(&db.join(expected)),
            "{expected} missing from {paths:#?}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "seg")),
        "{paths:#?}"
    );
    let wrong: Vec<String> = paths
        .iter()
        .filter(|p| {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            mode(p) != want
        })
        .map(|p| format!("{:o} {}", mode(p), p.display()))
        .collect();
    assert!(wrong.is_empty(), "not owner-only:\n{}", wrong.join("\n"));
    assert!(!s.stderr().contains("group or others"), "{}", s.stderr());
}

#[tokio::test]
async fn an_open_data_directory_or_key_is_named_with_its_fix() {
    permissive_umask();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("data");
    std::fs::create_dir(&db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = Server::start(&db, &[]);
    let dir_fix = format!("chmod 700 {}", db.display());
    assert!(
        wait_for_log(&s, &dir_fix, WAIT).await,
        "no warning naming {}:\n{}",
        db.display(),
        s.stderr()
    );
    let line = s
        .stderr()
        .lines()
        .find(|l| l.contains(&dir_fix))
        .unwrap()
        .to_owned();
    assert!(line.contains("WARN"), "{line}");
    // The server creates the key owner-only, but does not tighten a directory it was given.
    assert_eq!(mode(&db), 0o755);
    // The key is written (durably, by a rename) just after the listening line.
    let key = db.join("biscuit.key");
    let deadline = std::time::Instant::now() + WAIT;
    while !key.exists() {
        assert!(std::time::Instant::now() < deadline, "{}", s.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A SIGTERM this early could beat the signal handler; nothing here needs a clean stop.
    s.kill();

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Server::start(&db, &[]);
    let key_fix = format!("chmod 600 {}", key.display());
    assert!(
        wait_for_log(&s, &key_fix, WAIT).await,
        "no warning naming {}:\n{}",
        key.display(),
        s.stderr()
    );
    assert!(!s.stderr().contains(&dir_fix), "{}", s.stderr());
    assert_eq!(s.stderr().matches("group or others").count(), 1);
}
