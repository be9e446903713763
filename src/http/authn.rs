//! Authentication of a request: who is calling, checked against the published users.
//!
//! A credential is accepted only while its user exists and is not revoked and — for a JWT —
//! while the user's credential epoch is the one the token was issued in. HTTP Basic pays
//! Argon2 once: a success is cached for a minute, keyed by a keyed digest of the password
//! and the user's version, so any change to the user invalidates it.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use poem::http::header::AUTHORIZATION;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::App;
use super::error::ApiError;
use crate::auth::{Credentials, credentials, password};
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
    /// Their tenant.
    pub tenant: String,
    /// The credential epoch they authenticated in (see [`crate::state::User`]).
    pub credential_epoch: Cursor,
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

const REVOKED_OR_CHANGED: &str = "credentials no longer valid: the user was revoked or their password or tenant changed; log in again";

/// Authenticates `req` from its `Authorization` header.
pub async fn authenticate(app: &App, req: &Request) -> Result<Principal, ApiError> {
    let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match credentials::parse(header)? {
        Credentials::Bearer(token) => bearer(app, &token),
        Credentials::Basic { username, password } => basic(app, username, password).await,
    }
}

/// Authenticates a JWT (from `Authorization: Bearer` or the session cookie).
pub(super) fn bearer(app: &App, token: &str) -> Result<Principal, ApiError> {
    let claims = app.jwt_key.verify(token, app.clock.now_s())?;
    app.engine.read(|state| match state.user(&claims.sub) {
        Some(user) if !user.revoked && user.credential_epoch == claims.epoch => Ok(Principal {
            username: user.username.clone(),
            tenant: user.tenant.clone(),
            credential_epoch: user.credential_epoch,
        }),
        _ => Err(ApiError::unauthorized(REVOKED_OR_CHANGED)),
    })
}

async fn basic(app: &App, username: String, password: String) -> Result<Principal, ApiError> {
    let digest = app.password_digest(&password);
    let user = app.engine.read(|state| state.user(&username).cloned());
    let Some(user) = user else {
        // Same work as for a real user, so timing does not reveal which usernames exist.
        app.verify_password(password, DUMMY_HASH.clone()).await;
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    let cached = {
        let cache = app.basic_cache.lock().expect("basic cache");
        cache.get(&username).is_some_and(|c| {
            c.version == user.version
                && c.expires > Instant::now()
                && bool::from(c.digest.ct_eq(&digest))
        })
    };
    if !cached {
        if !app
            .verify_password(password, user.password_hash.clone())
            .await
        {
            return Err(ApiError::unauthorized("wrong username or password"));
        }
        let mut cache = app.basic_cache.lock().expect("basic cache");
        if cache.len() >= BASIC_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            username,
            CachedBasic {
                digest,
                version: user.version,
                expires: Instant::now() + BASIC_CACHE_TTL,
            },
        );
    }
    if user.revoked {
        return Err(ApiError::unauthorized(REVOKED_OR_CHANGED));
    }
    if user.two_factor {
        return Err(ApiError::unauthorized(
            "two-factor users cannot use HTTP Basic: log in at /login with a TOTP code and use the JWT",
        ));
    }
    Ok(Principal {
        username: user.username,
        tenant: user.tenant,
        credential_epoch: user.credential_epoch,
    })
}

/// A valid hash of a random password, verified against for unknown usernames.
pub(super) static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    password::hash(&uuid::Uuid::new_v4().to_string()).expect("hashing a random password")
});

impl App {
    /// Argon2 verification on the blocking pool, at most `--hash_concurrency` at once.
    pub async fn verify_password(&self, password: String, phc: String) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || password::verify(&password, &phc))
            .await
            .unwrap_or(false)
    }

    /// Argon2 hashing on the blocking pool, at most `--hash_concurrency` at once.
    pub async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.hashing.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    fn password_digest(&self, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// Whether `token` is the admin token, compared in constant time.
    pub fn is_admin_token(&self, token: &str) -> bool {
        let expected = Sha256::digest(self.config.admin_token.as_bytes());
        let given = Sha256::digest(token.as_bytes());
        bool::from(expected.ct_eq(&given))
    }
}
