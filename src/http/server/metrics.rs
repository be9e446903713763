//! `/metrics` in the Prometheus text format, and the per-request log line and counters.
//!
//! Gauges that describe state (subscribers, log size, users) are read at scrape time;
//! counters and histograms are atomics bumped where things happen.

use std::sync::Arc;
use std::time::Instant;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{IntoResponse, Request, Response, handler};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::engine::Engine;
use crate::http::App;
use crate::http::error::ApiError;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// Everything `/metrics` shows.
pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// `requests`' counter for `POST /insert` answered 200, once there is one.
    inserted: std::sync::OnceLock<Counter>,
    /// Failed logins, password resets and admin tokens.
    pub auth_failures: Counter,
    /// Requests answered 429.
    pub rate_limited: Counter,
    /// Argon2 password checks run (logins, Basic, resets, password changes' checks).
    pub password_checks: Counter,
    subscribers: Gauge,
    tenants_streaming: Gauge,
    tenant_feeds: Gauge,
    log_bytes: Gauge,
    log_segments: Gauge,
    cursor: Gauge,
    users: Gauge,
    idempotency_keys: Gauge,
    frames_read: Gauge,
    /// With a certificate from files: its `notAfter`, read from [`Self::certificate`].
    tls_not_after: Gauge,
    certificate: std::sync::OnceLock<Arc<super::tls::FileCert>>,
}

impl HttpMetrics {
    /// Registers our metrics and the engine's (and, with `tls_files`, the served
    /// certificate's expiry, once [`Self::serve_certificate`] names it).
    pub fn new(engine: &Engine, tls_files: bool) -> Arc<Self> {
        let mut registry = Registry::with_prefix("broker");
        let m = HttpMetrics {
            requests: Family::default(),
            inserted: std::sync::OnceLock::new(),
            auth_failures: Counter::default(),
            password_checks: Counter::default(),
            rate_limited: Counter::default(),
            subscribers: Gauge::default(),
            tenants_streaming: Gauge::default(),
            tenant_feeds: Gauge::default(),
            log_bytes: Gauge::default(),
            log_segments: Gauge::default(),
            cursor: Gauge::default(),
            users: Gauge::default(),
            idempotency_keys: Gauge::default(),
            frames_read: Gauge::default(),
            tls_not_after: Gauge::default(),
            certificate: std::sync::OnceLock::new(),
            registry: Registry::default(),
        };
        if tls_files {
            registry.register(
                "tls_certificate_not_after_seconds",
                "the served certificate's notAfter, Unix seconds (alert well before it; 0: unreadable)",
                m.tls_not_after.clone(),
            );
        }
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "auth_failures",
            "failed logins, password resets and admin tokens",
            m.auth_failures.clone(),
        );
        registry.register(
            "password_checks",
            "Argon2 password checks run",
            m.password_checks.clone(),
        );
        registry.register(
            "rate_limited",
            "requests refused with 429",
            m.rate_limited.clone(),
        );
        registry.register("sse_subscribers", "open SSE streams", m.subscribers.clone());
        registry.register(
            "sse_tenants",
            "tenants with at least one open SSE stream",
            m.tenants_streaming.clone(),
        );
        registry.register(
            "sse_tenant_feeds",
            "tenants with an in-memory feed of recent events (fan-out)",
            m.tenant_feeds.clone(),
        );
        registry.register(
            "log_bytes",
            "bytes in the log's segment files",
            m.log_bytes.clone(),
        );
        registry.register(
            "log_segments",
            "segment files in the log",
            m.log_segments.clone(),
        );
        registry.register("log_cursor", "the newest durable cursor", m.cursor.clone());
        registry.register("users", "users in the projection", m.users.clone());
        registry.register(
            "idempotency_keys",
            "Idempotency-Keys remembered for retries (at most 1000 per caller, 100000 in all)",
            m.idempotency_keys.clone(),
        );
        registry.register(
            "log_frames_read",
            "frames read back from segment files (catch-up)",
            m.frames_read.clone(),
        );
        let e = engine.metrics();
        registry.register(
            "fsync_seconds",
            "seconds per log fdatasync",
            e.fsync_seconds.clone(),
        );
        registry.register(
            "commit_batch_records",
            "records per group-commit batch",
            e.batch_records.clone(),
        );
        registry.register(
            "log_records",
            "records written to the log",
            e.records.clone(),
        );
        registry.register("inserts", "events inserted", e.inserts.clone());
        registry.register(
            "log_write_failures",
            "batches refused because the log could not write",
            e.write_failures.clone(),
        );
        registry.register(
            "shared_log_dropped_inserts",
            "inserts a shared log ordered after their author's credentials changed, dropped by the fold",
            e.dropped_inserts.clone(),
        );
        registry.register(
            "shared_log_rejected_records",
            "messages of a shared log the fold skipped as no valid record (only a publisher other than broker nodes writes those)",
            e.rejected_records.clone(),
        );
        registry.register(
            "retention_compactions",
            "compactions --retain ran by itself",
            e.retention_compactions.clone(),
        );
        registry.register(
            "retention_compaction_failures",
            "compactions of --retain that failed (each logged)",
            e.retention_failures.clone(),
        );
        registry.register(
            "retention_reclaimed_bytes",
            "segment bytes freed by the compactions of --retain",
            e.retention_bytes_reclaimed.clone(),
        );
        Arc::new(HttpMetrics { registry, ..m })
    }

    /// The certificate (from files) whose expiry `/metrics` shows.
    pub fn serve_certificate(&self, certificate: Arc<super::tls::FileCert>) {
        let _ = self.certificate.set(certificate);
    }

    /// Counts one answered request.
    pub fn request(&self, route: &'static str, status: u16) {
        let labels = RequestLabels { route, status };
        if route == crate::http::routes::events::PATH && status == 200 {
            // The hottest pair keeps a handle on its counter: the family's lookup (a lock and
            // SipHash of the labels) was ~1 % of an insert's instructions. Made at first use,
            // so /metrics lists the series only once it counts, as for every other pair.
            let counter = self
                .inserted
                .get_or_init(|| self.requests.get_or_create(&labels).clone());
            counter.inc();
            return;
        }
        self.requests.get_or_create(&labels).inc();
    }

    /// The text exposition, with state gauges read now.
    pub fn render(&self, engine: &Engine) -> String {
        let (subscribers, tenants) = engine.subscribers();
        self.subscribers.set(subscribers as i64);
        self.tenants_streaming.set(tenants as i64);
        self.tenant_feeds.set(engine.tenant_feeds() as i64);
        let usage = engine.log().usage();
        self.log_bytes.set(usage.bytes as i64);
        self.log_segments.set(usage.segments as i64);
        self.cursor.set(engine.cursor() as i64);
        let (users, keys) = engine.read(|s| (s.users.len(), s.idempotency.len()));
        self.users.set(users as i64);
        self.idempotency_keys.set(keys as i64);
        self.frames_read.set(engine.log().frames_read() as i64);
        if let Some(certificate) = self.certificate.get() {
            self.tls_not_after.set(certificate.not_after());
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The route label: our fixed paths, everything else `other` (bounded label values).
pub fn route_label(path: &str) -> &'static str {
    const ROUTES: [&str; 30] = [
        "/compact",
        "/",
        "/create_user",
        "/login",
        "/insert",
        "/admin_insert",
        "/sse",
        "/verify",
        "/list_users",
        "/list_tenants",
        "/get_user",
        "/update_user",
        "/revoke_user",
        "/unrevoke_user",
        "/delete_user",
        "/create_qr",
        "/enable_two_factor",
        "/reset_two_factor",
        "/create_totp",
        "/password_reset",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/sse_ticket",
        "/admin_sse_ticket",
        "/logout",
        "/server_stats",
        "/refresh",
        "/ready",
        "/events",
    ];
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or(if path.starts_with("/docs") {
            "/docs"
        } else if path == "/console" || path.starts_with("/console/") {
            "/console"
        } else {
            "other"
        })
}

/// Counts a request under its route and status, and logs it (failures at `warn`). Only the
/// route is logged: query strings and headers may carry credentials.
pub fn record(
    counters: &HttpMetrics,
    started: Instant,
    method: &poem::http::Method,
    route: &'static str,
    status: StatusCode,
) {
    let status = status.as_u16();
    let micros = started.elapsed().as_micros() as u64;
    counters.request(route, status);
    if status >= 400 {
        tracing::warn!(%method, route, status, micros, "request failed");
    } else {
        tracing::debug!(%method, route, status, micros, "request");
    }
}

/// `GET /metrics` on the main listener: needs `Authorization: Bearer <--metrics_token>`.
#[handler]
pub async fn metrics(app: Data<&App>, req: &Request) -> Response {
    let Some(expected) = app.config.metrics.metrics_token.as_deref() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics are served with --metrics_token, or on --metrics_addr",
        )
        .into_response();
    };
    with_token(&app, req, expected)
}

/// The exposition for a request bearing `expected`, else 401 (429 for a guesser).
fn with_token(app: &App, req: &Request, expected: &str) -> Response {
    // Wrong tokens count like wrong admin tokens: a guesser meets 429, not endless 401s.
    // The right one passes a locked bucket if it is unguessable, as the admin token does
    // (see `App::require_admin`).
    let ip = super::client::of(req).ip;
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let right = given.is_some_and(|given| token_matches(given, expected));
    if !(right && app.metrics_token_unguessable)
        && let Err(refused) = app.token_check(ip)
    {
        return refused.into_response();
    }
    if !right {
        // Only a token tried is a guess; a scraper sent without one is not.
        if given.is_some() {
            app.token_fail(ip);
        }
        return ApiError::unauthorized("metrics need Authorization: Bearer <--metrics_token>")
            .into_response();
    }
    exposition(app)
}

/// Whether `given` is the metrics token. Digests of equal length are compared, in constant
/// time: comparing the raw bytes would answer sooner for a wrong length, telling it away.
fn token_matches(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(given.ct_eq(&expected))
}

/// `GET /metrics` on the separate `--metrics_addr` listener: with `--metrics_token` set it
/// needs the token there too (an attack review: operators took the flag to guard metrics,
/// while the separate listener served them to anyone who reached it); without, it is open,
/// which the configuration allows on loopback only.
#[handler]
pub async fn open_metrics(app: Data<&App>, req: &Request) -> Response {
    match app.config.metrics.metrics_token.as_deref() {
        Some(expected) => with_token(&app, req, expected),
        None => exposition(&app),
    }
}

fn exposition(app: &App) -> Response {
    Response::builder()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(app.metrics.render(&app.engine))
}

#[cfg(test)]
mod tests {
    use super::{route_label, token_matches};

    #[test]
    fn every_route_of_the_api_has_its_own_label() {
        let spec: serde_json::Value =
            serde_json::from_str(&crate::http::api_service().spec()).unwrap();
        for path in spec["paths"].as_object().unwrap().keys() {
            assert_eq!(route_label(path), path, "a new route needs its label");
        }
        assert_eq!(route_label("/console/app.js"), "/console");
        assert_eq!(route_label("/nope"), "other");
    }

    #[test]
    fn the_metrics_token_must_match_exactly() {
        assert!(token_matches("s3cret-scrape", "s3cret-scrape"));
        assert!(!token_matches("s3cret-scrapf", "s3cret-scrape"));
        assert!(!token_matches("s3cret", "s3cret-scrape"));
        assert!(!token_matches("s3cret-scrape-and-more", "s3cret-scrape"));
        assert!(!token_matches("", "s3cret-scrape"));
    }
}
