//! The admin API: users, two-factor enrolment and reset codes, with the admin token in the
//! `X-Admin-Token` header (never in a body or a URL).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Client, Error, Inserted};

/// The admin calls of one server, made with its admin token (see [`Client::admin`]). Cheap to
/// clone; its `Debug` form hides the token.
#[derive(Clone)]
pub struct Admin {
    client: Client,
    token: String,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("base", &self.client.base_url())
            .field("token", &"***")
            .finish()
    }
}

/// A user to create with [`Admin::create_user`]; the optional fields are left out when `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewUser {
    /// Login name, unique across all tenants (1–128 bytes, no control characters, no `:`).
    pub username: String,
    /// The password (hashed by the server with Argon2id).
    pub password: String,
    /// The tenant whose events the user reads and writes.
    pub tenant_name: String,
    /// A contact address (syntax and throwaway domains are checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Require a TOTP code at login (enrol with [`Admin::create_qr`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<bool>,
    /// `resource:operation` scopes (`temperature:write`); permissions under `--enforce_scopes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Any JSON to keep with the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl NewUser {
    /// A user with a name, a password and a tenant, nothing else.
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
        tenant_name: impl Into<String>,
    ) -> NewUser {
        NewUser {
            username: username.into(),
            password: password.into(),
            tenant_name: tenant_name.into(),
            ..NewUser::default()
        }
    }
}

/// A user as the admin API shows it (the server never sends hashes or secrets). Fields a
/// newer server adds are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct User {
    /// The user's UUID.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Tenant.
    pub tenant_name: String,
    /// Email, if any.
    pub email: Option<String>,
    /// Scopes: `None` when never set, `Some(vec![])` when set to an empty list.
    pub scopes: Option<Vec<String>>,
    /// Data, if any.
    pub data: Option<Value>,
    /// Whether login needs a TOTP code.
    pub two_factor: bool,
    /// Revoked users can neither log in nor act.
    pub revoked: bool,
}

/// A two-factor enrolment (`/create_qr`): the QR code for an authenticator app and the same
/// `otpauth://` URI as text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Enrolment {
    /// Base64 PNG of the QR code.
    pub qr: String,
    /// `otpauth://totp/<issuer>:<username>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    pub uri: String,
}

impl Client {
    /// The admin calls of this server with `token` (its `--admin_token`), sharing this
    /// client's connections. The token travels in the `X-Admin-Token` header.
    pub fn admin(&self, token: impl Into<String>) -> Admin {
        Admin {
            client: self.clone(),
            token: token.into(),
        }
    }

    /// Sets a new password with a reset code from [`Admin::create_totp`]
    /// (`POST /password_reset`, no credentials needed). A wrong, expired or used code and an
    /// unknown username are the same 401.
    pub async fn password_reset(
        &self,
        username: &str,
        code: &str,
        new_password: &str,
    ) -> Result<(), Error> {
        let request = self.inner.http.post(self.url("/password_reset")).json(
            &serde_json::json!({"username": username, "totp": code, "password": new_password}),
        );
        let _: Value = self.send(request, None).await?;
        Ok(())
    }
}

impl Admin {
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: Value,
    ) -> Result<T, Error> {
        let request = self
            .client
            .inner
            .http
            .post(self.client.url(path))
            .header("x-admin-token", &self.token)
            .json(&body);
        self.client.send(request, None).await
    }

    /// Creates a user (`POST /create_user`) and returns its id; 400 if the name is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<String, Error> {
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        let body = serde_json::to_value(user).map_err(Error::Serialize)?;
        let created: Created = self.call("/create_user", body).await?;
        Ok(created.id)
    }

    /// One user (`POST /get_user`); 404 for an unknown name.
    pub async fn get_user(&self, username: &str) -> Result<User, Error> {
        self.call("/get_user", serde_json::json!({"username": username}))
            .await
    }

    /// Every user (`POST /list_users`).
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        self.call("/list_users", serde_json::json!({})).await
    }

    /// Changes the fields in `changes` (`POST /update_user`), a JSON object with any of
    /// `tenant_name`, `password`, `email`, `scopes`, `data`, `two_factor`: an absent field
    /// stays, `null` clears `email`, `scopes` and `data`. A new password or tenant ends the
    /// user's sessions and streams. Returns the user as changed.
    pub async fn update_user(&self, username: &str, changes: Value) -> Result<User, Error> {
        let Value::Object(mut body) = changes else {
            return Err(Error::Protocol(
                "update_user: the changes must be a JSON object".into(),
            ));
        };
        body.insert("username".into(), Value::from(username));
        self.call("/update_user", Value::Object(body)).await
    }

    /// Revokes a user (`POST /revoke_user`): no more logins, tokens refused, streams closed.
    pub async fn revoke_user(&self, username: &str) -> Result<User, Error> {
        self.call("/revoke_user", serde_json::json!({"username": username}))
            .await
    }

    /// Lets a revoked user log in again (`POST /unrevoke_user`); earlier tokens stay void.
    pub async fn unrevoke_user(&self, username: &str) -> Result<User, Error> {
        self.call("/unrevoke_user", serde_json::json!({"username": username}))
            .await
    }

    /// Deletes a user (`POST /delete_user`); their events stay in the tenant. 404 for an
    /// unknown (or already deleted) user.
    pub async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let _: Value = self
            .call("/delete_user", serde_json::json!({"username": username}))
            .await?;
        Ok(())
    }

    /// The user's two-factor enrolment for an authenticator app (`POST /create_qr`),
    /// `issuer` being the name the app shows.
    pub async fn create_qr(&self, username: &str, issuer: &str) -> Result<Enrolment, Error> {
        self.call(
            "/create_qr",
            serde_json::json!({"username": username, "issuer": issuer}),
        )
        .await
    }

    /// Issues a password-reset code for the user (`POST /create_totp`): 8 random digits,
    /// valid `--totp_duration` seconds, usable once with [`Client::password_reset`].
    pub async fn create_totp(&self, username: &str) -> Result<String, Error> {
        #[derive(Deserialize)]
        struct Code {
            totp: String,
        }
        let code: Code = self
            .call("/create_totp", serde_json::json!({"username": username}))
            .await?;
        Ok(code.totp)
    }

    /// Inserts an event into `tenant` as the admin; see [`Client::admin_insert`].
    pub async fn insert(
        &self,
        tenant: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Inserted, Error> {
        self.client
            .admin_insert(&self.token, tenant, event, data)
            .await
    }
}
