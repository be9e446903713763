//! Identity against the real binary: the admin user API, update semantics, revocation,
//! token lifecycle, biscuit `/verify`, two-factor enrolment and login, single-use password
//! reset, brute-force limits, validation, and what survives a restart.

use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine as _;
use serde_json::{Value, json};

async fn admin(c: &reqwest::Client, s: &Server, path: &str, mut body: Value) -> (u16, Value) {
    body["admin_token"] = json!(ADMIN);
    post(c, s.url(path), body).await
}

async fn create(c: &reqwest::Client, s: &Server, body: Value) -> (u16, Value) {
    admin(c, s, "/create_user", body).await
}

/// GET with a bearer token; returns the status.
async fn get_with(c: &reqwest::Client, s: &Server, path: &str, auth: &str) -> u16 {
    c.get(s.url(path))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn insert_with(c: &reqwest::Client, s: &Server, auth: &str) -> u16 {
    post_raw(
        c,
        s.url("/insert"),
        json!({"event": "e", "data": 1}).to_string(),
        Some(auth),
    )
    .await
    .0
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// No response may ever carry a hash or a secret.
fn assert_no_secrets(value: &Value) {
    let text = value.to_string();
    assert!(!text.contains("$argon2"), "a password hash leaked: {text}");
    assert!(!text.contains("totp_secret"), "a secret leaked: {text}");
}

#[tokio::test]
async fn admin_user_api_success_and_error_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let (status, created) = create(
        &c,
        &s,
        json!({"username": "ann", "password": "pw-ann", "tenant_name": "t1", "email": "ann@example.com",
               "scopes": ["news:get", "news:post"], "data": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    create(
        &c,
        &s,
        json!({"username": "bob", "password": "pw-bob", "tenant_name": "t2"}),
    )
    .await;

    let (status, list) = admin(&c, &s, "/list_users", json!({})).await;
    assert_eq!(status, 200);
    assert_no_secrets(&list);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "bob"]);

    // get_user returns one user (15.x returned all), masked.
    let (status, ann) = admin(&c, &s, "/get_user", json!({"username": "ann"})).await;
    assert_eq!(status, 200);
    assert_no_secrets(&ann);
    assert_eq!(ann["id"], created["id"]);
    assert_eq!(ann["tenant_name"], "t1");
    assert_eq!(ann["email"], "ann@example.com");
    assert_eq!(ann["scopes"], json!(["news:get", "news:post"]));
    assert_eq!(ann["data"], json!({"plan": "pro"}));
    assert_eq!(
        (ann["password"].as_str(), ann["totp"].as_str()),
        (Some("***"), Some("***"))
    );
    assert_eq!(
        (ann["two_factor"].as_bool(), ann["revoked"].as_bool()),
        (Some(false), Some(false))
    );

    // update_user: absent fields stay (15.x wiped data, scopes and two_factor).
    let (status, updated) = admin(
        &c,
        &s,
        "/update_user",
        json!({"username": "ann", "email": "ann@example.org"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["email"], "ann@example.org");
    assert_eq!(updated["scopes"], json!(["news:get", "news:post"]));
    assert_eq!(updated["data"], json!({"plan": "pro"}));
    // Explicit null clears email, data and scopes.
    let (_, cleared) = admin(
        &c,
        &s,
        "/update_user",
        json!({"username": "ann", "email": null, "data": null, "scopes": null}),
    )
    .await;
    assert_eq!(
        (
            cleared["email"].clone(),
            cleared["data"].clone(),
            cleared["scopes"].clone()
        ),
        // Cleared scopes are `null` again, as for a user created without them.
        (Value::Null, Value::Null, Value::Null)
    );
    let (_, fresh) = admin(&c, &s, "/get_user", json!({"username": "ann"})).await;
    assert_eq!(fresh["email"], Value::Null);

    // Unknown usernames: 404 on every admin endpoint (15.x answered 200 and did nothing).
    for path in [
        "/get_user",
        "/update_user",
        "/revoke_user",
        "/unrevoke_user",
        "/create_totp",
    ] {
        let (status, body) = admin(&c, &s, path, json!({"username": "nobody"})).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("nobody"));
    }
    let (status, _) = admin(
        &c,
        &s,
        "/create_qr",
        json!({"username": "nobody", "issuer": "X"}),
    )
    .await;
    assert_eq!(status, 404);
    // Wrong admin token: 401 everywhere.
    for path in [
        "/list_users",
        "/get_user",
        "/update_user",
        "/revoke_user",
        "/unrevoke_user",
        "/create_qr",
        "/create_totp",
        "/create_user",
    ] {
        let body = json!({"admin_token": "wrong", "username": "ann", "issuer": "X", "password": "p", "tenant_name": "t"});
        let (status, reply) = post(&c, s.url(path), body).await;
        assert_eq!(status, 401, "{path}: {reply}");
    }
    // Invalid values at update.
    for (body, field) in [
        (json!({"username": "ann", "scopes": ["a:b:c"]}), "scopes"),
        (json!({"username": "ann", "email": "not-an-email"}), "email"),
        (json!({"username": "ann", "tenant_name": ""}), "tenant_name"),
        (json!({"username": "ann", "password": ""}), "password"),
    ] {
        let (status, reply) = admin(&c, &s, "/update_user", body).await;
        assert_eq!(status, 400, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(field), "{reply}");
    }
}

#[tokio::test]
async fn throwaway_emails_and_weak_passwords_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--password_checker", "true"]);
    let c = client();
    let (status, reply) = create(&c, &s, json!({"username": "t", "password": "Tr0ub4dor&3-horse-staple", "tenant_name": "t", "email": "x@mailinator.com"})).await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().starts_with("email"),
        "{reply}"
    );
    let (status, reply) = create(
        &c,
        &s,
        json!({"username": "t", "password": "password123", "tenant_name": "t"}),
    )
    .await;
    assert_eq!(status, 400);
    let message = reply["error"].as_str().unwrap();
    assert!(message.starts_with("password: too weak"), "{message}");
    let (status, _) = create(&c, &s, json!({"username": "t", "password": "correct horse battery staple 93!", "tenant_name": "t"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn revocation_closes_streams_and_refuses_every_credential() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create(
        &c,
        &s,
        json!({"username": "rev", "password": "pw", "tenant_name": "t"}),
    )
    .await;
    let jwt = login(&c, &s, "rev", "pw").await;
    let bearer = format!("Bearer {jwt}");
    assert_eq!(insert_with(&c, &s, &bearer).await, 200);
    let mut stream = Sse::open(&s, &jwt, None).await;
    stream.next_event(WAIT).await.unwrap();

    let (status, user) = admin(&c, &s, "/revoke_user", json!({"username": "rev"})).await;
    assert_eq!((status, user["revoked"].as_bool()), (200, Some(true)));
    let revoked_at = Instant::now();
    // The open stream ends within a second.
    while stream.next_frame(Duration::from_secs(2)).await.is_some() {}
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "stream still open after {:?}",
        revoked_at.elapsed()
    );

    let (status, _) = post(
        &c,
        s.url("/login"),
        json!({"username": "rev", "password": "pw"}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(insert_with(&c, &s, &bearer).await, 401);
    assert_eq!(get_with(&c, &s, "/sse", &bearer).await, 401);
    assert_eq!(get_with(&c, &s, "/verify", &bearer).await, 401);
    assert_eq!(insert_with(&c, &s, &basic("rev", "pw")).await, 401);

    let (status, user) = admin(&c, &s, "/unrevoke_user", json!({"username": "rev"})).await;
    assert_eq!((status, user["revoked"].as_bool()), (200, Some(false)));
    let fresh = login(&c, &s, "rev", "pw").await;
    assert_eq!(insert_with(&c, &s, &format!("Bearer {fresh}")).await, 200);
    assert_eq!(
        insert_with(&c, &s, &bearer).await,
        401,
        "the old JWT stays invalid"
    );
    assert_eq!(insert_with(&c, &s, &basic("rev", "pw")).await, 200);
}

#[tokio::test]
async fn password_and_tenant_changes_invalidate_tokens_and_close_streams() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create(
        &c,
        &s,
        json!({"username": "mover", "password": "old", "tenant_name": "t1"}),
    )
    .await;
    // (the change, the password before it, the password after it)
    let rounds = [
        (
            json!({"username": "mover", "password": "new"}),
            "old",
            "new",
        ),
        (
            json!({"username": "mover", "tenant_name": "t2"}),
            "new",
            "new",
        ),
    ];
    for (change, before, after) in rounds {
        let jwt = login(&c, &s, "mover", before).await;
        let mut stream = Sse::open(&s, &jwt, None).await;
        stream.next_frame(WAIT).await.unwrap();
        let (status, _) = admin(&c, &s, "/update_user", change.clone()).await;
        assert_eq!(status, 200);
        let changed_at = Instant::now();
        while stream.next_frame(Duration::from_secs(2)).await.is_some() {}
        assert!(
            changed_at.elapsed() < Duration::from_secs(1),
            "{change}: stream still open"
        );
        assert_eq!(
            insert_with(&c, &s, &format!("Bearer {jwt}")).await,
            401,
            "{change}"
        );
        let again = login(&c, &s, "mover", after).await;
        assert_eq!(insert_with(&c, &s, &format!("Bearer {again}")).await, 200);
    }
    let (status, _) = post(
        &c,
        s.url("/login"),
        json!({"username": "mover", "password": "old"}),
    )
    .await;
    assert_eq!(status, 401);
    let (_, user) = admin(&c, &s, "/get_user", json!({"username": "mover"})).await;
    assert_eq!(user["tenant_name"], "t2");
}

#[tokio::test]
async fn verify_returns_a_biscuit_that_verifies_with_the_public_key_alone() {
    use biscuit_auth::{Algorithm, AuthorizerBuilder, Biscuit, PublicKey};
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let c = client();
    create(&c, &s, json!({"username": "svc", "password": "pw", "tenant_name": "acme", "scopes": ["news:get", "users:list"]})).await;
    let jwt = login(&c, &s, "svc", "pw").await;
    let reply = get_json(&c, &s, "/verify", &jwt).await;
    assert_eq!(reply["username"], "svc");
    assert_eq!(reply["scopes"], json!(["news:get", "users:list"]));
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect()
    };
    let key = PublicKey::from_bytes(&bytes(&reply["key"]), Algorithm::Ed25519).unwrap();
    let token = Biscuit::from(bytes(&reply["token"]), key).unwrap();
    let authorize = |policy: &str| {
        let mut authorizer = AuthorizerBuilder::new()
            .time()
            .code(policy)
            .unwrap()
            .build(&token)
            .unwrap();
        authorizer.authorize()
    };
    assert!(authorize(r#"allow if right("news", "get");"#).is_ok());
    assert!(authorize(r#"allow if user("svc"), tenant("acme");"#).is_ok());
    assert!(authorize(r#"allow if right("news", "delete");"#).is_err());
    let expiry = reply["expiry"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > now && expiry <= now + 86_400 + 5);
    // A forged token (another key) does not verify.
    let other = biscuit_auth::KeyPair::new();
    assert!(Biscuit::from(bytes(&reply["token"]), other.public()).is_err());

    // The root key survives a restart and is private to its owner.
    let key_file = dir.path().join("biscuit.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(dir.path(), &[]);
    let again: Value = c
        .get(s.url("/verify"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["key"], reply["key"]);
}

#[tokio::test]
async fn two_factor_enrolment_by_qr_and_single_use_login_codes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create(
        &c,
        &s,
        json!({"username": "otp", "password": "pw", "tenant_name": "t", "two_factor": true}),
    )
    .await;
    let (status, qr) = admin(
        &c,
        &s,
        "/create_qr",
        json!({"username": "otp", "issuer": "Acme"}),
    )
    .await;
    assert_eq!(status, 200);
    let uri = read_qr(qr["qr"].as_str().unwrap());
    assert!(uri.starts_with("otpauth://totp/Acme:otp?secret="), "{uri}");
    for part in ["issuer=Acme", "algorithm=SHA1", "digits=6", "period=30"] {
        assert!(uri.contains(part), "{uri} lacks {part}");
    }
    // What an authenticator app computes from the URI.
    let app = totp_rs::Totp::from_url(&uri).unwrap();

    let (status, reply) = post(
        &c,
        s.url("/login"),
        json!({"username": "otp", "password": "pw"}),
    )
    .await;
    assert_eq!(status, 401, "a missing code: {reply}");
    let (status, _) = post(
        &c,
        s.url("/login"),
        json!({"username": "otp", "password": "pw", "totp": "000000x"}),
    )
    .await;
    assert_eq!(status, 401);
    let code = app.generate_current().to_string();
    let (status, reply) = post(
        &c,
        s.url("/login"),
        json!({"username": "otp", "password": "pw", "totp": code}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["jwt"].is_string());
    let (status, reply) = post(
        &c,
        s.url("/login"),
        json!({"username": "otp", "password": "pw", "totp": code}),
    )
    .await;
    assert_eq!(status, 401, "a code logs in once: {reply}");
    assert!(reply["error"].as_str().unwrap().contains("already used"));
    // Two-factor users cannot bypass the code with Basic.
    assert_eq!(insert_with(&c, &s, &basic("otp", "pw")).await, 401);

    // A second QR shows the same secret (enrolment is repeatable), and turning two-factor
    // off lets the password alone log in.
    let (_, qr2) = admin(
        &c,
        &s,
        "/create_qr",
        json!({"username": "otp", "issuer": "Acme"}),
    )
    .await;
    assert_eq!(read_qr(qr2["qr"].as_str().unwrap()), uri);
    admin(
        &c,
        &s,
        "/update_user",
        json!({"username": "otp", "two_factor": false}),
    )
    .await;
    login(&c, &s, "otp", "pw").await;
    let (status, _) = admin(
        &c,
        &s,
        "/create_qr",
        json!({"username": "otp", "issuer": "Bad:Issuer"}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn password_reset_codes_work_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let c = client();
    create(
        &c,
        &s,
        json!({"username": "forgetful", "password": "old-pw", "tenant_name": "t"}),
    )
    .await;
    let old_jwt = login(&c, &s, "forgetful", "old-pw").await;
    let (status, code) = admin(&c, &s, "/create_totp", json!({"username": "forgetful"})).await;
    assert_eq!(status, 200);
    let code = code["totp"].as_str().unwrap().to_owned();
    assert!(
        code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );

    let reset =
        |code: &str, user: &str| json!({"username": user, "totp": code, "password": "new-pw"});
    let (status, _) = post(&c, s.url("/password_reset"), reset("99999999", "forgetful")).await;
    assert_eq!(status, 401, "a wrong code");
    let (status, reply) = post(&c, s.url("/password_reset"), reset(&code, "nobody")).await;
    assert_eq!(
        status, 401,
        "an unknown user looks like a wrong code: {reply}"
    );
    let (status, reply) = post(&c, s.url("/password_reset"), reset(&code, "forgetful")).await;
    assert_eq!(status, 200, "{reply}");
    let (status, _) = post(
        &c,
        s.url("/login"),
        json!({"username": "forgetful", "password": "old-pw"}),
    )
    .await;
    assert_eq!(status, 401, "the old password stops working");
    assert_eq!(
        insert_with(&c, &s, &format!("Bearer {old_jwt}")).await,
        401,
        "old tokens stop working"
    );
    login(&c, &s, "forgetful", "new-pw").await;
    let (status, _) = post(&c, s.url("/password_reset"), reset(&code, "forgetful")).await;
    assert_eq!(status, 401, "a used code is refused");

    // After a restart the use is still on record.
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(dir.path(), &[]);
    let (status, _) = post(&c, s.url("/password_reset"), reset(&code, "forgetful")).await;
    assert_eq!(status, 401, "a used code is refused after a restart");
    login(&c, &s, "forgetful", "new-pw").await;
}

#[tokio::test]
async fn brute_force_is_limited_per_username_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max_failures_per_address", "12"]);
    let c = client();
    create(
        &c,
        &s,
        json!({"username": "target", "password": "right", "tenant_name": "t"}),
    )
    .await;
    create(
        &c,
        &s,
        json!({"username": "bystander", "password": "right", "tenant_name": "t"}),
    )
    .await;
    for _ in 0..5 {
        let (status, _) = post(
            &c,
            s.url("/login"),
            json!({"username": "target", "password": "wrong"}),
        )
        .await;
        assert_eq!(status, 401);
    }
    let resp = c
        .post(s.url("/login"))
        .body(json!({"username": "target", "password": "right"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        429,
        "the 6th attempt is refused even when right"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("too many"));
    login(&c, &s, "bystander", "right").await;

    // Password resets count per username too.
    for _ in 0..5 {
        post(
            &c,
            s.url("/password_reset"),
            json!({"username": "bystander", "totp": "000000", "password": "x"}),
        )
        .await;
    }
    let (status, _) = post(
        &c,
        s.url("/password_reset"),
        json!({"username": "bystander", "totp": "000000", "password": "x"}),
    )
    .await;
    assert_eq!(status, 429);

    // Wrong admin tokens count per address in a bucket of their own: the 10 password
    // failures so far do not count, the 13th wrong token is refused.
    for attempt in 1..=13 {
        let (status, _) = post(&c, s.url("/list_users"), json!({"admin_token": "guess"})).await;
        assert_eq!(
            status,
            if attempt <= 12 { 401 } else { 429 },
            "attempt {attempt}"
        );
    }
}

/// `/create_qr`'s `uri` (issue 18): the text of the QR code, for manual entry; it parses as
/// an otpauth URI that carries the user's secret, the issuer and the account, also when they
/// hold characters a URI must escape.
#[tokio::test]
async fn create_qr_also_returns_the_otpauth_uri_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    create(
        &c,
        &s,
        json!({"username": "ünïcode user", "password": "pw", "tenant_name": "t", "two_factor": true}),
    )
    .await;
    let mut secrets = Vec::new();
    for issuer in ["Acme", "Acme & Co /?#%"] {
        let (status, reply) = admin(
            &c,
            &s,
            "/create_qr",
            json!({"username": "ünïcode user", "issuer": issuer}),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        let uri = reply["uri"].as_str().unwrap();
        assert_eq!(uri, read_qr(reply["qr"].as_str().unwrap()), "the QR's text");
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        let parsed = totp_rs::Totp::from_url(uri).unwrap();
        assert_eq!(parsed.issuer(), Some(issuer), "{uri}");
        assert_eq!(parsed.account_name(), "ünïcode user", "{uri}");
        secrets.push(parsed.secret().to_base32());
        if secrets.len() == 1 {
            // The secret it carries is the user's: its code logs in (once per time step, so
            // only the first URI is tried; the second must carry the same secret).
            let code = parsed.generate_current().to_string();
            let (status, reply) = post(
                &c,
                s.url("/login"),
                json!({"username": "ünïcode user", "password": "pw", "totp": code}),
            )
            .await;
            assert_eq!(status, 200, "{uri}: {reply}");
        }
    }
    assert_eq!(secrets[0], secrets[1]);
    // Wrong types and a missing field: 400 naming it, no URI.
    // Issuers too long for a QR code (an attack review's 1,500 bytes were a 500) or with
    // control characters: 400 naming the issuer.
    for (body, field) in [
        (json!({"username": "ünïcode user", "issuer": 5}), "issuer"),
        (json!({"username": ["x"], "issuer": "A"}), "username"),
        (json!({"username": "ünïcode user"}), "issuer"),
        (
            json!({"username": "ünïcode user", "issuer": "x".repeat(1500)}),
            "issuer",
        ),
        (
            json!({"username": "ünïcode user", "issuer": "€".repeat(100)}),
            "issuer",
        ),
        (
            json!({"username": "ünïcode user", "issuer": "a\u{7}b"}),
            "issuer",
        ),
    ] {
        let (status, reply) = admin(&c, &s, "/create_qr", body).await;
        assert_eq!(status, 400, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(field), "{reply}");
        assert!(reply.get("uri").is_none());
    }
}

/// A new username that would show as another (an attack review created `alice\u{200b}` and
/// one with a right-to-left override next to `alice`; letters of another script or a
/// decomposed accent do the same) is 400 naming the field.
#[tokio::test]
async fn invisible_characters_cannot_make_a_look_alike_username() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    assert_eq!(create_user(&c, &s, "alice", "pw", "t").await, 200);
    assert_eq!(create_user(&c, &s, "José", "pw", "t").await, 200);
    for name in [
        "alice\u{200b}",
        "\u{202e}ecila",
        "al\u{00ad}ice",
        "\u{feff}alice",
        "\u{0430}lice",
        "Jose\u{0301}",
    ] {
        let (status, reply) = create(
            &c,
            &s,
            json!({"username": name, "password": "pw", "tenant_name": "t"}),
        )
        .await;
        assert_eq!(status, 400, "{name:?}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("username"),
            "{reply}"
        );
    }
    let (_, users) = admin(&c, &s, "/list_users", json!({})).await;
    assert_eq!(users.as_array().map(Vec::len), Some(2), "{users}");
}
