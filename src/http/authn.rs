//! Authentication of a request: who is calling, checked against the published users.
//!
//! A credential is accepted only while its user exists and is not revoked and — for a JWT —
//! while the user's credential epoch is the one the token was issued in. HTTP Basic pays
//! Argon2 once: a success is cached for a minute, keyed by a keyed digest of the password
//! and the user's version, so any change to the user invalidates it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use poem::http::header::AUTHORIZATION;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::App;
use super::error::ApiError;
use crate::auth::{Credentials, credentials, jwt, password};
use crate::log::Cursor;

/// How long a verified Basic credential is trusted without Argon2.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most; the cache is emptied when full (it is only an optimisation).
const BASIC_CACHE_MAX: usize = 100_000;

/// The caller of an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Username.
    pub username: String,
    /// Their tenant: the state's own name, shared (an insert never reads it, and a copy
    /// was an allocation per request).
    pub tenant: Arc<str>,
    /// The credential epoch they authenticated in (see [`crate::state::User`]).
    pub credential_epoch: Cursor,
    /// The user's id.
    pub user_id: [u8; 16],
    /// When the credential stops working, Unix seconds: a JWT's `exp`; for Basic, now +
    /// `--jwt_expiry`. Anything derived from it (a biscuit) expires no later.
    pub expires: u64,
}

impl Principal {
    /// Refused (401) when the user was revoked, given new credentials or moved since this
    /// principal was authenticated: for answers built after a wait (a history page).
    pub fn still_valid(&self, app: &App) -> Result<(), ApiError> {
        // The epoch moves with every such change (revocation, password, tenant, two-factor).
        app.engine.read(|state| match state.user(&self.username) {
            Some(user) if user.accepts(self.credential_epoch) => Ok(()),
            _ => Err(ApiError::unauthorized(REVOKED_OR_CHANGED)),
        })
    }
}

/// OpenAPI name of `Authorization: Bearer <jwt>`.
pub const BEARER_SCHEME: &str = "bearer";
/// OpenAPI name of `Authorization: Basic <base64 user:password>`.
pub const BASIC_SCHEME: &str = "basic";

/// Registers the two header schemes with the OpenAPI document.
pub(super) fn register_header_schemes(registry: &mut Registry) {
    registry.create_security_scheme(
        BEARER_SCHEME,
        MetaSecurityScheme {
            ty: "http",
            description: Some(
                "The JWT from POST /login (HS256, valid --jwt_expiry seconds, void once the user is revoked or their password or tenant changes).",
            ),
            name: None,
            key_in: None,
            scheme: Some("bearer"),
            bearer_format: Some("JWT"),
            flows: None,
            openid_connect_url: None,
        },
    );
    registry.create_security_scheme(
        BASIC_SCHEME,
        MetaSecurityScheme {
            ty: "http",
            description: Some(
                "Username and password (not for two-factor users; Argon2 is paid once a minute per credential).",
            ),
            name: None,
            key_in: None,
            scheme: Some("basic"),
            bearer_format: None,
            flows: None,
            openid_connect_url: None,
        },
    );
}

/// The authenticated caller of a route that takes `Authorization: Bearer` or `Basic`; the
/// OpenAPI document lists both schemes for every route that extracts it.
pub struct Caller(pub Principal);

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_header_schemes(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME, BASIC_SCHEME]
    }

    async fn from_request(
        req: &'a Request,
        _: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let app = app_of(req)?;
        Ok(Caller(authenticate(app, req).await?))
    }
}

/// OpenAPI name of the `X-Admin-Token` header.
pub const ADMIN_SCHEME: &str = "admin_token";
/// The header that carries the admin token instead of the body field `admin_token`.
pub const ADMIN_HEADER: &str = "x-admin-token";

/// The `X-Admin-Token` header of an admin route, if sent. The body field `admin_token` keeps
/// working (15.x clients send it), so the OpenAPI document lists the scheme as optional, and
/// [`AdminHeader::token`] decides between the two.
pub struct AdminHeader(Option<Vec<u8>>);

/// Why no admin token could be taken from a request (before any comparison).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    /// Neither the header nor the body field.
    #[error("admin token missing: send it as the X-Admin-Token header or the admin_token field")]
    Missing,
    /// Both, with different values: which one was meant is unclear, so neither is tried.
    #[error(
        "X-Admin-Token and the admin_token field differ: send the admin token once (the header alone is enough)"
    )]
    Conflicting,
    /// The header more than once.
    #[error("X-Admin-Token sent more than once: send it once")]
    Repeated,
}

impl AdminHeader {
    /// The header of `req` (400 when it is sent more than once).
    pub fn of(req: &Request) -> Result<Self, ApiError> {
        let mut values = req.headers().get_all(ADMIN_HEADER).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::bad_request(AdminTokenError::Repeated.to_string()));
        }
        // Raw bytes: whatever was sent is a candidate, compared like the body field (a value
        // that is no UTF-8 is simply wrong, and counts as a wrong guess).
        Ok(AdminHeader(first.map(|v| v.as_bytes().to_vec())))
    }

    /// Whether the header was sent at all.
    pub fn is_sent(&self) -> bool {
        self.0.is_some()
    }

    /// The token to check: the header, the body field, or both when they are equal.
    pub fn token<'t>(&'t self, body: Option<&'t str>) -> Result<&'t [u8], AdminTokenError> {
        match (self.0.as_deref(), body) {
            (Some(header), Some(body)) if header != body.as_bytes() => {
                Err(AdminTokenError::Conflicting)
            }
            (Some(header), _) => Ok(header),
            (None, Some(body)) => Ok(body.as_bytes()),
            (None, None) => Err(AdminTokenError::Missing),
        }
    }
}

impl<'a> ApiExtractor<'a> for AdminHeader {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            ADMIN_SCHEME,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(
                    "The server's --admin_token. Instead of the body field admin_token (which keeps working); if both are sent they must be equal (400 otherwise).",
                ),
                name: Some("X-Admin-Token"),
                key_in: Some("header"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![ADMIN_SCHEME]
    }

    // The body field is the other way in: the header is not required.
    fn has_security_fallback() -> bool {
        true
    }

    async fn from_request(
        req: &'a Request,
        _: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        Ok(AdminHeader::of(req)?)
    }
}

/// The caller of a route that takes only `Authorization: Bearer` (a login JWT): `/refresh`.
/// Basic is 400, not 401: the credential may be right, it is the wrong kind.
pub struct BearerCaller {
    /// Who.
    pub principal: Principal,
}

impl<'a> ApiExtractor<'a> for BearerCaller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_header_schemes(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME]
    }

    async fn from_request(
        req: &'a Request,
        _: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let app = app_of(req)?;
        let header = authorization(req).map_err(ApiError::from)?;
        match credentials::parse(header).map_err(ApiError::from)? {
            Credentials::Bearer(token) => Ok(BearerCaller {
                principal: bearer(app, token)?,
            }),
            Credentials::Basic { .. } => Err(ApiError::bad_request(
                "Authorization: only a Bearer JWT can be refreshed; log in with POST /login for one",
            )
            .into()),
        }
    }
}

/// The request's one `Authorization` header, if any; an error if it came more than once.
fn authorization(req: &Request) -> Result<Option<&[u8]>, credentials::CredentialsError> {
    let mut all = req.headers().get_all(AUTHORIZATION).iter();
    let first = all.next().map(|v| v.as_bytes());
    if all.next().is_some() {
        return Err(credentials::CredentialsError::Repeated);
    }
    Ok(first)
}

/// Remembers verified Basic credentials of `user` (see [`BasicCache`]).
fn remember(app: &App, username: &str, digest: [u8; 32], user: Option<&crate::state::User>) {
    let mut cache = app.basic_cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= BASIC_CACHE_MAX {
        cache.clear();
    }
    cache.insert(
        username.to_owned(),
        CachedBasic {
            digest,
            version: user.map_or(0, |u| u.version),
            expires: Instant::now() + BASIC_CACHE_TTL,
        },
    );
}

/// A request's share of a Basic check in [`BasicChecks`]; the check leaves the table with
/// the first of its requests to finish.
struct InFlight<'a> {
    app: &'a App,
    key: (String, [u8; 32], Cursor),
    check: Arc<tokio::sync::OnceCell<bool>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut checks = self
            .app
            .basic_checks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if checks
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.check))
        {
            checks.remove(&self.key);
        }
    }
}

/// The shared [`App`] every route is given.
pub(super) fn app_of(req: &Request) -> Result<&App, ApiError> {
    req.data::<App>()
        .ok_or_else(|| ApiError::internal("the router was built without its App"))
}

/// A remembered successful Basic verification.
pub(super) struct CachedBasic {
    digest: [u8; 32],
    version: Cursor,
    expires: Instant,
}

/// Verified Basic credentials by username.
pub(super) type BasicCache = std::sync::Mutex<HashMap<String, CachedBasic>>;

/// Basic checks in flight, by (username, password digest, user version). An attack review
/// sent one user's right credentials 60 times at once before any was cached: 60 Argon2
/// checks, 1.8 s of CPU, and another tenant's login waited 0.7 s; an EventSource
/// reconnecting with Basic does that every minute, when the cache entry lapses. Requests with
/// the same credentials now share one check: the first runs it, the others wait for its
/// answer (and, if it is dropped, the next runs it).
pub(super) type BasicChecks =
    std::sync::Mutex<HashMap<(String, [u8; 32], Cursor), Arc<tokio::sync::OnceCell<bool>>>>;

const REVOKED_OR_CHANGED: &str = "credentials no longer valid: the user was revoked or their password or tenant changed; log in again";

/// Authenticates `req` from its `Authorization` header.
pub async fn authenticate(app: &App, req: &Request) -> Result<Principal, ApiError> {
    Presented::of(app, req).check(app).await
}

/// What a request presents to authenticate with, read from its head: the request need not
/// be kept until [`Presented::check`] (`POST /insert` drops it before reading its body).
///
/// A bearer token is verified at once, while its header is at hand (it needs no wait): a
/// copy of the token kept for later was an allocation per request. Its answer, principal or
/// error, waits for `check`, so errors come in the same order as before.
pub enum Presented {
    /// A bearer token, verified: the principal it names, or why not.
    Bearer(Result<Principal, ApiError>),
    /// Basic credentials, checked by [`Presented::check`] (Argon2 waits on the blocking pool).
    Basic {
        /// The username presented.
        username: String,
        /// The password presented.
        password: String,
        /// Basic counts failed attempts per client address.
        client: std::net::IpAddr,
    },
    /// No usable `Authorization` header.
    Unusable(ApiError),
}

impl Presented {
    /// The `Authorization` header of `req`, a bearer token verified against `app`.
    pub fn of(app: &App, req: &Request) -> Self {
        match authorization(req).and_then(credentials::parse) {
            Ok(Credentials::Bearer(token)) => Presented::Bearer(bearer(app, token)),
            Ok(Credentials::Basic { username, password }) => Presented::Basic {
                username,
                password,
                client: crate::http::server::client::of(req).ip,
            },
            Err(e) => Presented::Unusable(e.into()),
        }
    }

    /// The principal these credentials name, or why not.
    pub async fn check(self, app: &App) -> Result<Principal, ApiError> {
        match self {
            // Verified when the request's head came: a body that arrives after the token
            // expired must still be refused, as the route table (body first) refuses it.
            Presented::Bearer(Ok(principal)) if principal.expires <= app.clock.now_s_coarse() => {
                Err(jwt::JwtError::Expired.into())
            }
            Presented::Bearer(checked) => checked,
            // Boxed: Basic's future (Argon2 on the blocking pool) is large, and every Bearer
            // request's future would carry its size.
            Presented::Basic {
                username,
                password,
                client,
            } => Box::pin(basic(app, client, username, password)).await,
            Presented::Unusable(e) => Err(e),
        }
    }
}

/// Authenticates a JWT from `Authorization: Bearer`. A stream-only token (the session
/// cookie's) is refused: it may open `/sse` and do nothing else.
pub(super) fn bearer(app: &App, token: &str) -> Result<Principal, ApiError> {
    let claims = app.jwt_key.verify_cached(token, app.clock.now_s_coarse())?;
    if claims.aud.is_some() {
        return Err(ApiError::unauthorized(
            "this token only opens /sse; use the JWT from /login",
        ));
    }
    principal_of(app, &claims)
}

/// Authenticates a JWT that opens a stream: a login JWT or a stream-only one.
pub(super) fn stream_bearer(app: &App, token: &str) -> Result<Principal, ApiError> {
    let claims = app.jwt_key.verify_cached(token, app.clock.now_s_coarse())?;
    match claims.aud.as_deref() {
        None | Some(jwt::STREAM_AUDIENCE) => principal_of(app, &claims),
        Some(_) => Err(ApiError::unauthorized("invalid token: log in again")),
    }
}

/// (`String::from(&str)` copies the names; `to_string` on a `Box<str>` or `Arc<str>` would go
/// through `Display` and a formatter, a measurable part of every request.)
fn principal_of(app: &App, claims: &jwt::Claims) -> Result<Principal, ApiError> {
    app.engine.read(|state| match state.user(&claims.sub) {
        Some(user) if user.accepts(claims.epoch) && user.id == claims.uid => Ok(Principal {
            username: String::from(&*user.username),
            tenant: Arc::clone(&user.tenant),
            credential_epoch: user.credential_epoch,
            user_id: user.id,
            expires: claims.exp,
        }),
        _ => Err(ApiError::unauthorized(REVOKED_OR_CHANGED)),
    })
}

/// Every Basic failure reads the same — unknown user, wrong password, revoked, two-factor —
/// and costs the same Argon2 check, so Basic is no oracle for which passwords are right.
const BASIC_REFUSED: &str = "wrong username or password";

async fn basic(
    app: &App,
    client: std::net::IpAddr,
    username: String,
    password: String,
) -> Result<Principal, ApiError> {
    let digest = app.password_digest(&password);
    let user = app.engine.read(|state| state.user(&username).cloned());
    let usable = |u: &crate::state::User| !u.revoked && !u.two_factor;
    let in_cache = || {
        user.as_ref().filter(|u| usable(u)).is_some_and(|user| {
            let cache = app.basic_cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(&username).is_some_and(|c| {
                c.version == user.version
                    && c.expires > Instant::now()
                    && bool::from(c.digest.ct_eq(&digest))
            })
        })
    };
    let cached = in_cache();
    if !cached {
        // Only a cache miss costs Argon2, so only a miss is an attempt worth counting.
        let attempt = app.throttle.attempt(&username, client);
        let admitted = app.throttle_admit(attempt).await?;
        // Same work for unknown users as for real ones: timing tells no usernames apart.
        let hash = user.as_ref().map_or_else(
            || DUMMY_HASH.clone(),
            |u| u.password_hash.phc().into_owned(),
        );
        let key = (
            username.clone(),
            digest,
            user.as_ref().map_or(0, |u| u.version),
        );
        let check = {
            let mut checks = app.basic_checks.lock().unwrap_or_else(|e| e.into_inner());
            // A check of these credentials may have ended while this request waited to be
            // let in: it filled the cache before it left the table (under this lock).
            if in_cache() {
                None
            } else {
                Some(Arc::clone(checks.entry(key.clone()).or_default()))
            }
        };
        let matches = match check {
            None => true,
            Some(check) => {
                // Leaves the table when this request is done with it: after the cache below
                // is filled, so that a request coming meanwhile finds one or the other.
                let _in_flight = InFlight {
                    app,
                    key,
                    check: Arc::clone(&check),
                };
                let matches = *check
                    .get_or_try_init(|| app.verify_password(password, hash, &attempt))
                    .await?;
                if matches && user.as_ref().is_some_and(usable) {
                    remember(app, &username, digest, user.as_ref());
                }
                matches
            }
        };
        match &user {
            Some(user) if matches && usable(user) => admitted.succeed(),
            _ => {
                admitted.fail();
                return Err(ApiError::unauthorized(BASIC_REFUSED));
            }
        }
    }
    let user = user.ok_or_else(|| ApiError::unauthorized(BASIC_REFUSED))?;
    // The check may have waited seconds for Argon2: a user revoked, moved or given a new
    // password meanwhile is refused, as a JWT of the old credentials is (an attack review
    // had a revoked user's request served events written after the revocation).
    let user = if cached {
        user
    } else {
        app.engine
            .read(|state| state.user(&user.username).cloned())
            // The epoch moves with each of those changes.
            .filter(|now| usable(now) && now.credential_epoch == user.credential_epoch)
            .ok_or_else(|| ApiError::unauthorized(BASIC_REFUSED))?
    };
    Ok(Principal {
        username: user.username.into(),
        tenant: user.tenant,
        credential_epoch: user.credential_epoch,
        user_id: user.id,
        expires: app.clock.now_s() + app.config.identity.jwt_expiry,
    })
}

/// A valid hash of a random password, verified against for unknown usernames.
pub(super) static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    password::hash(&uuid::Uuid::new_v4().to_string()).expect("hashing a random password")
});

impl App {
    /// Argon2 verification on the blocking pool, in the hash queue's order for `attempt`
    /// (503 when the queue is full of checks that rank no higher).
    pub(super) async fn verify_password(
        &self,
        password: String,
        phc: String,
        attempt: &super::throttle::Attempt,
    ) -> Result<bool, ApiError> {
        let running = self.hashing_turn(&attempt.hash_keys()).await?;
        self.metrics.password_checks.inc();
        Ok(tokio::task::spawn_blocking(move || {
            // The place is held until Argon2 is done, whether or not the request still waits.
            let _running = running;
            password::verify(&password, &phc)
        })
        .await
        .unwrap_or(false))
    }

    /// Argon2 hashing of a password the server vouches for (the admin's, or a reset whose
    /// code was right): first in the hash queue's order.
    pub async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        let running = self.hashing_turn(&[]).await?;
        tokio::task::spawn_blocking(move || {
            let _running = running;
            password::hash(&password)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }

    /// A running place in the hash queue, or 503 when it is full: a flood of logins gets a
    /// quick refusal instead of an ever longer wait.
    async fn hashing_turn(
        &self,
        keys: &[crate::auth::throttle::Key],
    ) -> Result<super::hash_queue::Running, ApiError> {
        self.hashing
            .enter(keys, self.clock.now_ms())
            .await
            .map_err(|_| {
                self.metrics.rate_limited.inc();
                ApiError::busy("too many password checks are waiting; retry shortly", 1)
            })
    }

    fn password_digest(&self, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// Whether `token` is the admin token, compared in constant time.
    pub fn is_admin_token(&self, token: &[u8]) -> bool {
        let expected = Sha256::digest(self.config.identity.admin_token.as_bytes());
        let given = Sha256::digest(token);
        bool::from(expected.ct_eq(&given))
    }
}
