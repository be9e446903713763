//! Fault injection for tests (cargo feature `fault-injection`, never in a release build): the
//! one mechanism for every failpoint.
//!
//! The file named by `BROKER_FAULT_FILE` holds the name of the fault the writer suffers at
//! its next writes, until the file is emptied: `short_write`, `eio`, `enospc`,
//! `fsync_error`, or `crash_after_write` (abort between the write and the fsync); or
//! `abort_at:<point>` to abort at a named point (`compact:before_rename`, `log:after_flush`: a
//! batch is durable and nobody was answered yet, …). The file named
//! by `BROKER_FAULT_FREE_BYTES_FILE` holds the free bytes the log's disk pretends to have.
//! Failpoints that fail an operation instead of the process (`nats:create_consumer`: creating a
//! consumer hangs; `nats:consumer_silent`: a consumer delivers nothing; `checkpoint:save`: a
//! checkpoint's save fails after 0.8 s) are switched on by
//! `fail_at:<point>` in that file, or by [`switch`] in a test that runs the engine in-process.

/// A disk fault the writer can be made to suffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// Half the batch reaches the file, then the write fails.
    ShortWrite,
    /// The write fails with EIO.
    Eio,
    /// The write fails with ENOSPC.
    NoSpace,
    /// The write succeeds, the fsync fails.
    FsyncError,
    /// The write succeeds, then the process dies before the fsync.
    CrashAfterWrite,
}

/// The fault in force now, if any.
pub fn current() -> Option<DiskFault> {
    let path = std::env::var_os("BROKER_FAULT_FILE")?;
    match std::fs::read_to_string(path).ok()?.trim() {
        "short_write" => Some(DiskFault::ShortWrite),
        "eio" => Some(DiskFault::Eio),
        "enospc" => Some(DiskFault::NoSpace),
        "fsync_error" => Some(DiskFault::FsyncError),
        "crash_after_write" => Some(DiskFault::CrashAfterWrite),
        _ => None,
    }
}

/// Free bytes the log's filesystem pretends to have: the number in the file named by
/// `BROKER_FAULT_FREE_BYTES_FILE`, while it holds one.
pub fn free_bytes() -> Option<u64> {
    let path = std::env::var_os("BROKER_FAULT_FREE_BYTES_FILE")?;
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Aborts the process, as a `kill -9` would, when the fault file says `abort_at:<point>`.
pub fn abort_at(point: &str) {
    let Some(path) = std::env::var_os("BROKER_FAULT_FILE") else {
        return;
    };
    let named = std::fs::read_to_string(path).unwrap_or_default();
    if named.trim().strip_prefix("abort_at:") == Some(point) {
        eprintln!("failpoint {point}: aborting");
        std::process::abort();
    }
}

/// Failpoints switched on in this process by [`switch`].
static SWITCHED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Switches the failpoint `point` on or off for every engine in this process.
pub fn switch(point: &str, on: bool) {
    let mut switched = SWITCHED.lock().unwrap_or_else(|e| e.into_inner());
    switched.retain(|p| p != point);
    if on {
        switched.push(point.to_owned());
    }
}

/// Whether the failpoint `point` is on: switched on in this process, or named by the fault
/// file as `fail_at:<point>`.
pub fn fails_at(point: &str) -> bool {
    let switched = SWITCHED.lock().unwrap_or_else(|e| e.into_inner());
    if switched.iter().any(|p| p == point) {
        return true;
    }
    let Some(path) = std::env::var_os("BROKER_FAULT_FILE") else {
        return false;
    };
    let named = std::fs::read_to_string(path).unwrap_or_default();
    named.trim().strip_prefix("fail_at:") == Some(point)
}
