//! [`Published`]: the one place a batch becomes visible.
//!
//! Everything a request or a subscriber reads of the engine lives here — the published state
//! (the log folded up to the head), the per-tenant fan-out, the committed head that waiting
//! requests watch, the per-user credential watches that end streams, and (shared log) the
//! cursors the fold dropped. The writer thread owns the log and an `Arc` of this; it never
//! reaches back into the engine. A batch becomes visible in one call, `Published::publish`,
//! and a head that moves without records (a shared log's dropped record) in one call,
//! `Published::advance`: the state's cursor, the fan-out's and the committed watch move
//! together.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use tokio::sync::watch;

use super::fanout::Wakeups;

use super::credentials::CredentialWatch;
use super::fanout::Fanout;
use super::metrics::EngineMetrics;
use crate::cursor::Cursor;
use crate::state::{Record, Rejection, State, evolve};

/// Dropped cursors remembered for the request that published them.
const DROPPED_REMEMBERED: usize = 1024;

/// The visible side of the engine.
pub struct Published {
    // std RwLock, not tokio's: never held across an await, and the writer is a plain thread.
    state: RwLock<State>,
    fanout: Fanout,
    // A watch: any number of requests wait for "committed up to N" without polling.
    committed: watch::Sender<Cursor>,
    credentials: CredentialWatch,
    /// Shared log: cursors of recent records the fold dropped, and why (`None`: no valid
    /// record), so the node that published one can refuse its request.
    dropped: Mutex<VecDeque<(Cursor, Option<Rejection>)>>,
    metrics: EngineMetrics,
    /// The writer's last write, fsync or probe of the log failed: writes are refused until
    /// one succeeds (`GET /ready` says so).
    write_fault: AtomicBool,
}

impl Published {
    /// The visible state at start: `state`, its cursor the head.
    pub(super) fn new(state: State, fanout: Fanout) -> Self {
        let head = state.cursor;
        Published {
            state: RwLock::new(state),
            fanout,
            committed: watch::Sender::new(head),
            credentials: CredentialWatch::default(),
            dropped: Mutex::new(VecDeque::new()),
            metrics: EngineMetrics::default(),
            write_fault: AtomicBool::new(false),
        }
    }

    /// Makes durable records visible, in this order: the state (with the credential watches
    /// of users whose epoch moved), the tenant feeds' rings, then the committed head. The
    /// subscribers are woken by the caller with the returned [`Wakeups`], once it has answered
    /// the requests (so a thousand subscribers do not queue ahead of the acknowledgements).
    pub(super) fn publish(&self, records: &[&Record]) -> Wakeups {
        let Some(last) = records.last() else {
            return Wakeups::none();
        };
        let mut invalidated = Vec::new();
        {
            let mut state = self.state.write().expect("published state");
            for record in records {
                evolve(&mut state, record);
                let Some(username) = record.username() else {
                    continue;
                };
                // A record about a user who is not there after it deleted them.
                if state
                    .user(username)
                    .is_none_or(|user| user.credential_epoch == record.cursor)
                {
                    invalidated.push((username.to_owned(), record.cursor));
                }
            }
        }
        for (username, epoch) in invalidated {
            self.credentials.invalidate(&username, epoch);
        }
        let wakeups = self.fanout.stage(records.iter().copied());
        self.committed.send_replace(last.cursor);
        wakeups
    }

    /// Moves the head to `cursor` without records: the shared log's dropped records, which
    /// no projection, feed or subscriber ever has but whose cursors are used up.
    pub(super) fn advance(&self, cursor: Cursor) {
        {
            let mut state = self.state.write().expect("published state");
            state.cursor = state.cursor.max(cursor);
        }
        self.fanout.advance(cursor);
        self.committed.send_if_modified(|head| {
            let moved = *head < cursor;
            *head = (*head).max(cursor);
            moved
        });
    }

    /// A copy of the state, for a checkpoint.
    pub(super) fn state(&self) -> State {
        self.state.read().expect("published state").clone()
    }

    /// The published state, read-locked: the writer decides against it (with its batch's
    /// overlay) and must drop it before it publishes.
    pub(super) fn read_guard(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("published state")
    }

    /// Runs `f` on a consistent view of the published state.
    pub(super) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().expect("published state"))
    }

    /// The per-tenant fan-out.
    pub(super) fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// A receiver of the committed head.
    pub(super) fn committed(&self) -> watch::Receiver<Cursor> {
        self.committed.subscribe()
    }

    /// The committed head now.
    pub(super) fn head(&self) -> Cursor {
        *self.committed.borrow()
    }

    /// The per-user credential watches.
    pub(super) fn credentials(&self) -> &CredentialWatch {
        &self.credentials
    }

    /// The writer's measurements.
    pub(super) fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// The writer notes whether its latest write (or fsync, or probe) of the log worked.
    pub(super) fn note_write(&self, worked: bool) {
        self.write_fault.store(!worked, Ordering::Release);
    }

    /// Whether the writer's latest write of the log failed.
    pub(super) fn write_fault(&self) -> bool {
        self.write_fault.load(Ordering::Acquire)
    }

    /// Shared log: the fold dropped the record at `cursor` because `recheck` refused it
    /// (`why`), or as no valid record (`None`).
    pub(super) fn note_dropped(&self, cursor: Cursor, why: Option<Rejection>) {
        let mut dropped = self.dropped.lock().expect("dropped cursors");
        // Only a request waiting right now asks; racing inserts are rare, so a short memory
        // is plenty.
        if dropped.len() == DROPPED_REMEMBERED {
            dropped.pop_front();
        }
        dropped.push_back((cursor, why));
    }

    /// Shared log: whether the fold dropped the record at `cursor`, and why (`Some(None)`:
    /// as no valid record).
    pub(super) fn dropped(&self, cursor: Cursor) -> Option<Option<Rejection>> {
        self.dropped
            .lock()
            .expect("dropped cursors")
            .iter()
            .find(|(at, _)| *at == cursor)
            .map(|(_, why)| why.clone())
    }
}
