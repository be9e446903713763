//! The server's clock: local time plus an offset that NTP may learn (never blocking a request).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Local time corrected by a shared offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let local = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        local + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Seconds since the Unix epoch.
    pub fn now_s(&self) -> u64 {
        (self.now_ms() / 1000).max(0) as u64
    }

    /// Milliseconds since the Unix epoch from the kernel's tick-granular clock
    /// ([`crate::coarse_clock`]): up to a tick behind [`Clock::now_ms`], for what every
    /// insert reads (its id's time, the insert quota).
    pub fn now_ms_coarse(&self) -> i64 {
        crate::coarse_clock::unix_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Seconds since the Unix epoch, as [`Clock::now_ms_coarse`]: for checks such as a
    /// token's expiry on every request.
    pub fn now_s_coarse(&self) -> u64 {
        (self.now_ms_coarse() / 1000).max(0) as u64
    }

    /// Sets the correction added to local time.
    pub fn set_offset_ms(&self, offset: i64) {
        self.offset_ms.store(offset, Ordering::Relaxed);
    }
}
