//! Admin user endpoints: `POST /create_user`.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;

use super::App;
use super::body::JsonBody;
use super::error::ApiError;
use crate::auth::totp;
use crate::state::record::UserCreated;
use crate::state::{Command, validate};

/// `POST /create_user` body.
#[derive(Debug, Deserialize, Object)]
pub struct CreateUser {
    /// Login name, unique across all tenants.
    username: String,
    /// The password (hashed with Argon2id; never stored or returned in clear).
    password: String,
    /// The server's --admin_token.
    admin_token: String,
    /// The tenant whose events the user reads and writes.
    tenant_name: String,
    /// Contact address.
    #[serde(default)]
    email: Option<String>,
    /// Require a TOTP code at login.
    #[serde(default)]
    two_factor: Option<bool>,
    /// `resource:operation` pairs.
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Any JSON to keep with the user.
    #[serde(default)]
    data: Option<Value>,
}

/// The new user's id.
#[derive(Debug, Object)]
pub struct Created {
    /// UUID of the user.
    pub id: uuid::Uuid,
}

impl App {
    /// 401 unless `token` is the admin token.
    pub fn require_admin(&self, token: &str) -> Result<(), ApiError> {
        if self.is_admin_token(token) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("admin_token: wrong admin token"))
        }
    }
}

/// Admin user routes.
pub struct UsersApi;

#[OpenApi]
impl UsersApi {
    /// Creates a user (admin): 200 `{"id": "<uuid>"}`; 400 if the username is taken.
    #[oai(path = "/create_user", method = "post")]
    async fn create_user(
        &self,
        app: Data<&App>,
        body: JsonBody<CreateUser>,
    ) -> Result<Json<Created>, ApiError> {
        create_user(&app, body.0).await
    }
}

async fn create_user(app: &App, body: CreateUser) -> Result<Json<Created>, ApiError> {
    app.require_admin(&body.admin_token)?;
    // Cheap checks first, so a bad request never costs an Argon2 hash.
    validate::username(&body.username)?;
    validate::tenant(&body.tenant_name)?;
    validate::password(&body.password)?;
    let scopes = body.scopes.unwrap_or_default();
    validate::scopes(&scopes)?;
    if let Some(email) = &body.email {
        validate::email(email)?;
    }
    let password_hash = app.hash_password(body.password).await?;
    let id = uuid::Uuid::new_v4();
    app.engine
        .submit(Command::CreateUser(UserCreated {
            id: *id.as_bytes(),
            username: body.username,
            tenant: body.tenant_name,
            password_hash,
            email: body.email,
            scopes,
            data: body.data.map(|v| v.to_string()),
            two_factor: body.two_factor.unwrap_or(false),
            totp_secret: totp::new_secret(),
        }))
        .await?;
    Ok(Json(Created { id }))
}
