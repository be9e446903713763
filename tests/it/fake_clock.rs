//! The real router in-process with a fake clock: the brute-force limit lifts when the window
//! passes, JWT expiry and TOTP codes follow the server's clock — no sleeping.

use std::sync::Arc;

use broker::auth::Clock;
use broker::config::Cli;
use broker::engine::Engine;
use broker::http::{self, App};
use clap::Parser;
use serde_json::{Value, json};

struct Running {
    base: String,
    clock: Clock,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn start(flags: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().to_str().unwrap().to_owned();
    let args = ["broker", "--db", &db, "--fsync", "never"]
        .into_iter()
        .chain(flags.iter().copied());
    let config = Cli::try_parse_from(args).unwrap().serve.validate().unwrap();
    let clock = Clock::default();
    let stamp = clock.clone();
    let (engine, _) =
        Engine::open(config.engine_options(), Arc::new(move || stamp.now_ms())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = App::new(
        engine.clone(),
        config,
        clock.clone(),
        biscuit_auth::KeyPair::new(),
    );
    tokio::spawn(http::serve(listener, app, std::future::pending()));
    Running {
        base,
        clock,
        engine,
        _dir: dir,
    }
}

async fn post(base: &str, path: &str, body: Value, auth: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_string());
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create(base: &str, username: &str, extra: Value) {
    let mut body = json!({"username": username, "password": "right", "admin_token": "letmein", "tenant_name": "t"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    assert_eq!(post(base, "/create_user", body, None).await.0, 200);
}

#[tokio::test]
async fn the_failure_limit_lifts_when_the_window_passes() {
    let r = start(&["--max_failures", "5", "--failure_window_secs", "60"]).await;
    create(&r.base, "bob", json!({})).await;
    for _ in 0..5 {
        let (status, _) = post(
            &r.base,
            "/login",
            json!({"username": "bob", "password": "wrong"}),
            None,
        )
        .await;
        assert_eq!(status, 401);
    }
    let right = json!({"username": "bob", "password": "right"});
    assert_eq!(post(&r.base, "/login", right.clone(), None).await.0, 429);
    r.clock.set_offset_ms(30_000);
    assert_eq!(
        post(&r.base, "/login", right.clone(), None).await.0,
        429,
        "still inside the window"
    );
    r.clock.set_offset_ms(61_000);
    assert_eq!(
        post(&r.base, "/login", right, None).await.0,
        200,
        "the limit lifted"
    );
    r.engine.shutdown().await;
}

#[tokio::test]
async fn jwt_expiry_and_totp_follow_the_server_clock() {
    let r = start(&["--jwt_expiry", "600"]).await;
    create(&r.base, "ann", json!({"two_factor": true})).await;
    // Skew the server's clock by a day: codes and token times follow it.
    let skew_ms = 86_400_000;
    r.clock.set_offset_ms(skew_ms);
    let secret = r
        .engine
        .read(|s| s.user("ann").unwrap().totp_secret.clone());
    let local_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let server_now = local_now + 86_400;
    let local_code = broker::auth::totp::login_code(&secret, local_now).unwrap();
    let server_code = broker::auth::totp::login_code(&secret, server_now).unwrap();
    let (status, _) = post(
        &r.base,
        "/login",
        json!({"username": "ann", "password": "right", "totp": local_code}),
        None,
    )
    .await;
    assert_eq!(
        status, 401,
        "a code of the local (unskewed) time is refused"
    );
    let (status, reply) = post(
        &r.base,
        "/login",
        json!({"username": "ann", "password": "right", "totp": server_code}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let jwt = reply["jwt"].as_str().unwrap().to_owned();
    let claims: Value = {
        use base64::Engine as _;
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let iat = claims["iat"].as_u64().unwrap();
    assert!(
        iat.abs_diff(server_now) <= 2,
        "iat {iat} is not the server's time {server_now}"
    );
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 600);

    let bearer = format!("Bearer {jwt}");
    let insert = json!({"event": "e", "data": 1});
    assert_eq!(
        post(&r.base, "/insert", insert.clone(), Some(&bearer))
            .await
            .0,
        200
    );
    r.clock.set_offset_ms(skew_ms + 601_000);
    let (status, reply) = post(&r.base, "/insert", insert, Some(&bearer)).await;
    assert_eq!(status, 401);
    assert!(reply["error"].as_str().unwrap().contains("expired"));
    r.engine.shutdown().await;
}

async fn refresh(base: &str, auth: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/refresh"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn claims_of(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// `POST /refresh` (issue 18) across an expiry on the server's clock: a fresh token outlives
/// the one it replaced, and an expired token cannot be refreshed.
#[tokio::test]
async fn refresh_gives_a_fresh_expiry_and_an_expired_token_cannot_be_refreshed() {
    let r = start(&["--jwt_expiry", "600"]).await;
    create(&r.base, "ref", json!({})).await;
    let (_, reply) = post(
        &r.base,
        "/login",
        json!({"username": "ref", "password": "right"}),
        None,
    )
    .await;
    let old = reply["jwt"].as_str().unwrap().to_owned();
    let old_exp = claims_of(&old)["exp"].as_u64().unwrap();

    r.clock.set_offset_ms(500_000);
    let (status, reply) = refresh(&r.base, &format!("Bearer {old}")).await;
    assert_eq!(status, 200, "{reply}");
    let new = reply["jwt"].as_str().unwrap().to_owned();
    let claims = claims_of(&new);
    let new_exp = claims["exp"].as_u64().unwrap();
    assert_eq!(new_exp, claims["iat"].as_u64().unwrap() + 600);
    assert!(new_exp >= old_exp + 499, "{old_exp} → {new_exp}");
    assert_eq!(claims["sub"], "ref");
    assert_eq!(claims["tenant"], "t");
    assert_eq!(claims["epoch"], claims_of(&old)["epoch"]);

    // Past the old token's expiry, inside the new one's.
    r.clock.set_offset_ms(700_000);
    let event = json!({"event": "e", "data": 1});
    let (status, reply) = post(
        &r.base,
        "/insert",
        event.clone(),
        Some(&format!("Bearer {old}")),
    )
    .await;
    assert_eq!(status, 401, "{reply}");
    let (status, reply) = refresh(&r.base, &format!("Bearer {old}")).await;
    assert_eq!(status, 401, "an expired token is not refreshed: {reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("expired"),
        "{reply}"
    );
    let (status, _) = post(
        &r.base,
        "/insert",
        event.clone(),
        Some(&format!("Bearer {new}")),
    )
    .await;
    assert_eq!(status, 200);
    // A refreshed token refreshes again (a session lives on while it is used).
    let (status, reply) = refresh(&r.base, &format!("Bearer {new}")).await;
    assert_eq!(status, 200, "{reply}");
    r.engine.shutdown().await;
}

/// Revoked and outdated tokens, Basic, forged and malformed credentials.
#[tokio::test]
async fn refresh_refuses_revoked_outdated_basic_and_forged_tokens() {
    let r = start(&[]).await;
    create(&r.base, "rv", json!({})).await;
    let login = || async {
        let (_, reply) = post(
            &r.base,
            "/login",
            json!({"username": "rv", "password": "right"}),
            None,
        )
        .await;
        reply["jwt"].as_str().unwrap().to_owned()
    };
    let jwt = login().await;
    let bearer = format!("Bearer {jwt}");
    // Replay: a token may be refreshed more than once while it is valid (JWTs are not stored).
    assert_eq!(refresh(&r.base, &bearer).await.0, 200);
    assert_eq!(refresh(&r.base, &bearer).await.0, 200);

    // Basic: 400 even with the right password, and it says what to do.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("rv:right")
    );
    let (status, reply) = refresh(&r.base, &basic).await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("Bearer"),
        "{reply}"
    );
    // Missing, empty, unknown scheme, garbage, forged, huge: 401 with a JSON error.
    let forged = {
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut claims = claims_of(&jwt);
        claims["sub"] = json!("admin");
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    };
    // (Within the 32 KiB a request head may take: a larger one is 431.)
    let huge = format!("Bearer {}", "a".repeat(20_000));
    for auth in [
        "",
        "Bearer ",
        "Token abc",
        "Bearer not.a.jwt",
        &format!("Bearer {forged}"),
        &huge,
    ] {
        let (status, reply) = refresh(&r.base, auth).await;
        assert_eq!(status, 401, "{auth:.40}: {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/refresh", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Outdated: a password change moves the credential epoch.
    let (status, _) = post(
        &r.base,
        "/update_user",
        json!({"admin_token": "letmein", "username": "rv", "password": "righter"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, reply) = refresh(&r.base, &bearer).await;
    assert_eq!(status, 401, "outdated: {reply}");

    // Revoked, and unrevoking does not revive the token.
    let (_, reply) = post(
        &r.base,
        "/login",
        json!({"username": "rv", "password": "righter"}),
        None,
    )
    .await;
    let fresh = format!("Bearer {}", reply["jwt"].as_str().unwrap());
    assert_eq!(refresh(&r.base, &fresh).await.0, 200);
    for path in ["/revoke_user", "/unrevoke_user"] {
        let body = json!({"admin_token": "letmein", "username": "rv"});
        assert_eq!(post(&r.base, path, body, None).await.0, 200);
        let (status, reply) = refresh(&r.base, &fresh).await;
        assert_eq!(status, 401, "after {path}: {reply}");
    }
    r.engine.shutdown().await;
}

/// Ninth attack review, F3: a wrong two-factor code after the right password was just a
/// login failure, so the holder of a password could try 50 codes a minute for ever (~78 %
/// odds within a week). Five wrong codes in a row now lock the user's two-factor login for
/// a minute, twice as long at each further five; a right code clears the count.
#[tokio::test]
async fn wrong_two_factor_codes_in_a_row_lock_the_second_factor_for_longer_each_time() {
    let r = start(&[
        "--max_failures",
        "1000",
        "--max_failures_per_user",
        "1000",
        "--max_failures_per_address",
        "1000",
    ])
    .await;
    create(&r.base, "ann", json!({"two_factor": true})).await;
    let secret = r
        .engine
        .read(|s| s.user("ann").unwrap().totp_secret.clone());
    let code_at = |offset_ms: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .checked_add_signed(offset_ms / 1000)
            .unwrap();
        broker::auth::totp::login_code(&secret, now).unwrap()
    };
    let login = |totp: String, password: &str| json!({"username": "ann", "password": password, "totp": totp});
    // A code no step of the last minutes had.
    let wrong = |offset_ms: i64| {
        let mut code = 0;
        while [-60_000, -30_000, 0, 30_000, 60_000]
            .iter()
            .any(|d| code_at(offset_ms + d) == format!("{code:06}"))
        {
            code += 1;
        }
        format!("{code:06}")
    };
    let mut offset = 0;
    for round in 1..=2 {
        for n in 1..=5 {
            let (status, reply) =
                post(&r.base, "/login", login(wrong(offset), "right"), None).await;
            let expected = if n < 5 { 401 } else { 429 };
            assert_eq!(status, expected, "round {round}, wrong code {n}: {reply}");
        }
        let lock_ms = 60_000 << (round - 1);
        let (status, reply) = post(&r.base, "/login", login(code_at(offset), "right"), None).await;
        assert_eq!(status, 429, "the right code while locked: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("two-factor"),
            "{reply}"
        );
        // Without the password nothing tells of the lock.
        let (status, _) = post(&r.base, "/login", login(code_at(offset), "wrong"), None).await;
        assert_eq!(status, 401);
        offset += lock_ms - 5_000;
        r.clock.set_offset_ms(offset);
        let (status, _) = post(&r.base, "/login", login(code_at(offset), "right"), None).await;
        assert_eq!(
            status, 429,
            "round {round}: still locked 5 s before the end"
        );
        offset += 6_000;
        r.clock.set_offset_ms(offset);
    }
    let (status, reply) = post(&r.base, "/login", login(code_at(offset), "right"), None).await;
    assert_eq!(status, 200, "the lock lifted: {reply}");
    // The right code cleared the count: four wrong ones lock nothing.
    offset += 30_000;
    r.clock.set_offset_ms(offset);
    for _ in 0..4 {
        let (status, _) = post(&r.base, "/login", login(wrong(offset), "right"), None).await;
        assert_eq!(status, 401);
    }
    let (status, reply) = post(&r.base, "/login", login(code_at(offset), "right"), None).await;
    assert_eq!(status, 200, "{reply}");
    r.engine.shutdown().await;
}
