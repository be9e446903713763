//! The log interface (`engine::LogBackend`: append → cursors, read from a cursor, await
//! "committed up to N") keeps one contract on both of its logs: the embedded segmented log,
//! and a NATS JetStream stream (a real nats-server on a loopback port). The same checks run
//! against each; a shared stream is then checked for what only several writers can do: an
//! insert that the stream ordered after its author's revocation or password change is dropped
//! by every node.
//!
//! The JetStream half needs nats-server: a plain `cargo nextest run` lists it as skipped, and
//! `scripts/test.sh` installs it and runs it (`common::tools`).

use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::engine::{Engine, EngineError, EngineOptions, FsyncPolicy, Start, StreamOptions};
use broker::log::Cursor;
use broker::state::record::{EventInserted, UserCreated};
use broker::state::{Author, Command, Record, RecordKind, Rejection, State};
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

/// A well-formed Argon2id PHC string (of no password used here): every node's fold refuses
/// records whose hash is not one.
const PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";

fn open(dir: &Path, shared: bool) -> Engine {
    open_reporting(dir, shared).0
}

fn open_reporting(dir: &Path, shared: bool) -> (Engine, broker::engine::OpenReport) {
    let options = EngineOptions {
        dir: dir.join("log"),
        fsync: FsyncPolicy::Always,
        segment_bytes: 4096,
        recent_per_tenant: 16,
        recent_bytes_per_tenant: 1 << 20,
        min_free_bytes: 0,
        checkpoints: Some(dir.join("checkpoints")),
        checkpoint_records: 1000,
        checkpoint_interval: Duration::from_secs(3600),
        shared,
        idempotency_window_ms: broker::state::idempotency::DEFAULT_WINDOW_MS,
        tenant_limits: broker::state::TenantLimits::DEFAULT,
    };
    Engine::open(options, Arc::new(|| 1_700_000_000_000)).unwrap()
}

fn create(username: &str, tenant: &str) -> Command {
    Command::CreateUser(UserCreated {
        id: [7; 16],
        username: username.into(),
        tenant: tenant.into(),
        password_hash: PHC.into(),
        email: None,
        scopes: None,
        data: None,
        two_factor: false,
        totp_secret: vec![1; 20],
    })
}

fn insert(engine: &Engine, username: &str, i: u8) -> Command {
    Command::InsertEvent {
        by: Author::User {
            username: username.into(),
            credential_epoch: engine
                .read(|s| s.user(username).map(|u| u.credential_epoch).unwrap()),
        },
        id: [i; 16],
        event: "tick".into(),
        data: format!("{{\"i\":{i}}}"),
        name_limit: 10_000,
        snapshot_budget: usize::MAX,
        idempotency_key: None,
    }
}

/// Every record of the log above `after` that `read_from` yields before `upto` is reached.
async fn read_upto(engine: &Engine, after: Cursor, upto: Cursor) -> Vec<Record> {
    let mut batches = engine.backend().unwrap().read_from(after);
    let mut records: Vec<Record> = Vec::new();
    while records.last().map_or(after, |r| r.cursor) < upto {
        let batch = tokio::time::timeout(WAIT, batches.next())
            .await
            .expect("read_from stalled")
            .expect("read_from ended")
            .expect("read_from failed");
        records.extend(batch.into_iter().map(|entry| entry.into_record().unwrap()));
    }
    records
}

/// The contract both logs keep. `engine` writes to a log that holds nothing of `prefix`'s
/// users yet.
async fn contract(engine: &Engine, prefix: &str) {
    let log = engine.backend().unwrap();
    let ann = format!("{prefix}ann");
    let start = log.committed(0).await.unwrap();

    // Append: each command's records come back with cursors, strictly increasing.
    let mut written = engine.submit(create(&ann, "acme")).await.unwrap();
    for i in 0..5 {
        written.extend(engine.submit(insert(engine, &ann, i)).await.unwrap());
    }
    assert_eq!(written.len(), 6);
    assert!(written[0].cursor > start);
    assert!(written.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let last = written.last().unwrap().cursor;

    // A refusal stores nothing.
    let refused = engine.submit(create(&ann, "other")).await;
    assert!(
        matches!(
            refused,
            Err(EngineError::Rejected(Rejection::UsernameTaken(_)))
        ),
        "{refused:?}"
    );
    assert_eq!(log.committed(0).await.unwrap(), last);

    // Committed: reached at once for what is stored; read: exactly what append returned.
    assert_eq!(
        tokio::time::timeout(WAIT, log.committed(last))
            .await
            .unwrap()
            .unwrap(),
        last
    );
    assert_eq!(read_upto(engine, start, last).await, written);
    assert_eq!(
        read_upto(engine, written[2].cursor, last).await,
        written[3..]
    );

    // Read and committed wait for what is not written yet, and see it once it is.
    let mut tail = log.read_from(last);
    let waiting = log.committed(last + 1);
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "committed({}) resolved before anything was written",
        last + 1
    );
    let next = engine.submit(insert(engine, &ann, 9)).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap(),
        next[0].cursor
    );
    let batch = tokio::time::timeout(WAIT, tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let batch: Vec<Record> = batch
        .into_iter()
        .map(|e| e.into_record().unwrap())
        .collect();
    assert_eq!(batch, next);

    // The projections hold what was appended.
    let latest = engine.read(|s| s.latest["acme"]["tick"].data.to_string());
    assert_eq!(latest, "{\"i\":9}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), false);
    assert_eq!(engine.backend().unwrap().kind(), "embedded");
    contract(&engine, "").await;
    engine.shutdown().await;
}

/// One nats-server with JetStream on a loopback port.
struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    fn start(binary: &Path, dir: &Path) -> Nats {
        let port = crate::common::free_port();
        let child = Process::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-js", "-sd", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stream_options(nats: &Nats, stream: &str) -> StreamOptions {
    StreamOptions {
        servers: vec![nats.url.clone()],
        name: stream.into(),
        replicas: 1,
        auth: Default::default(),
        tls: None,
    }
}

async fn attached(dir: &Path, nats: &Nats, stream: &str) -> Engine {
    let engine = open(dir, true);
    assert!(
        engine.backend().is_err(),
        "a shared-log engine writes nowhere before it is attached"
    );
    engine
        .attach_stream(&stream_options(nats, stream))
        .await
        .unwrap();
    assert_eq!(engine.backend().unwrap().kind(), "jetstream");
    engine
}

/// An insert into tenant `acme` by `username`, as a node would publish it (cursor 0: the
/// stream's sequence becomes its cursor).
fn raw_insert(username: &str, data: &str) -> Record {
    Record {
        cursor: 0,
        at_ms: 1_700_000_000_000,
        kind: RecordKind::EventInserted(EventInserted {
            id: [42; 16],
            tenant: "acme".into(),
            event: "tick".into(),
            data: data.into(),
            by: Some(username.into()),
            idempotency_key: None,
        }),
    }
}

/// Publishes `record` straight to the `contract` stream, as a node that decided it on a
/// stale view would (with the credential epoch header when given); returns its sequence.
async fn publish_raw(
    js: &async_nats::jetstream::Context,
    record: &Record,
    epoch: Option<Cursor>,
) -> Cursor {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(epoch) = epoch {
        headers.insert("Broker-Credential-Epoch", epoch.to_string().as_str());
    }
    let subject = format!("contract.event.{}", hex("acme"));
    publish_bytes(js, subject, headers, record.encode()).await
}

/// Publishes `payload` under `subject`, as anyone allowed to publish to the stream could;
/// returns its sequence.
async fn publish_bytes(
    js: &async_nats::jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> Cursor {
    js.publish_with_headers(subject, headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

#[ignore = "needs nats-server (scripts/test.sh installs it and runs this)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_stream_keeps_the_same_contract_and_drops_inserts_made_with_outdated_credentials()
 {
    let binary = crate::common::tools::nats_server();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&binary, &dir.path().join("nats"));
    let a = attached(&dir.path().join("a"), &nats, "contract").await;
    contract(&a, "").await;

    // A second node on the same stream sees the same records, and keeps the contract too.
    let b = attached(&dir.path().join("b"), &nats, "contract").await;
    let head = a.backend().unwrap().committed(0).await.unwrap();
    assert_eq!(b.cursor(), head);
    assert_eq!(read_upto(&b, 0, head).await, read_upto(&a, 0, head).await);
    contract(&b, "b-").await;

    // An insert decided on a stale view — here written straight to the stream after its
    // author's revocation, as a node that had not yet folded the revocation would — is
    // stored by JetStream but dropped by every node's fold: no projection, no local copy,
    // no subscriber ever sees it. It carries the epoch ann authenticated in, as every
    // node's user insert does (one without is no record of a node's: see below).
    let ann_epoch = a.read(|s| s.user("ann").unwrap().credential_epoch);
    let revoked = a
        .submit(Command::RevokeUser {
            username: "ann".into(),
        })
        .await
        .unwrap()[0]
        .cursor;
    tokio::time::timeout(WAIT, b.committed(revoked))
        .await
        .unwrap()
        .unwrap();
    let mut sse = b.subscribe("acme", Start::After(revoked), None, None);
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stale = raw_insert("ann", "{\"stale\":true}");
    let seq = publish_raw(&js, &stale, Some(ann_epoch)).await;
    assert_eq!(seq, revoked + 1);
    // A later, valid insert by another user proves both nodes read past it.
    let bob = a.submit(create("bob", "acme")).await.unwrap()[0].cursor;
    let after = a.submit(insert(&a, "bob", 1)).await.unwrap()[0].cursor;
    for node in [&a, &b] {
        tokio::time::timeout(WAIT, node.committed(after))
            .await
            .unwrap()
            .unwrap();
        let (data, cursor) = node.read(|s: &State| {
            let latest = &s.latest["acme"]["tick"];
            (latest.data.to_string(), latest.cursor)
        });
        assert_eq!((data.as_str(), cursor), ("{\"i\":1}", after));
        let mut local = Vec::new();
        node.log()
            .read_after(revoked, after, |c, _| {
                local.push(c);
                true
            })
            .unwrap();
        assert_eq!(
            local,
            [bob, after],
            "the local copy holds the dropped insert"
        );
    }
    let mut text = String::new();
    while !text.contains("id: ") {
        let chunk = tokio::time::timeout(WAIT, sse.next(Duration::from_secs(600)))
            .await
            .expect("no frame reached the subscriber")
            .expect("the subscription ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("stale"), "{text}");
    assert!(text.contains(&format!("id: {after}")), "{text}");

    // A password change: an insert authenticated before it (its epoch travels beside the
    // record as a message header) is dropped; one authenticated after it is kept.
    let old_epoch = a.read(|s| s.user("bob").unwrap().credential_epoch);
    let changed = a
        .submit(Command::ChangePassword {
            username: "bob".into(),
            password_hash: PHC.into(),
        })
        .await
        .unwrap()[0]
        .cursor;
    let mut published = Vec::new();
    for (epoch, data) in [(old_epoch, "{\"old\":true}"), (changed, "{\"new\":true}")] {
        published.push(publish_raw(&js, &raw_insert("bob", data), Some(epoch)).await);
    }
    let kept = published[1];
    for node in [&a, &b] {
        tokio::time::timeout(WAIT, node.committed(kept))
            .await
            .unwrap()
            .unwrap();
        let latest = node.read(|s| {
            let l = &s.latest["acme"]["tick"];
            (l.cursor, l.data.to_string())
        });
        assert_eq!(latest, (kept, "{\"new\":true}".to_owned()));
        let mut local = Vec::new();
        node.log()
            .read_after(after, kept, |c, _| {
                local.push(c);
                true
            })
            .unwrap();
        assert_eq!(
            local,
            [changed, kept],
            "the local copy holds the dropped insert"
        );
    }
    assert_eq!(a.metrics().dropped_inserts.get(), 2);

    // A node started afterwards folds the stream from the beginning and drops both too.
    let late = attached(&dir.path().join("late"), &nats, "contract").await;
    assert_eq!(
        late.read(|s| s.latest["acme"]["tick"].cursor),
        kept,
        "a late node kept a dropped insert"
    );
    assert_eq!(late.metrics().dropped_inserts.get(), 2);

    // A user's insert without the epoch header was written by no node: skipped as no
    // valid record (it was checked for revocation only, an attack review).
    let bare = publish_raw(&js, &raw_insert("bob", "{\"bare\":true}"), None).await;
    for node in [&a, &b, &late] {
        tokio::time::timeout(WAIT, node.committed(bare))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(node.read(|s| s.latest["acme"]["tick"].cursor), kept);
        assert_eq!(node.metrics().rejected_records.get(), 1);
    }
    // One stamped far after the stream stored it was stamped by no node: skipped alike.
    let bob_epoch = a.read(|s| s.user("bob").unwrap().credential_epoch);
    let mut future = raw_insert("bob", "{\"future\":true}");
    future.at_ms = i64::MAX;
    let future = publish_raw(&js, &future, Some(bob_epoch)).await;
    for node in [&a, &b, &late] {
        tokio::time::timeout(WAIT, node.committed(future))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(node.read(|s| s.latest["acme"]["tick"].cursor), kept);
        assert_eq!(node.metrics().rejected_records.get(), 2);
    }

    // The stream's newest record is one every node drops: the local copies end before it,
    // and the checkpoints stored at shutdown are at it.
    let last = publish_raw(&js, &stale, Some(ann_epoch)).await;
    for node in [&a, &b, &late] {
        tokio::time::timeout(WAIT, node.committed(last))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(node.cursor(), last);
    }
    for node in [a, b, late] {
        node.shutdown().await;
    }

    // `broker log verify` accepts the skipped cursor in each local copy: not a lost record.
    for name in ["a", "b", "late"] {
        let copy = dir.path().join(name).join("log");
        let (code, out, err) = crate::common::run_broker(&[
            "log",
            "verify",
            "--db",
            dir.path().join(name).to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{}: {out}{err}", copy.display());
        assert!(
            out.contains("local copy of a shared JetStream stream"),
            "{out}"
        );
    }
    // A local copy never starts as a standalone log: it would fork the shared history.
    let (code, _, err) = crate::common::run_broker(&[
        "--db",
        dir.path().join("a").to_str().unwrap(),
        "--port",
        "0",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("local copy of a shared JetStream stream"),
        "{err}"
    );

    // A restart still starts from that checkpoint (no replay), and goes on from the stream.
    let (a, report) = open_reporting(&dir.path().join("a"), true);
    assert_eq!(report.checkpoint, Some(last), "{report:?}");
    assert_eq!(report.checkpoint_ignored, None);
    assert_eq!(report.records, 0);
    a.attach_stream(&stream_options(&nats, "contract"))
        .await
        .unwrap();
    let next = a.submit(insert(&a, "bob", 3)).await.unwrap()[0].cursor;
    assert_eq!(next, last + 1);
    a.shutdown().await;
}

fn hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

#[ignore = "needs nats-server (scripts/test.sh installs it and runs this)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_racing_a_revocation_or_password_change_on_another_node_is_stored_only_if_ordered_before_it()
 {
    let binary = crate::common::tools::nats_server();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&binary, &dir.path().join("nats"));
    let a = attached(&dir.path().join("a"), &nats, "race").await;
    let b = attached(&dir.path().join("b"), &nats, "race").await;
    let (mut stored, mut refused) = (0, 0);
    let mut revocations = Vec::new();
    for round in 0..100 {
        let username = format!("u{round}");
        let created = a.submit(create(&username, "acme")).await.unwrap()[0].cursor;
        tokio::time::timeout(WAIT, b.committed(created))
            .await
            .unwrap()
            .unwrap();
        let command = insert(&a, &username, round as u8);
        // Even rounds revoke the author, odd rounds change their password: either way the
        // token the insert was made with stops being valid.
        let change = if round % 2 == 0 {
            Command::RevokeUser {
                username: username.clone(),
            }
        } else {
            Command::ChangePassword {
                username: username.clone(),
                password_hash: PHC.into(),
            }
        };
        let (revoke, inserted) = tokio::join!(b.submit(change), async {
            // Staggered so that the insert lands before, during and after the
            // revocation's round trips in different rounds.
            tokio::time::sleep(Duration::from_micros(200 * (round % 12))).await;
            a.submit(command).await
        });
        let revoked = revoke.unwrap()[0].cursor;
        match inserted {
            Ok(records) => {
                assert!(
                    records[0].cursor < revoked,
                    "round {round}: an insert at {} was acknowledged after the revocation at {revoked}",
                    records[0].cursor
                );
                stored += 1;
            }
            Err(EngineError::Rejected(Rejection::CredentialsInvalid(who))) => {
                assert_eq!(who, username);
                refused += 1;
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        revocations.push((username, revoked));
    }
    eprintln!(
        "{stored} inserts ordered before their revocation, {refused} refused ({} dropped by the fold)",
        a.metrics().dropped_inserts.get()
    );
    // Every node holds the same inserts, and none after its author's revocation.
    let head = a.backend().unwrap().committed(0).await.unwrap();
    let mut seen = Vec::new();
    for node in [&a, &b] {
        tokio::time::timeout(WAIT, node.committed(head))
            .await
            .unwrap()
            .unwrap();
        let mut inserts = Vec::new();
        node.log()
            .read_after(0, head, |cursor, payload| {
                if let RecordKind::EventInserted(e) = Record::decode(payload).unwrap().kind {
                    inserts.push((e.by.unwrap_or_default(), cursor));
                }
                true
            })
            .unwrap();
        for (username, cursor) in &inserts {
            let revoked = revocations.iter().find(|(u, _)| u == username).unwrap().1;
            assert!(
                cursor < &revoked,
                "{username}'s insert at {cursor} follows its revocation at {revoked}"
            );
        }
        assert_eq!(inserts.len(), stored);
        seen.push(inserts);
    }
    assert_eq!(seen[0], seen[1]);
    a.shutdown().await;
    b.shutdown().await;
}

/// A record as someone other than a node could publish it (cursor 0, like a node's).
fn forged(kind: RecordKind) -> Vec<u8> {
    Record {
        cursor: 0,
        at_ms: 1_700_000_000_000,
        kind,
    }
    .encode()
}

fn user_created(username: &str, tenant: &str, password_hash: &str) -> RecordKind {
    RecordKind::UserCreated(UserCreated {
        id: [9; 16],
        username: username.into(),
        tenant: tenant.into(),
        password_hash: password_hash.into(),
        email: None,
        scopes: None,
        data: None,
        two_factor: false,
        totp_secret: vec![9; 20],
    })
}

#[ignore = "needs nats-server (scripts/test.sh installs it and runs this)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_no_node_could_have_decided_are_skipped_alike_by_every_node() {
    let binary = crate::common::tools::nats_server();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&binary, &dir.path().join("nats"));
    let a = attached(&dir.path().join("a"), &nats, "forged").await;
    a.submit(create("ann", "acme")).await.unwrap();
    let start = a.submit(insert(&a, "ann", 1)).await.unwrap()[0].cursor;
    let b = attached(&dir.path().join("b"), &nats, "forged").await;
    let mut sse = b.subscribe("acme", Start::After(start), None, None);
    let ann_before = a.read(|s| s.user("ann").cloned().unwrap());

    // Straight to the stream, each under the subject a node would use, so that each is
    // refused for the reason named and not for its subject.
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let events = format!("forged.event.{}", hex("acme"));
    let user = |name: &str| format!("forged.user.{}", hex(name));
    let mut newline = raw_insert("ann", "{\"forged\":1}");
    if let RecordKind::EventInserted(e) = &mut newline.kind {
        // Would frame as `event: tick` + `data: {"forged":2}`, a second event of the forger's.
        e.event = "tick\ndata: {\"forged\":2}\n\nid: 999\nevent: tick".into();
    }
    let forgeries = [
        (events.clone(), newline.encode()),
        (
            user("mallory"),
            forged(user_created("mallory", "acme", "plain")),
        ),
        (
            user("nobody"),
            forged(RecordKind::PasswordChanged {
                username: "nobody".into(),
                password_hash: PHC.into(),
            }),
        ),
        (user("ann"), forged(user_created("ann", "evil", PHC))),
        (events.clone(), b"\x00garbage, not a record".to_vec()),
        // Valid, but under another subject than its user's: the compare-and-set on
        // `eve`'s subject would never see it.
        (events.clone(), forged(user_created("eve", "acme", PHC))),
    ];
    let mut refused = Vec::new();
    for (subject, payload) in forgeries {
        refused.push(publish_bytes(&js, subject, async_nats::HeaderMap::new(), payload).await);
    }
    assert_eq!(refused.first(), Some(&(start + 1)));

    // Both nodes go on folding what nodes publish after them.
    let after = a.submit(insert(&a, "ann", 2)).await.unwrap()[0].cursor;
    let bob = b.submit(create("bob", "acme")).await.unwrap()[0].cursor;
    // A refused message as the stream's newest: every node's cursor still reaches it.
    let last = publish_bytes(&js, events, async_nats::HeaderMap::new(), b"junk".to_vec()).await;
    refused.push(last);
    // Attaching returns once the node folded the whole stream: bounded, as a stall here is
    // exactly what is under test.
    let late = tokio::time::timeout(WAIT, attached(&dir.path().join("late"), &nats, "forged"))
        .await
        .expect("a node started after the refused messages stalled on them");

    let mut states = Vec::new();
    for node in [&a, &b, &late] {
        tokio::time::timeout(WAIT, node.committed(last))
            .await
            .expect("a node stalled on a refused message")
            .unwrap();
        assert_eq!(node.cursor(), last);
        assert_eq!(node.metrics().rejected_records.get(), refused.len() as u64);
        assert_eq!(node.metrics().dropped_inserts.get(), 0);
        let state = node.read(State::clone);
        let mut users: Vec<&str> = state.users.iter().map(|u| &*u.username).collect();
        users.sort_unstable();
        assert_eq!(users, ["ann", "bob"]);
        assert_eq!(state.user("ann"), Some(&ann_before));
        let names: Vec<&String> = state.latest["acme"].keys().collect();
        assert_eq!(names, ["tick"]);
        assert_eq!(state.latest["acme"]["tick"].cursor, after);
        let mut local = Vec::new();
        node.log()
            .read_after(start, last, |c, _| {
                local.push(c);
                true
            })
            .unwrap();
        assert_eq!(
            local,
            [after, bob],
            "the local copy holds a refused message"
        );
        states.push(state);
    }
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);

    let mut text = String::new();
    while !text.contains(&format!("id: {after}\n")) {
        let chunk = tokio::time::timeout(WAIT, sse.next(Duration::from_secs(600)))
            .await
            .expect("no frame reached the subscriber")
            .expect("the subscription ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("forged"), "{text}");
    assert!(!text.contains("id: 999"), "{text}");
    for node in [a, b, late] {
        node.shutdown().await;
    }
}

/// The cursors of the local copy of `node` in `(after, upto]`, waiting (bounded) until it has
/// folded up to `upto`.
async fn copy_after(node: &Engine, after: Cursor, upto: Cursor, wait: Duration) -> Vec<Cursor> {
    tokio::time::timeout(wait, node.committed(upto))
        .await
        .unwrap_or_else(|_| panic!("the node did not fold up to {upto} in {wait:?}"))
        .unwrap();
    let mut cursors = Vec::new();
    node.log()
        .read_after(after, upto, |cursor, _| {
            cursors.push(cursor);
            true
        })
        .unwrap();
    cursors
}

/// Issue 20: a node whose consumer falls silent mid-stream (it sat on a lost NATS server), or
/// cannot be created at all (JetStream's meta leader is being elected, or places it on a lost
/// server), reads the stream by batched direct gets: every record once and in order, messages
/// that are no record skipped as the consumer skips them, also one whose own headers claim
/// another sequence and the subject it should have had; back on a consumer it repeats nothing.
#[cfg(feature = "fault-injection")]
#[ignore = "needs nats-server (scripts/test.sh installs it and runs this)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_without_a_consumer_reads_by_direct_gets_once_in_order_and_skips_forgeries() {
    use broker::log::fault::switch;
    let binary = crate::common::tools::nats_server();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&binary, &dir.path().join("nats"));
    // Made by an older broker, without direct gets: the first node to attach allows them.
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "direct".into(),
        subjects: vec!["direct.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let a = attached(&dir.path().join("a"), &nats, "direct").await;
    let info = js.get_stream("direct").await.unwrap();
    assert!(info.cached_info().config.allow_direct);
    a.submit(create("ann", "acme")).await.unwrap();
    let start = a.submit(insert(&a, "ann", 1)).await.unwrap()[0].cursor;
    let mut sse = a.subscribe("acme", Start::After(start), None, None);
    let mut kept = Vec::new();

    // Mid-stream the consumer falls silent: the node's own writes are folded all the same.
    switch("nats:consumer_silent", true);
    for i in 2..=4 {
        kept.push(a.submit(insert(&a, "ann", i)).await.unwrap()[0].cursor);
    }
    assert_eq!(copy_after(&a, start, kept[2], WAIT).await, kept);
    // Read only by direct gets: bytes that are no record, and a record under the wrong subject
    // whose own headers claim sequence 1 and its user's subject (the server's own headers come
    // after them and must be the ones believed).
    let events = format!("direct.event.{}", hex("acme"));
    let mut lying = async_nats::HeaderMap::new();
    lying.insert("Nats-Sequence", "1");
    lying.insert(
        "Nats-Subject",
        format!("direct.user.{}", hex("eve")).as_str(),
    );
    let eve = forged(user_created("eve", "acme", PHC));
    let refused = [
        publish_bytes(&js, events.clone(), lying, eve).await,
        publish_bytes(&js, events, async_nats::HeaderMap::new(), b"junk".to_vec()).await,
    ];
    assert_eq!(refused, [kept[2] + 1, kept[2] + 2]);
    // No consumer can be created either: a node that starts now has direct gets alone.
    switch("nats:create_consumer", true);
    for i in 5..=7 {
        kept.push(a.submit(insert(&a, "ann", i)).await.unwrap()[0].cursor);
    }
    let late = tokio::time::timeout(WAIT, attached(&dir.path().join("late"), &nats, "direct"))
        .await
        .expect("a node without a consumer did not catch up");
    for node in [&a, &late] {
        assert_eq!(copy_after(node, start, kept[5], WAIT).await, kept);
        assert_eq!(node.cursor(), kept[5]);
        assert_eq!(node.metrics().rejected_records.get(), 2);
        let users: Vec<String> =
            node.read(|s| s.users.iter().map(|u| u.username.to_string()).collect());
        assert_eq!(users, ["ann"]);
    }

    // Consumers again: they start where the direct gets got to and repeat nothing.
    switch("nats:create_consumer", false);
    switch("nats:consumer_silent", false);
    for i in 8..=9 {
        kept.push(a.submit(insert(&a, "ann", i)).await.unwrap()[0].cursor);
    }
    let last = kept[7];
    for node in [&a, &late] {
        assert_eq!(copy_after(node, start, last, WAIT).await, kept);
        assert_eq!(node.metrics().rejected_records.get(), 2);
        assert_eq!(node.read(|s| s.latest["acme"]["tick"].cursor), last);
    }
    // The subscriber saw each insert once, in order.
    let mut text = String::new();
    while !text.contains(&format!("id: {last}\n")) {
        let chunk = tokio::time::timeout(WAIT, sse.next(Duration::from_secs(600)))
            .await
            .expect("no frame reached the subscriber")
            .expect("the subscription ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<Cursor> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(ids, kept);
    for node in [a, late] {
        node.shutdown().await;
    }
}

/// `ann`'s insert of `data` with the Idempotency-Key `pay-1`, as node `engine` decides it.
fn keyed_pay(engine: &Engine, id: u8, data: &str) -> Command {
    Command::InsertEvent {
        by: Author::User {
            username: "ann".into(),
            credential_epoch: engine.read(|s| s.user("ann").unwrap().credential_epoch),
        },
        id: [id; 16],
        event: "pay".into(),
        data: data.into(),
        name_limit: 100,
        snapshot_budget: usize::MAX,
        idempotency_key: Some("pay-1".into()),
    }
}

/// The cursors of the inserts with Idempotency-Key `key` in `node`'s local copy, up to `head`.
async fn keyed_in_copy(node: &Engine, head: Cursor, key: &str) -> Vec<(Cursor, [u8; 16])> {
    tokio::time::timeout(WAIT, node.committed(head))
        .await
        .unwrap()
        .unwrap();
    let mut found = Vec::new();
    node.log()
        .read_after(0, head, |cursor, payload| {
            if let RecordKind::EventInserted(e) = Record::decode(payload).unwrap().kind
                && e.idempotency_key.as_deref() == Some(key)
            {
                found.push((cursor, e.id));
            }
            true
        })
        .unwrap();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server (scripts/test.sh installs it and runs this)"]
async fn a_keyed_insert_sent_to_two_nodes_is_stored_once_and_answered_alike() {
    let binary = crate::common::tools::nats_server();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&binary, &dir.path().join("nats"));
    let a = attached(&dir.path().join("a"), &nats, "keyed").await;
    a.submit(create("ann", "acme")).await.unwrap();
    let b = attached(&dir.path().join("b"), &nats, "keyed").await;

    // The same retry reaches both nodes at once: the stream's duplicate window (Nats-Msg-Id
    // from caller and key) or the fold keeps one, and both nodes answer with it.
    let (on_a, on_b) = tokio::join!(
        a.submit(keyed_pay(&a, 1, "1")),
        b.submit(keyed_pay(&b, 2, "1"))
    );
    let answer = |records: Vec<Record>| {
        let record = records.last().cloned().unwrap();
        let RecordKind::EventInserted(e) = record.kind else {
            panic!("not an insert")
        };
        (record.cursor, e.id)
    };
    let (on_a, on_b) = (answer(on_a.unwrap()), answer(on_b.unwrap()));
    assert_eq!(on_a, on_b, "both nodes answer the one stored insert");

    // A duplicate that reached the stream anyway (a node that decided on a stale view, after
    // the stream's own window): every node's fold drops it.
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let mut late = raw_insert("ann", "1");
    if let RecordKind::EventInserted(e) = &mut late.kind {
        e.event = "pay".into();
        e.id = [3; 16];
        e.idempotency_key = Some("pay-1".into());
    }
    let late_seq = publish_bytes(
        &js,
        format!("keyed.event.{}", hex("acme")),
        async_nats::HeaderMap::new(),
        late.encode(),
    )
    .await;
    for node in [&a, &b] {
        assert_eq!(keyed_in_copy(node, late_seq, "pay-1").await, [on_a]);
    }

    // Retries on either node answer it; another body is refused on either.
    for node in [&a, &b] {
        let again = node.submit(keyed_pay(node, 4, "1")).await.unwrap();
        assert_eq!(answer(again), on_a);
        let other = node.submit(keyed_pay(node, 5, "2")).await;
        assert!(
            matches!(other, Err(EngineError::Rejected(Rejection::KeyReused))),
            "{other:?}"
        );
    }
    let head = a.backend().unwrap().committed(0).await.unwrap();
    assert_eq!(head, late_seq, "nothing more was stored");
    a.shutdown().await;
    b.shutdown().await;
}
