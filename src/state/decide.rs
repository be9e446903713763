//! `decide`: what a command produces, or why it is refused. Pure: no clock, no I/O, no
//! randomness; the writer calls it with the state as of every earlier record.

use super::command::{Author, Command};
use super::idempotency::{earlier_record, request_digest};
use super::projection::User;
use super::record::{EventInserted, Record, RecordKind};
use super::validate::{self, Invalid};
use super::view::View;

#[cfg(test)]
mod tests;

/// Why a command was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A field holds a value that breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The username is already taken (in any tenant).
    #[error("username: {0:?} is already taken")]
    UsernameTaken(String),
    /// A user's name reads as this one ([`super::lookalike`]).
    #[error(
        "username: {0:?} reads as the name of an existing user (the same letters in another case, width, font or script); choose another"
    )]
    UsernameLookalike(String),
    /// A tenant's name reads as this new one ([`super::lookalike`]).
    #[error(
        "tenant_name: {0:?} reads as the name of an existing tenant (the same letters in another case, width, font or script); use that tenant's exact name, or another"
    )]
    TenantLookalike(String),
    /// No user has this username.
    #[error("username: no user is called {0:?}")]
    UnknownUser(String),
    /// The acting user is revoked or their credentials were invalidated meanwhile.
    #[error("the credentials of {0:?} are no longer valid")]
    CredentialsInvalid(String),
    /// The tenant already holds the most distinct event names allowed, and this is a new one.
    #[error(
        "event: this tenant already has {0} distinct event names (--max_event_names); reuse an existing name"
    )]
    TooManyEventNames(usize),
    /// The tenant's latest events (one per name, kept for good and sent to every new stream)
    /// would hold more bytes of data than allowed.
    #[error(
        "event: with this insert, this tenant's latest events (one per event name, kept for every new stream) would hold more than {0} bytes of data and names (--max_tenant_snapshot_bytes); send smaller data, or replace an existing name's data with smaller data"
    )]
    SnapshotTooLarge(usize),
    /// A single-use code (two-factor login or password reset) was already used.
    #[error("totp: this code was already used; wait for the next one")]
    CodeReused,
    /// The reset code is not the user's live one: never issued, replaced, used, expired or
    /// void after too many wrong tries.
    #[error("totp: no valid reset code; ask the admin for a new one")]
    ResetCodeInvalid,
    /// The caller already used this `Idempotency-Key` within the window for a different
    /// request (another event, data or tenant).
    #[error(
        "Idempotency-Key: this key was already used for a different request (event, data or tenant); use a new key for a new request"
    )]
    KeyReused,
}

/// What a command decides to, when it is not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append these records (cursors following the state's).
    Append(Vec<Record>),
    /// A retried insert (same caller, same `Idempotency-Key`, same request, within the
    /// window): nothing is appended and the request is answered with the earlier record.
    Duplicate(Record),
}

impl Decision {
    /// The records to append: none for a duplicate.
    pub fn appended(&self) -> &[Record] {
        match self {
            Decision::Append(records) => records,
            Decision::Duplicate(_) => &[],
        }
    }

    /// The records to answer the request with: the new ones, or the earlier insert.
    pub fn into_answer(self) -> Vec<Record> {
        match self {
            Decision::Append(records) => records,
            Decision::Duplicate(earlier) => vec![earlier],
        }
    }
}

/// The records `command` produces against `state`, with cursors following `state.cursor`
/// and the given time, or the earlier insert a retried one repeats.
pub fn decide(
    state: &(impl View + ?Sized),
    command: Command,
    at_ms: i64,
) -> Result<Decision, Rejection> {
    // One record per command, so that a torn write keeps a command whole or drops it whole.
    let kind = match command {
        Command::CreateUser(user) => {
            validate::username(&user.username)?;
            validate::new_username(&user.username)?;
            validate::tenant(&user.tenant)?;
            validate::new_tenant(&user.tenant)?;
            if state.tenant_taken_alike(&user.tenant) {
                return Err(Rejection::TenantLookalike(user.tenant));
            }
            if let Some(scopes) = &user.scopes {
                validate::scopes(scopes)?;
            }
            if let Some(email) = &user.email {
                validate::email(email)?;
            }
            if state.user(&user.username).is_some() {
                return Err(Rejection::UsernameTaken(user.username));
            }
            if state.lookalikes(&user.username) > 0 {
                return Err(Rejection::UsernameLookalike(user.username));
            }
            RecordKind::UserCreated(user)
        }
        Command::InsertEvent {
            by,
            id,
            event,
            data,
            name_limit,
            snapshot_budget,
            idempotency_key,
        } => {
            validate::event_name(&event)?;
            validate::new_event_name(&event)?;
            let (by, tenant) = match by {
                Author::User {
                    username,
                    credential_epoch,
                } => match state.user(&username) {
                    Some(u) if u.accepts(credential_epoch) => {
                        // A copy: `to_string` on an `Arc<str>` goes through `Display`.
                        let tenant = String::from(&*u.tenant);
                        (Some(username), tenant)
                    }
                    _ => return Err(Rejection::CredentialsInvalid(username)),
                },
                Author::Admin { tenant } => {
                    validate::tenant(&tenant)?;
                    validate::new_tenant(&tenant)?;
                    (None, tenant)
                }
            };
            let inserted = EventInserted {
                id,
                tenant,
                event,
                data,
                by,
                idempotency_key,
            };
            // A retry is answered before the quotas: it adds no name and no byte.
            if let Some(key) = &inserted.idempotency_key {
                validate::idempotency_key(key)?;
                if let Some((cursor, used)) = state.live_key(inserted.by.as_deref(), key, at_ms) {
                    if used.request
                        != request_digest(&inserted.tenant, &inserted.event, &inserted.data)
                    {
                        return Err(Rejection::KeyReused);
                    }
                    return Ok(Decision::Duplicate(earlier_record(cursor, used, inserted)));
                }
            }
            // One latest event per name is kept forever (snapshot, compaction): the number
            // of names and the bytes of their data are what bound a tenant's memory.
            let limits = TenantLimits {
                event_names: name_limit,
                snapshot_bytes: snapshot_budget,
            };
            within_limits(state, &inserted, limits)?;
            RecordKind::EventInserted(inserted)
        }
        Command::UpdateUser {
            update,
            password_hash,
        } => {
            known(state, &update.username)?;
            validate::user_update(&update)?;
            // One record for both: a write torn between two would apply half an update.
            match password_hash {
                Some(password_hash) => RecordKind::UserUpdatedWithPassword {
                    update,
                    password_hash,
                },
                None => RecordKind::UserUpdated(update),
            }
        }
        Command::UseLoginCode { username, step } => {
            let user = active(state, &username)?;
            if step <= user.last_login_step {
                return Err(Rejection::CodeReused);
            }
            RecordKind::LoginCodeUsed { username, step }
        }
        Command::ResetPassword {
            username,
            password_hash,
            code,
        } => {
            live_reset_code(state, &username, code, at_ms)?;
            RecordKind::PasswordReset {
                username,
                password_hash,
                step: code,
            }
        }
        Command::IssueResetCode {
            username,
            code_hash,
            expires_ms,
        } => {
            known(state, &username)?;
            RecordKind::ResetCodeIssued {
                username,
                code_hash,
                expires_ms,
            }
        }
        Command::FailResetCode { username, code } => {
            live_reset_code(state, &username, code, at_ms)?;
            RecordKind::ResetCodeFailed { username }
        }
        Command::RevokeUser { username } => {
            known(state, &username)?;
            RecordKind::UserRevoked { username }
        }
        Command::UnrevokeUser { username } => {
            known(state, &username)?;
            RecordKind::UserUnrevoked { username }
        }
        Command::DeleteUser { username } => {
            known(state, &username)?;
            RecordKind::UserDeleted { username }
        }
        Command::ChangePassword {
            username,
            password_hash,
        } => {
            known(state, &username)?;
            RecordKind::PasswordChanged {
                username,
                password_hash,
            }
        }
        Command::ReplaceTotpSecret {
            username,
            totp_secret,
        } => {
            known(state, &username)?;
            validate::totp_secret(&totp_secret)?;
            RecordKind::TotpSecretReplaced {
                username,
                totp_secret,
            }
        }
    };
    // A vector of exactly one: it is the answer, and the insert's one allocation here.
    let record = Record {
        cursor: state.cursor() + 1,
        at_ms,
        kind,
    };
    Ok(Decision::Append(vec![record]))
}

/// Whether `record`, decided on a view that may lag the log, still holds at the place the log
/// gave it. Only a shared log (several nodes, see `engine::jetstream`) ever stores such records:
/// inserts there are published without a compare-and-set so that nodes never contend on them,
/// so an insert decided on one node can land just after another node revoked its author,
/// changed their password or moved them to another tenant. Every node folds the same records
/// in the same order and runs this same check, so all of them drop the same inserts; the node
/// that took the request answers it with the rejection. Records of one writer (the embedded
/// log) always hold, since `decide` ran against every earlier record.
///
/// An insert whose author already used its `Idempotency-Key` within the window (by the
/// record's time) is a retry another node appended too: it is refused as
/// [`Rejection::KeyReused`] and dropped like a stale insert.
///
/// `credential_epoch` is the epoch the insert's author authenticated in, when the log carries
/// it beside the record (a shared log does, as a message header); the check is then exactly
/// `decide`'s. Without it, revocation and tenant are checked.
///
/// An insert is also checked against the tenant limits `decide` applied, as of every earlier
/// record: nodes that decided at once against their own folds may together have gone past
/// them.
///
/// User records are checked for what `decide` always checks of them: a new user's name is
/// free, and any other user record is about an existing user. The nodes' own user records
/// always pass (each user's records are compared-and-set on the user's subject), so this only
/// ever drops a record someone else wrote to the stream, before `evolve` could act on it.
pub fn recheck(
    state: &(impl View + ?Sized),
    record: &Record,
    credential_epoch: Option<u64>,
    limits: TenantLimits,
) -> Result<(), Rejection> {
    match &record.kind {
        RecordKind::EventInserted(e) => {
            // Names Broker keeps for itself (`broker.closed`), as `decide` refuses them.
            validate::new_event_name(&e.event)?;
            if let Some(username) = &e.by {
                match state.user(username) {
                    Some(user)
                        if *user.tenant == *e.tenant
                            && credential_epoch
                                .map_or(!user.revoked, |epoch| user.accepts(epoch)) => {}
                    _ => return Err(Rejection::CredentialsInvalid(username.clone())),
                }
            }
            // Two nodes may both append a retry of one keyed insert: the later is dropped
            // everywhere, and its node answers with the earlier one (or 422).
            if let Some(key) = &e.idempotency_key
                && state.live_key(e.by.as_deref(), key, record.at_ms).is_some()
            {
                return Err(Rejection::KeyReused);
            }
            // Each node decided against its own fold, so two may together add names or bytes
            // past the limits; and a record someone else wrote to the stream was decided by
            // nobody (an attack review held 270 MB of one tenant's latest events on every
            // node this way). The nodes share the limits (the stream's metadata).
            within_limits(state, e, limits)
        }
        RecordKind::UserCreated(user) if state.user(&user.username).is_some() => {
            Err(Rejection::UsernameTaken(user.username.clone()))
        }
        // What `decide` asks of a new name only (invisible and direction characters), which
        // a record from the stream was not asked (an attack review).
        RecordKind::UserCreated(user) => Ok(validate::new_username(&user.username)?),
        _ => known(state, record.username().unwrap_or_default()),
    }
}

/// What a tenant's latest events may hold: one event per name is kept forever (snapshot,
/// compaction), so the number of names and the bytes of their data bound a tenant's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    /// Distinct event names (`--max_event_names`).
    pub event_names: usize,
    /// Bytes of data and names (`--max_tenant_snapshot_bytes`).
    pub snapshot_bytes: usize,
}

impl TenantLimits {
    /// The flags' defaults: 10,000 names, 16 MiB.
    pub const DEFAULT: TenantLimits = TenantLimits {
        event_names: 10_000,
        snapshot_bytes: 16 * 1024 * 1024,
    };
}

/// `inserted` is refused if it would take its tenant's latest events past `limits`: a new
/// name past the name limit, or bytes past the budget (an insert that adds none passes).
fn within_limits(
    state: &(impl View + ?Sized),
    inserted: &EventInserted,
    limits: TenantLimits,
) -> Result<(), Rejection> {
    let latest = state.tenant_latest(&inserted.tenant, &inserted.event);
    if latest.names >= limits.event_names && latest.replaced.is_none() {
        return Err(Rejection::TooManyEventNames(limits.event_names));
    }
    // A new name costs its own bytes too (see `projection::name_cost`).
    let len = inserted.data.len()
        + latest
            .replaced
            .map_or_else(|| super::projection::name_cost(&inserted.event), |_| 0);
    if !fits(latest.bytes, latest.replaced, len, limits.snapshot_bytes) {
        return Err(Rejection::SnapshotTooLarge(limits.snapshot_bytes));
    }
    Ok(())
}

/// Whether a tenant whose latest events hold `bytes` of data may take `len` bytes as the
/// latest of a name whose data is `replaced` bytes long now (`None`: a new name) within
/// `budget`. An insert that adds no bytes always may: a tenant over the budget (a lower
/// `--max_tenant_snapshot_bytes` than its log was written with) can still shrink.
fn fits(bytes: usize, replaced: Option<usize>, len: usize, budget: usize) -> bool {
    let replaced = replaced.unwrap_or(0);
    len <= replaced || bytes.saturating_sub(replaced).saturating_add(len) <= budget
}

fn active<'a>(state: &'a (impl View + ?Sized), username: &str) -> Result<&'a User, Rejection> {
    match state.user(username) {
        Some(user) if !user.revoked => Ok(user),
        _ => Err(Rejection::CredentialsInvalid(username.to_owned())),
    }
}

/// The user's reset code issued at `code` is still the one that counts: not replaced, used,
/// expired by `at_ms` or void (the projection forgets a code once it is used or void).
fn live_reset_code(
    state: &(impl View + ?Sized),
    username: &str,
    code: u64,
    at_ms: i64,
) -> Result<(), Rejection> {
    match state.user(username).and_then(|u| u.reset_code()) {
        Some(live) if live.issued == code && at_ms < live.expires_ms => Ok(()),
        _ => Err(Rejection::ResetCodeInvalid),
    }
}

fn known(state: &(impl View + ?Sized), username: &str) -> Result<(), Rejection> {
    if state.user(username).is_some() {
        Ok(())
    } else {
        Err(Rejection::UnknownUser(username.to_owned()))
    }
}
