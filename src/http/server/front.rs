//! The one layer around every route: the client's address, the browser rules (CORS), the
//! route (`POST /insert` straight to its handler, the rest through the route table), errors
//! as JSON, the audit log and the metrics, in that order.
//!
//! Each step is a plain function of its own module ([`client::resolve`], [`cors::guard`],
//! [`audit::record`], [`metrics::record`]), called in turn here. They were five poem
//! middlewares, and each boxed the call it wrapped, moved the request's future into the box
//! and cloned its shared settings on every request: about 1,000 instructions a layer whatever
//! it did (docs/performance.md). Here the whole request is one future, boxed once by the
//! connection.

use std::time::Instant;

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
}

impl<E> Front<E> {
    /// `routes` behind the layer, with `app` for every handler and `allowed` for 405s.
    pub fn new(routes: E, app: App, allowed: AllowTable) -> Self {
        Front {
            policy: app.config.listen.cors.clone(),
            site: cors::Site::of(&app.config),
            trusted: client::TrustedProxies(app.config.listen.trusted_proxies.clone()),
            routes,
            app,
            allowed,
        }
    }
}

impl<E: Endpoint> Endpoint for Front<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        client::resolve(&mut req, &self.trusted);
        let started = Instant::now();
        let method = req.method().clone();
        let route = metrics::route_label(req.uri().path());
        let client = client::of(&req).ip;
        // A clone of the Uri shares its bytes: the path is read for a 405 or an audit line.
        let uri = req.uri().clone();
        let response = cors::guard(req, &self.policy, &self.site, |req| self.route(req, &uri))
            .await
            .unwrap_or_else(|err| ApiError::from_poem(err).into_response());
        let status = response.status();
        audit::record(&self.app.audit, status, uri.path(), client);
        metrics::record(&self.app.metrics, started, &method, route, status);
        Ok(response)
    }
}

impl<E: Endpoint> Front<E> {
    /// The request's route: `POST /insert` is the hottest, and goes to its handler without
    /// the route table and poem-openapi's layers (the same steps, `events::insert_direct`).
    async fn route(&self, mut req: Request, uri: &poem::http::Uri) -> poem::Result<Response> {
        // Both boxed: their futures are kilobytes each, and the request's future would hold
        // the larger inline (a debug build: 6.4 KB with `/insert`'s inline, 4.6 with both
        // boxed; `http::tests::a_requests_future_stays_small` holds the bound).
        if routes::events::is_insert(&req) {
            return Box::pin(routes::events::insert_direct(&self.app, req)).await;
        }
        // Handlers find the App in the request's extensions (poem's `Data`): the first
        // insert allocates them, which `/insert` does without.
        req.extensions_mut().insert(self.app.clone());
        Box::pin(self.routes.call(req))
            .await
            .map(IntoResponse::into_response)
            .or_else(|err| self.allowed.answer(err, uri.path()))
    }
}
