//! SSE against the real binary: snapshot then live, exact resume across restarts, tenant
//! isolation, reset frames, catch-up from the log, keep-alives.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn quick_start_snapshot_then_live_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    assert_eq!(create_user(&c, &s, "alice", "pw-alice", "acme").await, 200);
    let jwt = login(&c, &s, "alice", "pw-alice").await;
    let (status, first) = insert(&c, &s, &jwt, "temperature", json!({"c": 20})).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["id"].as_str().unwrap().len() == 36);
    insert(&c, &s, &jwt, "humidity", json!(40)).await;
    let (_, latest) = insert(&c, &s, &jwt, "temperature", json!({"c": 21})).await;

    let mut sse = Sse::open(&s, &jwt, None).await;
    let headers = sse.resp.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let retry = sse.next_frame(WAIT).await.unwrap();
    assert_eq!(retry.retry.as_deref(), Some("3000"));

    // Snapshot: the latest event per name, in cursor order.
    let snapshot = sse.take(2, WAIT).await;
    assert_eq!(snapshot[0].event.as_deref(), Some("humidity"));
    assert_eq!(snapshot[0].json(), json!(40));
    assert_eq!(snapshot[1].event.as_deref(), Some("temperature"));
    assert_eq!(snapshot[1].json(), json!({"c": 21}));
    assert_eq!(snapshot[1].cursor(), latest["cursor"].as_u64().unwrap());

    // Live, in order, ids are the cursors the inserts returned.
    let mut cursors = Vec::new();
    for i in 0..20 {
        let (status, body) = insert(
            &c,
            &s,
            &jwt,
            "counter",
            json!({"i": i, "text": "line\nbreak"}),
        )
        .await;
        assert_eq!(status, 200);
        cursors.push(body["cursor"].as_u64().unwrap());
    }
    let live = sse.take(20, WAIT).await;
    for (i, frame) in live.iter().enumerate() {
        assert_eq!(frame.event.as_deref(), Some("counter"));
        assert_eq!(frame.json(), json!({"i": i, "text": "line\nbreak"}));
        assert_eq!(frame.cursor(), cursors[i]);
    }
}

#[tokio::test]
async fn last_event_id_resumes_exactly_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "bob", "pw-bob", "t").await;
    let jwt = login(&c, &s, "bob", "pw-bob").await;
    for i in 0..10 {
        insert(&c, &s, &jwt, &format!("e{}", i % 3), json!(i)).await;
    }
    let mut sse = Sse::open(&s, &jwt, Some("0")).await;
    let seen = sse.take(10, WAIT).await;
    let data: Vec<_> = seen.iter().map(|f| f.json()).collect();
    assert_eq!(data, (0..10).map(|i| json!(i)).collect::<Vec<_>>());
    let resume_at = seen[6].id.clone().unwrap();
    drop(sse);

    assert_eq!(s.terminate(), Some(0), "graceful stop:\n{}", s.stderr());
    let s = Server::start(dir.path(), &[]);
    // The JWT survives a restart: same secret, same credential epoch.
    for i in 10..15 {
        let (status, _) = insert(&c, &s, &jwt, "late", json!(i)).await;
        assert_eq!(status, 200);
    }
    let mut sse = Sse::open(&s, &jwt, Some(&resume_at)).await;
    let missed = sse.take(8, WAIT).await;
    let data: Vec<_> = missed.iter().map(|f| f.json()).collect();
    assert_eq!(data, (7..15).map(|i| json!(i)).collect::<Vec<_>>());
    let cursors: Vec<u64> = missed.iter().map(Frame::cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    // Nothing more (no duplicate), until a new insert arrives live.
    insert(&c, &s, &jwt, "after", json!("x")).await;
    let next = sse.next_event(WAIT).await.unwrap();
    assert_eq!(next.json(), json!("x"));

    // The query parameter form works too.
    let resp = reqwest::Client::new()
        .get(s.url(&format!("/sse?last_event_id={}", cursors[6])))
        .header("authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::from_response(resp);
    let tail = sse.take(2, WAIT).await;
    assert_eq!(tail[0].json(), json!(14));
    assert_eq!(tail[1].json(), json!("x"));
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "a1", "pw", "tenant-a").await;
    create_user(&c, &s, "b1", "pw", "tenant-b").await;
    let ja = login(&c, &s, "a1", "pw").await;
    let jb = login(&c, &s, "b1", "pw").await;
    insert(&c, &s, &ja, "secret", json!("a-before")).await;

    let mut sb = Sse::open(&s, &jb, None).await;
    let mut sb_resume = Sse::open(&s, &jb, Some("0")).await;
    for i in 0..5 {
        insert(&c, &s, &ja, "secret", json!(format!("a-{i}"))).await;
    }
    insert(&c, &s, &jb, "mine", json!("b-1")).await;
    // B's first event, snapshot or live, resumed or not, is its own.
    for sse in [&mut sb, &mut sb_resume] {
        let frame = sse.next_event(WAIT).await.unwrap();
        assert_eq!(frame.json(), json!("b-1"));
        assert_eq!(frame.event.as_deref(), Some("mine"));
    }
    // And a fresh subscriber of B gets a snapshot with only B's event.
    let mut fresh = Sse::open(&s, &jb, None).await;
    let frame = fresh.next_event(WAIT).await.unwrap();
    assert_eq!(frame.json(), json!("b-1"));
    insert(&c, &s, &ja, "secret", json!("a-last")).await;
    insert(&c, &s, &jb, "mine", json!("b-2")).await;
    assert_eq!(fresh.next_event(WAIT).await.unwrap().json(), json!("b-2"));
}

#[tokio::test]
async fn unusable_resume_points_get_a_reset_frame_then_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "r", "pw", "t").await;
    let jwt = login(&c, &s, "r", "pw").await;
    insert(&c, &s, &jwt, "x", json!(1)).await;
    insert(&c, &s, &jwt, "x", json!(2)).await;
    for bad in ["not-a-number", "999999"] {
        let mut sse = Sse::open(&s, &jwt, Some(bad)).await;
        let reset = sse.next_event(WAIT).await.unwrap();
        assert_eq!(reset.event.as_deref(), Some("broker.reset"), "{bad}");
        assert!(reset.id.is_none());
        let snap = sse.next_event(WAIT).await.unwrap();
        assert_eq!((snap.event.as_deref(), snap.json()), (Some("x"), json!(2)));
    }
}

#[tokio::test]
async fn a_subscriber_far_behind_catches_up_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny in-memory ring forces every older event to come from the segment files, and
    // tiny segments make the reader cross segment boundaries.
    let s = Server::start(
        dir.path(),
        &["--sse_buffer", "4", "--segment_bytes", "4096"],
    );
    let c = client();
    create_user(&c, &s, "slow", "pw", "t").await;
    create_user(&c, &s, "other", "pw", "u").await;
    let jwt = login(&c, &s, "slow", "pw").await;
    let other = login(&c, &s, "other", "pw").await;
    for i in 0..300 {
        insert(&c, &s, &jwt, "n", json!(i)).await;
        insert(&c, &s, &other, "n", json!(-i)).await;
    }
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    assert!(segments > 3, "only {segments} segments");
    let mut sse = Sse::open(&s, &jwt, Some("0")).await;
    let all = sse.take(300, WAIT).await;
    let data: Vec<_> = all.iter().map(|f| f.json()).collect();
    assert_eq!(data, (0..300).map(|i| json!(i)).collect::<Vec<_>>());
    insert(&c, &s, &jwt, "n", json!("live")).await;
    assert_eq!(sse.next_event(WAIT).await.unwrap().json(), json!("live"));
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--sse_keepalive_secs", "1"]);
    let c = client();
    create_user(&c, &s, "k", "pw", "t").await;
    let jwt = login(&c, &s, "k", "pw").await;
    let mut sse = Sse::open(&s, &jwt, None).await;
    let _retry = sse.next_frame(WAIT).await.unwrap();
    let frame = sse.next_frame(Duration::from_secs(5)).await.unwrap();
    assert!(frame.comment, "{frame:?}");
}

#[tokio::test]
async fn basic_auth_subscribes_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "basic", "pw:with:colons", "t").await;
    let resp = c
        .get(s.url("/sse"))
        .basic_auth("basic", Some("pw:with:colons"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = Sse::from_response(resp);
    let (status, _) = post_raw(
        &c,
        s.url("/insert"),
        json!({"event": "b", "data": true}).to_string(),
        Some("Basic YmFzaWM6cHc6d2l0aDpjb2xvbnM="),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sse.next_event(WAIT).await.unwrap().json(), json!(true));
}

/// Open streams as `/server_stats` counts them.
async fn open_streams(c: &reqwest::Client, s: &Server) -> u64 {
    let (status, stats) = post(c, s.url("/server_stats"), json!({"admin_token": ADMIN})).await;
    assert_eq!(status, 200, "{stats}");
    stats["sse_subscribers"].as_u64().expect("sse_subscribers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_frees_its_stream_at_once_not_at_the_next_keepalive() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // Keep-alives far apart: only noticing the close itself can free the stream in time.
    let s = Server::start(dir.path(), &["--sse_keepalive_secs", "60"]);
    let c = client();
    create_user(&c, &s, "leaver", "pw", "t").await;
    let jwt = login(&c, &s, "leaver", "pw").await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        raw,
        "GET /sse HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\n\r\n"
    )
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 512];
    let n = raw.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert_eq!(open_streams(&c, &s).await, 1);
    drop(raw);
    let mut left = 1;
    for _ in 0..50 {
        left = open_streams(&c, &s).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the departed client's stream is still open");
}

#[tokio::test]
async fn refused_streams_get_a_json_error_and_other_requests_share_the_port() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let addr = s.base.trim_start_matches("http://").to_owned();
    // A stream without credentials is answered whole, as JSON, and the connection closed.
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.write_all(b"GET /sse HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(error["error"].as_str().is_some(), "{body}");
    // Two pipelined requests starting with /sse-like paths still reach hyper intact.
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.write_all(b"GET /ssex HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout_but_streams_are_not() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--idle_timeout_secs", "2", "--sse_keepalive_secs", "1"],
    );
    let c = client();
    create_user(&c, &s, "idler", "pw", "t").await;
    let jwt = login(&c, &s, "idler", "pw").await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).unwrap() > 0);
    let stream = Sse::open(&s, &jwt, None).await;
    let started = std::time::Instant::now();
    // The idle one is closed by the server (EOF) within the timeout plus slack...
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(8) {
        match idle.read(&mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(
        closed,
        "an idle keep-alive connection outlived --idle_timeout_secs"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // ...while the stream, kept busy by keep-alive comments, is still open. (A new client:
    // the old one's pooled connection was idle too, and is gone.)
    assert_eq!(open_streams(&client(), &s).await, 1);
    drop(stream.resp);
}
