//! What Swagger UI shows a newcomer, from the real binary's `/openapi.json` and `/docs`: every
//! operation under one of the six tags, realistic example bodies (never Swagger's generated
//! `"string"` placeholders, never an `admin_token` field: Authorize sends the header), writes
//! marked as such, error descriptions written for each route, and `/sse` explained.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::common::{Server, client};

const TAGS: [&str; 6] = [
    "events",
    "streams",
    "users",
    "two-factor",
    "admin",
    "operations",
];

async fn document(s: &Server) -> Value {
    client()
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every (path, method, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            all.push((path.clone(), method.clone(), op.clone()));
        }
    }
    all
}

/// The schema `r` names, following a `$ref`.
fn resolve<'a>(doc: &'a Value, r: &'a Value) -> &'a Value {
    match r["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => r,
    }
}

/// Every value under an `example` or `examples` key, anywhere in `v`.
fn examples<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "example" || key == "examples" {
                    out.push(value);
                }
                examples(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| examples(i, out)),
        _ => {}
    }
}

/// Whether `v` holds the string "string" (Swagger UI's placeholder) as a key or a value.
fn has_placeholder(v: &Value) -> bool {
    match v {
        Value::String(s) => s == "string",
        Value::Array(items) => items.iter().any(has_placeholder),
        Value::Object(map) => map.iter().any(|(k, v)| k == "string" || has_placeholder(v)),
        _ => false,
    }
}

#[tokio::test]
async fn every_operation_is_under_one_of_the_six_tags() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let doc = document(&s).await;
    let declared: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for tag in TAGS {
        assert!(declared.contains(&tag), "tag {tag} is not declared");
    }
    for (path, method, op) in operations(&doc) {
        let tags: Vec<&str> = op["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no tags"))
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tags.len(), 1, "{method} {path}: {tags:?}");
        assert!(TAGS.contains(&tags[0]), "{method} {path}: {tags:?}");
    }
}

#[tokio::test]
async fn every_request_body_has_a_realistic_example_and_writes_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let doc = document(&s).await;
    let mut bodies = 0;
    for (path, method, op) in operations(&doc) {
        let Some(schema) = op["requestBody"]["content"]["application/json"].get("schema") else {
            continue;
        };
        bodies += 1;
        // Without an example of its own Swagger UI generates one: "string" for every string.
        let example = &resolve(&doc, schema)["example"];
        assert!(example.is_object(), "{method} {path}: no example body");
        assert!(
            example.get("admin_token").is_none(),
            "{method} {path}: the example sends admin_token (Authorize sends X-Admin-Token)"
        );
    }
    assert!(bodies >= 12, "only {bodies} request bodies found");
    let mut all = Vec::new();
    examples(&doc, &mut all);
    assert!(all.len() >= 12);
    for example in all {
        assert!(
            !has_placeholder(example),
            "placeholder in example {example}"
        );
    }
    assert_eq!(
        resolve(
            &doc,
            &doc["paths"]["/insert"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        )["example"],
        serde_json::json!({"event": "temperature", "data": {"celsius": 21}})
    );
    // "Try it out" with these examples changes state: each says so before you press Execute.
    for path in [
        "/insert",
        "/admin_insert",
        "/create_user",
        "/update_user",
        "/revoke_user",
        "/unrevoke_user",
        "/delete_user",
        "/create_totp",
        "/password_reset",
    ] {
        let description = doc["paths"][path]["post"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.contains("**Writes"),
            "{path} does not say it writes: {description:?}"
        );
    }
    assert!(
        doc["paths"]["/compact"]["post"]["description"]
            .as_str()
            .unwrap()
            .contains("**Rewrites the log**")
    );
}

#[tokio::test]
async fn error_descriptions_are_written_for_each_route() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let doc = document(&s).await;
    // status → description → the paths that use it. A boilerplate text shared by every
    // route (what the document said before) shows up as one description with many paths.
    let mut by_status: BTreeMap<u16, HashMap<String, Vec<String>>> = BTreeMap::new();
    let mut errors = 0;
    for (path, _, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            let status: u16 = status.parse().unwrap();
            if status < 400 {
                continue;
            }
            errors += 1;
            let description = response["description"].as_str().unwrap().to_owned();
            assert!(
                description.len() >= 20,
                "{path} {status}: {description:?} says too little"
            );
            let paths = by_status
                .entry(status)
                .or_default()
                .entry(description)
                .or_default();
            if !paths.contains(&path) {
                paths.push(path.clone());
            }
        }
    }
    assert!(errors > 100, "only {errors} error responses");
    for (status, descriptions) in &by_status {
        for (description, paths) in descriptions {
            assert_eq!(
                paths.len(),
                1,
                "{status} {description:?} is copied across {paths:?}"
            );
        }
    }
    // Spot checks that the text is the route's own.
    let says = |path: &str, method: &str, status: &str, needle: &str| {
        let text = doc["paths"][path][method]["responses"][status]["description"]
            .as_str()
            .unwrap();
        assert!(text.contains(needle), "{path} {status}: {text:?}");
    };
    says("/create_user", "post", "400", "taken");
    says("/get_user", "post", "404", "username");
    says("/insert", "post", "403", "--enforce_scopes");
    says("/insert", "post", "422", "Idempotency-Key");
    says("/login", "post", "429", "failed logins");
    says("/refresh", "post", "400", "Basic");
    says("/sse", "get", "429", "--max_sse_per_user");
    says("/compact", "post", "400", "retain");
}

#[tokio::test]
async fn sse_explains_that_swagger_cannot_show_a_stream_and_gives_the_curl_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let doc = document(&s).await;
    let description = doc["paths"]["/sse"]["get"]["description"].as_str().unwrap();
    assert!(
        description.contains("cannot show a stream"),
        "{description}"
    );
    assert!(description.contains("curl -N"), "{description}");
    assert!(description.contains("/sse"), "{description}");
    // Swagger UI's page holds the same document, and no other site may frame it.
    let resp = client().get(s.url("/docs")).send().await.unwrap();
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(
        resp.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let page = resp.text().await.unwrap();
    assert!(page.contains("SwaggerUIBundle"));
    assert!(page.contains("cannot show a stream"));
    assert!(page.contains("--max_sse_per_user"));
    assert!(page.contains("\"celsius\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and tests/js packages (scripts/test.sh installs them and runs this)"]
async fn swagger_ui_renders_the_examples_under_the_six_tags() {
    crate::common::tools::chromium();
    let js = crate::common::tools::npm_packages("tests/js", &["playwright-core"]);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let doc = document(&s).await;
    let base = s.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(js.join("swagger_examples.mjs"))
            .arg(&base)
            .output()
            .expect("node must be installed (scripts/test.sh installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["ok"], true, "{seen}");
    let seen = seen["operations"].as_object().unwrap();
    // Every operation of the document is on the page, under its tag, with its example body
    // (or none when it takes no body), and what the page shows is never a placeholder.
    let all = operations(&doc);
    assert_eq!(seen.len(), all.len(), "{seen:?}");
    for (path, method, op) in all {
        let key = format!(
            "{} {} {path}",
            op["tags"][0].as_str().unwrap(),
            method.to_uppercase()
        );
        let shown = seen
            .get(&key)
            .unwrap_or_else(|| panic!("{key} is not on the page: {seen:?}"));
        match op["requestBody"]["content"]["application/json"].get("schema") {
            Some(schema) => {
                let shown: Value = serde_json::from_str(shown.as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{key}: {shown} is no JSON ({e})"));
                assert_eq!(shown, resolve(&doc, schema)["example"], "{key}");
                assert!(!has_placeholder(&shown), "{key}: {shown}");
            }
            None => assert!(shown.is_null(), "{key} shows a body: {shown}"),
        }
    }
    let insert: Value =
        serde_json::from_str(seen["events POST /insert"].as_str().unwrap()).unwrap();
    assert_eq!(
        insert,
        serde_json::json!({"event": "temperature", "data": {"celsius": 21}})
    );
}
