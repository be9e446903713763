//! The admin token as the `X-Admin-Token` header (issue 18): every admin route takes it
//! instead of the body field, a header and a body that disagree are refused without trying
//! either, wrong headers count toward the same 429 as wrong body fields, `--origin *` still
//! never opens admin routes, and `/openapi.json` declares the scheme on every admin operation.

use crate::common::*;
use serde_json::{Value, json};

/// POST `body` with `X-Admin-Token: token` (and `extra` headers).
async fn admin_post(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    token: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = c.post(s.url(path)).header("x-admin-token", token);
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn every_admin_route_takes_the_header_instead_of_the_body_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let (status, body) = admin_post(
        &c,
        &s,
        "/create_user",
        ADMIN,
        Some(json!({"username": "hd", "password": "pw", "tenant_name": "t"})),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Routes whose body is only the token need no body at all with the header.
    for path in ["/list_users", "/server_stats", "/list_tenants"] {
        let (status, body) = admin_post(&c, &s, path, ADMIN, None, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let user = json!({"username": "hd"});
    for (path, body) in [
        ("/get_user", user.clone()),
        ("/update_user", json!({"username": "hd", "data": {"k": 1}})),
        ("/create_qr", json!({"username": "hd", "issuer": "Acme"})),
        ("/create_totp", user.clone()),
        ("/list_users", json!({"sort": "-created", "limit": 5})),
        ("/revoke_user", user.clone()),
        ("/unrevoke_user", user.clone()),
        ("/admin_sse_ticket", json!({"tenant_name": "t"})),
        ("/compact", json!({"retain": "0"})),
    ] {
        let (status, reply) = admin_post(&c, &s, path, ADMIN, Some(body.clone()), &[]).await;
        assert_eq!(status, 200, "{path}: {reply}");
        // The same header and body field together are fine.
        let mut both = body.clone();
        both["admin_token"] = json!(ADMIN);
        let (status, reply) = admin_post(&c, &s, path, ADMIN, Some(both), &[]).await;
        assert_eq!(status, 200, "{path} with both: {reply}");
        // A wrong header is 401 whatever the route.
        let (status, reply) = admin_post(&c, &s, path, "wrong", Some(body), &[]).await;
        assert_eq!(status, 401, "{path}: {reply}");
    }
    // The body field alone still works (15.x clients).
    let (status, _) = post(
        &c,
        s.url("/get_user"),
        json!({"admin_token": ADMIN, "username": "hd"}),
    )
    .await;
    assert_eq!(status, 200);
    // Neither: 401 that says both ways in.
    let (status, reply) = post(&c, s.url("/get_user"), json!({"username": "hd"})).await;
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("X-Admin-Token"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_header_and_a_body_field_that_differ_are_refused_without_trying_either() {
    let dir = tempfile::tempdir().unwrap();
    // One wrong token per address before 429: a conflict must not count as one.
    let s = Server::start(dir.path(), &["--max_failures_per_address", "2"]);
    let c = client();
    for (header, field) in [(ADMIN, "wrong"), ("wrong", ADMIN), ("a", "b")] {
        let (status, reply) = admin_post(
            &c,
            &s,
            "/list_users",
            header,
            Some(json!({"admin_token": field})),
            &[],
        )
        .await;
        assert_eq!(status, 400, "{header}/{field}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("differ"),
            "{reply}"
        );
    }
    // The header twice (a proxy that appends, or a probe of which one wins): 400.
    let resp = c
        .post(s.url("/list_users"))
        .header("x-admin-token", ADMIN)
        .header("x-admin-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // None of that counted: the right token still works.
    let (status, _) = admin_post(&c, &s, "/list_users", ADMIN, None, &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_headers_count_toward_the_same_limit_as_wrong_body_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max_failures_per_address", "4"]);
    let c = client();
    // Two wrong by header, two by body field: one bucket.
    for token in ["w1", "w2"] {
        assert_eq!(
            admin_post(&c, &s, "/list_users", token, None, &[]).await.0,
            401
        );
        let (status, _) = post(&c, s.url("/list_users"), json!({"admin_token": token})).await;
        assert_eq!(status, 401);
    }
    // Now wrong tokens are held back, by either way in, with retry-after.
    let resp = c
        .post(s.url("/list_users"))
        .header("x-admin-token", "w3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let (status, _) = post(&c, s.url("/list_users"), json!({"admin_token": "w4"})).await;
    assert_eq!(status, 429);
    // The right one passes, by either way in: it is long and random, so the lock is not
    // what keeps it unguessed, and anyone sharing the admin's address (a NAT, a proxy not
    // named in --trusted_proxies) locked the admin out with it (an attack review).
    assert_eq!(
        admin_post(&c, &s, "/list_users", ADMIN, None, &[]).await.0,
        200
    );
    let (status, _) = post(&c, s.url("/list_users"), json!({"admin_token": ADMIN})).await;
    assert_eq!(status, 200);
    drop(s);
    // A guessable token (allowed on loopback only) stays locked, right or wrong.
    let short = "letmein-too";
    let s = Server::start(
        &dir.path().join("short"),
        &["--max_failures_per_address", "2", "--admin_token", short],
    );
    for token in ["w1", "w2"] {
        assert_eq!(
            admin_post(&c, &s, "/list_users", token, None, &[]).await.0,
            401
        );
    }
    assert_eq!(
        admin_post(&c, &s, "/list_users", short, None, &[]).await.0,
        429
    );
}

#[tokio::test]
async fn hostile_header_values_are_wrong_tokens_never_faults() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max_failures_per_address", "1000"]);
    let c = client();
    let long = "x".repeat(60_000);
    // Whitespace around a header value is not part of it (RFC 9110, 5.5): these are the
    // token, as a body field with the spaces would not be.
    for padded in [
        format!(" {ADMIN}"),
        format!("{ADMIN} "),
        format!("{ADMIN}\t"),
    ] {
        assert_eq!(
            admin_post(&c, &s, "/list_users", &padded, None, &[])
                .await
                .0,
            200,
            "{padded:?}"
        );
    }
    for token in ["", "LETMEIN", "let me in", long.as_str()] {
        let resp = c
            .post(s.url("/list_users"))
            .header("x-admin-token", token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status == 401 || status == 431 || status == 400,
            "{} bytes: {status} {body}",
            token.len()
        );
        if status == 401 {
            assert!(body["error"].is_string(), "{body}");
        }
    }
    // Bytes that are no UTF-8 (obs-text): compared as bytes, simply wrong.
    let resp = c
        .post(s.url("/list_users"))
        .header(
            "x-admin-token",
            reqwest::header::HeaderValue::from_bytes(b"let\xffme").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The server is unharmed.
    assert_eq!(
        admin_post(&c, &s, "/list_users", ADMIN, None, &[]).await.0,
        200
    );
}

#[tokio::test]
async fn origin_star_never_opens_admin_routes_even_with_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--origin", "*"]);
    let c = client();
    let page = [
        ("origin", "https://evil.example"),
        ("content-type", "application/json"),
    ];
    let (status, reply) = admin_post(&c, &s, "/list_users", ADMIN, Some(json!({})), &page).await;
    assert_eq!(status, 403, "{reply}");
    // A preflight may list the header (so a page that --origin names can send it) …
    let named = Server::start(
        tempfile::tempdir().unwrap().path(),
        &["--origin", "https://console.example"],
    );
    let resp = c
        .request(reqwest::Method::OPTIONS, named.url("/list_users"))
        .header("origin", "https://console.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-admin-token, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let allowed = resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("x-admin-token"), "{allowed}");
    // … and that named page is let in with it.
    let (status, reply) = admin_post(
        &c,
        &named,
        "/list_users",
        ADMIN,
        Some(json!({})),
        &[
            ("origin", "https://console.example"),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn openapi_declares_the_header_on_every_admin_operation() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let spec: Value = reqwest::get(s.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scheme = &spec["components"]["securitySchemes"]["admin_token"];
    assert_eq!(scheme["type"], "apiKey", "{scheme}");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "X-Admin-Token");
    let mut admin_ops = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let body_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap_or("");
            let name = body_ref.rsplit('/').next().unwrap_or("");
            let takes_token = spec["components"]["schemas"][name]["properties"]
                .get("admin_token")
                .is_some();
            let security = op["security"].as_array().cloned().unwrap_or_default();
            let declares = security.iter().any(|s| s.get("admin_token").is_some());
            if declares && op.get("requestBody").is_none() {
                // No body (GET /events): the header is the only way in, so it is not optional.
                assert!(
                    !security
                        .iter()
                        .any(|s| s.as_object().is_some_and(|o| o.is_empty())),
                    "{method} {path}: {security:?}"
                );
                admin_ops += 1;
                continue;
            }
            assert_eq!(
                takes_token, declares,
                "{method} {path}: admin_token in the body and the header scheme go together"
            );
            if takes_token {
                admin_ops += 1;
                // Optional: the body field is the other way in.
                assert!(
                    security
                        .iter()
                        .any(|s| s.as_object().is_some_and(|o| o.is_empty())),
                    "{method} {path}: {security:?}"
                );
                let required = spec["components"]["schemas"][name]["required"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    !required.contains(&json!("admin_token")),
                    "{method} {path}: admin_token must be optional in the body"
                );
            }
        }
    }
    assert!(admin_ops >= 11, "only {admin_ops} admin operations found");
}
