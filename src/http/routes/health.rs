//! `GET /`, `HEAD /`: health.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::http::App;

/// Health of the server.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// The newest durable cursor.
    pub cursor: u64,
}

/// Health routes.
#[derive(Default)]
pub struct HealthApi;

#[OpenApi]
impl HealthApi {
    /// Health check: 200 with the newest durable cursor.
    #[oai(path = "/", method = "get", method = "head")]
    async fn health(&self, app: Data<&App>) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
            cursor: app.engine.cursor(),
        })
    }
}
