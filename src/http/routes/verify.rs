//! `GET /verify`: a biscuit for services that check Broker's users offline.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::auth::biscuit;
use crate::http::App;
use crate::http::authn::Caller;
use crate::http::error::{ApiError, AuthErrors};

/// What `/verify` returns.
#[derive(Debug, Object)]
pub struct Verified {
    /// The biscuit root public key (Ed25519), as bytes.
    pub key: Vec<u8>,
    /// The biscuit, as bytes: facts `right(resource, operation)` per scope, `user(name)`,
    /// `tenant(name)`, `epoch(n)` (the credential epoch: it changes when the user is revoked
    /// or their password, tenant, scopes or two-factor change), and a check that the time is
    /// before `expiry`.
    pub token: Vec<u8>,
    /// Expiry of the biscuit, Unix seconds: that of the credential it was made from (the
    /// JWT's `exp`; for Basic, now + --jwt_expiry), never later.
    pub expiry: u64,
    /// Who.
    pub username: String,
    /// Their scopes.
    pub scopes: Vec<String>,
}

/// Verification routes.
#[derive(Default)]
pub struct VerifyApi;

#[OpenApi(tag = "super::Tags::Users")]
impl VerifyApi {
    /// Checks the caller's credentials (Bearer or Basic) and returns a biscuit of their
    /// scopes with the public key that verifies it.
    #[oai(path = "/verify", method = "get")]
    async fn verify(&self, app: Data<&App>, caller: Caller) -> Result<Json<Verified>, AuthErrors> {
        let caller = caller.0;
        let scopes = app
            .engine
            .read(|s| s.user(&caller.username).map(|u| u.scope_list().to_vec()))
            .unwrap_or_default();
        let expiry = caller.expires;
        let token = biscuit::issue(
            &app.biscuit,
            &caller.username,
            &caller.tenant,
            &scopes,
            caller.credential_epoch,
            expiry,
        )
        .map_err(ApiError::internal)?;
        Ok(Json(Verified {
            key: app.biscuit.public().to_bytes(),
            token,
            expiry,
            username: caller.username,
            scopes,
        }))
    }
}
