//! Brute-force protection: failed attempts counted per key in a window that opens at the
//! key's first failure. Pure: the caller passes the time, so tests drive it with a fake clock.
//!
//! Keys are fixed-size digests made by the caller (a username, an address, a pair of both):
//! an attacker's 1 MB username costs 16 bytes here. Memory is bounded twice: expired entries
//! are pruned every [`PRUNE_EVERY_MS`], and a full table evicts its oldest entry.
//!
//! Attempts in flight count too ([`Throttle::begin`], [`Throttle::has_room`]): a burst of
//! concurrent guesses must not all pass the check while no failure has been counted yet.

use std::collections::HashMap;

/// A throttle key: a digest, never the raw text.
pub type Key = [u8; 16];

/// How often expired entries are swept, in milliseconds of the caller's clock.
pub const PRUNE_EVERY_MS: i64 = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    first_ms: i64,
    failures: u32,
    /// Attempts let in ([`Throttle::begin`]) whose outcome is not known yet.
    pending: u32,
}

/// Failures per key within a window.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window_ms: i64,
    max_keys: usize,
    windows: HashMap<Key, Window>,
    last_prune_ms: i64,
}

impl Throttle {
    /// Allows `limit` failures per key within `window_ms` of its first failure, tracking at
    /// most `max_keys` keys.
    pub fn new(limit: usize, window_ms: i64, max_keys: usize) -> Self {
        Throttle {
            limit: limit.clamp(1, u32::MAX as usize) as u32,
            window_ms: window_ms.max(1),
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
            last_prune_ms: i64::MIN,
        }
    }

    /// `Err(retry_after_ms)` while `key` has used up its failures.
    pub fn check(&mut self, key: &Key, now_ms: i64) -> Result<(), i64> {
        self.prune_if_due(now_ms);
        match self.windows.get_mut(key) {
            Some(w) if w.first_ms + self.window_ms <= now_ms => {
                if w.pending == 0 {
                    self.windows.remove(key);
                } else {
                    w.failures = 0;
                    w.first_ms = now_ms;
                }
                Ok(())
            }
            Some(w) if w.failures >= self.limit => Err(w.first_ms + self.window_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Whether one more attempt on `key` could start now: its failures and the attempts
    /// still pending stay under the limit even if every pending one fails.
    pub fn has_room(&self, key: &Key) -> bool {
        self.windows
            .get(key)
            .is_none_or(|w| w.failures.saturating_add(w.pending) < self.limit)
    }

    /// Counts an attempt on `key` as pending until [`Throttle::end`].
    pub fn begin(&mut self, key: &Key, now_ms: i64) {
        self.make_room(now_ms);
        let w = self.windows.entry(*key).or_insert(Window {
            first_ms: now_ms,
            failures: 0,
            pending: 0,
        });
        w.pending = w.pending.saturating_add(1);
    }

    /// Ends a pending attempt on `key` (count its failure with [`Throttle::fail`]).
    pub fn end(&mut self, key: &Key) {
        if let Some(w) = self.windows.get_mut(key) {
            w.pending = w.pending.saturating_sub(1);
            if w.pending == 0 && w.failures == 0 {
                self.windows.remove(key);
            }
        }
    }

    /// Counts one failure of `key`.
    pub fn fail(&mut self, key: &Key, now_ms: i64) {
        self.prune_if_due(now_ms);
        if let Some(w) = self.windows.get_mut(key) {
            if w.first_ms + self.window_ms <= now_ms {
                w.first_ms = now_ms;
                w.failures = 1;
            } else {
                w.failures = w.failures.saturating_add(1);
            }
            return;
        }
        self.make_room(now_ms);
        self.windows.insert(
            *key,
            Window {
                first_ms: now_ms,
                failures: 1,
                pending: 0,
            },
        );
    }

    /// Before a new key goes in: sweeps a full table, and if it is still full evicts one.
    fn make_room(&mut self, now_ms: i64) {
        if self.windows.len() >= self.max_keys {
            self.prune(now_ms);
        }
        if self.windows.len() >= self.max_keys {
            // Still full of live windows: the one closest to expiry goes, so the newest
            // attacker is tracked rather than ignored.
            if let Some(oldest) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.first_ms)
                .map(|(k, _)| *k)
            {
                self.windows.remove(&oldest);
            }
        }
    }

    /// Forgets the failures of `key` (after a success).
    pub fn clear(&mut self, key: &Key) {
        self.windows.remove(key);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    fn prune_if_due(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
            self.prune(now_ms);
        }
    }

    fn prune(&mut self, now_ms: i64) {
        let window = self.window_ms;
        self.windows
            .retain(|_, w| w.first_ms + window > now_ms || w.pending > 0);
        self.last_prune_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: Key = [1; 16];
    const ANN: Key = [2; 16];

    #[test]
    fn limit_then_lift_with_a_fake_clock() {
        let mut t = Throttle::new(5, 60_000, 100);
        for i in 0..5 {
            assert_eq!(t.check(&BOB, i * 1000), Ok(()));
            t.fail(&BOB, i * 1000);
        }
        assert_eq!(t.check(&BOB, 10_000), Err(50_000));
        assert_eq!(t.check(&ANN, 10_000), Ok(()), "other keys unaffected");
        assert_eq!(t.check(&BOB, 59_999), Err(1));
        assert_eq!(t.check(&BOB, 60_000), Ok(()), "the window closed");
        t.fail(&BOB, 60_001);
        assert_eq!(
            t.check(&BOB, 60_002),
            Ok(()),
            "a new window counts from one"
        );
        t.clear(&BOB);
        assert!(t.is_empty());
    }

    #[test]
    fn pending_attempts_take_room_until_they_end() {
        let mut t = Throttle::new(2, 60_000, 100);
        assert!(t.has_room(&BOB));
        t.begin(&BOB, 0);
        t.begin(&BOB, 0);
        assert!(!t.has_room(&BOB), "two pending could both fail");
        assert_eq!(t.check(&BOB, 1), Ok(()), "but none failed yet");
        t.end(&BOB);
        t.fail(&BOB, 1);
        assert!(!t.has_room(&BOB));
        t.end(&BOB);
        assert!(t.has_room(&BOB), "one failure of two");
        t.fail(&ANN, 1);
        t.begin(&ANN, 1);
        t.end(&ANN);
        assert_eq!(t.len(), 2, "a window with failures stays");
        t.begin(&[3; 16], 2);
        t.end(&[3; 16]);
        assert_eq!(
            t.len(),
            2,
            "an attempt that ended without failing leaves nothing"
        );
        // A window that expires while an attempt is pending keeps counting it.
        t.begin(&BOB, 2);
        assert_eq!(t.check(&BOB, 60_001), Ok(()));
        assert!(t.has_room(&BOB));
        t.begin(&BOB, 60_001);
        assert!(!t.has_room(&BOB));
        assert_eq!(t.check(&ANN, 10 * 60_000), Ok(()));
        assert!(
            t.windows.contains_key(&BOB),
            "a pruned table keeps pending attempts"
        );
    }

    #[test]
    fn expired_windows_are_pruned_and_the_table_is_capped() {
        let mut t = Throttle::new(3, 1_000, 4);
        for k in 0..4u8 {
            t.fail(&[k; 16], 0);
        }
        assert_eq!(t.len(), 4);
        // Full: a fifth key evicts the oldest window instead of being ignored.
        t.fail(&[9; 16], 10);
        assert_eq!(t.len(), 4);
        assert!(t.windows.contains_key(&[9; 16]));
        // Past the window and the sweep period, a check sweeps everything expired.
        assert_eq!(t.check(&ANN, PRUNE_EVERY_MS + 5_000), Ok(()));
        assert!(t.is_empty(), "{}", t.len());
    }
}
