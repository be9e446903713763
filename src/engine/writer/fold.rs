//! The writer on several nodes: it decides nothing itself, but folds what the shared stream
//! delivers (in the stream's order, cursors = stream sequences) into this node's copy of the
//! log, dropping — exactly as every other node does — what no longer holds where the stream
//! put it.

use super::{Reply, Writer};
use crate::engine::EngineError;
use crate::engine::backend::Entry;
use std::sync::Arc;

use crate::state::{Record, Rejection, evolve_into, recheck, validate};

impl Writer {
    /// Flushes and publishes records folded from the shared stream; whether that worked.
    fn publish_folded(&mut self, folded: Vec<Record>) -> bool {
        if folded.is_empty() {
            return true;
        }
        // Nobody waits on a folded batch: the request that wrote it waits for the head.
        let sync_now = self.sync_due();
        self.flush_and_publish(vec![(None, folded)], sync_now)
            .is_ok()
    }

    /// Shared log: appends records read from the stream to the local copy and folds them.
    /// Records at or below the local cursor (a consumer restarted) are skipped, and so are
    /// records that no longer hold where the stream put them (`state::recheck`) and messages
    /// that are no valid record at all (`state::validate::record`): every node drops the same
    /// ones, and the local copy never holds them.
    pub(super) fn fold(&mut self, entries: Vec<Entry>, reply: Reply) {
        let mut folded = Vec::with_capacity(entries.len());
        let mut failed = None;
        let mut dropped_upto = None;
        for entry in entries {
            if entry.cursor() <= self.overlay.cursor() {
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
            let published = Arc::clone(&self.shares.published);
            let state = published.read_guard();
            let verdict = match validate::record(&record.kind) {
                Ok(()) => recheck(
                    &self.overlay.over(&state),
                    &record,
                    credential_epoch,
                    self.shares.tenant_limits,
                ),
                Err(invalid) => Err(invalid.into()),
            };
            drop(state);
            match verdict {
                Ok(()) => {}
                Err(
                    why @ (Rejection::CredentialsInvalid(_)
                    | Rejection::KeyReused
                    | Rejection::TooManyEventNames(_)
                    | Rejection::SnapshotTooLarge(_)),
                ) if record.tenant().is_some() => {
                    if self.may_log() {
                        tracing::info!(cursor = record.cursor, %why, "dropped an insert the stream ordered after its author's credentials changed, after the same Idempotency-Key, or past its tenant's limits");
                    }
                    self.shares.published.note_dropped(record.cursor, Some(why));
                    self.shares.published.metrics().dropped_inserts.inc();
                    self.overlay.pass(record.cursor);
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
            let state = published.read_guard();
            evolve_into(&mut self.overlay.over(&state), &record);
            drop(state);
            folded.push(record);
        }
        let published = self.publish_folded(folded);
        // A dropped record after the last folded one still moves the cursor: the request
        // that published it waits for it, and a restarted reader must not fetch it again.
        if published
            && let Some(dropped) = dropped_upto
            && dropped == self.overlay.cursor()
        {
            self.shares.published.advance(dropped);
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
        if self.may_log() {
            tracing::warn!(
                cursor,
                %why,
                "skipped a message of the shared stream that is no valid record (is anything but broker nodes publishing to the stream?)"
            );
        }
        self.shares.published.note_dropped(cursor, None);
        self.shares.published.metrics().rejected_records.inc();
        self.overlay.pass(cursor);
    }

    /// Whether a line about a record passed over may be written now (`FOLD_LINES_PER_SECOND`);
    /// the lines held back in the second before are reported in one.
    fn may_log(&self) -> bool {
        let (write, held_back) = self.fold_lines.admit((self.clock)());
        if held_back > 0 {
            tracing::warn!(
                held_back,
                "more records of the shared stream passed over in the last second than the log writes lines for; the counters of /metrics have them all"
            );
        }
        write
    }
}
