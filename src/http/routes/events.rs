//! `POST /insert`: append an event to the caller's tenant.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::scopes;
use crate::http::App;
use crate::http::authn::{Caller, Principal};
use crate::http::body::JsonBody;
use crate::http::error::{ApiError, InsertErrors};
use crate::state::{Command, validate};

/// `POST /insert` body.
#[derive(Debug, Deserialize, Object)]
pub struct Insert {
    /// Event name: 1–255 bytes of UTF-8, no control characters.
    event: String,
    /// Any JSON value.
    data: Value,
}

/// Where the event went.
#[derive(Debug, Object)]
pub struct Inserted {
    /// UUIDv7 of the event.
    pub id: uuid::Uuid,
    /// Its cursor: the SSE `id:` subscribers see.
    pub cursor: u64,
}

/// Event routes.
#[derive(Default)]
pub struct EventsApi;

#[OpenApi]
impl EventsApi {
    /// Inserts an event into the caller's tenant (Bearer or Basic); 200 once durable.
    #[oai(path = "/insert", method = "post")]
    async fn insert(
        &self,
        app: Data<&App>,
        body: JsonBody<Insert>,
        caller: Caller,
    ) -> Result<Json<Inserted>, InsertErrors> {
        Ok(insert(&app, caller.0, body.0).await?)
    }
}

async fn insert(app: &App, caller: Principal, body: Insert) -> Result<Json<Inserted>, ApiError> {
    validate::event_name(&body.event)?;
    if app.config.identity.enforce_scopes {
        // A scope change moves the credential epoch, so the insert below is refused if the
        // scopes read here are no longer the user's.
        app.engine
            .read(|s| {
                let scopes = s.user(&caller.username).map_or(&[][..], |u| &u.scopes);
                scopes::may_write(scopes, &body.event)
            })
            .map_err(ApiError::from)?;
    }
    app.inserts.take(&caller.username, app.clock.now_ms())?;
    let id = uuid::Uuid::now_v7();
    let records = app
        .engine
        .submit(Command::InsertEvent {
            username: caller.username,
            credential_epoch: caller.credential_epoch,
            id: *id.as_bytes(),
            event: body.event,
            data: body.data.to_string(),
            name_limit: app.config.limits.max_event_names,
        })
        .await?;
    let cursor = records.last().map_or(0, |r| r.cursor);
    Ok(Json(Inserted { id, cursor }))
}
