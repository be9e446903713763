//! Admin user endpoints: `POST /create_user`.

use poem::handler;
use poem::web::{Data, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::body::JsonBody;
use super::error::ApiError;
use crate::auth::totp;
use crate::state::record::UserCreated;
use crate::state::{Command, validate};

/// `POST /create_user` body.
#[derive(Debug, Deserialize)]
pub struct CreateUser {
    username: String,
    password: String,
    admin_token: String,
    tenant_name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    two_factor: Option<bool>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    data: Option<Value>,
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

/// Creates a user; 200 `{"id": "<uuid>"}`.
#[handler]
pub async fn create_user(
    app: Data<&App>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "id": id })))
}
