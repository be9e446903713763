//! One brute-force policy for every password path (`/login`, HTTP Basic on a cache miss,
//! `/password_reset`) and a separate one for admin tokens.
//!
//! Failures are counted in four buckets, each a [`Throttle`]:
//! - per (username, address), the hard limit `--max_failures`: a guesser at one address
//!   gets a handful of tries per user;
//! - per username across all addresses, `--max_failures_per_user` (higher), so that a
//!   distributed guess at one account is still stopped. It does not hold back the user's
//!   own devices: a (username, address) pair that logged in within [`KNOWN_FOR_MS`] is let in
//!   past it (an attack review locked any user out of every password path in 2 s from 10
//!   addresses, again each minute);
//! - per address, `--max_failures_per_address`, whatever the usernames;
//! - admin tokens per address, apart, so that wrong admin tokens never lock out logins.
//!
//! Keys are keyed digests (a per-process salt): fixed size whatever the attacker sends.
//! An IPv6 client is counted by its /64, the block one machine usually holds.

use std::collections::HashMap;
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
    /// Woken whenever an admitted attempt ends: attempts waiting for room look again.
    ended: tokio::sync::Notify,
}

struct Buckets {
    pair: Throttle,
    user: Throttle,
    address: Throttle,
    admin: Throttle,
    /// Pairs that logged in, until when they are known (see [`KNOWN_FOR_MS`]).
    known: HashMap<Key, i64, foldhash::quality::RandomState>,
}

/// How long a (username, address) pair that logged in is let in past the username's
/// failure limit (in memory: a restart forgets).
const KNOWN_FOR_MS: i64 = 30 * 24 * 3600 * 1000;

impl Buckets {
    fn known(&self, pair: &Key, now_ms: i64) -> bool {
        self.known.get(pair).is_some_and(|&until| now_ms < until)
    }

    fn remember(&mut self, pair: Key, now_ms: i64) {
        if self.known.len() >= MAX_KEYS && !self.known.contains_key(&pair) {
            self.known.retain(|_, until| now_ms < *until);
            if self.known.len() >= MAX_KEYS {
                // All live: the one that expires first goes.
                let first = self
                    .known
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(k, _)| *k);
                if let Some(first) = first {
                    self.known.remove(&first);
                }
            }
        }
        self.known.insert(pair, now_ms + KNOWN_FOR_MS);
    }
}

/// What one password attempt counts against.
#[derive(Clone, Copy)]
pub(super) struct Attempt {
    pair: Option<Key>,
    user: Option<Key>,
    address: Key,
    /// The address's network ([`client::network`]): ranks the password check, never limits.
    network: Key,
}

impl Attempt {
    /// What ranks the attempt's password check in the hash queue: its address and its
    /// address's network. (Its pair's count never passes its address's: no key of its own.)
    pub(super) fn hash_keys(&self) -> [Key; 2] {
        [self.address, self.network]
    }
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
                known: HashMap::default(),
            }),
            ended: tokio::sync::Notify::new(),
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
        self.ip_key(b"ip", client::block(ip))
    }

    fn ip_key(&self, tag: &[u8], ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => self.key(tag, &[&v4.octets()]),
            IpAddr::V6(v6) => self.key(tag, &[&v6.octets()]),
        }
    }

    /// The buckets of an attempt on `username` from `ip`. A name that could never be a
    /// username is counted against the address only: it never becomes a key.
    pub(super) fn attempt(&self, username: &str, ip: IpAddr) -> Attempt {
        let address = self.address_key(ip);
        let valid = crate::state::validate::username(username).is_ok();
        let network = self.ip_key(b"net", client::network(ip));
        Attempt {
            pair: valid.then(|| self.key(b"pair", &[username.as_bytes(), &address])),
            user: valid.then(|| self.key(b"user", &[username.as_bytes()])),
            address,
            network,
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

    /// Lets `attempt` in, or 429 if any of its buckets used up its failures (see
    /// [`Throttles::admit`]).
    pub(super) async fn throttle_admit(&self, attempt: Attempt) -> Result<Admitted<'_>, ApiError> {
        match self.throttle.admit(attempt, || self.clock.now_ms()).await {
            Ok(attempt) => Ok(Admitted {
                app: self,
                attempt,
                settled: false,
            }),
            Err(retry_after_ms) => {
                self.metrics.rate_limited.inc();
                Err(ApiError::too_many(retry_after_ms))
            }
        }
    }
}

impl Throttles {
    /// Counts `attempt` as pending in its buckets, or `Err(retry_after_ms)` if any of them
    /// used up its failures. An attempt is counted from when it is let in: checking the
    /// limit first and counting after the password check let a burst of concurrent guesses
    /// all pass while the count was still low (found by an attack review). While the
    /// attempts in flight could, if they all failed, use up a bucket, a new one waits for
    /// one of them to [`Throttles::end`] (an honest burst of right passwords then goes on, a
    /// burst of guesses meets the limit) — at most [`ADMIT_WAIT`], then `Err`. A pair that
    /// logged in lately skips the username's bucket; the attempt as counted is returned.
    async fn admit(&self, mut attempt: Attempt, now_ms: impl Fn() -> i64) -> Result<Attempt, i64> {
        let give_up = tokio::time::Instant::now() + ADMIT_WAIT;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            {
                let now = now_ms();
                let mut b = self.lock();
                if attempt.pair.is_some_and(|k| b.known(&k, now)) {
                    attempt.user = None;
                }
                let wait = [
                    attempt.pair.map(|k| b.pair.check(&k, now)),
                    attempt.user.map(|k| b.user.check(&k, now)),
                    Some(b.address.check(&attempt.address, now)),
                ]
                .into_iter()
                .flatten()
                .filter_map(Result::err)
                .max();
                if let Some(wait) = wait {
                    return Err(wait);
                }
                let room = attempt.pair.is_none_or(|k| b.pair.has_room(&k))
                    && attempt.user.is_none_or(|k| b.user.has_room(&k))
                    && b.address.has_room(&attempt.address);
                if room {
                    if let Some(k) = attempt.pair {
                        b.pair.begin(&k, now);
                    }
                    if let Some(k) = attempt.user {
                        b.user.begin(&k, now);
                    }
                    b.address.begin(&attempt.address, now);
                    return Ok(attempt);
                }
                // Registered before the lock is let go: an end in between still wakes us.
                ended.as_mut().enable();
            }
            if tokio::time::timeout_at(give_up, ended).await.is_err() {
                return Err(ADMIT_WAIT_RETRY_MS);
            }
        }
    }

    /// Ends `attempt`, pending since [`Throttles::admit`], as a failure in every bucket or
    /// not, and wakes the attempts waiting for room.
    fn end(&self, attempt: Attempt, failed: bool, now_ms: i64) {
        let mut b = self.lock();
        let Attempt {
            pair,
            user,
            address,
            ..
        } = attempt;
        let buckets = &mut *b;
        for (bucket, key) in [
            (&mut buckets.pair, pair),
            (&mut buckets.user, user),
            (&mut buckets.address, Some(address)),
        ] {
            if let Some(key) = key {
                bucket.end(&key);
                if failed {
                    bucket.fail(&key, now_ms);
                }
            }
        }
        drop(b);
        self.ended.notify_waiters();
    }
}

/// How long an attempt waits at most for the attempts in flight before it (see
/// [`App::throttle_admit`]).
const ADMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `Retry-After` of an attempt that waited [`ADMIT_WAIT`] in vain.
const ADMIT_WAIT_RETRY_MS: i64 = 1_000;

/// A password attempt let in by [`App::throttle_admit`]: pending in its buckets until
/// [`Admitted::fail`] counts it as a failure or [`Admitted::succeed`] clears it. Dropped
/// without either (a full hash queue, a refused new password, a client gone), it just ends:
/// it tested no credential.
#[must_use = "say how the attempt ended: fail() or succeed()"]
pub(super) struct Admitted<'a> {
    app: &'a App,
    attempt: Attempt,
    settled: bool,
}

impl Admitted<'_> {
    /// The credential was wrong: a failure in every bucket.
    pub(super) fn fail(mut self) {
        self.app.metrics.auth_failures.inc();
        self.end(true);
    }

    /// The credential was right: the (username, address) pair starts afresh, and is known
    /// (let in past the username's limit) for [`KNOWN_FOR_MS`]. The username's and the
    /// address's earlier failures stay, so a guesser cannot reset them by logging in to its
    /// own account.
    pub(super) fn succeed(mut self) {
        self.end(false);
        if let Some(k) = self.attempt.pair {
            let now = self.app.clock.now_ms();
            let mut b = self.app.throttle.lock();
            b.pair.clear(&k);
            b.remember(k, now);
        }
    }

    fn end(&mut self, failed: bool) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let now = self.app.clock.now_ms();
        self.app.throttle.end(self.attempt, failed, now);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl App {
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
        let token = match header.token(body) {
            Ok(token) => token,
            Err(e) => {
                self.token_check(ip)?;
                return Err(match e {
                    AdminTokenError::Missing => ApiError::unauthorized(e.to_string()),
                    AdminTokenError::Conflicting | AdminTokenError::Repeated => {
                        ApiError::bad_request(e.to_string())
                    }
                });
            }
        };
        let right = self.is_admin_token(token);
        // An unguessable token needs no lock to stay unguessed, so its right value passes
        // one: else anyone sharing the admin's address (a NAT, a proxy not named in
        // --trusted_proxies) locked the admin out with 20 wrong tokens a minute (an attack
        // review). A guessable one (allowed on loopback only) keeps the lock for all.
        if !(right && self.admin_token_unguessable) {
            self.token_check(ip)?;
        }
        if right {
            tracing::info!(client = %ip, path = req.uri().path(), "admin action");
            Ok(())
        } else {
            self.token_fail(ip);
            Err(ApiError::unauthorized("admin_token: wrong admin token"))
        }
    }

    /// 429 while the client at `ip` has used up its wrong secret tokens (the admin token,
    /// the metrics token: one bucket per address, apart from passwords).
    pub(super) fn token_check(&self, ip: std::net::IpAddr) -> Result<(), ApiError> {
        let key = self.throttle.address_key(ip);
        if let Err(wait) = self.throttle.lock().admin.check(&key, self.clock.now_ms()) {
            self.metrics.rate_limited.inc();
            return Err(ApiError::too_many(wait));
        }
        Ok(())
    }

    /// Counts a wrong secret token of the client at `ip`.
    pub(super) fn token_fail(&self, ip: std::net::IpAddr) {
        self.metrics.auth_failures.inc();
        let key = self.throttle.address_key(ip);
        self.throttle.lock().admin.fail(&key, self.clock.now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    /// The default limits: 5 failures per (username, address).
    fn throttles() -> Arc<Throttles> {
        let config = crate::config::Cli::try_parse_from(["broker"])
            .unwrap()
            .serve
            .validate()
            .unwrap();
        Arc::new(Throttles::new(&config))
    }

    const NOW: i64 = 1_000_000;

    /// Five attempts on bob from one address in flight: a sixth could make a sixth failure.
    async fn five_in_flight(t: &Throttles) -> Attempt {
        let attempt = t.attempt("bob", "192.0.2.1".parse().unwrap());
        for _ in 0..5 {
            t.admit(attempt, || NOW).await.unwrap();
        }
        attempt
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_waits_at_most_admit_wait_for_room_then_is_refused() {
        let t = throttles();
        let attempt = five_in_flight(&t).await;
        let start = Instant::now();
        assert_eq!(
            t.admit(attempt, || NOW).await.err(),
            Some(ADMIT_WAIT_RETRY_MS)
        );
        assert_eq!(start.elapsed(), ADMIT_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_ends_right_lets_a_waiting_one_in_and_a_failure_does_not() {
        let t = throttles();
        let attempt = five_in_flight(&t).await;
        let ender = Arc::clone(&t);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // A failure leaves 1 failure + 4 pending: still no room for a sixth.
            ender.end(attempt, true, NOW);
            tokio::time::sleep(Duration::from_secs(2)).await;
            ender.end(attempt, false, NOW);
        });
        let start = Instant::now();
        assert!(t.admit(attempt, || NOW).await.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        // Another user's attempt from elsewhere never waited on bob's.
        let other = t.attempt("alice", "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        assert!(t.admit(other, || NOW).await.is_ok());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Ninth attack review, F2: 10 addresses used up a username's failures in 2 s and its
    /// user could not log in from anywhere. A pair that logged in lately still can.
    #[tokio::test(start_paused = true)]
    async fn a_pair_that_logged_in_passes_the_usernames_used_up_failures() {
        let t = throttles();
        let home = t.attempt("bob", "192.0.2.1".parse().unwrap());
        let counted = t.admit(home, || NOW).await.unwrap();
        t.end(counted, false, NOW);
        t.lock().remember(home.pair.unwrap(), NOW);
        // 50 failures (the default per username) from ten other addresses.
        for a in 0..10 {
            let guess = t.attempt("bob", format!("198.51.100.{a}").parse().unwrap());
            for _ in 0..5 {
                let counted = t.admit(guess, || NOW).await.unwrap();
                t.end(counted, true, NOW);
            }
        }
        let fresh = t.attempt("bob", "203.0.113.9".parse().unwrap());
        assert!(
            t.admit(fresh, || NOW).await.is_err(),
            "the username's limit holds"
        );
        let counted = t.admit(home, || NOW).await.expect("bob's own address");
        // Let in past the username's bucket, and not counted there.
        assert!(counted.user.is_none());
        t.end(counted, false, NOW);
        // Known for 30 days, not longer.
        let later = NOW + KNOWN_FOR_MS;
        assert!(!t.lock().known(&home.pair.unwrap(), later));
        assert!(t.lock().known(&home.pair.unwrap(), later - 1));
    }

    /// Fresh addresses of one network rank with it in the password-check line: the network
    /// is one of an attempt's keys there, beside the address and the pair.
    #[test]
    fn addresses_of_one_network_share_a_rank_key() {
        let t = throttles();
        let keys = |ip: &str| t.attempt("bob", ip.parse().unwrap()).hash_keys();
        let (a, b, c) = (keys("10.0.0.1"), keys("10.0.0.2"), keys("10.0.1.1"));
        assert_eq!(a.len(), 2);
        let shared = |x: &[Key], y: &[Key]| x.iter().filter(|k| y.contains(k)).count();
        assert_eq!(shared(&a, &b), 1, "the /24 only");
        assert_eq!(shared(&a, &c), 0);
        let v6 = |ip: &str| t.attempt("bob", ip.parse().unwrap()).hash_keys();
        assert_eq!(
            shared(&v6("2001:db8:1:2::1"), &v6("2001:db8:1:3::1")),
            1,
            "the /48"
        );
    }

    /// At most `MAX_KEYS` known pairs: a full table drops the one that expires first.
    #[test]
    fn the_known_pairs_are_bounded() {
        let t = throttles();
        let mut b = t.lock();
        for n in 0..=MAX_KEYS as u32 {
            let mut pair = [0; 16];
            pair[..4].copy_from_slice(&n.to_le_bytes());
            b.remember(pair, NOW + i64::from(n));
        }
        assert_eq!(b.known.len(), MAX_KEYS);
        assert!(!b.known(&[0; 16], NOW), "the first to expire went");
        let mut last = [0; 16];
        last[..4].copy_from_slice(&(MAX_KEYS as u32).to_le_bytes());
        assert!(b.known(&last, NOW));
    }
}
