//! Admin user endpoints: create, list, get, update, revoke, unrevoke, delete. Every one takes the
//! `admin_token` in the body; every change is a log record.

use std::borrow::Cow;

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{MaybeUndefined, ToJSON, Type};
use poem_openapi::{Enum, Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;

use super::user_order;
use crate::auth::{strength, totp};
use crate::engine::sse_frame::rfc3339;
use crate::http::App;
use crate::http::authn::AdminHeader;
use crate::http::body::JsonBody;
use crate::http::error::{AdminErrors, AdminLookupErrors, AdminReadErrors, ApiError, CreateErrors};
use crate::state::record::{UserCreated, UserUpdated};
use crate::state::{Command, User, validate};

/// `POST /create_user` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
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

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for CreateUser {
    fn example() -> Self {
        CreateUser {
            username: "alice".into(),
            password: "correct horse".into(),
            admin_token: None,
            tenant_name: "acme".into(),
            email: Some("alice@example.com".into()),
            two_factor: None,
            scopes: None,
            data: Some(serde_json::json!({"team": "ops"})),
        }
    }
}

/// The new user's id.
#[derive(Debug, Object)]
pub struct Created {
    /// UUID of the user.
    pub id: uuid::Uuid,
}

/// A body with only the admin token.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct AdminOnly {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    pub(in crate::http) admin_token: Option<String>,
}

/// `POST /list_users` body. With none of `limit`, `after` and `sort` the answer is every user
/// as one array (as in 15.x); with any of them, one page of a [`UserPage`].
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct ListUsers {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Users per page, 1–1000 (default 100).
    #[serde(default)]
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    limit: Option<u32>,
    /// The `next` of the previous page, sent with the same `sort`: the page starts after it.
    #[serde(default)]
    after: Option<String>,
    /// The order of the pages (default `username`).
    #[serde(default)]
    sort: Option<UserSort>,
}

/// Swagger UI's example body: the first page of 20, newest first.
impl poem_openapi::types::Example for ListUsers {
    fn example() -> Self {
        ListUsers {
            admin_token: None,
            limit: Some(20),
            after: None,
            sort: Some(UserSort::CreatedDesc),
        }
    }
}

/// Users per page when `limit` is not sent.
pub const DEFAULT_USER_PAGE: u32 = 100;
/// The largest `limit` of `/list_users`.
pub const MAX_USER_PAGE: u32 = 1000;

/// The orders `/list_users` pages in. Names compare in natural order (`user2` before
/// `user10`); equal times fall back to the name; `-` reverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum UserSort {
    /// By username, natural order.
    #[oai(rename = "username")]
    Username,
    /// By username, natural order reversed.
    #[oai(rename = "-username")]
    UsernameDesc,
    /// Oldest created first.
    #[oai(rename = "created")]
    Created,
    /// Newest created first.
    #[oai(rename = "-created")]
    CreatedDesc,
    /// Least recently changed first.
    #[oai(rename = "changed")]
    Changed,
    /// Most recently changed first.
    #[oai(rename = "-changed")]
    ChangedDesc,
}

impl<'de> Deserialize<'de> for UserSort {
    // By hand: serde_json reports a derived enum fed a number as malformed JSON, without the
    // field's name; a string is read first here, so every mistake names `sort`.
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let name = String::deserialize(de)?;
        user_order::ALL
            .into_iter()
            .find(|sort| user_order::sort_name(*sort) == name)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, &user_order::NAMES))
    }
}

/// One page of users.
#[derive(Debug, Object)]
pub struct UserPage {
    /// The users of this page, in the order asked for.
    pub users: Vec<UserView>,
    /// What to send as `after` (with the same `sort`) for the next page; null on the last.
    #[oai(nullable)]
    pub next: Option<String>,
}

/// `POST /list_users`'s answer: every user (no paging field sent) or one page.
#[derive(Debug)]
pub enum UserList {
    /// Every user, by username (15.x's answer).
    All(Vec<UserView>),
    /// One page (`limit`, `after` or `sort` sent).
    Page(UserPage),
}

// By hand rather than `#[derive(Union)]`: the derive declares every union `type: object`,
// which the plain array answer would contradict (schemathesis checks each answer against it).
impl Type for UserList {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "UserList".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |registry| {
            Vec::<UserView>::register(registry);
            UserPage::register(registry);
            MetaSchema {
                description: Some(
                    "Every user as an array (no `limit`, `after` or `sort` sent), or one page.",
                ),
                one_of: vec![Vec::<UserView>::schema_ref(), UserPage::schema_ref()],
                ..MetaSchema::ANY
            }
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for UserList {
    fn to_json(&self) -> Option<Value> {
        match self {
            UserList::All(users) => users.to_json(),
            UserList::Page(page) => page.to_json(),
        }
    }
}

/// One tenant, as `/list_tenants` shows it.
#[derive(Debug, Object)]
pub struct TenantView {
    /// Its name.
    pub tenant_name: String,
    /// Users in it (revoked ones included).
    pub users: u64,
    /// Event names it holds a latest event of (what a stream's snapshot sends).
    pub event_names: u64,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for AdminOnly {
    fn example() -> Self {
        AdminOnly { admin_token: None }
    }
}

/// A body naming one user.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct AdminUser {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Whose.
    username: String,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for AdminUser {
    fn example() -> Self {
        AdminUser {
            admin_token: None,
            username: "alice".into(),
        }
    }
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
#[oai(example, skip_serializing_if_is_none)]
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

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for UpdateUser {
    fn example() -> Self {
        UpdateUser {
            admin_token: None,
            username: "alice".into(),
            tenant_name: None,
            password: None,
            email: MaybeUndefined::Value("alice@example.org".into()),
            scopes: MaybeUndefined::Undefined,
            data: MaybeUndefined::Undefined,
            two_factor: None,
        }
    }
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
    /// Email, if any (null when none).
    #[oai(nullable)]
    pub email: Option<String>,
    /// Scopes: `null` when never set, `[]` when set to an empty list.
    #[oai(nullable)]
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
    /// When the user was created, RFC 3339 UTC with milliseconds (the time of its record).
    pub created_at: String,
    /// When the user last changed in any way (fields, password, revocation), RFC 3339 UTC.
    pub changed_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: uuid::Uuid::from_bytes(user.id),
            username: String::from(&*user.username),
            tenant_name: String::from(&*user.tenant),
            email: user.email().map(str::to_owned),
            scopes: user.scopes().map(<[String]>::to_vec),
            data: user.data().and_then(|d| serde_json::from_str(d).ok()),
            two_factor: user.two_factor,
            revoked: user.revoked,
            password: "***".into(),
            totp: "***".into(),
            created_at: rfc3339(user.created_ms),
            changed_at: rfc3339(user.changed_ms),
        }
    }
}

/// Admin user routes.
#[derive(Default)]
pub struct UsersApi;

#[OpenApi(tag = "super::Tags::Users")]
impl UsersApi {
    /// Creates a user (admin): 200 `{"id": "<uuid>"}`; 400 if the username is taken.
    ///
    /// **Writes**: the example creates the user `alice` (password `correct horse`) in tenant
    /// `acme`. Authorize with `X-Admin-Token` first; the body then needs no `admin_token`.
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

    /// Lists users (admin), secrets masked: every user as an array by username, or — with
    /// `limit`, `after` or `sort` — one page `{"users": […], "next": …}`. 400 names a bad
    /// `limit`, `sort` or `after`.
    #[oai(path = "/list_users", method = "post")]
    async fn list_users(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<ListUsers>,
    ) -> Result<Json<UserList>, AdminReadErrors> {
        let body = body.0;
        app.require_admin(&admin, body.admin_token.as_deref(), req)?;
        if body.limit.is_none() && body.after.is_none() && body.sort.is_none() {
            let mut users: Vec<UserView> = app
                .engine
                .read(|s| s.users.iter().map(UserView::from).collect());
            users.sort_by(|a, b| a.username.cmp(&b.username));
            return Ok(Json(UserList::All(users)));
        }
        let limit = body.limit.unwrap_or(DEFAULT_USER_PAGE);
        if !(1..=MAX_USER_PAGE).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit: users per page are 1–{MAX_USER_PAGE}, got {limit}"
            ))
            .into());
        }
        let sort = body.sort.unwrap_or(UserSort::Username);
        let after = body
            .after
            .as_deref()
            .map(|text| user_order::Key::parse(sort, text))
            .transpose()
            .map_err(ApiError::bad_request)?;
        let page = app
            .engine
            .read(|s| user_order::page(s.users.iter(), sort, after.as_ref(), limit as usize));
        Ok(Json(UserList::Page(page)))
    }

    /// Every tenant that has users or events (admin), in natural order, with how many users
    /// and event names each holds: what the console offers to browse and watch.
    #[oai(path = "/list_tenants", method = "post")]
    async fn list_tenants(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminOnly>,
    ) -> Result<Json<Vec<TenantView>>, AdminReadErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let mut tenants: Vec<TenantView> = app.engine.read(|s| {
            let mut by_name: std::collections::HashMap<&str, TenantView> =
                std::collections::HashMap::new();
            let blank = |name: &str| TenantView {
                tenant_name: name.to_owned(),
                users: 0,
                event_names: 0,
            };
            for user in s.users.iter() {
                by_name
                    .entry(&*user.tenant)
                    .or_insert_with(|| blank(&user.tenant))
                    .users += 1;
            }
            for (tenant, names) in &s.latest {
                by_name
                    .entry(tenant)
                    .or_insert_with(|| blank(tenant))
                    .event_names = names.len() as u64;
            }
            by_name.into_values().collect()
        });
        tenants.sort_by(|a, b| user_order::natural(&a.tenant_name, &b.tenant_name));
        Ok(Json(tenants))
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
    ///
    /// **Writes**: the example changes `alice`'s email. Authorize with `X-Admin-Token` first.
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
    ///
    /// **Writes**: the example revokes `alice` (`/unrevoke_user` lets her log in again).
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
    ///
    /// **Writes**: the example lets `alice` log in again.
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
    ///
    /// **Writes, and cannot be undone**: the example deletes `alice`.
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
        validate::new_tenant(tenant)?;
        if app.engine.read(|s| s.users.tenant_taken_alike(tenant)) {
            let refused = crate::state::Rejection::TenantLookalike(tenant.clone());
            return Err(ApiError::bad_request(refused.to_string()));
        }
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
