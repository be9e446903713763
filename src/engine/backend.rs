//! The one narrow interface between the engine and the log it writes to (DESIGN.md, "Scale
//! beyond one machine"), and its embedded implementation.
//!
//! The engine needs three operations from a log, whatever the log is:
//!
//! 1. **append**: store what a command decides to and learn the records' cursors;
//! 2. **read from a cursor**: every committed record after a cursor, in order, following the
//!    log as it grows;
//! 3. **await "committed up to N"**.
//!
//! Two logs implement them: [`Embedded`], the segmented log on this machine (the default), and
//! [`super::jetstream::JetStream`], a NATS JetStream stream several nodes share. Where `decide`
//! runs is the one thing they do differently, because it is where each log can make a check
//! safe: the embedded log has a single writer, so the writer thread decides each command
//! against every earlier record of its group commit; a shared log has many writers, so a node
//! decides on its folded view and the stream's compare-and-set refuses the record if that
//! view was stale. `append` therefore takes the command, not finished records.
//!
//! Everything else — the projections, SSE fan-out, checkpoints, catch-up reads — is the same
//! code for both: a JetStream node folds the stream into a local segmented log, read through
//! [`Engine::log`], exactly as a single node reads its own.

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Engine, EngineError, Msg};
use crate::log::{Cursor, LogReader};
use crate::state::{Command, Record};

/// A boxed future: the trait is used as `dyn LogBackend`, chosen at start by `--log`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Batches of committed records in cursor order; it ends when the engine stops, and after an
/// error the reader starts again from the last cursor it took.
pub type Batches = Pin<Box<dyn Stream<Item = Result<Vec<Entry>, EngineError>> + Send>>;

/// What a log holds at one cursor, as it hands it back.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A record.
    Record {
        /// The record, its cursor set.
        record: Record,
        /// For an insert in a shared log: the credential epoch its author authenticated in on
        /// the node that decided it, which the fold checks again (`state::recheck`). Not
        /// stored in the record: it travels beside it, and only until the record is folded.
        credential_epoch: Option<Cursor>,
    },
    /// A shared log's message that is no record of it (bytes that do not decode, or a record
    /// under a subject it does not belong to). Anyone who can publish to the stream can put
    /// one there, so it must not stop the fold: every node skips it the same way.
    Unreadable {
        /// Where the log holds it.
        cursor: Cursor,
        /// Why it is no record, for the log line.
        why: String,
    },
}

impl Entry {
    /// Where the log holds it.
    pub fn cursor(&self) -> Cursor {
        match self {
            Entry::Record { record, .. } => record.cursor,
            Entry::Unreadable { cursor, .. } => *cursor,
        }
    }

    /// The record, if this is one.
    pub fn into_record(self) -> Option<Record> {
        match self {
            Entry::Record { record, .. } => Some(record),
            Entry::Unreadable { .. } => None,
        }
    }
}

/// The most records one batch of [`LogBackend::read_from`] holds.
pub const READ_BATCH: usize = 1024;

/// What the engine needs from a log (see the module documentation).
pub trait LogBackend: Send + Sync {
    /// What this log is, for logs and `/server_stats`: `"embedded"` or `"jetstream"`.
    fn kind(&self) -> &'static str;

    /// Stores the records `command` decides to (deciding where this log makes the decision
    /// safe) and resolves with them, cursors set, once they are committed and this node has
    /// folded them; a refusal stores nothing.
    fn append(&self, command: Command) -> BoxFuture<'_, Result<Vec<Record>, EngineError>>;

    /// [`append`](Self::append) without waiting to hand `command` over: the log takes it
    /// now and the answer is awaited in a [`Queued`], or the command comes back (the log
    /// has no room for it now, or takes commands no other way) for `append`.
    #[expect(
        clippy::result_large_err,
        reason = "the command comes back whole, on the rare path that then waits; boxing it would allocate"
    )]
    fn try_append(&self, command: Command) -> Result<Queued, Command> {
        Err(command)
    }

    /// Every committed record with a cursor above `after`, in order, in batches of at most
    /// [`READ_BATCH`], waiting for new ones once it has read them all.
    fn read_from(&self, after: Cursor) -> Batches;

    /// Resolves with the log's newest committed cursor once it is at least `upto`
    /// (`committed(0)` is the log's head now).
    fn committed(&self, upto: Cursor) -> BoxFuture<'_, Result<Cursor, EngineError>>;

    /// Whether this node can reach the log now (a shared log's connection is up). The
    /// embedded log always can; its disk faults are the writer's to report.
    fn reachable(&self) -> bool {
        true
    }

    /// Why this node must not write to the log though it reaches it (a shared stream that
    /// was deleted, or replaced by another), if so.
    fn broken(&self) -> Option<String> {
        None
    }
}

/// An append the log took at once ([`LogBackend::try_append`]): its answer, to await. No
/// future is boxed and the command is not moved again: most inserts are submitted this way.
pub struct Queued(oneshot::Receiver<Result<Vec<Record>, EngineError>>);

impl Future for Queued {
    type Output = Result<Vec<Record>, EngineError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(EngineError::ShuttingDown)))
    }
}

/// The segmented log on this machine, written by the engine's writer thread.
pub struct Embedded {
    tx: mpsc::Sender<Msg>,
    reader: LogReader,
    committed: watch::Receiver<Cursor>,
    shutdown: watch::Receiver<bool>,
}

impl Embedded {
    pub(super) fn new(
        tx: mpsc::Sender<Msg>,
        reader: LogReader,
        committed: watch::Receiver<Cursor>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Embedded {
            tx,
            reader,
            committed,
            shutdown,
        }
    }
}

/// Waits until `committed` reaches `upto`; `None` once the engine stops.
async fn wait_for(
    committed: &mut watch::Receiver<Cursor>,
    shutdown: &mut watch::Receiver<bool>,
    upto: Cursor,
) -> Option<Cursor> {
    loop {
        let head = *committed.borrow_and_update();
        if head >= upto {
            return Some(head);
        }
        if *shutdown.borrow_and_update() {
            return None;
        }
        tokio::select! {
            changed = committed.changed() => changed.ok()?,
            _ = shutdown.changed() => {}
        }
    }
}

impl LogBackend for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn append(&self, command: Command) -> BoxFuture<'_, Result<Vec<Record>, EngineError>> {
        Box::pin(async move {
            // The writer decides, appends (group commit), folds and publishes; it answers
            // once the records are durable and visible.
            let (reply, answer) = oneshot::channel();
            self.tx
                .send(Msg::Submit { command, reply })
                .await
                .map_err(|_| EngineError::ShuttingDown)?;
            answer.await.map_err(|_| EngineError::ShuttingDown)?
        })
    }

    fn try_append(&self, command: Command) -> Result<Queued, Command> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Msg::Submit { command, reply }) {
            Ok(()) => Ok(Queued(answer)),
            // The writer is gone: the dropped reply answers `ShuttingDown`.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Queued(answer)),
            Err(mpsc::error::TrySendError::Full(Msg::Submit { command, .. })) => Err(command),
            Err(mpsc::error::TrySendError::Full(_)) => unreachable!("a submission was sent"),
        }
    }

    fn read_from(&self, after: Cursor) -> Batches {
        let state = (
            self.reader.clone(),
            self.committed.clone(),
            self.shutdown.clone(),
            after,
        );
        Box::pin(futures_util::stream::unfold(
            Some(state),
            |state| async move {
                let (reader, mut committed, mut shutdown, after) = state?;
                // Only what the writer published is read: a frame on disk above the
                // committed cursor may belong to a batch whose flush is still failing.
                let head = wait_for(&mut committed, &mut shutdown, after + 1).await?;
                let read = {
                    let reader = reader.clone();
                    tokio::task::spawn_blocking(move || read_batch(&reader, after, head)).await
                };
                match read {
                    Ok(Ok((records, reached))) => {
                        let entries = records
                            .into_iter()
                            .map(|record| Entry::Record {
                                record,
                                credential_epoch: None,
                            })
                            .collect();
                        Some((Ok(entries), Some((reader, committed, shutdown, reached))))
                    }
                    Ok(Err(e)) => Some((Err(e), None)),
                    Err(_) => Some((Err(EngineError::ShuttingDown), None)),
                }
            },
        ))
    }

    fn committed(&self, upto: Cursor) -> BoxFuture<'_, Result<Cursor, EngineError>> {
        let (mut committed, mut shutdown) = (self.committed.clone(), self.shutdown.clone());
        Box::pin(async move {
            wait_for(&mut committed, &mut shutdown, upto)
                .await
                .ok_or(EngineError::ShuttingDown)
        })
    }
}

/// Reads up to [`READ_BATCH`] records in `(after, head]`; returns them and the cursor reached
/// (`head` when compaction left nothing in the range).
fn read_batch(
    reader: &LogReader,
    after: Cursor,
    head: Cursor,
) -> Result<(Vec<Record>, Cursor), EngineError> {
    let mut records = Vec::new();
    let mut bad = None;
    reader.read_after(after, head, |cursor, payload| {
        match Record::decode(payload) {
            Ok(record) => records.push(record),
            Err(e) => bad = Some(EngineError::BadRecord(cursor, e.to_string())),
        }
        bad.is_none() && records.len() < READ_BATCH
    })?;
    if let Some(e) = bad {
        return Err(e);
    }
    let reached = if records.len() < READ_BATCH {
        head
    } else {
        records.last().map_or(head, |r| r.cursor)
    };
    Ok((records, reached))
}

/// Folds a shared log into the engine, in cursor order, for as long as the engine runs:
/// read from the newest folded cursor, hand each batch to the writer (which appends it to
/// the local copy and folds it), and after any failure start again from where the fold got.
pub(super) async fn follow(engine: Engine, log: std::sync::Arc<dyn LogBackend>) {
    use futures_util::StreamExt;
    let mut stop = engine.shutdown_signal();
    // One warning per reason every 10 s: a stream gone for good failed ten times a second,
    // each a line (an attack review).
    let mut warned: Option<(String, std::time::Instant)> = None;
    let mut quiet = 0u64;
    loop {
        let from = engine.committed_cursor();
        let mut batches = log.read_from(from);
        let why = loop {
            let batch = tokio::select! {
                batch = batches.next() => batch,
                _ = stop.changed() => return,
            };
            match batch {
                Some(Ok(entries)) => {
                    if let Err(e) = engine.fold(entries).await {
                        break e.to_string();
                    }
                }
                Some(Err(EngineError::Unavailable(why))) => break why,
                Some(Err(e)) => break e.to_string(),
                None => break "the log's reader ended".to_owned(),
            }
        };
        drop(batches);
        if *stop.borrow() {
            return;
        }
        let at = engine.committed_cursor();
        let repeat = warned.as_ref().is_some_and(|(last, when)| {
            *last == why && when.elapsed() < std::time::Duration::from_secs(10)
        });
        if repeat {
            quiet += 1;
        } else {
            tracing::warn!(%why, from, at, also_failed_since_last_line = quiet, "reading the shared log failed; reading again from `at`");
            warned = Some((why, std::time::Instant::now()));
            quiet = 0;
        }
        tokio::select! {
            // Short: after a NATS election the next attempt is the one that succeeds.
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Author;

    fn insert(n: u8) -> Command {
        Command::InsertEvent {
            by: Author::Admin { tenant: "t".into() },
            id: [n; 16],
            event: "e".into(),
            data: n.to_string(),
            name_limit: 10,
            snapshot_budget: usize::MAX,
            idempotency_key: None,
        }
    }

    fn event_id(msg: Option<Msg>) -> (u8, oneshot::Sender<Result<Vec<Record>, EngineError>>) {
        match msg {
            Some(Msg::Submit {
                command: Command::InsertEvent { id, .. },
                reply,
            }) => (id[0], reply),
            _ => panic!("not an insert's submission"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_gives_the_command_back_and_append_waits_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::log::open(dir.path(), Record::cursor_of, 1 << 20, |_, _| {}).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let (_committed_tx, committed) = watch::channel(0);
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let embedded = Embedded::new(tx, log.reader, committed, shutdown);

        // Room: taken at once, and the writer's answer reaches the queued future.
        let queued = embedded.try_append(insert(1)).expect("room for one");
        // Full: the very command comes back, for `append` to wait with.
        let Err(back) = embedded.try_append(insert(2)) else {
            panic!("a full queue took a command");
        };
        assert!(matches!(&back, Command::InsertEvent { id, .. } if id[0] == 2));
        let waiting = embedded.append(back);
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());

        let (first, reply) = event_id(rx.recv().await);
        assert_eq!(first, 1);
        let record = Record {
            cursor: 1,
            at_ms: 0,
            kind: crate::state::RecordKind::UserRevoked {
                username: "u".into(),
            },
        };
        reply.send(Ok(vec![record.clone()])).unwrap();
        assert_eq!(queued.await.unwrap(), vec![record]);

        // The waiting append got in once there was room; a writer that drops it answers
        // `ShuttingDown`, as it does for a queued one.
        let (second, reply) = event_id(tokio::select! {
            msg = rx.recv() => msg,
            _ = waiting.as_mut() => panic!("answered before the writer took it"),
        });
        assert_eq!(second, 2);
        drop(reply);
        assert!(matches!(waiting.await, Err(EngineError::ShuttingDown)));

        // The writer gone: refused, not lost in a queue.
        drop(rx);
        let queued = embedded.try_append(insert(3)).expect("answered at once");
        assert!(matches!(queued.await, Err(EngineError::ShuttingDown)));
    }
}
