//! `POST /insert`: append an event to the caller's tenant.

use poem::http::Method;
use poem::web::Data;
use poem::{IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::scopes;
use crate::http::App;
use crate::http::authn::{Caller, Principal, app_of, authenticate};
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

/// `POST /insert` served without the route table and poem-openapi's layers, for it is the
/// server's hottest route: the same steps in the same order as the operation above — the body
/// ([`JsonBody`]'s parser), the caller ([`Caller`]'s authentication), then [`insert`] — with
/// errors left to the same catch-all that turns them into JSON. The middlewares around the
/// route table (client address, metrics, audit, CORS) run as for any route.
pub(crate) async fn insert_direct(req: Request) -> poem::Result<Response> {
    let (req, mut body) = req.split();
    let parsed: Insert = crate::http::body::parse(&req, &mut body).await?;
    let app = app_of(&req)?;
    let caller = authenticate(app, &req).await?;
    Ok(insert(app, caller, parsed).await?.into_response())
}

/// Whether `req` is for [`insert_direct`]: exactly what the route table would give the
/// `/insert` operation (its path, any query, method POST).
pub(crate) fn is_insert(req: &Request) -> bool {
    req.method() == Method::POST && req.uri().path() == PATH
}

/// The route's path, for the table and the direct path alike.
const PATH: &str = "/insert";

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
