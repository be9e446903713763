//! Wrong two-factor codes per user, counted apart from the password failures.
//!
//! A wrong code after a right password used to be one more login failure: the per-user
//! limit let 50 through a minute, for ever. With three steps valid at a time, an attack
//! review's holder of a password had a 3 in 10⁶ chance a guess, 72,000 guesses a day and
//! ~78 % odds within a week. Now every fifth wrong code in a row locks the user's
//! two-factor login: for a minute, then twice as long at each further fifth, up to a day
//! (about 55 guesses the first day, 5 a day after). A right code clears the count.
//!
//! Only a caller who gave the right password gets here, so the lock tells nobody else
//! anything; such a caller can lock the user's two-factor login, which the password's owner
//! ends by changing the password (the attacker has it). Counts are per process and in
//! memory: a restart forgets them, and each node of a shared log counts its own.

use std::collections::HashMap;
use std::sync::Mutex;

/// Wrong codes in a row between locks.
pub const PER_LOCK: u32 = 5;
/// The first lock; each later one is twice the one before.
const FIRST_LOCK_MS: i64 = 60_000;
/// The longest lock.
const MAX_LOCK_MS: i64 = 24 * 3600 * 1000;
/// A count nobody added to for this long after its lock ended is forgotten.
const FORGET_AFTER_MS: i64 = MAX_LOCK_MS;
/// Users counted at most; beyond, the stalest count goes.
const MAX_USERS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tally {
    wrong: u32,
    locked_until_ms: i64,
    last_ms: i64,
}

impl Tally {
    fn stale(&self, now_ms: i64) -> bool {
        now_ms - self.last_ms.max(self.locked_until_ms) >= FORGET_AFTER_MS
    }
}

/// The wrong two-factor codes of every user (see the module comment).
#[derive(Default)]
pub struct WrongFactors {
    users: Mutex<HashMap<Box<str>, Tally, foldhash::quality::RandomState>>,
}

impl WrongFactors {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Tally, foldhash::quality::RandomState>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after_ms)` while `username`'s two-factor login is locked.
    pub fn check(&self, username: &str, now_ms: i64) -> Result<(), i64> {
        match self.lock().get(username) {
            Some(t) if t.locked_until_ms > now_ms => Err(t.locked_until_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Counts a wrong code of `username`; the lock's length if this one locked the login.
    pub fn wrong(&self, username: &str, now_ms: i64) -> Option<i64> {
        let mut users = self.lock();
        if users.len() >= MAX_USERS && !users.contains_key(username) {
            users.retain(|_, t| !t.stale(now_ms));
            if users.len() >= MAX_USERS {
                let stalest = users
                    .iter()
                    .min_by_key(|(_, t)| t.last_ms)
                    .map(|(name, _)| name.clone());
                if let Some(name) = stalest {
                    users.remove(&name);
                }
            }
        }
        let tally = users.entry(username.into()).or_insert(Tally {
            wrong: 0,
            locked_until_ms: i64::MIN,
            last_ms: now_ms,
        });
        if tally.stale(now_ms) {
            tally.wrong = 0;
        }
        tally.wrong = tally.wrong.saturating_add(1);
        tally.last_ms = now_ms;
        if !tally.wrong.is_multiple_of(PER_LOCK) {
            return None;
        }
        let doublings = (tally.wrong / PER_LOCK - 1).min(20);
        let lock_ms = (FIRST_LOCK_MS << doublings).min(MAX_LOCK_MS);
        tally.locked_until_ms = now_ms + lock_ms;
        Some(lock_ms)
    }

    /// A right code of `username`: its count is forgotten.
    pub fn right(&self, username: &str) {
        self.lock().remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fifth_wrong_code_locks_twice_as_long_up_to_a_day() {
        let w = WrongFactors::default();
        let mut now = 1_000_000;
        let mut locks = Vec::new();
        for _ in 0..14 {
            for n in 1..=PER_LOCK {
                assert_eq!(w.check("bob", now), Ok(()));
                let locked = w.wrong("bob", now);
                assert_eq!(locked.is_some(), n == PER_LOCK);
                if let Some(lock) = locked {
                    assert_eq!(w.check("bob", now + lock - 1), Err(1));
                    locks.push(lock / 60_000);
                    now += lock;
                }
            }
        }
        assert_eq!(
            locks,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1440, 1440, 1440
            ]
        );
        // Another user is not held.
        assert_eq!(w.check("alice", now - 1), Ok(()));
    }

    #[test]
    fn a_right_code_or_a_quiet_day_clears_the_count() {
        let w = WrongFactors::default();
        for _ in 0..4 {
            w.wrong("bob", 0);
        }
        w.right("bob");
        for _ in 0..4 {
            assert_eq!(w.wrong("bob", 0), None);
        }
        // A day after the last wrong code, the count starts afresh.
        assert_eq!(w.wrong("bob", FORGET_AFTER_MS), None);
        assert_eq!(w.lock()["bob"].wrong, 1);
    }
}
