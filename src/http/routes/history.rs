//! `GET /events`: a tenant's past events, a page at a time, from the log.

use poem::web::Data;
use poem::{Body, IntoResponse, Request, Response};
use poem_openapi::ApiResponse;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::registry::MetaResponses;
use poem_openapi::registry::Registry;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, Object, OpenApi};
use serde_json::Value;

use super::sse::event_filter;
use super::ticket::Holder;
use crate::engine::history::{Direction, Page};
use crate::engine::sse_frame::rfc3339;
use crate::http::App;
use crate::http::authn::{
    ADMIN_SCHEME, AdminHeader, BASIC_SCHEME, BEARER_SCHEME, app_of, authenticate,
    register_header_schemes,
};
use crate::http::error::{ApiError, HistoryErrors};
use crate::http::quota::PageShare;

/// Events per page when `limit` is not sent.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit`.
pub const MAX_LIMIT: u32 = 1000;

/// Why a history request was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryQueryError {
    /// `after` and `before` together.
    #[error("after and before: send one of them (after: oldest first, before: newest first)")]
    BothDirections,
    /// A user named a tenant.
    #[error("tenant: only the admin (X-Admin-Token) names a tenant; a user reads their own")]
    TenantForUser,
    /// The admin named none.
    #[error("tenant: required with X-Admin-Token")]
    TenantMissing,
    /// Both an `Authorization` header and `X-Admin-Token`.
    #[error("send either Authorization or X-Admin-Token, not both")]
    TwoCallers,
}

/// A page of a tenant's events.
#[derive(Debug, Object)]
pub struct HistoryPage {
    /// The events, oldest first with `after`, newest first otherwise.
    pub events: Vec<PastEventView>,
    /// The cursor to pass as `after` (or `before`) for the next page, or null when there is
    /// nothing more that way. A page may hold fewer than `limit` events and still have a
    /// `next`: the server looks at a bounded number of records per page, and a page holds at
    /// most 4 MiB of events beyond its last one.
    #[oai(nullable)]
    pub next: Option<u64>,
    /// The newest cursor of the log.
    pub head: u64,
}

/// One past event.
#[derive(Debug, Object)]
pub struct PastEventView {
    /// Its cursor (the SSE `id:`).
    pub cursor: u64,
    /// Its UUID (what `/insert` returned).
    pub id: uuid::Uuid,
    /// Its name.
    pub event: String,
    /// When it was appended, RFC 3339 UTC.
    pub at: String,
    /// Who inserted it; null for the admin.
    #[oai(nullable)]
    pub by: Option<String>,
    /// Its data.
    pub data: Value,
}

/// Whoever reads history: a user (Bearer or Basic, their own tenant) or the admin
/// (`X-Admin-Token`, any tenant through `?tenant=`).
pub struct HistoryCaller {
    /// Authenticated as a user, or the admin's checked header.
    user: Option<crate::http::authn::Principal>,
}

impl<'a> ApiExtractor<'a> for HistoryCaller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_header_schemes(registry);
        AdminHeader::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME, BASIC_SCHEME, ADMIN_SCHEME]
    }

    async fn from_request(
        req: &'a Request,
        _: &mut poem::RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let app = app_of(req)?;
        let admin = AdminHeader::of(req)?;
        if !admin.is_sent() {
            return Ok(HistoryCaller {
                user: Some(authenticate(app, req).await?),
            });
        }
        if req
            .headers()
            .contains_key(poem::http::header::AUTHORIZATION)
        {
            return Err(ApiError::from(HistoryQueryError::TwoCallers).into());
        }
        app.require_admin(&admin, None, req)?;
        Ok(HistoryCaller { user: None })
    }
}

/// History routes.
#[derive(Default)]
pub struct HistoryApi;

#[OpenApi(tag = "super::Tags::Events")]
impl HistoryApi {
    /// A page of the tenant's past events from the log (a user's own tenant; the admin's
    /// `?tenant=`): with `after`, cursors above it oldest first; with `before`, cursors below
    /// it newest first; with neither, the newest first. Events compacted away are absent.
    #[oai(path = "/events", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn events(
        &self,
        app: Data<&App>,
        caller: HistoryCaller,
        /// Events with cursors above this one, oldest first.
        after: Query<Option<u64>>,
        /// Events with cursors below this one, newest first.
        before: Query<Option<u64>>,
        /// Events per page, 1–1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// Only events of these names (repeat for several, at most 64), as on `/sse`.
        event: Query<Option<Vec<String>>>,
        /// The tenant to read: the admin only (with `X-Admin-Token`).
        tenant: Query<Option<String>>,
    ) -> Result<PageAnswer, HistoryErrors> {
        let holder = match (caller.user, tenant.0) {
            (Some(_), Some(_)) => {
                return Err(ApiError::from(HistoryQueryError::TenantForUser).into());
            }
            (Some(user), None) => Holder::User(user),
            (None, Some(tenant)) => {
                // A name no tenant can have (empty, too long, control characters) is a
                // mistake to say, not an empty page (an attack review).
                crate::state::validate::tenant(&tenant).map_err(ApiError::from)?;
                Holder::Admin { tenant }
            }
            (None, None) => return Err(ApiError::from(HistoryQueryError::TenantMissing).into()),
        };
        let direction = match (after.0, before.0) {
            (Some(_), Some(_)) => {
                return Err(ApiError::from(HistoryQueryError::BothDirections).into());
            }
            (Some(after), None) => Direction::After(after),
            (None, Some(before)) => Direction::Before(before),
            (None, None) => Direction::Newest,
        };
        let filter = event_filter(&app, &holder, event.0.as_deref().unwrap_or_default())?;
        let tenant = holder.tenant();
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
        // A place among the caller's pages before the page is built; its bytes once built.
        let mut share = app.pages.reserve(holder.allowance()).inspect_err(|_| {
            app.metrics.rate_limited.inc();
        })?;
        let page = app.engine.history(tenant, direction, limit, filter).await?;
        // The page may have waited for a reading slot: a user revoked or moved meanwhile
        // gets none of it.
        if let Holder::User(user) = &holder {
            user.still_valid(&app)?;
        }
        let body = serde_json::to_vec(&view(page).to_json()).map_err(ApiError::internal)?;
        app.pages.admit(&mut share, body.len()).await?;
        Ok(PageAnswer {
            body: bytes::Bytes::from(body),
            share,
        })
    }
}

/// A page's JSON, sent in pieces that hold the page's [`PageShare`] until the last one is
/// handed to the connection: a client that does not read keeps its share, and so counts
/// against its allowance and the server's budget (`quota::PageBudget`).
pub struct PageAnswer {
    body: bytes::Bytes,
    share: PageShare,
}

/// The pieces a page is handed to the connection in.
const PIECE: usize = 64 * 1024;

impl IntoResponse for PageAnswer {
    fn into_response(self) -> Response {
        let len = self.body.len();
        let pieces = Pieces {
            body: self.body,
            share: Some(self.share),
        };
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .header(poem::http::header::CONTENT_LENGTH, len)
            .body(Body::from_bytes_stream(pieces))
    }
}

impl ApiResponse for PageAnswer {
    fn meta() -> MetaResponses {
        <Json<HistoryPage> as ApiResponse>::meta()
    }

    fn register(registry: &mut Registry) {
        <Json<HistoryPage> as ApiResponse>::register(registry);
    }
}

/// The rest of a page's body, [`PIECE`] bytes at a time, and its share until the end.
struct Pieces {
    body: bytes::Bytes,
    share: Option<PageShare>,
}

impl futures_util::Stream for Pieces {
    type Item = Result<bytes::Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.body.is_empty() {
            self.share = None;
            return std::task::Poll::Ready(None);
        }
        let n = self.body.len().min(PIECE);
        std::task::Poll::Ready(Some(Ok(self.body.split_to(n))))
    }
}

fn view(page: Page) -> HistoryPage {
    HistoryPage {
        events: page
            .events
            .into_iter()
            .map(|e| PastEventView {
                cursor: e.cursor,
                id: uuid::Uuid::from_bytes(e.id),
                event: e.event,
                at: rfc3339(e.at_ms),
                by: e.by,
                // Stored as compact JSON by the server itself: it parses.
                data: serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
            })
            .collect(),
        next: page.next,
        head: page.head,
    }
}
