//! Admin maintenance: `POST /compact` — compaction inside the running server, which keeps
//! serving and swaps in the compacted segments under its readers' lock — and
//! `POST /server_stats`, what the console's health panel shows.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;

use super::users::AdminOnly;
use crate::engine::compaction::Retain;
use crate::http::App;
use crate::http::authn::AdminHeader;
use crate::http::body::JsonBody;
use crate::http::error::{AdminReadErrors, ApiError, WriteErrors};

/// `POST /compact` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct Compact {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// Keep everything younger than this age (`7d`, `12h`, `30m`) or from this cursor on.
    retain: String,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for Compact {
    fn example() -> Self {
        Compact {
            admin_token: None,
            retain: "7d".into(),
        }
    }
}

/// What compaction did.
#[derive(Debug, Object)]
pub struct Compacted {
    /// Segments rewritten into one.
    pub segments_replaced: u64,
    /// Records before.
    pub records_before: u64,
    /// Records kept.
    pub records_after: u64,
    /// Bytes before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// `Last-Event-ID` resumes from this cursor on stay exact; older ones get the snapshot.
    pub horizon: u64,
}

/// What the server holds, for the console's health panel.
#[derive(Debug, Object)]
pub struct ServerStats {
    /// Always `ok` when the server answers.
    pub status: String,
    /// Broker's version.
    pub version: String,
    /// Seconds since this process started.
    pub uptime_secs: u64,
    /// The newest durable cursor.
    pub cursor: u64,
    /// Users, revoked ones included.
    pub users: u64,
    /// Revoked users.
    pub revoked_users: u64,
    /// Tenants with at least one user or event.
    pub tenants: u64,
    /// The log this node writes to: `embedded`, or `jetstream` (`--log nats://…`).
    pub log: String,
    /// Bytes in the log's segment files (a JetStream node's local copy).
    pub log_bytes: u64,
    /// Segment files.
    pub log_segments: u64,
    /// `Last-Event-ID` resumes from this cursor on are exact; older ones get the snapshot.
    pub resume_horizon: u64,
    /// Open SSE streams.
    pub sse_subscribers: u64,
    /// Tenants with at least one open SSE stream.
    pub sse_tenants: u64,
}

/// Maintenance routes.
#[derive(Default)]
pub struct MaintenanceApi;

#[OpenApi(tag = "super::Tags::Admin")]
impl MaintenanceApi {
    /// Compacts closed log segments (admin): keeps users and the latest event per
    /// (tenant, name) below the retain point and everything from it on.
    ///
    /// **Rewrites the log**: the example keeps the last 7 days whole; older events other than
    /// each name's latest are gone for good, and a `Last-Event-ID` before the new horizon
    /// gets `broker.reset` and the snapshot.
    #[oai(path = "/compact", method = "post")]
    async fn compact(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<Compact>,
    ) -> Result<Json<Compacted>, WriteErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let retain: Retain = body.0.retain.parse().map_err(ApiError::bad_request)?;
        let r = app.engine.compact(retain, app.clock.now_ms()).await?;
        tracing::info!(
            segments = r.segments_replaced,
            before = r.records_before,
            after = r.records_after,
            "log compacted"
        );
        Ok(Json(Compacted {
            segments_replaced: r.segments_replaced as u64,
            records_before: r.records_before,
            records_after: r.records_after,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
            horizon: r.horizon,
        }))
    }

    /// Health and size of the server (admin): users, tenants, log bytes and segments,
    /// open streams, uptime.
    #[oai(path = "/server_stats", method = "post")]
    async fn server_stats(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminOnly>,
    ) -> Result<Json<ServerStats>, AdminReadErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        let usage = app.engine.log().usage();
        let (users, revoked_users, tenants) = app.engine.read(|s| {
            let tenants: std::collections::HashSet<&str> = s
                .users
                .iter()
                .map(|u| &*u.tenant)
                .chain(s.latest.keys().map(String::as_str))
                .collect();
            (
                s.users.len() as u64,
                s.users.iter().filter(|u| u.revoked).count() as u64,
                tenants.len() as u64,
            )
        });
        let (sse_subscribers, sse_tenants) = app.engine.subscribers();
        let log = app.engine.log();
        Ok(Json(ServerStats {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: app.started.elapsed().as_secs(),
            cursor: app.engine.cursor(),
            users,
            revoked_users,
            tenants,
            log: app
                .engine
                .backend()
                .map_or("jetstream (not attached yet)", |b| b.kind())
                .into(),
            log_bytes: usage.bytes,
            log_segments: usage.segments as u64,
            resume_horizon: log.first_cursor().max(log.horizon()),
            sse_subscribers,
            sse_tenants,
        }))
    }
}
