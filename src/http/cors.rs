//! CORS for `--origin`, as browsers require it.
//!
//! poem's `Cors` middleware was not enough: it refused requests whose `Origin` is the server
//! itself (the console's own `fetch` calls carry one) whenever `--origin` names another site,
//! and it accepted a preflight if *any* requested header was allowed rather than all.
//!
//! - No `Origin`, or the server's own origin: not a cross-origin request; nothing added.
//! - `--origin *`: any origin, answered with `Access-Control-Allow-Origin: *` and never with
//!   credentials (browsers refuse credentials with `*`, and cookies must not ride along).
//! - `--origin https://a.example[,https://b.example]`: only those, echoed exactly, with
//!   `Access-Control-Allow-Credentials: true` (the session cookie and `withCredentials`
//!   streams work from them) and `Vary: Origin`.
//! - Any other origin gets 403 with a JSON error, for the preflight and the request itself.

use std::sync::Arc;

use poem::http::header::{self, HeaderValue};
use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::error::ApiError;

/// Methods our routes use.
const METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// Request headers a cross-origin page may send (beyond the CORS-safelisted ones).
const HEADERS: [&str; 4] = [
    "authorization",
    "content-type",
    "last-event-id",
    "cache-control",
];
/// How long browsers may cache a preflight answer, seconds.
const MAX_AGE: &str = "600";
/// Response headers a cross-origin page may read.
const EXPOSE: &str = "retry-after";

/// Which origins may call from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// `--origin *`: every origin, without credentials.
    Any,
    /// These exact origins (`scheme://host[:port]`), with credentials.
    Only(Vec<String>),
}

impl CorsPolicy {
    /// Reads `--origin`: `*`, or a comma-separated list of origins.
    pub fn from_flag(flag: &str) -> Self {
        if flag.trim() == "*" {
            return CorsPolicy::Any;
        }
        CorsPolicy::Only(
            flag.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            CorsPolicy::Any => true,
            CorsPolicy::Only(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// The middleware: wraps every route (see the module comment for the rules).
pub async fn cors<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    policy: Arc<CorsPolicy>,
    secure: bool,
) -> poem::Result<Response> {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return ep.call(req).await.map(IntoResponse::into_response);
    };
    if is_same_origin(&origin, &req, secure) {
        return ep.call(req).await.map(IntoResponse::into_response);
    }
    if !policy.allows(&origin) {
        return Ok(refuse(format!(
            "origin {origin:?} may not call this server from a browser (allowed by --origin: {})",
            describe(&policy)
        )));
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        match preflight_answer(&req) {
            Ok(response) => response,
            Err(message) => return Ok(refuse(message)),
        }
    } else {
        // Errors become their JSON answer here, so that they carry the CORS headers too
        // and the page can read what went wrong.
        let mut response = match ep.call(req).await {
            Ok(response) => response.into_response(),
            Err(err) => ApiError::from_poem(err).into_response(),
        };
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
        response
    };
    let headers = response.headers_mut();
    match &*policy {
        CorsPolicy::Any => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        CorsPolicy::Only(_) => {
            if let Ok(value) = HeaderValue::from_str(&origin) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            }
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    Ok(response)
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

/// Whether `origin` is this server as the browser reached it (scheme and `Host`).
fn is_same_origin(origin: &str, req: &Request, secure: bool) -> bool {
    let scheme = if secure { "https" } else { "http" };
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

fn describe(policy: &CorsPolicy) -> String {
    match policy {
        CorsPolicy::Any => "*".into(),
        CorsPolicy::Only(list) => list.join(", "),
    }
}

fn refuse(message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, message).into_response()
}

#[cfg(test)]
mod tests {
    use poem::{EndpointExt, handler};

    use super::*;

    #[handler]
    fn ok() -> &'static str {
        "ok"
    }

    /// Calls a route behind the middleware with `flag` as `--origin`.
    async fn call(flag: &str, method: Method, headers: &[(&str, &str)]) -> Response {
        let policy = Arc::new(CorsPolicy::from_flag(flag));
        let ep = poem::Route::new()
            .at("/x", poem::get(ok).post(ok))
            .around(move |ep, req| cors(ep, req, Arc::clone(&policy), false));
        let mut req = Request::builder().method(method).uri_str("/x");
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
                    "Authorization, Content-Type",
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
            Some("authorization, content-type")
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
        let r = call(
            "https://app.example",
            Method::POST,
            &[
                ("host", "broker.example:8080"),
                ("origin", "http://broker.example:8080"),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
    }
}
