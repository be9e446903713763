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

/// What [`WrongFactors::try_code`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Tried<T> {
    /// The code was right.
    Right(T),
    /// The code was wrong, and counted.
    Wrong,
    /// The code was wrong, and locked the login for this many milliseconds.
    WrongAndLocked(i64),
    /// The login was locked for this many more milliseconds: the code was not looked at.
    Locked(i64),
}

type Users = HashMap<Box<str>, Tally, foldhash::quality::RandomState>;

/// The wrong two-factor codes of every user (see the module comment).
#[derive(Default)]
pub struct WrongFactors {
    users: Mutex<Users>,
}

impl WrongFactors {
    fn lock(&self) -> std::sync::MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after_ms)` while `username`'s two-factor login is locked.
    #[cfg(test)]
    fn check(&self, username: &str, now_ms: i64) -> Result<(), i64> {
        match self.try_code(username, now_ms, || Some(())) {
            Tried::Locked(wait) => Err(wait),
            _ => Ok(()),
        }
    }

    /// Counts a wrong code of `username`; the lock's length if this one locked the login.
    #[cfg(test)]
    fn wrong(&self, username: &str, now_ms: i64) -> Option<i64> {
        Self::count_wrong(&mut self.lock(), username, now_ms)
    }

    fn count_wrong(users: &mut Users, username: &str, now_ms: i64) -> Option<i64> {
        if users.len() >= MAX_USERS && !users.contains_key(username) {
            users.retain(|_, t| !t.stale(now_ms));
            if users.len() >= MAX_USERS {
                // Stalest by its last wrong code or the end of its lock: a live lock stays.
                let stalest = users
                    .iter()
                    .min_by_key(|(_, t)| t.last_ms.max(t.locked_until_ms))
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

    /// `check`s a code of `username` unless its two-factor login is locked, with the count
    /// held meanwhile, so that codes sent at once cannot all pass a lock none of them has
    /// counted yet.
    pub fn try_code<T>(
        &self,
        username: &str,
        now_ms: i64,
        check: impl FnOnce() -> Option<T>,
    ) -> Tried<T> {
        let mut users = self.lock();
        if let Some(t) = users.get(username)
            && t.locked_until_ms > now_ms
        {
            return Tried::Locked(t.locked_until_ms - now_ms);
        }
        if let Some(right) = check() {
            return Tried::Right(right);
        }
        match Self::count_wrong(&mut users, username, now_ms) {
            Some(lock_ms) => Tried::WrongAndLocked(lock_ms),
            None => Tried::Wrong,
        }
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

    /// Codes sent at once: each is checked and counted under one lock, so of 40 wrong
    /// codes on 8 threads exactly 5 are looked at before the lock (checked first, counted
    /// after, they could all pass a lock none had counted yet).
    #[test]
    fn codes_sent_at_once_meet_the_lock_together() {
        let w = std::sync::Arc::new(WrongFactors::default());
        let looked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (w, looked, barrier) = (w.clone(), looked.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..5 {
                        w.try_code("bob", 0, || {
                            looked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::yield_now();
                            None::<()>
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(looked.load(std::sync::atomic::Ordering::SeqCst), PER_LOCK);
        assert_eq!(
            w.try_code("bob", 1, || Some(())),
            Tried::Locked(FIRST_LOCK_MS - 1)
        );
    }

    /// At most `MAX_USERS` counts: a full table drops the stalest, not a live lock.
    #[test]
    fn the_table_is_bounded_and_keeps_live_locks() {
        let w = WrongFactors::default();
        for _ in 0..PER_LOCK {
            w.wrong("locked", 0);
        }
        for n in 0..MAX_USERS {
            w.wrong(&format!("u{n}"), 1 + n as i64);
        }
        assert!(w.lock().len() <= MAX_USERS);
        assert!(w.check("locked", 1).is_err(), "the live lock was dropped");
        assert!(!w.lock().contains_key("u0"), "the stalest count stays");
    }
}
