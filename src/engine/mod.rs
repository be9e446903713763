//! The engine ties the log and the rules together.
//!
//! ```text
//! submit(command) ─▶ LogBackend::append ─▶ writer thread: decide → append (group commit)
//!                                            → evolve → Published::publish ─▶ reply
//! subscribe(tenant) ─▶ snapshot (references into the published state), then frames from the
//!                      tenant's feed, or from the log when it fell behind
//! ```
//! Who owns what:
//! - [`open`](Engine::open) (`open.rs`) takes the lock, recovers the log, loads a checkpoint,
//!   replays the tail and starts the writer.
//! - The writer thread (`writer.rs`) owns the `LogWriter` and its batch's overlay, and holds
//!   an `Arc` of [`published::Published`] — the one place a batch becomes visible (state,
//!   fan-out, committed head, credential watches). It never holds the engine.
//! - [`checkpoint`] stores projections and the per-tenant index in fjall;
//!   [`tenant_index`] says what that index covers.
//! - [`history`] reads a tenant's past events a page at a time (`GET /events`).
//! - [`fanout`] (per-tenant rings of recent frames) and [`subscription`] (one SSE cursor);
//!   [`credentials`] ends a user's streams when their epoch moves.
//! - [`backend`] is the log interface (append, read from a cursor, committed): the embedded
//!   log, or [`jetstream`], several nodes on one NATS JetStream stream.
//!
//! The state is held once: the *published* state readers see, which only ever holds durable
//! records. The writer runs ahead of the disk within a batch (so a batch decides against every
//! earlier command of the batch) in a small overlay over it (`state::Overlay`: only what the
//! batch touched), dropped once the batch is published. A failed write drops the overlay, so
//! nothing unwritten is ever visible or acknowledged.

pub mod backend;
pub mod checkpoint;
pub mod compaction;
pub mod credentials;
pub mod fanout;
pub mod heap;
pub mod history;
pub mod jetstream;
pub mod metrics;
mod open;
pub mod published;
mod readers;
pub(crate) mod sched;
pub mod sse_frame;
pub mod subscription;
pub mod tenant_index;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::Either;
use tokio::sync::{mpsc, oneshot, watch};

use crate::log::{self, Cursor, LogError, LogReader, TailRepair};
use crate::state::{Command, Record, Rejection, State};

pub use crate::log::FsyncPolicy;
pub use backend::LogBackend;
pub use fanout::Fanout;
pub use jetstream::{NatsAuth, NatsTls, StreamError, StreamOptions};
use published::Published;
pub use subscription::{EventFilter, Start, Subscription};
use tenant_index::TenantIndex;

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The log directory.
    pub dir: PathBuf,
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// A new segment starts once the active one passes this size.
    pub segment_bytes: u64,
    /// Recent events kept in memory per tenant for live subscribers.
    pub recent_per_tenant: usize,
    /// …and at most this many bytes of their frames per tenant.
    pub recent_bytes_per_tenant: usize,
    /// Inserts and new users are refused below this much free space (0: never).
    pub min_free_bytes: u64,
    /// Where checkpoints live (a fjall database); `None` replays the whole log at start.
    pub checkpoints: Option<PathBuf>,
    /// A checkpoint after this many records…
    pub checkpoint_records: u64,
    /// …or this much time with at least one record, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Several nodes share one JetStream stream (see [`jetstream`]): the directory then holds
    /// this node's local copy of it, and writes go through [`Engine::attach_stream`].
    pub shared: bool,
    /// How long (record time) an insert's `Idempotency-Key` answers retries, in milliseconds.
    pub idempotency_window_ms: i64,
    /// What a tenant's latest events may hold; a shared stream's fold applies them too.
    pub tenant_limits: crate::state::TenantLimits,
}

/// What opening found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Records replayed into the projections (the tail after the checkpoint, if one was used).
    pub records: u64,
    /// The cursor of the checkpoint the state started from, if one was used.
    pub checkpoint: Option<Cursor>,
    /// Why no checkpoint was used, when one existed but could not be.
    pub checkpoint_ignored: Option<String>,
    /// The newest cursor.
    pub cursor: Cursor,
    /// Torn tails that recovery cut away.
    pub repairs: Vec<TailRepair>,
}

/// Errors the engine returns to request handlers and to `main`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The command breaks a rule; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The log cannot write right now; nothing of the command was acknowledged.
    #[error("the log cannot accept writes right now: {0}")]
    Unavailable(String),
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record in the log does not decode although its frame is intact.
    #[error("record at cursor {0} does not decode: {1}")]
    BadRecord(Cursor, String),
    /// Another process holds the log.
    #[error(
        "{0} is in use by another broker process: stop it first (a running server compacts through POST /compact, or `broker log compact --url`)"
    )]
    Locked(PathBuf),
    /// The log's filesystem is below `--min_free_bytes`; nothing was written.
    #[error(
        "the log's disk has {free} bytes free, under --min_free_bytes {floor}: inserts and new users wait until space is freed"
    )]
    DiskLow {
        /// Bytes free.
        free: u64,
        /// The floor.
        floor: u64,
    },
}

/// Why this node would refuse writes right now (`GET /ready`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The writer's latest write or fsync of the log failed, and trying again did not work.
    #[error("the last write to the log failed; writes are refused until the disk works again")]
    LogFault,
    /// The log's filesystem is below `--min_free_bytes`.
    #[error(
        "the log's disk has {free} bytes free, under --min_free_bytes {floor}: inserts and new users are refused"
    )]
    DiskLow {
        /// Bytes free.
        free: u64,
        /// The floor.
        floor: u64,
    },
    /// A shared-log node that is not attached to its stream, or whose connection is down.
    #[error("the shared log (NATS JetStream) is not reachable from this node")]
    SharedLogUnreachable,
    /// A shared-log node whose stream is gone or was replaced while it ran.
    #[error("{0}")]
    SharedLogBroken(String),
}

impl NotReady {
    /// A stable word for scripts and probes: `log_fault`, `disk_low`, `shared_log`.
    pub fn reason(&self) -> &'static str {
        match self {
            NotReady::LogFault => "log_fault",
            NotReady::DiskLow { .. } => "disk_low",
            NotReady::SharedLogUnreachable | NotReady::SharedLogBroken(_) => "shared_log",
        }
    }
}

/// How often a readiness check may make the writer probe a faulty log, at most.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Threads reading the segment files for history pages and subscribers catching up.
const CATCH_UP_READERS: usize = 8;

/// Tenant events of the replayed tail kept for the next checkpoint's index, at most (8 bytes
/// each): twice the most records a large state's snapshot waits for
/// ([`checkpoint::SNAPSHOT_RECORDS_MAX`]), so that a start after a crash indexes its whole tail.
const MAX_TAIL_INDEX: usize = 2_000_000;

/// The time the writer stamps records with: milliseconds since the Unix epoch. (Not
/// `auth::Clock`, the NTP-corrected clock of requests, though the server passes that one's
/// reading.)
pub type Stamp = Arc<dyn Fn() -> i64 + Send + Sync>;

enum Msg {
    Submit {
        command: Command,
        reply: oneshot::Sender<Result<Vec<Record>, EngineError>>,
    },
    /// Shared log: records read from the stream (cursors = stream sequences), to append to
    /// the local copy and fold.
    Fold {
        entries: Vec<backend::Entry>,
        reply: oneshot::Sender<Result<Vec<Record>, EngineError>>,
    },
    /// Interval policy: fsync what was written since the last sync.
    Sync,
    /// After a write fault: try the log without a record; answers whether it worked.
    Probe(oneshot::Sender<bool>),
    /// Close the active segment so that compaction can reach its records (embedded log
    /// only); answers whether it worked.
    CloseSegment(oneshot::Sender<Result<(), EngineError>>),
    /// Flush, fsync and stop.
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable handle to the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A handle that does not keep the engine alive (for what the engine itself holds).
#[derive(Clone)]
pub(crate) struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    /// The engine, while it is alive.
    pub(crate) fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

struct Inner {
    // Bounded tokio channel: a burst of requests waits for room (backpressure) instead of
    // growing memory, and the writer thread can block on it without a runtime.
    tx: mpsc::Sender<Msg>,
    /// What requests and subscribers read; the writer publishes each batch into it.
    published: Arc<Published>,
    /// The log commands are appended to: the embedded one from the start, or the shared
    /// stream once [`Engine::attach_stream`] connected it.
    backend: std::sync::OnceLock<Arc<dyn LogBackend>>,
    clock: Stamp,
    /// `--max_event_names` and `--max_tenant_snapshot_bytes`.
    tenant_limits: crate::state::TenantLimits,
    /// Where history pages and subscribers catching up read the segment files: they wait
    /// their turn instead of each taking a blocking-pool thread and its read buffer at once.
    readers: readers::Readers,
    /// What the checkpoint store's per-tenant index covers.
    index: Arc<TenantIndex>,
    log: LogReader,
    // A watch, not a broadcast: every subscriber only needs to learn "stop now".
    shutdown: watch::Sender<bool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The free-space floor inserts and new users are checked against.
    space: log::space::FreeSpace,
    /// When a readiness check last made the writer probe the log: probes are paid for by
    /// unauthenticated requests, so at most one per [`PROBE_EVERY`].
    last_probe: Mutex<Option<std::time::Instant>>,
    /// Held for the engine's life: one process per log.
    _lock: std::fs::File,
}

impl Engine {
    fn spawn_interval_sync(&self, every: Duration) {
        let tx = self.inner.tx.clone();
        let mut stop = self.inner.shutdown.subscribe();
        // Needs a runtime; outside one (plain tests) the writer still syncs on shutdown.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => if tx.send(Msg::Sync).await.is_err() { return },
                        _ = stop.changed() => return,
                    }
                }
            });
        }
    }

    /// Appends `command` to the log; resolves once its records are durable and visible on
    /// this node (or refused, with nothing stored).
    ///
    /// The checks run at the call, and so does the hand-over when the log has room for the
    /// command (`LogBackend::try_append`): the future is then only the answer's receiver.
    /// Otherwise it is the backend's (boxed) append, which waits for room. As an `async fn`
    /// this held the command, twice, in every insert's future.
    pub fn submit(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<Vec<Record>, EngineError>> + Send + '_ {
        let refused = if matches!(
            command,
            Command::InsertEvent { .. } | Command::CreateUser(_)
        ) && let Some(free) = self.inner.space.low()
        {
            Err(EngineError::DiskLow {
                free,
                floor: self.inner.space.floor(),
            })
        } else {
            self.backend()
        };
        match refused {
            Ok(backend) => Either::Left(match backend.try_append(command) {
                Ok(queued) => Either::Left(queued),
                Err(command) => Either::Right(backend.append(command)),
            }),
            Err(e) => Either::Right(std::future::ready(Err(e))),
        }
    }

    /// Whether writes would be accepted now, and if not why (`GET /ready`). A log fault is
    /// checked again by a probe of the writer (at most once a second), so a node recovers
    /// its readiness without a write coming in.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        match self.backend() {
            Ok(backend) if backend.reachable() => {
                if let Some(why) = backend.broken() {
                    return Err(NotReady::SharedLogBroken(why));
                }
            }
            _ => return Err(NotReady::SharedLogUnreachable),
        }
        if let Some(free) = self.inner.space.low() {
            return Err(NotReady::DiskLow {
                free,
                floor: self.inner.space.floor(),
            });
        }
        if !self.inner.published.write_fault() {
            return Ok(());
        }
        let due = {
            let mut last = self.inner.last_probe.lock().expect("last probe");
            let due = last.is_none_or(|at| at.elapsed() >= PROBE_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            let (reply, answer) = oneshot::channel();
            // Never wait for room in a full queue: a busy writer answers the next check.
            if self.inner.tx.try_send(Msg::Probe(reply)).is_ok()
                && let Ok(Ok(true)) = tokio::time::timeout(PROBE_EVERY, answer).await
            {
                return Ok(());
            }
        }
        Err(NotReady::LogFault)
    }

    /// The log this engine writes to; a shared-log engine has none until it is attached.
    pub fn backend(&self) -> Result<&Arc<dyn LogBackend>, EngineError> {
        self.inner.backend.get().ok_or_else(|| {
            EngineError::Unavailable("not connected to the shared stream yet".into())
        })
    }

    /// Connects a shared-log engine to its JetStream stream and catches up with it; writes
    /// are accepted from then on.
    pub async fn attach_stream(&self, options: &StreamOptions) -> Result<(), StreamError> {
        let stream = jetstream::attach(self, options).await?;
        let _ = self.inner.backend.set(stream);
        Ok(())
    }

    /// The clock records are stamped with (milliseconds since the Unix epoch).
    pub(crate) fn now_ms(&self) -> i64 {
        (self.inner.clock)()
    }

    /// Shared log: whether the fold dropped the record at `cursor`, and why (`Some(None)`:
    /// as no valid record).
    pub(crate) fn dropped(&self, cursor: Cursor) -> Option<Option<Rejection>> {
        self.inner.published.dropped(cursor)
    }

    /// What a tenant's latest events may hold (the nodes of a shared stream must agree).
    pub(crate) fn tenant_limits(&self) -> crate::state::TenantLimits {
        self.inner.tenant_limits
    }

    /// A handle that does not keep the engine alive.
    pub(crate) fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    /// Hands records read from the shared stream to the writer; resolves once folded.
    pub(crate) async fn fold(&self, entries: Vec<backend::Entry>) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Fold { entries, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        answer
            .await
            .map_err(|_| EngineError::ShuttingDown)?
            .map(drop)
    }

    /// Resolves once every record up to `cursor` is durable and visible on this node.
    pub async fn committed(&self, cursor: Cursor) -> Result<(), EngineError> {
        let mut rx = self.inner.published.committed();
        let mut stop = self.inner.shutdown.subscribe();
        loop {
            if *rx.borrow_and_update() >= cursor {
                return Ok(());
            }
            if *stop.borrow_and_update() {
                return Err(EngineError::ShuttingDown);
            }
            tokio::select! {
                changed = rx.changed() => changed.map_err(|_| EngineError::ShuttingDown)?,
                _ = stop.changed() => {}
            }
        }
    }

    /// The newest cursor durable and visible on this node.
    pub(crate) fn committed_cursor(&self) -> Cursor {
        self.inner.published.head()
    }

    /// Runs `f` on a consistent view of the published (durable) state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.inner.published.read(f)
    }

    /// The newest durable cursor.
    pub fn cursor(&self) -> Cursor {
        self.inner.published.fanout().published()
    }

    /// A reader of the log.
    pub fn log(&self) -> &LogReader {
        &self.inner.log
    }

    /// Starts an SSE subscription to `tenant`'s events. With an `owner` (username and the
    /// credential epoch they authenticated in), the stream ends as soon as that user's
    /// credentials are invalidated; with a `filter`, it carries only the names it allows.
    pub fn subscribe(
        &self,
        tenant: &str,
        start: Start,
        owner: Option<(&str, Cursor)>,
        filter: Option<EventFilter>,
    ) -> Subscription {
        Subscription::new(self.clone(), tenant, start, owner, filter)
    }

    /// Ends every SSE subscription (first step of a graceful shutdown).
    pub fn close_subscriptions(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Stops subscriptions, lets the writer finish queued commands, fsyncs and joins it.
    pub async fn shutdown(&self) {
        self.close_subscriptions();
        let (done, wait) = oneshot::channel();
        if self.inner.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
        let handle = self.inner.writer.lock().expect("writer handle").take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// A receiver that turns true when the engine shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    pub(crate) fn fanout(&self) -> &Fanout {
        self.inner.published.fanout()
    }

    /// The writer's measurements.
    pub fn metrics(&self) -> &metrics::EngineMetrics {
        self.inner.published.metrics()
    }

    /// Open SSE streams of `username`.
    pub fn streams_of(&self, username: &str) -> usize {
        self.inner.published.credentials().open_streams(username)
    }

    /// Tenants with an in-memory feed (those with recent events or open streams).
    pub fn tenant_feeds(&self) -> usize {
        self.fanout().feeds()
    }

    /// Open SSE subscriptions, and tenants with at least one.
    pub fn subscribers(&self) -> (u64, u64) {
        self.fanout().subscribers()
    }

    /// The per-tenant index and the range `(base, upto]` it covers, if usable.
    pub(crate) fn tenant_index(&self) -> Option<(&checkpoint::Checkpoints, Cursor, Cursor)> {
        self.inner.index.usable()
    }

    /// Runs `read` of the segment files (a history page, a subscriber's catch-up) for
    /// `tenant` on a reading thread, in the tenants' turns; `None` if it panicked.
    pub(crate) async fn read_files<R: Send + 'static>(
        &self,
        tenant: &str,
        read: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        self.inner.readers.run(tenant, read).await
    }

    pub(crate) fn credentials(&self) -> &credentials::CredentialWatch {
        self.inner.published.credentials()
    }
}
