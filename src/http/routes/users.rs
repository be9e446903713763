//! Admin user endpoints: create, list, get, update, revoke, unrevoke, delete. Every one takes the
//! `admin_token` in the body; every change is a log record.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{strength, totp};
use crate::http::App;
use crate::http::authn::AdminHeader;
use crate::http::body::JsonBody;
use crate::http::error::{AdminErrors, AdminLookupErrors, AdminReadErrors, ApiError, CreateErrors};
use crate::state::record::{UserCreated, UserUpdated};
use crate::state::{Command, User, validate};

/// `POST /create_user` body.
#[derive(Debug, Deserialize, Object)]
pub struct CreateUser {
    /// Login name, unique across all tenants: 1–128 bytes, no control characters, no ':', no
    /// surrounding spaces.
    #[oai(validator(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F:]*$"
    ))]
    username: String,
    /// The password, 1–1024 bytes (hashed with Argon2id; never stored or returned in clear).
    #[oai(validator(min_length = 1, max_length = 1024))]
    password: String,
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// The tenant whose events the user reads and writes: 1–128 bytes, no control characters.
    #[oai(validator(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    ))]
    tenant_name: String,
    /// Contact address (syntax and throwaway domains are checked).
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

/// A body with only the admin token.
#[derive(Debug, Deserialize, Object)]
pub struct AdminOnly {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    pub(in crate::http) admin_token: Option<String>,
}

/// A body naming one user.
#[derive(Debug, Deserialize, Object)]
pub struct AdminUser {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Whose.
    username: String,
}

/// `POST /delete_user`'s answer.
#[derive(Debug, Object)]
pub struct Deleted {
    /// Always `true`.
    pub ok: bool,
}

/// `POST /update_user` body: an absent field stays as it is; `null` clears `email`,
/// `scopes` and `data`.
#[derive(Debug, Deserialize, Object)]
pub struct UpdateUser {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Whose.
    username: String,
    /// Move the user to another tenant (invalidates their tokens, closes their streams).
    #[serde(default)]
    #[oai(validator(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    ))]
    tenant_name: Option<String>,
    /// A new password (invalidates their tokens, closes their streams).
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 1024))]
    password: Option<String>,
    /// A new email, or `null` to clear it.
    #[serde(default)]
    email: MaybeUndefined<String>,
    /// New scopes (`[]` is an empty list), or `null` to clear them (shown as `null`).
    #[serde(default)]
    scopes: MaybeUndefined<Vec<String>>,
    /// New data, or `null` to clear it.
    #[serde(default)]
    data: MaybeUndefined<Value>,
    /// Turn two-factor login on or off.
    #[serde(default)]
    two_factor: Option<bool>,
}

/// A user as the admin API shows it: secrets masked.
#[derive(Debug, Object)]
pub struct UserView {
    /// UUID.
    pub id: uuid::Uuid,
    /// Login name.
    pub username: String,
    /// Tenant.
    pub tenant_name: String,
    /// Email, if any.
    pub email: Option<String>,
    /// Scopes: `null` when never set, `[]` when set to an empty list.
    pub scopes: Option<Vec<String>>,
    /// Data, if any.
    pub data: Option<Value>,
    /// Two-factor login on.
    pub two_factor: bool,
    /// Revoked users cannot log in or act.
    pub revoked: bool,
    /// Always `***`: the hash never leaves the server.
    pub password: String,
    /// Always `***`: the TOTP secret never leaves the server (use /create_qr to enrol).
    pub totp: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: uuid::Uuid::from_bytes(user.id),
            username: user.username.to_string(),
            tenant_name: user.tenant.to_string(),
            email: user.email().map(str::to_owned),
            scopes: user.scopes().map(<[String]>::to_vec),
            data: user.data().and_then(|d| serde_json::from_str(d).ok()),
            two_factor: user.two_factor,
            revoked: user.revoked,
            password: "***".into(),
            totp: "***".into(),
        }
    }
}

/// Admin user routes.
#[derive(Default)]
pub struct UsersApi;

#[OpenApi(tag = "super::Tags::Users")]
impl UsersApi {
    /// Creates a user (admin): 200 `{"id": "<uuid>"}`; 400 if the username is taken.
    #[oai(path = "/create_user", method = "post")]
    async fn create_user(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<CreateUser>,
    ) -> Result<Json<Created>, CreateErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        Ok(create_user(&app, body.0).await?)
    }

    /// Lists every user (admin), secrets masked.
    #[oai(path = "/list_users", method = "post")]
    async fn list_users(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminOnly>,
    ) -> Result<Json<Vec<UserView>>, AdminReadErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let mut users: Vec<UserView> = app
            .engine
            .read(|s| s.users.iter().map(UserView::from).collect());
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(Json(users))
    }

    /// One user (admin); 404 for an unknown username.
    #[oai(path = "/get_user", method = "post")]
    async fn get_user(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminUser>,
    ) -> Result<Json<UserView>, AdminLookupErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        Ok(app.user_view(&body.0.username).map(Json)?)
    }

    /// Changes the fields given (admin); absent fields stay, `null` clears. Returns the user.
    #[oai(path = "/update_user", method = "post")]
    async fn update_user(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<UpdateUser>,
    ) -> Result<Json<UserView>, AdminErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        Ok(update_user(&app, body.0).await?)
    }

    /// Revokes a user (admin): no more logins, earlier tokens refused, open streams closed.
    #[oai(path = "/revoke_user", method = "post")]
    async fn revoke_user(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminUser>,
    ) -> Result<Json<UserView>, AdminErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let username = body.0.username;
        Ok(app
            .change_user(
                Command::RevokeUser {
                    username: username.clone(),
                },
                &username,
            )
            .await?)
    }

    /// Lets a revoked user log in again (admin); their earlier tokens stay invalid.
    #[oai(path = "/unrevoke_user", method = "post")]
    async fn unrevoke_user(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminUser>,
    ) -> Result<Json<UserView>, AdminErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let username = body.0.username;
        Ok(app
            .change_user(
                Command::UnrevokeUser {
                    username: username.clone(),
                },
                &username,
            )
            .await?)
    }

    /// Deletes a user (admin): gone from the listing, no more logins, earlier tokens refused,
    /// open streams closed with reason `deleted`; the name may be created again. Their events
    /// stay in the tenant. Compaction past the deletion erases their fields from the disk.
    #[oai(path = "/delete_user", method = "post")]
    async fn delete_user(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminUser>,
    ) -> Result<Json<Deleted>, AdminErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let username = body.0.username;
        app.engine
            .submit(Command::DeleteUser {
                username: username.clone(),
            })
            .await?;
        tracing::info!(username, "user deleted");
        Ok(Json(Deleted { ok: true }))
    }
}

impl App {
    /// Hands an admin change of `username` to the writer and returns the user as it is now.
    async fn change_user(
        &self,
        command: Command,
        username: &str,
    ) -> Result<Json<UserView>, ApiError> {
        self.engine.submit(command).await?;
        self.user_view(username).map(Json)
    }

    /// The masked view of `username`, or 404.
    pub(in crate::http) fn user_view(&self, username: &str) -> Result<UserView, ApiError> {
        self.engine
            .read(|s| s.user(username).map(UserView::from))
            .ok_or_else(|| {
                ApiError::new(
                    poem::http::StatusCode::NOT_FOUND,
                    format!("username: no user is called {username:?}"),
                )
            })
    }

    /// Email syntax and throwaway domains (mailchecker's list is policy of this build, so it
    /// is checked here and not in `decide`, which replays old logs).
    fn check_email(&self, email: &str) -> Result<(), ApiError> {
        validate::email(email)?;
        if !mailchecker::is_valid(email) {
            return Err(ApiError::bad_request(format!(
                "email: {email:?} is not accepted (invalid or a throwaway address)"
            )));
        }
        Ok(())
    }

    /// Non-empty, bounded, and strong enough when --password_checker is on.
    pub(in crate::http) fn check_password(
        &self,
        password: &str,
        username: &str,
    ) -> Result<(), ApiError> {
        validate::password(password)?;
        if self.config.identity.password_checker {
            strength::check(password, &[username]).map_err(ApiError::bad_request)?;
        }
        Ok(())
    }
}

async fn create_user(app: &App, body: CreateUser) -> Result<Json<Created>, ApiError> {
    // Cheap checks first, so a bad request never costs an Argon2 hash.
    validate::username(&body.username)?;
    validate::tenant(&body.tenant_name)?;
    app.check_password(&body.password, &body.username)?;
    let scopes = body.scopes;
    if let Some(scopes) = &scopes {
        validate::scopes(scopes)?;
    }
    if let Some(email) = &body.email {
        app.check_email(email)?;
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

async fn update_user(app: &App, body: UpdateUser) -> Result<Json<UserView>, ApiError> {
    // 404 before any costly work.
    app.user_view(&body.username)?;
    if let Some(tenant) = &body.tenant_name {
        validate::tenant(tenant)?;
    }
    if let MaybeUndefined::Value(email) = &body.email {
        app.check_email(email)?;
    }
    // `null` clears to no scopes (shown as `null`); `[]` sets an empty list (shown as `[]`).
    let scopes: Option<Option<Vec<String>>> = body.scopes.into();
    if let Some(Some(scopes)) = &scopes {
        validate::scopes(scopes)?;
    }
    let password_hash = match body.password {
        Some(password) => {
            app.check_password(&password, &body.username)?;
            Some(app.hash_password(password).await?)
        }
        None => None,
    };
    let update = UserUpdated {
        username: body.username.clone(),
        tenant: body.tenant_name,
        email: body.email.into(),
        scopes,
        data: Option::<Option<Value>>::from(body.data).map(|d| d.map(|v| v.to_string())),
        two_factor: body.two_factor,
    };
    app.change_user(
        Command::UpdateUser {
            update,
            password_hash,
        },
        &body.username,
    )
    .await
}
