//! The bodies of the fuzz targets (`fuzz/`), kept in the library so that the stable test
//! suite runs the very same checks over the checked-in corpora and over random inputs
//! (`tests/it/fuzz_corpus.rs`). Each panics only when an invariant breaks.

use serde_json::value::RawValue;

use crate::auth::jwt::{Claims, ISSUER, JwtKey, MAX_IAT_SKEW_S};
use crate::http::event_data::{EventData, is_canonical};
use crate::http::streams::{Class, classify_for_fuzzing};
use crate::log::{self, frame, segment};
use crate::state::record::{UserCreated, UserUpdated};
use crate::state::{
    Author, Command, Decision, Overlay, Record, State, decide, evolve, evolve_into, recheck,
};

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
/// encoded records from scratch gives the live state. The writer's way gives the same
/// answers: each command decided against an overlay of the batch over a published state
/// that lags (published when a command's byte says so, or dropped as by a failed write).
pub fn decide_evolve(data: &[u8]) {
    let mut live = State::default();
    let mut written = Vec::new();
    let mut published = State::default();
    let mut overlay = Overlay::new(0);
    let mut batch: Vec<Record> = Vec::new();
    for (i, op) in data.chunks(3).enumerate() {
        let (kind, a, b) = (op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0));
        let user = NAMES[a as usize % NAMES.len()].to_owned();
        let epoch = live.user(&user).map_or(0, |u| u.credential_epoch);
        let command = match kind % 12 {
            0 => Command::CreateUser(UserCreated {
                id: [a; 16],
                username: user.clone(),
                tenant: format!("t{}", b % 3),
                password_hash: "h".into(),
                email: None,
                scopes: (b % 4 == 1).then(Vec::new),
                data: None,
                two_factor: b % 2 == 0,
                totp_secret: vec![b; 20],
            }),
            1 | 2 => Command::InsertEvent {
                // Some by the admin, into a tenant of their own.
                by: if b % 7 == 6 {
                    Author::Admin {
                        tenant: format!("t{}", a % 4),
                    }
                } else {
                    Author::User {
                        username: user.clone(),
                        credential_epoch: if b % 5 == 0 { epoch + 1 } else { epoch },
                    }
                },
                id: [b; 16],
                event: ["x", "y", "z\n"][b as usize % 3].into(),
                data: b.to_string(),
                // Small, so the fuzzer reaches the refusals of a new name and of more bytes.
                name_limit: 2,
                // Two one-letter names with a few bytes of data each: a third name, or
                // data grown past that, is refused.
                snapshot_budget: 2 * (1 + crate::state::projection::NAME_ENTRY_BYTES) + 4,
                // Few keys, so retries and reuse with another body both happen.
                idempotency_key: (b % 3 != 0).then(|| format!("k{}", b % 4)),
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
                password_hash: (b % 2 == 0).then(|| format!("u{b}")),
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
            9 => Command::ResetPassword {
                username: user.clone(),
                password_hash: "r".into(),
                code: u64::from(b),
            },
            10 => Command::ReplaceTotpSecret {
                username: user.clone(),
                // Up to 65 bytes: sometimes one too long, which must be refused.
                totp_secret: vec![b; 16 + usize::from(b % 50)],
            },
            _ => Command::DeleteUser {
                username: user.clone(),
            },
        };
        let was_revoked = live.user(&user).is_some_and(|u| u.revoked);
        let is_insert = matches!(
            command,
            Command::InsertEvent {
                by: Author::User { .. },
                ..
            }
        );
        let before = live.cursor;
        let layered = decide(&overlay.over(&published), command.clone(), i as i64);
        let decided = decide(&live, command, i as i64);
        assert_eq!(layered, decided, "the overlay decides as the whole state");
        if let Ok(decision) = decided {
            if let Decision::Duplicate(earlier) = &decision {
                assert!(
                    earlier.cursor <= before,
                    "a retry answers an earlier record"
                );
            }
            let records = decision.appended();
            assert!(
                records.is_empty() || !(is_insert && was_revoked),
                "a revoked user inserted"
            );
            for (n, record) in records.iter().enumerate() {
                assert_eq!(record.cursor, before + 1 + n as u64, "cursors rise by one");
                let mut over = overlay.over(&published);
                assert_eq!(
                    recheck(&over, record, None, crate::state::TenantLimits::DEFAULT),
                    recheck(&live, record, None, crate::state::TenantLimits::DEFAULT),
                    "the overlay rechecks as the whole state"
                );
                evolve_into(&mut over, record);
                evolve(&mut live, record);
                written.push(record.encode());
                batch.push(record.clone());
            }
        }
        assert!(
            live.users
                .iter()
                .all(|u| live.users.get(&u.username) == Some(u)),
            "usernames stay keys"
        );
        match kind / 64 {
            // Published: the batch is durable and visible.
            1 => {
                for record in batch.drain(..) {
                    evolve(&mut published, &record);
                }
                overlay.published();
                assert_eq!(published, live, "published equals live");
            }
            // Its write failed: nothing of the batch happened.
            2 => {
                batch.clear();
                overlay.discard(published.cursor);
                live = published.clone();
                written.truncate(written.len().min(published.cursor as usize));
            }
            _ => {}
        }
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
/// parser answers a value or a clean error; event data taken as it came is exactly the text
/// serde_json would have written for it.
pub fn request_inputs(data: &[u8]) {
    crate::http::routes::parse_every_body(data);
    let _ = crate::auth::credentials::parse(Some(data));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::http::parse_last_event_id(text);
        let _ = crate::auth::jwt::verify(b"secret", text, 0);
        event_data_as_value(text);
    }
}

/// Event data from any text: [`EventData::parse`] gives exactly serde_json's `Value` text, or
/// fails where serde_json fails, and the scan ([`is_canonical`]) never vouches for text that
/// differs from it.
pub fn event_data_as_value(text: &str) {
    let through_value = serde_json::from_str::<serde_json::Value>(text).map(|v| EventData::of(&v));
    match (&through_value, EventData::parse(text)) {
        (Ok(expected), Ok(got)) => assert_eq!(*expected, got, "{text:?}"),
        (Err(_), Err(_)) => {}
        (expected, got) => panic!("{text:?}: {expected:?} against {got:?}"),
    }
    if is_canonical(text.as_bytes()) && serde_json::from_str::<Box<RawValue>>(text).is_ok() {
        assert!(
            through_value.is_ok_and(|v| v.into_string() == text),
            "vouched for {text:?}"
        );
    }
}

/// A connection's first bytes on the direct SSE path (`http::server::streams`): no panic; a head
/// waits for more bytes only while it may still become a plain `GET /sse` head (no
/// `\r\n\r\n` yet, within the size cap); a head served here is exactly one complete head,
/// every shorter prefix of it waits for more, and its request is a `GET` of `/sse` carrying
/// none of the headers (body, upgrade, expect) that would make it hyper's.
pub fn sse_head(data: &[u8]) {
    const SSE: &[u8] = b"GET /sse";
    // Half the inputs start as an SSE request, so the fuzzer reaches the parser.
    let mut head = Vec::with_capacity(data.len() + SSE.len());
    if data.first().is_some_and(|b| b % 2 == 0) {
        head.extend_from_slice(SSE);
        head.extend_from_slice(&data[1..]);
    } else {
        head.extend_from_slice(data);
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n");
    let (class, request, max_head) = classify_for_fuzzing(&head);
    match class {
        Class::NeedMore => {
            assert!(end.is_none(), "waits for more after a complete head");
            assert!(head.len() <= max_head, "waits for more past the size cap");
            assert!(
                SSE.starts_with(&head) || (head.starts_with(SSE) && matches!(head[8], b' ' | b'?')),
                "waits for more on a head that is not an SSE request"
            );
        }
        Class::Other => assert!(request.is_none()),
        Class::Sse { len } => {
            assert_eq!(len, head.len(), "served with bytes after the head");
            assert_eq!(end, Some(len - 4), "served before its first blank line");
            assert!(
                matches!(head[8], b' ' | b'?'),
                "served a path other than /sse"
            );
            for cut in [1, 8, 9, len / 2, len - 3, len - 2, len - 1] {
                if cut < len && cut <= max_head {
                    let (class, _, _) = classify_for_fuzzing(&head[..cut]);
                    assert_eq!(class, Class::NeedMore, "a prefix of {cut} bytes");
                }
            }
            if let Some(request) = request {
                assert_eq!(request.method(), poem::http::Method::GET);
                assert_eq!(request.uri().path(), "/sse");
                assert_eq!(request.uri().query().is_some(), head[8] == b'?');
                let headers = request.headers();
                assert!(
                    headers
                        .get("content-length")
                        .is_none_or(|v| v.as_bytes() == b"0")
                );
                for name in ["transfer-encoding", "upgrade", "expect"] {
                    assert!(!headers.contains_key(name), "served with {name}");
                }
            }
        }
    }
}

/// The key [`jwt`] signs and verifies with.
const JWT_SECRET: &[u8] = b"broker fuzzing secret";

/// A bearer token and a time for the JWT verifier (`JwtKey::verify`). The first 8 bytes are
/// the time; after a byte that is even, the rest is `header JSON \n claims JSON`, encoded and
/// signed with the key (so the fuzzer reaches the checks behind the signature), else the
/// token as text. No panic; an accepted token has `iss` "broker", `exp` after the time and
/// `iat` at most [`MAX_IAT_SKEW_S`] after it, its HS256 signature verifies under
/// jsonwebtoken, its header (an object) says HS256, its claims are what its JSON says, and
/// whenever jsonwebtoken's own `decode` accepts it too, the claims agree. `decode` is
/// stricter about what else a *signed* header or claims set may be (a `typ` that is not a
/// string, a repeated `typ` or `nbf`, an array instead of an object), so its refusal alone
/// is not a failure: only the holder of the secret can make such a token.
pub fn jwt(data: &[u8]) {
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (now, rest) = match data.split_first_chunk::<8>() {
        Some((now, rest)) => (u64::from_le_bytes(*now), rest),
        None => (0, data),
    };
    let token = match rest.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => {
            let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let claims = rest.get(split + 1..).unwrap_or_default();
            let signed = format!("{}.{}", b64.encode(&rest[..split]), b64.encode(claims));
            let key = EncodingKey::from_secret(JWT_SECRET);
            let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256)
                .expect("HS256 signs any bytes");
            format!("{signed}.{signature}")
        }
        _ => String::from_utf8_lossy(rest).into_owned(),
    };
    let Ok(claims) = JwtKey::new(JWT_SECRET).verify(&token, now) else {
        return;
    };
    assert_eq!(claims.iss, ISSUER);
    assert!(claims.exp > now, "accepted after its exp");
    assert!(
        claims.iat <= now.saturating_add(MAX_IAT_SKEW_S),
        "accepted from the future"
    );
    let key = DecodingKey::from_secret(JWT_SECRET);
    let (signed, signature) = token.rsplit_once('.').expect("an accepted token has dots");
    assert_eq!(
        jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &key, Algorithm::HS256).ok(),
        Some(true),
        "accepted a signature jsonwebtoken refuses"
    );
    let (header, body) = signed.split_once('.').expect("three parts");
    let header = b64
        .decode(header)
        .expect("accepted a header that is not base64url");
    serde_json::from_slice::<serde::de::IgnoredAny>(&header)
        .expect("accepted a header that is not JSON");
    // A `Value` holds no number past f64's range, which a field we ignore may carry (only a
    // holder of the secret can sign such a header): the algorithm is checked where it parses.
    if let Ok(header) = serde_json::from_slice::<serde_json::Value>(&header)
        && header.is_object()
    {
        assert_eq!(header["alg"], "HS256", "accepted another algorithm");
    }
    let said: Claims =
        serde_json::from_slice(&b64.decode(body).expect("base64 claims")).expect("claims as JSON");
    assert_eq!(said, claims);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    if let Ok(theirs) = jsonwebtoken::decode::<Claims>(&token, &key, &validation) {
        assert_eq!(theirs.claims, claims);
    }
}
