//! The free-space floor: below `--min_free_bytes` on the log's filesystem, the writes that
//! grow the log without bound (inserts, new users) are refused before they are tried, so the
//! disk never fills to the point where an fsync fails mid-batch, and the records that undo
//! things (revocations, password changes) still fit. The check is a `statvfs`, made at most
//! once a second whatever the request rate; writes resume by themselves once space is freed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// How often the filesystem is asked, in milliseconds.
const CHECK_EVERY_MS: i64 = 1_000;

/// The log filesystem's free space against a floor.
#[derive(Debug)]
pub struct FreeSpace {
    dir: PathBuf,
    floor: u64,
    low: AtomicBool,
    free: AtomicU64,
    checked_ms: AtomicI64,
}

impl FreeSpace {
    /// Watches the filesystem of `dir` against `floor` bytes (0: never low).
    pub fn new(dir: PathBuf, floor: u64) -> Self {
        FreeSpace {
            dir,
            floor,
            low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            checked_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// `Some(free bytes)` while the free space is below the floor.
    pub fn low(&self) -> Option<u64> {
        if self.floor == 0 {
            return None;
        }
        // Coarse: this runs on every insert, and its unit is a second.
        let now = crate::coarse_clock::unix_ms();
        let last = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= CHECK_EVERY_MS
            && self
                .checked_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // An unreadable filesystem is not "full": the write itself will report the fault.
            let free = available(&self.dir).unwrap_or(u64::MAX);
            self.free.store(free, Ordering::Relaxed);
            self.low.store(free < self.floor, Ordering::Release);
        }
        self.low
            .load(Ordering::Acquire)
            .then(|| self.free.load(Ordering::Relaxed))
    }

    /// The floor, in bytes.
    pub fn floor(&self) -> u64 {
        self.floor
    }
}

/// Bytes available to this process on the filesystem of `dir`.
fn available(dir: &std::path::Path) -> Option<u64> {
    #[cfg(feature = "fault-injection")]
    if let Some(free) = super::fault::free_bytes() {
        return Some(free);
    }
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated C string that outlives the call, and `stat` points to
    // writable memory the size of a `statvfs`, which the call fills entirely when it returns 0;
    // it is read only in that case.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_filesystem_has_some_space_and_a_zero_floor_is_never_low() {
        let dir = std::env::temp_dir();
        assert!(available(&dir).is_some_and(|free| free > 0));
        assert_eq!(FreeSpace::new(dir.clone(), 0).low(), None);
        assert!(FreeSpace::new(dir, u64::MAX).low().is_some());
    }
}
