//! The writer thread's scheduling class under `--fsync never`.
//!
//! Why: with no fsync to wait for, the writer wakes for every few requests queued, and on a
//! busy machine each wake-up preempted a thread in the middle of serving requests (0.18
//! involuntary switches per insert on the runtime's threads). `SCHED_BATCH` keeps the same
//! share of the CPU but does not preempt on wake-up: the writer runs when a core comes free
//! and then finds more requests to write at once. Under `always` and `interval` it is not
//! used: there the writer wakes from an fsync with acknowledgements waiting, and a delayed
//! wake-up measured fewer durable inserts per second (docs/performance.md).

/// Puts the calling thread in `SCHED_BATCH`; whether it took (no privilege is needed; a
/// system that refuses leaves the thread as it was).
pub fn batch_this_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler(2) with pid 0 changes only the calling thread's policy;
        // `param` is an initialised sched_param that outlives the call, and SCHED_BATCH takes
        // priority 0. The call reads nothing else and writes no memory of ours.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Whether the calling thread runs in `SCHED_BATCH`.
    fn is_batch() -> bool {
        // SAFETY: sched_getscheduler(2) with pid 0 only reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) == libc::SCHED_BATCH }
    }

    #[test]
    fn only_the_calling_thread_changes_class() {
        let changed = std::thread::spawn(|| (batch_this_thread(), is_batch()));
        assert_eq!(changed.join().unwrap(), (true, true));
        assert!(!is_batch(), "the test's own thread changed too");
        assert!(!std::thread::spawn(is_batch).join().unwrap());
    }
}
