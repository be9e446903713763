//! The one layer around every route: the client's address, the browser rules (CORS), the
//! route (`POST /insert` straight to its handler, the rest through the route table), errors
//! as JSON, the audit log and the metrics, in that order.
//!
//! Each step is a plain function of its own module ([`client::resolve`], [`cors::admit`]
//! and [`cors::finish`], [`audit::record`], [`metrics::record`]), called in turn here. They
//! were five poem middlewares, and each boxed the call it wrapped, moved the request's future
//! into the box and cloned its shared settings on every request: about 1,000 instructions a
//! layer whatever it did (docs/performance.md). Here the steps before the route run before
//! any future, and the route's future is the only one that holds the request.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use poem::http::uri::Scheme;
use poem::http::{HeaderValue, Uri, header};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::{audit, client, cors, metrics};
use crate::http::allow::AllowTable;
use crate::http::error::ApiError;
use crate::http::{App, routes};

/// Every route of `routes`, with what every request gets (see the module comment).
pub struct Front<E> {
    routes: E,
    app: App,
    policy: cors::CorsPolicy,
    site: cors::Site,
    trusted: client::TrustedProxies,
    allowed: AllowTable,
    /// `Strict-Transport-Security` for answers over our own TLS (`--hsts_max_age_secs`).
    hsts: Option<HeaderValue>,
}

impl<E> Front<E> {
    /// `routes` behind the layer, with `app` for every handler and `allowed` for 405s.
    pub fn new(routes: E, app: App, allowed: AllowTable) -> Self {
        Front {
            policy: app.config.listen.cors.clone(),
            site: cors::Site::of(&app.config),
            trusted: client::TrustedProxies {
                cidrs: app.config.listen.trusted_proxies.clone(),
                header: app.config.listen.trusted_proxy_header,
            },
            hsts: app
                .config
                .listen
                .hsts
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok()),
            routes,
            app,
            allowed,
        }
    }
}

/// A route's future, boxed: see [`Front::route`].
type Routed<'a> = Pin<Box<dyn Future<Output = poem::Result<Response>> + Send + 'a>>;

/// What a request does after the browser rules: answered by them, or routed (and then, from
/// another origin, finished for it).
enum Next<'a> {
    Answered(Response),
    Routed(Routed<'a>, Option<String>),
}

impl<E: Endpoint> Endpoint for Front<E> {
    type Output = Response;

    /// Everything up to the route runs here, before the future: the request moves straight
    /// into the route's own (boxed) future, and the future returned holds only what the
    /// answer's audit line and metrics need. As an `async fn` every layer kept its own copy
    /// of the request (~500 bytes each), and the future of a request reached 6.6 KB, copied
    /// into a fresh allocation per request (docs/performance.md).
    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        client::resolve(&mut req, &self.trusted);
        // The connection's deadline does not see these bodies (see `body::with_deadline`).
        if req.version() == poem::http::Version::HTTP_2
            || req.headers().contains_key(poem::http::header::EXPECT)
        {
            crate::http::body::with_deadline(&mut req, self.app.config.limits.request_timeout);
        }
        // Only our own TLS: behind a proxy that terminates it, the proxy says what it serves.
        let hsts = (*req.scheme() == Scheme::HTTPS)
            .then(|| self.hsts.clone())
            .flatten();
        let started = Instant::now();
        let method = req.method().clone();
        let route = metrics::route_label(req.uri().path());
        let client = client::of(&req).ip;
        // The path, for a 405 or an audit line: `/insert` is known without a clone of the Uri.
        let uri = (!routes::events::is_insert(&req)).then(|| req.uri().clone());
        let next = match cors::admit(&mut req, &self.policy, &self.site) {
            cors::Admission::Answered(response) => Next::Answered(response),
            cors::Admission::Plain => Next::Routed(self.route(req, uri.clone()), None),
            cors::Admission::CrossOrigin(origin) => {
                Next::Routed(self.route(req, uri.clone()), Some(origin))
            }
        };
        async move {
            let mut response = match next {
                Next::Answered(response) => response,
                Next::Routed(routed, None) => routed
                    .await
                    .unwrap_or_else(|err| ApiError::from_poem(err).into_response()),
                Next::Routed(routed, Some(origin)) => {
                    cors::finish(routed.await, &self.policy, &origin)
                }
            };
            if let Some(hsts) = hsts {
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            let status = response.status();
            let path = uri.as_ref().map_or(routes::events::PATH, |uri| uri.path());
            audit::record(&self.app.audit, status, path, client);
            metrics::record(&self.app.metrics, started, &method, route, status);
            Ok(response)
        }
    }
}

impl<E: Endpoint> Front<E> {
    /// The request's route: `POST /insert` (no `uri`) is the hottest, and goes to its handler
    /// without the route table and poem-openapi's layers (the same steps,
    /// `events::insert_direct`); any other goes through the table, `uri` naming its path for
    /// a 405's `Allow`.
    fn route(&self, mut req: Request, uri: Option<Uri>) -> Routed<'_> {
        // Boxed, each on its own: their futures are kilobytes, and the request's future would
        // hold the larger inline (`http::tests::a_requests_future_stays_small`).
        let Some(uri) = uri else {
            return Box::pin(routes::events::insert_direct(&self.app, req));
        };
        // Handlers find the App in the request's extensions (poem's `Data`): the first
        // insert allocates them, which `/insert` does without.
        req.extensions_mut().insert(self.app.clone());
        Box::pin(async move {
            self.routes
                .call(req)
                .await
                .map(IntoResponse::into_response)
                .or_else(|err| self.allowed.answer(err, uri.path()))
        })
    }
}
