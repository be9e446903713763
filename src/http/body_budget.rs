//! Bytes of request bodies held while the rest of them is awaited, bounded for the whole
//! server (`--max_body_bytes_in_flight`) and per client address (`--max_body_bytes_per_ip`).
//!
//! Why: every JSON route reads its body whole before anything else (the admin token and the
//! login's password are in it), and `--max_body_bytes` bounds only one body. An attack review
//! held 1,000 connections each one byte short of a 1 MiB body, without an account: 1.5 GB of
//! the server's memory for the 30 s of `--request_timeout_secs`, then again; over HTTP/2, two
//! connections of 100 streams held 210 MB. A body that has come whole when it is first read
//! (what nearly every request's body is) holds nothing here: only bytes kept across a wait
//! for more are counted, so the cost falls on the bodies that arrive slowly.
//!
//! Bodies whose sender has not been authenticated yet (no bearer token verified at the head:
//! a login, an admin call, anyone at all) may hold half the server's budget at most, so that
//! callers with a verified token always have the other half (the next review filled the
//! whole budget from 16 addresses without an account, and a user's 30 KB inserts got 503).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::error::ApiError;

/// The server's budget.
pub struct BodyBudget {
    max_total: usize,
    max_per_address: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    /// Of `total`, what bodies of unauthenticated senders hold.
    unverified: usize,
    /// Only holders holding bytes: an entry goes when its count reaches zero.
    by_address: HashMap<Holder, usize>,
}

/// Whose share a body is held in: its sender's address, or, for a sender a token
/// authenticated, the user's (the next review filled the authenticated half from 8
/// addresses with one account).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    Address(IpAddr),
    /// The username's hash: no copy of the name per request (two names sharing a hash
    /// would share a share, once in 2^64).
    User(u64),
}

/// What one body holds of the budget; released when dropped.
pub struct BodyCharge<'a> {
    budget: &'a BodyBudget,
    address: Holder,
    /// Whether the sender was authenticated at the request's head.
    verified: bool,
    /// Bytes of the request's head, held with the body's from its first wait: a head held
    /// open with a body that never comes pins them (the next review: 10,000 heads of 28 KB
    /// with one byte of body each, 490 MB, one byte charged each).
    head: usize,
    held: usize,
}

impl BodyBudget {
    /// At most `max_total` bytes held, and `max_per_address` by one address (an IPv6 /64).
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        BodyBudget {
            max_total,
            max_per_address,
            held: Mutex::default(),
        }
    }

    /// A charge for one body from the client at `address`, or of `user` if a bearer token
    /// authenticated the request at its head; it holds nothing yet.
    pub fn charge(&self, address: IpAddr, user: Option<&str>) -> BodyCharge<'_> {
        BodyCharge {
            budget: self,
            address: match user {
                Some(user) => Holder::User({
                    use std::hash::{Hash, Hasher};
                    let mut hasher = std::hash::DefaultHasher::new();
                    user.hash(&mut hasher);
                    hasher.finish()
                }),
                None => Holder::Address(super::server::client::block(address)),
            },
            verified: user.is_some(),
            head: 0,
            held: 0,
        }
    }

    /// Bytes held by all bodies, and by the address's.
    #[cfg(test)]
    pub fn held(&self, address: IpAddr) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let key = Holder::Address(super::server::client::block(address));
        (held.total, held.by_address.get(&key).copied().unwrap_or(0))
    }
}

impl BodyCharge<'_> {
    /// The charge with the request's head of `bytes` (see [`BodyCharge::head`]).
    pub fn with_head(mut self, bytes: usize) -> Self {
        self.head = bytes;
        self
    }

    /// Holds `bytes` in all for this body (never less than before), or refuses: 429 when the
    /// address holds its share, 503 when the server holds its budget.
    pub fn hold(&mut self, bytes: usize) -> Result<(), ApiError> {
        let bytes = bytes.saturating_add(self.head);
        let Some(more) = bytes.checked_sub(self.held).filter(|&m| m > 0) else {
            return Ok(());
        };
        let budget = self.budget;
        let mut held = budget.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.by_address.get(&self.address).copied().unwrap_or(0);
        if mine.saturating_add(more) > budget.max_per_address {
            return Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    poem::http::StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many request bodies arriving at once from this address (over {} bytes, --max_body_bytes_per_ip); send them whole, or fewer at a time",
                        budget.max_per_address
                    ),
                )
            });
        }
        if held.total.saturating_add(more) > budget.max_total
            || (!self.verified && held.unverified.saturating_add(more) > budget.max_total / 2)
        {
            return Err(ApiError::busy(
                format!(
                    "too many request bodies arriving at once (over {} bytes, --max_body_bytes_in_flight); retry shortly",
                    budget.max_total
                ),
                1,
            ));
        }
        held.total += more;
        if !self.verified {
            held.unverified += more;
        }
        *held.by_address.entry(self.address).or_insert(0) += more;
        self.held = bytes;
        Ok(())
    }
}

impl Drop for BodyCharge<'_> {
    fn drop(&mut self) {
        if self.held == 0 {
            return;
        }
        let mut held = self.budget.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_sub(self.held);
        if !self.verified {
            held.unverified = held.unverified.saturating_sub(self.held);
        }
        if let Some(mine) = held.by_address.get_mut(&self.address) {
            *mine = mine.saturating_sub(self.held);
            if *mine == 0 {
                held.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn bodies_hold_within_their_address_share_and_the_server_budget() {
        let budget = BodyBudget::new(200, 40);
        let mut a1 = budget.charge(ip("192.0.2.1"), None);
        a1.hold(30).unwrap();
        a1.hold(20).unwrap();
        assert_eq!(
            budget.held(ip("192.0.2.1")),
            (30, 30),
            "never less than before"
        );
        // 50 in all is 20 more: past the address's 40, refused, and nothing changes.
        assert_eq!(a1.hold(50).unwrap_err().status, 429);
        assert_eq!(budget.held(ip("192.0.2.1")), (30, 30));
        let mut a2 = budget.charge(ip("192.0.2.1"), None);
        assert_eq!(a2.hold(11).unwrap_err().status, 429, "the address's share");
        a2.hold(10).unwrap();
        // One IPv6 /64 is one address.
        let mut b1 = budget.charge(ip("2001:db8::1"), None);
        b1.hold(40).unwrap();
        let mut b2 = budget.charge(ip("2001:db8::2"), None);
        assert_eq!(b2.hold(1).unwrap_err().status, 429);
        let mut c = budget.charge(ip("198.51.100.7"), None);
        c.hold(20).unwrap();
        let mut d = budget.charge(ip("203.0.113.9"), None);
        let busy = d.hold(1).unwrap_err();
        assert_eq!(
            busy.status, 503,
            "the server's budget (its half for the anonymous)"
        );
        assert_eq!(busy.retry_after, Some(1));
        assert_eq!(budget.held(ip("192.0.2.1")), (100, 40));
        // Dropped charges give their bytes back, and their address's entry goes.
        drop(a1);
        drop(a2);
        d.hold(40).unwrap();
        drop((b1, b2, c, d));
        assert_eq!(budget.held(ip("192.0.2.1")), (0, 0));
        assert!(budget.held.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn unauthenticated_bodies_hold_half_the_budget_at_most() {
        let budget = BodyBudget::new(100, 40);
        let mut anonymous = Vec::new();
        for n in 1..=2 {
            let mut charge = budget.charge(ip(&format!("192.0.2.{n}")), None);
            charge.hold(25).unwrap();
            anonymous.push(charge);
        }
        let mut third = budget.charge(ip("192.0.2.3"), None);
        assert_eq!(third.hold(1).unwrap_err().status, 503, "half is theirs");
        // The other half is left to callers a token authenticated.
        let mut user = budget.charge(ip("198.51.100.3"), Some("u"));
        user.hold(40).unwrap();
        // A user's share is the user's, from any address: one account on many addresses
        // holds no more than on one.
        let mut elsewhere = budget.charge(ip("203.0.113.50"), Some("u"));
        assert_eq!(elsewhere.hold(1).unwrap_err().status, 429);
        drop(elsewhere);
        drop(anonymous);
        third.hold(25).unwrap();
    }

    #[test]
    fn a_head_is_held_with_its_body() {
        let budget = BodyBudget::new(100, 40);
        let mut headed = budget.charge(ip("203.0.113.51"), None).with_head(30);
        assert_eq!(headed.hold(11).unwrap_err().status, 429, "30 + 11 > 40");
        headed.hold(10).unwrap();
        assert_eq!(budget.held(ip("203.0.113.51")), (40, 40));
        drop(headed);
        assert_eq!(budget.held(ip("203.0.113.51")), (0, 0));
    }
}
