//! What carries the routes: connection admission and deadlines ([`limits`]), TLS ([`tls`]),
//! the client's address through trusted proxies ([`client`]), the other connections on hyper
//! ([`conn`]) with HTTP/2 answers a client leaves untaken cut off ([`stalls`]), CORS and the
//! browser rules
//! ([`cors`]), SSE connections served straight off the socket ([`streams`]), `/metrics`
//! ([`metrics`]) and the audit log of refused requests ([`audit`]); [`front`] runs the
//! per-request ones around every route as one layer.
//!
//! A request's future is boxed once, by the connection; the route table's is boxed again
//! inside it, for it is large: nested inline, futures made a request's future 14.7 KB, which
//! hyper copied whole on every request (`http::tests::a_requests_future_stays_small` holds
//! the bound).

pub mod audit;
pub mod client;
pub mod conn;
pub mod cors;
pub mod front;
pub mod limits;
pub mod metrics;
pub mod stalls;
pub mod streams;
pub mod tls;
