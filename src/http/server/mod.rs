//! What carries the routes: connection admission and deadlines ([`limits`]), TLS ([`tls`]),
//! the client's address through trusted proxies ([`client`]), the other connections on hyper
//! ([`conn`]), CORS and the browser rules
//! ([`cors`]), SSE connections served straight off the socket ([`streams`]), `/metrics`
//! ([`metrics`]) and the audit log of refused requests ([`audit`]).
//!
//! Each middleware boxes the call it wraps (`Box::pin(ep.call(req))`): nested inline, the
//! futures made a request's future 14.7 KB, which hyper and the connection copy whole on
//! every request (`http::tests::a_requests_future_stays_small` holds the bound).

pub mod audit;
pub mod client;
pub mod conn;
pub mod cors;
pub mod limits;
pub mod metrics;
pub mod streams;
pub mod tls;
