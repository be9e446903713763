//! Brute-force protection: failed attempts counted per key (a username or a client address)
//! in a sliding window. Pure: the caller passes the time, so tests drive it with a fake clock.

use std::collections::{HashMap, VecDeque};

/// Failures per key within a window.
#[derive(Debug)]
pub struct Throttle {
    limit: usize,
    window_ms: i64,
    failures: HashMap<String, VecDeque<i64>>,
}

impl Throttle {
    /// Allows `limit` failures per key within `window_ms`; the next attempt is refused until
    /// the oldest of them leaves the window.
    pub fn new(limit: usize, window_ms: i64) -> Self {
        Throttle {
            limit: limit.max(1),
            window_ms: window_ms.max(1),
            failures: HashMap::new(),
        }
    }

    /// `Err(retry_after_ms)` while `key` has used up its failures.
    pub fn check(&mut self, key: &str, now_ms: i64) -> Result<(), i64> {
        let Some(times) = self.failures.get_mut(key) else {
            return Ok(());
        };
        while times.front().is_some_and(|t| *t <= now_ms - self.window_ms) {
            times.pop_front();
        }
        if times.is_empty() {
            self.failures.remove(key);
            return Ok(());
        }
        if times.len() >= self.limit {
            return Err(times[0] + self.window_ms - now_ms);
        }
        Ok(())
    }

    /// Counts one failure of `key`.
    pub fn fail(&mut self, key: &str, now_ms: i64) {
        // Bound memory under a flood of distinct keys: forget keys whose failures expired.
        if self.failures.len() >= 100_000 {
            let horizon = now_ms - self.window_ms;
            self.failures
                .retain(|_, times| times.back().is_some_and(|t| *t > horizon));
        }
        let times = self.failures.entry(key.to_owned()).or_default();
        times.push_back(now_ms);
        while times.len() > self.limit {
            times.pop_front();
        }
    }

    /// Forgets the failures of `key` (after a success).
    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_then_lift_with_a_fake_clock() {
        let mut t = Throttle::new(5, 60_000);
        for i in 0..5 {
            assert_eq!(t.check("bob", i * 1000), Ok(()));
            t.fail("bob", i * 1000);
        }
        assert_eq!(t.check("bob", 10_000), Err(50_000));
        assert_eq!(t.check("ann", 10_000), Ok(()), "other keys unaffected");
        assert_eq!(t.check("bob", 59_999), Err(1));
        assert_eq!(
            t.check("bob", 60_000),
            Ok(()),
            "the oldest failure left the window"
        );
        t.clear("bob");
        assert_eq!(t.check("bob", 60_001), Ok(()));
    }
}
