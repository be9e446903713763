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
