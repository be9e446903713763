//! `POST /insert`: append an event to the caller's tenant.

use poem::web::{Data, Json};
use poem::{Request, handler};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::authn::authenticate;
use super::body::JsonBody;
use super::error::ApiError;
use crate::state::{Command, validate};

/// `POST /insert` body.
#[derive(Debug, Deserialize)]
pub struct Insert {
    event: String,
    data: Value,
}

/// 200 `{"id": "<uuid>", "cursor": N}` once the event is durable.
#[handler]
pub async fn insert(
    app: Data<&App>,
    req: &Request,
    JsonBody(body): JsonBody<Insert>,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&app, req).await?;
    validate::event_name(&body.event)?;
    let id = uuid::Uuid::now_v7();
    let records = app
        .engine
        .submit(Command::InsertEvent {
            username: caller.username,
            credential_epoch: caller.credential_epoch,
            id: *id.as_bytes(),
            event: body.event,
            data: body.data.to_string(),
        })
        .await?;
    let cursor = records.last().map_or(0, |r| r.cursor);
    Ok(Json(json!({ "id": id, "cursor": cursor })))
}
