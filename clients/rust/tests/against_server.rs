//! broker-client against the real `broker` binary: each test starts its own server on a free
//! loopback port with a fresh data directory (and restarts it on the same port and data).
//!
//! The binary is `$BROKER_BIN`, else `broker` in the target directory this test runs from
//! (`cargo build -p broker` or `cargo nextest run --workspace` builds it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker_client::{
    Client, CloseReason, Error, Event, HistoryEvent, HistoryQuery, NewUser, SubscribeOptions,
    Subscription,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

const ADMIN: &str = "letmein";
/// The longest any single expected thing may take (a debug server on a busy 2-core machine).
const WAIT: Duration = Duration::from_secs(30);

/// Where the server binary is: `$BROKER_BIN`, or `broker` beside this test's `deps/` folder
/// (`target/<profile>/deps/<test>` → `target/<profile>/broker`), or under `$CARGO_TARGET_DIR`
/// or the workspace's `target/`.
fn broker_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BROKER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "BROKER_BIN={} is not a file", bin.display());
        return bin;
    }
    let name = format!("broker{}", std::env::consts::EXE_SUFFIX);
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        tried.push(profile_dir.join(&name));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        tried.push(PathBuf::from(dir).join("debug").join(&name));
    }
    tried.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/debug")
            .join(&name),
    );
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the broker binary is missing: build it first (`cargo build -p broker`) or set \
             BROKER_BIN; looked at {tried:?}"
            )
        })
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    db: PathBuf,
    base: String,
    flags: Vec<String>,
}

impl Server {
    /// Starts a server on `db` and `port` (0: a free one) and waits until it answers.
    fn start(db: &Path, port: u16) -> Server {
        Server::start_with(db, port, &[])
    }

    /// Like [`Server::start`], with extra flags (kept for restarts).
    fn start_with(db: &Path, port: u16, flags: &[&str]) -> Server {
        let port = if port == 0 { free_port() } else { port };
        // The port was free a moment ago; a restart may find it still held: retry a little.
        let deadline = Instant::now() + WAIT;
        loop {
            let log = std::fs::File::create(db.with_extension(format!("{port}.log"))).unwrap();
            let mut child = Command::new(broker_bin())
                .args([
                    "--listen",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--ntp",
                    "false",
                ])
                .arg("--db")
                .arg(db)
                .args(flags)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn broker");
            let base = format!("http://127.0.0.1:{port}");
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(db.with_extension(format!("{port}.log")))
                        .unwrap_or_default();
                    assert!(
                        Instant::now() < deadline,
                        "broker exited ({status}) without serving:\n{log}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Server {
                        child,
                        port,
                        db: db.to_owned(),
                        base,
                        flags: flags.iter().map(|f| f.to_string()).collect(),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("broker did not listen on {port} within {WAIT:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILL, then the same data on the same port.
    fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let flags = self.flags.clone();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        *self = Server::start_with(&self.db.clone(), self.port, &flags);
    }

    /// SIGTERM (streams get `broker.closed` `shutdown`), wait, then start again.
    fn stop_and_restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "broker did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let flags = self.flags.clone();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        *self = Server::start_with(&self.db.clone(), self.port, &flags);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Admin call with the `X-Admin-Token` header; panics unless 200.
async fn admin(server: &Server, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .header("x-admin-token", ADMIN)
        .json(&body)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn user(server: &Server, name: &str, tenant: &str) -> Client {
    admin(
        server,
        "/create_user",
        json!({"username": name, "password": "correct horse battery", "tenant_name": tenant}),
    )
    .await;
    let client = Client::new(&server.base).unwrap();
    client.login(name, "correct horse battery").await.unwrap();
    client
}

/// The next item, within [`WAIT`].
async fn next(sub: &mut Subscription) -> Result<Event, Error> {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("no event within the wait")
        .expect("the stream ended")
}

/// Fast reconnection, so restarts cost the tests little time.
fn quick(mut options: SubscribeOptions) -> SubscribeOptions {
    options.min_retry = Duration::from_millis(100);
    options.max_retry = Duration::from_secs(1);
    options
}

#[tokio::test]
async fn login_insert_history_refresh_and_subscribe_snapshot_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("db"), 0);
    let alice = user(&server, "alice", "acme").await;

    let a = alice
        .insert("temperature", json!({"celsius": 20}))
        .await
        .unwrap();
    let b = alice
        .insert("temperature", json!({"celsius": 21}))
        .await
        .unwrap();
    let c = alice.insert("door", "open").await.unwrap();
    assert!(a.cursor < b.cursor && b.cursor < c.cursor);

    // The same key twice: one event, the same answer.
    let k1 = alice
        .insert_with_key("order", json!({"id": 1}), "order-1")
        .await
        .unwrap();
    let k2 = alice
        .insert_with_key("order", json!({"id": 1}), "order-1")
        .await
        .unwrap();
    assert_eq!(k1, k2);
    let err = alice
        .insert_with_key("order", json!({"id": 2}), "order-1")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");

    let page = alice
        .history(&HistoryQuery {
            after: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    let cursors: Vec<u64> = page.events.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, vec![a.cursor, b.cursor, c.cursor, k1.cursor]);
    assert_eq!(page.events[0].by.as_deref(), Some("alice"));
    assert_eq!(page.head, k1.cursor);
    let newest = alice
        .history(&HistoryQuery {
            limit: Some(1),
            events: vec!["temperature".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.events.len(), 1);
    assert_eq!(newest.events[0].cursor, b.cursor);
    assert_eq!(newest.next, Some(b.cursor));

    // refresh swaps the JWT and the new one works.
    let before = alice.jwt().unwrap();
    let fresh = alice.refresh().await.unwrap();
    assert_eq!(alice.jwt(), Some(fresh));
    let _ = before;

    // Snapshot: the latest of each name, in cursor order; then live.
    let mut sub = alice.subscribe(quick(SubscribeOptions::default()));
    let snapshot: Vec<(u64, String)> = {
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = next(&mut sub).await.unwrap();
            got.push((e.cursor, e.event));
        }
        got
    };
    assert_eq!(
        snapshot,
        vec![
            (b.cursor, "temperature".into()),
            (c.cursor, "door".into()),
            (k1.cursor, "order".into())
        ]
    );
    let live = alice.insert("door", "closed").await.unwrap();
    let e = next(&mut sub).await.unwrap();
    assert_eq!(
        (e.cursor, e.event.as_str(), &e.data),
        (live.cursor, "door", &json!("closed"))
    );
    assert_eq!(sub.last_event_id(), Some(live.cursor));

    // Basic works as well; wrong credentials are a typed 401.
    let basic = Client::new(&server.base).unwrap();
    basic.use_basic("alice", "wrong");
    let err = basic.insert("x", 1).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    let nobody = Client::new(&server.base).unwrap();
    assert!(matches!(
        nobody.insert("x", 1).await.unwrap_err(),
        Error::Credentials(_)
    ));
}

/// Reads `n` events and checks their cursors are exactly `expected`.
async fn expect_cursors(sub: &mut Subscription, expected: &[u64]) {
    let mut got = Vec::new();
    for _ in expected {
        got.push(next(sub).await.unwrap().cursor);
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_subscription_resumes_across_restarts_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("db"), 0);
    let alice = user(&server, "alice", "acme").await;
    let first = alice.insert("n", 0).await.unwrap();
    let mut sub = alice.subscribe(quick(SubscribeOptions {
        last_event_id: Some(0),
        ..Default::default()
    }));
    // After Last-Event-ID 0: every event of the tenant, in order.
    expect_cursors(&mut sub, &[first.cursor]).await;

    let mut expected = Vec::new();
    for i in 1..=3 {
        expected.push(alice.insert("n", i).await.unwrap().cursor);
    }
    expect_cursors(&mut sub, &expected).await;

    // A clean stop: broker.closed shutdown, then a reconnect once the server is back.
    server.stop_and_restart();
    let mut expected = Vec::new();
    for i in 4..=6 {
        // The client's insert retries cover a server still starting.
        expected.push(alice.insert("n", i).await.unwrap().cursor);
    }
    expect_cursors(&mut sub, &expected).await;

    // A crash: the connection just drops; a few inserts are stored while the stream is down.
    server.crash_and_restart();
    let mut expected = Vec::new();
    for i in 7..=9 {
        expected.push(alice.insert("n", i).await.unwrap().cursor);
    }
    expect_cursors(&mut sub, &expected).await;

    // Nothing else is pending: the next event is a new one, not a repeat.
    let last = alice.insert("n", 10).await.unwrap();
    let e = next(&mut sub).await.unwrap();
    assert_eq!((e.cursor, e.data), (last.cursor, json!(10)));

    // History agrees: every event once, in order.
    let page = alice
        .history(&HistoryQuery {
            after: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    let values: Vec<Value> = page.events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(values, (0..=10).map(|i| json!(i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn filters_envelopes_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("db"), 0);
    let alice = user(&server, "alice", "acme").await;
    let mallory = user(&server, "mallory", "other").await;
    alice.insert("temperature", 20).await.unwrap();
    alice.insert("humidity", 40).await.unwrap();

    let mut sub = alice.subscribe(quick(SubscribeOptions {
        events: vec!["door".into(), "temperature".into()],
        envelope: true,
        ..Default::default()
    }));
    let e = next(&mut sub).await.unwrap();
    assert_eq!(e.event, "temperature");
    let envelope = e.envelope().unwrap();
    assert_eq!(
        (envelope.by.as_deref(), &envelope.data),
        (Some("alice"), &json!(20))
    );

    mallory.insert("door", "other tenant").await.unwrap();
    alice.insert("humidity", 41).await.unwrap();
    let door = alice.insert("door", "open").await.unwrap();
    let e = next(&mut sub).await.unwrap();
    assert_eq!((e.cursor, e.event.as_str()), (door.cursor, "door"));
    let envelope = e.envelope().unwrap();
    assert_eq!(envelope.data, json!("open"));
    assert!(!envelope.id.is_empty() && !envelope.at.is_empty());

    // A bad filter is refused for good: the stream ends with the server's 400.
    let mut bad = alice.subscribe(quick(SubscribeOptions {
        events: vec!["a\nb".into()],
        ..Default::default()
    }));
    let err = next(&mut bad).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        tokio::time::timeout(WAIT, bad.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends after a 400"
    );
}

#[tokio::test]
async fn a_revoked_users_stream_ends_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("db"), 0);
    let alice = user(&server, "alice", "acme").await;
    let bob = user(&server, "bob", "acme").await;
    let first = alice.insert("n", 1).await.unwrap();

    let mut alice_sub = alice.subscribe(quick(SubscribeOptions::default()));
    let mut bob_sub = bob.subscribe(quick(SubscribeOptions::default()));
    assert_eq!(next(&mut alice_sub).await.unwrap().cursor, first.cursor);
    assert_eq!(next(&mut bob_sub).await.unwrap().cursor, first.cursor);

    admin(&server, "/revoke_user", json!({"username": "alice"})).await;
    match next(&mut alice_sub).await {
        Err(Error::Closed { reason, .. }) => assert_eq!(reason, CloseReason::Revoked),
        other => panic!("expected the stream to close as revoked, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, alice_sub.next())
            .await
            .unwrap()
            .is_none(),
        "no reconnect after revocation"
    );

    // A deleted user's stream says so too; other users' streams go on.
    admin(&server, "/delete_user", json!({"username": "bob"})).await;
    let err = next(&mut bob_sub).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Closed {
                reason: CloseReason::Deleted,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("deleted"), "{err}");
}

#[tokio::test]
async fn an_insert_sent_while_the_server_is_down_is_retried_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("db"), 0);
    let setup = user(&server, "alice", "acme").await;
    // Enough retries (capped at 10 s apart) to outlast a restart on a busy machine.
    let alice = Client::with_insert_retries(&server.base, 12).unwrap();
    alice.use_jwt(&setup.jwt().unwrap());
    let before = alice.insert("n", 0).await.unwrap();

    let _ = server.child.kill();
    let _ = server.child.wait();
    let pending = tokio::spawn({
        let alice = alice.clone();
        async move { alice.insert("n", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "the insert must wait for the server"
    );
    let (db, port) = (server.db.clone(), server.port);
    let _server = tokio::task::spawn_blocking(move || Server::start(&db, port))
        .await
        .unwrap();
    let inserted = tokio::time::timeout(Duration::from_secs(90), pending)
        .await
        .expect("the insert did not finish")
        .unwrap()
        .unwrap();
    assert!(inserted.cursor > before.cursor);
    let page = alice
        .history(&HistoryQuery {
            after: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    let values: Vec<Value> = page.events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(values, vec![json!(0), json!(1)]);
}

#[tokio::test]
async fn the_admin_inserts_and_history_all_walks_every_page_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("db"), 0);
    let alice = user(&server, "alice", "acme").await;
    let mut cursors = Vec::new();
    for i in 0..25 {
        cursors.push(alice.insert("reading", i).await.unwrap().cursor);
    }
    // The admin's insert: no author, into alice's tenant, retried safely with its key.
    let by_admin = alice
        .admin_insert(ADMIN, "acme", "notice", "from the admin")
        .await
        .unwrap();
    cursors.push(by_admin.cursor);
    let wrong = alice
        .admin_insert("not the token", "acme", "notice", 1)
        .await;
    assert_eq!(wrong.unwrap_err().status(), Some(401));

    // Oldest first from `after`, seven a page: every event exactly once, in order.
    let oldest_first: Vec<HistoryEvent> = alice
        .history_all(HistoryQuery {
            after: Some(0),
            limit: Some(7),
            ..Default::default()
        })
        .map(Result::unwrap)
        .collect()
        .await;
    let seen: Vec<u64> = oldest_first.iter().map(|e| e.cursor).collect();
    assert_eq!(seen, cursors);
    let last = oldest_first.last().unwrap();
    assert_eq!((last.event.as_str(), last.by.as_deref()), ("notice", None));

    // Newest first without `after`, with a name filter.
    let newest_first: Vec<u64> = alice
        .history_all(HistoryQuery {
            limit: Some(4),
            events: vec!["reading".into()],
            ..Default::default()
        })
        .map(|e| e.unwrap().cursor)
        .collect()
        .await;
    let mut readings = cursors[..25].to_vec();
    readings.reverse();
    assert_eq!(newest_first, readings);
}

#[tokio::test]
async fn a_jwt_is_refreshed_before_it_expires_and_a_client_without_refresh_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Tokens live 3 s: a refresh is due after 2.4 s.
    let server = Server::start_with(dir.path(), 0, &["--jwt_expiry", "3"]);
    let client = user(&server, "fresh", "refresh").await;
    let first = client.jwt().unwrap();
    let stale = Client::new(&server.base).unwrap();
    stale.set_auto_refresh(false);
    stale.login("fresh", "correct horse battery").await.unwrap();
    let mut sub = client.subscribe(quick(SubscribeOptions::default()));
    // The stream opens now, with the first token.
    let opened = client.insert("tick", json!(0)).await.unwrap();
    assert_eq!(next(&mut sub).await.unwrap().cursor, opened.cursor);

    // Two lifetimes later the first token is dead, yet the client inserts and its
    // subscription, opened with the first token, goes on: the server ended that stream
    // (`expired`) and the subscription resumed with the refreshed token.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let now = client.jwt().unwrap();
    assert_ne!(now, first, "the JWT was not refreshed");
    let inserted = client.insert("tick", json!(1)).await.unwrap();
    let event = next(&mut sub).await.unwrap();
    assert_eq!(event.cursor, inserted.cursor);

    // Without refresh the same login is refused once its token expired.
    let refused = stale.insert("tick", json!(2)).await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    let refused = reqwest::Client::new()
        .post(format!("{}/insert", server.base))
        .bearer_auth(first.as_str())
        .json(&json!({"event": "tick", "data": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // A revoked user's refresh is refused: the client stops refreshing and says 401.
    admin(&server, "/revoke_user", json!({"username": "fresh"})).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = client.insert("tick", json!(4)).await.unwrap_err();
    assert_eq!(after.status(), Some(401), "{after}");
}

/// The example binary cargo built beside this test (`target/<profile>/examples/<name>`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: `cargo test -p broker-client` builds the examples (or `cargo build -p broker-client --examples`)",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_tail_example_prints_the_snapshot_then_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 0);
    let alice = user(&server, "alice", "acme").await;
    let first = alice
        .insert("temperature", json!({"celsius": 21}))
        .await
        .unwrap();
    let mut child = Command::new(example("tail"))
        .args([server.base.as_str(), "alice", "correct horse battery"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, read) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let line = |what: &str| {
        read.recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("the example printed no {what} within {WAIT:?}"))
    };
    assert_eq!(
        line("snapshot"),
        format!("{}\ttemperature\t{{\"celsius\":21}}", first.cursor)
    );
    let live = alice.insert("door", json!("open")).await.unwrap();
    assert_eq!(
        line("live event"),
        format!("{}\tdoor\t\"open\"", live.cursor)
    );
    let _ = child.kill();
    let _ = child.wait();

    // Wrong arguments: a usage line and a failure, not a hang.
    let out = Command::new(example("tail"))
        .arg(&server.base)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: tail"));
}

#[tokio::test]
async fn the_admin_manages_users_two_factor_and_reset_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 0);
    let client = Client::new(&server.base).unwrap();
    let admin = client.admin(ADMIN);
    let mut new = NewUser::new("dora", "first passphrase", "acme");
    new.email = Some("dora@example.com".into());
    new.scopes = Some(vec!["temperature:write".into()]);
    let id = admin.create_user(&new).await.unwrap();
    let dora = admin.get_user("dora").await.unwrap();
    assert_eq!(dora.id, id);
    assert_eq!(dora.tenant_name, "acme");
    assert_eq!(dora.email.as_deref(), Some("dora@example.com"));
    assert_eq!(dora.scopes, Some(vec!["temperature:write".to_owned()]));
    assert!(!dora.revoked && !dora.two_factor);
    let taken = admin.create_user(&new).await.unwrap_err();
    assert_eq!(taken.status(), Some(400), "{taken}");
    assert!(
        admin
            .list_users()
            .await
            .unwrap()
            .iter()
            .any(|u| u.username == "dora")
    );

    // An update clears with null and leaves absent fields alone; a non-object is refused
    // before anything is sent.
    let changed = admin
        .update_user("dora", json!({"email": null, "data": {"plan": "pro"}}))
        .await
        .unwrap();
    assert_eq!(changed.email, None);
    assert_eq!(changed.data, Some(json!({"plan": "pro"})));
    assert_eq!(changed.scopes, dora.scopes);
    assert!(matches!(
        admin.update_user("dora", json!(["email"])).await,
        Err(Error::Protocol(_))
    ));

    // Revoked: no login; unrevoked: login again.
    assert!(admin.revoke_user("dora").await.unwrap().revoked);
    let user = Client::new(&server.base).unwrap();
    let refused = user.login("dora", "first passphrase").await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    assert!(!admin.unrevoke_user("dora").await.unwrap().revoked);
    user.login("dora", "first passphrase").await.unwrap();

    // A reset code works once.
    let code = admin.create_totp("dora").await.unwrap();
    assert!(
        code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    user.password_reset("dora", &code, "second passphrase")
        .await
        .unwrap();
    let again = user
        .password_reset("dora", &code, "third passphrase")
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(401), "{again}");
    assert!(user.login("dora", "first passphrase").await.is_err());
    user.login("dora", "second passphrase").await.unwrap();

    let enrolment = admin.create_qr("dora", "Acme").await.unwrap();
    assert!(
        enrolment
            .uri
            .starts_with("otpauth://totp/Acme:dora?secret="),
        "{}",
        enrolment.uri
    );
    assert!(enrolment.qr.len() > 100);
    let inserted = admin
        .insert("acme", "maintenance", json!({"at": "22:00"}))
        .await
        .unwrap();
    assert!(inserted.cursor > 1);

    // A wrong token is refused, and never printed.
    let wrong = client.admin("not the token");
    let refused = wrong.get_user("dora").await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    let shown = format!("{wrong:?} {admin:?}");
    assert!(
        !shown.contains("not the token") && !shown.contains(ADMIN),
        "{shown}"
    );

    admin.delete_user("dora").await.unwrap();
    assert_eq!(
        admin.get_user("dora").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        admin.delete_user("dora").await.unwrap_err().status(),
        Some(404)
    );
}
