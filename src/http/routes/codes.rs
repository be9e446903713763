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
    /// The code from /create_totp (8 digits; at most 32 characters are taken: a long one made the
    /// check's hashing, done only for a user with a live code, tell who had one).
    #[oai(validator(max_length = 32))]
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

/// The longest `totp` checked, in characters: longer ones are refused before any user is
/// looked at.
const MAX_CODE_CHARS: usize = 32;

/// What a code is checked against for a user without a live one: no SHA-256 digest is all
/// zeros (`validate::record` refuses such a record).
const NO_LIVE_CODE: [u8; 32] = [0; 32];

const WRONG_CODE: &str =
    "wrong username or reset code (codes expire, work once, and five wrong tries void them)";

/// Wrong reset codes, counted in memory per code until they void it.
///
/// Each wrong code used to be written at once (`ResetCodeFailed`): then a wrong guess for a
/// user with a live code moved the global cursor (shown to anyone by `GET /`) and was
/// answered later (the record's fsync) than one for a user without, an anonymous yes/no on
/// "does this user have a reset pending" (an attack review). Now only the try that voids the
/// code is written, so before that a live code and none answer alike. Per node: a code
/// tried on several nodes takes five wrong tries on one of them, or the written ones of all.
#[derive(Default)]
pub(crate) struct WrongCodes {
    counts: std::sync::Mutex<std::collections::HashMap<(String, u64), WrongTries>>,
}

struct WrongTries {
    tries: u8,
    /// When the code expires: an entry is useless after it.
    expires_ms: i64,
}

/// Codes counted at once at most: only live codes of real users are counted (the admin
/// issues them), so this bounds an accident, not an attacker.
const MAX_COUNTED_CODES: usize = 100_000;

/// What to do with a wrong code.
#[derive(Debug, PartialEq, Eq)]
enum WrongCode {
    /// Counted here; nothing to write.
    Counted,
    /// Write it (it voids the code, or there is no room to count it here).
    Write,
}

impl WrongCodes {
    /// Counts a wrong try at `code` (the username and its issue's cursor), which has
    /// `written` wrong tries on record.
    fn count(&self, code: (String, u64), written: u8, expires_ms: i64, now_ms: i64) -> WrongCode {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= MAX_COUNTED_CODES && !counts.contains_key(&code) {
            counts.retain(|_, tries| tries.expires_ms > now_ms);
            if counts.len() >= MAX_COUNTED_CODES {
                return WrongCode::Write;
            }
        }
        let entry = counts.entry(code).or_insert(WrongTries {
            tries: 0,
            expires_ms,
        });
        entry.tries = entry.tries.saturating_add(1);
        if written.saturating_add(entry.tries) < crate::state::RESET_CODE_TRIES {
            return WrongCode::Counted;
        }
        WrongCode::Write
    }

    /// Whether the code `issued` of `username`, with `written` wrong tries on record, has had
    /// its last try here: it is being voided, and a right guess racing the records that void
    /// it must not get in.
    fn used_up(&self, username: &str, issued: u64, written: u8) -> bool {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&(username.to_owned(), issued))
            .is_some_and(|t| written.saturating_add(t.tries) >= crate::state::RESET_CODE_TRIES)
    }

    /// Forgets the tries at the code `issued` of `username` (used, voided or replaced).
    fn forget(&self, username: &str, issued: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.remove(&(username.to_owned(), issued));
    }
}

async fn password_reset(app: &App, req: &Request, body: PasswordReset) -> Result<(), ApiError> {
    // Characters, as the schema's maxLength counts: at most 128 bytes are hashed.
    if body.totp.chars().nth(MAX_CODE_CHARS).is_some() {
        return Err(ApiError::bad_request(format!(
            "totp: at most {MAX_CODE_CHARS} characters (a reset code has {} digits)",
            reset_code::DIGITS
        )));
    }
    let admitted = app.throttle_admit(app.attempt(&body.username, req)).await?;
    app.check_password(&body.password, &body.username)?;
    let now_ms = app.clock.now_ms();
    let live = app.engine.read(|s| {
        s.user(&body.username)
            .and_then(|u| u.reset_code().cloned())
            .filter(|code| now_ms < code.expires_ms)
    });
    // The code's digest is computed whether or not the user has a live code (against a
    // digest no code has): its time must not tell anyone which users have one.
    let matched = reset_code::matches(
        &body.username,
        &body.totp,
        live.as_ref().map_or(&NO_LIVE_CODE, |live| &live.code_hash),
    );
    let Some(live) = live else {
        admitted.fail();
        return Err(ApiError::unauthorized(WRONG_CODE));
    };
    if !matched {
        admitted.fail();
        let code = (body.username.clone(), live.issued);
        if app
            .wrong_codes
            .count(code, live.failures, live.expires_ms, now_ms)
            == WrongCode::Counted
        {
            return Err(ApiError::unauthorized(WRONG_CODE));
        }
        // On record, so that the code is void on every node and after a restart: one record
        // per wrong try still missing there (a refusal means the code is void or replaced).
        // The count is forgotten only once they are written: meanwhile it refuses the code.
        // Written after the answer: waiting for their fsync made this try slower for a user
        // with a live code than for one without, one sample enough to tell (an attack
        // review). A crash before they are durable leaves the code to its next wrong tries,
        // as a restart does.
        let app = app.clone();
        tokio::spawn(async move {
            for _ in live.failures..crate::state::RESET_CODE_TRIES {
                let counted = app
                    .engine
                    .submit(Command::FailResetCode {
                        username: body.username.clone(),
                        code: live.issued,
                    })
                    .await;
                match counted {
                    Ok(_) => {}
                    Err(EngineError::Rejected(_)) => break,
                    Err(other) => {
                        // The count stays, and refuses the code on this node meanwhile.
                        tracing::warn!(error = %other, "a voided reset code could not be written");
                        return;
                    }
                }
            }
            app.wrong_codes.forget(&body.username, live.issued);
        });
        return Err(ApiError::unauthorized(WRONG_CODE));
    }
    if app
        .wrong_codes
        .used_up(&body.username, live.issued, live.failures)
    {
        admitted.fail();
        return Err(ApiError::unauthorized(WRONG_CODE));
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
            app.wrong_codes.forget(&body.username, live.issued);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_codes_are_written_only_when_they_void_the_code() {
        let wrong = WrongCodes::default();
        let bob = || ("bob".to_owned(), 7);
        for _ in 1..crate::state::RESET_CODE_TRIES {
            assert_eq!(wrong.count(bob(), 0, 1_000, 0), WrongCode::Counted);
        }
        assert_eq!(wrong.count(bob(), 0, 1_000, 0), WrongCode::Write);
        // Tries on record (another node's, or before a restart) count too.
        let ann = || ("ann".to_owned(), 9);
        assert_eq!(wrong.count(ann(), 3, 1_000, 0), WrongCode::Counted);
        assert_eq!(wrong.count(ann(), 3, 1_000, 0), WrongCode::Write);
        // A replaced code starts afresh.
        assert_eq!(
            wrong.count(("ann".into(), 10), 0, 1_000, 0),
            WrongCode::Counted
        );
        assert!(!wrong.used_up("ann", 10, 3));
        assert!(wrong.used_up("ann", 10, 4));
        wrong.forget("ann", 10);
        assert!(!wrong.used_up("ann", 10, 4));
        assert!(
            wrong
                .counts
                .lock()
                .unwrap()
                .get(&("ann".into(), 10))
                .is_none()
        );
    }

    #[test]
    fn a_full_count_drops_expired_codes_and_else_writes() {
        let wrong = WrongCodes::default();
        for n in 0..MAX_COUNTED_CODES as u64 {
            // Half expire at 100.
            let expires = if n % 2 == 0 { 100 } else { 1_000 };
            assert_eq!(
                wrong.count(("u".into(), n), 0, expires, 0),
                WrongCode::Counted
            );
        }
        let late = ("late".to_owned(), 1);
        assert_eq!(wrong.count(late.clone(), 0, 1_000, 0), WrongCode::Write);
        assert_eq!(wrong.count(late, 0, 1_000, 500), WrongCode::Counted);
        assert_eq!(
            wrong.counts.lock().unwrap().len(),
            MAX_COUNTED_CODES / 2 + 1
        );
    }
}
