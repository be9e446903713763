//! The kernel's tick-granular clock (`CLOCK_REALTIME_COARSE`), for what every request reads
//! but needs no finer than a tick: a JWT's expiry, an insert's id time (a UUIDv7's time may
//! lag, RFC 9562 §6.1) and its quota, the free-space check's pace. Latency metrics, read
//! deadlines and the events' own times stay on the precise clock.
//!
//! Why: a precise reading goes through the TSC, ~30 ns here; the coarse one reads the time
//! the kernel noted at its last tick, ~6 ns, and lags by at most that tick (1–10 ms). An
//! insert read the precise clock about a dozen times (hyper's date cache, tokio's timer,
//! ours), together 3–4 % of its CPU (docs/performance.md).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as of the kernel's last tick.
pub fn unix_ms() -> i64 {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime(2) writes one `timespec` through the pointer, which points to
        // a live, exclusively borrowed local of that type; it reads no other memory of ours.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0 {
            // `time_t` and `c_long` are 32 bits on some Linux targets.
            #[allow(clippy::useless_conversion)]
            return i64::from(now.tv_sec) * 1000 + i64::from(now.tv_nsec) / 1_000_000;
        }
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_the_precise_clock_by_at_most_a_tick() {
        for _ in 0..1000 {
            let before = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let coarse = unix_ms();
            let after = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            // A kernel tick is at most 10 ms (HZ=100); 50 leaves room for a descheduled test.
            assert!(coarse <= after, "ahead: {coarse} > {after}");
            assert!(before - coarse <= 50, "lags by {} ms", before - coarse);
        }
    }
}
