//! `/console`: the admin console, a few static files compiled into the binary (no CDN, no
//! build step). It speaks only the public admin API with the admin token the operator types
//! in, sent in the `X-Admin-Token` header and kept in the tab's sessionStorage so that a reload
//! does not sign out (never localStorage, a cookie or a URL; cleared at sign-out).

use poem::http::{StatusCode, header};
use poem::web::Path;
use poem::{IntoResponse, Response, Route, handler};

/// The console's files: name, content type, bytes.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
];

/// Scripts and styles from this server only, no inline code, no framing, connections to this
/// server only; `data:` images are the QR codes `/create_qr` returns.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/console` and `/console/<file>`.
pub fn routes() -> Route {
    Route::new()
        .at("/", poem::get(index))
        .at("/:file", poem::get(asset))
}

#[handler]
fn index() -> Response {
    serve("index.html")
}

#[handler]
fn asset(Path(file): Path<String>) -> Response {
    serve(&file)
}

fn serve(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return crate::http::error::ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the console has no file {name:?}"),
        )
        .into_response();
    };
    Response::builder()
        .content_type(*content_type)
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        // The files change only with the binary; revalidating is cheap and never stale.
        .header(header::CACHE_CONTROL, "no-cache")
        .body(*body)
}
