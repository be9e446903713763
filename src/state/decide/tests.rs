//! `decide`'s rules, one test each, named after the rule it pins.

use super::*;
use crate::state::record::{UserCreated, UserUpdated};
use crate::state::{Author, Command, State, evolve};

const DAY_MS: i64 = 86_400_000;

fn created(username: &str, tenant: &str) -> Command {
    Command::CreateUser(UserCreated {
        id: [1; 16],
        username: username.into(),
        tenant: tenant.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        email: None,
        scopes: None,
        data: None,
        two_factor: false,
        totp_secret: vec![7; 20],
    })
}

/// The state after applying `commands` (each must be accepted).
fn state_after(commands: impl IntoIterator<Item = Command>) -> State {
    let mut state = State::default();
    for command in commands {
        for record in decide(&state, command, 1_000).expect("accepted") {
            evolve(&mut state, &record);
        }
    }
    state
}

fn insert(state: &State, username: &str, event: &str, name_limit: usize) -> Command {
    Command::InsertEvent {
        by: Author::User {
            username: username.into(),
            credential_epoch: state.user(username).map_or(0, |u| u.credential_epoch),
        },
        id: [2; 16],
        event: event.into(),
        data: "1".into(),
        name_limit,
        snapshot_budget: usize::MAX,
        idempotency_key: None,
    }
}

/// `decide`'s appended records, for the rules that never meet a duplicate.
fn decide(state: &State, command: Command, at_ms: i64) -> Result<Vec<Record>, Rejection> {
    super::decide(state, command, at_ms).map(|d| d.appended().to_vec())
}

#[test]
fn usernames_are_unique_across_tenants() {
    let state = state_after([created("bob", "a")]);
    assert_eq!(
        decide(&state, created("bob", "b"), 0),
        Err(Rejection::UsernameTaken("bob".into()))
    );
}

#[test]
fn a_name_that_reads_as_an_existing_users_is_refused() {
    let mut state = state_after([created("admin.ops", "a")]);
    for alike in ["Admin.ops", "ａdmin.ops", "admın.ops", "𝐚dmin.ops"] {
        assert_eq!(
            decide(&state, created(alike, "b"), 0),
            Err(Rejection::UsernameLookalike(alike.into())),
            "{alike}"
        );
    }
    assert!(decide(&state, created("admins.ops", "a"), 0).is_ok());
    // Once the user is gone, the name is free in any form; taken again, the keys count it.
    apply(
        &mut state,
        Command::DeleteUser {
            username: "admin.ops".into(),
        },
    )
    .unwrap();
    apply(&mut state, created("Admin.ops", "a")).unwrap();
    assert_eq!(
        decide(&state, created("admin.ops", "a"), 0),
        Err(Rejection::UsernameLookalike("admin.ops".into()))
    );
    // Within one batch (decided over an overlay before any of it is published), the second
    // of two look-alike names is refused, and a name deleted earlier in it is free again.
    let published = state_after([created("ann", "a")]);
    let mut overlay = crate::state::view::Overlay::new(published.cursor);
    let mut batch = overlay.over(&published);
    let mut cursor = published.cursor;
    for command in [
        created("bob", "a"),
        Command::DeleteUser {
            username: "ann".into(),
        },
        created("Ann", "a"),
    ] {
        for record in super::decide(&batch, command, 0).unwrap().appended() {
            cursor += 1;
            crate::state::evolve_into(
                &mut batch,
                &Record {
                    cursor,
                    ..record.clone()
                },
            );
        }
    }
    assert_eq!(
        super::decide(&batch, created("BOB", "a"), 0).map(|_| ()),
        Err(Rejection::UsernameLookalike("BOB".into()))
    );
    assert_eq!(
        super::decide(&batch, created("ANN", "a"), 0).map(|_| ()),
        Err(Rejection::UsernameLookalike("ANN".into()))
    );
}

#[test]
fn a_new_tenant_that_reads_as_an_existing_one_is_refused() {
    let mut state = state_after([created("ann", "acme")]);
    for alike in ["ACME", "аcme", "acrne"] {
        assert_eq!(
            decide(&state, created("bob", alike), 0),
            Err(Rejection::TenantLookalike(alike.into())),
            "{alike}"
        );
    }
    // The tenant itself, exactly, and another: fine.
    apply(&mut state, created("bob", "acme")).unwrap();
    apply(&mut state, created("cy", "acne corp")).unwrap();
    // Once its last user is gone, its name is free in any form.
    for user in ["ann", "bob"] {
        apply(
            &mut state,
            Command::DeleteUser {
                username: user.into(),
            },
        )
        .unwrap();
    }
    assert!(decide(&state, created("dee", "ACME"), 0).is_ok());
}

#[test]
fn a_new_user_needs_valid_fields() {
    let state = State::default();
    assert!(matches!(
        decide(&state, created("a:b", "t"), 0),
        Err(Rejection::Invalid(_))
    ));
    assert!(matches!(
        decide(&state, created("bob", ""), 0),
        Err(Rejection::Invalid(_))
    ));
}

#[test]
fn records_follow_the_state_cursor() {
    let state = state_after([created("bob", "t")]);
    let records = decide(&state, insert(&state, "bob", "e", 10), 5).unwrap();
    assert_eq!((records[0].cursor, records[0].at_ms), (state.cursor + 1, 5));
}

#[test]
fn an_insert_goes_to_its_authors_current_tenant() {
    let state = state_after([created("bob", "t")]);
    let records = decide(&state, insert(&state, "bob", "e", 10), 0).unwrap();
    assert_eq!(records[0].tenant(), Some("t"));
}

#[test]
fn an_insert_with_an_outdated_credential_epoch_is_refused() {
    let state = state_after([created("bob", "t")]);
    let stale = insert(&state, "bob", "e", 10);
    let state = state_after([
        created("bob", "t"),
        Command::ChangePassword {
            username: "bob".into(),
            password_hash: "new".into(),
        },
    ]);
    assert_eq!(
        decide(&state, stale, 0),
        Err(Rejection::CredentialsInvalid("bob".into()))
    );
}

#[test]
fn a_revoked_user_cannot_insert() {
    let state = state_after([
        created("bob", "t"),
        Command::RevokeUser {
            username: "bob".into(),
        },
    ]);
    assert_eq!(
        decide(&state, insert(&state, "bob", "e", 10), 0),
        Err(Rejection::CredentialsInvalid("bob".into()))
    );
}

#[test]
fn event_names_must_not_break_sse_framing() {
    let state = state_after([created("bob", "t")]);
    assert!(matches!(
        decide(&state, insert(&state, "bob", "a\nb", 10), 0),
        Err(Rejection::Invalid(_))
    ));
}

#[test]
fn a_new_event_name_beyond_the_tenants_limit_is_refused_but_known_names_go_on() {
    let mut state = state_after([created("bob", "t")]);
    for name in ["a", "b"] {
        for record in decide(&state, insert(&state, "bob", name, 2), 0).unwrap() {
            evolve(&mut state, &record);
        }
    }
    assert_eq!(
        decide(&state, insert(&state, "bob", "c", 2), 0),
        Err(Rejection::TooManyEventNames(2))
    );
    assert!(decide(&state, insert(&state, "bob", "a", 2), 0).is_ok());
}

#[test]
fn admin_commands_on_an_unknown_user_are_refused() {
    let state = State::default();
    for command in [
        Command::RevokeUser {
            username: "ghost".into(),
        },
        Command::UnrevokeUser {
            username: "ghost".into(),
        },
        Command::ChangePassword {
            username: "ghost".into(),
            password_hash: "h".into(),
        },
        Command::IssueResetCode {
            username: "ghost".into(),
            code_hash: [0; 32],
            expires_ms: 1,
        },
        Command::DeleteUser {
            username: "ghost".into(),
        },
    ] {
        assert_eq!(
            decide(&state, command, 0),
            Err(Rejection::UnknownUser("ghost".into()))
        );
    }
}

#[test]
fn an_update_with_a_password_writes_one_record() {
    let state = state_after([created("bob", "t")]);
    let records = decide(
        &state,
        Command::UpdateUser {
            update: UserUpdated {
                username: "bob".into(),
                ..Default::default()
            },
            password_hash: Some("new".into()),
        },
        0,
    )
    .unwrap();
    // One record: a crash cannot keep the update and lose the password, or the reverse.
    assert_eq!(records.len(), 1);
    assert!(matches!(
        &records[0].kind,
        RecordKind::UserUpdatedWithPassword { update, password_hash }
            if update.username == "bob" && password_hash == "new"
    ));
    let mut after = state.clone();
    for record in &records {
        crate::state::evolve(&mut after, record);
    }
    let bob = after.user("bob").unwrap();
    assert_eq!(bob.credential_epoch, records[0].cursor);
    assert_eq!(bob.password_hash.phc(), "new");
}

#[test]
fn a_login_code_logs_in_once() {
    let state = state_after([
        created("bob", "t"),
        Command::UseLoginCode {
            username: "bob".into(),
            step: 10,
        },
    ]);
    for step in [9, 10] {
        assert_eq!(
            decide(
                &state,
                Command::UseLoginCode {
                    username: "bob".into(),
                    step
                },
                0
            ),
            Err(Rejection::CodeReused)
        );
    }
}

/// The state with one reset code issued for bob (at cursor 2), expiring a day after 0.
fn with_reset_code() -> State {
    state_after([
        created("bob", "t"),
        Command::IssueResetCode {
            username: "bob".into(),
            code_hash: [9; 32],
            expires_ms: DAY_MS,
        },
    ])
}

fn reset(code: u64) -> Command {
    Command::ResetPassword {
        username: "bob".into(),
        password_hash: "new".into(),
        code,
    }
}

#[test]
fn a_reset_code_works_only_while_it_is_the_live_one() {
    let state = with_reset_code();
    assert!(decide(&state, reset(2), 0).is_ok());
    assert_eq!(
        decide(&state, reset(1), 0),
        Err(Rejection::ResetCodeInvalid),
        "not the issued code"
    );
    assert_eq!(
        decide(&state, reset(2), DAY_MS),
        Err(Rejection::ResetCodeInvalid),
        "expired"
    );
}

#[test]
fn a_reset_code_works_once() {
    let mut state = with_reset_code();
    for record in decide(&state, reset(2), 0).unwrap() {
        evolve(&mut state, &record);
    }
    assert_eq!(
        decide(&state, reset(2), 0),
        Err(Rejection::ResetCodeInvalid)
    );
}

#[test]
fn five_wrong_codes_void_a_reset_code() {
    let mut state = with_reset_code();
    for _ in 0..crate::state::RESET_CODE_TRIES {
        let miss = Command::FailResetCode {
            username: "bob".into(),
            code: 2,
        };
        for record in decide(&state, miss, 0).unwrap() {
            evolve(&mut state, &record);
        }
    }
    assert_eq!(
        decide(&state, reset(2), 0),
        Err(Rejection::ResetCodeInvalid)
    );
}

#[test]
fn a_newer_reset_code_replaces_the_older() {
    let mut state = with_reset_code();
    let again = Command::IssueResetCode {
        username: "bob".into(),
        code_hash: [8; 32],
        expires_ms: DAY_MS,
    };
    for record in decide(&state, again, 0).unwrap() {
        evolve(&mut state, &record);
    }
    assert_eq!(
        decide(&state, reset(2), 0),
        Err(Rejection::ResetCodeInvalid)
    );
    assert!(decide(&state, reset(3), 0).is_ok());
}

#[test]
fn turning_two_factor_on_or_changing_scopes_moves_the_credential_epoch() {
    let state = state_after([created("bob", "t")]);
    let before = state.user("bob").unwrap().credential_epoch;
    for update in [
        UserUpdated {
            username: "bob".into(),
            two_factor: Some(true),
            ..Default::default()
        },
        UserUpdated {
            username: "bob".into(),
            scopes: Some(Some(vec!["news:get".into()])),
            ..Default::default()
        },
    ] {
        let mut moved = state.clone();
        for record in decide(
            &moved,
            Command::UpdateUser {
                update,
                password_hash: None,
            },
            0,
        )
        .unwrap()
        {
            evolve(&mut moved, &record);
        }
        assert!(moved.user("bob").unwrap().credential_epoch > before);
    }
}

/// A record as a foreign publisher to a shared log might write it.
fn created_record(username: &str) -> RecordKind {
    RecordKind::UserCreated(UserCreated {
        id: [1; 16],
        username: username.into(),
        tenant: "acme".into(),
        password_hash: "h".into(),
        email: None,
        scopes: None,
        data: None,
        two_factor: false,
        totp_secret: vec![1; 20],
    })
}

fn at(cursor: u64, kind: RecordKind) -> Record {
    Record {
        cursor,
        at_ms: 0,
        kind,
    }
}

#[test]
fn a_user_record_that_decide_would_refuse_does_not_hold() {
    let mut state = State::default();
    let ann = at(1, created_record("ann"));
    assert_eq!(
        recheck(&state, &ann, None, crate::state::TenantLimits::DEFAULT),
        Ok(())
    );
    evolve(&mut state, &ann);
    // A second creation of a taken name would replace the user wholesale.
    assert_eq!(
        recheck(
            &state,
            &at(2, created_record("ann")),
            None,
            crate::state::TenantLimits::DEFAULT
        ),
        Err(Rejection::UsernameTaken("ann".into()))
    );
    let change = |username: &str| {
        at(
            2,
            RecordKind::PasswordChanged {
                username: username.into(),
                password_hash: "h2".into(),
            },
        )
    };
    assert_eq!(
        recheck(
            &state,
            &change("ann"),
            None,
            crate::state::TenantLimits::DEFAULT
        ),
        Ok(())
    );
    assert_eq!(
        recheck(
            &state,
            &change("bob"),
            None,
            crate::state::TenantLimits::DEFAULT
        ),
        Err(Rejection::UnknownUser("bob".into()))
    );
    let revoke_bob = at(
        2,
        RecordKind::UserRevoked {
            username: "bob".into(),
        },
    );
    assert!(
        recheck(
            &state,
            &revoke_bob,
            None,
            crate::state::TenantLimits::DEFAULT
        )
        .is_err()
    );
}

fn keyed(state: &State, username: Option<&str>, event: &str, key: &str, id: u8) -> Command {
    Command::InsertEvent {
        by: match username {
            Some(u) => Author::User {
                username: u.into(),
                credential_epoch: state.user(u).map_or(0, |u| u.credential_epoch),
            },
            None => Author::Admin { tenant: "t".into() },
        },
        id: [id; 16],
        event: event.into(),
        data: "1".into(),
        name_limit: 10,
        snapshot_budget: usize::MAX,
        idempotency_key: Some(key.into()),
    }
}

fn fold(state: &mut State, decision: &Decision) {
    for record in decision.appended() {
        evolve(state, record);
    }
}

#[test]
fn a_retried_key_answers_the_earlier_insert_and_appends_nothing() {
    let mut state = state_after([created("bob", "t")]);
    let first = super::decide(&state, keyed(&state, Some("bob"), "e", "k", 1), 10).unwrap();
    fold(&mut state, &first);
    let earlier = first.appended()[0].clone();
    let again = super::decide(&state, keyed(&state, Some("bob"), "e", "k", 2), 20).unwrap();
    let Decision::Duplicate(answer) = again else {
        panic!("not a duplicate: {again:?}")
    };
    assert_eq!(
        (answer.cursor, answer.at_ms),
        (earlier.cursor, earlier.at_ms)
    );
    assert_eq!(answer.kind, earlier.kind, "same id, same event");
}

#[test]
fn a_key_reused_for_another_request_is_refused() {
    let mut state = state_after([created("bob", "t")]);
    let first = super::decide(&state, keyed(&state, Some("bob"), "e", "k", 1), 10).unwrap();
    fold(&mut state, &first);
    assert_eq!(
        super::decide(&state, keyed(&state, Some("bob"), "other", "k", 2), 20),
        Err(Rejection::KeyReused)
    );
}

#[test]
fn keys_belong_to_their_caller_and_expire_after_the_window() {
    let mut state = state_after([created("bob", "t"), created("ann", "t")]);
    state.idempotency.window_ms = DAY_MS;
    let first = super::decide(&state, keyed(&state, Some("bob"), "e", "k", 1), 10).unwrap();
    fold(&mut state, &first);
    for (caller, at) in [(Some("ann"), 20), (None, 20), (Some("bob"), 10 + DAY_MS)] {
        let decision = super::decide(&state, keyed(&state, caller, "e", "k", 2), at).unwrap();
        assert!(
            matches!(decision, Decision::Append(_)),
            "{caller:?} at {at}: {decision:?}"
        );
    }
}

#[test]
fn the_admin_inserts_into_any_tenant_with_no_author() {
    let state = State::default();
    let records = decide(&state, keyed(&state, None, "e", "k", 1), 0).unwrap();
    let RecordKind::EventInserted(e) = &records[0].kind else {
        panic!("not an insert")
    };
    assert_eq!((e.tenant.as_str(), e.by.as_deref()), ("t", None));
    let bad_tenant = Command::InsertEvent {
        by: Author::Admin {
            tenant: String::new(),
        },
        id: [1; 16],
        event: "e".into(),
        data: "1".into(),
        name_limit: 10,
        snapshot_budget: usize::MAX,
        idempotency_key: None,
    };
    assert!(matches!(
        decide(&state, bad_tenant, 0),
        Err(Rejection::Invalid(_))
    ));
}

#[test]
fn a_duplicate_two_nodes_both_appended_does_not_hold() {
    let mut state = state_after([created("bob", "t")]);
    let first = super::decide(&state, keyed(&state, Some("bob"), "e", "k", 1), 10).unwrap();
    // Both nodes decided on the same state; the stream orders one after the other.
    let second = super::decide(&state, keyed(&state, Some("bob"), "e", "k", 2), 11).unwrap();
    let mut late = second.appended()[0].clone();
    late.cursor += 1;
    assert_eq!(
        recheck(
            &state,
            &first.appended()[0],
            None,
            crate::state::TenantLimits::DEFAULT
        ),
        Ok(())
    );
    fold(&mut state, &first);
    assert_eq!(
        recheck(&state, &late, None, crate::state::TenantLimits::DEFAULT),
        Err(Rejection::KeyReused)
    );
}

fn delete(username: &str) -> Command {
    Command::DeleteUser {
        username: username.into(),
    }
}

#[test]
fn a_deleted_user_is_gone_and_their_name_is_free_again() {
    let state = state_after([created("bob", "t"), delete("bob")]);
    assert!(state.user("bob").is_none());
    assert_eq!(
        decide(&state, delete("bob"), 0),
        Err(Rejection::UnknownUser("bob".into()))
    );
    assert!(decide(&state, created("bob", "t"), 0).is_ok());
}

#[test]
fn a_deleted_users_events_stay_and_they_cannot_insert() {
    let before = state_after([created("bob", "t")]);
    let stale = insert(&before, "bob", "e", 10);
    let state = state_after([
        created("bob", "t"),
        insert(&before, "bob", "e", 10),
        delete("bob"),
    ]);
    assert_eq!(state.snapshot("t").len(), 1);
    assert_eq!(
        decide(&state, stale, 0),
        Err(Rejection::CredentialsInvalid("bob".into()))
    );
}

#[test]
fn credentials_of_a_deleted_user_do_not_work_for_the_user_created_again() {
    let first = state_after([created("bob", "t")]);
    let old_epoch = first.user("bob").unwrap().credential_epoch;
    let again = state_after([created("bob", "t"), delete("bob"), created("bob", "t")]);
    assert!(!again.user("bob").unwrap().accepts(old_epoch));
}

#[test]
fn a_deletion_of_an_unknown_user_from_a_shared_log_does_not_hold() {
    let gone = at(
        1,
        RecordKind::UserDeleted {
            username: "bob".into(),
        },
    );
    assert_eq!(
        recheck(
            &State::default(),
            &gone,
            None,
            crate::state::TenantLimits::DEFAULT
        ),
        Err(Rejection::UnknownUser("bob".into()))
    );
}

/// An insert of `len` bytes of data as `event`, by `username` (`None`: the admin, into
/// tenant `t`), within a snapshot budget of `budget` bytes.
fn sized(state: &State, username: Option<&str>, event: &str, len: usize, budget: usize) -> Command {
    Command::InsertEvent {
        by: match username {
            Some(u) => Author::User {
                username: u.into(),
                credential_epoch: state.user(u).map_or(0, |u| u.credential_epoch),
            },
            None => Author::Admin { tenant: "t".into() },
        },
        id: [3; 16],
        event: event.into(),
        data: "7".repeat(len),
        name_limit: 10,
        snapshot_budget: budget,
        idempotency_key: None,
    }
}

/// Decides `command` and folds what it appends; the rejection if it is refused.
fn apply(state: &mut State, command: Command) -> Result<(), Rejection> {
    let decision = super::decide(state, command, 1_000)?;
    fold(state, &decision);
    Ok(())
}

/// [`apply`]s a [`sized`] insert.
fn put(
    state: &mut State,
    username: Option<&str>,
    event: &str,
    len: usize,
    budget: usize,
) -> Result<(), Rejection> {
    let command = sized(state, username, event, len, budget);
    apply(state, command)
}

/// The bytes of `tenant`'s latest events, and the length of `event`'s latest data.
fn snapshot_bytes(state: &State, tenant: &str, event: &str) -> (usize, Option<usize>) {
    let latest = state.tenant_latest(tenant, event);
    (latest.bytes, latest.replaced)
}

/// Finding A of an attack review: only the name count bounded what a tenant's latest events
/// hold, so 10,000 names of 1 MiB each kept 10 GiB per tenant for good.
#[test]
fn the_bytes_of_a_tenants_latest_data_are_bounded_and_a_replacement_counts_once() {
    // Each name costs its length and NAME_ENTRY_BYTES besides its data.
    let n = 1 + crate::state::projection::NAME_ENTRY_BYTES;
    let budget = 300 + 3 * n;
    let mut state = state_after([created("bob", "t"), created("ann", "u")]);
    for name in ["a", "b"] {
        put(&mut state, Some("bob"), name, 100, budget).unwrap();
    }
    assert_eq!(snapshot_bytes(&state, "t", "a"), (200 + 2 * n, Some(100)));
    // A new name past the budget, by a user or by the admin: refused, nothing changes.
    for by in [Some("bob"), None] {
        assert_eq!(
            put(&mut state, by, "c", 101, budget),
            Err(Rejection::SnapshotTooLarge(budget)),
            "{by:?}"
        );
    }
    assert_eq!(snapshot_bytes(&state, "t", "c"), (200 + 2 * n, None));
    // Exactly at the budget is within it.
    put(&mut state, None, "c", 100, budget).unwrap();
    // A replacement counts the old data out: growing `a` by 1 would pass it, shrinking
    // `a` makes room, but a new name needs room for itself too.
    assert_eq!(
        put(&mut state, Some("bob"), "a", 101, budget),
        Err(Rejection::SnapshotTooLarge(budget))
    );
    put(&mut state, Some("bob"), "a", 40, budget).unwrap();
    assert_eq!(
        put(&mut state, Some("bob"), "d", 60, budget),
        Err(Rejection::SnapshotTooLarge(budget)),
        "60 bytes of data freed, but the name costs more"
    );
    put(&mut state, Some("bob"), "b", 100 - n, budget).unwrap();
    put(&mut state, Some("bob"), "d", 60, budget).unwrap();
    assert_eq!(snapshot_bytes(&state, "t", "d"), (budget, Some(60)));
    assert_eq!(
        put(&mut state, Some("bob"), "d", 61, budget),
        Err(Rejection::SnapshotTooLarge(budget))
    );
    // Another tenant has a budget of its own.
    put(&mut state, Some("ann"), "a", 300, 300 + n).unwrap();
    assert_eq!(snapshot_bytes(&state, "u", "a"), (300 + n, Some(300)));
    // A retry of a keyed insert adds nothing: it is answered even at the budget.
    let mut keyed = sized(&state, Some("ann"), "a", 300, 300 + n);
    if let Command::InsertEvent {
        idempotency_key, ..
    } = &mut keyed
    {
        *idempotency_key = Some("k".into());
    }
    let first = super::decide(&state, keyed.clone(), 2_000);
    assert!(matches!(first, Ok(Decision::Append(_))), "{first:?}");
    fold(&mut state, &first.unwrap());
    let again = super::decide(&state, keyed, 2_001);
    assert!(matches!(again, Ok(Decision::Duplicate(_))), "{again:?}");
}

/// Finding 4 of another review: names were free, so 10,000 names of 255 bytes with one
/// byte of data each were counted as 10,000 bytes.
#[test]
fn a_new_name_costs_its_length_and_its_entry() {
    let mut state = state_after([created("bob", "t")]);
    let long = "n".repeat(255);
    let cost = 255 + crate::state::projection::NAME_ENTRY_BYTES;
    put(&mut state, Some("bob"), &long, 1, 1 + cost).unwrap();
    assert_eq!(snapshot_bytes(&state, "t", &long), (1 + cost, Some(1)));
    assert_eq!(
        put(&mut state, Some("bob"), "x", 1, 1 + cost + 65),
        Err(Rejection::SnapshotTooLarge(1 + cost + 65))
    );
}

#[test]
fn a_tenant_over_its_budget_still_loads_and_may_shrink_but_not_grow() {
    let n = 1 + crate::state::projection::NAME_ENTRY_BYTES;
    // Written under a larger budget (or before there was one): `evolve` never refuses.
    let mut state = state_after([created("bob", "t")]);
    for name in ["a", "b", "c"] {
        put(&mut state, Some("bob"), name, 100, usize::MAX).unwrap();
    }
    assert_eq!(snapshot_bytes(&state, "t", "a").0, 300 + 3 * n);
    // Now the budget is 100: what adds bytes is refused, what adds none is not.
    assert_eq!(
        put(&mut state, Some("bob"), "d", 1, 100),
        Err(Rejection::SnapshotTooLarge(100))
    );
    assert_eq!(
        put(&mut state, Some("bob"), "a", 101, 100),
        Err(Rejection::SnapshotTooLarge(100))
    );
    put(&mut state, Some("bob"), "a", 100, 100).unwrap();
    put(&mut state, Some("bob"), "b", 10, 100).unwrap();
    assert_eq!(snapshot_bytes(&state, "t", "a").0, 210 + 3 * n);
}

/// Finding B of an attack review: keys were kept by username and outlived the user, so a
/// user created again under the name was answered with the old user's insert (nothing
/// stored), or got a 422 that told which keys the old user had sent.
#[test]
fn a_user_created_again_does_not_inherit_the_deleted_users_idempotency_keys() {
    let mut state = state_after([created("bob", "t")]);
    let bob_inserts = |state: &mut State, at_ms: i64, data: &str| {
        let mut command = keyed(state, Some("bob"), "e", "order-1", 1);
        if let Command::InsertEvent { data: d, .. } = &mut command {
            *d = data.into();
        }
        let decision = super::decide(state, command, at_ms).unwrap();
        fold(state, &decision);
        decision
    };
    let first = bob_inserts(&mut state, 10, "1");
    let Decision::Append(first) = first else {
        panic!("not stored: {first:?}")
    };
    for command in [delete("bob"), created("bob", "t")] {
        apply(&mut state, command).unwrap();
    }
    assert!(
        state.idempotency.is_empty(),
        "the deleted user's keys are gone"
    );
    // The same request: stored anew, not answered with the old user's insert.
    let again = bob_inserts(&mut state, 20, "1");
    let Decision::Append(again) = again else {
        panic!("answered with the old user's insert: {again:?}")
    };
    assert!(again[0].cursor > first[0].cursor);
    // Another tenant, another body: stored, not a 422 about the old user's key.
    for command in [delete("bob"), created("bob", "other")] {
        apply(&mut state, command).unwrap();
    }
    let elsewhere = bob_inserts(&mut state, 30, "2");
    assert!(matches!(elsewhere, Decision::Append(_)), "{elsewhere:?}");
}

/// An admin insert record of `len` bytes of data as `event` into tenant `t`, as a shared
/// stream may deliver it, decided by no node (or by one against an older fold).
fn stream_insert(cursor: u64, event: &str, len: usize) -> Record {
    at(
        cursor,
        RecordKind::EventInserted(EventInserted {
            id: [cursor as u8; 16],
            tenant: "t".into(),
            event: event.into(),
            data: "7".repeat(len),
            by: None,
            idempotency_key: None,
        }),
    )
}

/// Seventh attack review: records published to a shared stream by anyone but a node took a
/// tenant's latest events past both limits on every node. `recheck` holds them as `decide`
/// does, as of every earlier record.
#[test]
fn a_stream_record_past_a_tenants_limits_does_not_hold() {
    let limits = crate::state::TenantLimits {
        event_names: 3,
        snapshot_bytes: 1_000,
    };
    let n = crate::state::projection::NAME_ENTRY_BYTES + 2;
    let mut state = State::default();
    for (cursor, event) in [(1, "e1"), (2, "e2")] {
        let record = stream_insert(cursor, event, 300);
        assert_eq!(recheck(&state, &record, None, limits), Ok(()));
        evolve(&mut state, &record);
    }
    // 600 + 2n held: a third name of 300 bytes would pass 1,000.
    assert_eq!(
        recheck(&state, &stream_insert(3, "e3", 300), None, limits),
        Err(Rejection::SnapshotTooLarge(1_000))
    );
    // Within the budget it passes, and a replacement that adds nothing always does.
    let fits = 1_000 - 600 - 3 * n;
    assert_eq!(
        recheck(&state, &stream_insert(3, "e3", fits), None, limits),
        Ok(())
    );
    evolve(&mut state, &stream_insert(3, "e3", fits));
    assert_eq!(
        recheck(&state, &stream_insert(4, "e1", 300), None, limits),
        Ok(())
    );
    // A fourth name is past the name limit, however small.
    assert_eq!(
        recheck(&state, &stream_insert(4, "e4", 0), None, limits),
        Err(Rejection::TooManyEventNames(3))
    );
}

/// Seventh attack review: a stream record could create a user whose name has invisible or
/// direction characters, or insert an event under a name Broker keeps for itself; `decide`
/// refuses both for new names, and now so does `recheck`.
#[test]
fn a_stream_record_with_a_name_decide_refuses_does_not_hold() {
    let limits = crate::state::TenantLimits::DEFAULT;
    let state = State::default();
    for name in ["zero\u{200b}width", "bidi\u{202e}txt"] {
        assert!(matches!(
            recheck(&state, &at(1, created_record(name)), None, limits),
            Err(Rejection::Invalid(_))
        ));
    }
    assert!(matches!(
        recheck(&state, &stream_insert(1, "broker.closed", 1), None, limits),
        Err(Rejection::Invalid(_))
    ));
    assert_eq!(
        recheck(&state, &stream_insert(1, "closed", 1), None, limits),
        Ok(())
    );
}
