//! The scheduling of our own threads: the writer's class, the file readers' priority.
//!
//! The writer under `--fsync never`: with no fsync to wait for, it wakes for every few
//! requests queued, and on a busy machine each wake-up preempted a thread in the middle of serving requests (0.18
//! involuntary switches per insert on the runtime's threads). `SCHED_BATCH` keeps the same
//! share of the CPU but does not preempt on wake-up: the writer runs when a core comes free
//! and then finds more requests to write at once. Under `always` and `interval` it is not
//! used: there the writer wakes from an fsync with acknowledgements waiting, and a delayed
//! wake-up measured fewer durable inserts per second (docs/performance.md).
//!
//! The threads reading the segment files run niced (see `engine::readers`).

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

/// Raises the calling thread's nice value by `by` (lowers its CPU priority); whether it
/// took (raising needs no privilege).
pub fn nice_this_thread(by: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid(2) and setpriority(2) take and return integers only; on Linux
        // `PRIO_PROCESS` with a thread id changes that one thread's nice value.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, now.saturating_add(by)) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = by;
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use super::*;

    /// Whether the calling thread runs in `SCHED_BATCH`.
    fn is_batch() -> bool {
        // SAFETY: sched_getscheduler(2) with pid 0 only reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) == libc::SCHED_BATCH }
    }

    /// The nice value of the calling thread.
    pub(crate) fn own_nice() -> i32 {
        // SAFETY: as in `nice_this_thread`; -1 is a valid nice value, so errno is cleared
        // first and read after.
        unsafe {
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
            assert_eq!(*libc::__errno_location(), 0, "getpriority failed");
            nice
        }
    }

    #[test]
    fn only_the_calling_thread_is_niced() {
        let here = own_nice();
        let niced = std::thread::spawn(move || (nice_this_thread(3), own_nice()));
        assert_eq!(niced.join().unwrap(), (true, (here + 3).min(19)));
        assert_eq!(own_nice(), here, "the test's own thread changed too");
    }

    #[test]
    fn only_the_calling_thread_changes_class() {
        let changed = std::thread::spawn(|| (batch_this_thread(), is_batch()));
        assert_eq!(changed.join().unwrap(), (true, true));
        assert!(!is_batch(), "the test's own thread changed too");
        assert!(!std::thread::spawn(is_batch).join().unwrap());
    }
}
