//! The one place errors become HTTP: status plus `{"error": "<sentence>"}`.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};

use crate::auth::credentials::CredentialsError;
use crate::auth::jwt::JwtError;
use crate::engine::EngineError;
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

impl From<CredentialsError> for ApiError {
    fn from(e: CredentialsError) -> Self {
        ApiError::unauthorized(e.to_string())
    }
}

impl From<JwtError> for ApiError {
    fn from(e: JwtError) -> Self {
        ApiError::unauthorized(match e {
            JwtError::Invalid => "invalid token: log in again",
            JwtError::Expired => "expired token: log in again",
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
                Rejection::CredentialsInvalid(_) | Rejection::CodeReused => {
                    ApiError::unauthorized(rejection.to_string())
                }
                Rejection::Invalid(_) | Rejection::UsernameTaken(_) => {
                    ApiError::bad_request(rejection.to_string())
                }
            },
            EngineError::Unavailable(detail) => {
                tracing::error!(%detail, "write refused: log unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the log cannot accept writes right now; nothing was stored, retry later",
                )
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

impl poem_openapi::ApiResponse for ApiError {
    fn meta() -> poem_openapi::registry::MetaResponses {
        use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses};
        use poem_openapi::types::Type;
        let statuses: [(u16, &'static str); 8] = [
            (
                400,
                "malformed JSON, a missing or mistyped field, an invalid value, a taken username",
            ),
            (
                401,
                "missing or invalid credentials, wrong admin token, revoked user, expired or forged token",
            ),
            (404, "unknown username on an admin endpoint"),
            (413, "body larger than --max_body_bytes"),
            (429, "too many failed attempts"),
            (500, "a server fault (I/O), logged with detail"),
            (
                503,
                "the log cannot write right now, or the server is stopping; nothing was stored",
            ),
            (405, "method not allowed"),
        ];
        MetaResponses {
            responses: statuses
                .into_iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        use poem_openapi::types::Type;
        ErrorBody::register(registry);
    }
}
