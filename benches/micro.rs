//! Micro-benchmarks of the hot paths under the server: frames, record codec, log appends
//! under each fsync policy, full replay, and `decide` + `evolve` per command.
//!
//! `cargo bench --bench micro` (about two minutes); `cargo bench --bench micro -- replay` runs
//! one group. Every benchmark sets a throughput, so criterion prints bytes/s or records/s
//! next to the time per iteration. The end-to-end load generator is `broker-bench`.

use std::hint::black_box;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use broker::log::{self, LogWriter, frame};
use broker::state::record::{EventInserted, UserCreated};
use broker::state::{Author, Command, Record, RecordKind, State, decide, evolve, evolve_archived};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A well-formed Argon2id PHC string: hashing stays out of every benchmark, as it stays out
/// of the writer (handlers hash before they submit).
const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0MTIz$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

/// The server's default `--segment_bytes`.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const AT_MS: i64 = 1_700_000_000_000;

/// splitmix64: a fixed, dependency-free stream of "random" choices, the same on every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn user_created(n: usize, tenant: &str) -> UserCreated {
    UserCreated {
        id: uuid_like(n as u64),
        username: format!("user-{n:06}"),
        tenant: tenant.to_owned(),
        password_hash: PASSWORD_HASH.to_owned(),
        email: Some(format!("user-{n:06}@example.com")),
        scopes: Some(vec!["events:insert".into(), "events:subscribe".into()]),
        data: Some(r#"{"plan":"pro","region":"eu-west"}"#.into()),
        two_factor: false,
        totp_secret: vec![7; 20],
    }
}

fn event_inserted(tenant: &str, event: &str, username: &str, data: String) -> RecordKind {
    RecordKind::EventInserted(EventInserted {
        id: uuid_like(data.len() as u64),
        tenant: tenant.to_owned(),
        event: event.to_owned(),
        data,
        by: Some(username.to_owned()),
        idempotency_key: None,
    })
}

fn uuid_like(n: u64) -> [u8; 16] {
    let mut id = [0x42; 16];
    id[8..].copy_from_slice(&n.to_le_bytes());
    id
}

/// The rkyv payload of an `EventInserted` record of at least `target` bytes (padded JSON data).
fn event_payload(target: usize) -> Vec<u8> {
    (0..target)
        .map(|pad| {
            let data = format!(r#"{{"temp":21.5,"unit":"C","note":"{}"}}"#, "x".repeat(pad));
            Record {
                cursor: 1_234_567,
                at_ms: AT_MS,
                kind: event_inserted("tenant-0042", "sensor.reading", "user-000042", data),
            }
            .encode()
        })
        .find(|payload| payload.len() >= target)
        .expect("padding reaches any size")
}

/// Frames and the record codec, on an event payload of ~100 B and ~1 KiB.
fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    for target in [100, 1024] {
        let payload = event_payload(target);
        let size = format!("{}B", payload.len());
        let mut framed = Vec::new();
        frame::encode_into(&mut framed, &payload);
        let record = Record::decode(&payload).expect("valid payload");

        group.throughput(Throughput::Bytes(payload.len() as u64));
        let mut out = Vec::with_capacity(framed.len());
        group.bench_function(BenchmarkId::new("frame_encode", &size), |b| {
            b.iter(|| {
                out.clear();
                frame::encode_into(&mut out, black_box(&payload));
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::new("frame_decode", &size), |b| {
            b.iter(|| frame::decode(black_box(&framed)).expect("intact frame").1)
        });

        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("record_encode", &size), |b| {
            b.iter(|| black_box(&record).encode())
        });
        group.bench_function(BenchmarkId::new("record_decode", &size), |b| {
            b.iter(|| Record::decode(black_box(&payload)).expect("valid payload"))
        });
        group.bench_function(BenchmarkId::new("record_cursor_of", &size), |b| {
            b.iter(|| Record::cursor_of(black_box(&payload)).expect("valid payload"))
        });
    }
    group.finish();
}

/// How often a batch is made durable, as `engine::writer` decides it.
#[derive(Clone, Copy)]
enum Policy {
    Always,
    Interval(Duration),
    Never,
}

/// The batch loop of `engine::writer`: append the batch's frames, then one `flush`, with a
/// sync when the policy asks (interval: when the last sync is at least that old).
fn append(c: &mut Criterion) {
    let payload = event_payload(100);
    let cases = [
        ("always", Policy::Always, 1),
        ("always", Policy::Always, 64),
        (
            "interval_5ms",
            Policy::Interval(Duration::from_millis(5)),
            1,
        ),
        (
            "interval_5ms",
            Policy::Interval(Duration::from_millis(5)),
            64,
        ),
        ("never", Policy::Never, 1),
        ("never", Policy::Never, 64),
    ];
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, policy, batch) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = open_log(dir.path()).writer;
        let mut cursor = 0;
        let mut last_sync = Instant::now();
        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::new(name, format!("batch={batch}")), |b| {
            b.iter(|| {
                for _ in 0..batch {
                    cursor += 1;
                    writer.append(cursor, &payload).expect("append");
                }
                let sync = match policy {
                    Policy::Always => true,
                    Policy::Interval(every) => last_sync.elapsed() >= every,
                    Policy::Never => false,
                };
                writer.flush(sync).expect("flush");
                if sync {
                    last_sync = Instant::now();
                }
            })
        });
        drop(writer);
    }
    group.finish();
}

fn open_log(dir: &Path) -> log::Recovered {
    log::open(dir, Record::cursor_of, SEGMENT_BYTES, |_, _| {}).expect("open log")
}

const REPLAY_RECORDS: u64 = 200_000;

/// A log of [`REPLAY_RECORDS`] records: 300 users over 8 tenants created along the way, the
/// rest events of 2,000 names with 40–120 B of JSON data.
fn write_replay_log(dir: &Path) {
    const USERS: usize = 300;
    const TENANTS: usize = 8;
    let mut writer: LogWriter = open_log(dir).writer;
    let mut mix = Mix(7);
    let mut users: Vec<(String, String)> = Vec::new();
    for cursor in 1..=REPLAY_RECORDS {
        let kind = if users.is_empty() || (users.len() < USERS && mix.below(600) == 0) {
            let tenant = format!("tenant-{}", users.len() % TENANTS);
            let user = user_created(users.len(), &tenant);
            users.push((user.username.clone(), tenant));
            RecordKind::UserCreated(user)
        } else {
            let (username, tenant) = &users[mix.below(users.len())];
            let event = format!("sensor-{:04}.reading", mix.below(2000));
            let data = format!(
                r#"{{"seq":{cursor},"value":{},"tags":"{}"}}"#,
                mix.below(100_000),
                "t".repeat(mix.below(80))
            );
            event_inserted(tenant, &event, username, data)
        };
        let record = Record {
            cursor,
            at_ms: AT_MS + cursor as i64,
            kind,
        };
        writer.append(cursor, &record.encode()).expect("append");
        if cursor % 1024 == 0 {
            writer.flush(false).expect("flush");
        }
    }
    writer.flush(true).expect("flush");
}

/// Opening a log of [`REPLAY_RECORDS`] records (warm page cache), step by step: the log's own
/// scan (frame CRC + the `cursor_of` codec), plus `Record::decode`, plus `evolve` into a fresh
/// `State`; `scan_fold_archived` is what a start without a checkpoint does (each record read
/// in place by `evolve_archived`, most events never decoded). `evolve_only` folds records
/// decoded beforehand, to show what the fold alone costs.
fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(REPLAY_RECORDS));
    // Written when the first selected benchmark needs it: `-- decide` skips the work.
    let mut written: Option<tempfile::TempDir> = None;
    let mut log_dir = || {
        written
            .get_or_insert_with(|| {
                let dir = tempfile::tempdir().expect("temp dir");
                write_replay_log(dir.path());
                dir
            })
            .path()
            .to_owned()
    };
    group.bench_function("scan", |b| {
        let dir = log_dir();
        b.iter(|| {
            let mut seen = 0u64;
            replay_log(&dir, |_| seen += 1);
            assert_eq!(seen, REPLAY_RECORDS);
        })
    });
    group.bench_function("scan_decode", |b| {
        let dir = log_dir();
        b.iter(|| {
            let mut events = 0u64;
            replay_log(&dir, |payload| {
                let record = Record::decode(payload).expect("valid record");
                events += u64::from(record.tenant().is_some());
            });
            events
        })
    });
    group.bench_function("scan_decode_evolve", |b| {
        let dir = log_dir();
        b.iter(|| {
            let mut state = State::default();
            replay_log(&dir, |payload| {
                evolve(&mut state, &Record::decode(payload).expect("valid record"));
            });
            assert_eq!(state.cursor, REPLAY_RECORDS);
            state
        })
    });
    group.bench_function("scan_fold_archived", |b| {
        let dir = log_dir();
        b.iter(|| {
            let mut state = State::default();
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            replay_log(&dir, |payload| {
                let archived = Record::access_in(&mut aligned, payload).expect("valid record");
                evolve_archived(&mut state, archived).expect("valid record");
            });
            assert_eq!(state.cursor, REPLAY_RECORDS);
            state
        })
    });
    group.bench_function("evolve_only", |b| {
        let mut records = Vec::with_capacity(REPLAY_RECORDS as usize);
        replay_log(&log_dir(), |payload| {
            records.push(Record::decode(payload).expect("valid record"));
        });
        b.iter(|| {
            let mut state = State::default();
            records.iter().for_each(|record| evolve(&mut state, record));
            state
        })
    });
    group.finish();
}

/// `log::open`, handing every record's payload to `visit`.
fn replay_log(dir: &Path, mut visit: impl FnMut(&[u8])) {
    log::open(dir, Record::cursor_of, SEGMENT_BYTES, |_, payload| {
        visit(payload)
    })
    .expect("open log");
}

/// A state of `users` users spread over `tenants` tenants, each tenant holding a latest event
/// of [`NAMES_PER_TENANT`] names; with every user's name and credential epoch.
fn populated_state(users: usize, tenants: usize) -> (State, Vec<(String, u64)>) {
    let mut state = State::default();
    let mut known = Vec::with_capacity(users);
    for n in 0..users {
        let user = user_created(n, &format!("tenant-{:05}", n % tenants));
        known.push((user.username.clone(), state.cursor + 1));
        let records = decide(&state, Command::CreateUser(user), AT_MS)
            .expect("new user")
            .into_answer();
        records.iter().for_each(|r| evolve(&mut state, r));
    }
    for t in 0..tenants {
        let (username, _) = &known[t % users];
        for e in 0..NAMES_PER_TENANT {
            let record = Record {
                cursor: state.cursor + 1,
                at_ms: AT_MS,
                kind: event_inserted(
                    &format!("tenant-{t:05}"),
                    &format!("sensor-{e}.reading"),
                    username,
                    r#"{"value":1}"#.into(),
                ),
            };
            evolve(&mut state, &record);
        }
    }
    (state, known)
}

const NAMES_PER_TENANT: usize = 10;

/// Commands decided this many at a time between clock readings; building them (and undoing
/// created users) stays off the clock.
const CHUNK: u64 = 64;

/// Times `decide` + `evolve` of the commands `make(0..iters)`; `undo` runs after each chunk
/// with the range just applied, off the clock.
fn decide_evolve_timed(
    iters: u64,
    state: &mut State,
    mut make: impl FnMut(u64) -> Command,
    mut undo: impl FnMut(&mut State, Range<u64>),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut commands = Vec::with_capacity(CHUNK as usize);
    let mut done = 0;
    while done < iters {
        let chunk = done..iters.min(done + CHUNK);
        commands.extend(chunk.clone().map(&mut make));
        let start = Instant::now();
        for command in commands.drain(..) {
            let records = decide(state, command, AT_MS)
                .expect("accepted")
                .into_answer();
            for record in &records {
                evolve(state, record);
            }
            black_box(records);
        }
        elapsed += start.elapsed();
        done = chunk.end;
        undo(state, chunk);
    }
    elapsed
}

/// One command through the writer's rules, against small and large states: an event insert
/// (overwriting a tenant's latest event of that name) and a user creation (hash precomputed).
fn rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_evolve");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(2000))
        .throughput(Throughput::Elements(1));
    for (users, tenants) in [(10, 1), (100_000, 1), (100_000, 10_000)] {
        // Built when the first selected benchmark needs it.
        let mut populated = None;
        let label = format!("users={users},tenants={tenants}");

        let mut seq = 0u64;
        group.bench_function(BenchmarkId::new("insert_event", &label), |b| {
            let (state, known) = populated.get_or_insert_with(|| populated_state(users, tenants));
            b.iter_custom(|iters| {
                let make = |_: u64| {
                    seq += 1;
                    let (username, epoch) = &known[(seq * 7919) as usize % known.len()];
                    Command::InsertEvent {
                        by: Author::User {
                            username: username.clone(),
                            credential_epoch: *epoch,
                        },
                        id: uuid_like(seq),
                        event: format!("sensor-{}.reading", seq as usize % NAMES_PER_TENANT),
                        data: format!(r#"{{"seq":{seq},"value":21.5,"unit":"C"}}"#),
                        name_limit: usize::MAX,
                        snapshot_budget: usize::MAX,
                        idempotency_key: None,
                    }
                };
                decide_evolve_timed(iters, state, make, |_, _| {})
            })
        });

        let mut base = 0u64;
        group.bench_function(BenchmarkId::new("create_user", &label), |b| {
            let (state, _) = populated.get_or_insert_with(|| populated_state(users, tenants));
            b.iter_custom(|iters| {
                let first = users as u64 + 1 + base;
                base += iters;
                let make = |i: u64| {
                    let n = (first + i) as usize;
                    Command::CreateUser(user_created(n, &format!("tenant-{:05}", n % tenants)))
                };
                // Keep the state at its size: created users leave again, off the clock.
                let undo = |state: &mut State, done: Range<u64>| {
                    for i in done {
                        state.users.remove(&format!("user-{:06}", first + i));
                    }
                };
                decide_evolve_timed(iters, state, make, undo)
            });
            assert_eq!(state.users.len(), users, "created users were removed again");
        });
    }
    group.finish();
}

criterion_group!(benches, codec, append, replay, rules);
criterion_main!(benches);
