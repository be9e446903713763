//! `decide`'s rules, one test each, named after the rule it pins.

use super::*;
use crate::state::record::{UserCreated, UserUpdated};
use crate::state::{Command, State, evolve};

const DAY_MS: i64 = 86_400_000;

fn created(username: &str, tenant: &str) -> Command {
    Command::CreateUser(UserCreated {
        id: [1; 16],
        username: username.into(),
        tenant: tenant.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        email: None,
        scopes: vec![],
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
        username: username.into(),
        credential_epoch: state.user(username).map_or(0, |u| u.credential_epoch),
        id: [2; 16],
        event: event.into(),
        data: "1".into(),
        name_limit,
    }
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
fn an_update_with_a_password_writes_two_records() {
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
    assert_eq!(records.len(), 2);
    assert!(matches!(
        records[1].kind,
        RecordKind::PasswordChanged { .. }
    ));
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
            scopes: Some(vec!["news:get".into()]),
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
        scopes: vec![],
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
    assert_eq!(recheck(&state, &ann, None), Ok(()));
    evolve(&mut state, &ann);
    // A second creation of a taken name would replace the user wholesale.
    assert_eq!(
        recheck(&state, &at(2, created_record("ann")), None),
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
    assert_eq!(recheck(&state, &change("ann"), None), Ok(()));
    assert_eq!(
        recheck(&state, &change("bob"), None),
        Err(Rejection::UnknownUser("bob".into()))
    );
    let revoke_bob = at(
        2,
        RecordKind::UserRevoked {
            username: "bob".into(),
        },
    );
    assert!(recheck(&state, &revoke_bob, None).is_err());
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
        recheck(&State::default(), &gone, None),
        Err(Rejection::UnknownUser("bob".into()))
    );
}
