//! The registry of format migrations: one forward step per format version, each turning one
//! segment file of version `from` into version `to`, cursors and records unchanged.
//! Included by `src/tool/migrate.rs`; each step has a fixture in `migrations/v<from>/` and a
//! test in `tests/it/log_tool.rs` and `tests/it/golden_format.rs`.

/// One forward step.
pub struct Step {
    /// The version it reads.
    pub from: u32,
    /// The version it writes.
    pub to: u32,
    /// What changes, for the operator.
    pub describe: &'static str,
    /// The new bytes of one segment.
    pub apply: fn(&[u8]) -> Result<Vec<u8>, String>,
}

/// Every step, in order.
pub const STEPS: &[Step] = &[
    Step {
        from: 1,
        to: 2,
        describe: "header grows from 32 to 48 bytes: flags, covers_upto and horizon for compaction",
        apply: v1_to_v2,
    },
    Step {
        from: 2,
        to: 3,
        describe: "records re-encoded: an event's author becomes optional (admin inserts) and carries its Idempotency-Key; a user's scopes become optional (null vs [])",
        apply: v2_to_v3,
    },
];

/// Version 1 → 2: a new 48-byte header with the same first cursor and no compaction marks;
/// the frames after the old 32-byte header are copied byte for byte.
fn v1_to_v2(old: &[u8]) -> Result<Vec<u8>, String> {
    use crate::log::segment::{HEADER_LEN_V1, Header};
    let header = Header::decode(old).map_err(|f| f.to_string())?;
    if header.version != 1 {
        return Err(format!(
            "expected a version-1 segment, found version {}",
            header.version
        ));
    }
    let mut new = Header {
        version: 2,
        ..Header::new(header.first_cursor)
    }
    .encode()
    .to_vec();
    new.extend_from_slice(&old[HEADER_LEN_V1..]);
    Ok(new)
}

/// Version 2 → 3: every frame's record is decoded in the version-2 layout ([`v2`]) and
/// encoded again as today's [`Record`](crate::state::Record), with a new frame CRC; the header
/// keeps its flags, first cursor, `covers_upto` and `horizon`. Cursors and times are kept.
///
/// - `EventInserted.username` becomes `by: Some(username)`, `idempotency_key: None`.
/// - `UserCreated.scopes`: an empty list becomes `None` (`null`): version 2 could not tell
///   "no scopes given" from "an empty list set", and 15.x showed an unset list as `null`;
///   users created without scopes are by far the common case.
/// - `UserUpdated.scopes`: `Some([])` (which cleared the scopes) becomes `Some(None)`, clear
///   to `null`, for the same reason; any other list is kept as set.
fn v2_to_v3(old: &[u8]) -> Result<Vec<u8>, String> {
    use crate::log::frame;
    use crate::log::segment::{HEADER_LEN, Header};
    let header = Header::decode(old).map_err(|f| f.to_string())?;
    if header.version != 2 {
        return Err(format!(
            "expected a version-2 segment, found version {}",
            header.version
        ));
    }
    let mut new = Header {
        version: 3,
        ..header
    }
    .encode()
    .to_vec();
    let mut offset = HEADER_LEN;
    while offset < old.len() {
        let (payload, total) = frame::decode(&old[offset..]).map_err(|fault| {
            format!("frame at offset {offset}: {fault}; run `broker log verify`")
        })?;
        let record = v2::decode(payload)
            .map_err(|e| format!("record at offset {offset} does not decode: {e}"))?;
        frame::encode_into(&mut new, &record.into_v3().encode());
        offset += total;
    }
    Ok(new)
}

/// The version-2 record layout, frozen: `src/state/record.rs` moved on, these types must not.
mod v2 {
    use rkyv::{Archive, Deserialize, Serialize};

    use crate::state::record as v3;

    #[derive(Archive, Serialize, Deserialize)]
    pub struct Record {
        pub cursor: u64,
        pub at_ms: i64,
        pub kind: RecordKind,
    }

    #[derive(Archive, Serialize, Deserialize)]
    pub enum RecordKind {
        UserCreated(UserCreated),
        UserUpdated(UserUpdated),
        UserRevoked {
            username: String,
        },
        UserUnrevoked {
            username: String,
        },
        PasswordChanged {
            username: String,
            password_hash: String,
        },
        EventInserted(EventInserted),
        LoginCodeUsed {
            username: String,
            step: u64,
        },
        PasswordReset {
            username: String,
            password_hash: String,
            step: u64,
        },
        ResetCodeIssued {
            username: String,
            code_hash: [u8; 32],
            expires_ms: i64,
        },
        ResetCodeFailed {
            username: String,
        },
    }

    #[derive(Archive, Serialize, Deserialize)]
    pub struct UserCreated {
        pub id: [u8; 16],
        pub username: String,
        pub tenant: String,
        pub password_hash: String,
        pub email: Option<String>,
        pub scopes: Vec<String>,
        pub data: Option<String>,
        pub two_factor: bool,
        pub totp_secret: Vec<u8>,
    }

    #[derive(Archive, Serialize, Deserialize)]
    pub struct UserUpdated {
        pub username: String,
        pub tenant: Option<String>,
        pub email: Option<Option<String>>,
        pub scopes: Option<Vec<String>>,
        pub data: Option<Option<String>>,
        pub two_factor: Option<bool>,
    }

    #[derive(Archive, Serialize, Deserialize)]
    pub struct EventInserted {
        pub id: [u8; 16],
        pub tenant: String,
        pub event: String,
        pub data: String,
        pub username: String,
    }

    /// Decodes and validates a version-2 payload (bytes from disk are untrusted).
    pub fn decode(payload: &[u8]) -> Result<Record, rkyv::rancor::Error> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        rkyv::from_bytes::<Record, rkyv::rancor::Error>(&aligned)
    }

    /// A version-2 list of scopes: empty meant "none", now `None`.
    fn scopes(list: Vec<String>) -> Option<Vec<String>> {
        (!list.is_empty()).then_some(list)
    }

    impl Record {
        /// The same fact in today's layout.
        pub fn into_v3(self) -> crate::state::Record {
            use crate::state::RecordKind as K;
            let kind = match self.kind {
                RecordKind::UserCreated(u) => K::UserCreated(v3::UserCreated {
                    id: u.id,
                    username: u.username,
                    tenant: u.tenant,
                    password_hash: u.password_hash,
                    email: u.email,
                    scopes: scopes(u.scopes),
                    data: u.data,
                    two_factor: u.two_factor,
                    totp_secret: u.totp_secret,
                }),
                RecordKind::UserUpdated(u) => K::UserUpdated(v3::UserUpdated {
                    username: u.username,
                    tenant: u.tenant,
                    email: u.email,
                    scopes: u.scopes.map(scopes),
                    data: u.data,
                    two_factor: u.two_factor,
                }),
                RecordKind::UserRevoked { username } => K::UserRevoked { username },
                RecordKind::UserUnrevoked { username } => K::UserUnrevoked { username },
                RecordKind::PasswordChanged {
                    username,
                    password_hash,
                } => K::PasswordChanged {
                    username,
                    password_hash,
                },
                RecordKind::EventInserted(e) => K::EventInserted(v3::EventInserted {
                    id: e.id,
                    tenant: e.tenant,
                    event: e.event,
                    data: e.data,
                    by: Some(e.username),
                    idempotency_key: None,
                }),
                RecordKind::LoginCodeUsed { username, step } => K::LoginCodeUsed { username, step },
                RecordKind::PasswordReset {
                    username,
                    password_hash,
                    step,
                } => K::PasswordReset {
                    username,
                    password_hash,
                    step,
                },
                RecordKind::ResetCodeIssued {
                    username,
                    code_hash,
                    expires_ms,
                } => K::ResetCodeIssued {
                    username,
                    code_hash,
                    expires_ms,
                },
                RecordKind::ResetCodeFailed { username } => K::ResetCodeFailed { username },
            };
            crate::state::Record {
                cursor: self.cursor,
                at_ms: self.at_ms,
                kind,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame;
    use crate::log::segment::{HEADER_LEN, Header};
    use crate::state::RecordKind;

    fn v2_segment(kinds: Vec<v2::RecordKind>) -> Vec<u8> {
        let mut bytes = Header {
            version: 2,
            ..Header::new(1)
        }
        .encode()
        .to_vec();
        for (kind, cursor) in kinds.into_iter().zip(1u64..) {
            let record = v2::Record {
                cursor,
                at_ms: 5,
                kind,
            };
            let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&record).unwrap();
            frame::encode_into(&mut bytes, &payload);
        }
        bytes
    }

    fn v3_records(bytes: &[u8]) -> Vec<crate::state::Record> {
        let mut offset = HEADER_LEN;
        let mut records = Vec::new();
        while offset < bytes.len() {
            let (payload, total) = frame::decode(&bytes[offset..]).unwrap();
            records.push(crate::state::Record::decode(payload).unwrap());
            offset += total;
        }
        records
    }

    #[test]
    fn v2_empty_scopes_become_null_and_other_lists_stay() {
        let created = |scopes: Vec<String>| {
            v2::RecordKind::UserCreated(v2::UserCreated {
                id: [1; 16],
                username: "ann".into(),
                tenant: "t".into(),
                password_hash: "h".into(),
                email: None,
                scopes,
                data: None,
                two_factor: false,
                totp_secret: vec![1; 20],
            })
        };
        let updated = |scopes: Option<Vec<String>>| {
            v2::RecordKind::UserUpdated(v2::UserUpdated {
                username: "ann".into(),
                tenant: None,
                email: None,
                scopes,
                data: None,
                two_factor: None,
            })
        };
        let old = v2_segment(vec![
            created(vec![]),
            created(vec!["a:b".into()]),
            updated(Some(vec![])),
            updated(None),
            updated(Some(vec!["c:d".into()])),
        ]);
        let new = v2_to_v3(&old).unwrap();
        assert_eq!(Header::decode(&new).unwrap().version, 3);
        let scopes: Vec<String> = v3_records(&new)
            .into_iter()
            .map(|r| match r.kind {
                RecordKind::UserCreated(u) => format!("{:?}", u.scopes),
                RecordKind::UserUpdated(u) => format!("{:?}", u.scopes),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            scopes,
            [
                "None",
                "Some([\"a:b\"])",
                "Some(None)",
                "None",
                "Some(Some([\"c:d\"]))"
            ]
        );
    }
}
