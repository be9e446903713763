//! The bodies of the fuzz targets (`fuzz/`), kept in the library so that the stable test
//! suite runs the very same checks over the checked-in corpora and over random inputs
//! (`tests/fuzz_corpus.rs`). Each panics only when an invariant breaks.

use crate::log::{self, frame, segment};
use crate::state::record::{UserCreated, UserUpdated};
use crate::state::{Command, Record, State, decide, evolve};

/// Frames and records from arbitrary bytes: no panic; a record that validates re-encodes
/// and decodes to itself, and its cursor agrees with [`Record::cursor_of`].
pub fn decode_frames(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        let Ok((payload, len)) = frame::decode(&data[at..]) else {
            break;
        };
        check_payload(payload);
        at += len;
    }
    // The bytes as one payload too: rkyv validation of arbitrary input.
    check_payload(data);
}

fn check_payload(payload: &[u8]) {
    if let Ok(record) = Record::decode(payload) {
        assert_eq!(Record::cursor_of(payload), Some(record.cursor));
        let again = Record::decode(&record.encode()).expect("a re-encoded record decodes");
        assert_eq!(again, record);
    }
}

/// An arbitrary segment file: opening either refuses cleanly or recovers a prefix that then
/// opens again unchanged, with no repair the second time.
pub fn recover_segment(data: &[u8]) {
    let dir = tempfile_dir();
    let log_dir = dir.join("log");
    std::fs::create_dir_all(&log_dir).expect("temp dir");
    // Half the inputs get a valid header, so the fuzzer reaches the frames.
    let mut bytes = Vec::new();
    if data.first().is_some_and(|b| b % 2 == 0) {
        bytes.extend_from_slice(&segment::Header::new(1).encode());
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    std::fs::write(log_dir.join(segment::file_name(1)), &bytes).expect("write segment");
    let mut first = Vec::new();
    let opened = log::open(&log_dir, Record::cursor_of, 1 << 20, |c, _| first.push(c));
    if let Ok(recovered) = opened {
        assert!(first.windows(2).all(|w| w[0] < w[1]), "cursors must rise");
        let last = recovered.last_cursor;
        drop(recovered);
        let mut second = Vec::new();
        let again = log::open(&log_dir, Record::cursor_of, 1 << 20, |c, _| second.push(c))
            .expect("a recovered log opens again");
        assert_eq!(second, first);
        assert_eq!(again.last_cursor, last);
        assert!(again.repairs.is_empty(), "the second open repaired again");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "broker-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const NAMES: [&str; 4] = ["ann", "ben", "cy", "dee"];

/// Commands decoded from bytes (three bytes per command), folded with `decide`/`evolve`:
/// usernames stay unique, cursors rise by one, revoked users cannot act, and replaying the
/// encoded records from scratch gives the live state.
pub fn decide_evolve(data: &[u8]) {
    let mut live = State::default();
    let mut written = Vec::new();
    for (i, op) in data.chunks(3).enumerate() {
        let (kind, a, b) = (op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0));
        let user = NAMES[a as usize % NAMES.len()].to_owned();
        let epoch = live.user(&user).map_or(0, |u| u.credential_epoch);
        let command = match kind % 10 {
            0 => Command::CreateUser(UserCreated {
                id: [a; 16],
                username: user.clone(),
                tenant: format!("t{}", b % 3),
                password_hash: "h".into(),
                email: None,
                scopes: vec![],
                data: None,
                two_factor: b % 2 == 0,
                totp_secret: vec![b; 20],
            }),
            1 | 2 => Command::InsertEvent {
                username: user.clone(),
                credential_epoch: if b % 5 == 0 { epoch + 1 } else { epoch },
                id: [b; 16],
                event: ["x", "y", "z\n"][b as usize % 3].into(),
                data: b.to_string(),
                // Small, so the fuzzer reaches the refusal of a new name.
                name_limit: 2,
            },
            3 => Command::RevokeUser {
                username: user.clone(),
            },
            4 => Command::UnrevokeUser {
                username: user.clone(),
            },
            5 => Command::ChangePassword {
                username: user.clone(),
                password_hash: format!("p{b}"),
            },
            6 => Command::UpdateUser {
                update: UserUpdated {
                    username: user.clone(),
                    tenant: Some(format!("t{}", b % 3)),
                    ..Default::default()
                },
                password_hash: None,
            },
            7 => Command::IssueResetCode {
                username: user.clone(),
                code_hash: [b; 32],
                expires_ms: i64::from(b) * 3,
            },
            8 => Command::FailResetCode {
                username: user.clone(),
                code: u64::from(b),
            },
            _ => Command::ResetPassword {
                username: user.clone(),
                password_hash: "r".into(),
                code: u64::from(b),
            },
        };
        let was_revoked = live.user(&user).is_some_and(|u| u.revoked);
        let is_insert = matches!(command, Command::InsertEvent { .. });
        let before = live.cursor;
        if let Ok(records) = decide(&live, command, i as i64) {
            assert!(!(is_insert && was_revoked), "a revoked user inserted");
            for (n, record) in records.iter().enumerate() {
                assert_eq!(record.cursor, before + 1 + n as u64, "cursors rise by one");
                evolve(&mut live, record);
                written.push(record.encode());
            }
        }
        assert!(
            live.users.iter().all(|(name, u)| *name == u.username),
            "usernames stay keys"
        );
    }
    let mut replayed = State::default();
    for bytes in &written {
        evolve(
            &mut replayed,
            &Record::decode(bytes).expect("written records decode"),
        );
    }
    assert_eq!(replayed, live, "replay equals live state");
}

/// Request bodies, the Authorization header and `Last-Event-ID` from arbitrary bytes: every
/// parser answers a value or a clean error.
pub fn request_inputs(data: &[u8]) {
    crate::http::body::parse_every_body(data);
    let _ = crate::auth::credentials::parse(Some(data));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::http::parse_last_event_id(text);
        let _ = crate::auth::jwt::verify(b"secret", text, 0);
    }
}
