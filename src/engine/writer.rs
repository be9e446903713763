//! The writer thread: the only place state changes.
//!
//! Group commit: the thread takes every command that queued up while the previous batch
//! was being written and fsynced, decides them in order against its decision state,
//! appends their records, and makes the whole batch durable with one write and one fsync.

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::backend::Entry;
use super::{Engine, EngineError, FsyncPolicy, Msg, Stamp};
use crate::log::LogWriter;
use crate::state::{Record, Rejection, State, decide, evolve, recheck, validate};

/// Whether a batch handed to [`Writer::flush_and_publish`] was published (or was empty).
fn folded_ok(mut outcome: oneshot::Receiver<Result<Vec<Record>, EngineError>>) -> bool {
    match outcome.try_recv() {
        Ok(result) => result.is_ok(),
        // Nothing was sent: the batch was empty.
        Err(_) => true,
    }
}

/// The most commands decided and written as one batch.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<Vec<Record>, EngineError>>;

/// When and where the writer stores checkpoints.
pub(super) struct CheckpointPolicy {
    pub(super) store: std::sync::Arc<super::checkpoint::Checkpoints>,
    pub(super) every_records: u64,
    pub(super) every: std::time::Duration,
    /// Tenant events published since the last checkpoint, for its index.
    pub(super) tenant_events: Vec<(String, crate::log::Cursor)>,
    /// The index is complete above this cursor.
    pub(super) index_base: crate::log::Cursor,
    /// Records the start replayed beyond the last checkpoint.
    pub(super) replayed: u64,
}

pub(super) struct Writer {
    engine: Engine,
    log: LogWriter,
    /// Runs ahead of the disk within a batch; reset from the published state on failure.
    decision: State,
    fsync: FsyncPolicy,
    clock: Stamp,
    rx: mpsc::Receiver<Msg>,
    /// Written but not yet fsynced (interval policy).
    dirty: bool,
    last_sync: Instant,
    checkpoints: Option<CheckpointPolicy>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// A checkpoint being written in the background, if any.
    checkpointing: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(super) fn new(
        engine: Engine,
        log: LogWriter,
        decision: State,
        fsync: FsyncPolicy,
        clock: Stamp,
        rx: mpsc::Receiver<Msg>,
        checkpoints: Option<CheckpointPolicy>,
    ) -> Self {
        // Records replayed at start count: a start that replayed a long tail stores a
        // checkpoint at once, so the next start does not replay it again.
        let since_checkpoint = checkpoints.as_ref().map_or(0, |c| c.replayed);
        Writer {
            engine,
            log,
            decision,
            fsync,
            clock,
            rx,
            dirty: false,
            last_sync: Instant::now(),
            checkpoints,
            since_checkpoint,
            last_checkpoint: Instant::now(),
            checkpointing: None,
        }
    }

    /// Stores a checkpoint in the background when enough records or time went by. The state
    /// is cloned here (the decision state equals the published one between batches); encoding
    /// and the fsync happen on another thread, so the writer never waits for them.
    fn maybe_checkpoint(&mut self, force: bool) {
        let Some(policy) = &mut self.checkpoints else {
            return;
        };
        let due = self.since_checkpoint >= policy.every_records
            || (self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= policy.every);
        if !(due || force && self.since_checkpoint > 0) {
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
        let state = self.decision.clone();
        let store = std::sync::Arc::clone(&policy.store);
        let segments = self.engine.log().segments();
        let events = std::mem::take(&mut policy.tenant_events);
        let base = policy.index_base;
        let engine = self.engine.clone();
        let save = move || {
            let infos = segments
                .into_iter()
                .filter_map(|s| {
                    std::fs::metadata(&s.path)
                        .ok()
                        .map(|m| super::checkpoint::SegmentInfo {
                            first: s.first,
                            len: m.len(),
                            index: s.index,
                        })
                })
                .collect();
            match store.save(&state, infos, &events, base) {
                Ok(()) => {
                    engine.index_stored(base, state.cursor);
                    tracing::debug!(cursor = state.cursor, "checkpoint stored");
                }
                Err(why) => {
                    // Its events never reached the index: the next checkpoint's index
                    // starts above this one.
                    engine.index_failed(state.cursor);
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
        self.last_checkpoint = Instant::now();
    }

    pub(super) fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("broker-writer".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        self.maybe_checkpoint(false);
        let mut stopping: Option<oneshot::Sender<()>> = None;
        while stopping.is_none() {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut batch = Vec::new();
            let mut folds = Vec::new();
            let mut sync_due = false;
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Submit { command, reply } => batch.push((command, reply)),
                    Msg::Fold { entries, reply } => folds.push((entries, reply)),
                    Msg::Sync => sync_due = true,
                    Msg::Shutdown(done) => stopping = Some(done),
                }
                next = if batch.len() < MAX_BATCH && stopping.is_none() {
                    self.rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.write_batch(batch);
            for (entries, reply) in folds {
                self.fold(entries, reply);
            }
            if sync_due && self.dirty {
                self.sync();
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
                Msg::Sync | Msg::Shutdown(_) => {}
            }
        }
        if self.dirty || self.fsync == FsyncPolicy::Never {
            self.sync();
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
            }
            Err(e) => tracing::error!(error = %e, "fsync of the log failed"),
        }
    }

    fn write_batch(&mut self, batch: Vec<(crate::state::Command, Reply)>) {
        if batch.is_empty() {
            return;
        }
        if self.engine.inner.shared {
            // Decided by a node against the shared stream, never here.
            for (_, reply) in batch {
                let _ = reply.send(Err(EngineError::Unavailable(
                    "writes go through the shared stream".into(),
                )));
            }
            return;
        }
        let at_ms = (self.clock)();
        let mut accepted: Vec<(Reply, Vec<Record>)> = Vec::with_capacity(batch.len());
        for (command, reply) in batch {
            if self.log.segment_full() {
                // The batch ends here and the rest starts a new segment: written whole, it
                // would carry this one past --segment_bytes by all the rest of the batch.
                let sync_now = self.sync_due();
                self.flush_and_publish(std::mem::take(&mut accepted), sync_now);
            }
            let records = match decide(&self.decision, command, at_ms) {
                Ok(records) => records,
                Err(rejection) => {
                    let _ = reply.send(Err(rejection.into()));
                    continue;
                }
            };
            let mut appended = Ok(());
            for record in &records {
                appended = self.log.append(record.cursor, &record.encode());
                if appended.is_err() {
                    break;
                }
            }
            if let Err(e) = appended {
                // Only a segment rotation can fail here, and it happens before any frame of
                // the batch is buffered, so nothing of this command is in the log.
                tracing::error!(error = %e, "appending to the log failed");
                let _ = reply.send(Err(EngineError::Unavailable(e.to_string())));
                continue;
            }
            for record in &records {
                evolve(&mut self.decision, record);
            }
            accepted.push((reply, records));
        }
        if accepted.is_empty() {
            return;
        }
        let sync_now = self.sync_due();
        self.flush_and_publish(accepted, sync_now);
    }

    /// Whether the next flush must also fsync, under the policy.
    fn sync_due(&self) -> bool {
        match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            FsyncPolicy::Never => false,
        }
    }

    /// Flushes and publishes records folded from the shared stream; whether that worked.
    fn publish_folded(&mut self, folded: Vec<Record>) -> bool {
        let (done, outcome) = tokio::sync::oneshot::channel();
        if !folded.is_empty() {
            let sync_now = self.sync_due();
            self.flush_and_publish(vec![(done, folded)], sync_now);
        }
        folded_ok(outcome)
    }

    /// Shared log: appends records read from the stream to the local copy and folds them.
    /// Records at or below the local cursor (a consumer restarted) are skipped, and so are
    /// records that no longer hold where the stream put them (`state::recheck`) and messages
    /// that are no valid record at all (`state::validate::record`): every node drops the same
    /// ones, and the local copy never holds them.
    fn fold(&mut self, entries: Vec<Entry>, reply: Reply) {
        let mut folded = Vec::with_capacity(entries.len());
        let mut failed = None;
        let mut dropped_upto = None;
        for entry in entries {
            if entry.cursor() <= self.decision.cursor {
                continue;
            }
            let (record, credential_epoch) = match entry {
                Entry::Record {
                    record,
                    credential_epoch,
                } => (record, credential_epoch),
                Entry::Unreadable { cursor, why } => {
                    self.skip(cursor, &why);
                    dropped_upto = Some(cursor);
                    continue;
                }
            };
            let verdict = match validate::record(&record.kind) {
                Ok(()) => recheck(&self.decision, &record, credential_epoch),
                Err(invalid) => Err(invalid.into()),
            };
            match verdict {
                Ok(()) => {}
                Err(why @ Rejection::CredentialsInvalid(_)) if record.tenant().is_some() => {
                    tracing::info!(cursor = record.cursor, %why, "dropped an insert the stream ordered after its author's credentials changed");
                    self.engine.note_dropped(record.cursor);
                    self.engine.metrics().dropped_inserts.inc();
                    self.decision.cursor = record.cursor;
                    dropped_upto = Some(record.cursor);
                    continue;
                }
                Err(why) => {
                    self.skip(record.cursor, &why.to_string());
                    dropped_upto = Some(record.cursor);
                    continue;
                }
            }
            // As in `write_batch`: a full segment ends the batch here.
            if self.log.segment_full() && !self.publish_folded(std::mem::take(&mut folded)) {
                failed = Some("writing to the local copy failed".into());
                break;
            }
            // As in `write_batch`: only a rotation fails, before the frame is buffered.
            if let Err(e) = self.log.append(record.cursor, &record.encode()) {
                tracing::error!(error = %e, "appending to the local copy failed");
                failed = Some(e.to_string());
                break;
            }
            evolve(&mut self.decision, &record);
            folded.push(record);
        }
        let published = self.publish_folded(folded);
        // A dropped record after the last folded one still moves the cursor: the request
        // that published it waits for it, and a restarted reader must not fetch it again.
        if published
            && let Some(dropped) = dropped_upto
            && dropped == self.decision.cursor
        {
            self.engine.published().write().expect("published").cursor = dropped;
            self.engine.fanout().advance(dropped);
            self.engine.mark_committed(dropped);
        }
        let _ = reply.send(match failed {
            Some(why) => Err(EngineError::Unavailable(why)),
            None if published => Ok(Vec::new()),
            None => Err(EngineError::Unavailable(
                "writing to the local copy failed".into(),
            )),
        });
    }

    /// Shared log: passes over a message that no node may fold, as every node does; its
    /// cursor is then folded as far as the cursor goes, like a dropped insert's.
    fn skip(&mut self, cursor: crate::log::Cursor, why: &str) {
        // `why` names the rule and at most public values: validators never quote a secret.
        tracing::warn!(
            cursor,
            %why,
            "skipped a message of the shared stream that is no valid record (is anything but broker nodes publishing to the stream?)"
        );
        self.engine.note_dropped(cursor);
        self.engine.metrics().rejected_records.inc();
        self.decision.cursor = cursor;
    }

    fn flush_and_publish(&mut self, accepted: Vec<(Reply, Vec<Record>)>, sync_now: bool) {
        let started = Instant::now();
        let flushed = self.log.flush(sync_now);
        let metrics = self.engine.metrics();
        if sync_now && flushed.is_ok() {
            metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if let Err(e) = flushed {
            metrics.write_failures.inc();
            tracing::error!(error = %e, records = accepted.len(), "writing a batch to the log failed; the batch is refused");
            self.decision = self.engine.published().read().expect("published").clone();
            for (reply, _) in accepted {
                let _ = reply.send(Err(EngineError::Unavailable(e.to_string())));
            }
            return;
        }
        let records = accepted.iter().map(|(_, r)| r.len()).sum::<usize>();
        let inserts = accepted
            .iter()
            .flat_map(|(_, r)| r)
            .filter(|r| r.tenant().is_some())
            .count();
        metrics.batch_records.observe(records as f64);
        self.since_checkpoint += records as u64;
        metrics.records.inc_by(records as u64);
        metrics.inserts.inc_by(inserts as u64);
        if sync_now {
            self.dirty = false;
            self.last_sync = Instant::now();
        } else {
            self.dirty = true;
        }
        self.publish(accepted);
    }

    /// Makes a durable batch visible: published state, then tenant feeds, then replies.
    fn publish(&mut self, accepted: Vec<(Reply, Vec<Record>)>) {
        let mut invalidated = Vec::new();
        {
            let mut published = self.engine.published().write().expect("published");
            for (_, records) in &accepted {
                for record in records {
                    evolve(&mut published, record);
                    if let Some(user) = record.username().and_then(|u| published.user(u))
                        && user.credential_epoch == record.cursor
                    {
                        invalidated.push((user.username.clone(), record.cursor));
                    }
                }
            }
        }
        for (username, epoch) in invalidated {
            self.engine.credentials().invalidate(&username, epoch);
        }
        if let Some(policy) = &mut self.checkpoints {
            if let Some(failed) = self.engine.take_index_failure() {
                policy.index_base = policy.index_base.max(failed);
            }
            for record in accepted.iter().flat_map(|(_, r)| r) {
                if let Some(tenant) = record.tenant() {
                    policy
                        .tenant_events
                        .push((tenant.to_owned(), record.cursor));
                }
            }
        }
        self.engine
            .fanout()
            .publish(accepted.iter().flat_map(|(_, records)| records.iter()));
        if let Some(last) = accepted.iter().flat_map(|(_, r)| r).next_back() {
            self.engine.mark_committed(last.cursor);
        }
        for (reply, records) in accepted {
            let _ = reply.send(Ok(records));
        }
    }
}
