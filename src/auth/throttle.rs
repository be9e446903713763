//! Brute-force protection: failed attempts counted per key in a window that opens at the
//! key's first failure. Pure: the caller passes the time, so tests drive it with a fake clock.
//!
//! Keys are fixed-size digests made by the caller (a username, an address, a pair of both):
//! an attacker's 1 MB username costs 16 bytes here. Memory is bounded twice: expired entries
//! are pruned every [`PRUNE_EVERY_MS`], and a full table evicts its oldest entry.

use std::collections::HashMap;

/// A throttle key: a digest, never the raw text.
pub type Key = [u8; 16];

/// How often expired entries are swept, in milliseconds of the caller's clock.
pub const PRUNE_EVERY_MS: i64 = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    first_ms: i64,
    failures: u32,
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
        match self.windows.get(key) {
            Some(w) if w.first_ms + self.window_ms <= now_ms => {
                self.windows.remove(key);
                Ok(())
            }
            Some(w) if w.failures >= self.limit => Err(w.first_ms + self.window_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Counts one failure of `key`.
    pub fn fail(&mut self, key: &Key, now_ms: i64) {
        self.prune_if_due(now_ms);
        if let Some(w) = self.windows.get_mut(key) {
            if w.first_ms + self.window_ms <= now_ms {
                *w = Window {
                    first_ms: now_ms,
                    failures: 1,
                };
            } else {
                w.failures = w.failures.saturating_add(1);
            }
            return;
        }
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
        self.windows.insert(
            *key,
            Window {
                first_ms: now_ms,
                failures: 1,
            },
        );
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
        self.windows.retain(|_, w| w.first_ms + window > now_ms);
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
