//! Pins the on-disk log format (log-format/FORMAT.md) to the golden segment in log-format/golden/.
//!
//! Regenerate the golden file only for an intended format change (with a new format version
//! and a step in `migrations/`): `BROKER_BLESS_GOLDEN=1 cargo test --test it golden_format`.

use std::path::{Path, PathBuf};

use broker::log::frame;
use broker::log::segment::{self, HEADER_LEN, Header};
use broker::state::record::{ArchivedRecord, EventInserted, UserCreated, UserUpdated};
use broker::state::{Record, RecordKind};

const GOLDEN_NAME: &str = "00000000000000000001.seg";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("log-format/golden")
}

fn golden_path() -> PathBuf {
    golden_dir().join(GOLDEN_NAME)
}

/// The position of each kind in `RecordKind`, which is its rkyv discriminant on disk.
///
/// The match is exhaustive on purpose: adding a kind stops this test from compiling until
/// the new kind gets a record in [`expected_records`] and the golden file is re-blessed.
fn discriminant(kind: &RecordKind) -> u8 {
    match kind {
        RecordKind::UserCreated(_) => 0,
        RecordKind::UserUpdated(_) => 1,
        RecordKind::UserRevoked { .. } => 2,
        RecordKind::UserUnrevoked { .. } => 3,
        RecordKind::PasswordChanged { .. } => 4,
        RecordKind::EventInserted(_) => 5,
        RecordKind::LoginCodeUsed { .. } => 6,
        RecordKind::PasswordReset { .. } => 7,
        RecordKind::ResetCodeIssued { .. } => 8,
        RecordKind::ResetCodeFailed { .. } => 9,
        RecordKind::UserDeleted { .. } => 10,
        RecordKind::UserUpdatedWithPassword { .. } => 11,
        RecordKind::TotpSecretReplaced { .. } => 12,
    }
}

const KINDS: u8 = 13;

/// One record of every kind, cursors 1..=13, with fixed times, ids and secrets.
fn expected_records() -> Vec<Record> {
    let at = |cursor: u64| 1_700_000_000_000 + cursor as i64 * 1_000;
    let kinds = vec![
        RecordKind::UserCreated(UserCreated {
            id: [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0x4d, 0xef, 0x80, 0x11, 0x22, 0x33, 0x44, 0x55,
                0x66, 0x77,
            ],
            username: "alice".into(),
            tenant: "acme".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0MTIz$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g".into(),
            email: Some("alice@example.com".into()),
            scopes: Some(vec!["news:get".into(), "news:post".into()]),
            data: Some(r#"{"plan":"pro","seats":3}"#.into()),
            two_factor: true,
            totp_secret: (1u8..=20).collect(),
        }),
        RecordKind::UserUpdated(UserUpdated {
            username: "alice".into(),
            tenant: None,
            email: Some(None),
            scopes: Some(Some(vec!["news:get".into()])),
            data: Some(Some(r#"{"plan":"free"}"#.into())),
            two_factor: Some(false),
        }),
        RecordKind::UserRevoked {
            username: "alice".into(),
        },
        RecordKind::UserUnrevoked {
            username: "alice".into(),
        },
        RecordKind::PasswordChanged {
            username: "alice".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdG5ld3NhbHQ$bmV3aGFzaG5ld2hhc2huZXdoYXNobmV3aGFzaG5ldw".into(),
        },
        RecordKind::EventInserted(EventInserted {
            id: [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x06,
            ],
            tenant: "acme".into(),
            event: "café ☕ 更新".into(),
            data: r#"{"msg":"héllo wörld ✓","n":1,"tags":["a","b"]}"#.into(),
            by: Some("alice".into()),
            idempotency_key: Some("order-42".into()),
        }),
        RecordKind::LoginCodeUsed {
            username: "alice".into(),
            step: 56_666_667,
        },
        RecordKind::PasswordReset {
            username: "alice".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$cmVzZXRzYWx0cmVzZXQ$cmVzZXRoYXNocmVzZXRoYXNocmVzZXRoYXNocmVzZXQ".into(),
            step: 5_666_667,
        },
        RecordKind::ResetCodeIssued {
            username: "alice".into(),
            code_hash: *b"reset-code-digest-32-bytes-long!",
            expires_ms: 1_700_000_300_000,
        },
        RecordKind::ResetCodeFailed {
            username: "alice".into(),
        },
        RecordKind::UserDeleted {
            username: "alice".into(),
        },
        RecordKind::UserUpdatedWithPassword {
            update: UserUpdated {
                username: "bob".into(),
                tenant: Some("globex".into()),
                email: Some(Some("bob@example.com".into())),
                scopes: None,
                data: None,
                two_factor: None,
            },
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$Ym9ic2FsdGJvYnNhbHQ$Ym9iaGFzaGJvYmhhc2hib2JoYXNoYm9iaGFzaGJvYg".into(),
        },
        RecordKind::TotpSecretReplaced {
            username: "bob".into(),
            totp_secret: (101u8..=120).collect(),
        },
    ];
    kinds
        .into_iter()
        .zip(1u64..)
        .map(|(kind, cursor)| Record {
            cursor,
            at_ms: at(cursor),
            kind,
        })
        .collect()
}

/// The exact bytes the golden segment must hold: header, then one frame per record.
fn expected_bytes(records: &[Record]) -> Vec<u8> {
    let mut buf = Header::new(1).encode().to_vec();
    for record in records {
        frame::encode_into(&mut buf, &record.encode());
    }
    buf
}

/// A fresh directory holding a copy of the golden segment (opening a log may write to it).
fn golden_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = tmp.path().join(GOLDEN_NAME);
    std::fs::copy(golden_path(), &copy).expect("copy golden segment");
    (tmp, copy)
}

#[test]
fn golden_segment_bytes_and_decoding() {
    let records = expected_records();
    let expected = expected_bytes(&records);

    if std::env::var("BROKER_BLESS_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).expect("create golden dir");
        std::fs::write(golden_path(), &expected).expect("write golden segment");
        eprintln!(
            "blessed {} ({} bytes)",
            golden_path().display(),
            expected.len()
        );
        return;
    }

    // Every kind appears exactly once, in variant order.
    let kinds: Vec<u8> = records.iter().map(|r| discriminant(&r.kind)).collect();
    assert_eq!(kinds, (0..KINDS).collect::<Vec<_>>());

    let golden = std::fs::read(golden_path()).expect(
        "golden segment missing: run `BROKER_BLESS_GOLDEN=1 cargo test --test it golden_format`",
    );
    assert!(
        golden == expected,
        "the encoding of the log changed: {} holds {} bytes, this build writes {} bytes \
         (first difference at byte {:?}); a format change needs a new format version and a \
         step in migrations/, not a re-blessed golden file",
        golden_path().display(),
        golden.len(),
        expected.len(),
        golden.iter().zip(&expected).position(|(a, b)| a != b)
    );

    // The header, checked byte by byte and through the library.
    assert_eq!(&golden[0..8], b"BRKRLOG\0");
    assert_eq!(golden[8..12], 3u32.to_le_bytes(), "format version");
    assert_eq!(golden[12..16], [0; 4], "flags");
    assert_eq!(golden[16..24], 1u64.to_le_bytes(), "first cursor");
    assert_eq!(golden[24..32], [0; 8], "covers_upto");
    assert_eq!(golden[32..40], [0; 8], "horizon");
    assert_eq!(
        golden[40..44],
        crc32c::crc32c(&golden[0..40]).to_le_bytes(),
        "header crc"
    );
    assert_eq!(golden[44..48], [0; 4], "reserved");
    let header = Header::decode(&golden).expect("header decodes");
    assert_eq!(header, Header::new(1));
    assert_eq!(header.version, segment::FORMAT_VERSION);
    assert_eq!(segment::parse_name(GOLDEN_NAME), Some(header.first_cursor));

    // The frames, walked independently of the recovery code.
    // FORMAT.md documents this layout: a 104-byte root aligned to 8 bytes.
    let root_len = std::mem::size_of::<ArchivedRecord>();
    assert_eq!(root_len, 112, "size of the archived Record");
    assert_eq!(std::mem::align_of::<ArchivedRecord>(), 8);
    let mut offset = HEADER_LEN;
    let mut decoded = Vec::new();
    while offset < golden.len() {
        let rest = &golden[offset..];
        let (payload, total) =
            frame::decode(rest).unwrap_or_else(|fault| panic!("frame at offset {offset}: {fault}"));
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap());
        assert_eq!(len as usize, payload.len());
        assert_eq!(total, frame::FRAME_HEADER + payload.len());
        assert_eq!(
            rest[4..8],
            crc32c::crc32c(payload).to_le_bytes(),
            "frame crc"
        );
        let record = Record::decode(payload)
            .unwrap_or_else(|e| panic!("payload at offset {offset} does not decode: {e}"));
        // The archived root sits at the end of the payload and begins with the cursor (u64 LE).
        let root = payload.len() - root_len;
        assert_eq!(
            payload[root..root + 8],
            record.cursor.to_le_bytes(),
            "root struct of the frame at offset {offset}"
        );
        assert_eq!(Record::cursor_of(payload), Some(record.cursor));
        decoded.push(record);
        offset += total;
    }
    assert_eq!(offset, golden.len());
    assert_eq!(decoded, records);
}

#[test]
fn golden_segment_opens_as_a_log() {
    if std::env::var("BROKER_BLESS_GOLDEN").is_ok_and(|v| v == "1") {
        return;
    }
    let records = expected_records();
    let (tmp, copy) = golden_copy();
    let mut seen = Vec::new();
    let recovered = broker::log::open(
        tmp.path(),
        Record::cursor_of,
        64 << 20,
        |cursor, payload| {
            seen.push((cursor, Record::decode(payload).expect("record decodes")));
        },
    )
    .expect("golden log opens");
    assert_eq!(recovered.last_cursor, u64::from(KINDS));
    assert!(
        recovered.repairs.is_empty(),
        "unexpected repairs: {:?}",
        recovered.repairs
    );
    let expected: Vec<(u64, Record)> = records.into_iter().map(|r| (r.cursor, r)).collect();
    assert_eq!(seen, expected);
    drop(recovered);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(golden_path()).unwrap(),
        "opening an intact log must not change it"
    );

    let report = broker::tool::verify::verify(&golden_dir()).expect("verify runs");
    assert_eq!(report.segments, 1);
    assert_eq!(report.records, u64::from(KINDS));
    assert_eq!(report.last_cursor, u64::from(KINDS));
    assert!(report.faults.is_empty(), "faults: {:?}", report.faults);
}

#[test]
fn golden_segment_with_a_torn_last_frame_recovers_to_the_record_before_it() {
    if std::env::var("BROKER_BLESS_GOLDEN").is_ok_and(|v| v == "1") {
        return;
    }
    let records = expected_records();
    let last_frame_start = expected_bytes(&records[..records.len() - 1]).len() as u64;
    let (tmp, copy) = golden_copy();
    let full = std::fs::metadata(&copy).unwrap().len();
    // Cut the last frame in the middle of its payload, as a crash during the write would.
    let torn = full - 5;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_len(torn)
        .unwrap();

    let mut seen = Vec::new();
    let recovered = broker::log::open(tmp.path(), Record::cursor_of, 64 << 20, |cursor, _| {
        seen.push(cursor)
    })
    .expect("a torn tail is repaired, not refused");
    let before = u64::from(KINDS) - 1;
    assert_eq!(recovered.last_cursor, before);
    assert_eq!(seen, (1..=before).collect::<Vec<u64>>());
    assert_eq!(
        recovered.repairs.len(),
        1,
        "repairs: {:?}",
        recovered.repairs
    );
    let repair = &recovered.repairs[0];
    assert_eq!(repair.path, copy);
    assert_eq!(repair.offset, last_frame_start);
    assert_eq!(repair.removed, torn - last_frame_start);
    drop(recovered);
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), last_frame_start);
}

/// The golden records as the v2 → v3 step produces them from the v2 fixture: version 2 had
/// no idempotency keys, so the event's is `None`.
/// What the v2 fixture migrates to: the golden records of the kinds version 2 had (ten; kind
/// 10, `UserDeleted`, came with version 3), without the event's idempotency key.
fn expected_migrated_records() -> Vec<Record> {
    let mut records = expected_records();
    records.truncate(10);
    for record in &mut records {
        if let RecordKind::EventInserted(e) = &mut record.kind {
            e.idempotency_key = None;
        }
    }
    records
}

fn fixture(version: u32) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("migrations/v{version}"))
            .join(GOLDEN_NAME),
    )
    .unwrap()
}

fn step(from: u32) -> &'static broker::tool::migrate::steps::Step {
    let step = broker::tool::migrate::steps::STEPS
        .iter()
        .find(|s| s.from == from)
        .expect("a step from this version");
    assert_eq!(step.to, from + 1);
    step
}

#[test]
fn a_migrated_fixture_equals_the_golden_segment() {
    let v1 = fixture(1);
    assert_eq!(Header::decode(&v1).unwrap().version, 1);
    let v2 = fixture(2);
    assert_eq!(Header::decode(&v2).unwrap().version, 2);
    // v1 → v2 only grows the header: the v2 fixture's first eight frames, byte for byte
    // (reset codes were appended to the v2 golden segment after version 1 shipped).
    let migrated = (step(1).apply)(&v1).expect("the v1 fixture migrates");
    assert_eq!(Header::decode(&migrated).unwrap().version, 2);
    assert!(
        v2.starts_with(&migrated),
        "v1 fixture, migrated = the v2 fixture's first eight records"
    );
    // v2 → v3 re-encodes every record: the golden segment, except that no v2 event had an
    // idempotency key.
    let migrated = (step(2).apply)(&v2).expect("the v2 fixture migrates");
    assert_eq!(migrated, expected_bytes(&expected_migrated_records()));
    // And both steps in turn, as `broker log migrate` runs them on a v1 segment.
    let twice = (step(2).apply)(&(step(1).apply)(&v1).unwrap()).unwrap();
    assert_eq!(twice, expected_bytes(&expected_migrated_records()[..8]));
}

#[test]
fn the_v2_step_keeps_compaction_marks_and_refuses_damage() {
    use broker::log::segment::FLAG_COMPACTED;
    // A compacted v2 segment: the header's marks must survive the step.
    let v2 = fixture(2);
    let mut header = Header::decode(&v2).unwrap();
    header.flags = FLAG_COMPACTED;
    header.covers_upto = 20;
    header.horizon = 7;
    let mut compacted = header.encode().to_vec();
    compacted.extend_from_slice(&v2[HEADER_LEN..]);
    let migrated = (step(2).apply)(&compacted).unwrap();
    let after = Header::decode(&migrated).unwrap();
    assert_eq!(
        (after.version, after.flags, after.covers_upto, after.horizon),
        (3, FLAG_COMPACTED, 20, 7)
    );
    // A damaged frame is refused, not skipped.
    let mut damaged = v2.clone();
    damaged[HEADER_LEN + 20] ^= 0xff;
    assert!((step(2).apply)(&damaged).is_err());
    // A v3 segment is not a v2 one.
    assert!((step(2).apply)(&std::fs::read(golden_path()).unwrap()).is_err());
}
