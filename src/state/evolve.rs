//! `evolve`: folds one record into the projections. Pure and total: a record that
//! `decide` produced always applies; a record naming an unknown user (possible only in a
//! hand-edited or foreign log) changes nothing but the cursor.

use std::sync::Arc;

use super::projection::{LatestEvent, PasswordHash, RESET_CODE_TRIES, ResetCode, State, User};
use super::record::{ArchivedRecord, ArchivedRecordKind, Record, RecordKind, UserUpdated};
use super::view::{Fold, Inserted};
use crate::cursor::Cursor;

/// Applies `record` to `state`.
pub fn evolve(state: &mut State, record: &Record) {
    evolve_into(state, record);
}

/// Applies a record to `state` from its archived (validated) bytes, as [`evolve`] would the
/// record they decode to. An event without an idempotency key — most of any log — is folded
/// straight from the archive: its strings are never copied into a [`Record`] only to be
/// dropped. Anything else is decoded and goes through [`evolve`]. Replay's fold.
pub fn evolve_archived(
    state: &mut State,
    record: &ArchivedRecord,
) -> Result<(), rkyv::rancor::Error> {
    if let ArchivedRecordKind::EventInserted(e) = &record.kind
        && e.idempotency_key.is_none()
    {
        // `evolve` remembers no key for it either: `remember_key` starts by returning when
        // the event has none.
        let cursor = record.cursor.to_native();
        fold_latest(
            state,
            cursor,
            record.at_ms.to_native(),
            Inserted {
                id: e.id,
                tenant: &e.tenant,
                event: &e.event,
                data: &e.data,
                by: e.author(),
            },
        );
        state.advance(cursor);
        return Ok(());
    }
    let record = rkyv::deserialize::<Record, rkyv::rancor::Error>(record)?;
    evolve(state, &record);
    Ok(())
}

/// Makes `e` the latest event of its name in its tenant (the whole state's [`Fold`]).
pub(super) fn fold_latest(state: &mut State, cursor: Cursor, at_ms: i64, e: Inserted<'_>) {
    // Most events replace the latest of a name the tenant already has: updated in place,
    // the tenant and name keys allocated only when new (replay and the writer both run this
    // once per event). The tenant's byte count follows (`--max_tenant_snapshot_bytes`).
    state.latest.fold(
        e.tenant,
        e.event,
        |slot| {
            slot.cursor = cursor;
            slot.id = e.id;
            set_data(&mut slot.data, e.data);
            slot.at_ms = at_ms;
            // Most inserts of a name come from the same user: keep the shared text.
            if slot.by.as_deref() != e.by {
                slot.by = e.by.map(Arc::from);
            }
        },
        || LatestEvent {
            cursor,
            id: e.id,
            event: Arc::from(e.event),
            data: Arc::from(e.data),
            at_ms,
            by: e.by.map(Arc::from),
        },
    );
}

/// Replaces an event's data, writing over the old text where only this slot holds it and the
/// lengths agree: replay folds every event of a name into one slot, and most of an app's
/// events of a name differ in values, not in length. Elsewhere (a slot shared with the
/// published state or a reader) the text is allocated anew.
fn set_data(slot: &mut Arc<str>, data: &str) {
    match Arc::get_mut(slot) {
        Some(text) if text.len() == data.len() => {
            // SAFETY: `text` and `data` have the same length and `data` is a whole `str`, so
            // after the copy `text` holds exactly `data`'s bytes: valid UTF-8 from its first
            // byte to its last. Nothing else can see `text` meanwhile (`Arc::get_mut`).
            unsafe { text.as_bytes_mut() }.copy_from_slice(data.as_bytes());
        }
        _ => *slot = Arc::from(data),
    }
}

/// Applies `record` to what `state` is: the whole state, or a batch's overlay (`view`).
pub fn evolve_into(state: &mut impl Fold, record: &Record) {
    let cursor = record.cursor;
    match &record.kind {
        RecordKind::UserCreated(u) => {
            // A new user starts with no `Idempotency-Key`s. The deletion of an earlier user of
            // this name forgot theirs, but compaction may have dropped that `UserDeleted`
            // while keeping their keyed inserts (the latest of their names): a replay of such
            // a log remembers those keys again, and they must not answer for this user.
            state.forget_keys(&u.username);
            let tenant = state.tenant(&u.tenant);
            state.add_user(User::created(u, tenant, cursor, record.at_ms));
        }
        RecordKind::UserUpdated(update) => update_user(state, update, cursor, record.at_ms),
        RecordKind::UserRevoked { username } => {
            if let Some(user) = state.user_mut(username) {
                user.revoked = true;
                user.credential_epoch = cursor;
                user.version = cursor;
                user.changed_ms = record.at_ms;
            }
        }
        RecordKind::UserUnrevoked { username } => {
            if let Some(user) = state.user_mut(username) {
                user.revoked = false;
                user.version = cursor;
                user.changed_ms = record.at_ms;
            }
        }
        RecordKind::PasswordChanged {
            username,
            password_hash,
        } => change_password(state, username, password_hash, cursor, record.at_ms),
        RecordKind::LoginCodeUsed { username, step } => {
            if let Some(user) = state.user_mut(username) {
                user.last_login_step = user.last_login_step.max(*step);
                user.version = cursor;
                user.changed_ms = record.at_ms;
            }
        }
        RecordKind::PasswordReset {
            username,
            password_hash,
            step,
        } => {
            if let Some(user) = state.user_mut(username) {
                user.password_hash = PasswordHash::from_phc(password_hash);
                user.last_reset_step = user.last_reset_step.max(*step);
                user.change_reset_code(|code| *code = None);
                user.credential_epoch = cursor;
                user.version = cursor;
                user.changed_ms = record.at_ms;
            }
        }
        RecordKind::ResetCodeIssued {
            username,
            code_hash,
            expires_ms,
        } => {
            if let Some(user) = state.user_mut(username) {
                user.change_reset_code(|code| {
                    *code = Some(ResetCode {
                        issued: cursor,
                        code_hash: *code_hash,
                        expires_ms: *expires_ms,
                        failures: 0,
                    });
                });
                user.version = cursor;
                user.changed_ms = record.at_ms;
            }
        }
        RecordKind::ResetCodeFailed { username } => {
            // `version` stays: wrong codes from a stranger must not flush the user's cached
            // Basic credentials.
            if let Some(user) = state.user_mut(username)
                && user.reset_code().is_some()
            {
                user.change_reset_code(|code| {
                    let void = code.as_mut().is_some_and(|live| {
                        live.failures = live.failures.saturating_add(1);
                        live.failures >= RESET_CODE_TRIES
                    });
                    if void {
                        *code = None;
                    }
                });
            }
        }
        RecordKind::UserDeleted { username } => {
            // The user's events stay in their tenant's `latest`: they belong to the tenant.
            // A user created again under this name starts a new credential epoch (the
            // cursor of its `UserCreated`), so the old user's tokens never match it.
            state.remove_user(username);
            // Their `Idempotency-Key`s go with them: kept by username, they would answer a
            // user created again under this name (with the old insert, or a 422 telling
            // which keys the old user had sent).
            state.forget_keys(username);
        }
        RecordKind::TotpSecretReplaced {
            username,
            totp_secret,
        } => {
            if let Some(user) = state.user_mut(username) {
                user.totp_secret = totp_secret.as_slice().into();
                // Used steps are a secret's: the new one's first code may fall in the step
                // the old one last logged in with, and no old code verifies against it.
                user.last_login_step = 0;
                user.credential_epoch = cursor;
                user.version = cursor;
                user.changed_ms = record.at_ms;
            }
        }
        RecordKind::UserUpdatedWithPassword {
            update,
            password_hash,
        } => {
            update_user(state, update, cursor, record.at_ms);
            change_password(state, &update.username, password_hash, cursor, record.at_ms);
        }
        RecordKind::EventInserted(e) => {
            state.remember_key(record, e);
            state.fold_latest(
                cursor,
                record.at_ms,
                Inserted {
                    id: e.id,
                    tenant: &e.tenant,
                    event: &e.event,
                    data: &e.data,
                    by: e.author(),
                },
            );
        }
    }
    state.advance(cursor);
}

/// Folds a [`UserUpdated`]: its fields, and a new credential epoch where a change must end
/// earlier tokens.
fn update_user(state: &mut impl Fold, update: &UserUpdated, cursor: Cursor, at_ms: i64) {
    let mut tenant = update.tenant.as_deref().map(|t| state.tenant(t));
    let mut left = None;
    if let Some(user) = state.user_mut(&update.username) {
        if let Some(moved) = tenant.take_if(|t| *t != user.tenant) {
            left = Some(std::mem::replace(&mut user.tenant, moved));
            user.credential_epoch = cursor;
        }
        if let Some(email) = &update.email {
            user.set_email(email.clone());
        }
        // A token's scopes are read at use, but a biscuit carries them: new scopes end
        // every credential issued under the old ones.
        // `null` and `[]` grant the same (nothing): only a different list does that.
        if let Some(scopes) = &update.scopes {
            if scopes.as_deref().unwrap_or_default() != user.scope_list() {
                user.credential_epoch = cursor;
            }
            user.set_scopes(scopes.clone());
        }
        if let Some(data) = &update.data {
            user.set_data(data.clone());
        }
        if let Some(two_factor) = update.two_factor {
            // Turning two-factor on ends the sessions opened with the password alone.
            if two_factor && !user.two_factor {
                user.credential_epoch = cursor;
            }
            user.two_factor = two_factor;
        }
        user.version = cursor;
        user.changed_ms = at_ms;
    }
    // The tenant the user left, and one named that nobody moved to, may be empty now.
    for tenant in left.into_iter().chain(tenant) {
        state.release_tenant(tenant);
    }
}

/// Folds a new password: earlier tokens stop working.
fn change_password(
    state: &mut impl Fold,
    username: &str,
    password_hash: &str,
    cursor: Cursor,
    at_ms: i64,
) {
    if let Some(user) = state.user_mut(username) {
        user.password_hash = PasswordHash::from_phc(password_hash);
        user.credential_epoch = cursor;
        user.version = cursor;
        user.changed_ms = at_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::{EventInserted, UserCreated};

    fn event(
        cursor: Cursor,
        tenant: &str,
        name: &str,
        by: Option<&str>,
        key: Option<&str>,
    ) -> Record {
        Record {
            cursor,
            at_ms: 1_700_000_000_000 + 10 * cursor as i64,
            kind: RecordKind::EventInserted(EventInserted {
                id: [cursor as u8; 16],
                tenant: tenant.into(),
                event: name.into(),
                data: format!("{{\"n\":{cursor}}}"),
                by: by.map(Into::into),
                idempotency_key: key.map(Into::into),
            }),
        }
    }

    #[test]
    fn folding_from_the_archive_leaves_what_evolve_leaves() {
        let mut records = vec![Record {
            cursor: 1,
            at_ms: 1_700_000_000_000,
            kind: RecordKind::UserCreated(UserCreated {
                id: [1; 16],
                username: "ann".into(),
                tenant: "t1".into(),
                password_hash: "hash".into(),
                email: None,
                scopes: None,
                data: None,
                two_factor: false,
                totp_secret: vec![7; 20],
            }),
        }];
        // New and known tenants and names, by a user and by the admin, with and without an
        // idempotency key (those take the decoding path), a key used again.
        let shapes: [(&str, &str, Option<&str>, Option<&str>); 8] = [
            ("t1", "a", Some("ann"), None),
            ("t1", "a", Some("ann"), None),
            ("t1", "b", None, None),
            ("t1", "a", None, Some("k1")),
            ("t2", "a", Some("ann"), None),
            ("t2", "a", Some("ben"), Some("k1")),
            ("t1", "a", Some("ann"), Some("k1")),
            ("t1", "b", Some("ann"), None),
        ];
        for (i, (tenant, name, by, key)) in shapes.into_iter().enumerate() {
            records.push(event(i as Cursor + 2, tenant, name, by, key));
        }
        // A window shorter than the time between records: each keyed insert forgets the
        // keys before it. Were `evolve` to forget expired keys on an unkeyed insert too (the
        // archive path skips `remember_key` for those), the last record would show it.
        let mut owned = State::default();
        owned.idempotency.window_ms = 5;
        let mut archived = owned.clone();
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        for record in &records {
            evolve(&mut owned, record);
            let bytes = record.encode();
            let view = Record::access_in(&mut aligned, &bytes).unwrap();
            evolve_archived(&mut archived, view).unwrap();
            assert_eq!(archived, owned, "after cursor {}", record.cursor);
        }
        assert_eq!(owned.cursor, 9);
        assert!(
            !owned.idempotency.is_empty(),
            "the keyed inserts were remembered"
        );
    }

    fn user(cursor: Cursor, username: &str, tenant: &str) -> Record {
        Record {
            cursor,
            at_ms: 1_700_000_000_000 + 10 * cursor as i64,
            kind: RecordKind::UserCreated(UserCreated {
                id: [cursor as u8; 16],
                username: username.into(),
                tenant: tenant.into(),
                password_hash: "hash".into(),
                email: None,
                scopes: None,
                data: None,
                two_factor: false,
                totp_secret: vec![7; 20],
            }),
        }
    }

    #[test]
    fn a_deleted_users_idempotency_keys_go_with_them_even_from_a_compacted_log() {
        let at = |cursor: Cursor| 1_700_000_000_000 + 10 * cursor as i64;
        let deleted = Record {
            cursor: 3,
            at_ms: at(3),
            kind: RecordKind::UserDeleted {
                username: "bob".into(),
            },
        };
        let log = [
            user(1, "bob", "t"),
            event(2, "t", "e", Some("bob"), Some("order-1")),
            deleted,
            user(4, "bob", "t"),
        ];
        let mut state = State::default();
        for record in &log[..3] {
            evolve(&mut state, record);
        }
        assert!(
            state
                .idempotency
                .live(Some("bob"), "order-1", at(3))
                .is_none()
        );
        assert!(state.idempotency.is_empty());
        // Compaction keeps the insert (the latest of its name) but drops the deleted user's
        // records, `UserDeleted` included: the user created again still has no key.
        let mut replayed = State::default();
        for record in [&log[1], &log[3]] {
            evolve(&mut replayed, record);
        }
        assert!(
            replayed
                .idempotency
                .live(Some("bob"), "order-1", at(4))
                .is_none()
        );
        assert_eq!(replayed.latest["t"]["e"].cursor, 2, "the event stays");
    }

    #[test]
    fn event_data_is_written_over_only_where_nobody_else_holds_it() {
        let mut slot: Arc<str> = Arc::from(r#"{"a":1}"#);
        let first = Arc::as_ptr(&slot);
        set_data(&mut slot, r#"{"a":2}"#);
        assert_eq!(&*slot, r#"{"a":2}"#);
        assert_eq!(
            Arc::as_ptr(&slot),
            first,
            "same length, sole holder: reused"
        );
        // A reader (the published state, a stream's snapshot) keeps what it read.
        let reader = Arc::clone(&slot);
        set_data(&mut slot, r#"{"a":3}"#);
        assert_eq!(&*reader, r#"{"a":2}"#);
        assert_eq!(&*slot, r#"{"a":3}"#);
        drop(reader);
        // Another length, multi-byte text: a new allocation holding exactly the new text.
        set_data(&mut slot, r#"{"a":"é"}"#);
        assert_eq!(&*slot, r#"{"a":"é"}"#);
        set_data(&mut slot, r#"{"a":"ü"}"#);
        assert_eq!(&*slot, r#"{"a":"ü"}"#);
    }
}
