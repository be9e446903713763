//! One brute-force policy for every password path (`/login`, HTTP Basic on a cache miss,
//! `/password_reset`) and a separate one for admin tokens.
//!
//! Failures are counted in four buckets, each a [`Throttle`]:
//! - per (username, address), the hard limit `--max_failures`: a guesser at one address
//!   gets a handful of tries per user;
//! - per username across all addresses, `--max_failures_per_user` (higher), so that one
//!   attacker cannot lock a user out from the user's own address, while a distributed
//!   guess at one account is still stopped;
//! - per address, `--max_failures_per_address`, whatever the usernames;
//! - admin tokens per address, apart, so that wrong admin tokens never lock out logins.
//!
//! Keys are keyed digests (a per-process salt): fixed size whatever the attacker sends.
//! An IPv6 client is counted by its /64, the block one machine usually holds.

use std::net::IpAddr;
use std::sync::Mutex;

use poem::Request;
use sha2::{Digest, Sha256};

use super::App;
use super::authn::{AdminHeader, AdminTokenError};
use super::error::ApiError;
use super::server::client::{self, Client};
use crate::auth::throttle::{Key, Throttle};
use crate::config::Config;

/// Keys per bucket at most (~40 bytes each).
const MAX_KEYS: usize = 100_000;

/// The buckets, behind one std mutex: every operation is a few map lookups.
pub(super) struct Throttles {
    salt: [u8; 16],
    buckets: Mutex<Buckets>,
}

struct Buckets {
    pair: Throttle,
    user: Throttle,
    address: Throttle,
    admin: Throttle,
}

/// What one password attempt counts against.
pub(super) struct Attempt {
    pair: Option<Key>,
    user: Option<Key>,
    address: Key,
}

impl Throttles {
    pub(super) fn new(config: &Config) -> Self {
        let window = config.limits.failure_window.as_millis() as i64;
        Throttles {
            salt: *uuid::Uuid::new_v4().as_bytes(),
            buckets: Mutex::new(Buckets {
                pair: Throttle::new(config.limits.max_failures, window, MAX_KEYS),
                user: Throttle::new(config.limits.max_failures_per_user, window, MAX_KEYS),
                address: Throttle::new(config.limits.max_failures_per_address, window, MAX_KEYS),
                admin: Throttle::new(config.limits.max_failures_per_address, window, MAX_KEYS),
            }),
        }
    }

    fn key(&self, tag: &[u8], parts: &[&[u8]]) -> Key {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(tag);
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    fn address_key(&self, ip: IpAddr) -> Key {
        match client::block(ip) {
            IpAddr::V4(v4) => self.key(b"ip", &[&v4.octets()]),
            IpAddr::V6(v6) => self.key(b"ip", &[&v6.octets()]),
        }
    }

    /// The buckets of an attempt on `username` from `ip`. A name that could never be a
    /// username is counted against the address only: it never becomes a key.
    pub(super) fn attempt(&self, username: &str, ip: IpAddr) -> Attempt {
        let address = self.address_key(ip);
        let valid = crate::state::validate::username(username).is_ok();
        Attempt {
            pair: valid.then(|| self.key(b"pair", &[username.as_bytes(), &address])),
            user: valid.then(|| self.key(b"user", &[username.as_bytes()])),
            address,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl App {
    /// The buckets of a password attempt on `username` by the client of `req`.
    pub(super) fn attempt(&self, username: &str, req: &Request) -> Attempt {
        self.throttle.attempt(username, client::of(req).ip)
    }

    /// 429 if any bucket of `attempt` used up its failures.
    pub(super) fn throttle_check(&self, attempt: &Attempt) -> Result<(), ApiError> {
        let now = self.clock.now_ms();
        let mut b = self.throttle.lock();
        let wait = [
            attempt.pair.map(|k| b.pair.check(&k, now)),
            attempt.user.map(|k| b.user.check(&k, now)),
            Some(b.address.check(&attempt.address, now)),
        ]
        .into_iter()
        .flatten()
        .filter_map(Result::err)
        .max();
        drop(b);
        match wait {
            None => Ok(()),
            Some(wait) => {
                self.metrics.rate_limited.inc();
                Err(ApiError::too_many(wait))
            }
        }
    }

    /// Counts a failed attempt in every bucket.
    pub(super) fn throttle_fail(&self, attempt: &Attempt) {
        self.metrics.auth_failures.inc();
        let now = self.clock.now_ms();
        let mut b = self.throttle.lock();
        if let Some(k) = attempt.pair {
            b.pair.fail(&k, now);
        }
        if let Some(k) = attempt.user {
            b.user.fail(&k, now);
        }
        b.address.fail(&attempt.address, now);
    }

    /// After a success: the (username, address) pair starts afresh. The username's and the
    /// address's counts stay, so a guesser cannot reset them by logging in to its own account.
    pub(super) fn throttle_clear(&self, attempt: &Attempt) {
        if let Some(k) = attempt.pair {
            self.throttle.lock().pair.clear(&k);
        }
    }

    /// 401 unless the request's admin token (the `X-Admin-Token` header or the body field
    /// `admin_token`, see [`AdminHeader::token`]) is the right one; wrong tokens count against
    /// the client's address in the admin bucket, whichever way they came. Browsers on other
    /// sites are refused even with the right token unless `--origin` lists them by name (see
    /// [`super::server::cors`]).
    pub(super) fn require_admin(
        &self,
        header: &AdminHeader,
        body: Option<&str>,
        req: &Request,
    ) -> Result<(), ApiError> {
        super::server::cors::refuse_foreign_admin(req)?;
        let Client { ip, .. } = client::of(req);
        let key = self.throttle.address_key(ip);
        let now = self.clock.now_ms();
        if let Err(wait) = self.throttle.lock().admin.check(&key, now) {
            self.metrics.rate_limited.inc();
            return Err(ApiError::too_many(wait));
        }
        let token = header.token(body).map_err(|e| match e {
            AdminTokenError::Missing => ApiError::unauthorized(e.to_string()),
            AdminTokenError::Conflicting | AdminTokenError::Repeated => {
                ApiError::bad_request(e.to_string())
            }
        })?;
        if self.is_admin_token(token) {
            tracing::info!(client = %ip, path = req.uri().path(), "admin action");
            Ok(())
        } else {
            self.metrics.auth_failures.inc();
            self.throttle.lock().admin.fail(&key, now);
            Err(ApiError::unauthorized("admin_token: wrong admin token"))
        }
    }
}
