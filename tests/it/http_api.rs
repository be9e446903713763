//! The HTTP contract of API.md against the real binary: uniqueness under races, and every
//! kind of bad input answered with the right 4xx and a JSON error while the server keeps serving.

use crate::common::*;
use base64::Engine as _;
use serde_json::{Value, json};

#[tokio::test]
async fn fifty_concurrent_creates_of_one_username_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        let url = s.url("/create_user");
        tasks.push(tokio::spawn(async move {
            post(
                &c,
                url,
                json!({"username": "same", "password": format!("pw{i}"), "admin_token": ADMIN, "tenant_name": format!("t{i}")}),
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut taken = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            400 => {
                assert!(
                    body["error"].as_str().unwrap().contains("already taken"),
                    "{body}"
                );
                taken += 1
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, taken), (1, 49));
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let resp = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // Liveness and nothing more: the global cursor it showed moved with every write of
    // every tenant, for anyone to watch (an attack review).
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let resp = c.head(s.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c.get(s.url("/no/such/thing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string());
    let resp = c.get(s.url("/insert")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn openapi_document_and_swagger_ui_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let spec: Value = c
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/", "/create_user", "/login", "/insert", "/sse"] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let create = &spec["paths"]["/create_user"]["post"];
    assert!(create["responses"]["400"].is_object());
    assert!(create["requestBody"]["content"]["application/json"].is_object());
    // Every authentication scheme is declared, and each route names the ones it takes.
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["sse_ticket"]["in"], "query");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    let security = |path: &str, method: &str| -> Vec<String> {
        spec["paths"][path][method]["security"]
            .as_array()
            .map(|a| {
                a.iter()
                    .flat_map(|r| r.as_object().unwrap().keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (path, method) in [
        ("/insert", "post"),
        ("/verify", "get"),
        ("/sse_ticket", "post"),
    ] {
        assert_eq!(security(path, method), ["bearer", "basic"], "{path}");
    }
    assert_eq!(
        security("/sse", "get"),
        ["bearer", "basic", "sse_ticket", "session_cookie"]
    );
    // Every error status documents the {"error": …} body.
    let mut errors = 0;
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    errors += 1;
                    if (path.as_str(), status.as_str()) == ("/ready", "503") {
                        // {"error"} and the reason as a word for probes.
                        let body = &spec["components"]["schemas"]["NotReadyBody"];
                        assert!(body["properties"]["error"].is_object(), "{body}");
                        assert!(body["properties"]["reason"].is_object(), "{body}");
                        continue;
                    }
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(errors > 80, "{errors}");
    // Each route lists the errors it can answer, not every error there is.
    let statuses = |path: &str, method: &str| -> Vec<String> {
        spec["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|s| *s != "200")
            .cloned()
            .collect()
    };
    // Basic credentials are throttled (429) and wait in a bounded hash queue (503).
    assert_eq!(statuses("/verify", "get"), ["401", "429", "500", "503"]);
    // 403: --enforce_scopes.
    assert_eq!(
        statuses("/sse", "get"),
        ["400", "401", "403", "429", "500", "503"]
    );
    assert_eq!(
        statuses("/sse_ticket", "post"),
        ["401", "429", "500", "503"]
    );
    // 403: a missing scope (--enforce_scopes); 422: an Idempotency-Key reused for another
    // request.
    for insert in ["/insert", "/admin_insert"] {
        assert_eq!(
            statuses(insert, "post"),
            [
                "400", "401", "403", "413", "422", "429", "500", "503", "507"
            ]
        );
        // The optional header is declared, so Swagger UI and generated clients offer it.
        let params = spec["paths"][insert]["post"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{insert}: no parameters"));
        let key = params
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{insert}: no Idempotency-Key in {params:?}"));
        assert_eq!(key["in"], "header", "{key}");
        // What the server accepts: 1–255 printable ASCII bytes.
        assert_eq!(key["schema"]["minLength"], 1, "{key}");
        assert_eq!(key["schema"]["maxLength"], 255, "{key}");
        assert_eq!(key["schema"]["pattern"], "^[ -~]*$", "{key}");
        assert_ne!(key["required"], true, "{key}");
    }
    assert_eq!(
        statuses("/get_user", "post"),
        ["400", "401", "404", "413", "429", "500"]
    );
    assert_eq!(
        statuses("/revoke_user", "post"),
        ["400", "401", "404", "413", "429", "500", "503"]
    );
    assert!(statuses("/", "get").is_empty());
    assert!(
        spec["paths"]["/login"]["post"]["responses"]["429"]["headers"]["retry-after"].is_object()
    );
    assert_eq!(
        spec["components"]["schemas"]["ErrorBody"]["required"],
        json!(["error"])
    );
    let docs = c.get(s.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("Swagger UI"));
}

/// The body schemas declare the limits the server enforces (`state::validate`), so that a
/// client or a fuzzer reading /openapi.json knows `{"event": ""}` is refused before sending it.
/// (JSON Schema counts characters where the server counts bytes: the declared maximum is the
/// byte limit, which no longer string passes; the descriptions say bytes.)
#[tokio::test]
async fn body_schemas_declare_the_limits_the_server_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let spec: Value = c
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &spec["components"]["schemas"];
    let no_control = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";
    for (schema, field, max, pattern) in [
        ("Insert", "event", 255, Some(no_control)),
        ("AdminInsert", "event", 255, Some(no_control)),
        ("AdminInsert", "tenant_name", 128, Some(no_control)),
        ("CreateUser", "tenant_name", 128, Some(no_control)),
        (
            "CreateUser",
            "username",
            128,
            Some("^[^\\x00-\\x1F\\x7F-\\x9F:]*$"),
        ),
        ("CreateUser", "password", 1024, None),
        ("UpdateUser", "tenant_name", 128, Some(no_control)),
        ("UpdateUser", "password", 1024, None),
        ("PasswordReset", "password", 1024, None),
        ("AdminSseTicket", "tenant_name", 128, Some(no_control)),
    ] {
        let property = &schemas[schema]["properties"][field];
        assert_eq!(property["minLength"], 1, "{schema}.{field}: {property}");
        assert_eq!(property["maxLength"], max, "{schema}.{field}: {property}");
        match pattern {
            Some(p) => assert_eq!(property["pattern"], p, "{schema}.{field}: {property}"),
            None => assert!(property["pattern"].is_null(), "{schema}.{field}"),
        }
    }
    // What the schema declares, the server refuses, with {"error"} naming the field.
    let (status, body) = post(
        &c,
        s.url("/admin_insert"),
        json!({"admin_token": ADMIN, "tenant_name": "t", "event": "", "data": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("event"), "{body}");
    // `limit` on /events: 1–1000.
    let limit = spec["paths"]["/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["minimum"].as_f64(), Some(1.0), "{limit}");
    assert_eq!(limit["schema"]["maximum"].as_f64(), Some(1000.0), "{limit}");
}

/// Swagger UI groups operations by tag: every operation has exactly one, of the declared set.
#[tokio::test]
async fn every_operation_has_exactly_one_tag() {
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
    // poem-openapi lists the tags in name order.
    let declared: Vec<&str> = spec["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        declared,
        [
            "admin",
            "events",
            "operations",
            "streams",
            "two-factor",
            "users"
        ]
    );
    for tag in spec["tags"].as_array().unwrap() {
        assert!(tag["description"].is_string(), "{tag}");
    }
    let mut used = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let tags = op["tags"].as_array().map(Vec::as_slice).unwrap_or_default();
            assert_eq!(tags.len(), 1, "{method} {path}: {tags:?}");
            let tag = tags[0].as_str().unwrap();
            assert!(declared.contains(&tag), "{method} {path}: {tag}");
            used.entry(tag.to_owned())
                .or_default()
                .push(format!("{method} {path}"));
        }
    }
    assert_eq!(
        used.len(),
        declared.len(),
        "a tag with no operation: {used:?}"
    );
    let mut events = used["events"].clone();
    events.sort();
    assert_eq!(events, ["get /events", "post /insert"]);
    assert!(
        used["admin"].contains(&"post /admin_insert".to_owned()),
        "{used:?}"
    );
}

/// RFC 9110: a 405 names the methods the path does support. Each path of /openapi.json, sent
/// every other method, answers 405 with `{"error"}` and an `Allow` of exactly its methods
/// (HEAD wherever GET is: poem answers it with the GET handler). A plain OPTIONS is a 405 too:
/// OPTIONS is answered only as a CORS preflight, so `Allow` does not list it.
#[tokio::test]
async fn every_405_carries_allow_with_the_methods_of_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let spec: Value = c
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut paths: Vec<(String, Vec<String>)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, ops)| {
            let declared: Vec<String> = ops
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_uppercase())
                .collect();
            let allowed = ["GET", "HEAD", "POST"]
                .into_iter()
                .filter(|m| {
                    declared.iter().any(|d| d == m)
                        || (*m == "HEAD" && declared.iter().any(|d| d == "GET"))
                })
                .map(str::to_owned)
                .collect();
            (path.clone(), allowed)
        })
        .collect();
    assert!(paths.len() > 20, "{paths:?}");
    paths.push(("/metrics".into(), vec!["GET".into(), "HEAD".into()]));
    let mut checked = 0;
    for (path, allowed) in &paths {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            if allowed.iter().any(|m| m == method) {
                continue;
            }
            let resp = c
                .request(method.parse().unwrap(), s.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 405, "{method} {path}");
            let allow = resp
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow"))
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(allow, allowed.join(", "), "{method} {path}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].is_string(), "{method} {path}: {body}");
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

#[tokio::test]
async fn flags_come_from_broker_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::try_start_env(dir.path(), &[], &[("BROKER_ADMIN_TOKEN", "from-env")]).unwrap();
    let c = client();
    let body = |token: &str| json!({"username": "envy", "password": "pw", "admin_token": token, "tenant_name": "t"});
    assert_eq!(post(&c, s.url("/create_user"), body(ADMIN)).await.0, 401);
    assert_eq!(
        post(&c, s.url("/create_user"), body("from-env")).await.0,
        200
    );
}

#[tokio::test]
async fn cors_follows_the_configured_origin() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--origin", "https://app.example"]);
    let c = client();
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, s.url("/insert"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn bodies_are_json_whatever_the_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let body = json!({"username": "form", "password": "pw", "admin_token": ADMIN, "tenant_name": "t", "unknown_field": [1, 2]});
    let resp = c
        .post(s.url("/create_user"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .post(s.url("/login"))
        .body(json!({"username": "form", "password": "pw"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Asserts a 4xx with a JSON `error` that mentions `needle`.
async fn expect_error(resp: (u16, Value), status: u16, needle: &str) {
    let (got, body) = resp;
    assert_eq!(got, status, "body: {body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error: {body}"));
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{message:?} does not mention {needle:?}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max_body_bytes", "4096"]);
    let c = client();
    assert_eq!(create_user(&c, &s, "eve", "pw", "t").await, 200);
    let jwt = login(&c, &s, "eve", "pw").await;
    let bearer = format!("Bearer {jwt}");
    let insert_raw = |body: String, auth: Option<String>| {
        let c = c.clone();
        let url = s.url("/insert");
        async move { post_raw(&c, url, body, auth.as_deref()).await }
    };

    // Malformed JSON, wrong types, missing fields, invalid UTF-8, empty body.
    expect_error(
        post_raw(&c, s.url("/login"), "{not json".into(), None).await,
        400,
        "malformed JSON",
    )
    .await;
    expect_error(
        post(&c, s.url("/login"), json!({"username": 5, "password": "x"})).await,
        400,
        "username",
    )
    .await;
    expect_error(
        post(&c, s.url("/login"), json!({"password": "x"})).await,
        400,
        "username",
    )
    .await;
    expect_error(
        post(
            &c,
            s.url("/create_user"),
            json!({"username": "x", "password": "p", "admin_token": ADMIN}),
        )
        .await,
        400,
        "tenant_name",
    )
    .await;
    expect_error(
        post_raw(&c, s.url("/login"), String::new(), None).await,
        400,
        "empty",
    )
    .await;
    let resp = c
        .post(s.url("/login"))
        .body(vec![b'"', 0xff, 0xfe, b'"'])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    expect_error(
        insert_raw(json!({"event": "e"}).to_string(), Some(bearer.clone())).await,
        400,
        "data",
    )
    .await;

    // Oversize bodies: 413, under the configured limit (`/insert` is served off the route
    // table, with the limit passed to it).
    let big = json!({"event": "e", "data": "x".repeat(10_000)}).to_string();
    expect_error(
        insert_raw(big, Some(bearer.clone())).await,
        413,
        "larger than 4096 bytes",
    )
    .await;

    // Event names with newlines or control characters, empty or too long.
    for bad in [
        "a\nb",
        "a\rb",
        "tab\there",
        "nul\u{0}",
        "",
        &"x".repeat(256),
    ] {
        expect_error(
            insert_raw(
                json!({"event": bad, "data": 1}).to_string(),
                Some(bearer.clone()),
            )
            .await,
            400,
            "event",
        )
        .await;
    }

    // Invalid values at create.
    for (body, field) in [
        (
            json!({"username": "", "password": "p", "admin_token": ADMIN, "tenant_name": "t"}),
            "username",
        ),
        (
            json!({"username": "a\nb", "password": "p", "admin_token": ADMIN, "tenant_name": "t"}),
            "username",
        ),
        (
            json!({"username": "ok", "password": "", "admin_token": ADMIN, "tenant_name": "t"}),
            "password",
        ),
        (
            json!({"username": "ok", "password": "p", "admin_token": ADMIN, "tenant_name": ""}),
            "tenant_name",
        ),
        (
            json!({"username": "ok", "password": "p", "admin_token": ADMIN, "tenant_name": "t", "scopes": ["a:b:c"]}),
            "scopes",
        ),
        (
            json!({"username": "ok", "password": "p", "admin_token": ADMIN, "tenant_name": "t", "email": "nope"}),
            "email",
        ),
    ] {
        expect_error(post(&c, s.url("/create_user"), body).await, 400, field).await;
    }
    expect_error(
        post(
            &c,
            s.url("/create_user"),
            json!({"username": "x", "password": "p", "admin_token": "wrong", "tenant_name": "t"}),
        )
        .await,
        401,
        "admin",
    )
    .await;

    // Garbage Authorization headers.
    let ok_body = json!({"event": "e", "data": 1}).to_string();
    for auth in [
        None,
        Some("Bearer"),
        Some("Bearer garbage"),
        Some("Basic !!!"),
        Some("Digest abc"),
        Some("Basic ZXZlOndyb25n"),
    ] {
        let (status, body) = insert_raw(ok_body.clone(), auth.map(str::to_owned)).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(body["error"].is_string());
    }
    let resp = c
        .get(s.url("/sse"))
        .header("authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Wrong password and unknown user look the same.
    expect_error(
        post(
            &c,
            s.url("/login"),
            json!({"username": "eve", "password": "nope"}),
        )
        .await,
        401,
        "wrong",
    )
    .await;
    expect_error(
        post(
            &c,
            s.url("/login"),
            json!({"username": "nobody", "password": "nope"}),
        )
        .await,
        401,
        "wrong",
    )
    .await;

    // A JWT signed with another key, an `alg: none` token.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = json!({"sub": "eve", "iat": 1, "exp": 9_999_999_999u64, "iss": "broker", "tenant": "t", "epoch": 1});
    let header = b64.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let payload = b64.encode(claims.to_string());
    let forged = format!("{header}.{payload}.{}", b64.encode([7u8; 32]));
    let none = format!(
        "{}.{payload}.",
        b64.encode(json!({"alg": "none", "typ": "JWT"}).to_string())
    );
    for token in [forged, none] {
        expect_error(
            insert_raw(ok_body.clone(), Some(format!("Bearer {token}"))).await,
            401,
            "invalid token",
        )
        .await;
    }

    // An expired JWT: eve's own claims, signed with the server's key, `exp` in the past (no
    // sleeping for a real one to expire; tests/it/fake_clock.rs moves the server's clock).
    let mut expired = jwt_claims(bearer.trim_start_matches("Bearer "));
    expired["iat"] = json!(1);
    expired["exp"] = json!(2);
    let expired = forge_jwt(JWT_SECRET.as_bytes(), expired);
    expect_error(
        insert_raw(ok_body.clone(), Some(format!("Bearer {expired}"))).await,
        401,
        "expired",
    )
    .await;

    // Still serving, and nothing was stored by any of the above.
    let fresh = login(&c, &s, "eve", "pw").await;
    let (status, body) = insert(&c, &s, &fresh, "fine", json!(1)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["cursor"], 2,
        "only the user and this event are in the log"
    );
}

/// README: an insert's `id` is a UUIDv7 whose time is the server's clock as of its last tick
/// (the coarse clock: at most ~10 ms behind, never ahead), from `/insert` and
/// `/admin_insert` alike, and each one new.
#[tokio::test]
async fn insert_ids_are_uuidv7_of_the_servers_time() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(create_user(&c, &s, "ann", "pw-ann-123", "acme").await, 200);
    let jwt = login(&c, &s, "ann", "pw-ann-123").await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let before = now_ms();
        let (status, reply) = if i % 2 == 0 {
            insert(&c, &s, &jwt, "tick", json!(i)).await
        } else {
            post(
                &c,
                s.url("/admin_insert"),
                json!({"admin_token": ADMIN, "tenant_name": "acme", "event": "tick", "data": i}),
            )
            .await
        };
        let after = now_ms();
        assert_eq!(status, 200, "{reply}");
        let id = uuid::Uuid::parse_str(reply["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7, "{id}");
        let (secs, nanos) = id.get_timestamp().expect("a v7 id has a time").to_unix();
        let at = secs * 1000 + u64::from(nanos) / 1_000_000;
        // A tick is at most 10 ms; 50 leaves room for a descheduled test.
        assert!(
            at <= after && at + 50 >= before,
            "{id}: {at} not within [{before} - 50, {after}]"
        );
        assert!(seen.insert(id), "{id} twice");
    }
}
