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
    // The token in the body works as on every admin route; a wrong one is 401.
    assert_eq!(create_user(&c, &s, "eve", "pw", "t").await, 200);
    let (status, _) = post(
        &c,
        s.url("/delete_user"),
        json!({"admin_token": "wrong", "username": "eve"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &c,
        s.url("/delete_user"),
        json!({"admin_token": ADMIN, "username": "eve"}),
    )
    .await;
    assert_eq!(status, 200);
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

/// What a user left on disk, to look for byte by byte.
struct Traces {
    email: Vec<u8>,
    data: Vec<u8>,
    totp_secret: Vec<u8>,
    password_hashes: Vec<Vec<u8>>,
}

impl Traces {
    /// The needles found in some file under `dir`, each with the first file holding it.
    fn found_under(&self, dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
        let mut needles = vec![
            ("email", &self.email),
            ("data", &self.data),
            ("totp secret", &self.totp_secret),
        ];
        needles.extend(self.password_hashes.iter().map(|h| ("password hash", h)));
        // Each file read once; fjall preallocates its journal (64 MiB of zeros), which is
        // left out so that a debug build scans in time.
        let files: Vec<(std::path::PathBuf, Vec<u8>)> = every_file(dir)
            .into_iter()
            .map(|f| {
                let mut bytes = std::fs::read(&f).unwrap_or_default();
                bytes.truncate(written_len(&bytes));
                (f, bytes)
            })
            .collect();
        needles
            .into_iter()
            .filter_map(|(what, needle)| {
                files
                    .iter()
                    .find(|(_, bytes)| contains(bytes, needle))
                    .map(|(f, _)| (what.to_owned(), f.clone()))
            })
            .collect()
    }
}

/// The length of `bytes` without its trailing blocks of zeros.
fn written_len(bytes: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let blocks = bytes.len() / BLOCK;
    let zero = |block: &[u8]| {
        block
            .chunks_exact(16)
            .all(|c| u128::from_ne_bytes(c.try_into().unwrap()) == 0)
    };
    let mut end = bytes.len();
    for i in (0..blocks).rev() {
        if end > (i + 1) * BLOCK || !zero(&bytes[i * BLOCK..(i + 1) * BLOCK]) {
            break;
        }
        end = i * BLOCK;
    }
    end
}

fn every_file(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(every_file(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every Argon2id PHC string in the log's segments.
fn password_hashes(db: &std::path::Path) -> Vec<Vec<u8>> {
    let mut hashes = Vec::new();
    for file in every_file(&db.join("log")) {
        let bytes = std::fs::read(file).unwrap();
        let mut at = 0;
        while let Some(start) = bytes[at..].windows(10).position(|w| w == b"$argon2id$") {
            let start = at + start;
            let len = bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || b"$=,+/.-".contains(b)))
                .unwrap_or(bytes.len() - start);
            hashes.push(bytes[start..start + len].to_vec());
            at = start + len;
        }
    }
    hashes
}

/// RFC 4648 base32, no padding (the `secret=` of an otpauth URI).
fn base32(text: &str) -> Vec<u8> {
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.trim_end_matches('=').chars() {
        let digit = match c {
            'A'..='Z' => c as u64 - 'A' as u64,
            '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => panic!("not base32: {text}"),
        };
        value = (value << 5) | digit;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

/// Creates `erin` with an email, data, a password and a TOTP secret that appear nowhere else,
/// and has her insert an event; returns what she left on disk.
async fn erin(c: &reqwest::Client, s: &Server) -> Traces {
    let email = "erin.q7x2@example.org";
    let data = "zebra-quokka-4411";
    let (status, reply) = post(
        c,
        s.url("/create_user"),
        json!({"admin_token": ADMIN, "username": "erin", "password": "Erin-pw-0417",
               "tenant_name": "t", "email": email, "two_factor": false,
               "data": {"note": data}}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, qr) = post(
        c,
        s.url("/create_qr"),
        json!({"admin_token": ADMIN, "username": "erin", "issuer": "Acme"}),
    )
    .await;
    assert_eq!(status, 200, "{qr}");
    let uri = qr["uri"].as_str().unwrap();
    let secret = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .expect("secret= in the otpauth URI");
    let jwt = login(c, s, "erin", "Erin-pw-0417").await;
    assert_eq!(insert(c, s, &jwt, "note", json!(1)).await.0, 200);
    Traces {
        email: email.as_bytes().to_vec(),
        data: data.as_bytes().to_vec(),
        totp_secret: base32(secret),
        // The only user so far: every hash in the log is hers.
        password_hashes: password_hashes(&s.db),
    }
}

/// After erin's deletion, another user writes enough to close the segments that hold her
/// records.
async fn after_deletion(c: &reqwest::Client, s: &Server) {
    assert_eq!(delete(c, s, "erin").await.0, 200);
    assert_eq!(create_user(c, s, "filler", "pw", "t").await, 200);
    let jwt = login(c, s, "filler", "pw").await;
    for i in 0..12 {
        let (status, _) = insert(c, s, &jwt, "tick", json!({"i": i, "pad": "x".repeat(400)})).await;
        assert_eq!(status, 200);
    }
}

/// Polls (bounded) until no file under `db` holds any of `traces`: the checkpoint the writer
/// stores after the compaction replaces the rewritten store's contents asynchronously.
async fn erased(traces: &Traces, db: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = traces.found_under(db);
        if found.is_empty() || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

const ERASURE_FLAGS: [&str; 4] = ["--segment_bytes", "4096", "--checkpoint_records", "1"];

#[tokio::test]
async fn compaction_past_a_deletion_leaves_no_file_with_the_users_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &ERASURE_FLAGS);
    let c = client();
    let traces = erin(&c, &s).await;
    assert!(!traces.password_hashes.is_empty());
    after_deletion(&c, &s).await;
    // Deleted, not yet compacted: everything is still on disk, in the log and the
    // checkpoints (so this test can see the erasure it checks).
    let found = traces.found_under(dir.path());
    assert_eq!(found.len(), 3 + traces.password_hashes.len(), "{found:?}");
    let in_checkpoints = traces.found_under(&dir.path().join("checkpoints"));
    assert!(
        !in_checkpoints.is_empty(),
        "a checkpoint holds erin before compaction"
    );

    let resp = c
        .post(s.url("/compact"))
        .header("x-admin-token", ADMIN)
        .body(json!({"retain": "cursor:1000000"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let found = erased(&traces, dir.path()).await;
    assert!(
        found.is_empty(),
        "still on disk after compaction: {found:?}"
    );
    // The user's events stay, and the server restarts on the compacted files.
    let jwt = login(&c, &s, "filler", "pw").await;
    let mut stream = Sse::open(&s, &jwt, None).await;
    let names: Vec<_> = stream
        .take(2, WAIT)
        .await
        .into_iter()
        .map(|f| f.event)
        .collect();
    assert!(names.contains(&Some("note".into())), "{names:?}");
    drop(s);
    let s = Server::start(dir.path(), &ERASURE_FLAGS);
    let (status, _) = post(
        &c,
        s.url("/get_user"),
        json!({"admin_token": ADMIN, "username": "erin"}),
    )
    .await;
    assert_eq!(status, 404);
    assert!(traces.found_under(dir.path()).is_empty());
}

#[tokio::test]
async fn offline_compaction_erases_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &ERASURE_FLAGS);
    let c = client();
    let traces = erin(&c, &s).await;
    after_deletion(&c, &s).await;
    assert_eq!(s.terminate(), Some(0));
    assert!(
        !traces.found_under(dir.path()).is_empty(),
        "on disk before compaction"
    );
    let (code, out, err) = run_broker(&[
        "log",
        "compact",
        "--db",
        dir.path().to_str().unwrap(),
        "--retain",
        "cursor:1000000",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let found = traces.found_under(dir.path());
    assert!(
        found.is_empty(),
        "still on disk after compaction: {found:?}"
    );
    let s = Server::start(dir.path(), &ERASURE_FLAGS);
    let (_, users) = post(&c, s.url("/list_users"), json!({"admin_token": ADMIN})).await;
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
}

#[tokio::test]
async fn a_deletion_in_the_active_segment_is_erased_by_the_next_compaction_past_it() {
    let dir = tempfile::tempdir().unwrap();
    // The default 64 MiB segments: everything is in the active one.
    let s = Server::start(dir.path(), &["--checkpoint_records", "1"]);
    let c = client();
    let traces = erin(&c, &s).await;
    assert_eq!(delete(&c, &s, "erin").await.0, 200);
    assert!(!traces.found_under(dir.path()).is_empty());
    let (status, reply) = post(
        &c,
        s.url("/compact"),
        json!({"admin_token": ADMIN, "retain": "0s"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let found = erased(&traces, dir.path()).await;
    assert!(
        found.is_empty(),
        "still on disk after compaction: {found:?}"
    );
    // Writing goes on in the new segment, and a restart reads both.
    assert_eq!(create_user(&c, &s, "erin", "pw2", "t").await, 200);
    drop(s);
    let s = Server::start(dir.path(), &[]);
    login(&c, &s, "erin", "pw2").await;
}
