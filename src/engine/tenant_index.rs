//! The per-tenant index's bookkeeping: which cursors the index in the checkpoint store
//! covers. Checkpoints (written off the writer thread) move it; subscribers catching up read
//! it to know whether the index can answer "this tenant's events after N".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::checkpoint::Checkpoints;
use crate::cursor::Cursor;

/// What the index in the checkpoint store covers: every tenant event in `(base, upto]`.
pub struct TenantIndex {
    store: Option<Arc<Checkpoints>>,
    upto: AtomicU64,
    /// `u64::MAX` until a first checkpoint makes the index usable.
    base: AtomicU64,
    /// The cursor of a checkpoint whose save failed (0: none pending).
    failure: AtomicU64,
}

impl TenantIndex {
    /// The index of `store` covering `(base, upto]` (`base` = `u64::MAX`: not usable yet).
    pub(super) fn new(store: Option<Arc<Checkpoints>>, base: Cursor, upto: Cursor) -> Self {
        TenantIndex {
            store,
            upto: AtomicU64::new(upto),
            base: AtomicU64::new(base),
            failure: AtomicU64::new(0),
        }
    }

    /// The store and the range `(base, upto]` it covers, if usable.
    pub(super) fn usable(&self) -> Option<(&Checkpoints, Cursor, Cursor)> {
        let store = self.store.as_deref()?;
        let base = self.base.load(Ordering::Acquire);
        let upto = self.upto.load(Ordering::Acquire);
        (base < upto).then_some((store, base, upto))
    }

    /// The checkpoint store, if the engine has one.
    pub(super) fn store(&self) -> Option<&Checkpoints> {
        self.store.as_deref()
    }

    /// A checkpoint save failed: its events never reached the index, which must start over
    /// above `upto`. The writer picks this up before its next checkpoint.
    pub(super) fn failed(&self, upto: Cursor) {
        self.failure.fetch_max(upto, Ordering::AcqRel);
    }

    /// The failure to pick up, once.
    pub(super) fn take_failure(&self) -> Option<Cursor> {
        let failed = self.failure.swap(0, Ordering::AcqRel);
        (failed > 0).then_some(failed)
    }

    /// After a checkpoint: the index covers `(base, upto]`.
    pub(super) fn stored(&self, base: Cursor, upto: Cursor) {
        self.base.store(base, Ordering::Release);
        self.upto.store(upto, Ordering::Release);
    }
}
