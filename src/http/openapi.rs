//! What `/openapi.json` and Swagger UI say about each route's errors. A route's error type
//! declares which statuses it can answer (`error::Errors`), but one type serves many routes,
//! so its descriptions could only be generic; here each (route, status) gets the reasons that
//! route really has. The document is patched once, at start.

use poem::{Endpoint, Response, Route, endpoint::make_sync};
use poem_openapi::OpenApiService;
use serde_json::Value;

/// Why each route answers each of its error statuses: (path, status, description).
/// `tests` checks that every error response of the document has exactly one entry here.
const ERRORS: &[(&str, u16, &str)] = &[
    // Operations
    (
        "/ready",
        503,
        "Not ready: `reason` is `log_fault` (the last write or fsync of the log failed; retried once a second), `disk_low` (free space under --min_free_bytes) or `shared_log` (the NATS connection is down). Reads, logins and streams go on.",
    ),
    // Users (admin)
    (
        "/create_user",
        400,
        "The username is taken (in any tenant) or invalid (empty, over 128 bytes, a ':' or a control character); the password or tenant is empty or too long; the email is malformed or a throwaway domain; a scope is not `resource:operation`; with --password_checker, the password is too weak; or the X-Admin-Token header and the body's admin_token differ.",
    ),
    (
        "/create_user",
        401,
        "No admin token, or not the server's --admin_token (header or body).",
    ),
    (
        "/create_user",
        413,
        "The new user's body (password and `data` included) is over --max_body_bytes.",
    ),
    (
        "/create_user",
        429,
        "Too many wrong admin tokens from this address; wait retry-after seconds.",
    ),
    (
        "/create_user",
        500,
        "Hashing the password or storing the user failed in the server; logged with detail.",
    ),
    (
        "/create_user",
        503,
        "The log cannot write or the server is stopping, or too many passwords wait for hashing (--hash_queue): the user was not created; retry.",
    ),
    (
        "/create_user",
        507,
        "The log's disk is under --min_free_bytes: the user was not created.",
    ),
    (
        "/list_users",
        400,
        "The body is not JSON; `limit` is not a whole number from 1 to 1000; `sort` is not one of the listed orders; `after` is not a `next` this route gave for the same `sort`; or the X-Admin-Token header and the body's admin_token differ.",
    ),
    (
        "/list_users",
        401,
        "No admin token, or a wrong one: no user is listed.",
    ),
    (
        "/list_users",
        413,
        "A body over --max_body_bytes (this route needs none beyond the token).",
    ),
    (
        "/list_users",
        429,
        "This address sent too many wrong admin tokens: the listing is refused for retry-after seconds.",
    ),
    (
        "/list_users",
        500,
        "Reading the users failed in the server; logged with detail.",
    ),
    (
        "/list_tenants",
        400,
        "The body is not JSON, or the X-Admin-Token header and the body's admin_token differ.",
    ),
    (
        "/list_tenants",
        401,
        "No admin token, or a wrong one: no tenant is listed.",
    ),
    (
        "/list_tenants",
        413,
        "A body over --max_body_bytes (this route needs nothing beyond the token).",
    ),
    (
        "/list_tenants",
        429,
        "This address sent too many wrong admin tokens: the tenants are withheld for retry-after seconds.",
    ),
    (
        "/list_tenants",
        500,
        "Reading the tenants failed in the server; logged with detail.",
    ),
    (
        "/enable_two_factor",
        400,
        "`totp` is not the code the user's authenticator app shows now (wrong, expired or not six digits): two-factor login stays off; or `username` is missing, or the admin token's header and body differ.",
    ),
    (
        "/enable_two_factor",
        401,
        "No admin token or a wrong one: two-factor login is not turned on.",
    ),
    (
        "/enable_two_factor",
        404,
        "No user has this username, so there is no enrolment to verify.",
    ),
    (
        "/enable_two_factor",
        413,
        "A verification body over --max_body_bytes.",
    ),
    (
        "/enable_two_factor",
        429,
        "Too many wrong admin tokens from this address; retry after retry-after seconds.",
    ),
    (
        "/enable_two_factor",
        500,
        "Storing the change failed in the server; logged with detail.",
    ),
    (
        "/enable_two_factor",
        503,
        "The log cannot write or the server is stopping: two-factor login was not turned on; send a fresh code again.",
    ),
    (
        "/reset_two_factor",
        400,
        "`username` is missing or not a string, or the admin token's header and body field differ: the secret stays.",
    ),
    (
        "/reset_two_factor",
        401,
        "No admin token or a wrong one: the secret stays.",
    ),
    (
        "/reset_two_factor",
        404,
        "No user has this username: there is no secret to replace.",
    ),
    ("/reset_two_factor", 413, "A body over --max_body_bytes."),
    (
        "/reset_two_factor",
        429,
        "This address sent too many wrong admin tokens: the secret stays until retry-after seconds have passed and a right token comes.",
    ),
    (
        "/reset_two_factor",
        500,
        "Storing the new secret failed in the server; logged with detail.",
    ),
    (
        "/reset_two_factor",
        503,
        "The log cannot write or the server is stopping: the old secret stays; send the request again.",
    ),
    (
        "/get_user",
        400,
        "`username` is missing or not a string, or the admin token's header and body field differ.",
    ),
    (
        "/get_user",
        401,
        "No admin token or a wrong one: nothing about the user is shown.",
    ),
    (
        "/get_user",
        404,
        "No user has this username (never created, or deleted).",
    ),
    ("/get_user", 413, "A lookup body over --max_body_bytes."),
    (
        "/get_user",
        429,
        "This address sent too many wrong admin tokens; retry after retry-after seconds.",
    ),
    (
        "/get_user",
        500,
        "Reading the user failed in the server; logged with detail.",
    ),
    (
        "/update_user",
        400,
        "A field is invalid: an empty or over-long tenant or password, a malformed or throwaway email, a scope that is not `resource:operation`, a weak password under --password_checker, a field of the wrong type; or the admin token's header and body differ.",
    ),
    (
        "/update_user",
        401,
        "No admin token or a wrong one: the user is unchanged.",
    ),
    (
        "/update_user",
        404,
        "No user has this username: updates never create a user.",
    ),
    (
        "/update_user",
        413,
        "The update (with its `data`) is over --max_body_bytes.",
    ),
    (
        "/update_user",
        429,
        "Too many wrong admin tokens came from this address; wait retry-after seconds.",
    ),
    (
        "/update_user",
        500,
        "Hashing the new password or storing the change failed in the server; logged with detail.",
    ),
    (
        "/update_user",
        503,
        "The log cannot write, the server is stopping, or too many passwords wait for hashing; with a new password on several nodes, possibly only the first of the two records was stored: send the request again.",
    ),
    (
        "/revoke_user",
        400,
        "`username` is missing or not a string, or the token's header and body field differ.",
    ),
    (
        "/revoke_user",
        401,
        "No admin token or a wrong one: the user keeps their access.",
    ),
    (
        "/revoke_user",
        404,
        "No user has this username, so there is nobody to revoke.",
    ),
    (
        "/revoke_user",
        413,
        "A revocation body over --max_body_bytes.",
    ),
    (
        "/revoke_user",
        429,
        "Too many wrong admin tokens from this address (retry-after says when to try again).",
    ),
    (
        "/revoke_user",
        500,
        "Storing the revocation failed in the server; logged with detail.",
    ),
    (
        "/revoke_user",
        503,
        "The log cannot write or the server is stopping: the user is NOT revoked yet; retry.",
    ),
    (
        "/unrevoke_user",
        400,
        "`username` is missing or not a string, or the admin token came twice with different values.",
    ),
    (
        "/unrevoke_user",
        401,
        "No admin token or a wrong one: the user stays revoked.",
    ),
    ("/unrevoke_user", 404, "No user has this username."),
    (
        "/unrevoke_user",
        413,
        "An unrevoke body over --max_body_bytes.",
    ),
    (
        "/unrevoke_user",
        429,
        "This address is throttled after wrong admin tokens; retry after retry-after seconds.",
    ),
    (
        "/unrevoke_user",
        500,
        "Storing the unrevocation failed in the server; logged with detail.",
    ),
    (
        "/unrevoke_user",
        503,
        "The log cannot write or the server is stopping: the user is still revoked; retry.",
    ),
    (
        "/delete_user",
        400,
        "`username` is missing or not a string, or the admin token's header and body disagree.",
    ),
    (
        "/delete_user",
        401,
        "No admin token or a wrong one: nothing is deleted.",
    ),
    (
        "/delete_user",
        404,
        "No user has this username — including a user already deleted (a second /delete_user).",
    ),
    (
        "/delete_user",
        413,
        "A deletion body over --max_body_bytes.",
    ),
    (
        "/delete_user",
        429,
        "Wrong admin tokens from this address are throttled; retry after retry-after seconds.",
    ),
    (
        "/delete_user",
        500,
        "Storing the deletion failed in the server; logged with detail.",
    ),
    (
        "/delete_user",
        503,
        "The log cannot write or the server is stopping: the user still exists; retry.",
    ),
    // Two-factor
    (
        "/create_qr",
        400,
        "`issuer` or `username` is missing, or the issuer is empty or holds a ':' (the otpauth label could not be parsed); or the admin token's header and body differ.",
    ),
    (
        "/create_qr",
        401,
        "No admin token or a wrong one: no enrolment secret is shown.",
    ),
    (
        "/create_qr",
        404,
        "No user has this username, so there is no TOTP secret to enrol.",
    ),
    (
        "/create_qr",
        413,
        "A QR request body over --max_body_bytes.",
    ),
    (
        "/create_qr",
        429,
        "Too many wrong admin tokens from this address; the QR code is withheld for retry-after seconds.",
    ),
    (
        "/create_qr",
        500,
        "Rendering the QR code failed in the server; logged with detail.",
    ),
    (
        "/create_totp",
        400,
        "`username` is missing or not a string, or the admin token's two copies differ.",
    ),
    (
        "/create_totp",
        401,
        "No admin token or a wrong one: no reset code is issued.",
    ),
    (
        "/create_totp",
        404,
        "No user has this username, so no reset code is issued.",
    ),
    (
        "/create_totp",
        413,
        "A reset-code request over --max_body_bytes.",
    ),
    (
        "/create_totp",
        429,
        "Too many wrong admin tokens from this address; issuing waits retry-after seconds.",
    ),
    (
        "/create_totp",
        500,
        "Storing the code's digest failed in the server; logged with detail.",
    ),
    (
        "/create_totp",
        503,
        "The log cannot write or the server is stopping: no code was issued (an earlier one still counts); retry.",
    ),
    (
        "/password_reset",
        400,
        "`username`, `totp` or `password` is missing or not a string, or the new password is empty, over 1024 bytes or (with --password_checker) too weak.",
    ),
    (
        "/password_reset",
        401,
        "The code is wrong, expired, already used, replaced by a newer one or void after five wrong tries — or the username is unknown (the same answer, on purpose).",
    ),
    (
        "/password_reset",
        413,
        "A reset body over --max_body_bytes.",
    ),
    (
        "/password_reset",
        429,
        "Too many failed resets or logins for this username or from this address; retry after retry-after seconds, even with the right code.",
    ),
    (
        "/password_reset",
        500,
        "Hashing the new password or storing it failed in the server; logged with detail.",
    ),
    (
        "/password_reset",
        503,
        "The log cannot write, the server is stopping, or too many password checks are waiting (--hash_queue): the password is unchanged; retry.",
    ),
    // Sessions
    (
        "/login",
        400,
        "The body is not JSON, or `username` or `password` is missing or not a string.",
    ),
    (
        "/login",
        401,
        "Wrong username or password, a revoked user, or for a two-factor user a missing, wrong or already used code: one answer for all, with no hint which.",
    ),
    ("/login", 413, "A login body over --max_body_bytes."),
    (
        "/login",
        429,
        "Too many failed logins for this username (from this address or from all) or from this address, or for a two-factor user with the right password, too many wrong codes in a row (5: the user's two-factor login is locked for a minute, doubling at each further 5, up to a day); retry after retry-after seconds, even with the right password.",
    ),
    (
        "/login",
        500,
        "Checking the password or signing the token failed in the server; logged with detail.",
    ),
    (
        "/login",
        503,
        "Too many password checks are waiting (--hash_queue), or a two-factor code could not be recorded as used (the log cannot write); retry after retry-after seconds.",
    ),
    (
        "/refresh",
        400,
        "HTTP Basic was sent: only a Bearer JWT from /login is refreshed.",
    ),
    (
        "/refresh",
        401,
        "No token, or one that is expired, forged, stream-only (the session cookie's) or void: the user was revoked or deleted, or their password, tenant or scopes changed. Log in again.",
    ),
    (
        "/refresh",
        500,
        "Signing the new token failed in the server; logged with detail.",
    ),
    (
        "/verify",
        401,
        "No credential, or a JWT or Basic credential that is wrong, expired, revoked or outdated: there is nothing to vouch for.",
    ),
    (
        "/verify",
        429,
        "With HTTP Basic: too many failed password checks for this username or address; retry after retry-after seconds.",
    ),
    (
        "/verify",
        500,
        "Building or signing the biscuit failed in the server; logged with detail.",
    ),
    (
        "/verify",
        503,
        "With HTTP Basic: too many password checks are waiting (--hash_queue); retry after retry-after seconds.",
    ),
    // Events
    (
        "/insert",
        400,
        "The body is not JSON or lacks `event` or `data`; the event name is empty, over 255 bytes or holds a control character; or the Idempotency-Key header is not 1–255 printable ASCII bytes or came twice.",
    ),
    (
        "/insert",
        401,
        "No credential, or a wrong, expired, revoked or outdated JWT or Basic password (a stream-only cookie token is refused too).",
    ),
    (
        "/insert",
        403,
        "With --enforce_scopes: the user holds no `<event>:write` (or `*:write`) scope for this event name; the message names the scope.",
    ),
    (
        "/insert",
        413,
        "The event (its `data` included) is over --max_body_bytes.",
    ),
    (
        "/insert",
        422,
        "This caller already used this Idempotency-Key for a different event, data or tenant within --idempotency_window_secs; use a new key for a new event.",
    ),
    (
        "/insert",
        429,
        "Over --max_inserts_per_sec for this user, a new event name in a tenant at --max_event_names, or (Basic) too many failed password checks; retry after retry-after seconds.",
    ),
    (
        "/insert",
        500,
        "Appending the event failed in the server; logged with detail.",
    ),
    (
        "/insert",
        503,
        "The log cannot write, the server is stopping, or (Basic) too many password checks wait: the event was not stored — retry, with the same Idempotency-Key to be safe.",
    ),
    (
        "/insert",
        507,
        "The log's disk is under --min_free_bytes: the event was not stored.",
    ),
    (
        "/admin_insert",
        400,
        "The body is not JSON or lacks `tenant_name`, `event` or `data`; the tenant or event name is empty, too long or holds a control character; the Idempotency-Key is malformed; or the admin token's header and body differ.",
    ),
    (
        "/admin_insert",
        401,
        "No admin token, or not the server's --admin_token.",
    ),
    (
        "/admin_insert",
        403,
        "A browser page of another site that only --origin * admits: admin routes never answer such pages.",
    ),
    (
        "/admin_insert",
        413,
        "The admin's event (with its `data`) is over --max_body_bytes.",
    ),
    (
        "/admin_insert",
        422,
        "The admin already used this Idempotency-Key for a different event, data or tenant; use a new key.",
    ),
    (
        "/admin_insert",
        429,
        "Too many wrong admin tokens from this address, or a new event name in a tenant already at --max_event_names.",
    ),
    (
        "/admin_insert",
        500,
        "Appending the admin's event failed in the server; logged with detail.",
    ),
    (
        "/admin_insert",
        503,
        "The log cannot write or the server is stopping: nothing was stored; retry with the same Idempotency-Key.",
    ),
    (
        "/admin_insert",
        507,
        "The log's disk is under --min_free_bytes: the admin's event was not stored.",
    ),
    (
        "/events",
        400,
        "A bad page request: both `after` and `before`, a `limit` outside 1–1000, a cursor that is not a number, an empty, over-long or control-character `event` or more than 64, a user sending `tenant=`, the admin without `tenant=`, or two credentials at once.",
    ),
    (
        "/events",
        401,
        "No credential, a wrong or void JWT or Basic password, or a wrong X-Admin-Token.",
    ),
    (
        "/events",
        403,
        "With --enforce_scopes: an `event=` filter names an event the user may not read (no `<event>:read` or `*:read` scope), so its past events are withheld.",
    ),
    (
        "/events",
        429,
        "Too many failed password checks (Basic) or wrong admin tokens from this address; retry after retry-after seconds.",
    ),
    (
        "/events",
        500,
        "Reading the log for this page failed in the server; logged with detail.",
    ),
    (
        "/events",
        503,
        "Too many password checks are waiting (Basic), or the log cannot be read right now; retry after retry-after seconds.",
    ),
    // Streams
    (
        "/sse",
        400,
        "An Authorization header and a `ticket` at once, or a bad `event=` filter: empty, over 255 bytes, a control character, or more than 64 names (the message names it).",
    ),
    (
        "/sse",
        401,
        "No credential, a wrong or void JWT, Basic password or cookie, or a ticket that is unknown, expired, already used or voided by a revocation or password change.",
    ),
    (
        "/sse",
        403,
        "With --enforce_scopes: the stream asks (`event=`) for a name the user holds no `<event>:read` (or `*:read`) scope for.",
    ),
    (
        "/sse",
        429,
        "The user already holds --max_sse_per_user open streams (close one first), or (Basic) too many failed password checks.",
    ),
    (
        "/sse",
        500,
        "Opening the stream failed in the server; logged with detail.",
    ),
    (
        "/sse",
        503,
        "The server is stopping (reconnect elsewhere with Last-Event-ID), or too many password checks are waiting (Basic).",
    ),
    (
        "/sse_ticket",
        401,
        "No credential, or a wrong or void JWT or Basic password: no ticket is issued.",
    ),
    (
        "/sse_ticket",
        429,
        "The user already holds 64 unused tickets (or the server its maximum), or (Basic) too many failed password checks; retry after retry-after seconds.",
    ),
    (
        "/sse_ticket",
        500,
        "Issuing the ticket failed in the server; logged with detail.",
    ),
    (
        "/sse_ticket",
        503,
        "With HTTP Basic: too many password checks wait for Argon2 (--hash_queue), so no ticket is issued; retry after retry-after seconds.",
    ),
    // Admin
    (
        "/admin_sse_ticket",
        400,
        "`tenant_name` is missing, empty, over 128 bytes or holds a control character, or the admin token's header and body differ.",
    ),
    (
        "/admin_sse_ticket",
        401,
        "No admin token or a wrong one: no ticket to watch the tenant.",
    ),
    (
        "/admin_sse_ticket",
        413,
        "A ticket request body over --max_body_bytes.",
    ),
    (
        "/admin_sse_ticket",
        429,
        "64 unused tickets already wait for this tenant, or too many wrong admin tokens came from this address.",
    ),
    (
        "/admin_sse_ticket",
        500,
        "Issuing the admin ticket failed in the server; logged with detail.",
    ),
    (
        "/compact",
        400,
        "`retain` is missing or neither an age (`7d`, `12h`, `30m`, `10s`) nor a cursor, or the admin token's header and body differ.",
    ),
    (
        "/compact",
        401,
        "No admin token or a wrong one: nothing is compacted.",
    ),
    ("/compact", 413, "A compaction body over --max_body_bytes."),
    (
        "/compact",
        429,
        "Too many wrong admin tokens from this address: no compaction is started for retry-after seconds.",
    ),
    (
        "/compact",
        500,
        "Rewriting the segments failed (an I/O error); the old segments stay in use and the fault is logged.",
    ),
    (
        "/compact",
        503,
        "The log cannot be compacted right now (it cannot write, or the server is stopping); nothing changed — retry.",
    ),
    (
        "/server_stats",
        400,
        "The body is not JSON, or the admin token's header and body field differ.",
    ),
    (
        "/server_stats",
        401,
        "No admin token or a wrong one: the statistics are withheld.",
    ),
    (
        "/server_stats",
        413,
        "A statistics request body over --max_body_bytes.",
    ),
    (
        "/server_stats",
        429,
        "Too many wrong admin tokens from this address: statistics are refused for retry-after seconds.",
    ),
    (
        "/server_stats",
        500,
        "Measuring the log failed in the server; logged with detail.",
    ),
];

/// The OpenAPI document of `api` as `/openapi.json` serves it: each error response described
/// for its own route (see [`ERRORS`]).
pub fn document<T: poem_openapi::OpenApi>(api: &OpenApiService<T, ()>) -> String {
    let mut doc: Value =
        serde_json::from_str(&api.spec()).expect("poem-openapi writes its document as JSON");
    describe_errors(&mut doc);
    serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
}

/// Replaces the generic description of each error response with its route's own.
fn describe_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, operations) in paths.iter_mut() {
        let Some(operations) = operations.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let why = ERRORS
                    .iter()
                    .find(|(p, s, _)| p == path && s.to_string() == *status);
                if let Some((_, _, why)) = why {
                    response["description"] = Value::from(*why);
                }
            }
        }
    }
}

/// `/openapi.json`: the patched document.
pub fn spec_endpoint(document: String) -> impl Endpoint {
    // Shared, not copied per request: a client that never reads its answers (an HTTP/2
    // stream with no window) would otherwise hold a fresh copy per request, no login needed.
    let document = bytes::Bytes::from(document);
    make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
    })
}

/// Swagger UI (`/docs`) showing the patched document. poem-openapi's page embeds its own
/// document verbatim, so that text is swapped for ours.
pub fn swagger_ui<T: poem_openapi::OpenApi>(api: &OpenApiService<T, ()>, document: &str) -> Route {
    // 1.7 MB, shared rather than copied per request (see `spec_endpoint`).
    let html = bytes::Bytes::from(api.swagger_ui_html().replacen(&api.spec(), document, 1));
    Route::new().at(
        "/",
        make_sync(move |_| {
            // No other site may frame the page (clickjacking its "Execute" buttons), and
            // the browser takes it for nothing but HTML.
            Response::builder()
                .content_type("text/html; charset=utf-8")
                .header("x-frame-options", "DENY")
                .header("content-security-policy", "frame-ancestors 'none'")
                .header("x-content-type-options", "nosniff")
                .header("referrer-policy", "no-referrer")
                .body(html.clone())
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched() -> Value {
        serde_json::from_str(&document(&crate::http::api_service())).unwrap()
    }

    #[test]
    fn every_error_response_has_its_route_s_own_description_and_no_entry_is_stale() {
        let doc = patched();
        let mut used = std::collections::HashSet::new();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                for status in operation["responses"].as_object().unwrap().keys() {
                    let code: u16 = status.parse().unwrap();
                    if code < 400 {
                        continue;
                    }
                    let entry = ERRORS
                        .iter()
                        .position(|(p, s, _)| p == path && *s == code)
                        .unwrap_or_else(|| panic!("{method} {path} {code}: no description"));
                    used.insert(entry);
                }
            }
        }
        for (i, (path, status, _)) in ERRORS.iter().enumerate() {
            assert!(
                used.contains(&i),
                "{path} {status}: the route declares no such status"
            );
        }
    }

    #[test]
    fn no_two_entries_for_one_route_and_status_and_no_copied_sentence() {
        let mut seen = std::collections::HashSet::new();
        let mut sentences = std::collections::HashSet::new();
        for (path, status, why) in ERRORS {
            assert!(seen.insert((path, status)), "{path} {status} twice");
            assert!(
                sentences.insert(why),
                "{path} {status}: copied from another route"
            );
        }
    }

    #[test]
    fn swagger_ui_embeds_the_patched_document() {
        let api = crate::http::api_service();
        let document = document(&api);
        let html = api.swagger_ui_html().replacen(&api.spec(), &document, 1);
        assert!(html.contains(ERRORS[1].2.split('(').next().unwrap()));
        assert!(html.contains("SwaggerUIBundle"));
    }
}
