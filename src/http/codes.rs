//! Two-factor enrolment and password-reset codes: `/create_qr`, `/create_totp` (admin) and
//! `/password_reset` (public, single-use codes, throttled).

use base64::Engine as _;
use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;

use super::App;
use super::body::JsonBody;
use super::error::{AdminLookupErrors, ApiError, WriteErrors};
use super::throttle::address;
use crate::auth::{qr, totp};
use crate::engine::EngineError;
use crate::state::{Command, Rejection};

/// `POST /create_qr` body.
#[derive(Debug, Deserialize, Object)]
pub struct CreateQr {
    /// The server's --admin_token.
    admin_token: String,
    /// The name the authenticator app shows (no ':').
    issuer: String,
    /// Whose.
    username: String,
}

/// An enrolment QR code.
#[derive(Debug, Object)]
pub struct Qr {
    /// Base64 PNG of an `otpauth://totp/<issuer>:<username>?…` URI (SHA1, 6 digits, 30 s).
    pub qr: String,
}

/// `POST /create_totp` body.
#[derive(Debug, Deserialize, Object)]
pub struct CreateTotp {
    /// The server's --admin_token.
    admin_token: String,
    /// Whose.
    username: String,
}

/// A password-reset code.
#[derive(Debug, Object)]
pub struct ResetCode {
    /// Six digits, valid at least --totp_duration seconds, usable once.
    pub totp: String,
}

/// `POST /password_reset` body.
#[derive(Debug, Deserialize, Object)]
pub struct PasswordReset {
    /// Whose.
    username: String,
    /// The code from /create_totp.
    totp: String,
    /// The new password.
    password: String,
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

#[OpenApi]
impl CodesApi {
    /// The user's enrolment QR code for authenticator apps (admin).
    #[oai(path = "/create_qr", method = "post")]
    async fn create_qr(
        &self,
        app: Data<&App>,
        req: &Request,
        body: JsonBody<CreateQr>,
    ) -> Result<Json<Qr>, AdminLookupErrors> {
        let body = body.0;
        app.require_admin(&body.admin_token, req)?;
        let secret = app.secret_of(&body.username)?;
        let uri = totp::enrolment_uri(&secret, &body.issuer, &body.username)
            .map_err(ApiError::bad_request)?;
        let png = qr::png(&uri).map_err(ApiError::internal)?;
        Ok(Json(Qr {
            qr: base64::engine::general_purpose::STANDARD.encode(png),
        }))
    }

    /// A password-reset code for the user (admin), to hand over out of band.
    #[oai(path = "/create_totp", method = "post")]
    async fn create_totp(
        &self,
        app: Data<&App>,
        req: &Request,
        body: JsonBody<CreateTotp>,
    ) -> Result<Json<ResetCode>, AdminLookupErrors> {
        let body = body.0;
        app.require_admin(&body.admin_token, req)?;
        let secret = app.secret_of(&body.username)?;
        let code = totp::reset_code(&secret, app.config.totp_duration, app.clock.now_s())
            .ok_or_else(|| ApiError::internal("the TOTP secret is unusable"))?;
        Ok(Json(ResetCode { totp: code }))
    }

    /// Sets a new password with a reset code (public): 401 for a wrong, expired or used code
    /// and for an unknown username alike; the old password and tokens stop working.
    #[oai(path = "/password_reset", method = "post")]
    async fn password_reset(
        &self,
        app: Data<&App>,
        req: &Request,
        body: JsonBody<PasswordReset>,
    ) -> Result<Json<Done>, WriteErrors> {
        password_reset(&app, &address(req), body.0).await?;
        Ok(Json(Done { ok: true }))
    }
}

impl App {
    /// The TOTP secret of `username`, or 404.
    fn secret_of(&self, username: &str) -> Result<Vec<u8>, ApiError> {
        self.engine
            .read(|s| s.user(username).map(|u| u.totp_secret.clone()))
            .ok_or_else(|| {
                ApiError::new(
                    poem::http::StatusCode::NOT_FOUND,
                    format!("username: no user is called {username:?}"),
                )
            })
    }
}

const WRONG_CODE: &str = "wrong username or reset code (codes expire and work once)";

async fn password_reset(app: &App, address: &str, body: PasswordReset) -> Result<(), ApiError> {
    app.throttle_check(Some(&body.username), address)?;
    app.check_password(&body.password, &body.username)?;
    let secret = app
        .engine
        .read(|s| s.user(&body.username).map(|u| u.totp_secret.clone()));
    let step = secret.and_then(|secret| {
        totp::check_reset_code(
            &secret,
            body.totp.trim(),
            app.config.totp_duration,
            app.clock.now_s(),
        )
    });
    let Some(step) = step else {
        app.throttle_fail(Some(&body.username), address);
        return Err(ApiError::unauthorized(WRONG_CODE));
    };
    let password_hash = app.hash_password(body.password).await?;
    let outcome = app
        .engine
        .submit(Command::ResetPassword {
            username: body.username.clone(),
            password_hash,
            step,
        })
        .await;
    match outcome {
        Ok(_) => {
            app.throttle_clear(&body.username);
            Ok(())
        }
        Err(EngineError::Rejected(Rejection::CodeReused | Rejection::UnknownUser(_))) => {
            app.throttle_fail(Some(&body.username), address);
            Err(ApiError::unauthorized(WRONG_CODE))
        }
        Err(other) => Err(other.into()),
    }
}
