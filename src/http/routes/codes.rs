//! Two-factor enrolment and password-reset codes: `/create_qr`, `/create_totp` (admin) and
//! `/password_reset` (public, single-use codes, throttled).

use base64::Engine as _;
use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;

use crate::auth::{qr, reset_code, totp};
use crate::engine::EngineError;
use crate::http::App;
use crate::http::authn::AdminHeader;
use crate::http::body::JsonBody;
use crate::http::error::{AdminErrors, AdminLookupErrors, ApiError, WriteErrors};
use crate::http::routes::users::UserView;
use crate::state::record::UserUpdated;
use crate::state::{Command, Rejection};

/// `POST /create_qr` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct CreateQr {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// The name the authenticator app shows: 1 to 128 bytes, no ':' and no control
    /// characters.
    #[oai(validator(min_length = 1, max_length = 128))]
    issuer: String,
    /// Whose.
    username: String,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for CreateQr {
    fn example() -> Self {
        CreateQr {
            admin_token: None,
            issuer: "Acme".into(),
            username: "alice".into(),
        }
    }
}

/// An enrolment QR code.
#[derive(Debug, Object)]
pub struct Qr {
    /// Base64 PNG of an `otpauth://totp/<issuer>:<username>?…` URI (SHA1, 6 digits, 30 s).
    pub qr: String,
    /// The same URI as text, for apps where the code is typed or pasted instead of scanned.
    pub uri: String,
}

/// `POST /create_totp` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct CreateTotp {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Whose.
    username: String,
}

/// `POST /enable_two_factor` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct EnableTwoFactor {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Whose.
    username: String,
    /// The 6-digit code the user's authenticator app shows now, after enrolling from
    /// `/create_qr`.
    totp: String,
}

/// `POST /reset_two_factor` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct ResetTwoFactor {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Whose.
    username: String,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for ResetTwoFactor {
    fn example() -> Self {
        ResetTwoFactor {
            admin_token: None,
            username: "alice".into(),
        }
    }
}

/// Swagger UI's example body (the admin token from "Authorize"; the code is the one `alice`'s
/// app would show, so trying it as is answers 400 and changes nothing).
impl poem_openapi::types::Example for EnableTwoFactor {
    fn example() -> Self {
        EnableTwoFactor {
            admin_token: None,
            username: "alice".into(),
            totp: "492039".into(),
        }
    }
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for CreateTotp {
    fn example() -> Self {
        CreateTotp {
            admin_token: None,
            username: "alice".into(),
        }
    }
}

/// A password-reset code.
#[derive(Debug, Object)]
pub struct ResetCode {
    /// Eight random digits, valid --totp_duration seconds, usable once; it replaces any
    /// earlier code of the user, and five wrong tries void it.
    pub totp: String,
}

/// `POST /password_reset` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct PasswordReset {
    /// Whose.
    username: String,
    /// The code from /create_totp.
    totp: String,
    /// The new password.
    #[oai(validator(min_length = 1, max_length = 1024))]
    password: String,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for PasswordReset {
    fn example() -> Self {
        PasswordReset {
            username: "alice".into(),
            totp: "49302817".into(),
            password: "a new long passphrase".into(),
        }
    }
}

/// An empty success.
#[derive(Debug, Object)]
pub struct Done {
    /// Always true.
    pub ok: bool,
}

/// Code routes.
#[derive(Default)]
pub struct CodesApi;

#[OpenApi(tag = "super::Tags::TwoFactor")]
impl CodesApi {
    /// The user's enrolment QR code for authenticator apps (admin).
    #[oai(path = "/create_qr", method = "post")]
    async fn create_qr(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<CreateQr>,
    ) -> Result<Json<Qr>, AdminLookupErrors> {
        let body = body.0;
        app.require_admin(&admin, body.admin_token.as_deref(), req)?;
        let secret = app.secret_of(&body.username)?;
        let uri = totp::enrolment_uri(&secret, &body.issuer, &body.username)
            .map_err(ApiError::bad_request)?;
        // The issuer's bound keeps every URI within a QR code's capacity; were one still
        // too long, it is the request's doing.
        let png = qr::png(&uri).map_err(ApiError::bad_request)?;
        Ok(Json(Qr {
            qr: base64::engine::general_purpose::STANDARD.encode(png),
            uri,
        }))
    }

    /// Turns two-factor login on for the user (admin) once a code from their authenticator
    /// app proves the enrolment worked: 400 for a wrong or expired code (nothing changes),
    /// 404 for an unknown username. Returns the user. Turning it on without a code
    /// (`/update_user`) can lock out a user who never scanned the QR code.
    #[oai(path = "/enable_two_factor", method = "post")]
    async fn enable_two_factor(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<EnableTwoFactor>,
    ) -> Result<Json<UserView>, AdminErrors> {
        let body = body.0;
        app.require_admin(&admin, body.admin_token.as_deref(), req)?;
        let secret = app.secret_of(&body.username)?;
        let Some(step) = totp::check_login_code(&secret, body.totp.trim(), app.clock.now_s())
        else {
            return Err(ApiError::bad_request(
                "totp: wrong or expired code; two-factor login stays off (send the code the app shows now)",
            )
            .into());
        };
        // The code proves the enrolment once, and is then used up like a login's: replayed,
        // it neither enables again nor logs in (found by an attack review).
        let revoked = app
            .engine
            .read(|s| s.user(&body.username).is_some_and(|u| u.revoked));
        if !revoked {
            let used = app
                .engine
                .submit(Command::UseLoginCode {
                    username: body.username.clone(),
                    step,
                })
                .await;
            match used {
                Ok(_) => {}
                Err(EngineError::Rejected(Rejection::CodeReused)) => {
                    return Err(ApiError::bad_request(
                        "totp: this code was already used; send the next one the app shows",
                    )
                    .into());
                }
                Err(other) => return Err(ApiError::from(other).into()),
            }
        }
        let update = UserUpdated {
            username: body.username.clone(),
            tenant: None,
            email: None,
            scopes: None,
            data: None,
            two_factor: Some(true),
        };
        app.engine
            .submit(Command::UpdateUser {
                update,
                password_hash: None,
            })
            .await?;
        Ok(app.user_view(&body.username).map(Json)?)
    }

    /// Replaces the user's TOTP secret with a new random one (admin): for a lost or exposed
    /// authenticator. Codes of the old secret stop working at once, and so do the user's
    /// tokens and streams. Two-factor login stays as it was: if it is on, the user logs in
    /// again only with a code from the new secret, so enrol them with `/create_qr` (which now
    /// shows the new secret) and check with `/enable_two_factor`. Returns the user.
    ///
    /// **Writes**: the example replaces `alice`'s secret. Authorize with `X-Admin-Token` first.
    #[oai(path = "/reset_two_factor", method = "post")]
    async fn reset_two_factor(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<ResetTwoFactor>,
    ) -> Result<Json<UserView>, AdminErrors> {
        let body = body.0;
        app.require_admin(&admin, body.admin_token.as_deref(), req)?;
        app.engine
            .submit(Command::ReplaceTotpSecret {
                username: body.username.clone(),
                totp_secret: totp::new_secret(),
            })
            .await?;
        Ok(app.user_view(&body.username).map(Json)?)
    }

    /// Issues a password-reset code for the user (admin), to hand over out of band. The
    /// code is random; the log keeps only its digest and expiry.
    ///
    /// **Writes** (a record; it replaces the user's earlier code): the example issues a code
    /// for `alice`. Authorize with `X-Admin-Token` first.
    #[oai(path = "/create_totp", method = "post")]
    async fn create_totp(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<CreateTotp>,
    ) -> Result<Json<ResetCode>, AdminErrors> {
        let body = body.0;
        app.require_admin(&admin, body.admin_token.as_deref(), req)?;
        let code = reset_code::generate();
        let expires_ms = app.clock.now_ms() + (app.config.identity.totp_duration as i64) * 1000;
        app.engine
            .submit(Command::IssueResetCode {
                code_hash: reset_code::digest(&body.username, &code),
                username: body.username,
                expires_ms,
            })
            .await?;
        Ok(Json(ResetCode { totp: code }))
    }

    /// Sets a new password with a reset code (public): 401 for a wrong, expired or used code
    /// and for an unknown username alike; the old password and tokens stop working.
    ///
    /// **Writes**: with a valid code, the example changes `alice`'s password. Get the code
    /// from `/create_totp` first; the example's code is only a placeholder and answers 401.
    #[oai(path = "/password_reset", method = "post")]
    async fn password_reset(
        &self,
        app: Data<&App>,
        req: &Request,
        body: JsonBody<PasswordReset>,
    ) -> Result<Json<Done>, WriteErrors> {
        password_reset(&app, req, body.0).await?;
        Ok(Json(Done { ok: true }))
    }
}

impl App {
    /// The TOTP secret of `username`, or 404.
    fn secret_of(&self, username: &str) -> Result<Vec<u8>, ApiError> {
        self.engine
            .read(|s| s.user(username).map(|u| u.totp_secret.to_vec()))
            .ok_or_else(|| {
                ApiError::new(
                    poem::http::StatusCode::NOT_FOUND,
                    format!("username: no user is called {username:?}"),
                )
            })
    }
}

const WRONG_CODE: &str =
    "wrong username or reset code (codes expire, work once, and five wrong tries void them)";

async fn password_reset(app: &App, req: &Request, body: PasswordReset) -> Result<(), ApiError> {
    let admitted = app.throttle_admit(app.attempt(&body.username, req)).await?;
    app.check_password(&body.password, &body.username)?;
    let now_ms = app.clock.now_ms();
    let live = app.engine.read(|s| {
        s.user(&body.username)
            .and_then(|u| u.reset_code().cloned())
            .filter(|code| now_ms < code.expires_ms)
    });
    let Some(live) = live else {
        admitted.fail();
        return Err(ApiError::unauthorized(WRONG_CODE));
    };
    if !reset_code::matches(&body.username, &body.totp, &live.code_hash) {
        admitted.fail();
        // On record, so that the fifth wrong try voids the code on every node and after a
        // restart; a refusal only means the code changed meanwhile.
        let counted = app
            .engine
            .submit(Command::FailResetCode {
                username: body.username.clone(),
                code: live.issued,
            })
            .await;
        return match counted {
            Ok(_) | Err(EngineError::Rejected(_)) => Err(ApiError::unauthorized(WRONG_CODE)),
            Err(other) => Err(other.into()),
        };
    }
    let password_hash = app.hash_password(body.password).await?;
    let outcome = app
        .engine
        .submit(Command::ResetPassword {
            username: body.username.clone(),
            password_hash,
            code: live.issued,
        })
        .await;
    match outcome {
        Ok(_) => {
            admitted.succeed();
            Ok(())
        }
        // Used or replaced by a concurrent request since it was read.
        Err(EngineError::Rejected(Rejection::ResetCodeInvalid | Rejection::UnknownUser(_))) => {
            admitted.fail();
            Err(ApiError::unauthorized(WRONG_CODE))
        }
        Err(other) => Err(other.into()),
    }
}
