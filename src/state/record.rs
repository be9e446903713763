//! Record kinds: every fact Broker ever stores, as it is encoded in the log.
//!
//! Records are encoded with rkyv. **The order of [`RecordKind`]'s variants and of every
//! field is part of the on-disk format** (`log-format/FORMAT.md`): add new kinds at the end,
//! never reorder or change a field; a change to existing ones needs a format version and a
//! step in `migrations/`.

use rkyv::{Archive, Deserialize, Serialize};

use crate::cursor::Cursor;

/// One entry of the log: its cursor, when it was written, and what happened.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log; also the SSE `id:` of an event.
    pub cursor: Cursor,
    /// Milliseconds since the Unix epoch, by the server's clock, when the writer decided it.
    pub at_ms: i64,
    /// What happened.
    pub kind: RecordKind,
}

/// What a record says happened.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// A user was created.
    UserCreated(UserCreated),
    /// Some of a user's fields changed; absent fields stay as they were.
    UserUpdated(UserUpdated),
    /// A user may no longer log in or act; their credentials stop working.
    UserRevoked {
        /// Whose.
        username: String,
    },
    /// A revoked user may log in again (earlier tokens stay invalid).
    UserUnrevoked {
        /// Whose.
        username: String,
    },
    /// A user's password changed; earlier tokens stop working.
    PasswordChanged {
        /// Whose.
        username: String,
        /// Argon2id PHC string of the new password.
        password_hash: String,
    },
    /// An event was inserted into a tenant.
    EventInserted(EventInserted),
    /// A two-factor login code of this time step was accepted; codes of this or an earlier
    /// step cannot log in again.
    LoginCodeUsed {
        /// Whose.
        username: String,
        /// The TOTP time step (Unix seconds / 30) of the accepted code.
        step: u64,
    },
    /// The password was reset with a single-use reset code; earlier tokens stop working.
    PasswordReset {
        /// Whose.
        username: String,
        /// Argon2id PHC string of the new password.
        password_hash: String,
        /// Which code was used: the cursor of its [`RecordKind::ResetCodeIssued`] (in logs
        /// written before server-issued codes: the old code's time step). Never accepted again.
        step: u64,
    },
    /// The admin issued a password-reset code; it replaces any earlier one. The code itself
    /// is never stored, only its digest (see `auth::reset_code`).
    ResetCodeIssued {
        /// Whose.
        username: String,
        /// SHA-256 of the code, bound to the username.
        code_hash: [u8; 32],
        /// Milliseconds since the Unix epoch after which the code is refused.
        expires_ms: i64,
    },
    /// A wrong code was tried against the user's live reset code; after
    /// [`crate::state::RESET_CODE_TRIES`] of these the code is void.
    ResetCodeFailed {
        /// Whose.
        username: String,
    },
    /// The admin deleted a user: the name is free again, and once compaction passes this
    /// record it drops every earlier record about the user (erasure, `log-format/FORMAT.md`).
    UserDeleted {
        /// Whose.
        username: String,
    },
    /// Some of a user's fields and their password changed in one update: one record, so that
    /// a write torn by a crash keeps both changes or neither. Earlier tokens stop working.
    UserUpdatedWithPassword {
        /// The fields, as in [`RecordKind::UserUpdated`].
        update: UserUpdated,
        /// Argon2id PHC string of the new password.
        password_hash: String,
    },
    /// The admin replaced the user's TOTP secret (a lost or exposed authenticator): codes
    /// of the old one stop working, and so do earlier tokens.
    TotpSecretReplaced {
        /// Whose.
        username: String,
        /// The new secret's bytes.
        totp_secret: Vec<u8>,
    },
}

/// Shown in place of a secret by the `Debug` impls below.
const REDACTED: &str = "***";

impl std::fmt::Debug for RecordKind {
    // Like the derived one, but password hashes, TOTP secrets and reset-code digests never
    // reach a log line or a panic message, not even through `{:?}` (a six-digit code's
    // digest falls to a brute force of a million hashes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use RecordKind::*;
        match self {
            UserCreated(created) => f.debug_tuple("UserCreated").field(created).finish(),
            UserUpdated(update) => f.debug_tuple("UserUpdated").field(update).finish(),
            UserRevoked { username } => f
                .debug_struct("UserRevoked")
                .field("username", username)
                .finish(),
            UserUnrevoked { username } => f
                .debug_struct("UserUnrevoked")
                .field("username", username)
                .finish(),
            PasswordChanged { username, .. } => f
                .debug_struct("PasswordChanged")
                .field("username", username)
                .field("password_hash", &REDACTED)
                .finish(),
            EventInserted(event) => f.debug_tuple("EventInserted").field(event).finish(),
            LoginCodeUsed { username, step } => f
                .debug_struct("LoginCodeUsed")
                .field("username", username)
                .field("step", step)
                .finish(),
            PasswordReset { username, step, .. } => f
                .debug_struct("PasswordReset")
                .field("username", username)
                .field("password_hash", &REDACTED)
                .field("step", step)
                .finish(),
            ResetCodeIssued {
                username,
                expires_ms,
                ..
            } => f
                .debug_struct("ResetCodeIssued")
                .field("username", username)
                .field("code_hash", &REDACTED)
                .field("expires_ms", expires_ms)
                .finish(),
            ResetCodeFailed { username } => f
                .debug_struct("ResetCodeFailed")
                .field("username", username)
                .finish(),
            UserDeleted { username } => f
                .debug_struct("UserDeleted")
                .field("username", username)
                .finish(),
            UserUpdatedWithPassword { update, .. } => f
                .debug_struct("UserUpdatedWithPassword")
                .field("update", update)
                .field("password_hash", &REDACTED)
                .finish(),
            TotpSecretReplaced { username, .. } => f
                .debug_struct("TotpSecretReplaced")
                .field("username", username)
                .field("totp_secret", &REDACTED)
                .finish(),
        }
    }
}

/// The fields of a new user.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct UserCreated {
    /// Random UUID bytes.
    pub id: [u8; 16],
    /// Unique across all tenants.
    pub username: String,
    /// The tenant whose events the user reads and writes.
    pub tenant: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Optional contact address.
    pub email: Option<String>,
    /// `resource:operation` pairs; `None` when none were given (shown as `null`), which is
    /// not the same answer as an empty list the admin set (`[]`).
    pub scopes: Option<Vec<String>>,
    /// Free JSON attached by the admin, stored as compact JSON text.
    pub data: Option<String>,
    /// Whether login requires a TOTP code.
    pub two_factor: bool,
    /// TOTP secret bytes (two-factor login and password-reset codes).
    pub totp_secret: Vec<u8>,
}

impl std::fmt::Debug for UserCreated {
    // The hash and the TOTP secret never reach a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreated")
            .field("username", &self.username)
            .field("tenant", &self.tenant)
            .field("email", &self.email)
            .field("scopes", &self.scopes)
            .field("two_factor", &self.two_factor)
            .field("password_hash", &REDACTED)
            .field("totp_secret", &REDACTED)
            .finish_non_exhaustive()
    }
}

/// A partial update of a user: `None` leaves a field as it is.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct UserUpdated {
    /// Whose.
    pub username: String,
    /// A new tenant; moving tenants invalidates earlier tokens.
    pub tenant: Option<String>,
    /// `Some(None)` clears the email.
    pub email: Option<Option<String>>,
    /// `Some(None)` clears the scopes (`null`); `Some(Some(vec![]))` sets an empty list.
    pub scopes: Option<Option<Vec<String>>>,
    /// `Some(None)` clears the data.
    pub data: Option<Option<String>>,
    /// A new two-factor setting.
    pub two_factor: Option<bool>,
}

/// An inserted event.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EventInserted {
    /// UUIDv7 bytes, returned to the inserting client.
    pub id: [u8; 16],
    /// The tenant it belongs to; only that tenant's subscribers see it.
    pub tenant: String,
    /// The event name (SSE `event:`).
    pub event: String,
    /// The event data as compact JSON text (SSE `data:`).
    pub data: String,
    /// Who inserted it: a username, or `None` for the admin (`POST /admin_insert`).
    pub by: Option<String>,
    /// The client's `Idempotency-Key`, if it sent one: a retry with the same key by the same
    /// caller is answered with this record instead of appending another.
    pub idempotency_key: Option<String>,
}

impl EventInserted {
    /// Who inserted it, `None` for the admin: the envelope's `by`. The one place the
    /// inserting user is read from the record, so a change of its shape changes only this.
    pub fn author(&self) -> Option<&str> {
        self.by.as_deref()
    }
}

impl ArchivedEventInserted {
    /// Who inserted it, as [`EventInserted::author`] reads it from the record.
    pub fn author(&self) -> Option<&str> {
        self.by.as_ref().map(|by| by.as_str())
    }
}

/// The payload [`Record::cursor_of`] last read on this thread, in the aligned buffer it was
/// read in, and whether it held a valid record.
struct LastChecked {
    bytes: rkyv::util::AlignedVec<16>,
    valid: bool,
}

impl LastChecked {
    /// Records whether the bytes just read were valid. A large record's buffer is not kept
    /// for the thread's life, and with it goes the claim that it holds a valid record.
    fn settle(&mut self, valid: bool) {
        if self.bytes.capacity() > 64 * 1024 {
            self.bytes = rkyv::util::AlignedVec::new();
            self.valid = false;
        } else {
            self.valid = valid;
        }
    }
}

thread_local! {
    // Reused: the codec runs once per frame of every scan and read of the log.
    static LAST_CHECKED: std::cell::RefCell<LastChecked> =
        std::cell::RefCell::new(LastChecked { bytes: rkyv::util::AlignedVec::new(), valid: false });
}

impl Record {
    /// The rkyv bytes of this record: the payload of its log frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = rkyv::util::AlignedVec::new();
        self.encode_into(&mut buf);
        buf.into_vec()
    }

    /// The same bytes as [`Record::encode`], written into `buf` (cleared first): the writer
    /// reuses one buffer instead of allocating one per record.
    pub fn encode_into(&self, buf: &mut rkyv::util::AlignedVec) {
        buf.clear();
        let taken = std::mem::take(buf);
        *buf = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, taken)
            .expect("serializing plain owned data into memory cannot fail");
    }

    /// Decodes and validates a frame payload; bytes from disk are untrusted.
    pub fn decode(payload: &[u8]) -> Result<Record, rkyv::rancor::Error> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        rkyv::deserialize::<Record, rkyv::rancor::Error>(Self::access_in(&mut aligned, payload)?)
    }

    /// The archived record in `payload`, validated, copied into `aligned` (reused between
    /// calls) to be read in place: rkyv needs its root aligned, and a slice read from a file
    /// has no such promise.
    pub fn access_in<'a>(
        aligned: &'a mut rkyv::util::AlignedVec<16>,
        payload: &[u8],
    ) -> Result<&'a ArchivedRecord, rkyv::rancor::Error> {
        aligned.clear();
        aligned.extend_from_slice(payload);
        rkyv::access::<ArchivedRecord, rkyv::rancor::Error>(aligned)
    }

    /// The cursor of a valid payload, `None` for anything else: the log's codec.
    pub fn cursor_of(payload: &[u8]) -> Option<Cursor> {
        LAST_CHECKED.with_borrow_mut(|last| {
            last.valid = false;
            let cursor = Record::access_in(&mut last.bytes, payload)
                .ok()
                .map(|archived| archived.cursor.to_native());
            last.settle(cursor.is_some());
            cursor
        })
    }

    /// Runs `read` on the archived record in `payload`, validating it unless the last call
    /// of [`Record::cursor_of`] on this thread just validated these very bytes — as it has
    /// for every record a log scan hands its visitor, so that a replay validates each record
    /// once. `read` must not decode log payloads itself: the buffer is borrowed while it runs.
    pub fn with_archived<T>(
        payload: &[u8],
        read: impl FnOnce(&ArchivedRecord) -> T,
    ) -> Result<T, rkyv::rancor::Error> {
        LAST_CHECKED.with_borrow_mut(|last| {
            if last.valid && last.bytes.as_slice() == payload {
                // SAFETY: `valid` is true only right after `cursor_of` validated `last.bytes`
                // as an `ArchivedRecord` (`rkyv::access`) in this same 16-aligned buffer, or
                // after the same validation below; every other write to the buffer clears it
                // first, and the buffer lives in this thread alone, borrowed mutably here.
                // Its bytes are therefore the validated ones, and they equal `payload`
                // (compared just now): reading them unchecked reads a valid archive.
                let archived = unsafe { rkyv::access_unchecked::<ArchivedRecord>(&last.bytes) };
                return Ok(read(archived));
            }
            last.valid = false;
            let archived = Record::access_in(&mut last.bytes, payload)?;
            let value = read(archived);
            last.settle(true);
            Ok(value)
        })
    }

    /// The user a user record is about; `None` for events.
    pub fn username(&self) -> Option<&str> {
        match &self.kind {
            RecordKind::UserCreated(u) => Some(&u.username),
            RecordKind::UserUpdated(u) | RecordKind::UserUpdatedWithPassword { update: u, .. } => {
                Some(&u.username)
            }
            RecordKind::UserRevoked { username }
            | RecordKind::UserUnrevoked { username }
            | RecordKind::PasswordChanged { username, .. }
            | RecordKind::LoginCodeUsed { username, .. }
            | RecordKind::PasswordReset { username, .. }
            | RecordKind::ResetCodeIssued { username, .. }
            | RecordKind::ResetCodeFailed { username }
            | RecordKind::UserDeleted { username }
            | RecordKind::TotpSecretReplaced { username, .. } => Some(username),
            RecordKind::EventInserted(_) => None,
        }
    }

    /// The tenant an event record belongs to; `None` for user records.
    pub fn tenant(&self) -> Option<&str> {
        match &self.kind {
            RecordKind::EventInserted(e) => Some(&e.tenant),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_hash_a_secret_or_a_code_digest() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$SECRETHASH".to_owned();
        let secret = b"TOTP-SECRET-BYTES".to_vec();
        let kinds = [
            RecordKind::UserCreated(UserCreated {
                id: [1; 16],
                username: "u".into(),
                tenant: "t".into(),
                password_hash: hash.clone(),
                email: None,
                scopes: None,
                data: None,
                two_factor: true,
                totp_secret: secret.clone(),
            }),
            RecordKind::PasswordChanged {
                username: "u".into(),
                password_hash: hash.clone(),
            },
            RecordKind::PasswordReset {
                username: "u".into(),
                password_hash: hash.clone(),
                step: 7,
            },
            RecordKind::ResetCodeIssued {
                username: "u".into(),
                code_hash: [0xab; 32],
                expires_ms: 9,
            },
            RecordKind::UserUpdatedWithPassword {
                update: UserUpdated {
                    username: "u".into(),
                    ..UserUpdated::default()
                },
                password_hash: hash.clone(),
            },
            RecordKind::TotpSecretReplaced {
                username: "u".into(),
                totp_secret: secret.clone(),
            },
        ];
        // The bytes as `{:?}` prints a Vec<u8> or an array.
        let secret_list = format!("{secret:?}");
        let secret_inner = &secret_list[1..secret_list.len() - 1];
        let digest = format!("{:?}", [0xabu8; 32]);
        for kind in kinds {
            let record = Record {
                cursor: 1,
                at_ms: 2,
                kind,
            };
            for shown in [format!("{record:?}"), format!("{record:#?}")] {
                assert!(shown.contains("\"u\""), "{shown}");
                assert!(!shown.contains("SECRETHASH"), "{shown}");
                assert!(!shown.contains(secret_inner), "{shown}");
                assert!(!shown.contains(&digest[1..20]), "{shown}");
                assert!(!shown.contains("171"), "{shown}");
            }
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let r = Record {
            cursor: 7,
            at_ms: 1_700_000_000_000,
            kind: RecordKind::EventInserted(EventInserted {
                id: [9; 16],
                tenant: "t".into(),
                event: "e".into(),
                data: "{\"a\":1}".into(),
                by: Some("u".into()),
                idempotency_key: Some("k-1".into()),
            }),
        };
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), r);
        assert_eq!(Record::cursor_of(&bytes), Some(7));
        assert_eq!(Record::cursor_of(&bytes[1..]), None);
        // The writer's reused buffer holds the same bytes, whatever it held before.
        let mut buf = rkyv::util::AlignedVec::new();
        buf.extend_from_slice(&[0xff; 300]);
        r.encode_into(&mut buf);
        assert_eq!(buf.as_slice(), bytes.as_slice());
        r.encode_into(&mut buf);
        assert_eq!(buf.as_slice(), bytes.as_slice());
    }

    #[test]
    fn a_record_the_codec_validated_is_read_without_a_second_check_and_nothing_else_is() {
        let record = |cursor, data: &str| Record {
            cursor,
            at_ms: 1,
            kind: RecordKind::EventInserted(EventInserted {
                id: [1; 16],
                tenant: "t".into(),
                event: "e".into(),
                data: data.into(),
                by: None,
                idempotency_key: None,
            }),
        };
        let cursor_and_data = |a: &ArchivedRecord| {
            let ArchivedRecordKind::EventInserted(e) = &a.kind else {
                panic!("an insert")
            };
            (a.cursor.to_native(), e.data.as_str().to_owned())
        };
        let first = record(1, r#"{"a":1}"#).encode();
        let second = record(2, r#"{"b":2}"#).encode();
        // After the codec: the same bytes are read as the codec found them.
        assert_eq!(Record::cursor_of(&first), Some(1));
        let read = Record::with_archived(&first, cursor_and_data).unwrap();
        assert_eq!(read, (1, r#"{"a":1}"#.to_owned()));
        // Other bytes than the codec's last are validated, and read right.
        assert_eq!(Record::cursor_of(&first), Some(1));
        let read = Record::with_archived(&second, cursor_and_data).unwrap();
        assert_eq!(read, (2, r#"{"b":2}"#.to_owned()));
        // Damaged bytes are refused however the codec was called before them.
        // The event's data made invalid UTF-8 in place (0xc0 starts no UTF-8 sequence; 0xff
        // would only end an inline string early).
        let mut damaged = first.clone();
        let at = damaged
            .windows(7)
            .position(|w| w == br#"{"a":1}"#)
            .expect("the data is in the record");
        damaged[at + 1] = 0xc0;
        assert_eq!(Record::cursor_of(&first), Some(1));
        assert!(Record::with_archived(&damaged, cursor_and_data).is_err());
        assert_eq!(Record::cursor_of(&damaged), None);
        assert!(Record::with_archived(&damaged, cursor_and_data).is_err());
        // A refused check leaves nothing taken for valid: the next good record still reads.
        let read = Record::with_archived(&second, cursor_and_data).unwrap();
        assert_eq!(read, (2, r#"{"b":2}"#.to_owned()));
        // A record too large for the kept buffer is validated again, and still read right,
        // after the codec and after a read of its own.
        let text = format!(r#"{{"big":"{}"}}"#, "x".repeat(70 * 1024));
        let big = record(3, &text).encode();
        assert_eq!(Record::cursor_of(&big), Some(3));
        for _ in 0..2 {
            let read = Record::with_archived(&big, cursor_and_data).unwrap();
            assert_eq!(read, (3, text.clone()));
            // ...and its buffer is not kept for the thread's life.
            let kept = LAST_CHECKED.with_borrow(|last| last.bytes.capacity());
            assert!(kept <= 64 * 1024, "{kept} bytes kept");
        }
        let read = Record::with_archived(&first, cursor_and_data).unwrap();
        assert_eq!(read, (1, r#"{"a":1}"#.to_owned()));
    }
}
