//! `GET /`, `HEAD /`: health.

use poem::handler;
use poem::web::{Data, Json};
use serde_json::{Value, json};

use super::App;

/// 200 with the newest durable cursor.
#[handler]
pub async fn health(app: Data<&App>) -> Json<Value> {
    Json(json!({ "status": "ok", "cursor": app.engine.cursor() }))
}
