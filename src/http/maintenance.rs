//! `POST /compact` (admin): compaction inside the running server, which keeps serving and
//! swaps in the compacted segments under its readers' lock.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;

use super::App;
use super::body::JsonBody;
use super::error::ApiError;
use crate::engine::compaction::Retain;

/// `POST /compact` body.
#[derive(Debug, Deserialize, Object)]
pub struct Compact {
    /// The server's --admin_token.
    admin_token: String,
    /// Keep everything younger than this age (`7d`, `12h`, `30m`) or from this cursor on.
    retain: String,
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

/// Maintenance routes.
#[derive(Default)]
pub struct MaintenanceApi;

#[OpenApi]
impl MaintenanceApi {
    /// Compacts closed log segments (admin): keeps users and the latest event per
    /// (tenant, name) below the retain point and everything from it on.
    #[oai(path = "/compact", method = "post")]
    async fn compact(
        &self,
        app: Data<&App>,
        req: &Request,
        body: JsonBody<Compact>,
    ) -> Result<Json<Compacted>, ApiError> {
        app.require_admin(&body.0.admin_token, req)?;
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
}
