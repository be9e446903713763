//! `GET /sse`: the caller's tenant's events as Server-Sent Events.

use std::time::Duration;

use bytes::Bytes;
use poem::web::Data;
use poem::{Body, IntoResponse, Request, Response};
use poem_openapi::param::Query;
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::{ApiResponse, OpenApi};

use super::ticket::{Holder, owner_of};
use crate::auth::scopes::{self, ReadFilter};
use crate::engine::{EventFilter, Start, sse_frame};
use crate::http::App;
use crate::http::authn::{
    BASIC_SCHEME, BEARER_SCHEME, app_of, authenticate, register_header_schemes, stream_bearer,
};
use crate::http::error::{ApiError, StreamErrors};

/// Where to start: `Last-Event-ID` header, else `?last_event_id=`, else the snapshot.
fn start_of(req: &Request) -> Start {
    let from_header = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    match from_header.or_else(|| query_param(req, "last_event_id")) {
        None => Start::Snapshot,
        Some(raw) => parse_last_event_id(&raw),
    }
}

/// The first value of `name` in the query string (our values are never percent-encoded:
/// cursors are digits, tickets URL-safe base64).
fn query_param(req: &Request, name: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    })
}

/// The session cookie `POST /login {"session_cookie": true}` sets on plain HTTP: a
/// stream-only JWT, sent by browsers only to `/sse` (its `Path`) and only from same-site pages
/// (`SameSite=Strict`), and counted only from the server's own pages and origins `--origin`
/// names (`session_cookie`).
pub const SESSION_COOKIE: &str = "broker_session";
/// The same cookie over TLS: `Secure`, and `__Host-` so no other host can set it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-broker_session";

/// The session cookie's JWT: over TLS only `__Host-broker_session`, which no other host can
/// set, so a plain `broker_session` planted by a sibling domain or a plain-HTTP answer cannot
/// shadow it (found by an attack review); over plain HTTP only `broker_session`. Two
/// different values under that name are refused: one of them was planted. None at all from
/// a page the server does not trust with credentials (`cors::cookie_authenticates`): a page
/// on another port of this host is same-site, so `SameSite=Strict` still sends it the
/// visitor's cookie.
fn session_cookie(req: &Request) -> Result<Option<&str>, ApiError> {
    if !crate::http::server::cors::cookie_authenticates(req) {
        return Ok(None);
    }
    let name = if crate::http::server::client::of(req).https {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    };
    let mut found = None;
    let values = req
        .headers()
        .get_all(poem::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    for value in values {
        match found {
            Some(first) if first != value => {
                return Err(ApiError::bad_request(format!(
                    "cookie: two different {name} cookies; log out and log in again"
                )));
            }
            _ => found = Some(value),
        }
    }
    Ok(found)
}

/// Who opens the stream: `Authorization` (Bearer or Basic), a ticket from `POST /sse_ticket`,
/// or the session cookie, in that order of precedence — but never a header and a ticket at
/// once, which would leave it unclear whose stream it is.
async fn holder_of(app: &App, req: &Request) -> Result<Holder, ApiError> {
    let has_header = req
        .headers()
        .contains_key(poem::http::header::AUTHORIZATION);
    match (query_param(req, "ticket"), has_header) {
        (Some(_), true) => Err(ApiError::bad_request(
            "send either an Authorization header or ?ticket=, not both",
        )),
        (Some(ticket), false) => app.redeem_ticket(&ticket),
        (None, false) => match session_cookie(req)? {
            Some(jwt) => stream_bearer(app, jwt).map(Holder::User),
            None => authenticate(app, req).await.map(Holder::User),
        },
        (None, true) => authenticate(app, req).await.map(Holder::User),
    }
}

/// A cursor, or [`Start::Invalid`] for anything that is not one.
pub fn parse_last_event_id(raw: &str) -> Start {
    match raw.trim().parse::<u64>() {
        Ok(cursor) => Start::After(cursor),
        Err(_) => Start::Invalid,
    }
}

/// Event routes that stream.
#[derive(Default)]
pub struct StreamApi;

/// OpenAPI name of `?ticket=` (a single-use ticket from `POST /sse_ticket`).
const TICKET_SCHEME: &str = "sse_ticket";
/// OpenAPI name of the `broker_session` cookie.
const COOKIE_SCHEME: &str = "session_cookie";

/// Whoever opens a stream: by `Authorization`, `?ticket=` or the session cookie (see
/// `holder_of`); the OpenAPI document lists the four schemes.
pub struct StreamCaller(Holder);

impl<'a> poem_openapi::ApiExtractor<'a> for StreamCaller {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        use poem_openapi::registry::MetaSecurityScheme;
        register_header_schemes(registry);
        registry.create_security_scheme(
            TICKET_SCHEME,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(
                    "A ticket from POST /sse_ticket or POST /admin_sse_ticket: 256 random bits, valid 30 s, single use; for browsers' EventSource, which cannot send headers.",
                ),
                name: Some("ticket"),
                key_in: Some("query"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
        registry.create_security_scheme(
            COOKIE_SCHEME,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(
                    "The JWT as the broker_session cookie, set by POST /login with session_cookie: true (HttpOnly, SameSite=Strict, Path=/sse). A browser page's request counts it only from the server's own origin or an origin --origin lists by name (never through --origin *); otherwise it is as if absent (401).",
                ),
                name: Some(SESSION_COOKIE),
                key_in: Some("cookie"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME, BASIC_SCHEME, TICKET_SCHEME, COOKIE_SCHEME]
    }

    async fn from_request(
        req: &'a Request,
        _: &mut poem::RequestBody,
        _: poem_openapi::ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        Ok(StreamCaller(holder_of(app_of(req)?, req).await?))
    }
}

#[OpenApi(tag = "super::Tags::Streams")]
impl StreamApi {
    /// Server-Sent Events of the caller's tenant: the snapshot (latest event per name) or,
    /// with `Last-Event-ID` / `?last_event_id=`, every event after that cursor; then live
    /// events. Frames: `id: <cursor>`, `event: <name>`, `data: <json>`. Authenticated by
    /// Bearer or Basic, or — for browsers' `EventSource` — by `?ticket=` (from
    /// `POST /sse_ticket`, single use) or the `broker_session` cookie (from `POST /login`
    /// with `session_cookie: true`).
    ///
    /// **Swagger UI cannot show a stream**: "Execute" waits for a response that never ends
    /// (it spins until you cancel). Use curl, which prints the frames as they come:
    ///
    /// `curl -N -H "Authorization: Bearer $JWT" http://localhost:8080/sse`
    ///
    /// (add `-H "Last-Event-ID: 2"` to resume after cursor 2, or `-u 'alice:correct horse'`
    /// for HTTP Basic), or `EventSource` / broker-client from a page.
    #[oai(path = "/sse", method = "get")]
    async fn sse(
        &self,
        app: Data<&App>,
        req: &Request,
        caller: StreamCaller,
        /// Resume after this cursor, like the `Last-Event-ID` header (which wins when both
        /// are sent); a value that is not a cursor gets `broker.reset` and the snapshot.
        #[oai(name = "last_event_id")]
        _last_event_id: Query<Option<String>>,
        /// Only events of these names (repeat for several, at most 64), in the snapshot, in
        /// catch-up and live; `id:` stays the global cursor. Without it, every name.
        event: Query<Option<Vec<String>>>,
        /// `true`: each `data:` is `{"id","at","by","data"}` (the event's UUID, when it was
        /// appended in RFC 3339 UTC, who inserted it or null for the admin, its data).
        envelope: Query<Option<bool>>,
    ) -> Result<EventStream, StreamErrors> {
        let view = View {
            events: event.0.unwrap_or_default(),
            envelope: envelope.0.unwrap_or(false),
        };
        Ok(sse(&app, req, caller.0, view).await?)
    }
}

/// The path of the stream route: `server::streams` recognises connections by it (the route's
/// `#[oai]` attribute needs a literal; a test keeps the two equal).
pub const PATH: &str = "/sse";
/// The content type of a stream: `server::streams` serves a response of this type off hyper.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// A `text/event-stream` response.
pub struct EventStream(Response);

impl IntoResponse for EventStream {
    fn into_response(self) -> Response {
        self.0
    }
}

impl ApiResponse for EventStream {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "an endless stream of SSE frames",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: CONTENT_TYPE,
                    schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(_: &mut Registry) {}
}

/// What a client asked to see of its tenant's events (`/sse` and `/events` alike).
struct View {
    /// `?event=` names, as sent (none: every name).
    events: Vec<String>,
    /// `?envelope=true`.
    envelope: bool,
}

/// Names one `?event=` list may hold: a filter is a handful of names, and the bound keeps a
/// hostile list from costing more than a glance.
pub const MAX_EVENT_FILTER: usize = 64;

/// Why a client's `?event=` list was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventListError {
    /// More than [`MAX_EVENT_FILTER`] names.
    #[error("event: at most {MAX_EVENT_FILTER} names per request, got {0}")]
    TooMany(usize),
    /// A name that could not be an event name.
    #[error("event={name:?}: {reason}")]
    BadName {
        /// The name as sent.
        name: String,
        /// What is wrong with it.
        reason: crate::state::validate::Invalid,
    },
}

/// The filter of a stream or a history page: the names `holder` may read
/// (`--enforce_scopes`), narrowed to `requested` when the client sent `?event=`. A requested
/// name that is not readable is 403, one that is no event name 400.
pub(crate) fn event_filter(
    app: &App,
    holder: &Holder,
    requested: &[String],
) -> Result<Option<EventFilter>, ApiError> {
    if requested.len() > MAX_EVENT_FILTER {
        return Err(EventListError::TooMany(requested.len()).into());
    }
    for name in requested {
        crate::state::validate::event_name(name).map_err(|reason| EventListError::BadName {
            name: name.clone(),
            reason,
        })?;
    }
    let readable = app.readable(holder);
    readable.check_requested(requested.iter().map(String::as_str))?;
    let scoped = match readable {
        ReadFilter::All => None,
        only => Some(EventFilter::new(move |name| only.allows(name))),
    };
    if requested.is_empty() {
        return Ok(scoped);
    }
    let names: std::collections::BTreeSet<String> = requested.iter().cloned().collect();
    let asked = EventFilter::new(move |name| names.contains(name));
    Ok(Some(match scoped {
        Some(scoped) => scoped.and(asked),
        None => asked,
    }))
}

impl App {
    /// The names `holder`'s stream may carry: with `--enforce_scopes`, a user's readable
    /// names (`auth::scopes::readable`); everything for the admin and without the flag.
    fn readable(&self, holder: &Holder) -> ReadFilter {
        match holder {
            Holder::User(caller) if self.config.identity.enforce_scopes => {
                // Read at connect: a scope change moves the credential epoch, which ends the
                // stream (`credentials_changed`).
                self.engine.read(|s| {
                    scopes::readable(
                        s.user(&caller.username)
                            .and_then(|u| u.scopes())
                            .unwrap_or_default(),
                    )
                })
            }
            _ => ReadFilter::All,
        }
    }
}

async fn sse(
    app: &App,
    req: &Request,
    holder: Holder,
    view: View,
) -> Result<EventStream, ApiError> {
    let filter = event_filter(app, &holder, &view.events)?;
    let tenant = holder.tenant();
    let key = holder.allowance();
    let Some(slot) = app.streams.reserve(key, app.config.limits.max_sse_per_user) else {
        app.metrics.rate_limited.inc();
        return Err(ApiError {
            retry_after: Some(app.config.sse.sse_retry_ms.div_ceil(1000).max(1)),
            ..ApiError::new(
                poem::http::StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "already {} open streams (--max_sse_per_user); close one first",
                    app.config.limits.max_sse_per_user
                ),
            )
        });
    };
    let mut subscription = app
        .engine
        .subscribe(tenant, start_of(req), owner_of(&holder), filter);
    if let Holder::User(caller) = &holder {
        // A token's expiry ends its stream, so a leaked one is not good for longer on a
        // stream than on a request; Basic's (now + --jwt_expiry) asks for the password again
        // as often as a login's token would.
        let left = Duration::from_secs(caller.expires.saturating_sub(app.clock.now_s()));
        // A lifetime past what an Instant holds (a huge --jwt_expiry) is no deadline.
        if let Some(at) = tokio::time::Instant::now().checked_add(left) {
            subscription = subscription.until(at);
        }
    }
    if view.envelope {
        subscription = subscription.with_envelope();
    }
    if !view.events.is_empty() {
        // The filter passes none but these names: no other event needs to wake the stream.
        subscription = subscription.wake_only_for(view.events);
    }
    let keep_alive = app.config.sse.sse_keepalive;
    let retry = sse_frame::retry(app.config.sse.sse_retry_ms);
    // The slot lives as long as the stream: it is dropped with the unfold's state.
    let frames = futures_util::stream::unfold(
        (Some(retry), subscription, slot),
        move |(first, mut sub, slot)| async move {
            if let Some(first) = first {
                return Some((Ok::<Bytes, std::io::Error>(first), (None, sub, slot)));
            }
            let bytes = sub.next(keep_alive).await?;
            Some((Ok(bytes), (None, sub, slot)))
        },
    );
    Ok(EventStream(
        Response::builder()
            .content_type(CONTENT_TYPE)
            .header("cache-control", "no-cache")
            .header("x-accel-buffering", "no")
            .body(Body::from_bytes_stream(frames)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_route_is_at_path() {
        let spec: serde_json::Value =
            serde_json::from_str(&crate::http::api_service().spec()).unwrap();
        assert!(
            spec["paths"][PATH]["get"].is_object(),
            "no GET {PATH} route"
        );
    }

    #[test]
    fn last_event_id_values() {
        assert_eq!(parse_last_event_id("42"), Start::After(42));
        assert_eq!(parse_last_event_id(" 7 "), Start::After(7));
        assert_eq!(parse_last_event_id("abc"), Start::Invalid);
        assert_eq!(parse_last_event_id("-1"), Start::Invalid);
        assert_eq!(parse_last_event_id(""), Start::Invalid);
    }
}
