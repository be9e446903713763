//! Brute-force protection at the HTTP edge: failures per username and per client address.

use std::sync::Mutex;

use poem::Request;

use super::App;
use super::error::ApiError;
use crate::auth::throttle::Throttle;
use crate::config::Config;

/// The two throttles, behind one std mutex: every operation is a few map lookups.
pub(super) struct Throttles(Mutex<(Throttle, Throttle)>);

impl Throttles {
    pub(super) fn new(config: &Config) -> Self {
        let window = config.failure_window.as_millis() as i64;
        Throttles(Mutex::new((
            Throttle::new(config.max_failures, window),
            Throttle::new(config.max_failures_per_address, window),
        )))
    }
}

/// The client's address as the throttle key (the peer of the TCP connection).
pub(super) fn address(req: &Request) -> String {
    req.remote_addr()
        .as_socket_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())
}

impl App {
    /// 429 if `username` or `address` used up their failures.
    pub(super) fn throttle_check(
        &self,
        username: Option<&str>,
        address: &str,
    ) -> Result<(), ApiError> {
        let now = self.clock.now_ms();
        let mut guard = self.throttle.0.lock().expect("throttle lock");
        let (users, addresses) = &mut *guard;
        let by_user = username.map_or(Ok(()), |u| users.check(u, now));
        let by_address = addresses.check(address, now);
        let verdict = match (by_user, by_address) {
            (Ok(()), Ok(())) => return Ok(()),
            (Err(a), Err(b)) => Err(ApiError::too_many(a.max(b))),
            (Err(wait), _) | (_, Err(wait)) => Err(ApiError::too_many(wait)),
        };
        self.metrics.rate_limited.inc();
        verdict
    }

    /// Counts a failure against `username` and `address`.
    pub(super) fn throttle_fail(&self, username: Option<&str>, address: &str) {
        self.metrics.auth_failures.inc();
        let now = self.clock.now_ms();
        let mut guard = self.throttle.0.lock().expect("throttle lock");
        let (users, addresses) = &mut *guard;
        if let Some(username) = username {
            users.fail(username, now);
        }
        addresses.fail(address, now);
    }

    /// Forgets `username`'s failures after a success (the address keeps its count).
    pub(super) fn throttle_clear(&self, username: &str) {
        self.throttle
            .0
            .lock()
            .expect("throttle lock")
            .0
            .clear(username);
    }

    /// 401 unless `token` is the admin token; wrong tokens count against the address.
    pub(super) fn require_admin(&self, token: &str, req: &Request) -> Result<(), ApiError> {
        let address = address(req);
        self.throttle_check(None, &address)?;
        if self.is_admin_token(token) {
            Ok(())
        } else {
            self.throttle_fail(None, &address);
            Err(ApiError::unauthorized("admin_token: wrong admin token"))
        }
    }
}
