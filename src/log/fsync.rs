//! The fsync policy: when appended records become durable, and so when a write may be
//! acknowledged.

use std::time::Duration;

/// When the writer makes appended records durable before acknowledging them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync before every acknowledgement (one per batch: group commit).
    Always,
    /// Acknowledge once written to the OS; fdatasync at most this often.
    Interval(Duration),
    /// Never fsync (tests and throwaway data only): a power loss may lose acknowledged writes.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "{s:?} is not a fsync policy: use always, never or interval:<milliseconds>"
                )),
            },
        }
    }
}
