//! Commands: what a request asks the writer to do. Randomness and hashing happen before,
//! in the request handler, so that `decide` stays pure.

use crate::cursor::Cursor;

/// Who inserts an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// A user, into their current tenant.
    User {
        /// Who; must exist and not be revoked when the writer decides.
        username: String,
        /// The credential epoch the request authenticated with; a token invalidated after
        /// authentication but before the writer decides is refused.
        credential_epoch: Cursor,
    },
    /// The admin (`POST /admin_insert`), into the tenant it names (created by the insert
    /// if it has no event yet).
    Admin {
        /// The tenant.
        tenant: String,
    },
}

/// A request to change state, checked by [`super::decide`].
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a user (password already hashed, id and TOTP secret already drawn).
    CreateUser(super::record::UserCreated),
    /// Insert an event, by a user into their current tenant or by the admin into any.
    InsertEvent {
        /// Who inserts, and so into which tenant.
        by: Author,
        /// UUIDv7 bytes.
        id: [u8; 16],
        /// Event name.
        event: String,
        /// Compact JSON text.
        data: String,
        /// Distinct event names the tenant may hold (`--max_event_names`): a new name
        /// beyond it is refused, existing names keep working.
        name_limit: usize,
        /// Bytes of data the tenant's latest events may hold together, one per name
        /// (`--max_tenant_snapshot_bytes`): an insert that would bring them past it is
        /// refused; one that adds no bytes is not.
        snapshot_budget: usize,
        /// The client's `Idempotency-Key` (already checked: 1–255 printable ASCII bytes).
        idempotency_key: Option<String>,
    },
    /// Change some fields of a user, and optionally the password (already hashed).
    UpdateUser {
        /// The fields to change.
        update: super::record::UserUpdated,
        /// A new Argon2id PHC string, if the password changes too.
        password_hash: Option<String>,
    },
    /// Revoke a user.
    RevokeUser {
        /// Whose.
        username: String,
    },
    /// Unrevoke a user.
    UnrevokeUser {
        /// Whose.
        username: String,
    },
    /// Accept a two-factor login code of this TOTP step (refused if this step or a later
    /// one was already used: a code logs in once).
    UseLoginCode {
        /// Whose.
        username: String,
        /// TOTP step of the code.
        step: u64,
    },
    /// Reset the password with the reset code issued at `code` (the handler checked the code
    /// itself); refused unless that code is still the user's live one.
    ResetPassword {
        /// Whose.
        username: String,
        /// Argon2id PHC string of the new password.
        password_hash: String,
        /// Cursor of the code's `ResetCodeIssued` record.
        code: Cursor,
    },
    /// Issue a password-reset code (drawn and hashed by the handler), replacing any earlier one.
    IssueResetCode {
        /// Whose.
        username: String,
        /// See [`super::RecordKind::ResetCodeIssued`].
        code_hash: [u8; 32],
        /// When it stops working, milliseconds since the Unix epoch.
        expires_ms: i64,
    },
    /// Count a wrong code against the live reset code issued at `code`.
    FailResetCode {
        /// Whose.
        username: String,
        /// Cursor of the code's `ResetCodeIssued` record.
        code: Cursor,
    },
    /// Delete a user: their credentials and streams end, their name is free again.
    DeleteUser {
        /// Whose.
        username: String,
    },
    /// Set a new (already hashed) password.
    ChangePassword {
        /// Whose.
        username: String,
        /// Argon2id PHC string.
        password_hash: String,
    },
    /// Replace the user's TOTP secret (already drawn).
    ReplaceTotpSecret {
        /// Whose.
        username: String,
        /// The new secret's bytes.
        totp_secret: Vec<u8>,
    },
}

impl std::fmt::Debug for Command {
    // Password hashes never reach a log line; the rest names the command and its user.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::CreateUser(u) => write!(f, "CreateUser({u:?})"),
            Command::InsertEvent { by, event, .. } => match by {
                Author::User { username, .. } => write!(f, "InsertEvent({username:?}, {event:?})"),
                Author::Admin { tenant } => write!(f, "InsertEvent(admin, {tenant:?}, {event:?})"),
            },
            Command::UpdateUser {
                update,
                password_hash,
            } => write!(
                f,
                "UpdateUser({update:?}, password {})",
                if password_hash.is_some() {
                    "changed"
                } else {
                    "unchanged"
                }
            ),
            Command::RevokeUser { username } => write!(f, "RevokeUser({username:?})"),
            Command::UnrevokeUser { username } => write!(f, "UnrevokeUser({username:?})"),
            Command::UseLoginCode { username, step } => {
                write!(f, "UseLoginCode({username:?}, {step})")
            }
            Command::ResetPassword { username, code, .. } => {
                write!(f, "ResetPassword({username:?}, {code})")
            }
            Command::IssueResetCode { username, .. } => write!(f, "IssueResetCode({username:?})"),
            Command::FailResetCode { username, code } => {
                write!(f, "FailResetCode({username:?}, {code})")
            }
            Command::ChangePassword { username, .. } => write!(f, "ChangePassword({username:?})"),
            Command::DeleteUser { username } => write!(f, "DeleteUser({username:?})"),
            Command::ReplaceTotpSecret { username, .. } => {
                write!(f, "ReplaceTotpSecret({username:?})")
            }
        }
    }
}
