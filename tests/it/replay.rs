//! Replaying the log from scratch yields exactly the projections the live engine had, and
//! exactly what a pure fold of `decide`/`evolve` gives (proptest over random commands).

use std::sync::Arc;

use broker::engine::{Engine, EngineOptions, FsyncPolicy};
use broker::state::record::{UserCreated, UserUpdated};
use broker::state::{Author, Command, Decision, State, decide, evolve, recheck};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["ann", "ben", "cy", "dee"];
const TENANTS: [&str; 3] = ["t1", "t2", "t3"];
const EVENTS: [&str; 4] = ["a", "b", "c", "bad\nname"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize, usize, bool),
    Insert(usize, usize, i64),
    Revoke(usize),
    Unrevoke(usize),
    Password(usize),
    Move(usize, usize),
    Clear(usize),
    LoginCode(usize, u64),
    Reset(usize, u64),
    IssueCode(usize, i64),
    FailCode(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..3usize, any::<bool>()).prop_map(|(u, t, f)| Op::Create(u, t, f)),
        (0..4usize, 0..4usize, any::<i64>()).prop_map(|(u, e, d)| Op::Insert(u, e, d)),
        (0..4usize, 0..4usize, any::<i64>()).prop_map(|(u, e, d)| Op::Insert(u, e, d)),
        (0..4usize).prop_map(Op::Revoke),
        (0..4usize).prop_map(Op::Unrevoke),
        (0..4usize).prop_map(Op::Password),
        (0..4usize, 0..3usize).prop_map(|(u, t)| Op::Move(u, t)),
        (0..4usize).prop_map(Op::Clear),
        (0..4usize, 0..4u64).prop_map(|(u, s)| Op::LoginCode(u, s)),
        (0..4usize, 0..4u64).prop_map(|(u, s)| Op::Reset(u, s)),
        (0..4usize, 0..200i64).prop_map(|(u, e)| Op::IssueCode(u, e)),
        (0..4usize).prop_map(Op::FailCode),
    ]
}

/// The command for `op`, given the state the caller would have authenticated against.
fn command(op: &Op, state: &State) -> Command {
    match *op {
        Op::Create(u, t, two_factor) => Command::CreateUser(UserCreated {
            id: [u as u8; 16],
            username: NAMES[u].into(),
            tenant: TENANTS[t].into(),
            password_hash: format!("hash-{u}"),
            email: Some(format!("{}@example.com", NAMES[u])),
            scopes: Some(vec!["news:get".into()]),
            data: Some("{\"k\":1}".into()),
            two_factor,
            totp_secret: vec![u as u8; 20],
        }),
        Op::Insert(u, e, d) => Command::InsertEvent {
            by: Author::User {
                username: NAMES[u].into(),
                credential_epoch: state.user(NAMES[u]).map_or(0, |user| user.credential_epoch),
            },
            id: [e as u8; 16],
            event: EVENTS[e].into(),
            data: d.to_string(),
            // Two of the three valid names: the refusal of a third is exercised too.
            name_limit: 2,
            snapshot_budget: usize::MAX,
            idempotency_key: None,
        },
        Op::Revoke(u) => Command::RevokeUser {
            username: NAMES[u].into(),
        },
        Op::Unrevoke(u) => Command::UnrevokeUser {
            username: NAMES[u].into(),
        },
        Op::Password(u) => Command::ChangePassword {
            username: NAMES[u].into(),
            password_hash: format!("new-hash-{u}"),
        },
        Op::Move(u, t) => Command::UpdateUser {
            update: UserUpdated {
                username: NAMES[u].into(),
                tenant: Some(TENANTS[t].into()),
                scopes: Some(Some(vec![])),
                ..Default::default()
            },
            password_hash: None,
        },
        Op::Clear(u) => Command::UpdateUser {
            update: UserUpdated {
                username: NAMES[u].into(),
                email: Some(None),
                data: Some(None),
                two_factor: Some(false),
                ..Default::default()
            },
            password_hash: Some(format!("cleared-{u}")),
        },
        Op::LoginCode(u, step) => Command::UseLoginCode {
            username: NAMES[u].into(),
            step,
        },
        // Half the resets name the live code, half a guess.
        Op::Reset(u, guess) => Command::ResetPassword {
            username: NAMES[u].into(),
            password_hash: format!("reset-{u}-{guess}"),
            code: live_code(state, u)
                .filter(|_| guess % 2 == 0)
                .unwrap_or(guess),
        },
        Op::IssueCode(u, expires_ms) => Command::IssueResetCode {
            username: NAMES[u].into(),
            code_hash: [u as u8; 32],
            expires_ms,
        },
        Op::FailCode(u) => Command::FailResetCode {
            username: NAMES[u].into(),
            code: live_code(state, u).unwrap_or(0),
        },
    }
}

/// The cursor of user `u`'s live reset code, if any.
fn live_code(state: &State, u: usize) -> Option<u64> {
    state
        .user(NAMES[u])
        .and_then(|user| user.reset_code())
        .map(|code| code.issued)
}

fn open(dir: &std::path::Path) -> Engine {
    open_with(dir, true)
}

/// With checkpoints (every 5 records, and at shutdown), or replaying the whole log.
fn open_with(dir: &std::path::Path, checkpoints: bool) -> Engine {
    let options = EngineOptions {
        dir: dir.join("log"),
        fsync: FsyncPolicy::Never,
        segment_bytes: 4096,
        recent_per_tenant: 8,
        recent_bytes_per_tenant: 1 << 20,
        min_free_bytes: 0,
        checkpoints: checkpoints.then(|| dir.join("checkpoints")),
        checkpoint_records: 5,
        checkpoint_interval: std::time::Duration::from_secs(3600),
        shared: false,
        idempotency_window_ms: broker::state::idempotency::DEFAULT_WINDOW_MS,
        tenant_limits: broker::state::TenantLimits::DEFAULT,
    };
    Engine::open(options, Arc::new(|| 1_700_000_000_000))
        .unwrap()
        .0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replay_equals_live_state(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (live, pure) = rt.block_on(async {
            let engine = open(dir.path());
            let mut pure = State::default();
            for op in &ops {
                let cmd = command(op, &engine.read(State::clone));
                let outcome = engine.submit(cmd.clone()).await;
                let epoch = match &cmd {
                    Command::InsertEvent {
                        by: Author::User { credential_epoch, .. },
                        ..
                    } => Some(*credential_epoch),
                    _ => None,
                };
                // The pure fold decides the same way.
                match decide(&pure, cmd, 1_700_000_000_000).map(Decision::into_answer) {
                    Ok(records) => {
                        let written = outcome.expect("engine refused what decide accepts");
                        assert_eq!(written, records);
                        // What one writer decided always holds where it is stored: a
                        // shared log's fold never drops it (`recheck`).
                        for r in &records {
                            assert_eq!(
                                recheck(&pure, r, epoch, broker::state::TenantLimits::DEFAULT),
                                Ok(())
                            );
                            evolve(&mut pure, r);
                        }
                    }
                    Err(rejection) => assert!(outcome.is_err(), "engine accepted what decide refuses: {rejection}"),
                }
            }
            let live = engine.read(State::clone);
            engine.shutdown().await;
            (live, pure)
        });
        prop_assert_eq!(&live, &pure);
        let replayed = rt.block_on(async {
            let engine = open(dir.path());
            let state = engine.read(State::clone);
            engine.shutdown().await;
            state
        });
        prop_assert_eq!(&replayed, &live);
        // And from scratch, without the checkpoint.
        let full = rt.block_on(async {
            let engine = open_with(dir.path(), false);
            let state = engine.read(State::clone);
            engine.shutdown().await;
            state
        });
        prop_assert_eq!(&full, &live);
        // Cursors rise by one per record and end where the state says.
        let mut cursors = Vec::new();
        let reader_engine = rt.block_on(async { open(dir.path()) });
        reader_engine.log().read_after(0, u64::MAX, |c, _| { cursors.push(c); true }).unwrap();
        prop_assert_eq!(cursors, (1..=live.cursor).collect::<Vec<_>>());
        rt.block_on(reader_engine.shutdown());
    }
}
