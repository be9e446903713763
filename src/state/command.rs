//! Commands: what a request asks the writer to do. Randomness and hashing happen before,
//! in the request handler, so that `decide` stays pure.

use crate::log::Cursor;

/// A request to change state, checked by [`super::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a user (password already hashed, id and TOTP secret already drawn).
    CreateUser(super::record::UserCreated),
    /// Insert an event on behalf of `username`, into that user's current tenant.
    InsertEvent {
        /// Who inserts; must exist and not be revoked when the writer decides.
        username: String,
        /// The credential epoch the request authenticated with; a token invalidated after
        /// authentication but before the writer decides is refused.
        credential_epoch: Cursor,
        /// UUIDv7 bytes.
        id: [u8; 16],
        /// Event name.
        event: String,
        /// Compact JSON text.
        data: String,
    },
    /// Change some fields of a user.
    UpdateUser(super::record::UserUpdated),
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
    /// Set a new (already hashed) password.
    ChangePassword {
        /// Whose.
        username: String,
        /// Argon2id PHC string.
        password_hash: String,
    },
}
