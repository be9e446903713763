//! Every 405 carries `Allow` (RFC 9110 §15.5.6): the methods of the path, read once at startup
//! from the OpenAPI document the routes are built from (so the header cannot drift from them),
//! plus the few routes outside it. A path with a GET also answers HEAD (poem serves it with the
//! GET handler and no body), so HEAD is listed beside GET. OPTIONS is not listed: the server
//! answers it only as a CORS preflight (an `Origin` and `Access-Control-Request-Method`),
//! which never reaches the route table; a plain OPTIONS is a 405 like any other method.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use std::collections::HashMap;

use super::error::ApiError;

/// The `Allow` value of every path the server routes.
pub struct AllowTable {
    exact: HashMap<String, HeaderValue>,
    get_only: HeaderValue,
}

impl AllowTable {
    /// The table of the paths of `spec` (an OpenAPI document, as `/openapi.json` serves it),
    /// with `/metrics` and the console's pages (GET only).
    pub fn of(spec: &str) -> Self {
        let doc: serde_json::Value =
            serde_json::from_str(spec).expect("poem-openapi's document is JSON");
        let mut exact = HashMap::new();
        for (path, operations) in doc["paths"].as_object().into_iter().flatten() {
            let methods: Vec<&str> = operations
                .as_object()
                .into_iter()
                .flat_map(|ops| ops.keys())
                .map(String::as_str)
                .collect();
            exact.insert(path.clone(), allow_value(&methods));
        }
        let get_only = allow_value(&["get"]);
        exact.insert("/metrics".to_owned(), get_only.clone());
        AllowTable { exact, get_only }
    }

    /// The `Allow` value of `path`; empty for a path the table does not know (RFC 9110: an
    /// empty `Allow` says no method is allowed).
    pub fn get(&self, path: &str) -> HeaderValue {
        if let Some(value) = self.exact.get(path) {
            return value.clone();
        }
        if path == "/console" || path.starts_with("/console/") {
            return self.get_only.clone();
        }
        HeaderValue::from_static("")
    }
}

/// `GET, HEAD, POST` order, upper case, HEAD wherever GET is.
fn allow_value(methods: &[&str]) -> HeaderValue {
    let has = |m: &str| methods.iter().any(|x| x.eq_ignore_ascii_case(m));
    let mut listed: Vec<String> = Vec::new();
    for m in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
        if has(m) || (m == "HEAD" && has("GET")) {
            listed.push(m.to_owned());
        }
    }
    HeaderValue::from_str(&listed.join(", ")).expect("method names are header-safe")
}

impl AllowTable {
    /// The route table's 405 for `path` as JSON with `Allow`; any other error passes through.
    pub fn answer(&self, err: poem::Error, path: &str) -> poem::Result<Response> {
        if err.status() != StatusCode::METHOD_NOT_ALLOWED {
            return Err(err);
        }
        let mut response = ApiError::from_poem(err).into_response();
        response.headers_mut().insert(header::ALLOW, self.get(path));
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_of_the_document_has_its_methods() {
        let table = AllowTable::of(&super::super::api_service().spec());
        assert_eq!(table.get("/insert"), "POST");
        assert_eq!(table.get("/events"), "GET, HEAD");
        assert_eq!(table.get("/"), "GET, HEAD");
        assert_eq!(table.get("/metrics"), "GET, HEAD");
        assert_eq!(table.get("/console/app.js"), "GET, HEAD");
        assert_eq!(table.get("/nowhere"), "");
    }
}
