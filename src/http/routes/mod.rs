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
pub mod users;
pub mod verify;

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
        + ok::<session::Login>(bytes)
        + ok::<events::Insert>(bytes)
        + ok::<codes::CreateQr>(bytes)
        + ok::<codes::CreateTotp>(bytes)
        + ok::<codes::PasswordReset>(bytes)
        + ok::<maintenance::Compact>(bytes)
        + ok::<ticket::AdminSseTicket>(bytes)
}
