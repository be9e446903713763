//! HTTP, in two halves: [`routes`] (one file per group of routes of API.md, each reading as
//! authenticate → command → engine → reply) and [`server`] (what carries them: connections and
//! their limits, TLS, CORS and the browser rules, SSE connections served off hyper, metrics,
//! the audit log). Beside them, what routes share: authentication in [`authn`], bodies in
//! [`body`], errors mapped to statuses in [`error`], the brute-force policy in `throttle` and
//! quotas in [`quota`].

pub mod allow;
pub mod authn;
pub mod body;
pub mod body_budget;
pub mod error;
pub mod event_data;
mod hash_queue;
pub mod openapi;
pub mod quota;
pub mod routes;
pub mod second_factor;
pub mod server;
mod throttle;

use routes::{
    codes, console, events, health, history, maintenance, session, sse, ticket, users, verify,
};
pub use server::{audit, client, conn, cors, front, limits, metrics, streams, tls};

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::TcpAcceptor;
use poem::{Endpoint, EndpointExt, IntoResponse, Route, Server};
use poem_openapi::OpenApiService;

use crate::auth::Clock;
use crate::config::Config;
use crate::engine::Engine;
use error::ApiError;

pub use routes::sse::parse_last_event_id;

/// What every handler shares.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

/// The fields of [`App`].
pub struct AppInner {
    /// The engine: writer, projections, fan-out.
    pub engine: Engine,
    /// Validated flags.
    pub config: Config,
    /// NTP-corrected time.
    pub clock: Clock,
    /// Password checks running and waiting (`--hash_concurrency`, `--hash_queue`), the
    /// least served first.
    hashing: Arc<hash_queue::HashQueue>,
    /// Refused requests, logged with their client (rate-limited).
    pub audit: Arc<audit::Audit>,
    /// `--max_inserts_per_sec`.
    inserts: quota::InsertRate,
    /// `--max_sse_per_user`, reserved per user (and for the admin's streams).
    streams: quota::StreamSlots,
    /// `GET /events` pages in flight, per holder and in bytes.
    pages: quota::PageBudget,
    /// Bytes of request bodies held while their rest is awaited.
    pub bodies: body_budget::BodyBudget,
    basic_cache: authn::BasicCache,
    /// Basic checks running, by username, password digest and user version: the same
    /// credentials sent at once wait for one Argon2 check (see [`authn::BasicChecks`]).
    basic_checks: authn::BasicChecks,
    /// Random per process: cached Basic digests mean nothing outside this process.
    cache_key: [u8; 16],
    /// `--jwt_secret`'s verification key, prepared once.
    pub jwt_key: crate::auth::jwt::JwtKey,
    /// Root key of the biscuits `/verify` hands out.
    pub biscuit: biscuit_auth::KeyPair,
    throttle: throttle::Throttles,
    tickets: ticket::Tickets,
    /// Wrong `/password_reset` codes not yet written (see [`routes::codes::WrongCodes`]).
    wrong_codes: routes::codes::WrongCodes,
    /// Wrong two-factor codes in a row, per user (see [`second_factor`]).
    wrong_factors: second_factor::WrongFactors,
    /// When this process started serving (the console shows the uptime).
    pub started: std::time::Instant,
    /// Whether `--admin_token` is long and varied enough that its right value may pass a
    /// locked bucket (see [`App::require_admin`]).
    admin_token_unguessable: bool,
    /// The same of `--metrics_token` (see `server::metrics`).
    pub(crate) metrics_token_unguessable: bool,
    /// Counters and gauges of `/metrics`.
    pub metrics: Arc<metrics::HttpMetrics>,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    /// Shares `engine`, `config`, the clock and the biscuit root key with the handlers.
    pub fn new(
        engine: Engine,
        config: Config,
        clock: Clock,
        biscuit: biscuit_auth::KeyPair,
    ) -> Self {
        App(Arc::new(AppInner {
            hashing: Arc::new(hash_queue::HashQueue::new(
                config.identity.hash_concurrency,
                config.identity.hash_queue,
                config.limits.failure_window.as_millis() as i64,
            )),
            audit: Default::default(),
            inserts: quota::InsertRate::new(config.limits.max_inserts_per_sec),
            streams: Default::default(),
            pages: Default::default(),
            bodies: body_budget::BodyBudget::new(
                config.limits.max_body_bytes_in_flight,
                config.limits.max_body_bytes_per_ip,
            ),
            throttle: throttle::Throttles::new(&config),
            jwt_key: crate::auth::jwt::JwtKey::new(&config.identity.jwt_secret),
            admin_token_unguessable: crate::config::unguessable(&config.identity.admin_token),
            metrics_token_unguessable: config
                .metrics
                .metrics_token
                .as_deref()
                .is_some_and(crate::config::unguessable),
            metrics: metrics::HttpMetrics::new(
                &engine,
                matches!(config.listen.tls, crate::config::Tls::Files { .. }),
            ),
            biscuit,
            engine,
            config,
            clock,
            basic_cache: Default::default(),
            basic_checks: Default::default(),
            tickets: Default::default(),
            wrong_codes: Default::default(),
            wrong_factors: Default::default(),
            started: std::time::Instant::now(),
            cache_key: *uuid::Uuid::new_v4().as_bytes(),
        }))
    }
}

/// Every route, with the client resolved, browser rules, JSON errors, the audit log and
/// metrics ([`front::Front`]).
pub fn router(app: App) -> impl Endpoint<Output = poem::Response> {
    let api = api_service();
    let document = openapi::document(&api);
    let docs = openapi::swagger_ui(&api, &document);
    let spec = openapi::spec_endpoint(document);
    let allowed = allow::AllowTable::of(&api.spec());
    let routes = Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .nest("/console", console::routes())
        .at("/openapi.json", spec)
        .at("/metrics", poem::get(metrics::metrics));
    front::Front::new(routes, app, allowed)
}

/// The `--metrics_addr` listener's routes: `/metrics` only, with `--metrics_token` if set.
pub fn metrics_router(app: App) -> impl Endpoint {
    let allowed = Arc::new(allow::AllowTable::of("{}"));
    Route::new()
        .at("/metrics", poem::get(metrics::open_metrics))
        .around(move |ep, req| {
            let allowed = Arc::clone(&allowed);
            async move {
                let uri = req.uri().clone();
                ep.call(req)
                    .await
                    .or_else(|err| allowed.answer(err, uri.path()))
            }
        })
        .data(app)
        .catch_all_error(|err| async move { ApiError::from_poem(err).into_response() })
}

/// The route groups, one per file.
pub type Apis = (
    health::HealthApi,
    users::UsersApi,
    codes::CodesApi,
    session::SessionApi,
    verify::VerifyApi,
    events::EventsApi,
    history::HistoryApi,
    sse::StreamApi,
    ticket::TicketApi,
    maintenance::MaintenanceApi,
);

/// Every route of API.md, described for `/openapi.json`.
pub fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        Apis::default(),
        "Broker",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Users, identity and an insert-only event API over Server-Sent Events. Request bodies are JSON whatever their Content-Type (from a browser, one with an Origin header, they must say application/json: 415 otherwise); errors are {\"error\": \"...\"}.",
    )
}

/// Serves plain HTTP on `listener` until `stop` resolves, then drains requests (bounded).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor =
        limits::LimitedAcceptor::new(TcpAcceptor::from_tokio(listener)?, admission(&app));
    serve_limited(acceptor, app, stop).await
}

/// Serves HTTPS on `listener` with certificates from `source`.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    source: tls::CertSource,
    app: App,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = tls::TlsAcceptor::new(listener, source, admission(&app))?;
    serve_limited(acceptor, app, stop).await
}

/// The connection limits of the configuration.
fn admission(app: &App) -> limits::Admission {
    let c = &app.config;
    limits::Admission::new(
        c.limits.max_connections,
        c.limits.max_connections_per_ip,
        limits::Timeouts {
            request: c.limits.request_timeout,
            write: c.limits.sse_write_timeout,
            idle: c.limits.idle_timeout,
        },
    )
}

/// Every route on an acceptor whose connections are already admitted under the limits.
async fn serve_limited(
    limited: impl poem::listener::Acceptor + 'static,
    app: App,
    stop: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let untaken = app.config.limits.sse_write_timeout;
    let endpoint = Arc::new(router(app));
    // Streams are served by `streams`, everything else by hyper (`conn`): one router for both.
    let (connections, shutdown) = conn::pair(untaken);
    let accepting = tokio::spawn(streams::accept_loop(
        limited,
        connections,
        endpoint,
        shutdown.receiver(),
    ));
    stop.await;
    // The accept loop sees the same signal and stops taking connections.
    shutdown.drain(DRAIN).await;
    accepting.abort();
    Ok(())
}

/// How long in-flight requests may run on after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves `endpoint` on `acceptor` until `stop`, then drains requests for at most [`DRAIN`].
pub async fn serve_with(
    acceptor: impl poem::listener::Acceptor + 'static,
    endpoint: impl Endpoint + 'static,
    stop: impl std::future::Future<Output = ()> + Send,
    idle_timeout: Option<Duration>,
) -> std::io::Result<()> {
    let server = Server::new_with_acceptor(acceptor);
    let server = match idle_timeout {
        Some(idle) => server.idle_timeout(idle),
        None => server,
    };
    server
        .run_with_graceful_shutdown(endpoint, stop, Some(DRAIN))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn size_of_return<F>(_: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    // The router is never built: only the type of its future is measured.
    #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    fn a_requests_future_stays_small() {
        // hyper moves each request's future into place: every byte of it is copied per
        // request (14.7 KB before each middleware boxed its inner call, 6.6 KB in a release
        // build before the steps ahead of the route left the future).
        let size = size_of_return(|| {
            let ep = Arc::new(router(unreachable!()));
            async move { conn::respond(&*ep, poem::Request::default()).await }
        });
        eprintln!("a request's future: {size} bytes");
        assert!(size < 2 * 1024, "{size} bytes");
    }
}
