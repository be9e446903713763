//! The writer thread: the only place state changes.
//!
//! Group commit: the thread takes every command that queued up while the previous batch
//! was being written and fsynced, decides them in order against the published state with
//! what the batch decided so far over it (`state::Overlay`),
//! appends their records, and makes the whole batch durable with one write and one fsync.
//! On several nodes (`--log nats://…`) it decides nothing: it folds what the shared stream
//! delivers into this node's copy (`writer/fold.rs`).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::published::Published;
use super::tenant_index::TenantIndex;
use super::{EngineError, FsyncPolicy, Msg, Stamp};
use crate::log::LogWriter;
use crate::state::{Decision, Overlay, Record, decide, evolve_into};

mod fold;

/// The most commands decided and written as one batch.
const MAX_BATCH: usize = 4096;

/// Room for this many commands is kept between batches.
const KEPT_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Vec<Record>, EngineError>>;

/// Event data written since the last checkpoint that brings one on (32 MiB), whatever the
/// record count and the time: what the per-tenant index does not cover yet is read whole by
/// every tenant's history page, so another tenant writing large events at 25 MB/s made a
/// five-event page take 940 ms after 24 s (an attack review); now it reads at most this.
pub const INDEX_EVERY_BYTES: u64 = 32 * 1024 * 1024;

/// When and where the writer stores checkpoints.
pub(super) struct CheckpointPolicy {
    pub(super) store: std::sync::Arc<super::checkpoint::Checkpoints>,
    pub(super) every_records: u64,
    pub(super) every: std::time::Duration,
    /// Tenant events published since the last checkpoint, for its index.
    pub(super) tenant_events: super::checkpoint::TenantEvents,
    /// The index is complete above this cursor.
    pub(super) index_base: crate::log::Cursor,
    /// Records the start replayed beyond the last checkpoint.
    pub(super) replayed: u64,
}

/// What the writer shares with the engine's readers: it publishes into them, and never holds
/// the engine itself.
pub(super) struct Shares {
    /// Where each batch becomes visible.
    pub(super) published: Arc<Published>,
    /// The checkpoint store's index bookkeeping, moved by checkpoints.
    pub(super) index: Arc<TenantIndex>,
    /// A reader of the log, for the segment list a checkpoint records.
    pub(super) reader: crate::log::LogReader,
    /// Several nodes share the log: the writer only folds what the stream delivers
    /// (`fold.rs`).
    pub(super) shared: bool,
    /// What a tenant's latest events may hold: the fold of a shared stream checks it.
    pub(super) tenant_limits: crate::state::TenantLimits,
}

pub(super) struct Writer {
    shares: Shares,
    log: LogWriter,
    /// What the batch decided so far over the published state: runs ahead of the disk within
    /// a batch, dropped once the batch is published or its write failed.
    overlay: Overlay,
    fsync: FsyncPolicy,
    clock: Stamp,
    rx: mpsc::Receiver<Msg>,
    /// Written but not yet fsynced (interval policy).
    dirty: bool,
    last_sync: Instant,
    checkpoints: Option<CheckpointPolicy>,
    since_checkpoint: u64,
    /// Bytes of event data written since the last checkpoint (see [`INDEX_EVERY_BYTES`]).
    since_checkpoint_bytes: u64,
    last_checkpoint: Instant,
    /// Records and time since the last checkpoint that stored the state (a large state's
    /// snapshot is stored less often than the tenant index, see `checkpoint::snapshot_due`).
    since_snapshot: u64,
    last_snapshot: Instant,
    /// Where each record is encoded before it is appended, reused.
    scratch: rkyv::util::AlignedVec,
    /// A checkpoint being written in the background, if any.
    checkpointing: Option<std::thread::JoinHandle<()>>,
    /// The first checkpoint after the start frees a clone of the whole replayed state: that
    /// one returns the freed heap to the system (`engine::heap`). Later ones do not, so that
    /// no arena lock is taken away from requests while the server serves.
    trim_after_checkpoint: bool,
    /// The fold's lines about records it passes over: anyone who can publish to a shared
    /// stream causes them (20,000 junk messages wrote 20,000 lines, an attack review).
    fold_lines: crate::log_budget::LogBudget,
}

/// Lines a second the fold writes about records it passes over, at most.
const FOLD_LINES_PER_SECOND: u32 = 20;

impl Writer {
    pub(super) fn new(
        shares: Shares,
        log: LogWriter,
        fsync: FsyncPolicy,
        clock: Stamp,
        rx: mpsc::Receiver<Msg>,
        checkpoints: Option<CheckpointPolicy>,
    ) -> Self {
        // Records replayed at start count: a start that replayed a long tail stores a
        // checkpoint at once, so the next start does not replay it again.
        let since_checkpoint = checkpoints.as_ref().map_or(0, |c| c.replayed);
        let overlay = Overlay::new(shares.published.read(|state| state.cursor));
        Writer {
            shares,
            log,
            overlay,
            fsync,
            clock,
            rx,
            dirty: false,
            last_sync: Instant::now(),
            checkpoints,
            since_checkpoint,
            since_checkpoint_bytes: 0,
            last_checkpoint: Instant::now(),
            since_snapshot: since_checkpoint,
            last_snapshot: Instant::now(),
            checkpointing: None,
            scratch: rkyv::util::AlignedVec::with_capacity(1024),
            trim_after_checkpoint: true,
            fold_lines: crate::log_budget::LogBudget::new(FOLD_LINES_PER_SECOND),
        }
    }

    /// Stores a checkpoint in the background when enough records or time went by. The state
    /// is cloned here (between batches, the published state is all that was decided); encoding
    /// and the fsync happen on another thread, so the writer never waits for them.
    ///
    /// Every checkpoint stores the tenant index; the state goes in only when its own snapshot
    /// is due: at once for a small state, after more records for a large one
    /// ([`super::checkpoint::snapshot_due`]), after `--checkpoint_secs`, and at a clean stop.
    /// Its cost grows with the state, and stored every `--checkpoint_records` a state of
    /// 100,000 users in 10,000 tenants took 13–19 % of the inserts (`broker-bench tenants`).
    fn maybe_checkpoint(&mut self, force: bool) {
        let Some(policy) = &mut self.checkpoints else {
            return;
        };
        let index_due = self.since_checkpoint >= policy.every_records
            || self.since_checkpoint_bytes >= INDEX_EVERY_BYTES
            || (self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= policy.every);
        let state_due = self.since_snapshot > 0
            && (force
                || self.since_snapshot
                    >= super::checkpoint::snapshot_due(
                        policy.store.snapshot_len(),
                        policy.every_records,
                    )
                || self.last_snapshot.elapsed() >= policy.every);
        if !(index_due || state_due) {
            return;
        }
        if self
            .checkpointing
            .as_ref()
            .is_some_and(|t| !t.is_finished())
        {
            if !force {
                return;
            }
            if let Some(running) = self.checkpointing.take() {
                let _ = running.join();
            }
        }
        let (state, upto, segments) = if state_due {
            let state = self.shares.published.state();
            let upto = state.cursor;
            (Some(state), upto, self.shares.reader.segments())
        } else {
            let upto = self.shares.published.read(|state| state.cursor);
            (None, upto, Vec::new())
        };
        // A save that failed since the last batch (it runs on its own thread) is picked up
        // here, before this one's range is set: picked up only when a batch was published,
        // a save after it claimed the failed one's events, which the index never got.
        if let Some(failed) = self.shares.index.take_failure() {
            policy.index_base = policy.index_base.max(failed);
        }
        let store = std::sync::Arc::clone(&policy.store);
        let events = std::mem::take(&mut policy.tenant_events);
        let base = policy.index_base;
        let index = Arc::clone(&self.shares.index);
        let trim = state_due && std::mem::take(&mut self.trim_after_checkpoint);
        let save = move || {
            let infos = segments
                .into_iter()
                .filter_map(|s| {
                    std::fs::metadata(&s.path)
                        .ok()
                        .map(|m| super::checkpoint::SegmentInfo {
                            first: s.first,
                            len: m.len(),
                            index: s.index.entries().to_vec(),
                        })
                })
                .collect();
            match store.save(state, infos, &events, base) {
                Ok(()) => {
                    index.stored(base, upto);
                    tracing::debug!(cursor = upto, with_state = state_due, "checkpoint stored");
                    if trim {
                        super::heap::release_freed();
                    }
                }
                Err(why) => {
                    // Its events never reached the index: the next checkpoint's index
                    // starts above this one.
                    index.failed(upto);
                    tracing::warn!(%why, "checkpoint not stored (the log is unaffected)");
                }
            }
        };
        if force {
            save();
        } else {
            self.checkpointing = std::thread::Builder::new()
                .name("broker-checkpoint".into())
                .spawn(save)
                .ok();
        }
        self.since_checkpoint = 0;
        self.since_checkpoint_bytes = 0;
        self.last_checkpoint = Instant::now();
        if state_due {
            self.since_snapshot = 0;
            self.last_snapshot = Instant::now();
        }
    }

    pub(super) fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        let batch = self.fsync == FsyncPolicy::Never;
        // The thread says when its class is set, so that it is before the first request
        // (a test that read the class right after the start raced the thread once).
        let (classed, settled) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("broker-writer".into())
            .spawn(move || {
                if batch && !super::sched::batch_this_thread() {
                    tracing::debug!("the writer stays in the default scheduling class");
                }
                let _ = classed.send(());
                self.run()
            })?;
        let _ = settled.recv();
        Ok(handle)
    }

    fn run(mut self) {
        self.maybe_checkpoint(false);
        let mut stopping: Option<oneshot::Sender<()>> = None;
        // Kept between batches, emptied by each: grown afresh, it was reallocated (and its
        // commands copied) several times per batch.
        let mut batch = Vec::new();
        while stopping.is_none() {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut folds = Vec::new();
            let mut sync_due = false;
            let mut probes = Vec::new();
            let mut closes = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Submit { command, reply } => batch.push((command, reply)),
                    Msg::Fold { entries, reply } => folds.push((entries, reply)),
                    Msg::Sync => sync_due = true,
                    Msg::Probe(reply) => probes.push(reply),
                    Msg::CloseSegment(reply) => closes.push(reply),
                    Msg::Shutdown(done) => stopping = Some(done),
                }
                next = if batch.len() < MAX_BATCH && stopping.is_none() {
                    self.rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.write_batch(&mut batch);
            // A burst's room (up to MAX_BATCH commands) is not kept for good.
            batch.shrink_to(KEPT_BATCH);
            for (entries, reply) in folds {
                self.fold(entries, reply);
            }
            if sync_due && self.dirty {
                self.sync();
            }
            if !probes.is_empty() {
                self.probe(probes);
            }
            if !closes.is_empty() {
                self.close_segment(closes);
            }
            self.maybe_checkpoint(false);
        }
        // Refuse whatever is still queued: those requests were never acknowledged.
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Submit { reply, .. } | Msg::Fold { reply, .. } => {
                    let _ = reply.send(Err(EngineError::ShuttingDown));
                }
                Msg::CloseSegment(reply) => {
                    let _ = reply.send(Err(EngineError::ShuttingDown));
                }
                Msg::Sync | Msg::Probe(_) | Msg::Shutdown(_) => {}
            }
        }
        if self.dirty || self.fsync == FsyncPolicy::Never {
            self.sync();
        }
        // The zeros written ahead go: a stopped server's log ends with its last record.
        if let Err(e) = self.log.release_reserve() {
            tracing::warn!(error = %e, "the zeros reserved after the last record were not cut (the next start cuts them)");
        }
        // A clean stop leaves a checkpoint at the last record: the next start replays nothing.
        self.maybe_checkpoint(true);
        if let Some(running) = self.checkpointing.take() {
            let _ = running.join();
        }
        if let Some(done) = stopping {
            let _ = done.send(());
        }
    }

    fn sync(&mut self) {
        match self.log.sync() {
            Ok(()) => {
                self.dirty = false;
                self.last_sync = Instant::now();
                self.shares.published.note_write(true);
            }
            Err(e) => {
                self.shares.published.note_write(false);
                tracing::error!(error = %e, "fsync of the log failed");
            }
        }
    }

    /// After a failed write, tries the log again without a record (see `LogWriter::probe`):
    /// without it a node that a load balancer took out of rotation for the fault would get no
    /// write that could tell it the disk came back.
    /// Starts a new segment after the last written record. Only for a log this writer
    /// decides on: a shared log's local copy takes the stream's cursors, which the writer
    /// cannot know in advance, so there it does nothing.
    fn close_segment(&mut self, replies: Vec<oneshot::Sender<Result<(), EngineError>>>) {
        // A shared log's local copy closes segments only when they are full.
        let closed = if self.shares.shared {
            Ok(())
        } else {
            self.log
                .close_segment(self.overlay.cursor() + 1)
                .map_err(EngineError::from)
        };
        for reply in replies {
            let _ = reply.send(match &closed {
                Ok(()) => Ok(()),
                Err(e) => Err(EngineError::Unavailable(e.to_string())),
            });
        }
    }

    fn probe(&mut self, replies: Vec<oneshot::Sender<bool>>) {
        let worked = match self.log.probe() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the log still cannot be written");
                false
            }
        };
        self.shares.published.note_write(worked);
        for reply in replies {
            let _ = reply.send(worked);
        }
    }

    /// Decides, writes and answers the commands of `batch`, leaving it empty.
    fn write_batch(&mut self, batch: &mut Vec<(crate::state::Command, Reply)>) {
        if batch.is_empty() {
            return;
        }
        if self.shares.shared {
            // Decided by a node against the shared stream, never here.
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(EngineError::Unavailable(
                    "writes go through the shared stream".into(),
                )));
            }
            return;
        }
        let at_ms = (self.clock)();
        let mut accepted: Vec<(Option<Reply>, Vec<Record>)> = Vec::with_capacity(batch.len());
        let mut retried: Vec<(Reply, Record)> = Vec::new();
        // A retry may repeat an insert of a part of this batch whose write failed.
        let mut failed = None;
        for (command, reply) in batch.drain(..) {
            if self.log.segment_full() {
                // The batch ends here and the rest starts a new segment: written whole, it
                // would carry this one past --segment_bytes by all the rest of the batch.
                let sync_now = self.sync_due();
                if let Err(e) = self.flush_and_publish(std::mem::take(&mut accepted), sync_now) {
                    failed = Some(e);
                }
            }
            let published = Arc::clone(&self.shares.published);
            let state = published.read_guard();
            let records = match decide(&self.overlay.over(&state), command, at_ms) {
                Ok(Decision::Append(records)) => records,
                // Answered once this batch is durable: the earlier insert may be in it.
                Ok(Decision::Duplicate(earlier)) => {
                    retried.push((reply, earlier));
                    continue;
                }
                Err(rejection) => {
                    let _ = reply.send(Err(rejection.into()));
                    continue;
                }
            };
            let mut appended = Ok(());
            for record in &records {
                record.encode_into(&mut self.scratch);
                appended = self.log.append(record.cursor, &self.scratch);
                if appended.is_err() {
                    break;
                }
            }
            if let Err(e) = appended {
                // Only a segment rotation can fail here, and it happens before any frame of
                // the batch is buffered, so nothing of this command is in the log.
                tracing::error!(error = %e, "appending to the log failed");
                self.shares.published.note_write(false);
                let _ = reply.send(Err(EngineError::Unavailable(e.to_string())));
                continue;
            }
            let mut overlay = self.overlay.over(&state);
            for record in &records {
                evolve_into(&mut overlay, record);
            }
            drop(state);
            accepted.push((Some(reply), records));
        }
        let written = if accepted.is_empty() {
            Ok(())
        } else {
            let sync_now = self.sync_due();
            self.flush_and_publish(accepted, sync_now)
        };
        let written = failed.map_or(written, Err);
        for (reply, earlier) in retried {
            let _ = reply.send(match &written {
                Ok(()) => Ok(vec![earlier]),
                Err(e) => Err(EngineError::Unavailable(e.to_string())),
            });
        }
    }

    /// Whether the next flush must also fsync, under the policy.
    fn sync_due(&self) -> bool {
        match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            FsyncPolicy::Never => false,
        }
    }

    /// Makes `accepted` durable (fsynced with `sync_now`) and visible, and answers each that
    /// has a requester waiting; a failed write refuses them all and is the error returned.
    fn flush_and_publish(
        &mut self,
        accepted: Vec<(Option<Reply>, Vec<Record>)>,
        sync_now: bool,
    ) -> Result<(), EngineError> {
        let started = Instant::now();
        let flushed = self.log.flush(sync_now);
        let published = Arc::clone(&self.shares.published);
        let metrics = published.metrics();
        if sync_now && flushed.is_ok() {
            metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        published.note_write(flushed.is_ok());
        if let Err(e) = flushed {
            metrics.write_failures.inc();
            tracing::error!(error = %e, records = accepted.len(), "writing a batch to the log failed; the batch is refused");
            self.overlay.discard(published.read(|state| state.cursor));
            for reply in accepted.into_iter().filter_map(|(reply, _)| reply) {
                let _ = reply.send(Err(EngineError::Unavailable(e.to_string())));
            }
            return Err(EngineError::Unavailable(e.to_string()));
        }
        let records = accepted.iter().map(|(_, r)| r.len()).sum::<usize>();
        // Inserts and their data bytes, in one pass.
        let (inserts, data_bytes) = accepted
            .iter()
            .flat_map(|(_, r)| r)
            .filter_map(|r| match &r.kind {
                crate::state::RecordKind::EventInserted(e) => Some(e.data.len()),
                _ => None,
            })
            .fold((0usize, 0usize), |(n, bytes), len| (n + 1, bytes + len));
        metrics.batch_records.observe(records as f64);
        self.since_checkpoint += records as u64;
        self.since_checkpoint_bytes += data_bytes as u64;
        self.since_snapshot += records as u64;
        metrics.records.inc_by(records as u64);
        metrics.inserts.inc_by(inserts as u64);
        if sync_now {
            self.dirty = false;
            self.last_sync = Instant::now();
        } else {
            self.dirty = true;
        }
        self.publish(accepted);
        Ok(())
    }

    /// Makes a durable batch visible (see [`Published::publish`]), then answers each command.
    fn publish(&mut self, accepted: Vec<(Option<Reply>, Vec<Record>)>) {
        if let Some(policy) = &mut self.checkpoints {
            for record in accepted.iter().flat_map(|(_, r)| r) {
                if let Some(tenant) = record.tenant() {
                    policy.tenant_events.push(tenant, record.cursor);
                }
            }
        }
        let records: Vec<&Record> = accepted.iter().flat_map(|(_, r)| r).collect();
        let wakeups = self.shares.published.publish(&records);
        self.overlay.published();
        for (reply, records) in accepted {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(records));
            }
        }
        wakeups.wake();
    }
}
