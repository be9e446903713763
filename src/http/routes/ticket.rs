//! `POST /sse_ticket` and `POST /admin_sse_ticket`: short-lived, single-use tickets that open
//! one `GET /sse?ticket=…`, for browsers' native `EventSource`, which cannot send headers.
//!
//! A ticket is 256 random bits, valid for [`TICKET_TTL`], redeemed at most once, and tied to
//! the user, their tenant and their credential epoch: a revocation, password change or tenant
//! change between issue and use makes it worthless. It stands in a URL only for those few
//! seconds, so a proxy's access log that keeps it keeps nothing usable.
//!
//! Tickets live in this process's memory and not in the log, on purpose: they change no state
//! that a replay needs (they are like the brute-force counts, not like users), writing them
//! would put bearer credentials on disk for as long as the log lives, and losing them on a
//! restart costs a client one more `POST /sse_ticket`. With several nodes, a client redeems a
//! ticket at the node that issued it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::Request;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::http::App;
use crate::http::authn::AdminHeader;
use crate::http::authn::{Caller, Principal};
use crate::http::body::JsonBody;
use crate::http::error::{AdminReadErrors, ApiError, TicketErrors};
use crate::log::Cursor;
use crate::state::validate;

/// How long a ticket may wait for its one use.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets at most; past it, issuing answers 429 until some expire.
const MAX_TICKETS: usize = 100_000;
/// Outstanding tickets per user (or per watched tenant for the admin), so that one caller
/// cannot use up [`MAX_TICKETS`] for everybody.
const MAX_TICKETS_PER_HOLDER: u32 = 64;
/// Expired tickets are swept at most this often (sweeping is a pass over the map).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Whose stream a ticket opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A user's own tenant, valid while their credential epoch stays the same.
    User(Principal),
    /// The admin console watching a tenant.
    Admin {
        /// The tenant to watch.
        tenant: String,
    },
}

impl Holder {
    /// The tenant whose events the holder reads.
    pub fn tenant(&self) -> &str {
        match self {
            Holder::User(caller) => &caller.tenant,
            Holder::Admin { tenant } => tenant,
        }
    }

    /// Whose allowance of streams and history pages this takes: the user's, or the admin's
    /// (the console's views of every tenant together).
    pub fn allowance(&self) -> &str {
        match self {
            Holder::User(caller) => &caller.username,
            Holder::Admin { .. } => "\0admin",
        }
    }

    /// Whom the per-holder limit of tickets counts against.
    fn key(&self) -> String {
        match self {
            Holder::User(p) => format!("user:{}", p.username),
            Holder::Admin { tenant } => format!("admin:{tenant}"),
        }
    }
}

struct Ticket {
    holder: Holder,
    expires: Instant,
}

/// Outstanding tickets, keyed by the SHA-256 of the ticket: the map never holds a usable
/// ticket, and a lookup by digest leaks nothing through timing about stored tickets.
#[derive(Default)]
pub(in crate::http) struct Tickets {
    // std mutex: each operation is one map access (plus a rare bounded sweep).
    inner: Mutex<TicketMap>,
}

#[derive(Default)]
struct TicketMap {
    by_digest: HashMap<[u8; 32], Ticket>,
    /// Outstanding tickets per [`Holder::key`] (expired ones until the next sweep).
    per_holder: HashMap<String, u32>,
    last_sweep: Option<Instant>,
}

impl TicketMap {
    fn sweep(&mut self, now: Instant) {
        self.by_digest.retain(|_, t| t.expires > now);
        self.per_holder.clear();
        for ticket in self.by_digest.values() {
            *self.per_holder.entry(ticket.holder.key()).or_default() += 1;
        }
        self.last_sweep = Some(now);
    }

    fn take(&mut self, digest: &[u8; 32]) -> Option<Ticket> {
        let ticket = self.by_digest.remove(digest)?;
        let key = ticket.holder.key();
        if let Some(n) = self.per_holder.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_holder.remove(&key);
            }
        }
        Some(ticket)
    }
}

fn too_many(message: &str) -> ApiError {
    ApiError {
        retry_after: Some(TICKET_TTL.as_secs()),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
    }
}

impl Tickets {
    /// A new ticket for `holder`, or 429 when too many are outstanding.
    fn issue(&self, holder: Holder) -> Result<String, ApiError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(ApiError::internal)?;
        let ticket = URL_SAFE_NO_PAD.encode(secret);
        let now = Instant::now();
        let mut map = self.inner.lock().expect("ticket lock");
        if map.last_sweep.is_none_or(|at| now - at >= SWEEP_EVERY) {
            map.sweep(now);
        }
        if map.by_digest.len() >= MAX_TICKETS {
            return Err(too_many(
                "too many SSE tickets outstanding on this server; retry later",
            ));
        }
        let key = holder.key();
        if map.per_holder.get(&key).copied().unwrap_or(0) >= MAX_TICKETS_PER_HOLDER {
            return Err(too_many(&format!(
                "{MAX_TICKETS_PER_HOLDER} SSE tickets are already waiting to be used; open a stream with one of them, or retry when they expire"
            )));
        }
        *map.per_holder.entry(key).or_default() += 1;
        map.by_digest.insert(
            digest(&ticket),
            Ticket {
                holder,
                expires: now + TICKET_TTL,
            },
        );
        Ok(ticket)
    }

    /// Takes `ticket` out (single use) and returns its holder if it had not expired.
    fn redeem(&self, ticket: &str) -> Option<Holder> {
        let taken = self
            .inner
            .lock()
            .expect("ticket lock")
            .take(&digest(ticket))?;
        (taken.expires > Instant::now()).then_some(taken.holder)
    }
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

const BAD_TICKET: &str = "ticket: unknown, expired or already used; get a new one from POST /sse_ticket just before opening the stream";

impl App {
    /// Redeems `ticket` and checks that its holder may still stream.
    pub(in crate::http) fn redeem_ticket(&self, ticket: &str) -> Result<Holder, ApiError> {
        let holder = self
            .tickets
            .redeem(ticket)
            .ok_or_else(|| ApiError::unauthorized(BAD_TICKET))?;
        if let Holder::User(principal) = &holder {
            let still_valid = self.engine.read(|s| {
                s.user(&principal.username).is_some_and(|u| {
                    u.accepts(principal.credential_epoch) && *u.tenant == *principal.tenant
                })
            });
            if !still_valid {
                return Err(ApiError::unauthorized(
                    "ticket: the user was revoked or their password or tenant changed since it was issued; log in again",
                ));
            }
        }
        Ok(holder)
    }
}

/// A ticket for one `GET /sse?ticket=…`.
#[derive(Debug, Object)]
pub struct SseTicket {
    /// 256 random bits, URL-safe base64; single use.
    pub ticket: String,
    /// Seconds until it expires unused.
    pub expires_in: u64,
}

/// `POST /admin_sse_ticket` body.
#[derive(Debug, Deserialize, Object)]
#[oai(example, skip_serializing_if_is_none)]
pub struct AdminSseTicket {
    /// The server's --admin_token; may be left out when the `X-Admin-Token` header carries it.
    #[serde(default)]
    admin_token: Option<String>,
    /// The tenant to watch.
    #[oai(validator(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    ))]
    tenant_name: String,
}

/// Swagger UI's example body (with the admin token from "Authorize", where one is needed).
impl poem_openapi::types::Example for AdminSseTicket {
    fn example() -> Self {
        AdminSseTicket {
            admin_token: None,
            tenant_name: "acme".into(),
        }
    }
}

/// Ticket routes.
#[derive(Default)]
pub struct TicketApi;

#[OpenApi]
impl TicketApi {
    /// A single-use ticket (valid 30 s) that opens the caller's own stream as
    /// `GET /sse?ticket=…` (Bearer or Basic): for browsers' `EventSource`, which cannot send
    /// an Authorization header. It stops working if the user is revoked or their password or
    /// tenant changes before it is used.
    #[oai(path = "/sse_ticket", method = "post", tag = "super::Tags::Streams")]
    async fn sse_ticket(
        &self,
        app: Data<&App>,
        caller: Caller,
    ) -> Result<Json<SseTicket>, TicketErrors> {
        let ticket = app.tickets.issue(Holder::User(caller.0))?;
        Ok(Json(SseTicket {
            ticket,
            expires_in: TICKET_TTL.as_secs(),
        }))
    }

    /// A single-use ticket (valid 30 s) that opens any tenant's stream as
    /// `GET /sse?ticket=…` (admin): what the console's live view uses.
    #[oai(
        path = "/admin_sse_ticket",
        method = "post",
        tag = "super::Tags::Admin"
    )]
    async fn admin_sse_ticket(
        &self,
        app: Data<&App>,
        req: &Request,
        admin: AdminHeader,
        body: JsonBody<AdminSseTicket>,
    ) -> Result<Json<SseTicket>, AdminReadErrors> {
        app.require_admin(&admin, body.0.admin_token.as_deref(), req)?;
        validate::tenant(&body.0.tenant_name)?;
        let ticket = app.tickets.issue(Holder::Admin {
            tenant: body.0.tenant_name,
        })?;
        Ok(Json(SseTicket {
            ticket,
            expires_in: TICKET_TTL.as_secs(),
        }))
    }
}

/// The owner a stream is tied to: closes when their credential epoch moves.
pub(in crate::http) fn owner_of(holder: &Holder) -> Option<(&str, Cursor)> {
    match holder {
        Holder::User(p) => Some((p.username.as_str(), p.credential_epoch)),
        Holder::Admin { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder() -> Holder {
        Holder::Admin { tenant: "t".into() }
    }

    #[test]
    fn a_ticket_works_once() {
        let tickets = Tickets::default();
        let t = tickets.issue(holder()).unwrap();
        assert_eq!(t.len(), 43, "256 bits in URL-safe base64");
        assert_eq!(tickets.redeem(&t), Some(holder()));
        assert_eq!(tickets.redeem(&t), None);
    }

    #[test]
    fn tickets_differ_and_unknown_ones_fail() {
        let tickets = Tickets::default();
        let a = tickets.issue(holder()).unwrap();
        let b = tickets.issue(holder()).unwrap();
        assert_ne!(a, b);
        assert_eq!(tickets.redeem("not-a-ticket"), None);
        assert_eq!(tickets.redeem(""), None);
    }

    #[test]
    fn one_holder_cannot_hoard_tickets() {
        let tickets = Tickets::default();
        let mine: Vec<String> = (0..MAX_TICKETS_PER_HOLDER)
            .map(|_| tickets.issue(holder()).unwrap())
            .collect();
        let refused = tickets.issue(holder()).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.message.contains("already waiting"), "{refused}");
        // Others are unaffected, and redeeming one frees a place.
        let other = Holder::Admin {
            tenant: "other".into(),
        };
        tickets.issue(other).unwrap();
        assert_eq!(tickets.redeem(&mine[0]), Some(holder()));
        tickets.issue(holder()).unwrap();
    }

    #[test]
    fn an_expired_ticket_fails_and_is_swept() {
        let tickets = Tickets::default();
        let t = tickets.issue(holder()).unwrap();
        {
            let mut map = tickets.inner.lock().unwrap();
            for ticket in map.by_digest.values_mut() {
                ticket.expires = Instant::now() - Duration::from_millis(1);
            }
            map.last_sweep = None;
        }
        assert_eq!(tickets.redeem(&t), None);
        let old = tickets.issue(holder()).unwrap();
        {
            let mut map = tickets.inner.lock().unwrap();
            for ticket in map.by_digest.values_mut() {
                ticket.expires = Instant::now() - Duration::from_millis(1);
            }
            map.last_sweep = None;
        }
        tickets.issue(holder()).unwrap();
        assert_eq!(tickets.inner.lock().unwrap().by_digest.len(), 1);
        assert_eq!(tickets.redeem(&old), None);
    }
}
