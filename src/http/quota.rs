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

/// History pages one holder (a user, or the admin) may have in flight: built, or being sent.
pub const PAGES_PER_HOLDER: usize = 4;

/// All history pages in flight together may hold this many bytes (256 MiB): a backstop
/// for many holders at once; one holder is bounded by [`PAGES_PER_HOLDER`] first.
pub const PAGE_BUDGET_BYTES: usize = 256 * 1024 * 1024;

/// How long a built page waits for room in [`PAGE_BUDGET_BYTES`] before a 503.
pub const PAGE_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What bounds the memory of `GET /events` answers: each page is built whole (up to 4 MiB
/// and one event) and held until its client has taken it, so a client that asks and never
/// reads pinned a page per request — about 1 GB per HTTP/2 connection of one user (an
/// attack review). Pages count per holder from before they are built, and their bytes
/// against one budget once built, until their last byte is handed to the connection.
/// (Pages being built are bounded by the engine's reading slots.)
#[derive(Debug)]
pub struct PageBudget {
    holders: StreamSlots,
    /// Permits are KiB.
    bytes: Arc<tokio::sync::Semaphore>,
}

impl Default for PageBudget {
    fn default() -> Self {
        PageBudget {
            holders: StreamSlots::default(),
            bytes: Arc::new(tokio::sync::Semaphore::new(PAGE_BUDGET_BYTES / 1024)),
        }
    }
}

/// One page's place among its holder's, and once built its bytes' share of the budget;
/// dropping it gives both back.
#[derive(Debug)]
pub struct PageShare {
    _slot: StreamSlot,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl PageBudget {
    /// A place for one more page of `holder`: 429 past [`PAGES_PER_HOLDER`].
    pub fn reserve(&self, holder: &str) -> Result<PageShare, ApiError> {
        let Some(slot) = self.holders.reserve(holder, PAGES_PER_HOLDER) else {
            return Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    poem::http::StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "already {PAGES_PER_HOLDER} history pages in flight for this caller; read them before asking for more"
                    ),
                )
            });
        };
        Ok(PageShare {
            _slot: slot,
            permit: None,
        })
    }

    /// Counts a built page of `bytes` against the budget: 503 when it has no room within
    /// [`PAGE_BUDGET_WAIT`].
    pub async fn admit(&self, share: &mut PageShare, bytes: usize) -> Result<(), ApiError> {
        let kib = bytes.div_ceil(1024).clamp(1, PAGE_BUDGET_BYTES / 1024) as u32;
        let permit = tokio::time::timeout(
            PAGE_BUDGET_WAIT,
            Arc::clone(&self.bytes).acquire_many_owned(kib),
        )
        .await;
        match permit {
            Ok(Ok(permit)) => {
                share.permit = Some(permit);
                Ok(())
            }
            _ => Err(ApiError::busy(
                "history pages in flight fill the server's budget; retry shortly",
                1,
            )),
        }
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

    #[tokio::test]
    async fn page_shares_count_per_holder_and_bytes_against_one_budget() {
        let budget = PageBudget::default();
        let mut held = Vec::new();
        for _ in 0..PAGES_PER_HOLDER {
            held.push(budget.reserve("ann").unwrap());
        }
        let refused = budget.reserve("ann").unwrap_err();
        assert_eq!(refused.status, 429, "{refused:?}");
        // Another holder is not held back by ann's pages; ann is once one ends.
        let mut bob = budget.reserve("bob").unwrap();
        drop(held.pop());
        held.push(budget.reserve("ann").unwrap());
        // Bytes: 100 MiB and 150 MiB fit the 256 MiB budget; 10 MiB more waits, then 503.
        budget.admit(&mut bob, 100 << 20).await.unwrap();
        let mut carol = budget.reserve("carol").unwrap();
        budget.admit(&mut carol, 150 << 20).await.unwrap();
        let mut dave = budget.reserve("dave").unwrap();
        tokio::time::pause();
        let busy = budget.admit(&mut dave, 10 << 20).await.unwrap_err();
        assert_eq!(busy.status, 503, "{busy:?}");
        tokio::time::resume();
        // Bob's page sent: room again.
        drop(bob);
        budget.admit(&mut dave, 10 << 20).await.unwrap();
        drop((carol, dave, held));
        assert_eq!(
            budget.bytes.available_permits(),
            PAGE_BUDGET_BYTES / 1024,
            "every share given back"
        );
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
