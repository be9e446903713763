//! The routes of API.md, one file per group. Each handler reads as: authenticate → build a
//! command → hand it to the engine (or read the published state) → reply.

pub mod codes;
pub mod console;
pub mod events;
pub mod health;
pub mod history;
pub mod maintenance;
pub mod session;
pub mod sse;
pub mod ticket;
mod user_order;
pub mod users;
pub mod verify;

/// The groups of `/openapi.json` (and of Swagger UI's page): every operation has one.
#[derive(poem_openapi::Tags)]
#[oai(rename_all = "kebab-case")]
pub enum Tags {
    /// Inserting events and reading past ones: `/insert`, `/events`.
    Events,
    /// Live events over Server-Sent Events: `/sse` and the tickets that open it.
    Streams,
    /// Accounts and sessions: creating, listing and managing users and listing tenants
    /// (admin), logging in and out, refreshing and verifying tokens.
    Users,
    /// Two-factor enrolment (`/create_qr`, `/create_totp`) and password resets with the
    /// codes the admin hands out.
    TwoFactor,
    /// The admin's own operations: inserting into any tenant, watching any tenant, compaction,
    /// server statistics.
    Admin,
    /// Liveness and readiness probes.
    Operations,
}

/// Feeds `bytes` to every request body type (fuzzing and its corpus tests): parsing must
/// answer Ok or a 400, never panic. Returns how many types accepted the bytes. (Here, where
/// the body types live: `body` knows no route.)
#[doc(hidden)]
pub fn parse_every_body(bytes: &[u8]) -> usize {
    fn ok<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> usize {
        match super::body::parse_json::<T>(bytes) {
            Ok(_) => 1,
            Err(e) => {
                assert_eq!(e.status, poem::http::StatusCode::BAD_REQUEST);
                0
            }
        }
    }
    ok::<users::CreateUser>(bytes)
        + ok::<users::UpdateUser>(bytes)
        + ok::<users::AdminUser>(bytes)
        + ok::<users::AdminOnly>(bytes)
        + ok::<users::ListUsers>(bytes)
        + ok::<session::Login>(bytes)
        + ok::<events::Insert>(bytes)
        + ok::<codes::CreateQr>(bytes)
        + ok::<codes::CreateTotp>(bytes)
        + ok::<codes::EnableTwoFactor>(bytes)
        + ok::<codes::PasswordReset>(bytes)
        + ok::<maintenance::Compact>(bytes)
        + ok::<ticket::AdminSseTicket>(bytes)
}
