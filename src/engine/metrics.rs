//! What the writer measures about itself, for `/metrics`. Plain atomics: recording costs
//! nanoseconds on the write path.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// The writer's counters and histograms.
pub struct EngineMetrics {
    /// Seconds per fdatasync of a batch.
    pub fsync_seconds: Histogram,
    /// Records per group-commit batch.
    pub batch_records: Histogram,
    /// Records written.
    pub records: Counter,
    /// Events inserted.
    pub inserts: Counter,
    /// Batches refused because the log could not write.
    pub write_failures: Counter,
    /// Shared log: inserts the fold dropped because the stream ordered them after their
    /// author's revocation or password change (`state::recheck`).
    pub dropped_inserts: Counter,
    /// Shared log: messages the fold skipped because they are no valid record (undecodable,
    /// under the wrong subject, a value `decide` would refuse, or a user record that does not
    /// hold): only something other than a broker node writes those.
    pub rejected_records: Counter,
    /// Compactions `--retain` ran by itself.
    pub retention_compactions: Counter,
    /// …of which failed (each logged).
    pub retention_failures: Counter,
    /// Segment bytes those compactions freed.
    pub retention_bytes_reclaimed: Counter,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            // 50 µs .. ~1.6 s
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 .. 4096
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            records: Counter::default(),
            inserts: Counter::default(),
            write_failures: Counter::default(),
            dropped_inserts: Counter::default(),
            rejected_records: Counter::default(),
            retention_compactions: Counter::default(),
            retention_failures: Counter::default(),
            retention_bytes_reclaimed: Counter::default(),
        }
    }
}
