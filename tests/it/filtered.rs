//! Filtered and enveloped streams (issue 18): `/sse?event=a&event=b` carries only those names
//! in the snapshot, in catch-up (ring and log) and live, with `id:` the global cursor so a
//! resume works as before, across a restart too; lists are bounded (64) and checked like event
//! names; under `--enforce_scopes` a name the user cannot read is 403. `?envelope=true` wraps
//! each `data:` as `{id, at, by, data}`. Both ways a stream is served (straight off the socket
//! and through hyper) answer the same.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

/// Opens `/sse?{query}` with `jwt`; `via_hyper` pads the head past what `server::streams`
/// takes, so hyper serves it.
async fn open(
    s: &Server,
    jwt: &str,
    query: &str,
    last_event_id: Option<u64>,
    via_hyper: bool,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(s.url(&format!("/sse?{query}")))
        .header("authorization", format!("Bearer {jwt}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    if via_hyper {
        for i in 0..70 {
            req = req.header(format!("x-pad-{i}"), "1");
        }
    }
    req.send().await.unwrap()
}

async fn stream(s: &Server, jwt: &str, query: &str, last: Option<u64>, hyper: bool) -> Sse {
    let resp = open(s, jwt, query, last, hyper).await;
    assert_eq!(resp.status(), 200, "{query}");
    Sse::from_response(resp)
}

/// Every event frame until the stream is quiet, as (cursor, name, data).
async fn drain(stream: &mut Sse) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    while let Some(frame) = stream.next_event(Duration::from_millis(700)).await {
        out.push((frame.cursor(), frame.event.clone().unwrap(), frame.json()));
    }
    out
}

async fn inserts(c: &reqwest::Client, s: &Server, jwt: &str, names: &[&str]) -> Vec<u64> {
    let mut cursors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (status, reply) = insert(c, s, jwt, name, json!(i)).await;
        assert_eq!(status, 200, "{reply}");
        cursors.push(reply["cursor"].as_u64().unwrap());
    }
    cursors
}

#[tokio::test]
async fn a_filtered_stream_carries_only_its_names_in_snapshot_catch_up_and_live() {
    let dir = tempfile::tempdir().unwrap();
    // A ring of 2 frames: catch-up from further back reads the log.
    let s = Server::start(dir.path(), &["--sse_buffer", "2", "--fsync", "never"]);
    let c = client();
    for via_hyper in [false, true] {
        let (user, other) = (format!("f{via_hyper}"), format!("o{via_hyper}"));
        create_user(&c, &s, &user, "pw", &format!("t{via_hyper}")).await;
        create_user(&c, &s, &other, "pw", &format!("u{via_hyper}")).await;
        let jwt = login(&c, &s, &user, "pw").await;
        let stranger = login(&c, &s, &other, "pw").await;
        let names = ["a", "b", "c", "a", "b", "ü n", "c", "b"];
        let cursors = inserts(&c, &s, &jwt, &names).await;
        // Another tenant's events of the same names never show.
        inserts(&c, &s, &stranger, &["a", "c"]).await;
        let wanted = |from: usize| -> Vec<(u64, String, Value)> {
            names
                .iter()
                .enumerate()
                .skip(from)
                .filter(|(_, n)| ["a", "c", "ü n"].contains(n))
                .map(|(i, n)| (cursors[i], n.to_string(), json!(i)))
                .collect()
        };
        let query = "event=a&event=c&event=%C3%BC%20n";
        // Snapshot: the latest of each asked name only, in cursor order.
        let mut live = stream(&s, &jwt, query, None, via_hyper).await;
        let snapshot = drain(&mut live).await;
        let expected: Vec<_> = [(3, "a"), (5, "ü n"), (6, "c")]
            .iter()
            .map(|(i, n)| (cursors[*i], n.to_string(), json!(i)))
            .collect();
        assert_eq!(snapshot, expected, "via_hyper={via_hyper}");
        // Catch-up from the start (the log, past the ring) and from the middle.
        let mut all = stream(&s, &jwt, query, Some(0), via_hyper).await;
        assert_eq!(drain(&mut all).await, wanted(0), "via_hyper={via_hyper}");
        let mut half = stream(&s, &jwt, query, Some(cursors[3]), via_hyper).await;
        assert_eq!(drain(&mut half).await, wanted(4), "via_hyper={via_hyper}");
        // Live: only the asked names, ids the global cursors.
        let more = inserts(&c, &s, &jwt, &["b", "a", "b", "b", "c"]).await;
        let got: Vec<u64> = drain(&mut live).await.iter().map(|f| f.0).collect();
        assert_eq!(got, vec![more[1], more[4]], "via_hyper={via_hyper}");
        assert_eq!(drain(&mut all).await.len(), 2);
        // Without `event=` nothing changes: every name.
        let mut every = stream(&s, &jwt, "", Some(cursors[6]), via_hyper).await;
        assert_eq!(drain(&mut every).await.len(), 1 + more.len());
    }
}

#[tokio::test]
async fn a_filtered_resume_is_exact_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &["--fsync", "never"]);
    let c = client();
    create_user(&c, &s, "r", "pw", "t").await;
    let jwt = login(&c, &s, "r", "pw").await;
    let first = inserts(&c, &s, &jwt, &["x", "y", "x", "y", "x"]).await;
    let mut sse = stream(&s, &jwt, "event=x", Some(0), false).await;
    let seen = drain(&mut sse).await;
    assert_eq!(
        seen.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![first[0], first[2], first[4]]
    );
    // The client stopped after the second x; every y since then is not its business.
    let resume_at = seen[1].0;
    drop(sse);
    assert_eq!(s.terminate(), Some(0), "graceful stop:\n{}", s.stderr());
    let s = Server::start(dir.path(), &["--fsync", "never"]);
    let later = inserts(&c, &s, &jwt, &["y", "x", "y"]).await;
    let mut sse = stream(&s, &jwt, "event=x", Some(resume_at), false).await;
    let missed: Vec<u64> = drain(&mut sse).await.iter().map(|f| f.0).collect();
    assert_eq!(missed, vec![first[4], later[1]]);
    let live = inserts(&c, &s, &jwt, &["y", "x"]).await;
    let frame = sse.next_event(WAIT).await.unwrap();
    assert_eq!(frame.cursor(), live[1]);
}

#[tokio::test]
async fn event_lists_are_bounded_and_checked_like_event_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "l", "pw", "t").await;
    let jwt = login(&c, &s, "l", "pw").await;
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("event=n{i}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    for via_hyper in [false, true] {
        assert_eq!(
            open(&s, &jwt, &list(64), None, via_hyper).await.status(),
            200
        );
        let long = "x".repeat(256);
        for (query, needle) in [
            (list(65), "at most 64"),
            ("event=".to_owned(), "must not be empty"),
            ("event=a%0Ab".to_owned(), "control characters"),
            (format!("event={long}"), "at most 255 bytes"),
            ("envelope=maybe".to_owned(), "envelope"),
        ] {
            let resp = open(&s, &jwt, &query, None, via_hyper).await;
            assert_eq!(resp.status(), 400, "{query} via_hyper={via_hyper}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            let body: Value = resp.json().await.unwrap();
            let message = body["error"].as_str().unwrap();
            assert!(message.contains(needle), "{query}: {message}");
        }
    }
}

#[tokio::test]
async fn hostile_event_lists_are_refused_cheaply() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "h", "pw", "t").await;
    let jwt = login(&c, &s, "h", "pw").await;
    // 8,000 names (64 KB of query, about the most a URI holds): past the direct path's head
    // limit, so through hyper, and refused by the count before any name is looked at.
    let many = vec!["event=a"; 8_000].join("&");
    for path in ["/sse", "/events"] {
        let started = Instant::now();
        let resp = c
            .get(s.url(&format!("{path}?{many}")))
            .header("authorization", format!("Bearer {jwt}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("at most 64"),
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
    }
    // 10,000 names, and an enormous query string, are refused before any route sees them.
    let ten_thousand = vec!["event=a"; 10_000].join("&");
    let huge = format!("event={}", "a".repeat(2 << 20));
    for query in [ten_thousand, huge] {
        let started = Instant::now();
        for path in ["/sse", "/events"] {
            let status = c
                .get(s.url(&format!("{path}?{query}")))
                .header("authorization", format!("Bearer {jwt}"))
                .send()
                .await
                .map(|r| r.status().as_u16());
            // Either an answer in the 4xx range or a closed connection, never a 5xx or a hang.
            if let Ok(status) = status {
                assert!((400..500).contains(&status), "{path}: {status}");
            }
            assert!(started.elapsed() < Duration::from_secs(2), "{path}");
        }
    }
    // And the server goes on serving.
    assert_eq!(insert(&c, &s, &jwt, "a", json!(1)).await.0, 200);
}

#[tokio::test]
async fn a_filter_asking_for_an_unreadable_name_is_403_under_enforced_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--enforce_scopes", "true"]);
    let c = client();
    let (status, body) = post(
        &c,
        s.url("/create_user"),
        json!({"username": "s", "password": "pw", "admin_token": ADMIN, "tenant_name": "t",
               "scopes": ["a:read", "b:read", "*:write"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let jwt = login(&c, &s, "s", "pw").await;
    inserts(&c, &s, &jwt, &["a", "b", "c"]).await;
    for via_hyper in [false, true] {
        let resp = open(&s, &jwt, "event=a&event=c", None, via_hyper).await;
        assert_eq!(resp.status(), 403);
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("c:read"), "{body}");
        // A readable list narrows what scopes allow.
        let mut only_b = stream(&s, &jwt, "event=b", Some(0), via_hyper).await;
        let names: Vec<String> = drain(&mut only_b).await.into_iter().map(|f| f.1).collect();
        assert_eq!(names, vec!["b"]);
    }
}

/// Checks one envelope against what `/insert` returned.
fn check_envelope(frame: &(u64, String, Value), id: &str, by: &str, data: Value) {
    let envelope = &frame.2;
    assert_eq!(envelope["id"], id, "{envelope}");
    assert_eq!(envelope["by"], by, "{envelope}");
    assert_eq!(envelope["data"], data, "{envelope}");
    let at = envelope["at"].as_str().unwrap();
    // RFC 3339 UTC, milliseconds, within a minute of now.
    assert_eq!(at.len(), 24, "{at}");
    assert!(at.ends_with('Z') && &at[10..11] == "T", "{at}");
    let seconds = std::process::Command::new("date")
        .args(["-u", "-d", at, "+%s"])
        .output()
        .unwrap();
    let then: u64 = String::from_utf8(seconds.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(then) < 60, "{at}");
    assert_eq!(envelope.as_object().unwrap().len(), 4, "{envelope}");
}

#[tokio::test]
async fn envelopes_carry_id_at_and_by_in_snapshot_catch_up_and_live() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--sse_buffer", "2", "--fsync", "never"]);
    let c = client();
    for via_hyper in [false, true] {
        let user = format!("env{via_hyper}");
        create_user(&c, &s, &user, "pw", &user).await;
        let jwt = login(&c, &s, &user, "pw").await;
        let mut ids = Vec::new();
        for i in 0..4 {
            let (status, reply) =
                insert(&c, &s, &jwt, &format!("e{}", i % 2), json!({"i": i})).await;
            assert_eq!(status, 200);
            ids.push(reply["id"].as_str().unwrap().to_owned());
        }
        let mut live = stream(&s, &jwt, "envelope=true", None, via_hyper).await;
        let snapshot = drain(&mut live).await;
        assert_eq!(snapshot.len(), 2);
        check_envelope(&snapshot[0], &ids[2], &user, json!({"i": 2}));
        check_envelope(&snapshot[1], &ids[3], &user, json!({"i": 3}));
        // Catch-up from the log (past the 2-frame ring), filtered and enveloped at once.
        let mut back = stream(&s, &jwt, "envelope=true&event=e0", Some(0), via_hyper).await;
        let caught = drain(&mut back).await;
        assert_eq!(caught.len(), 2);
        check_envelope(&caught[0], &ids[0], &user, json!({"i": 0}));
        check_envelope(&caught[1], &ids[2], &user, json!({"i": 2}));
        // Live.
        let (_, reply) = insert(&c, &s, &jwt, "e0", json!("live")).await;
        let id = reply["id"].as_str().unwrap();
        let got = drain(&mut live).await;
        assert_eq!(got.len(), 1);
        check_envelope(&got[0], id, &user, json!("live"));
        assert_eq!(got[0].0, reply["cursor"].as_u64().unwrap());
        // A plain stream beside it still gets bare data.
        let mut plain = stream(&s, &jwt, "envelope=false", None, via_hyper).await;
        let bare = drain(&mut plain).await;
        assert_eq!(bare.last().unwrap().2, json!("live"));
    }
}

#[tokio::test]
async fn a_filtered_stream_of_a_busy_tenant_sleeps_through_other_names_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A ring of 4 frames: the other names push the wanted ones out while the stream sleeps.
    let s = Server::start(dir.path(), &["--sse_buffer", "4", "--fsync", "never"]);
    let c = client();
    create_user(&c, &s, "busy", "pw", "t").await;
    let jwt = login(&c, &s, "busy", "pw").await;
    let mut rare = stream(&s, &jwt, "event=rare", None, false).await;
    let mut both = stream(&s, &jwt, "event=rare&event=burst", None, true).await;
    let mut expected_rare = Vec::new();
    let mut expected_both = Vec::new();
    for round in 0..4 {
        let noise: Vec<&str> = (0..30)
            .map(|i| if i % 10 == 9 { "burst" } else { "noise" })
            .collect();
        let cursors = inserts(&c, &s, &jwt, &noise).await;
        expected_both.extend(
            cursors
                .iter()
                .zip(&noise)
                .filter(|(_, n)| **n == "burst")
                .map(|(c, _)| *c),
        );
        let wanted = inserts(&c, &s, &jwt, &["rare"]).await[0];
        expected_rare.push(wanted);
        expected_both.push(wanted);
        let got: Vec<u64> = drain(&mut rare).await.iter().map(|f| f.0).collect();
        assert_eq!(got, vec![wanted], "round {round}");
    }
    let got: Vec<u64> = drain(&mut both).await.iter().map(|f| f.0).collect();
    assert_eq!(got, expected_both);
    // A resume from before all of it reads the log and gets exactly the wanted ones.
    let mut again = stream(&s, &jwt, "event=rare", Some(0), false).await;
    let got: Vec<u64> = drain(&mut again).await.iter().map(|f| f.0).collect();
    assert_eq!(got, expected_rare);
}
