//! Projections: the log folded into what requests read.

use std::collections::HashMap;
use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

use crate::cursor::Cursor;

use super::idempotency::IdempotencyKeys;

/// The projections' hash map. Its keys (usernames, tenants, event names) are chosen by
/// clients, so the hasher is seeded at random per process (foldhash's `RandomState`: not
/// predictable from outside, so colliding keys cannot be precomputed); it is several times
/// faster than std's SipHash on short strings, which every insert and every replayed record
/// hashes two or three of.
pub type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// Everything the log says, folded: users by username, latest event per (tenant, name).
/// Checkpoints store it as it is (rkyv), so there is one shape of a user, not two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct State {
    /// Users by username (usernames are unique across tenants).
    pub users: Map<String, User>,
    /// Per tenant, the latest event of each event name.
    pub latest: Map<String, Map<String, LatestEvent>>,
    /// The cursor of the last record folded in (0 before any).
    pub cursor: Cursor,
    /// Recent `Idempotency-Key`s of inserts, per caller: a retry is answered, not appended.
    pub idempotency: IdempotencyKeys,
}

/// A user as the projection holds it.
#[derive(Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct User {
    /// Random UUID bytes.
    pub id: [u8; 16],
    /// Login name, unique across tenants.
    pub username: String,
    /// The tenant whose events the user reads and writes.
    pub tenant: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Optional email.
    pub email: Option<String>,
    /// `resource:operation` pairs; `None` when never set (the API shows `null`).
    pub scopes: Option<Vec<String>>,
    /// Free JSON text.
    pub data: Option<String>,
    /// Whether login requires a TOTP code.
    pub two_factor: bool,
    /// TOTP secret bytes.
    pub totp_secret: Vec<u8>,
    /// Revoked users cannot log in or act.
    pub revoked: bool,
    /// Cursor of the last record that invalidated the user's tokens (creation, password or
    /// tenant change, revocation). A token carries the epoch it was issued in.
    pub credential_epoch: Cursor,
    /// Cursor of the last record that changed the user in any way.
    pub version: Cursor,
    /// When the user was created (its `UserCreated`), milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When the last record that changed the user was written (as `version`), milliseconds
    /// since the Unix epoch.
    pub changed_ms: i64,
    /// TOTP step of the last accepted two-factor login code.
    pub last_login_step: u64,
    /// Step of the last used password-reset code.
    pub last_reset_step: u64,
    /// The live password-reset code, if the admin issued one that is not used or void yet.
    pub reset_code: Option<ResetCode>,
}

impl User {
    /// The user's scopes, empty when none were set.
    pub fn scope_list(&self) -> &[String] {
        self.scopes.as_deref().unwrap_or_default()
    }

    /// The one credential rule: a credential issued in `epoch` (a JWT, a ticket, a stream, an
    /// insert decided on it) is still good — the user is not revoked and nothing has moved
    /// their credential epoch since (password, tenant, scopes, two-factor, revocation).
    pub fn accepts(&self, epoch: Cursor) -> bool {
        !self.revoked && self.credential_epoch == epoch
    }
}

/// Wrong codes after which a reset code is void.
pub const RESET_CODE_TRIES: u8 = 5;

/// A password-reset code the admin issued, as the projection keeps it (digest only).
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct ResetCode {
    /// Cursor of its `ResetCodeIssued` record: which code this is.
    pub issued: Cursor,
    /// SHA-256 of the code, bound to the username.
    pub code_hash: [u8; 32],
    /// When it stops working, milliseconds since the Unix epoch.
    pub expires_ms: i64,
    /// Wrong codes tried against it so far.
    pub failures: u8,
}

impl std::fmt::Debug for User {
    // The hash and the TOTP secret never reach a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("tenant", &self.tenant)
            .field("revoked", &self.revoked)
            .field("credential_epoch", &self.credential_epoch)
            .field("version", &self.version)
            .field("password_hash", &"***")
            .field("totp_secret", &"***")
            .finish_non_exhaustive()
    }
}

/// The latest event of one name in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct LatestEvent {
    /// Its cursor (SSE `id:`).
    pub cursor: Cursor,
    /// UUIDv7 bytes.
    pub id: [u8; 16],
    /// Event name.
    pub event: Arc<str>,
    /// Compact JSON text.
    pub data: Arc<str>,
    /// When it was appended, milliseconds since the Unix epoch (the envelope's `at`).
    pub at_ms: i64,
    /// Who inserted it, `None` for the admin (the envelope's `by`).
    pub by: Option<Arc<str>>,
}

impl State {
    /// The latest event of each name of `tenant`, oldest cursor first (the SSE snapshot).
    pub fn snapshot(&self, tenant: &str) -> Vec<LatestEvent> {
        let mut events: Vec<LatestEvent> = self
            .latest
            .get(tenant)
            .map(|by_name| by_name.values().cloned().collect())
            .unwrap_or_default();
        events.sort_by_key(|e| e.cursor);
        events
    }

    /// The user called `username`, if any.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }
}
