//! Quotas an ordinary account could otherwise exhaust: inserts per second per user
//! (`--max_inserts_per_sec`, a token bucket) and open streams per user
//! (`--max_sse_per_user`, reserved atomically so concurrent connects cannot overshoot).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use poem::http::StatusCode;

use super::error::ApiError;

/// Users tracked by the insert buckets before full buckets are swept.
const MAX_BUCKETS: usize = 100_000;

/// Per-user token buckets of inserts.
#[derive(Debug)]
pub struct InsertRate {
    /// Tokens per second; 0 = no limit.
    rate: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl InsertRate {
    /// `rate` inserts per second per user with a burst of twice that; 0 = unlimited.
    pub fn new(rate: u32) -> Self {
        InsertRate {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes one insert from `username`'s bucket at `now_ms`, or 429 with `retry-after`.
    pub fn take(&self, username: &str, now_ms: i64) -> Result<(), ApiError> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate);
        let burst = rate * 2.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(username) {
            // A bucket that has refilled says nothing a fresh one would not.
            buckets.retain(|_, b| b.tokens + (now_ms - b.at_ms) as f64 / 1000.0 * rate < burst);
        }
        // The key is allocated once per user, not on every insert.
        if !buckets.contains_key(username) {
            buckets.insert(
                username.to_owned(),
                Bucket {
                    tokens: burst,
                    at_ms: now_ms,
                },
            );
        }
        let bucket = buckets.get_mut(username).expect("inserted above");
        let elapsed = (now_ms - bucket.at_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_s = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
        Err(ApiError {
            retry_after: Some(wait_s),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many inserts: at most {} per second per user (--max_inserts_per_sec); retry in {wait_s} s",
                    self.rate
                ),
            )
        })
    }
}

/// Open streams per holder, reserved before a stream starts and given back when it ends.
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One reserved stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl StreamSlots {
    /// A slot for `key` if it holds fewer than `max` — checked and taken in one step.
    pub fn reserve(&self, key: &str, max: usize) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.to_owned()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            key: key.to_owned(),
            open: Arc::clone(&self.open),
        })
    }

    /// Streams open under `key`.
    pub fn open(&self, key: &str) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_of_twice_the_rate_then_the_rate() {
        let quota = InsertRate::new(5);
        for _ in 0..10 {
            assert!(quota.take("ann", 0).is_ok());
        }
        let refused = quota.take("ann", 0).unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.retry_after),
            (429, Some(1))
        );
        assert!(refused.message.contains("--max_inserts_per_sec"));
        assert!(quota.take("ben", 0).is_ok(), "per user");
        assert!(quota.take("ann", 200).is_ok(), "one token back after 1/5 s");
        assert!(quota.take("ann", 200).is_err());
        assert!(InsertRate::new(0).take("ann", 0).is_ok());
    }

    #[test]
    fn stream_slots_are_reserved_and_given_back() {
        let slots = StreamSlots::default();
        let a = slots.reserve("u", 2).unwrap();
        let _b = slots.reserve("u", 2).unwrap();
        assert!(slots.reserve("u", 2).is_none());
        drop(a);
        assert_eq!(slots.open("u"), 1);
        assert!(slots.reserve("u", 2).is_some());
        assert!(slots.reserve("v", 0).is_none());
        assert_eq!(slots.open("v"), 0);
    }
}
