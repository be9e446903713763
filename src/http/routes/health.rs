//! `GET /`, `HEAD /`: liveness; `GET /ready`: readiness (are writes accepted?).

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::http::App;

/// Health of the server.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
}

/// Writes are accepted.
#[derive(Debug, Object)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
}

/// Writes would be refused now.
#[derive(Debug, Object)]
pub struct NotReadyBody {
    /// What is wrong, in a sentence.
    pub error: String,
    /// `log_fault` (the last write to the log failed), `disk_low` (under --min_free_bytes)
    /// or `shared_log` (the NATS JetStream log is not reachable).
    pub reason: String,
}

/// `GET /ready`'s answers.
#[derive(ApiResponse)]
pub enum Readiness {
    /// Writes are accepted.
    #[oai(status = 200)]
    Ready(Json<Ready>),
    /// Writes would be refused (reads, logins and streams go on): take the node out of the
    /// rotation for writes until it answers 200 again.
    #[oai(status = 503)]
    NotReady(Json<NotReadyBody>),
}

/// Health routes.
#[derive(Default)]
pub struct HealthApi;

#[OpenApi(tag = "super::Tags::Operations")]
impl HealthApi {
    /// Health check (liveness): 200 while the process serves. It says nothing more to
    /// anyone: the newest cursor it used to show moved with every write of every tenant (and
    /// with a reset code's wrong tries), for anyone to watch (an attack review); the admin
    /// reads it from `/server_stats` and `/metrics`.
    #[oai(path = "/", method = "get", method = "head")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness: 200 `{"status":"ready"}` while writes are accepted; 503 with `error` and
    /// `reason` while they are not (a log write fault, the free-space floor, the shared log
    /// unreachable). A log fault is tried again at most once a second, so the node turns
    /// ready by itself once the disk works.
    #[oai(path = "/ready", method = "get", method = "head")]
    async fn ready(&self, app: Data<&App>) -> Readiness {
        match app.engine.readiness().await {
            Ok(()) => Readiness::Ready(Json(Ready {
                status: "ready".into(),
            })),
            Err(why) => Readiness::NotReady(Json(NotReadyBody {
                error: why.to_string(),
                reason: why.reason().into(),
            })),
        }
    }
}
