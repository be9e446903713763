//! The one place errors become HTTP: status plus `{"error": "<sentence>"}`.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};

use crate::auth::credentials::CredentialsError;
use crate::auth::jwt::JwtError;
use crate::auth::scopes::MissingScope;
use crate::engine::EngineError;
use crate::http::routes::history::HistoryQueryError;
use crate::http::routes::sse::EventListError;
use crate::state::Rejection;
use crate::state::validate::Invalid;

/// An error answer: a status and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The sentence sent as `error`.
    pub message: String,
    /// Seconds for a `retry-after` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 with `retry-after`.
    pub fn too_many(retry_after_ms: i64) -> Self {
        let seconds = (retry_after_ms.max(1) as u64).div_ceil(1000);
        ApiError {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed attempts; retry in {seconds} s"),
            )
        }
    }

    /// 503 with `retry-after`: a bounded queue is full.
    pub fn busy(message: impl Into<String>, retry_after_s: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 500 for a real server fault: the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error; the server log has the details",
        )
    }

    /// Converts any error poem raised (routing, body reading) into our JSON shape.
    pub fn from_poem(err: poem::Error) -> Self {
        if let Some(api) = err.downcast_ref::<ApiError>() {
            return api.clone();
        }
        let status = err.status();
        let message = match status {
            StatusCode::NOT_FOUND => "no such endpoint".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint".to_owned(),
            _ => err.to_string(),
        };
        Self::new(status, message)
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = Response::builder()
            .status(self.status)
            .content_type("application/json");
        if let Some(seconds) = self.retry_after {
            response = response.header("retry-after", seconds.to_string());
        }
        response.body(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        poem::error::ResponseError::as_response(&self)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<HistoryQueryError> for ApiError {
    fn from(e: HistoryQueryError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<EventListError> for ApiError {
    fn from(e: EventListError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<MissingScope> for ApiError {
    fn from(e: MissingScope) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, e.to_string())
    }
}

impl From<CredentialsError> for ApiError {
    fn from(e: CredentialsError) -> Self {
        match e {
            CredentialsError::Repeated => ApiError::bad_request(e.to_string()),
            _ => ApiError::unauthorized(e.to_string()),
        }
    }
}

impl From<JwtError> for ApiError {
    fn from(e: JwtError) -> Self {
        ApiError::unauthorized(match e {
            JwtError::Invalid => "invalid token: log in again",
            JwtError::Expired => "expired token: log in again",
            JwtError::FromTheFuture => {
                "invalid token: issued in the future (are the servers' clocks right?)"
            }
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Rejected(rejection) => match rejection {
                Rejection::UnknownUser(_) => {
                    ApiError::new(StatusCode::NOT_FOUND, rejection.to_string())
                }
                Rejection::CredentialsInvalid(_)
                | Rejection::CodeReused
                | Rejection::ResetCodeInvalid => ApiError::unauthorized(rejection.to_string()),
                Rejection::Invalid(_)
                | Rejection::UsernameTaken(_)
                | Rejection::UsernameLookalike(_)
                | Rejection::TenantLookalike(_) => ApiError::bad_request(rejection.to_string()),
                Rejection::KeyReused => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, rejection.to_string())
                }
                Rejection::TooManyEventNames(_) => {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, rejection.to_string())
                }
                // Not 429: waiting does not help, only smaller data does.
                Rejection::SnapshotTooLarge(_) => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, rejection.to_string())
                }
            },
            EngineError::Unavailable(detail) => {
                tracing::error!(%detail, "write refused: log unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the log cannot accept writes right now; nothing was stored, retry later",
                )
            }
            EngineError::DiskLow { .. } => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
            EngineError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down; nothing was stored, retry on another instance",
            ),
            other => ApiError::internal(other),
        }
    }
}

/// The body of every error response.
#[derive(Debug, poem_openapi::Object)]
pub struct ErrorBody {
    /// One sentence a person can act on; names the field at fault where there is one.
    pub error: String,
}

/// The statuses an operation can answer with an error, as a bit set: each route declares
/// its own, so that `/openapi.json` lists exactly the errors it can return.
pub mod status {
    /// 400: malformed or invalid input.
    pub const BAD_REQUEST: u16 = 1;
    /// 401: credentials refused.
    pub const UNAUTHORIZED: u16 = 1 << 1;
    /// 404: unknown username.
    pub const NOT_FOUND: u16 = 1 << 2;
    /// 413: body over --max_body_bytes, or an insert past --max_tenant_snapshot_bytes.
    pub const TOO_LARGE: u16 = 1 << 3;
    /// 429: too many failures, streams or tickets.
    pub const TOO_MANY: u16 = 1 << 4;
    /// 500: a server fault.
    pub const INTERNAL: u16 = 1 << 5;
    /// 503: the log cannot write, or the server is stopping.
    pub const UNAVAILABLE: u16 = 1 << 6;
    /// 507: the log's disk is below `--min_free_bytes`.
    pub const INSUFFICIENT: u16 = 1 << 7;
    /// 403: a scope is missing (`--enforce_scopes`).
    pub const FORBIDDEN: u16 = 1 << 8;
    /// 422: an `Idempotency-Key` reused for a different request.
    pub const UNPROCESSABLE: u16 = 1 << 9;
}

/// An [`ApiError`] from a route that can answer only the statuses in `SET` (see [`status`]).
#[derive(Debug)]
pub struct Errors<const SET: u16>(pub ApiError);

impl<const SET: u16> From<ApiError> for Errors<SET> {
    fn from(e: ApiError) -> Self {
        Errors(e)
    }
}

impl<const SET: u16> From<EngineError> for Errors<SET> {
    fn from(e: EngineError) -> Self {
        Errors(e.into())
    }
}

impl<const SET: u16> From<Invalid> for Errors<SET> {
    fn from(e: Invalid) -> Self {
        Errors(e.into())
    }
}

// Into poem's error as the ApiError itself, so that `ApiError::from_poem` finds it again
// (status, sentence and retry-after intact).
impl<const SET: u16> From<Errors<SET>> for poem::Error {
    fn from(e: Errors<SET>) -> Self {
        poem::Error::from(e.0)
    }
}

impl<const SET: u16> poem_openapi::ApiResponse for Errors<SET> {
    fn meta() -> poem_openapi::registry::MetaResponses {
        error_responses(SET)
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        use poem_openapi::types::Type;
        ErrorBody::register(registry);
    }
}

use status::*;

/// Admin routes: bad input, wrong token, unknown user, big body, throttled, faults.
pub type AdminErrors = Errors<
    { BAD_REQUEST | UNAUTHORIZED | NOT_FOUND | TOO_LARGE | TOO_MANY | INTERNAL | UNAVAILABLE },
>;
/// Admin routes that read one user (or a secret of one).
pub type AdminLookupErrors =
    Errors<{ BAD_REQUEST | UNAUTHORIZED | NOT_FOUND | TOO_LARGE | TOO_MANY | INTERNAL }>;
/// Admin routes that name no user and write nothing.
pub type AdminReadErrors = Errors<{ BAD_REQUEST | UNAUTHORIZED | TOO_LARGE | TOO_MANY | INTERNAL }>;
/// Routes with a body that write but find no named user: create_user, login (a used
/// two-factor code), password_reset (unknown users are 401), compact.
pub type WriteErrors =
    Errors<{ BAD_REQUEST | UNAUTHORIZED | TOO_LARGE | TOO_MANY | INTERNAL | UNAVAILABLE }>;
/// `create_user`: as [`WriteErrors`], and the free-space floor.
pub type CreateErrors = Errors<
    { BAD_REQUEST | UNAUTHORIZED | TOO_LARGE | TOO_MANY | INTERNAL | UNAVAILABLE | INSUFFICIENT },
>;
/// `/insert`: bad input, credentials (Basic: throttled, hash queue), body size, quotas (429),
/// a reused `Idempotency-Key` (422), the log, the free-space floor.
pub type InsertErrors = Errors<
    {
        BAD_REQUEST
            | UNAUTHORIZED
            | FORBIDDEN
            | TOO_LARGE
            | TOO_MANY
            | UNPROCESSABLE
            | INTERNAL
            | UNAVAILABLE
            | INSUFFICIENT
    },
>;
/// `/admin_insert`: as `/insert` (the admin token's throttle is the 429 besides quotas).
pub type AdminInsertErrors = InsertErrors;
/// Routes without a body that only check credentials (Basic: throttled, hash queue).
pub type AuthErrors = Errors<{ UNAUTHORIZED | TOO_MANY | INTERNAL | UNAVAILABLE }>;
/// `/refresh`: Basic instead of Bearer (400), a token that no longer holds (401).
pub type RefreshErrors = Errors<{ BAD_REQUEST | UNAUTHORIZED | INTERNAL }>;
/// `/sse_ticket`: credentials and the waiting-ticket limit.
pub type TicketErrors = Errors<{ UNAUTHORIZED | TOO_MANY | INTERNAL | UNAVAILABLE }>;
/// `/sse`: a header and a ticket at once, credentials, the streams-per-user limit.
pub type StreamErrors =
    Errors<{ BAD_REQUEST | UNAUTHORIZED | FORBIDDEN | TOO_MANY | INTERNAL | UNAVAILABLE }>;

/// `/events`: bad parameters, credentials (user or admin), scopes, throttles, the log.
pub type HistoryErrors = StreamErrors;

fn error_responses(set: u16) -> poem_openapi::registry::MetaResponses {
    use poem_openapi::registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses};
    use poem_openapi::types::Type;
    let statuses: [(u16, u16, &'static str); 10] = [
        (
            BAD_REQUEST,
            400,
            "malformed JSON, a missing or mistyped field, an invalid value, a taken username",
        ),
        (
            UNAUTHORIZED,
            401,
            "missing or invalid credentials, wrong admin token, revoked user, expired or forged token, spent ticket",
        ),
        (
            FORBIDDEN,
            403,
            "--enforce_scopes: the user lacks the scope for this event name (the message names it)",
        ),
        (NOT_FOUND, 404, "unknown username on an admin endpoint"),
        (
            TOO_LARGE,
            413,
            "body larger than --max_body_bytes, or (inserts) data that would bring the tenant's latest events past --max_tenant_snapshot_bytes",
        ),
        (
            UNPROCESSABLE,
            422,
            "an Idempotency-Key already used by this caller for a different request",
        ),
        (
            TOO_MANY,
            429,
            "too many failed attempts, open streams or waiting tickets; retry after retry-after seconds",
        ),
        (INTERNAL, 500, "a server fault (I/O), logged with detail"),
        (
            UNAVAILABLE,
            503,
            "the log cannot write right now, the server is stopping, or too many password checks are waiting; nothing was stored",
        ),
        (
            INSUFFICIENT,
            507,
            "the log's disk is below --min_free_bytes; nothing was stored (reads, logins and streams go on)",
        ),
    ];
    MetaResponses {
        responses: statuses
            .into_iter()
            .filter(|(bit, _, _)| set & bit != 0)
            .map(|(_, status, description)| MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json",
                    schema: ErrorBody::schema_ref(),
                }],
                headers: if status == 429 || status == 503 {
                    vec![MetaHeader {
                        name: "retry-after".into(),
                        description: Some("seconds to wait before retrying".into()),
                        required: status == 429,
                        deprecated: false,
                        schema: u64::schema_ref(),
                    }]
                } else {
                    vec![]
                },
            })
            .collect(),
    }
}
