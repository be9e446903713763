//! `POST /login`: password (and TOTP code for two-factor users) in, JWT out.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;

use crate::auth::{jwt, totp};
use crate::http::App;
use crate::http::authn::{BearerCaller, DUMMY_HASH};
use crate::http::body::JsonBody;
use crate::http::error::{ApiError, RefreshErrors, WriteErrors};
use crate::http::second_factor::Tried;
use crate::state::Command;

/// `POST /login` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct Login {
    /// Login name.
    username: String,
    /// Password.
    password: String,
    /// The current 6-digit code, for users with two-factor login.
    #[serde(default)]
    totp: Option<String>,
    /// Also set the session cookie (HttpOnly, SameSite=Strict; a stream-only token that
    /// opens `/sse` and nothing else), so that a same-site page's `EventSource` is
    /// authenticated, reconnections included.
    #[serde(default)]
    session_cookie: Option<bool>,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for Login {
    fn example() -> Self {
        Login {
            username: "alice".into(),
            password: "correct horse".into(),
            totp: None,
            session_cookie: None,
        }
    }
}

/// A session token.
#[derive(Debug, Object)]
pub struct Session {
    /// HS256 JWT for `Authorization: Bearer`, valid for --jwt_expiry seconds.
    pub jwt: String,
}

/// `POST /login`'s answer: the token, and the cookie when asked for.
#[derive(poem_openapi::ApiResponse)]
pub enum LoginReply {
    /// Logged in.
    #[oai(status = 200)]
    Ok(
        Json<Session>,
        /// `broker_session=<stream-only jwt>; Path=/sse; HttpOnly; SameSite=Strict;
        /// Max-Age=<--jwt_expiry>`, or over TLS (direct or through a trusted proxy)
        /// `__Host-broker_session=…; Path=/; Secure; …`, when `session_cookie` was true.
        #[oai(header = "set-cookie")]
        Option<String>,
    ),
}

/// `POST /logout`'s answer: the session cookie, expired at every path a page of this host
/// could have put it (see `expired_session_cookies`).
pub struct LogoutReply {
    /// `Set-Cookie` values, one per cookie to expire.
    expired: Vec<String>,
}

/// What the OpenAPI document says of [`LogoutReply`]. A derived response sends one header of
/// a name, so [`LogoutReply`] appends the other `Set-Cookie` values itself.
#[derive(poem_openapi::ApiResponse)]
enum LogoutDoc {
    /// The browser forgets its session cookie.
    #[oai(status = 200)]
    Ok(
        Json<LoggedOut>,
        /// `broker_session=; Path=/sse; HttpOnly; SameSite=Strict; Max-Age=0`, then a second
        /// `Set-Cookie` with `Path=/` (a copy another page of this host may have planted); over
        /// TLS only `__Host-broker_session=; Path=/; Secure; …; Max-Age=0`.
        #[oai(header = "set-cookie")]
        String,
    ),
}

impl poem::IntoResponse for LogoutReply {
    fn into_response(self) -> poem::Response {
        let mut cookies = self.expired.into_iter();
        let first = cookies.next().unwrap_or_default();
        let mut response =
            poem::IntoResponse::into_response(LogoutDoc::Ok(Json(LoggedOut { ok: true }), first));
        for cookie in cookies {
            if let Ok(value) = poem::http::HeaderValue::from_str(&cookie) {
                response
                    .headers_mut()
                    .append(poem::http::header::SET_COOKIE, value);
            }
        }
        response
    }
}

impl poem_openapi::ApiResponse for LogoutReply {
    fn meta() -> poem_openapi::registry::MetaResponses {
        LogoutDoc::meta()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        LogoutDoc::register(registry);
    }
}

/// Acknowledges `POST /logout`.
#[derive(Debug, Object)]
pub struct LoggedOut {
    /// Always true.
    pub ok: bool,
}

/// Session routes.
#[derive(Default)]
pub struct SessionApi;

#[OpenApi(tag = "super::Tags::Users")]
impl SessionApi {
    /// Logs in: 200 `{"jwt": "<token>"}`; 401 for any wrong credential, with no hint which;
    /// 429 after too many failures for the username or the address. With
    /// `session_cookie: true` also sets the `broker_session` cookie that authenticates
    /// `GET /sse` (and nothing else) from same-site pages.
    #[oai(path = "/login", method = "post")]
    async fn login(
        &self,
        app: Data<&App>,
        req: &Request,
        body: JsonBody<Login>,
    ) -> Result<LoginReply, WriteErrors> {
        let wants_cookie = body.0.session_cookie == Some(true);
        let https = crate::http::server::client::of(req).https;
        let (session, claims) = login(&app, req, body.0).await?;
        let cookie = wants_cookie.then(|| {
            let stream_only = jwt::Claims {
                aud: Some(jwt::STREAM_AUDIENCE.into()),
                ..claims
            };
            let token = jwt::issue(&app.config.identity.jwt_secret, &stream_only);
            session_cookie(https, &token, app.config.identity.jwt_expiry)
        });
        Ok(LoginReply::Ok(session, cookie))
    }

    /// Trades a valid login JWT (Bearer) for a new one with a fresh expiry, for the same
    /// user, tenant and credential epoch: 401 once the token expired or the user was revoked
    /// or their password or tenant changed; 400 for Basic. The old token stays valid until
    /// its own expiry (JWTs are not stored), so refresh early rather than often.
    #[oai(path = "/refresh", method = "post")]
    async fn refresh(
        &self,
        app: Data<&App>,
        caller: BearerCaller,
    ) -> Result<Json<Session>, RefreshErrors> {
        let who = caller.principal;
        let now = app.clock.now_s();
        let claims = jwt::Claims {
            sub: who.username,
            iat: now,
            exp: now + app.config.identity.jwt_expiry,
            iss: jwt::ISSUER.into(),
            tenant: String::from(&*who.tenant),
            epoch: who.credential_epoch,
            uid: who.user_id,
            aud: None,
        };
        let token = jwt::issue(&app.config.identity.jwt_secret, &claims);
        Ok(Json(Session { jwt: token }))
    }

    /// Ends the browser's cookie session: expires the `broker_session` cookie, at `Path=/sse`
    /// and at `Path=/`. (The JWT itself stays valid until it expires; revoke the user or
    /// change the password to end every session at once.)
    #[oai(path = "/logout", method = "post")]
    async fn logout(&self, req: &Request) -> LogoutReply {
        let https = crate::http::server::client::of(req).https;
        let host = req
            .headers()
            .get(poem::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host());
        LogoutReply {
            expired: expired_session_cookies(https, host),
        }
    }
}

/// The `Set-Cookie` value of the session cookie. Its token is stream-only (every route but
/// `/sse` refuses it), so no write can ever be made with it, and `SameSite=Strict` keeps
/// other sites' pages from streaming with it (and `/sse` ignores it from this site's pages of
/// other origins: `cors::cookie_authenticates`). Over TLS it is `Secure` with the `__Host-`
/// prefix (no other host or plain-HTTP page can set or shadow it), which requires `Path=/`;
/// on plain HTTP `Path=/sse` keeps it off the other routes' requests.
fn session_cookie(https: bool, jwt: &str, max_age: u64) -> String {
    if https {
        format!(
            "{}={jwt}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}",
            super::sse::SECURE_SESSION_COOKIE
        )
    } else {
        plain_session_cookie(super::sse::PATH, jwt, max_age)
    }
}

/// The plain-HTTP session cookie at `path`.
fn plain_session_cookie(path: &str, jwt: &str, max_age: u64) -> String {
    format!(
        "{}={jwt}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        super::sse::SESSION_COOKIE
    )
}

/// The `Set-Cookie` values that expire the session cookie at every path from which a
/// browser would send it to `/sse`. On plain HTTP cookies are not isolated by port: a page
/// on another port of this host can run `document.cookie = "broker_session=…; path=/"`, and
/// that copy, sent to `/sse` beside ours, made every stream 400 ("two different … cookies")
/// while logout expired only `Path=/sse` (finding F5). A browser deletes a cookie by name,
/// path and domain, so both paths that cover `/sse` are expired, host-only and for the
/// request's host name and each parent domain of it (a page on another port can set
/// `Domain=<host>`, and a sibling subdomain `Domain=<parent>`: a separate cookie each, which
/// outlived the host-only expiry in the tenth attack review). A `__Host-` cookie can only
/// have `Path=/` and no domain: one suffices.
fn expired_session_cookies(https: bool, host: Option<&str>) -> Vec<String> {
    if https {
        return vec![session_cookie(true, "", 0)];
    }
    let mut domains = vec![None];
    domains.extend(cookie_domains(host).into_iter().map(Some));
    let mut cookies = Vec::new();
    for domain in &domains {
        for path in [super::sse::PATH, "/"] {
            let cookie = plain_session_cookie(path, "", 0);
            cookies.push(match domain {
                Some(domain) => format!("{cookie}; Domain={domain}"),
                None => cookie,
            });
        }
    }
    cookies
}

/// The domains a cookie sent to `host` may have been set for: the name itself and each
/// parent with at least two labels (`a.b.example` → `a.b.example`, `b.example`), every one
/// of them (a cap of four left `e.example` of `a.b.c.d.e.example`: eleventh attack review;
/// a name's 253 bytes bound how many there are). None for an address, `localhost` or anything but a plain DNS name: the `Host`
/// header is the client's, and nothing of it may reach a header unchecked.
fn cookie_domains(host: Option<&str>) -> Vec<String> {
    let Some(host) = host.map(crate::config::host_without_port) else {
        return Vec::new();
    };
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && name.split('.').all(|label| !label.is_empty());
    if !plain || name.parse::<std::net::Ipv4Addr>().is_ok() || !name.contains('.') {
        return Vec::new();
    }
    let labels: Vec<&str> = name.split('.').collect();
    (0..labels.len() - 1)
        .map(|from| labels[from..].join("."))
        .collect()
}

/// 429 while a user's two-factor login is locked after too many wrong codes in a row.
fn second_factor_locked(retry_after_ms: i64) -> ApiError {
    let mut error = ApiError::too_many(retry_after_ms);
    error.message = format!(
        "totp: too many wrong two-factor codes in a row ({} or more); two-factor login is locked for this user, retry after the retry-after seconds",
        crate::http::second_factor::PER_LOCK
    );
    error
}

async fn login(
    app: &App,
    req: &Request,
    body: Login,
) -> Result<(Json<Session>, jwt::Claims), ApiError> {
    // Let in (and counted) before the password is checked, so the attempt after the limit
    // is refused even when right.
    let attempt = app.attempt(&body.username, req);
    let admitted = app.throttle_admit(attempt).await?;
    let user = app.engine.read(|state| state.user(&body.username).cloned());
    let hash = user.as_ref().map_or_else(
        || DUMMY_HASH.clone(),
        |u| u.password_hash.phc().into_owned(),
    );
    let matches = app.verify_password(body.password, hash, &attempt).await?;
    let user = match user {
        // A revoked user's right password gets the same answer as a wrong one: it tells
        // nobody the password was right.
        Some(user) if matches && !user.revoked => user,
        _ => {
            admitted.fail();
            return Err(ApiError::unauthorized("wrong username or password"));
        }
    };
    if user.two_factor {
        let Some(code) = body.totp else {
            return Err(ApiError::unauthorized(
                "totp: this user has two-factor login; send the current code as totp",
            ));
        };
        // Checked once the password was right: nobody else learns of the lock.
        let checked = app
            .wrong_factors
            .try_code(&user.username, app.clock.now_ms(), || {
                totp::check_login_code(&user.totp_secret, code.trim(), app.clock.now_s())
            });
        let step = match checked {
            Tried::Right(step) => step,
            Tried::Wrong => {
                admitted.fail();
                return Err(ApiError::unauthorized(
                    "totp: wrong or expired two-factor code",
                ));
            }
            Tried::WrongAndLocked(wait) => {
                admitted.fail();
                return Err(second_factor_locked(wait));
            }
            // No code was tried: no failure either.
            Tried::Locked(wait) => return Err(second_factor_locked(wait)),
        };
        // A code logs in once: the writer refuses a step that was already accepted.
        let used = app
            .engine
            .submit(Command::UseLoginCode {
                username: String::from(&*user.username),
                step,
            })
            .await;
        if let Err(e) = used {
            admitted.fail();
            return Err(e.into());
        }
    }
    if user.two_factor {
        app.wrong_factors.right(&user.username);
    }
    admitted.succeed();
    // The token carries the epoch the password was checked in: if a revocation or password
    // change landed meanwhile, the token is already invalid at its first use.
    let epoch = user.credential_epoch;
    let now = app.clock.now_s();
    let claims = jwt::Claims {
        sub: user.username.into(),
        iat: now,
        exp: now + app.config.identity.jwt_expiry,
        iss: jwt::ISSUER.into(),
        tenant: String::from(&*user.tenant),
        epoch,
        uid: user.id,
        aud: None,
    };
    let token = jwt::issue(&app.config.identity.jwt_secret, &claims);
    Ok((Json(Session { jwt: token }), claims))
}
