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

    /// Sets the correction added to local time.
    pub fn set_offset_ms(&self, offset: i64) {
        self.offset_ms.store(offset, Ordering::Relaxed);
    }
}
