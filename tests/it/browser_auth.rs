//! Browser paths against the real binary: single-use SSE tickets for `EventSource`, the
//! `/sse`-only session cookie, CORS for `--origin`, the console's files and its stats.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

async fn ticket(c: &reqwest::Client, s: &Server, auth: &str) -> (u16, Value) {
    post_raw(c, s.url("/sse_ticket"), String::new(), Some(auth)).await
}

async fn open_with_ticket(s: &Server, ticket: &str, extra: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url(&format!("/sse?ticket={ticket}{extra}")))
        .send()
        .await
        .unwrap()
}

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_ticket_opens_one_stream_once_and_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_env(dir.path(), &[], &[("RUST_LOG", "debug")]);
    let c = client();
    create_user(&c, &s, "ann", "pw", "acme").await;
    let jwt = login(&c, &s, "ann", "pw").await;
    insert(&c, &s, &jwt, "hello", json!(1)).await;
    insert(&c, &s, &jwt, "hello", json!(2)).await;

    let (status, body) = ticket(&c, &s, &format!("Bearer {jwt}")).await;
    assert_eq!(status, 200, "{body}");
    let t = body["ticket"].as_str().unwrap().to_owned();
    assert_eq!(t.len(), 43, "256 random bits in URL-safe base64: {t}");
    assert_eq!(body["expires_in"], 30);

    // The ticket opens the caller's own stream: snapshot, then live, resumable by query.
    let mut sse = Sse::from_response(open_with_ticket(&s, &t, "").await);
    assert_eq!(sse.resp.status(), 200);
    let snap = sse.take(1, WAIT).await;
    assert_eq!(snap[0].json(), json!(2));
    let (_, ins) = insert(&c, &s, &jwt, "hello", json!(3)).await;
    let live = sse.take(1, WAIT).await;
    assert_eq!(live[0].cursor(), ins["cursor"].as_u64().unwrap());

    // Single use: the same ticket again is 401 and says what to do.
    let (status, message) = error_of(open_with_ticket(&s, &t, "").await).await;
    assert_eq!(status, 401);
    assert!(message.starts_with("ticket:"), "{message}");
    assert!(message.contains("POST /sse_ticket"), "{message}");

    // A new ticket resumes exactly after a cursor.
    let (_, body) = ticket(&c, &s, "Basic YW5uOnB3").await; // ann:pw
    let t2 = body["ticket"].as_str().unwrap().to_owned();
    let mut resumed = Sse::from_response(open_with_ticket(&s, &t2, "&last_event_id=3").await);
    let frames = resumed.take(1, WAIT).await;
    assert_eq!(frames[0].json(), json!(3));

    // Unknown tickets, no credentials, and a header plus a ticket are all refused.
    assert_eq!(
        error_of(open_with_ticket(&s, "AAAA", "").await).await.0,
        401
    );
    let (status, body) = post_raw(&c, s.url("/sse_ticket"), String::new(), None).await;
    assert_eq!(status, 401, "{body}");
    let (_, body) = ticket(&c, &s, &format!("Bearer {jwt}")).await;
    let t3 = body["ticket"].as_str().unwrap();
    let both = reqwest::Client::new()
        .get(s.url(&format!("/sse?ticket={t3}")))
        .header("authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(both).await;
    assert_eq!(status, 400);
    assert!(message.contains("not both"), "{message}");

    // The request log names the route but never the query string that held the tickets.
    assert!(wait_for_log(&s, "/sse", WAIT).await);
    let logs = s.stderr();
    for secret in [&t, &t2, &jwt] {
        assert!(
            !logs.contains(secret.as_str()),
            "a credential reached the log"
        );
    }
}

#[tokio::test]
async fn revocation_and_password_changes_void_tickets_and_end_ticket_streams() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "bo", "pw", "acme").await;
    let jwt = login(&c, &s, "bo", "pw").await;
    let bearer = format!("Bearer {jwt}");

    // An open ticket stream ends when the user is revoked.
    let (_, body) = ticket(&c, &s, &bearer).await;
    let mut sse =
        Sse::from_response(open_with_ticket(&s, body["ticket"].as_str().unwrap(), "").await);
    let (_, spare) = ticket(&c, &s, &bearer).await;
    let admin = |path: &str, extra: Value| {
        let mut body = json!({"admin_token": ADMIN, "username": "bo"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        post(&c, s.url(path), body)
    };
    assert_eq!(admin("/revoke_user", json!({})).await.0, 200);
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while sse.next_frame(Duration::from_secs(2)).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the revocation");
    // A ticket issued before the revocation is void, even after unrevoking.
    assert_eq!(admin("/unrevoke_user", json!({})).await.0, 200);
    let (status, message) =
        error_of(open_with_ticket(&s, spare["ticket"].as_str().unwrap(), "").await).await;
    assert_eq!(status, 401);
    assert!(message.contains("revoked"), "{message}");

    // A password change between issue and use voids the ticket too.
    let jwt = login(&c, &s, "bo", "pw").await;
    let (_, body) = ticket(&c, &s, &format!("Bearer {jwt}")).await;
    assert_eq!(
        admin("/update_user", json!({"password": "new pw"})).await.0,
        200
    );
    let resp = open_with_ticket(&s, body["ticket"].as_str().unwrap(), "").await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn admin_tickets_watch_any_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "cy", "pw", "north").await;
    create_user(&c, &s, "di", "pw", "south").await;
    let north = login(&c, &s, "cy", "pw").await;
    let south = login(&c, &s, "di", "pw").await;
    insert(&c, &s, &north, "n", json!("north")).await;
    insert(&c, &s, &south, "s", json!("south")).await;

    let (status, body) = post(
        &c,
        s.url("/admin_sse_ticket"),
        json!({"admin_token": "wrong", "tenant_name": "south"}),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(
        &c,
        s.url("/admin_sse_ticket"),
        json!({"admin_token": ADMIN, "tenant_name": ""}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("tenant_name"));
    let (status, body) = post(
        &c,
        s.url("/admin_sse_ticket"),
        json!({"admin_token": ADMIN, "tenant_name": "south"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut sse =
        Sse::from_response(open_with_ticket(&s, body["ticket"].as_str().unwrap(), "").await);
    assert_eq!(sse.take(1, WAIT).await[0].json(), json!("south"));
    insert(&c, &s, &north, "n", json!("north again")).await;
    insert(&c, &s, &south, "s", json!("south again")).await;
    // Only the watched tenant's events.
    assert_eq!(sse.take(1, WAIT).await[0].json(), json!("south again"));
}

#[tokio::test]
async fn the_session_cookie_opens_streams_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "ed", "pw", "acme").await;
    // Without asking, no cookie (API clients are not handed one).
    let plain = c
        .post(s.url("/login"))
        .body(json!({"username": "ed", "password": "pw"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("set-cookie").is_none());
    let resp = c
        .post(s.url("/login"))
        .body(json!({"username": "ed", "password": "pw", "session_cookie": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let jwt = resp.json::<Value>().await.unwrap()["jwt"]
        .as_str()
        .unwrap()
        .to_owned();
    // The cookie holds a stream-only token, not the login JWT.
    let token = set_cookie
        .strip_prefix("broker_session=")
        .and_then(|rest| rest.strip_suffix("; Path=/sse; HttpOnly; SameSite=Strict; Max-Age=86400"))
        .unwrap_or_else(|| panic!("{set_cookie}"));
    assert_ne!(token, jwt);
    insert(&c, &s, &jwt, "hello", json!("cookie")).await;
    let cookie = format!("other=1; broker_session={token}");
    let stream = c
        .get(s.url("/sse"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let mut sse = Sse::from_response(stream);
    assert_eq!(sse.take(1, WAIT).await[0].json(), json!("cookie"));
    // The cookie is not a credential anywhere else: no cross-site request can write with it.
    let write = c
        .post(s.url("/insert"))
        .header("cookie", &cookie)
        .body(json!({"event": "x", "data": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401);
    // A forged cookie is refused.
    let forged = c
        .get(s.url("/sse"))
        .header("cookie", "broker_session=not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // Logout expires the cookie.
    let out = c.post(s.url("/logout")).send().await.unwrap();
    assert_eq!(out.status(), 200);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("broker_session=; Path=/sse; HttpOnly; SameSite=Strict; Max-Age=0")
    );
}

#[tokio::test]
async fn cors_preflights_and_credentials_follow_the_origin_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--origin", "http://app.example:3000"]);
    let c = client();
    create_user(&c, &s, "fi", "pw", "acme").await;
    let preflight = |origin: &str, method: &str, headers: &str| {
        c.request(reqwest::Method::OPTIONS, s.url("/sse_ticket"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let ok = preflight("http://app.example:3000", "POST", "authorization")
        .await
        .unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "http://app.example:3000");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-headers"], "authorization");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let refused = preflight("http://evil.example", "POST", "authorization")
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(
        preflight("http://app.example:3000", "POST", "x-unknown")
            .await
            .unwrap()
            .status(),
        403
    );
    // The actual request carries the CORS answer, errors included.
    let resp = c
        .post(s.url("/login"))
        .header("origin", "http://app.example:3000")
        .header("content-type", "application/json")
        .body(json!({"username": "fi", "password": "wrong"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://app.example:3000"
    );
    assert_eq!(resp.headers()["vary"], "Origin");
    // The server's own pages (the console) are same-origin, whatever --origin says.
    let own = s.base.clone();
    let (status, _) = {
        let resp = c
            .post(s.url("/server_stats"))
            .header("origin", own)
            .header("content-type", "application/json")
            .body(json!({"admin_token": ADMIN}).to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), ())
    };
    assert_eq!(status, 200);

    // `*` allows any origin but never credentials.
    let dir = tempfile::tempdir().unwrap();
    let any = Server::start(dir.path(), &[]);
    let resp = c
        .get(any.url("/"))
        .header("origin", "http://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(
        resp.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
}

#[tokio::test]
async fn the_console_is_embedded_with_a_strict_policy_and_stats_are_admin_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    for (path, content_type, needle) in [
        ("/console", "text/html; charset=utf-8", "Broker console"),
        ("/console/", "text/html; charset=utf-8", "Broker console"),
        (
            "/console/console.js",
            "text/javascript; charset=utf-8",
            "admin_sse_ticket",
        ),
        ("/console/console.css", "text/css; charset=utf-8", "dialog"),
    ] {
        let resp = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], content_type, "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let text = resp.text().await.unwrap();
        assert!(text.contains(needle), "{path}");
        // Nothing from elsewhere: no CDN.
        assert!(!text.contains("https://"), "{path} loads something remote");
    }
    let missing = c.get(s.url("/console/nope.js")).send().await.unwrap();
    let (status, message) = error_of(missing).await;
    assert_eq!(status, 404);
    assert!(message.contains("nope.js"));

    create_user(&c, &s, "gu", "pw", "acme").await;
    let jwt = login(&c, &s, "gu", "pw").await;
    insert(&c, &s, &jwt, "e", json!(1)).await;
    let (status, _) = post(&c, s.url("/server_stats"), json!({"admin_token": "no"})).await;
    assert_eq!(status, 401);
    let (status, stats) = post(&c, s.url("/server_stats"), json!({"admin_token": ADMIN})).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["status"], "ok");
    assert_eq!(stats["users"], 1);
    assert_eq!(stats["tenants"], 1);
    assert_eq!(stats["cursor"], 2);
    assert_eq!(stats["log"], "embedded");
    assert!(stats["log_bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["log_segments"], 1);
}

/// `POST /login {"session_cookie": true}` for `username`: the cookie's stream-only token.
async fn cookie_token(c: &reqwest::Client, s: &Server, username: &str) -> String {
    let resp = c
        .post(s.url("/login"))
        .body(json!({"username": username, "password": "pw", "session_cookie": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let pair = set_cookie.split(';').next().unwrap();
    pair.strip_prefix("broker_session=")
        .unwrap_or_else(|| panic!("{set_cookie}"))
        .to_owned()
}

/// `GET /sse` with the session cookie and `headers`.
async fn sse_with_cookie(
    c: &reqwest::Client,
    s: &Server,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = c
        .get(s.url("/sse"))
        .header("cookie", format!("broker_session={token}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// F5 (security review): a page on another port of the same host (same site, so
/// `SameSite=Strict` sends the cookie) opened streams as its visitor under the default
/// `--origin *`. The cookie now counts only from the server's own pages, origins `--origin`
/// names, and clients that are no browser page.
#[tokio::test]
async fn the_session_cookie_counts_only_from_pages_trusted_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "hal", "pw", "acme").await;
    let jwt = login(&c, &s, "hal", "pw").await;
    insert(&c, &s, &jwt, "mine", json!("hal's")).await;
    let token = cookie_token(&c, &s, "hal").await;
    let other_port = format!("http://127.0.0.1:{}", free_port());

    // Pages of other origins: admitted by `*` to what needs no credentials, but the cookie
    // is as if absent (the same 401 as no credentials at all).
    for headers in [
        &[("origin", other_port.as_str())][..],
        &[
            ("origin", other_port.as_str()),
            ("sec-fetch-site", "same-site"),
        ],
        // A `no-cors` fetch sends no Origin; Sec-Fetch-Site gives the page away.
        &[("sec-fetch-site", "same-site")],
        &[("sec-fetch-site", "cross-site")],
    ] {
        let resp = sse_with_cookie(&c, &s, &token, headers).await;
        assert_eq!(resp.status(), 401, "{headers:?}");
    }
    // A Bearer token from the same page still opens its stream.
    let resp = c
        .get(s.url("/sse"))
        .header("origin", &other_port)
        .header("cookie", format!("broker_session={token}"))
        .header("authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);

    // The server's own pages, the user's own navigation, and clients that are no page.
    for headers in [
        &[("sec-fetch-site", "same-origin")][..],
        &[("sec-fetch-site", "none")],
        &[
            ("origin", s.base.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        &[],
    ] {
        let resp = sse_with_cookie(&c, &s, &token, headers).await;
        assert_eq!(resp.status(), 200, "{headers:?}");
        let mut sse = Sse::from_response(resp);
        assert_eq!(
            sse.take(1, WAIT).await[0].json(),
            json!("hal's"),
            "{headers:?}"
        );
    }

    // An origin `--origin` lists by name is trusted with credentials.
    let dir = tempfile::tempdir().unwrap();
    let listed = Server::start(dir.path(), &["--origin", &other_port]);
    create_user(&c, &listed, "hal", "pw", "acme").await;
    let token = cookie_token(&c, &listed, "hal").await;
    let resp = sse_with_cookie(
        &c,
        &listed,
        &token,
        &[
            ("origin", other_port.as_str()),
            ("sec-fetch-site", "same-site"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        other_port.as_str()
    );
    drop(resp);
    // Without an Origin the same page's `no-cors` request is still not trusted.
    let resp = sse_with_cookie(&c, &listed, &token, &[("sec-fetch-site", "same-site")]).await;
    assert_eq!(resp.status(), 401);
}

/// F5 (security review): a page on another port of this host planted `broker_session` at
/// `Path=/`; sent to `/sse` beside the real one, it made every stream 400, and logout expired
/// only the `Path=/sse` cookie. Logout now expires both.
#[tokio::test]
async fn logout_expires_the_session_cookie_at_both_paths_that_reach_sse() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create_user(&c, &s, "ida", "pw", "acme").await;
    let token = cookie_token(&c, &s, "ida").await;
    // What the browser sends once a planted copy sits beside the real cookie.
    let resp = c
        .get(s.url("/sse"))
        .header(
            "cookie",
            format!("broker_session=planted; broker_session={token}"),
        )
        .send()
        .await
        .unwrap();
    let (status, message) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(message.contains("log out"), "{message}");

    let out = c.post(s.url("/logout")).send().await.unwrap();
    assert_eq!(out.status(), 200);
    let expired = set_cookies(&out);
    assert_eq!(
        expired,
        [
            "broker_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            "broker_session=; Path=/sse; HttpOnly; SameSite=Strict; Max-Age=0",
        ]
    );
    // Tenth attack review: a page on another port of `broker.test` set the cookie with
    // `Domain=broker.test`, a cookie apart from the host-only one, and it outlived logout
    // (as would `Domain=example` from a sibling subdomain). Each is expired now.
    let out = c
        .post(s.url("/logout"))
        .header("host", "app.b.c.d.e.broker.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let expired = set_cookies(&out);
    let cookie =
        |rest: &str| format!("broker_session=; {rest}HttpOnly; SameSite=Strict; Max-Age=0");
    let mut wanted = Vec::new();
    for path in ["Path=/; ", "Path=/sse; "] {
        wanted.push(cookie(path));
        for domain in [
            "app.b.c.d.e.broker.test",
            "b.c.d.e.broker.test",
            "c.d.e.broker.test",
            "d.e.broker.test",
            "e.broker.test",
            "broker.test",
        ] {
            wanted.push(format!("{}; Domain={domain}", cookie(path)));
        }
    }
    wanted.sort();
    assert_eq!(expired, wanted);
    // A `Host` that is no plain name adds nothing (it is the client's, and reaches a header).
    for host in ["127.0.0.1:9", "localhost", "x.example;Domain=evil"] {
        let out = c
            .post(s.url("/logout"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(set_cookies(&out).len(), 2, "{host}");
    }

    // Over TLS (at a trusted proxy) only `__Host-` is read, and it can only have `Path=/`.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--trusted_proxies", "127.0.0.1"]);
    let out = c
        .post(s.url("/logout"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        set_cookies(&out),
        ["__Host-broker_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"]
    );
}

/// The `Set-Cookie` headers of `resp`, sorted.
fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    let mut cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    cookies.sort();
    cookies
}
