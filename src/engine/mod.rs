//! The engine ties the log and the rules together.
//!
//! ```text
//! submit(command) ─▶ writer thread: decide → append (group commit) → evolve → publish ─▶ reply
//! subscribe(tenant) ─▶ snapshot from the published state, then frames from the tenant's feed
//! ```
//! Two states exist on purpose: the writer's *decision* state runs ahead of the disk (so a
//! batch decides against every earlier command of the batch), while the *published* state
//! readers see only ever holds durable records. A failed write resets the first from the
//! second, so nothing unwritten is ever visible or acknowledged.

pub mod backend;
pub mod checkpoint;
pub mod compaction;
pub mod credentials;
pub mod fanout;
pub mod jetstream;
pub mod metrics;
pub mod published;
pub mod sse_frame;
pub mod subscription;
pub mod tenant_index;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::log::{self, Cursor, LogError, LogReader, TailRepair};
use crate::state::{Command, Record, Rejection, State, evolve};

pub use backend::LogBackend;
pub use fanout::Fanout;
pub use jetstream::{NatsAuth, NatsTls, StreamError, StreamOptions};
use published::Published;
pub use subscription::{Start, Subscription};
use tenant_index::TenantIndex;

/// When the writer makes appended records durable before acknowledging them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync before every acknowledgement (one per batch: group commit).
    Always,
    /// Acknowledge once written to the OS; fdatasync at most this often.
    Interval(Duration),
    /// Never fsync (tests and throwaway data only): a power loss may lose acknowledged writes.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "{s:?} is not a fsync policy: use always, never or interval:<milliseconds>"
                )),
            },
        }
    }
}

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

/// Subscribers reading the segment files at once.
const CATCH_UP_READERS: usize = 8;

/// Tenant events of the replayed tail kept for the next checkpoint's index, at most.
const MAX_TAIL_INDEX: usize = 1_000_000;

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
    // A tokio semaphore: subscribers catching up from the segment files wait their turn
    // instead of each taking a blocking-pool thread and its read buffer at once.
    catch_up: tokio::sync::Semaphore,
    /// What the checkpoint store's per-tenant index covers.
    index: Arc<TenantIndex>,
    log: LogReader,
    // A watch, not a broadcast: every subscriber only needs to learn "stop now".
    shutdown: watch::Sender<bool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The free-space floor inserts and new users are checked against.
    space: log::space::FreeSpace,
    /// Held for the engine's life: one process per log.
    _lock: std::fs::File,
}

/// Whether every segment a checkpoint knew is still there, at least as long as it was then.
fn segments_intact(dir: &std::path::Path, known: &log::KnownSegments) -> bool {
    let Ok(listed) = log::segment::list(dir) else {
        return false;
    };
    known.iter().all(|(first, (len, _))| {
        listed
            .iter()
            .any(|(f, path)| f == first && std::fs::metadata(path).is_ok_and(|m| m.len() >= *len))
    })
}

/// Takes the log directory's lock file, so two processes never write one log.
fn lock(dir: &std::path::Path) -> Result<std::fs::File, EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(LogError::io(&path, e).into()),
    }
}

impl Engine {
    /// Opens the log (recovering a torn tail), folds it, and starts the writer thread.
    ///
    /// Blocking: call it before serving or from `spawn_blocking`.
    pub fn open(options: EngineOptions, clock: Stamp) -> Result<(Engine, OpenReport), EngineError> {
        let lock = lock(&options.dir)?;
        if options.shared {
            log::mark_shared(&options.dir)?;
        }
        let store = options.checkpoints.as_deref().and_then(|path| {
            match checkpoint::Checkpoints::open(path) {
                Ok(store) => Some(Arc::new(store)),
                Err(why) => {
                    tracing::warn!(%why, "checkpoints unavailable; replaying the whole log");
                    None
                }
            }
        });
        let mut checkpoint_ignored = None;
        let mut start: Option<checkpoint::Loaded> = match store.as_ref().map(|s| s.load()) {
            Some(Ok(Some(loaded))) => Some(loaded),
            Some(Err(why)) => {
                checkpoint_ignored = Some(why);
                None
            }
            _ => None,
        };
        let mut repairs = Vec::new();
        let (recovered, state, records, tail_events, index_base) = loop {
            let loaded = start.clone().unwrap_or_default();
            let (mut state, known, mut index_base) =
                (loaded.state, loaded.segments, loaded.index_base);
            let skip_upto = state.cursor;
            // Tenant events replayed here go into the next checkpoint's index — unless there
            // are too many to hold, then the index starts after them.
            let mut tail_events: Vec<(String, Cursor)> = Vec::new();
            let mut records = 0u64;
            let mut bad: Option<(Cursor, String)> = None;
            let recovered = log::open_from(
                &options.dir,
                Record::cursor_of,
                options.segment_bytes,
                skip_upto,
                &known,
                |cursor, payload| {
                    if cursor <= skip_upto {
                        return;
                    }
                    match Record::decode(payload) {
                        Ok(record) => {
                            if let Some(tenant) = record.tenant() {
                                if tail_events.len() < MAX_TAIL_INDEX {
                                    tail_events.push((tenant.to_owned(), cursor));
                                } else {
                                    tail_events.clear();
                                    index_base = cursor;
                                }
                            }
                            evolve(&mut state, &record);
                            records += 1;
                        }
                        Err(e) => {
                            bad.get_or_insert((cursor, e.to_string()));
                        }
                    }
                },
            )?;
            if let Some((cursor, why)) = bad {
                return Err(EngineError::BadRecord(cursor, why));
            }
            let mut recovered = recovered;
            repairs.append(&mut recovered.repairs);
            // A shared stream's local copy skips the records its fold dropped, so its
            // checkpoint may be ahead of its last record; as long as every segment the
            // checkpoint saw is still at least as long, nothing it describes is missing.
            if recovered.last_cursor < skip_upto
                && !(options.shared && segments_intact(&options.dir, &known))
            {
                // The checkpoint is ahead of the log (the log was replaced or restored from an
                // older backup): it describes records that are not there. Start over from 0.
                checkpoint_ignored = Some(format!(
                    "the checkpoint is at cursor {skip_upto} but the log ends at {}",
                    recovered.last_cursor
                ));
                start = None;
                drop(recovered);
                continue;
            }
            break (recovered, state, records, tail_events, index_base);
        };
        if let Some(why) = &checkpoint_ignored {
            tracing::warn!(%why, "checkpoint ignored; the state was rebuilt from the log");
        }
        let checkpoint = start.as_ref().map(|l| l.state.cursor);
        let indexed_upto = if store.is_some() {
            checkpoint.unwrap_or(0)
        } else {
            0
        };
        let mut state = state;
        let cursor = recovered.last_cursor.max(state.cursor);
        state.cursor = cursor;
        let (tx, rx) = mpsc::channel(8192);
        let published = Arc::new(Published::new(
            state.clone(),
            Fanout::new(
                cursor,
                options.recent_per_tenant,
                options.recent_bytes_per_tenant,
            ),
        ));
        let index = Arc::new(TenantIndex::new(
            store.clone(),
            if checkpoint.is_some() {
                index_base
            } else {
                u64::MAX
            },
            indexed_upto,
        ));
        let inner = Arc::new(Inner {
            tx,
            published: Arc::clone(&published),
            backend: std::sync::OnceLock::new(),
            clock: Arc::clone(&clock),
            catch_up: tokio::sync::Semaphore::new(CATCH_UP_READERS),
            index: Arc::clone(&index),
            log: recovered.reader.clone(),
            shutdown: watch::Sender::new(false),
            writer: Mutex::new(None),
            space: log::space::FreeSpace::new(options.dir.clone(), options.min_free_bytes),
            _lock: lock,
        });
        if !options.shared {
            let embedded = backend::Embedded::new(
                inner.tx.clone(),
                inner.log.clone(),
                inner.published.committed(),
                inner.shutdown.subscribe(),
            );
            let _ = inner.backend.set(Arc::new(embedded));
        }
        let engine = Engine { inner };
        let handle = writer::Writer::new(
            writer::Shares {
                published,
                index,
                reader: recovered.reader,
                shared: options.shared,
            },
            recovered.writer,
            state,
            options.fsync,
            clock,
            rx,
            store.map(|store| writer::CheckpointPolicy {
                store,
                every_records: options.checkpoint_records.max(1),
                every: options.checkpoint_interval,
                tenant_events: tail_events,
                index_base,
                replayed: records,
            }),
        )
        .spawn()
        .map_err(|e| LogError::io(&options.dir, e))?;
        *engine.inner.writer.lock().expect("writer handle") = Some(handle);
        if let FsyncPolicy::Interval(every) = options.fsync {
            engine.spawn_interval_sync(every);
        }
        Ok((
            engine,
            OpenReport {
                records,
                checkpoint,
                checkpoint_ignored,
                cursor,
                repairs,
            },
        ))
    }

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
    pub async fn submit(&self, command: Command) -> Result<Vec<Record>, EngineError> {
        if matches!(
            command,
            Command::InsertEvent { .. } | Command::CreateUser(_)
        ) && let Some(free) = self.inner.space.low()
        {
            return Err(EngineError::DiskLow {
                free,
                floor: self.inner.space.floor(),
            });
        }
        self.backend()?.append(command).await
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

    /// Shared log: whether the fold dropped the record at `cursor`.
    pub(crate) fn was_dropped(&self, cursor: Cursor) -> bool {
        self.inner.published.was_dropped(cursor)
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
    /// credentials are invalidated.
    pub fn subscribe(
        &self,
        tenant: &str,
        start: Start,
        owner: Option<(&str, Cursor)>,
    ) -> Subscription {
        Subscription::new(self.clone(), tenant, start, owner)
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

    /// A turn to read the segment files for a subscriber.
    pub(crate) async fn catch_up_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.inner.catch_up.acquire().await.ok()
    }

    pub(crate) fn credentials(&self) -> &credentials::CredentialWatch {
        self.inner.published.credentials()
    }
}
