//! CORS for `--origin`, as browsers require it.
//!
//! poem's `Cors` middleware was not enough: it refused requests whose `Origin` is the server
//! itself (the console's own `fetch` calls carry one) whenever `--origin` names another site,
//! and it accepted a preflight if *any* requested header was allowed rather than all.
//!
//! - A browser (a request with `Origin` or `Sec-Fetch-Site`) must name a known host in `Host`:
//!   an IP address, `localhost`, or a host of `--public_origin` / `--domain`. Anything else
//!   is 403: a DNS-rebinding page (evil.example resolving to this machine) is same-origin in
//!   the browser's eyes and would otherwise read every answer.
//! - No `Origin`, or the server's own origin (`--public_origin`, or `scheme://Host` when
//!   `Host` is an IP address or `localhost`): not a cross-origin request; nothing added.
//!   `Host` alone never makes a name same-origin.
//! - `--origin *`: any origin, answered with `Access-Control-Allow-Origin: *` and never with
//!   credentials (browsers refuse credentials with `*`, and cookies must not ride along) —
//!   and never on the admin routes ([`refuse_foreign_admin`]).
//! - `--origin https://a.example[,https://b.example]`: only those, echoed exactly, with
//!   `Access-Control-Allow-Credentials: true` (the session cookie and `withCredentials`
//!   streams work from them) and `Vary: Origin`.
//! - Any other origin gets 403 with a JSON error that does not disclose the allowed list.
//! - A `POST` with a body and an `Origin` must say `Content-Type: application/json` (or
//!   `…+json`), else 415. A browser can send `text/plain` cross-site without asking first (a
//!   CORS "simple request"); JSON forces a preflight, which `--origin` then decides. Requests
//!   without `Origin` (curl, servers, 15.x clients) keep the any-Content-Type rule.
//! - The session cookie authenticates only requests of pages trusted with credentials (the
//!   server's own, or an origin `--origin` names) or of no page at all
//!   ([`cookie_authenticates`]).

use poem::http::header::{self, HeaderValue};
use poem::http::{Method, StatusCode};
use poem::{IntoResponse, Request, Response};

use crate::http::error::ApiError;

/// Methods our routes use.
const METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// Request headers a cross-origin page may send (beyond the CORS-safelisted ones).
const HEADERS: [&str; 6] = [
    "authorization",
    // Admin routes still refuse every page whose origin `--origin` does not name.
    "x-admin-token",
    "content-type",
    "last-event-id",
    "cache-control",
    // Idempotent inserts (broker-client sends one with every insert).
    "idempotency-key",
];
/// How long browsers may cache a preflight answer, seconds.
const MAX_AGE: &str = "600";
/// Response headers a cross-origin page may read.
const EXPOSE: &str = "retry-after";

pub use crate::config::CorsPolicy;

/// What the browser rules need to know of this server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    /// `--public_origin`: this server's own origins.
    pub own_origins: Vec<String>,
    /// Host names browsers may use besides IP literals and `localhost`.
    pub known_hosts: Vec<String>,
}

impl Site {
    /// From the validated configuration.
    pub fn of(config: &crate::config::Config) -> Self {
        Site {
            own_origins: config.listen.public_origins.clone(),
            known_hosts: config.listen.known_hosts.clone(),
        }
    }

    /// Whether a browser may use `host` (a `Host` header value, port included).
    fn knows(&self, host: &str) -> bool {
        let name = crate::config::host_without_port(host).to_ascii_lowercase();
        is_literal(&name) || self.known_hosts.contains(&name)
    }
}

/// An IP address or `localhost`: names no other site can point at this server.
fn is_literal(name: &str) -> bool {
    name == "localhost"
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

/// How a page of another origin was admitted; routes read it from the request's extensions.
/// Absent for a request without `Origin` or from this server's own origin (no allocation for
/// the requests most clients make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// An origin `--origin` lists by name.
    Listed,
    /// Any origin, through `--origin *`.
    Wildcard,
}

/// 403 for an admin route called by a page that only `--origin *` admits: an admin token in
/// a page of any site is one XSS or one malicious page away from everyone's data.
pub fn refuse_foreign_admin(req: &Request) -> Result<(), ApiError> {
    match req.extensions().get::<Admitted>() {
        Some(Admitted::Wildcard) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin routes do not answer pages of other sites unless --origin names their origin",
        )),
        _ => Ok(()),
    }
}

/// Whether the session cookie may authenticate `req`: only for a page this server trusts with
/// credentials (its own pages, or an origin `--origin` lists by name), or for no page at all.
/// When not, the route treats the request as carrying no cookie. Read after [`admit`], whose
/// verdict on the origin it reuses.
///
/// Why (finding F5): `SameSite=Strict` does not stop a page on another port of the same host
/// (same site, another origin). Under the default `--origin *` such a page opened streams
/// authenticated by its visitor's cookie (`fetch(…, {mode: 'no-cors', credentials:
/// 'include'})`: unreadable to it, but counted as the visitor's streams). So:
/// - `Origin` sent: the server's own, or [`Admitted::Listed`]; never [`Admitted::Wildcard`].
/// - No `Origin` (a browser's `GET` in `no-cors` mode sends none): `Sec-Fetch-Site` must be
///   `same-origin`, or `none` (the user typed the address).
/// - Neither header: no browser page (curl, native clients); the cookie counts as before.
pub fn cookie_authenticates(req: &Request) -> bool {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        return match req.extensions().get::<Admitted>() {
            Some(Admitted::Listed) => true,
            Some(Admitted::Wildcard) => false,
            // `admit` refuses every other origin (403), so one let through without
            // `Admitted` is the server's own, unless it was not text, which `admit` treats as
            // absent and no browser sends: no cookie for that.
            None => origin.to_str().is_ok(),
        };
    }
    req.headers()
        .get(SEC_FETCH_SITE)
        .is_none_or(|site| matches!(site.as_bytes(), b"same-origin" | b"none"))
}

/// `Sec-Fetch-Site`, prepared once: a name given as `&str` is parsed again on every lookup,
/// and this one is looked for on every request.
const SEC_FETCH_SITE: header::HeaderName = header::HeaderName::from_static("sec-fetch-site");

/// A body whose type a browser could send cross-site without a preflight.
fn forgeable_body(req: &Request) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    // Without a body nothing can be forged (bodyless POSTs: /logout, /sse_ticket).
    has_body && !is_json(req)
}

fn is_json(req: &Request) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// What the browser rules say of a request before it is routed (see [`admit`]).
pub enum Admission {
    /// Answered here: refused, or a preflight.
    Answered(Response),
    /// Route it and answer as the route does: not from another origin.
    Plain,
    /// Route it, then [`finish`] the answer for this origin (another one, and allowed).
    CrossOrigin(String),
}

/// The browser rules around one request (see the module comment), up to routing it: answers
/// it here when they refuse it or it is a preflight. A cross-origin request that may go on
/// gets its `Admitted` extension, and its answer goes through [`finish`].
///
/// Not a wrapper around the route's future: a plain function before it and one after keep
/// the request out of one more future's state (each layer held its own copy of the request
/// and made every request's future larger: docs/performance.md).
pub fn admit(req: &mut Request, policy: &CorsPolicy, site: &Site) -> Admission {
    // A request from a browser page (only browsers send these). `Origin` is looked up once:
    // each lookup hashes the name, on every request.
    let origin = req.headers().get(header::ORIGIN);
    if origin.is_some() || req.headers().contains_key(SEC_FETCH_SITE) {
        // HTTP/2 carries the host as the URI's authority instead of a Host header.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        if !site.knows(host) {
            return Admission::Answered(refuse(format!(
                "this server does not answer browsers that reach it as {host:?}; its operator names its public origin with --public_origin"
            )));
        }
    }
    let Some(origin) = origin.and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        // Not a cross-origin request: no `Admitted` extension.
        return Admission::Plain;
    };
    if forgeable_body(req) {
        return Admission::Answered(
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type: a browser must send request bodies as application/json",
            )
            .into_response(),
        );
    }
    if is_same_origin(&origin, req, site) {
        return Admission::Plain;
    }
    if !policy.allows(&origin) {
        return Admission::Answered(refuse(format!(
            "origin {origin:?} may not call this server from a browser"
        )));
    }
    req.extensions_mut().insert(match policy {
        CorsPolicy::Any => Admitted::Wildcard,
        CorsPolicy::Only(_) => Admitted::Listed,
    });
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        return Admission::CrossOrigin(origin);
    }
    match preflight_answer(req) {
        Ok(mut response) => {
            allow_origin(&mut response, policy, &origin);
            Admission::Answered(response)
        }
        Err(message) => Admission::Answered(refuse(message)),
    }
}

/// The answer to an [`Admission::CrossOrigin`] request: an error becomes its JSON answer here,
/// so that it carries the CORS headers too and the page can read what went wrong.
pub fn finish(routed: poem::Result<Response>, policy: &CorsPolicy, origin: &str) -> Response {
    let mut response = routed.unwrap_or_else(|err| ApiError::from_poem(err).into_response());
    response.headers_mut().insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
    allow_origin(&mut response, policy, origin);
    response
}

/// The headers that let a page of `origin` read `response`.
fn allow_origin(response: &mut Response, policy: &CorsPolicy, origin: &str) {
    let headers = response.headers_mut();
    match policy {
        CorsPolicy::Any => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        CorsPolicy::Only(_) => {
            if let Ok(value) = HeaderValue::from_str(origin) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            }
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// 204 for an acceptable preflight, or why it is not acceptable.
fn preflight_answer(req: &Request) -> Result<Response, String> {
    let method = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !["GET", "HEAD", "POST"].contains(&method) {
        return Err(format!(
            "method {method:?} is not allowed from a browser: use GET, HEAD or POST"
        ));
    }
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut allowed = Vec::new();
    for name in requested
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
    {
        if !HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "request header {name:?} is not allowed from a browser (allowed: {})",
                HEADERS.join(", ")
            ));
        }
        allowed.push(name);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    if !allowed.is_empty()
        && let Ok(value) = HeaderValue::from_str(&allowed.join(", "))
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    Ok(response)
}

/// Whether `origin` is this server: one of `--public_origin`, or the scheme and `Host` the
/// browser used when `Host` is an IP address or `localhost` (a name no other site controls).
fn is_same_origin(origin: &str, req: &Request, site: &Site) -> bool {
    if site
        .own_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let scheme = if super::client::of(req).https {
        "https"
    } else {
        "http"
    };
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
    else {
        return false;
    };
    is_literal(&crate::config::host_without_port(host).to_ascii_lowercase())
        && origin
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

fn refuse(message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, message).into_response()
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;

    use poem::{Endpoint, EndpointExt, handler};

    use super::*;

    /// [`admit`], `route`, [`finish`] around one request, as `server::front` calls them.
    async fn guard<F, Fut>(
        mut req: Request,
        policy: &CorsPolicy,
        site: &Site,
        route: F,
    ) -> poem::Result<Response>
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = poem::Result<Response>>,
    {
        match admit(&mut req, policy, site) {
            Admission::Answered(response) => Ok(response),
            Admission::Plain => route(req).await,
            Admission::CrossOrigin(origin) => Ok(finish(route(req).await, policy, &origin)),
        }
    }

    #[handler]
    fn ok() -> &'static str {
        "ok"
    }

    /// Whether the route would let the session cookie authenticate the request.
    #[handler]
    fn cookie(req: &Request) -> &'static str {
        if cookie_authenticates(req) {
            "counts"
        } else {
            "ignored"
        }
    }

    /// Calls a route behind the middleware with `flag` as `--origin`.
    async fn call(flag: &str, method: Method, headers: &[(&str, &str)]) -> Response {
        call_at("/x", flag, method, headers).await
    }

    /// [`call`] for the route at `path`.
    async fn call_at(path: &str, flag: &str, method: Method, headers: &[(&str, &str)]) -> Response {
        let policy = Arc::new(CorsPolicy::from_flag(flag));
        let site = Arc::new(Site {
            own_origins: vec!["https://broker.example".into()],
            known_hosts: vec!["broker.example".into()],
        });
        let ep = poem::Route::new()
            .at("/x", poem::get(ok).post(ok))
            .at("/cookie", poem::get(cookie))
            .around(move |ep, req| {
                let (policy, site) = (Arc::clone(&policy), Arc::clone(&site));
                async move {
                    guard(req, &policy, &site, |req| async move {
                        Ok(ep.get_response(req).await)
                    })
                    .await
                }
            });
        let mut req = Request::builder().method(method).uri_str(path);
        if !headers.iter().any(|(name, _)| *name == "host") {
            req = req.header("host", "127.0.0.1:8080");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        ep.get_response(req.finish()).await
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn listed_origin_gets_credentials_and_exact_echo() {
        let flag = "https://app.example, https://two.example/";
        let r = call(
            flag,
            Method::OPTIONS,
            &[
                ("origin", "https://two.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "Authorization, Content-Type, Idempotency-Key",
                ),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://two.example")
        );
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(
            header(&r, "access-control-allow-headers"),
            Some("authorization, content-type, idempotency-key")
        );
        assert_eq!(header(&r, "access-control-max-age"), Some("600"));
        let r = call(flag, Method::POST, &[("origin", "https://app.example")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(header(&r, "vary"), Some("Origin"));
        assert_eq!(
            header(&r, "access-control-expose-headers"),
            Some("retry-after")
        );
    }

    #[tokio::test]
    async fn other_origins_methods_and_headers_are_refused() {
        let flag = "https://app.example";
        let r = call(flag, Method::GET, &[("origin", "https://evil.example")]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        let r = call(
            flag,
            Method::OPTIONS,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "DELETE"),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = call(
            flag,
            Method::OPTIONS,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization, x-secret"),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn wildcard_never_allows_credentials() {
        let r = call("*", Method::GET, &[("origin", "https://anywhere.example")]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&r, "access-control-allow-credentials"), None);
    }

    #[tokio::test]
    async fn the_servers_own_origin_passes_untouched() {
        for (host, origin) in [
            ("broker.example", "https://broker.example"),
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("localhost:8080", "http://localhost:8080"),
        ] {
            let r = call(
                "https://app.example",
                Method::POST,
                &[("host", host), ("origin", origin)],
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK, "{origin}");
            assert_eq!(header(&r, "access-control-allow-origin"), None);
        }
    }

    #[tokio::test]
    async fn host_alone_never_makes_a_name_same_origin() {
        // DNS rebinding: evil.example resolves to this server; the page is same-origin in
        // the browser's eyes, so its fetch carries Origin = Host = evil.example.
        for method in [Method::GET, Method::POST] {
            let r = call(
                "*",
                method.clone(),
                &[
                    ("host", "evil.example:8080"),
                    ("origin", "http://evil.example:8080"),
                ],
            )
            .await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method}");
        }
        // A same-origin GET carries no Origin, but Sec-Fetch-Site gives the browser away.
        let r = call(
            "*",
            Method::GET,
            &[("host", "evil.example"), ("sec-fetch-site", "same-origin")],
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // curl with any Host is no browser: untouched.
        let r = call("*", Method::GET, &[("host", "evil.example")]).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// F5: under `--origin *` a page on another port of this host (same site: the browser
    /// sends it the `SameSite=Strict` cookie) opened streams as its visitor.
    #[tokio::test]
    async fn the_cookie_counts_only_from_pages_trusted_with_credentials() {
        for (flag, headers, expected) in [
            ("*", &[("origin", "http://127.0.0.1:9999")][..], "ignored"),
            ("*", &[("origin", "https://anywhere.example")], "ignored"),
            ("*", &[("sec-fetch-site", "same-site")], "ignored"),
            ("*", &[("sec-fetch-site", "cross-site")], "ignored"),
            ("*", &[("sec-fetch-site", "same-origin")], "counts"),
            ("*", &[("sec-fetch-site", "none")], "counts"),
            ("*", &[("origin", "http://127.0.0.1:8080")], "counts"),
            (
                "*",
                &[
                    ("host", "broker.example"),
                    ("origin", "https://broker.example"),
                ],
                "counts",
            ),
            ("*", &[], "counts"),
            (
                "https://app.example",
                &[("origin", "https://app.example")],
                "counts",
            ),
            (
                "https://app.example",
                &[("sec-fetch-site", "cross-site")],
                "ignored",
            ),
        ] {
            let r = call_at("/cookie", flag, Method::GET, headers).await;
            assert_eq!(r.status(), StatusCode::OK, "{flag} {headers:?}");
            let verdict = r.into_body().into_string().await.unwrap();
            assert_eq!(verdict, expected, "{flag} {headers:?}");
        }
    }

    #[tokio::test]
    async fn browser_bodies_must_be_json_and_errors_hide_the_allowlist() {
        let post = |content_type: &'static str| async move {
            call(
                "https://app.example",
                Method::POST,
                &[
                    ("origin", "https://app.example"),
                    ("content-type", content_type),
                    ("content-length", "2"),
                ],
            )
            .await
        };
        assert_eq!(post("text/plain").await.status(), 415);
        assert_eq!(
            post("application/x-www-form-urlencoded").await.status(),
            415
        );
        assert_eq!(post("application/json; charset=utf-8").await.status(), 200);
        assert_eq!(post("application/merge-patch+json").await.status(), 200);
        // Without Origin (curl, 15.x clients) any type still goes.
        let r = call(
            "https://app.example",
            Method::POST,
            &[("content-type", "text/plain"), ("content-length", "2")],
        )
        .await;
        assert_eq!(r.status(), 200);
        let r = call(
            "https://app.example",
            Method::GET,
            &[("origin", "https://evil.example")],
        )
        .await;
        assert_eq!(r.status(), 403);
        let body = r.into_body().into_string().await.unwrap();
        assert!(!body.contains("app.example"), "{body}");
    }
}
