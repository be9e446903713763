//! Why a stream ends (issue 18): before the server closes a stream it sends `event:
//! broker.closed` with `data: {"reason": …}` — `revoked`, `credentials_changed` (password or
//! tenant) or `shutdown` — on both ways a stream is served: straight off the socket
//! (`server::streams`, every plain `GET /sse`) and through hyper (anything else, here a head
//! with more headers than the direct path parses).

use std::time::Duration;

use crate::common::*;
use serde_json::json;

/// Opens `/sse` with `jwt`; `via_hyper` pads the head past what `server::streams` takes.
async fn open(s: &Server, jwt: &str, via_hyper: bool) -> Sse {
    let mut req = reqwest::Client::new()
        .get(s.url("/sse"))
        .header("authorization", format!("Bearer {jwt}"));
    if via_hyper {
        for i in 0..70 {
            req = req.header(format!("x-pad-{i}"), "1");
        }
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    Sse::from_response(resp)
}

/// Reads until the stream ends; returns its last frame, which must be the only
/// `broker.closed` one.
async fn last_frame(stream: &mut Sse) -> Frame {
    let mut last: Option<Frame> = None;
    while let Some(frame) = stream.next_frame(WAIT).await {
        if let Some(previous) = &last {
            assert_ne!(
                previous.event.as_deref(),
                Some("broker.closed"),
                "a frame after broker.closed: {frame:?}"
            );
        }
        last = Some(frame);
    }
    last.expect("frames before the end")
}

async fn admin(c: &reqwest::Client, s: &Server, path: &str, mut body: serde_json::Value) {
    body["admin_token"] = json!(ADMIN);
    let (status, reply) = post(c, s.url(path), body).await;
    assert_eq!(status, 200, "{path}: {reply}");
}

#[tokio::test]
async fn revocation_and_credential_changes_say_why_the_stream_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    for via_hyper in [false, true] {
        for (user, change, reason) in [
            ("r", json!(null), "revoked"),
            ("p", json!({"password": "new-pw"}), "credentials_changed"),
            (
                "t",
                json!({"tenant_name": "elsewhere"}),
                "credentials_changed",
            ),
        ] {
            let user = format!("{user}{via_hyper}");
            assert_eq!(create_user(&c, &s, &user, "pw", "t").await, 200);
            let jwt = login(&c, &s, &user, "pw").await;
            let (_, reply) = insert(&c, &s, &jwt, "e", json!(1)).await;
            let cursor = reply["cursor"].as_u64().unwrap();
            let mut stream = open(&s, &jwt, via_hyper).await;
            assert!(stream.next_event(WAIT).await.is_some(), "the snapshot");
            if change.is_null() {
                admin(&c, &s, "/revoke_user", json!({"username": user})).await;
            } else {
                let mut body = change.clone();
                body["username"] = json!(user);
                admin(&c, &s, "/update_user", body).await;
            }
            let last = last_frame(&mut stream).await;
            let ctx = format!("{user} via_hyper={via_hyper}: {last:?}");
            assert_eq!(last.event.as_deref(), Some("broker.closed"), "{ctx}");
            assert_eq!(last.json()["reason"], reason, "{ctx}");
            assert!(last.cursor() >= cursor, "{ctx}");
            // Replay: the old token opens nothing any more (401, no frame).
            let resp = reqwest::Client::new()
                .get(s.url("/sse"))
                .header("authorization", format!("Bearer {jwt}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{ctx}");
        }
    }
}

/// A stream that never carried an event still ends with its reason.
#[tokio::test]
async fn a_quiet_stream_still_says_why_it_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "quiet", "pw", "t").await;
    let jwt = login(&c, &s, "quiet", "pw").await;
    let mut stream = open(&s, &jwt, false).await;
    admin(&c, &s, "/revoke_user", json!({"username": "quiet"})).await;
    let last = last_frame(&mut stream).await;
    assert_eq!(last.event.as_deref(), Some("broker.closed"), "{last:?}");
    assert_eq!(last.json()["reason"], "revoked", "{last:?}");
}

#[tokio::test]
async fn shutdown_says_so_through_hyper_too_and_other_users_streams_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "stay", "pw", "t").await;
    create_user(&c, &s, "go", "pw", "t").await;
    let stay = login(&c, &s, "stay", "pw").await;
    let go = login(&c, &s, "go", "pw").await;
    let mut direct = open(&s, &stay, false).await;
    let mut hyper = open(&s, &stay, true).await;
    // Another user's revocation ends only that user's streams.
    let mut other = open(&s, &go, false).await;
    admin(&c, &s, "/revoke_user", json!({"username": "go"})).await;
    assert_eq!(last_frame(&mut other).await.json()["reason"], "revoked");
    let (_, reply) = insert(&c, &s, &stay, "e", json!("still here")).await;
    let cursor = reply["cursor"].as_u64().unwrap();
    for stream in [&mut direct, &mut hyper] {
        let frame = stream.next_event(WAIT).await.unwrap();
        assert_eq!(frame.json(), json!("still here"));
    }
    assert_eq!(s.terminate(), Some(0), "{}", s.stderr());
    for (name, stream) in [("direct", &mut direct), ("hyper", &mut hyper)] {
        let last = last_frame(stream).await;
        assert_eq!(last.event.as_deref(), Some("broker.closed"), "{name}");
        assert_eq!(last.json()["reason"], "shutdown", "{name}");
        assert_eq!(last.cursor(), cursor, "{name}: resume from the last event");
    }
    // Nothing waits on a closed stream.
    assert!(
        direct
            .next_frame(Duration::from_millis(200))
            .await
            .is_none()
    );
}

/// A stream ends when the token that opened it expires (`expired`), on both paths, with its
/// events and keep-alives flowing until then.
#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--jwt_expiry", "3", "--sse_keepalive_secs", "1"],
    );
    let c = client();
    assert_eq!(create_user(&c, &s, "u", "pw", "t").await, 200);
    for via_hyper in [false, true] {
        let jwt = login(&c, &s, "u", "pw").await;
        let opened = std::time::Instant::now();
        let mut stream = open(&s, &jwt, via_hyper).await;
        let (status, _) = insert(&c, &s, &jwt, "e", json!({"n": 1})).await;
        assert_eq!(status, 200);
        let last = tokio::time::timeout(Duration::from_secs(10), last_frame(&mut stream))
            .await
            .expect("the stream outlived its token by 7 s");
        let lived = opened.elapsed();
        assert_eq!(last.event.as_deref(), Some("broker.closed"), "{last:?}");
        assert_eq!(last.json()["reason"], "expired", "via_hyper {via_hyper}");
        // Resuming from here misses nothing: the insert is at or before the cursor.
        assert!(last.json()["cursor"].as_u64().unwrap() >= 2, "{last:?}");
        assert!(
            lived >= Duration::from_secs(1) && lived < Duration::from_secs(6),
            "ended after {lived:?} with a 3 s token"
        );
    }
}

/// Event names like the server's own frames are refused (an attack review's user inserted
/// `broker.closed` and ended every stream of the tenant, for good: the snapshot kept it), and
/// one in a log written before never reaches a stream, live, in the snapshot or on resume.
#[tokio::test]
async fn no_event_can_pose_as_the_server_closing_the_stream() {
    use broker::log::{frame, segment::Header};
    use broker::state::record::{EventInserted, UserCreated};
    use broker::state::{Record, RecordKind};
    let dir = tempfile::tempdir().unwrap();
    // A log from before the rule: alice, a forged `broker.closed`, then a real event.
    let event = |name: &str, data: &str, id: u8| {
        RecordKind::EventInserted(EventInserted {
            id: [id; 16],
            tenant: "t".into(),
            event: name.into(),
            data: data.into(),
            by: Some("alice".into()),
            idempotency_key: None,
        })
    };
    let kinds = [
        RecordKind::UserCreated(UserCreated {
            id: [1; 16],
            username: "alice".into(),
            tenant: "t".into(),
            password_hash: broker::auth::password::hash("pw").unwrap(),
            email: None,
            scopes: None,
            data: None,
            two_factor: false,
            totp_secret: vec![7; 20],
        }),
        event("broker.closed", r#"{"reason":"revoked"}"#, 2),
        event("real", "1", 3),
    ];
    let mut bytes = Header::new(1).encode().to_vec();
    for (kind, cursor) in kinds.into_iter().zip(1u64..) {
        let record = Record {
            cursor,
            at_ms: 1_700_000_000_000,
            kind,
        };
        frame::encode_into(&mut bytes, &record.encode());
    }
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    std::fs::write(dir.path().join("log/00000000000000000001.seg"), bytes).unwrap();

    let s = Server::start(dir.path(), &[]);
    let c = client();
    let jwt = login(&c, &s, "alice", "pw").await;
    for event in ["broker.closed", "broker.reset", "broker.anything"] {
        let (status, reply) = insert(&c, &s, &jwt, event, json!({"reason": "revoked"})).await;
        assert_eq!(status, 400, "{event}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("event"),
            "{reply}"
        );
    }
    // The snapshot, a resume from the start, and live events: never the forged frame.
    for last_event_id in [None, Some("0")] {
        let mut stream = Sse::open(&s, &jwt, last_event_id).await;
        let first = stream.next_event(WAIT).await.expect("an event");
        assert_eq!(first.event.as_deref(), Some("real"), "{last_event_id:?}");
        assert_eq!(insert(&c, &s, &jwt, "after", json!(1)).await.0, 200);
        let next = stream.next_event(WAIT).await.expect("the live event");
        assert_eq!(next.event.as_deref(), Some("after"), "{last_event_id:?}");
    }
    // History still lists it: it is in the log.
    let history = get_json(&c, &s, "/events?after=0", &jwt).await;
    assert!(history.to_string().contains("broker.closed"), "{history}");
}
