//! `POST /insert`: append an event to the caller's tenant; `POST /admin_insert`: the admin
//! appends one to any tenant. Both take an optional `Idempotency-Key` header.

use std::future::Future;

use poem::http::Method;
use poem::web::Data;
use poem::{Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;

use crate::auth::scopes;
use crate::http::App;
use crate::http::authn::{AdminHeader, Caller, Presented, Principal};
use crate::http::body::JsonBody;
use crate::http::error::{AdminInsertErrors, ApiError, InsertErrors};
use crate::http::event_data::EventData;
use crate::state::{Author, Command, validate};

/// `POST /insert` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct Insert {
    /// Event name: 1–255 bytes of UTF-8, no control characters.
    #[oai(validator(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    ))]
    event: String,
    /// Any JSON value.
    data: EventData,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for Insert {
    fn example() -> Self {
        Insert {
            event: "temperature".into(),
            data: EventData::of(&serde_json::json!({"celsius": 21})),
        }
    }
}

/// `POST /admin_insert` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct AdminInsert {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    admin_token: Option<String>,
    /// The tenant to insert into (1–128 bytes, no control characters); a tenant with no event
    /// yet is created by it.
    #[oai(validator(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    ))]
    tenant_name: String,
    /// Event name: 1–255 bytes of UTF-8, no control characters.
    #[oai(validator(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    ))]
    event: String,
    /// Any JSON value.
    data: EventData,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for AdminInsert {
    fn example() -> Self {
        AdminInsert {
            admin_token: None,
            tenant_name: "acme".into(),
            event: "maintenance".into(),
            data: EventData::of(&serde_json::json!({"at": "22:00"})),
        }
    }
}

/// Where the event went.
#[derive(Debug, Object)]
pub struct Inserted {
    /// UUIDv7 of the event.
    pub id: uuid::Uuid,
    /// Its cursor: the SSE `id:` subscribers see.
    pub cursor: u64,
}

impl Inserted {
    /// The same answer poem-openapi's `Json` gives, written directly: that one builds a
    /// `serde_json::Value` map of the two fields first (3,400 instructions per insert;
    /// `format!` and a parsed content type took 2,200 of them again).
    fn to_response(&self) -> Response {
        let mut uuid = uuid::Uuid::encode_buffer();
        let mut digits = itoa::Buffer::new();
        let cursor = digits.format(self.cursor);
        let id = self.id.hyphenated().encode_lower(&mut uuid);
        // Exactly its length: a String with room to spare becomes the body's `Bytes` through
        // one more allocation.
        const FIXED: &str = r#"{"cursor":,"id":""}"#;
        let mut body = String::with_capacity(FIXED.len() + cursor.len() + id.len());
        body.push_str(r#"{"cursor":"#);
        body.push_str(cursor);
        body.push_str(r#","id":""#);
        body.push_str(id);
        body.push_str(r#""}"#);
        debug_assert_eq!(body.len(), body.capacity());
        Response::builder()
            .header(
                poem::http::header::CONTENT_TYPE,
                poem::http::HeaderValue::from_static("application/json; charset=utf-8"),
            )
            .body(body)
    }
}

/// Event routes.
#[derive(Default)]
pub struct EventsApi;

#[OpenApi]
impl EventsApi {
    /// Inserts an event into the caller's tenant (Bearer or Basic); 200 once durable. With
    /// an `Idempotency-Key` header (1–255 printable ASCII bytes), a retry with the same key
    /// answers the first insert's id and cursor and appends nothing; 422 if its body differs.
    ///
    /// **Writes**: the example stores a `temperature` event with `{"celsius": 21}` in your
    /// tenant, where every subscriber sees it (and the snapshot keeps it as the latest
    /// `temperature`). Authorize with `bearer` (a JWT from `/login`) or `basic` first.
    #[oai(path = "/insert", method = "post", tag = "super::Tags::Events")]
    async fn insert(
        &self,
        app: Data<&App>,
        req: &Request,
        body: JsonBody<Insert>,
        caller: Caller,
        #[oai(name = "Idempotency-Key")] _key: IdempotencyKeyHeader,
    ) -> Result<Json<Inserted>, InsertErrors> {
        let key = idempotency_key(req)?;
        Ok(insert(&app, caller.0, body.0, key)?.await?)
    }

    /// Inserts an event into any tenant as the admin (`by` is null); an unknown tenant is
    /// created by it. Takes an `Idempotency-Key` header as `/insert` does.
    ///
    /// **Writes**: the example stores a `maintenance` event in tenant `acme`, delivered to
    /// its subscribers. Authorize with `X-Admin-Token` first.
    #[oai(path = "/admin_insert", method = "post", tag = "super::Tags::Admin")]
    async fn admin_insert(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminInsert>,
        #[oai(name = "Idempotency-Key")] _key: IdempotencyKeyHeader,
    ) -> Result<Json<Inserted>, AdminInsertErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let key = idempotency_key(req)?;
        let body = body.0;
        validate::tenant(&body.tenant_name)?;
        validate::event_name(&body.event)?;
        let author = Author::Admin {
            tenant: body.tenant_name,
        };
        let now_ms = app.clock.now_ms_coarse();
        Ok(submit(&app, author, body.event, body.data, key, now_ms).await?)
    }
}

/// `POST /insert` served without the route table and poem-openapi's layers, for it is the
/// server's hottest route: the same steps in the same order as the operation above — the body
/// ([`JsonBody`]'s parser), the caller ([`Caller`]'s authentication), the `Idempotency-Key`,
/// then [`insert`] — with errors left to the same mapping that turns them into JSON. What runs
/// around every route (client address, metrics, audit, CORS: `server::front`) runs as for any
/// route; it passes `app` itself, so the request's extensions stay unallocated.
///
/// What the steps need of the request's head is read at the call, and the head dropped: the
/// future holds the body and those few fields, not the head (472 bytes, held twice when this
/// was an `async fn`, which made its future 1,776 bytes and a large allocation per insert).
pub(crate) fn insert_direct(
    app: &App,
    req: Request,
) -> impl Future<Output = poem::Result<Response>> + Send + '_ {
    let (req, mut body) = req.split();
    let declared = crate::http::body::declared_length(&req);
    let presented = Presented::of(app, &req);
    let key = idempotency_key(&req);
    // A bearer token is verified at the head: its body may use the half of the budget that
    // unauthenticated bodies cannot, in its user's share.
    let user = match &presented {
        Presented::Bearer(Ok(principal)) => Some(principal.username.as_str()),
        _ => None,
    };
    let charge = app
        .bodies
        .charge(crate::http::server::client::of(&req).ip, user)
        .with_head(crate::http::body::head_bytes(&req));
    drop(req);
    async move {
        let limit = app.config.limits.max_body_bytes;
        let parsed: Insert =
            crate::http::body::parse_declared(declared, &mut body, limit, charge).await?;
        let caller = presented.check(app).await?;
        Ok(insert(app, caller, parsed, key?)?.await?.0.to_response())
    }
}

/// Whether `req` is for [`insert_direct`]: exactly what the route table would give the
/// `/insert` operation (its path, any query, method POST).
pub(crate) fn is_insert(req: &Request) -> bool {
    req.method() == Method::POST && req.uri().path() == PATH
}

/// The route's path, for the table and the direct path alike.
pub(crate) const PATH: &str = "/insert";

/// Declares the optional `Idempotency-Key` header in `/openapi.json` (so Swagger UI and
/// generated clients offer it) without reading it: [`idempotency_key`] does, after the body,
/// the caller and (for `/admin_insert`) the admin token, with errors that name the header.
pub struct IdempotencyKeyHeader;

impl<'a> poem_openapi::ApiExtractor<'a> for IdempotencyKeyHeader {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;
    type ParamType = Option<String>;
    type ParamRawType = String;

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <String as poem_openapi::types::Type>::register(registry);
    }

    fn param_in() -> Option<poem_openapi::registry::MetaParamIn> {
        Some(poem_openapi::registry::MetaParamIn::Header)
    }

    /// What [`validate::idempotency_key`] accepts: 1–255 printable ASCII bytes (one byte a
    /// character, so the lengths are exact).
    fn param_schema_ref() -> Option<poem_openapi::registry::MetaSchemaRef> {
        use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
        Some(MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(1),
            max_length: Some(crate::state::idempotency::MAX_KEY_LEN),
            pattern: Some("^[ -~]*$".to_owned()),
            ..MetaSchema::new("string")
        })))
    }

    async fn from_request(
        _: &'a Request,
        _: &mut poem::RequestBody,
        _: poem_openapi::ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(IdempotencyKeyHeader)
    }
}

/// `Idempotency-Key`, prepared once (a `&str` name is parsed again on every lookup).
const IDEMPOTENCY_KEY: poem::http::HeaderName =
    poem::http::HeaderName::from_static("idempotency-key");

/// The `Idempotency-Key` header, if sent: one, of 1–255 printable ASCII bytes, else 400.
fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "Idempotency-Key: send the header once",
        ));
    }
    let key = std::str::from_utf8(value.as_bytes()).map_err(|_| {
        ApiError::bad_request("Idempotency-Key: must be printable ASCII (space to '~')")
    })?;
    validate::idempotency_key(key)?;
    Ok(Some(key.to_owned()))
}

/// Checks the insert; the future is its submission's (see [`submit`]).
fn insert(
    app: &App,
    caller: Principal,
    body: Insert,
    key: Option<String>,
) -> Result<impl Future<Output = Result<Json<Inserted>, ApiError>> + Send + '_, ApiError> {
    validate::event_name(&body.event)?;
    if app.config.identity.enforce_scopes {
        // A scope change moves the credential epoch, so the insert below is refused if the
        // scopes read here are no longer the user's.
        app.engine
            .read(|s| {
                let scopes = s.user(&caller.username).and_then(|u| u.scopes());
                let scopes = scopes.unwrap_or_default();
                scopes::may_write(scopes, &body.event)
            })
            .map_err(ApiError::from)?;
    }
    let now_ms = app.clock.now_ms_coarse();
    app.inserts.take(&caller.username, now_ms)?;
    let author = Author::User {
        username: caller.username,
        credential_epoch: caller.credential_epoch,
    };
    Ok(submit(app, author, body.event, body.data, key, now_ms))
}

/// Hands the insert to the writer; the answer is the new record's id and cursor, or those of
/// the earlier insert a retry repeats. The command is made at the call: the future holds
/// only the engine's. `now_ms` (the server's coarse clock: a UUIDv7's time may lag by a
/// kernel tick, RFC 9562 §6.1) is the id's time.
fn submit(
    app: &App,
    by: Author,
    event: String,
    data: EventData,
    idempotency_key: Option<String>,
    now_ms: i64,
) -> impl Future<Output = Result<Json<Inserted>, ApiError>> + Send + '_ {
    let submitted = app.engine.submit(Command::InsertEvent {
        by,
        id: event_id(now_ms),
        event,
        data: data.into_string(),
        name_limit: app.config.limits.max_event_names,
        snapshot_budget: app.config.limits.max_tenant_snapshot_bytes,
        idempotency_key,
    });
    async move { answer(submitted.await?) }
}

/// A new event id: a UUIDv7 of `now_ms` and 74 random bits from the thread's CSPRNG.
/// (uuid's `now_v7` reads the clock again and also steps one counter shared by every thread,
/// to order the ids one thread makes within a millisecond; the cursor orders events, and
/// ids made on several threads were never in cursor order anyway.)
fn event_id(now_ms: i64) -> [u8; 16] {
    let random: [u8; 10] = rand::random();
    let millis = u64::try_from(now_ms).unwrap_or(0);
    *uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .as_bytes()
}

/// The answer to an insert from its records.
fn answer(records: Vec<crate::state::Record>) -> Result<Json<Inserted>, ApiError> {
    match records.last().map(|r| (r.cursor, &r.kind)) {
        Some((cursor, crate::state::RecordKind::EventInserted(e))) => Ok(Json(Inserted {
            id: uuid::Uuid::from_bytes(e.id),
            cursor,
        })),
        _ => Err(ApiError::internal(
            "an insert was answered without its record",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::IntoResponse;

    #[test]
    fn event_ids_are_uuidv7_of_the_time_given_and_differ() {
        let at = 1_796_558_805_123;
        let ids: Vec<uuid::Uuid> = (0..1000)
            .map(|_| uuid::Uuid::from_bytes(event_id(at)))
            .collect();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, at as u64);
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // A clock before 1970 (a broken host) still gives an id, not a panic.
        assert_eq!(uuid::Uuid::from_bytes(event_id(-5)).get_version_num(), 7);
    }

    #[tokio::test]
    async fn the_direct_answer_is_the_operations_answer() {
        // The route table's `/insert` answers through poem-openapi's `Json`; the direct path
        // must give clients the very same bytes and headers.
        for cursor in [0, 1, 42, u64::MAX] {
            let inserted = Inserted {
                id: uuid::Uuid::now_v7(),
                cursor,
            };
            let direct = inserted.to_response();
            let operation = Json(Inserted { ..inserted }).into_response();
            assert_eq!(direct.status(), operation.status());
            assert_eq!(
                direct.headers().get("content-type"),
                operation.headers().get("content-type")
            );
            let direct = direct.into_body().into_bytes().await.unwrap();
            let operation = operation.into_body().into_bytes().await.unwrap();
            assert_eq!(direct, operation, "{}", String::from_utf8_lossy(&operation));
        }
    }
}
