//! `GET /events` (issue 18): a tenant's past events a page at a time. Paging with `after` or
//! `before` walks the whole history exactly once — with an event filter, across segments,
//! across the indexed range of a checkpoint and the tail after it, and after a restart —
//! while other tenants' events (interleaved with it) never show; bad parameters are 400 JSON
//! naming the parameter; the admin reads any tenant with `X-Admin-Token`.

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::{Value, json};

async fn get(c: &reqwest::Client, s: &Server, query: &str, auth: (&str, &str)) -> (u16, Value) {
    let resp = c
        .get(s.url(&format!("/events?{query}")))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{query}"
        );
    }
    (status, resp.json().await.unwrap())
}

/// Walks every page from the start (`after`) or from the newest (`before`) and returns the
/// cursors in the order they came.
async fn walk(
    c: &reqwest::Client,
    s: &Server,
    auth: (&str, &str),
    extra: &str,
    limit: usize,
    ascending: bool,
) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next: Option<u64> = if ascending { Some(0) } else { None };
    let mut first = true;
    for _ in 0..10_000 {
        let from = match (ascending, next) {
            (true, Some(n)) => format!("after={n}&"),
            (false, Some(n)) => format!("before={n}&"),
            (false, None) if first => String::new(),
            _ => return out,
        };
        first = false;
        let (status, page) = get(c, s, &format!("{from}limit={limit}{extra}"), auth).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= limit);
        for e in events {
            out.push((
                e["cursor"].as_u64().unwrap(),
                e["event"].as_str().unwrap().to_owned(),
            ));
        }
        next = page["next"].as_u64();
        if next.is_none() {
            assert!(page["next"].is_null(), "{page}");
            return out;
        }
    }
    panic!("more than 10,000 pages");
}

/// Every way to walk `expected` (tenant's events: cursor → name) gives each exactly once,
/// in order.
async fn check_walks(
    c: &reqwest::Client,
    s: &Server,
    auth: (&str, &str),
    admin_tenant: &str,
    expected: &BTreeMap<u64, String>,
) {
    let all: Vec<(u64, String)> = expected.iter().map(|(c, n)| (*c, n.clone())).collect();
    let x_only: Vec<(u64, String)> = all.iter().filter(|(_, n)| n == "x").cloned().collect();
    for limit in [1, 7, 1000] {
        assert_eq!(
            walk(c, s, auth, "", limit, true).await,
            all,
            "after, limit {limit}"
        );
        let mut newest_first = walk(c, s, auth, "", limit, false).await;
        newest_first.reverse();
        assert_eq!(newest_first, all, "before, limit {limit}");
        assert_eq!(
            walk(c, s, auth, "&event=x", limit, true).await,
            x_only,
            "filtered after, limit {limit}"
        );
        let mut x_newest = walk(c, s, auth, "&event=x", limit, false).await;
        x_newest.reverse();
        assert_eq!(x_newest, x_only, "filtered before, limit {limit}");
    }
    let admin = ("x-admin-token", ADMIN);
    let tenant = format!("&tenant={admin_tenant}");
    assert_eq!(walk(c, s, admin, &tenant, 13, true).await, all, "admin");
}

#[tokio::test]
async fn paging_walks_a_tenants_whole_history_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments and frequent checkpoints: the history spans many segment files, an
    // indexed range and a tail.
    let args = [
        "--segment_bytes",
        "4096",
        "--checkpoint_records",
        "40",
        "--fsync",
        "never",
    ];
    let mut s = Server::start(dir.path(), &args);
    let c = client();
    let mut tenants = Vec::new();
    for t in 0..3 {
        create_user(&c, &s, &format!("u{t}"), "pw", &format!("t{t}")).await;
        tenants.push(login(&c, &s, &format!("u{t}"), "pw").await);
    }
    // Three tenants interleaved; tenant 0 gets every third event and a mix of names.
    let mut mine: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..300 {
        let t = i % 3;
        let name = if i % 7 == 0 { "x" } else { "y" };
        let (status, reply) = insert(
            &c,
            &s,
            &tenants[t],
            name,
            json!({"i": i, "pad": "p".repeat(40)}),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        if t == 0 {
            mine.insert(reply["cursor"].as_u64().unwrap(), name.to_owned());
        }
    }
    let segments = std::fs::read_dir(dir.path().join("log"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
        })
        .unwrap_or(0);
    assert!(segments > 3, "{segments} segments");
    let auth = format!("Bearer {}", tenants[0]);
    check_walks(&c, &s, ("authorization", &auth), "t0", &mine).await;

    // After a restart the checkpoint's index covers most of it and the rest is the tail.
    assert_eq!(s.terminate(), Some(0), "graceful stop:\n{}", s.stderr());
    s = Server::start(dir.path(), &args);
    for i in 0..20 {
        let (_, reply) = insert(&c, &s, &tenants[0], "x", json!(i)).await;
        mine.insert(reply["cursor"].as_u64().unwrap(), "x".to_owned());
        insert(&c, &s, &tenants[1], "x", json!(i)).await;
    }
    check_walks(&c, &s, ("authorization", &auth), "t0", &mine).await;

    // Fields of one event, and the page's head.
    let (_, page) = get(&c, &s, "limit=1", ("authorization", &auth)).await;
    let newest = &page["events"][0];
    assert_eq!(newest["cursor"].as_u64(), mine.keys().last().copied());
    assert_eq!(newest["by"], "u0");
    assert_eq!(newest["data"], json!(19));
    assert_eq!(newest["id"].as_str().unwrap().len(), 36);
    assert!(newest["at"].as_str().unwrap().ends_with('Z'));
    let (_, t1) = insert(&c, &s, &tenants[1], "z", json!(0)).await;
    let (_, page) = get(&c, &s, "limit=1", ("authorization", &auth)).await;
    assert_eq!(
        page["head"], t1["cursor"],
        "head is the log's, not the tenant's"
    );
    assert_eq!(
        page["events"][0], *newest,
        "another tenant's insert is not ours"
    );
}

#[tokio::test]
async fn history_parameters_are_checked_and_tenants_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--enforce_scopes", "true"]);
    let c = client();
    let (status, body) = post(
        &c,
        s.url("/create_user"),
        json!({"username": "p", "password": "pw", "admin_token": ADMIN, "tenant_name": "t",
               "scopes": ["a:read", "*:write"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let jwt = login(&c, &s, "p", "pw").await;
    let (_, mine) = insert(&c, &s, &jwt, "a", json!(1)).await;
    let bearer = format!("Bearer {jwt}");
    let user = ("authorization", bearer.as_str());
    for (query, needle) in [
        ("after=1&before=5", "after and before"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("after=-1", "after"),
        ("after=18446744073709551616", "after"),
        ("before=1e3", "before"),
        ("event=", "must not be empty"),
        ("tenant=t", "tenant"),
    ] {
        let (status, body) = get(&c, &s, query, user).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(needle), "{query}: {message}");
    }
    let (status, body) = get(&c, &s, "event=b", user).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("b:read"));
    // Scopes filter what is returned without ?event= too.
    insert(&c, &s, &jwt, "b", json!(2)).await;
    let (status, page) = get(&c, &s, "", user).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["cursor"], mine["cursor"]);
    // Credentials.
    assert_eq!(
        get(&c, &s, "", ("authorization", "Bearer nope")).await.0,
        401
    );
    assert_eq!(
        get(&c, &s, "tenant=t", ("x-admin-token", "wrong")).await.0,
        401
    );
    let (status, body) = get(&c, &s, "", ("x-admin-token", ADMIN)).await;
    assert_eq!(status, 400, "{body}");
    // The admin reads any tenant, every name; an unknown tenant is simply empty.
    let (status, page) = get(&c, &s, "tenant=t&after=0", ("x-admin-token", ADMIN)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let (_, page) = get(&c, &s, "tenant=nobody", ("x-admin-token", ADMIN)).await;
    assert_eq!(page["events"], json!([]));
    assert!(page["next"].is_null());
    // A name no tenant can have is 400, not an empty page.
    for bad in ["tenant=", "tenant=a%0Ab"] {
        let (status, body) = get(&c, &s, bad, ("x-admin-token", ADMIN)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("tenant"), "{body}");
    }
    // Another tenant's user sees none of it.
    let (status, _) = post(
        &c,
        s.url("/create_user"),
        json!({"username": "q", "password": "pw", "admin_token": ADMIN, "tenant_name": "other",
               "scopes": ["*:read"]}),
    )
    .await;
    assert_eq!(status, 200);
    let other = login(&c, &s, "q", "pw").await;
    let bearer = format!("Bearer {other}");
    let (status, page) = get(&c, &s, "after=0", ("authorization", &bearer)).await;
    assert_eq!(status, 200);
    assert_eq!(page["events"], json!([]));
    // Past the head, or before the first cursor: empty, no next.
    let (_, page) = get(&c, &s, "after=999999", user).await;
    assert_eq!(
        (page["events"].clone(), page["next"].clone()),
        (json!([]), Value::Null)
    );
    let (_, page) = get(&c, &s, "before=1", user).await;
    assert_eq!(
        (page["events"].clone(), page["next"].clone()),
        (json!([]), Value::Null)
    );
}

#[tokio::test]
async fn history_is_declared_in_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let spec: Value = client()
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &spec["paths"]["/events"]["get"];
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["after", "before", "limit", "event", "tenant"] {
        assert!(params.contains(&name), "{name} in {params:?}");
    }
    let schemes: Vec<String> = op["security"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_object().unwrap().keys().cloned())
        .collect();
    for scheme in ["bearer", "basic", "admin_token"] {
        assert!(schemes.iter().any(|s| s == scheme), "{schemes:?}");
    }
    let sse: Vec<&str> = spec["paths"]["/sse"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        sse.contains(&"event") && sse.contains(&"envelope"),
        "{sse:?}"
    );
}

#[tokio::test]
async fn events_compacted_away_are_absent_and_the_rest_walked_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--segment_bytes",
        "4096",
        "--checkpoint_records",
        "30",
        "--fsync",
        "never",
    ];
    let mut s = Server::start(dir.path(), &args);
    let c = client();
    create_user(&c, &s, "k", "pw", "t").await;
    create_user(&c, &s, "n", "pw", "noise").await;
    let jwt = login(&c, &s, "k", "pw").await;
    let noise = login(&c, &s, "n", "pw").await;
    let mut all: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..160 {
        let name = ["x", "y", "z"][i % 3];
        let (_, reply) = insert(&c, &s, &jwt, name, json!({"i": i, "pad": "p".repeat(40)})).await;
        all.insert(reply["cursor"].as_u64().unwrap(), name.to_owned());
        insert(&c, &s, &noise, name, json!(i)).await;
    }
    let retain = *all.keys().nth(100).unwrap();
    let (status, done) = post(
        &c,
        s.url("/compact"),
        json!({"admin_token": ADMIN, "retain": retain.to_string()}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert!(
        done["records_after"].as_u64() < done["records_before"].as_u64(),
        "{done}"
    );
    let bearer = format!("Bearer {jwt}");
    let auth = ("authorization", bearer.as_str());
    for round in 0..2 {
        let ascending = walk(&c, &s, auth, "", 9, true).await;
        let mut descending = walk(&c, &s, auth, "", 9, false).await;
        descending.reverse();
        assert_eq!(ascending, descending, "round {round}");
        assert!(
            ascending.windows(2).all(|w| w[0].0 < w[1].0),
            "exactly once, in order"
        );
        assert!(
            ascending.iter().all(|(c, n)| all.get(c) == Some(n)),
            "nothing invented"
        );
        // Everything from the retain point on is there, and the latest of each name.
        for (cursor, name) in all.range(retain..) {
            assert!(
                ascending.contains(&(*cursor, name.clone())),
                "{cursor} missing"
            );
        }
        assert!(ascending.len() < all.len(), "compacted events are absent");
        // Again after a restart: the checkpoint's index may still name compacted cursors.
        assert_eq!(s.terminate(), Some(0), "graceful stop:\n{}", s.stderr());
        s = Server::start(dir.path(), &args);
    }
}

/// Regression (attack review): each page is built whole and held until its client takes
/// it, and nothing counted pages in flight, so one user asking on many connections and
/// reading none pinned gigabytes. Now a caller has at most 4 pages in flight (a fifth is
/// 429), another caller is not held back, and a page given up frees its place.
#[tokio::test]
async fn a_caller_that_reads_no_pages_holds_at_most_four() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max_body_bytes", "16777216"]);
    let c = client();
    create_user(&c, &s, "hoarder", "pw", "t").await;
    create_user(&c, &s, "other", "pw", "t").await;
    let jwt = login(&c, &s, "hoarder", "pw").await;
    let other = login(&c, &s, "other", "pw").await;
    // One event larger than what loopback socket buffers absorb: its page stays with us.
    let big = "x".repeat(12 * 1024 * 1024);
    assert_eq!(insert(&c, &s, &jwt, "big", json!(big)).await.0, 200);
    drop(big);

    let addr = s.base.trim_start_matches("http://").to_owned();
    let request = format!(
        "GET /events?after=0&limit=1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {jwt}\r\n\r\n"
    );
    let mut silent = Vec::new();
    for _ in 0..4 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        silent.push(stream);
    }
    let bearer = |t: &str| format!("Bearer {t}");
    // The fifth is refused (bounded wait for the four to be taken in).
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, body) = get(&c, &s, "after=0&limit=1", ("authorization", &bearer(&jwt))).await;
        if status == 429 {
            refused = Some(body);
            break;
        }
        assert_eq!(
            status,
            200,
            "{}",
            &body.to_string()[..200.min(body.to_string().len())]
        );
    }
    if refused.is_none() {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 300];
        let n = silent[0].read(&mut head).await.unwrap();
        panic!(
            "a fifth page in flight was served; the first answer: {}",
            String::from_utf8_lossy(&head[..n])
        );
    }
    let refused = refused.unwrap();
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("4 history pages in flight"),
        "{refused}"
    );
    // Someone else reads as usual.
    let (status, _) = get(
        &c,
        &s,
        "after=0&limit=1",
        ("authorization", &bearer(&other)),
    )
    .await;
    assert_eq!(status, 200);
    // A silent client gone: its page's place comes back.
    drop(silent.pop());
    let mut served = false;
    for _ in 0..100 {
        let (status, _) = get(&c, &s, "after=0&limit=1", ("authorization", &bearer(&jwt))).await;
        if status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "the closed connection's page was never given back");
}
