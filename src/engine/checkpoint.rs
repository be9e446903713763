//! Checkpoints and indexes in fjall: what can be rebuilt from the log but is expensive to.
//!
//! - the projections at some cursor, so that a restart replays only the tail of the log;
//! - each segment's sparse cursor → offset index, so the segments a restart does not read
//!   can still be sought in;
//! - per-tenant event cursors, so an SSE resume of a quiet tenant reads its own events
//!   instead of scanning every tenant's records.
//!
//! Everything is written in one atomic fjall batch per checkpoint. It is only an
//! optimisation: a store that is missing, corrupt, of another schema, ahead of the log or
//! taken from another log (see [`Anchor`]) is ignored (with a warning) and the log replayed
//! in full. Deleting it loses nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rkyv::{Archive, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log::reader::{CLOSED, FrameWalk, ZeroLength};
use crate::log::sparse_index::SparseIndex;
use crate::log::{Cursor, LogError, segment};
use crate::state::{Record, State};

/// Bumped whenever `Snapshot` changes shape: older checkpoints are then ignored. (7: the
/// [`Anchor`]; a checkpoint stored before it is ignored once and rebuilt from the log.)
pub const SCHEMA: u32 = 7;

const KEY: &[u8] = b"newest";

/// A snapshot of the state smaller than this goes into every checkpoint: it costs little.
pub const SNAPSHOT_FREE_BYTES: u64 = 4 << 20;

/// Above [`SNAPSHOT_FREE_BYTES`], the next snapshot waits for one record per this many of the
/// last one's bytes. A snapshot costs ~22 ns of machine CPU per byte (encoding, fjall's
/// journal, table and compaction, freeing the clone; measured at 24 MB, 100,000 users in
/// 10,000 tenants), so this keeps its share near 0.7 µs per record, ~3 % of a durable insert,
/// up to [`SNAPSHOT_RECORDS_MAX`].
pub const SNAPSHOT_BYTES_PER_RECORD: u64 = 32;

/// The most records between two snapshots (unless `--checkpoint_records` asks for more): a
/// start after a crash replays them (~0.2 s), and indexes their tenant events only up to
/// `MAX_TAIL_INDEX`, which leaves room for the checkpoints' own spacing.
pub const SNAPSHOT_RECORDS_MAX: u64 = 1_000_000;

/// How many records must follow a snapshot of `len` bytes before the next one is stored:
/// `every` (`--checkpoint_records`) for a small state, more for a large one, so that the cost
/// of snapshots per record stays flat as the state grows. Checkpoints in between store only
/// the tenant index.
pub fn snapshot_due(len: u64, every: u64) -> u64 {
    if len < SNAPSHOT_FREE_BYTES {
        return every;
    }
    (len / SNAPSHOT_BYTES_PER_RECORD).clamp(every, every.max(SNAPSHOT_RECORDS_MAX))
}

/// A segment as a checkpoint records it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Its first cursor (its name).
    pub first: Cursor,
    /// Its length when the checkpoint was taken.
    pub len: u64,
    /// Its sparse cursor → offset index.
    pub index: Vec<(Cursor, u64)>,
}

/// A loaded checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The projections at the checkpoint's cursor.
    pub state: State,
    /// Segments by first cursor: length then, and sparse index.
    pub segments: HashMap<Cursor, (u64, Vec<(Cursor, u64)>)>,
    /// The per-tenant index holds every event in (index_base, state.cursor].
    pub index_base: Cursor,
}

/// Key of one tenant event: tenant bytes, 0xFF (never in UTF-8), cursor big-endian.
/// Index writes at least this big are ingested as a table instead of journaled.
const INGEST_FROM: usize = 4096;

/// Tenant events since the last checkpoint, for its per-tenant index: each tenant's name held
/// once, with its events' cursors in the order they came. Replay and the writer add one per
/// insert; a `(String, Cursor)` pair each cost an allocation and a copy of the name.
#[derive(Debug, Default)]
pub struct TenantEvents {
    by_tenant: crate::state::projection::Map<String, Vec<Cursor>>,
    len: usize,
}

impl TenantEvents {
    /// Adds `tenant`'s event at `cursor`.
    pub fn push(&mut self, tenant: &str, cursor: Cursor) {
        match self.by_tenant.get_mut(tenant) {
            Some(cursors) => cursors.push(cursor),
            None => {
                self.by_tenant.insert(tenant.to_owned(), vec![cursor]);
            }
        }
        self.len += 1;
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every event.
    pub fn clear(&mut self) {
        self.by_tenant.clear();
        self.len = 0;
    }

    /// Every `(tenant, cursor)`, tenant by tenant.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Cursor)> + '_ {
        self.by_tenant
            .iter()
            .flat_map(|(tenant, cursors)| cursors.iter().map(move |c| (tenant.as_str(), *c)))
    }
}

impl<T: AsRef<str>> FromIterator<(T, Cursor)> for TenantEvents {
    fn from_iter<I: IntoIterator<Item = (T, Cursor)>>(iter: I) -> Self {
        let mut events = TenantEvents::default();
        for (tenant, cursor) in iter {
            events.push(tenant.as_ref(), cursor);
        }
        events
    }
}

fn tenant_key(tenant: &str, cursor: Cursor) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 9);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0xFF);
    key.extend_from_slice(&cursor.to_be_bytes());
    key
}

/// The state, as stored: the projections themselves, and what a start needs to trust them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    schema: u32,
    state: State,
    /// (first cursor, file length) of the segments when the checkpoint was taken: a start
    /// skips reading an old segment only while its length is still the same, so a torn or
    /// truncated older segment is still found and refused at start.
    segments: Vec<(Cursor, u64)>,
    /// The per-tenant index is complete for cursors above this one.
    index_base: Cursor,
    /// The log this state was folded from; `None` only for the empty state (cursor 0).
    anchor: Option<Anchor>,
}

/// What ties a checkpoint to the log it was taken from: the newest record of that log at or
/// below the checkpoint's cursor, by cursor and the SHA-256 of its frame's payload.
///
/// Why: a store copied from another database whose log reached the same cursor passed every
/// other check (schema, CRC, not ahead of the log) and was served, with the other database's
/// users. A payload holds its record's time and random ids, so two logs never share one by
/// chance; a start compares the anchor with the log before it trusts the projections.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    cursor: Cursor,
    digest: [u8; 32],
}

impl Anchor {
    /// The anchor of a state at `cursor` folded from the log in `log_dir`, found through
    /// `segments` (first cursor, sparse index): `None` for the empty state at cursor 0.
    fn of(
        log_dir: &Path,
        segments: &[(Cursor, &[(Cursor, u64)])],
        cursor: Cursor,
    ) -> Result<Option<Anchor>, String> {
        if cursor == 0 {
            return Ok(None);
        }
        match Self::find(log_dir, segments, cursor) {
            Ok(Some(anchor)) => Ok(Some(anchor)),
            Ok(None) => Err(format!(
                "the log holds no record at or below cursor {cursor}"
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Refuses a checkpoint at `cursor` whose `stored` anchor is not the log's, found through
    /// the segments the checkpoint recorded. The log is read as it is on disk, before a start
    /// opens it: anything that keeps the anchor from being found refuses the checkpoint.
    fn check(
        log_dir: &Path,
        segments: &[(Cursor, &[(Cursor, u64)])],
        cursor: Cursor,
        stored: Option<Anchor>,
    ) -> Result<(), CheckpointError> {
        let found = Self::of(log_dir, segments, cursor);
        let why = match (stored, found) {
            (stored, Ok(found)) if stored == found => return Ok(()),
            (None, _) => format!("it names no record of its log (its cursor is {cursor})"),
            (Some(stored), Ok(Some(found))) if found.cursor == stored.cursor => format!(
                "its record at cursor {} is not the log's record there (a checkpoint store copied from another database?)",
                stored.cursor
            ),
            (Some(stored), Ok(_)) => format!(
                "its newest record, at cursor {}, is not the log's newest at or below cursor {cursor}",
                stored.cursor
            ),
            (Some(stored), Err(why)) => format!(
                "its record at cursor {} cannot be read from the log: {why}",
                stored.cursor
            ),
        };
        Err(CheckpointError::OtherLog(why))
    }

    /// The newest record at or below `cursor` in the segments of `log_dir` listed (first
    /// cursor, sparse index): each is sought through its index, so this reads at most about
    /// [`crate::log::sparse_index::EVERY`] frames per segment, newest segment first (it holds
    /// the record unless the log skips cursors, as a shared stream's local copy does).
    /// `Ok(None)`: no record at or below `cursor` there.
    fn find(
        log_dir: &Path,
        segments: &[(Cursor, &[(Cursor, u64)])],
        cursor: Cursor,
    ) -> Result<Option<Anchor>, LogError> {
        let mut candidates: Vec<_> = segments
            .iter()
            .filter(|(first, _)| *first <= cursor)
            .collect();
        candidates.sort_unstable_by_key(|(first, _)| std::cmp::Reverse(*first));
        for (first, index) in candidates {
            let path = segment::path(log_dir, *first);
            let from = SparseIndex::from_entries(index.to_vec()).start_after(cursor - 1);
            if let Some(anchor) = Self::newest_in(&path, from, cursor)? {
                return Ok(Some(anchor));
            }
        }
        Ok(None)
    }

    /// The newest record at or below `cursor` among the frames of `path` from byte `from` on.
    fn newest_in(path: &Path, from: u64, cursor: Cursor) -> Result<Option<Anchor>, LogError> {
        // Read before the log is open, so without the writer's flushed end: the zeros it
        // reserved ahead of its records end the walk.
        let mut frames = FrameWalk::new(path, segment::open(path)?, from, CLOSED, ZeroLength::End)?;
        let mut newest = Vec::new();
        let mut found = None;
        while let Some((at, payload)) = frames.next_frame()? {
            let Some(at_cursor) = Record::cursor_of(payload) else {
                return Err(LogError::Damaged {
                    path: path.to_owned(),
                    offset: at,
                    reason: "frame holds no valid record".into(),
                });
            };
            if at_cursor > cursor {
                break;
            }
            found = Some(at_cursor);
            // Only the newest payload is hashed; the walk reuses its buffer.
            newest.clear();
            newest.extend_from_slice(payload);
        }
        Ok(found.map(|cursor| Anchor {
            cursor,
            digest: Sha256::digest(&newest).into(),
        }))
    }
}

/// The checkpoint store (a fjall database).
pub struct Checkpoints {
    path: PathBuf,
    /// The log it checkpoints: `log` beside the store, as everything that opens one lays
    /// them out (`<db>/log` and `<db>/checkpoints`). Read to anchor a checkpoint to its log.
    log_dir: PathBuf,
    // A std RwLock: saves and reads share it (fjall is thread-safe); only
    // [`Checkpoints::rewrite`] takes it alone, to close the database and replace its
    // directory. `None` only if reopening after a rewrite failed: the store then answers
    // errors, which every caller treats as "no checkpoint".
    store: RwLock<Option<Store>>,
    /// Saves of a state older than this cursor are dropped: taken before a rewrite, such a
    /// state could still hold what the rewrite erased.
    floor: AtomicU64,
    /// The stored snapshot's size in bytes (0: none stored).
    snapshot_len: AtomicU64,
}

/// The open fjall database and its keyspaces.
struct Store {
    db: Database,
    keyspace: Keyspace,
    tenants: Keyspace,
    offsets: Keyspace,
}

impl Store {
    fn open(path: &Path) -> Result<Self, CheckpointError> {
        let db = Database::builder(path).open().map_err(store(format!(
            "cannot open checkpoints in {}",
            path.display()
        )))?;
        let open = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(store(format!(
                    "cannot open checkpoints in {}",
                    path.display()
                )))
        };
        let (keyspace, tenants, offsets) = (
            open("checkpoints")?,
            open("tenant_events")?,
            open("segment_offsets")?,
        );
        Ok(Store {
            db,
            keyspace,
            tenants,
            offsets,
        })
    }
}

/// Lets fjall give back the memory of the checkpoint it was just given. fjall keeps a written
/// value in its memtable, and after a flush in the tree version that still names that memtable
/// until a later flush collects old versions: a checkpoint is as large as the state, so the
/// server held every user a second time (measured at 1 M users: 458 B per user instead of
/// 267). Two flushes here — the checkpoint's, then one of a marker written after it — leave no
/// version naming the memtable; they write a table of the checkpoint on the checkpoint's own
/// thread, off the writer's path.
fn release_value(keyspace: &Keyspace) -> Result<(), fjall::Error> {
    flush(keyspace)?;
    keyspace.insert(FLUSHED, [])?;
    flush(keyspace)
}

/// How long [`flush`] waits for fjall's flush worker, at most.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Seals the memtable and waits (at most [`FLUSH_WAIT`]) until fjall wrote it to a table.
/// fjall's own `rotate_memtable_and_wait` waits forever, and a flush that fails (a disk fault)
/// leaves its memtable sealed: the checkpoint thread, and a shutdown that joins it, would hang.
/// fjall has no stable flush call; these two are public but unlisted in its docs.
fn flush(keyspace: &Keyspace) -> Result<(), fjall::Error> {
    if keyspace.rotate_memtable()? {
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        while keyspace.sealed_memtable_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(())
}

/// The marker [`release_value`] writes after a checkpoint (never read).
const FLUSHED: &[u8] = b"flushed";

/// Where a rewrite moves the old store before deleting it; found at open, it is deleted then.
fn retired(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".retired");
    path.with_file_name(name)
}

/// Why a checkpoint could not be stored or used. Never fatal: the log is the truth, and a
/// start without a usable checkpoint replays it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The fjall store failed at `doing`.
    #[error("{doing}: {source}")]
    Store {
        /// What was being done.
        doing: String,
        /// fjall's error.
        source: fjall::Error,
    },
    /// A file operation on the store's directory failed.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done.
        doing: String,
        /// The error.
        source: std::io::Error,
    },
    /// A rewrite could not reopen the store; checkpoints are off until the next start.
    #[error("the checkpoint store in {0} is closed after a failed rewrite")]
    Closed(PathBuf),
    /// Encoding the state failed.
    #[error("encoding a checkpoint failed: {0}")]
    Encode(rkyv::rancor::Error),
    /// The stored checkpoint is shorter than its CRC.
    #[error("the checkpoint is truncated")]
    Truncated,
    /// The stored checkpoint fails its CRC.
    #[error("the checkpoint fails its CRC")]
    BadCrc,
    /// The stored checkpoint does not decode.
    #[error("the checkpoint does not decode: {0}")]
    Decode(rkyv::rancor::Error),
    /// The stored checkpoint has another shape.
    #[error("the checkpoint has schema {0}, this build writes {SCHEMA}")]
    Schema(u32),
    /// The stored checkpoint was not taken from this log (see [`Anchor`]).
    #[error("the checkpoint does not match the log: {0}")]
    OtherLog(String),
}

/// Deletes the directory a rewrite retired, if any, and makes that durable.
fn remove_retired(path: &Path) -> Result<(), CheckpointError> {
    let retired = retired(path);
    if retired.exists() {
        std::fs::remove_dir_all(&retired).map_err(|e| CheckpointError::Io {
            doing: format!("deleting {}", retired.display()),
            source: e,
        })?;
        if let Some(parent) = path.parent() {
            crate::log::segment::sync_dir(parent).map_err(|e| CheckpointError::Io {
                doing: format!("syncing {}", parent.display()),
                source: e,
            })?;
        }
    }
    Ok(())
}

/// A fjall error with what was being done.
fn store(doing: impl Into<String>) -> impl FnOnce(fjall::Error) -> CheckpointError {
    let doing = doing.into();
    move |source| CheckpointError::Store { doing, source }
}

impl Checkpoints {
    /// Opens (or creates) the store in `path`, first deleting what an interrupted
    /// [`Self::rewrite`] left (it may hold erased users' fields).
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        remove_retired(path)?;
        Ok(Checkpoints {
            path: path.to_owned(),
            log_dir: path.with_file_name("log"),
            store: RwLock::new(Some(Store::open(path)?)),
            floor: AtomicU64::new(0),
            snapshot_len: AtomicU64::new(0),
        })
    }

    /// The size of the stored snapshot of the state, in bytes (0: none stored).
    pub fn snapshot_len(&self) -> u64 {
        self.snapshot_len.load(Ordering::Acquire)
    }

    /// Runs `f` on the open store.
    fn with<R>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, CheckpointError>,
    ) -> Result<R, CheckpointError> {
        let guard = self.store.read().expect("checkpoint store lock");
        match guard.as_ref() {
            Some(store) => f(store),
            None => Err(CheckpointError::Closed(self.path.clone())),
        }
    }

    /// Replaces the store with a new database holding only the per-tenant index: no
    /// checkpoint, so no projection — nothing of a deleted user's fields (fjall keeps
    /// overwritten values in its journal and tables until it compacts them, so overwriting
    /// the checkpoint would not be enough). The old directory is renamed away first, then
    /// deleted; a crash in between leaves it under a name [`Self::open`] deletes.
    ///
    /// Called after a compaction that rewrote segments: the stored checkpoint named those
    /// segments and could no longer be used anyway. The next checkpoint of a state at
    /// `newest` or later is written as usual.
    pub fn rewrite(&self, newest: Cursor) -> Result<(), CheckpointError> {
        let mut guard = self.store.write().expect("checkpoint store lock");
        self.floor.fetch_max(newest, Ordering::AcqRel);
        self.snapshot_len.store(0, Ordering::Release);
        let keys = match guard.as_ref() {
            Some(old) => old
                .tenants
                .iter()
                .map(|g| g.key().map(|k| k.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(store("reading the tenant index"))?,
            None => Vec::new(),
        };
        // Closing the database stops its threads and frees its directory.
        drop(guard.take());
        let retired = retired(&self.path);
        let io = |doing: &str, e: std::io::Error| CheckpointError::Io {
            doing: format!("{doing} {}", self.path.display()),
            source: e,
        };
        if self.path.exists() {
            std::fs::rename(&self.path, &retired).map_err(|e| io("retiring", e))?;
        }
        remove_retired(&self.path)?;
        let fresh = Store::open(&self.path)?;
        if !keys.is_empty() {
            let mut ingestion = fresh
                .tenants
                .start_ingestion()
                .map_err(store("copying the tenant index"))?;
            for key in keys {
                ingestion
                    .write(key, Vec::<u8>::new())
                    .map_err(store("copying the tenant index"))?;
            }
            ingestion
                .finish()
                .map_err(store("copying the tenant index"))?;
        }
        fresh
            .db
            .persist(PersistMode::SyncAll)
            .map_err(store("writing the rewritten store"))?;
        *guard = Some(fresh);
        Ok(())
    }

    /// Stores the tenant events since the last checkpoint and, with a `state`, that state as
    /// the newest snapshot with the segments' lengths and indexes — one atomic, durable batch.
    /// Without a state (a large one whose next snapshot is not due yet, see
    /// [`snapshot_due`]) the stored snapshot stays, and a start replays the log after it.
    pub fn save(
        &self,
        state: Option<State>,
        segments: Vec<SegmentInfo>,
        tenant_events: &TenantEvents,
        index_base: Cursor,
    ) -> Result<(), CheckpointError> {
        // A save that fails late, after the writer went on (tests of the failure's pickup).
        #[cfg(feature = "fault-injection")]
        if crate::log::fault::fails_at("checkpoint:save") {
            std::thread::sleep(std::time::Duration::from_millis(800));
            return Err(CheckpointError::Io {
                doing: "saving a checkpoint".into(),
                source: std::io::Error::other("failpoint checkpoint:save"),
            });
        }
        // The index entries still go in without a state, or with a stale one: the writer
        // counts on them.
        let anchored = match state {
            Some(state) if state.cursor >= self.floor.load(Ordering::Acquire) => {
                let located: Vec<_> = segments
                    .iter()
                    .map(|s| (s.first, s.index.as_slice()))
                    .collect();
                match Anchor::of(&self.log_dir, &located, state.cursor) {
                    Ok(anchor) => Some((state, anchor)),
                    Err(why) => {
                        // Unanchored, a start could not trust it: the stored one stays.
                        tracing::warn!(%why, "checkpoint stored without the state");
                        None
                    }
                }
            }
            _ => None,
        };
        let value = match anchored {
            Some((state, anchor)) => {
                let lengths = segments.iter().map(|s| (s.first, s.len)).collect();
                let snapshot = Snapshot {
                    schema: SCHEMA,
                    state,
                    segments: lengths,
                    index_base,
                    anchor,
                };
                let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot)
                    .map_err(CheckpointError::Encode)?;
                let mut value = Vec::with_capacity(bytes.len() + 4);
                value.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
                value.extend_from_slice(&bytes);
                Some(value)
            }
            None => None,
        };
        self.with(|st| {
            let mut batch = st.db.batch().durability(Some(PersistMode::SyncAll));
            if tenant_events.len() >= INGEST_FROM {
                // Bulk-loaded straight into a table: through the journal, a start's index of up
                // to a million entries made every later start replay it (1.6 s of a 1.8 s start
                // of a 10 M-record log, measured with broker-bench restart). Entries ingested
                // for a checkpoint that then fails to commit are harmless: readers use the index
                // only up to the cursor a stored checkpoint vouches for.
                let mut keys: Vec<Vec<u8>> = tenant_events
                    .iter()
                    .map(|(tenant, cursor)| tenant_key(tenant, cursor))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let fail = |e: fjall::Error| CheckpointError::Store {
                    doing: "writing the tenant index".into(),
                    source: e,
                };
                let mut ingestion = st.tenants.start_ingestion().map_err(fail)?;
                for key in keys {
                    ingestion.write(key, Vec::<u8>::new()).map_err(fail)?;
                }
                ingestion.finish().map_err(fail)?;
            } else {
                for (tenant, cursor) in tenant_events.iter() {
                    batch.insert(&st.tenants, tenant_key(tenant, cursor), Vec::<u8>::new());
                }
            }
            for segment in &segments {
                let mut encoded = Vec::with_capacity(segment.index.len() * 16);
                for (cursor, offset) in &segment.index {
                    encoded.extend_from_slice(&cursor.to_le_bytes());
                    encoded.extend_from_slice(&offset.to_le_bytes());
                }
                batch.insert(&st.offsets, segment.first.to_be_bytes(), encoded);
            }
            let len = value.as_ref().map(|v| v.len() as u64);
            if let Some(value) = value {
                batch.insert(&st.keyspace, KEY, value);
            }
            batch.commit().map_err(store("writing a checkpoint"))?;
            if let Some(len) = len {
                self.snapshot_len.store(len, Ordering::Release);
                release_value(&st.keyspace).map_err(store("flushing a checkpoint"))?;
            }
            Ok(())
        })
    }

    /// Cursors of `tenant`'s events in `(after, upto]`, at most `max`, from the index.
    pub fn tenant_cursors(
        &self,
        tenant: &str,
        after: Cursor,
        upto: Cursor,
        max: usize,
    ) -> Result<Vec<Cursor>, CheckpointError> {
        self.indexed(tenant, after, upto, max, false)
    }

    /// Cursors of `tenant`'s events in `(after, upto]`, the newest `max` of them, newest first.
    pub fn tenant_cursors_newest(
        &self,
        tenant: &str,
        after: Cursor,
        upto: Cursor,
        max: usize,
    ) -> Result<Vec<Cursor>, CheckpointError> {
        self.indexed(tenant, after, upto, max, true)
    }

    /// The index's cursors of `tenant` in `(after, upto]`: the first `max`, or the last `max`
    /// newest first.
    fn indexed(
        &self,
        tenant: &str,
        after: Cursor,
        upto: Cursor,
        max: usize,
        newest_first: bool,
    ) -> Result<Vec<Cursor>, CheckpointError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        self.with(|st| {
            let range = st
                .tenants
                .range(tenant_key(tenant, after + 1)..=tenant_key(tenant, upto));
            let keys: Box<dyn Iterator<Item = _>> = if newest_first {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            let mut out = Vec::new();
            for guard in keys.take(max) {
                let key = guard.key().map_err(store("reading the tenant index"))?;
                let tail: [u8; 8] = key[key.len() - 8..].try_into().expect("8 bytes");
                out.push(u64::from_be_bytes(tail));
            }
            Ok(out)
        })
    }

    /// The newest checkpoint and the segment lengths it saw, or why there is none to use.
    pub fn load(&self) -> Result<Option<Loaded>, CheckpointError> {
        self.with(|st| {
            let Some(value) = st.keyspace.get(KEY).map_err(store(format!(
                "reading the checkpoint in {}",
                self.path.display()
            )))?
            else {
                return Ok(None);
            };
            if value.len() < 4 {
                return Err(CheckpointError::Truncated);
            }
            let (crc, bytes) = value.split_at(4);
            if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != crc32c::crc32c(bytes) {
                return Err(CheckpointError::BadCrc);
            }
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            let snapshot = rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(&aligned)
                .map_err(CheckpointError::Decode)?;
            if snapshot.schema != SCHEMA {
                return Err(CheckpointError::Schema(snapshot.schema));
            }
            let mut segments = HashMap::new();
            for (first, len) in &snapshot.segments {
                let index: Vec<(Cursor, u64)> = st
                    .offsets
                    .get(first.to_be_bytes())
                    .map_err(store("reading segment offsets"))?
                    .map(|bytes| {
                        bytes
                            .chunks_exact(16)
                            .map(|c| {
                                (
                                    u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                                    u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                segments.insert(*first, (*len, index));
            }
            let located: Vec<_> = segments
                .iter()
                .map(|(first, (_, index))| (*first, index.as_slice()))
                .collect();
            Anchor::check(
                &self.log_dir,
                &located,
                snapshot.state.cursor,
                snapshot.anchor,
            )?;
            // Only a usable snapshot delays the next (a corrupt or foreign one is replaced at
            // once).
            self.snapshot_len
                .store(value.len() as u64, Ordering::Release);
            let index_base = snapshot.index_base;
            Ok(Some(Loaded {
                state: snapshot.state,
                segments,
                index_base,
            }))
        })
    }
}

#[cfg(test)]
mod ingestion_tests {
    use super::*;

    #[test]
    fn a_large_index_is_ingested_and_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let state = State {
            cursor: 3 * INGEST_FROM as Cursor,
            ..State::default()
        };
        let log = log_upto(dir.path(), state.cursor, "u");
        // Two tenants interleaved, unsorted by key, one entry repeated.
        let mut events: TenantEvents = (1..=state.cursor)
            .map(|c| (if c % 2 == 0 { "even" } else { "odd" }, c))
            .collect();
        events.push("odd", 1);
        {
            let store = Checkpoints::open(&path).unwrap();
            store
                .save(Some(state.clone()), log.clone(), &events, 0)
                .unwrap();
            // A small save after it goes through the journal, as before.
            let more: TenantEvents = [("odd", state.cursor + 1)].into_iter().collect();
            store.save(Some(state.clone()), log, &more, 0).unwrap();
        }
        let store = Checkpoints::open(&path).unwrap();
        let odd = store
            .tenant_cursors("odd", 0, Cursor::MAX, usize::MAX)
            .unwrap();
        let expected: Vec<Cursor> = (1..=state.cursor + 1).filter(|c| c % 2 == 1).collect();
        assert_eq!(odd, expected);
        let even = store.tenant_cursors("even", 100, 110, 3).unwrap();
        assert_eq!(even, vec![102, 104, 106]);
        assert!(store.load().unwrap().is_some());
    }
}

/// An empty state at `cursor`, for the store's tests.
#[cfg(test)]
fn at(cursor: Cursor) -> State {
    State {
        cursor,
        ..State::default()
    }
}

/// For the store's tests: writes the log beside the store in `db` as one segment of records
/// 1 to `upto` (each revoking `who`), and returns it as a checkpoint records it.
#[cfg(test)]
fn log_upto(db: &Path, upto: Cursor, who: &str) -> Vec<SegmentInfo> {
    use crate::state::RecordKind;
    let dir = db.join("log");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = segment::Header::new(1).encode().to_vec();
    let mut index = SparseIndex::default();
    for cursor in 1..=upto {
        let record = Record {
            cursor,
            at_ms: cursor as i64,
            kind: RecordKind::UserRevoked {
                username: who.to_owned(),
            },
        };
        index.note(cursor - 1, cursor, bytes.len() as u64);
        crate::log::frame::encode_into(&mut bytes, &record.encode());
    }
    std::fs::write(segment::path(&dir, 1), &bytes).unwrap();
    vec![SegmentInfo {
        first: 1,
        len: bytes.len() as u64,
        index: index.entries().to_vec(),
    }]
}

#[cfg(test)]
mod anchor_tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_loaded_from_its_own_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let store = Checkpoints::open(&path).unwrap();
        let log = log_upto(dir.path(), 200, "ann");
        store
            .save(Some(at(150)), log, &TenantEvents::default(), 0)
            .unwrap();
        assert_eq!(store.load().unwrap().unwrap().state.cursor, 150);
        // The log grew after the checkpoint: still its own.
        log_upto(dir.path(), 300, "ann");
        assert_eq!(store.load().unwrap().unwrap().state.cursor, 150);

        // Another log with the same cursors: refused, and it delays no snapshot.
        drop(store);
        let store = Checkpoints::open(&path).unwrap();
        log_upto(dir.path(), 300, "eve");
        let refused = store.load().unwrap_err();
        assert!(
            matches!(&refused, CheckpointError::OtherLog(why) if why.contains("cursor 150 is not the log's")),
            "{refused}"
        );
        assert_eq!(store.snapshot_len(), 0);
        // A log that does not reach it, and no log at all: refused too.
        log_upto(dir.path(), 100, "ann");
        assert!(matches!(store.load(), Err(CheckpointError::OtherLog(_))));
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
        assert!(matches!(store.load(), Err(CheckpointError::OtherLog(_))));
        // With no record to anchor it to, a state is not stored (the stored one stays).
        store
            .save(Some(at(7)), Vec::new(), &TenantEvents::default(), 0)
            .unwrap();
        log_upto(dir.path(), 300, "ann");
        assert_eq!(store.load().unwrap().unwrap().state.cursor, 150);
    }
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;

    #[test]
    fn a_rewrite_keeps_the_tenant_index_and_drops_the_checkpoint_and_older_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let store = Checkpoints::open(&path).unwrap();
        let log = log_upto(dir.path(), 5, "u");
        let events: TenantEvents = [("t", 1), ("t", 2)].into_iter().collect();
        store.save(Some(at(2)), log.clone(), &events, 0).unwrap();
        store.rewrite(5).unwrap();
        assert!(
            store.load().unwrap().is_none(),
            "no checkpoint after a rewrite"
        );
        assert_eq!(store.tenant_cursors("t", 0, 10, 10).unwrap(), vec![1, 2]);
        // A state taken before the rewrite may hold what it erased: only its index entries go in.
        store
            .save(
                Some(at(4)),
                log.clone(),
                &[("t", 3)].into_iter().collect(),
                0,
            )
            .unwrap();
        assert!(store.load().unwrap().is_none());
        assert_eq!(store.tenant_cursors("t", 0, 10, 10).unwrap(), vec![1, 2, 3]);
        store
            .save(Some(at(5)), log, &TenantEvents::default(), 0)
            .unwrap();
        assert_eq!(store.load().unwrap().unwrap().state.cursor, 5);
        drop(store);
        // What a crash in the middle of a rewrite leaves is deleted at the next open.
        std::fs::create_dir_all(retired(&path)).unwrap();
        std::fs::write(retired(&path).join("0.jnl"), b"erased").unwrap();
        let _store = Checkpoints::open(&path).unwrap();
        assert!(!retired(&path).exists());
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    #[test]
    fn a_small_state_is_snapshotted_every_checkpoint_and_a_large_one_by_its_size() {
        // Below the free size: every `--checkpoint_records`, as asked.
        assert_eq!(snapshot_due(0, 1), 1);
        assert_eq!(snapshot_due(SNAPSHOT_FREE_BYTES - 1, 100_000), 100_000);
        // Above it: one record per SNAPSHOT_BYTES_PER_RECORD bytes, never fewer than asked…
        let mb8 = 8 << 20;
        assert_eq!(snapshot_due(mb8, 1), mb8 / SNAPSHOT_BYTES_PER_RECORD);
        assert_eq!(snapshot_due(mb8, 100_000), 262_144);
        assert_eq!(snapshot_due(SNAPSHOT_FREE_BYTES, 200_000), 200_000);
        // …and at most SNAPSHOT_RECORDS_MAX, unless the flag asks for more.
        assert_eq!(snapshot_due(1 << 40, 1), SNAPSHOT_RECORDS_MAX);
        assert_eq!(snapshot_due(1 << 40, 2_000_000), 2_000_000);
    }

    #[test]
    fn a_save_without_a_state_adds_to_the_index_and_keeps_the_stored_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let store = Checkpoints::open(&path).unwrap();
        assert_eq!(store.snapshot_len(), 0);
        store
            .save(
                Some(at(2)),
                log_upto(dir.path(), 4, "u"),
                &[("t", 1), ("t", 2)].into_iter().collect(),
                0,
            )
            .unwrap();
        let len = store.snapshot_len();
        assert!(len > 0);
        store
            .save(
                None,
                Vec::new(),
                &[("t", 3), ("u", 4)].into_iter().collect(),
                0,
            )
            .unwrap();
        assert_eq!(store.snapshot_len(), len, "no snapshot was stored");
        assert_eq!(store.load().unwrap().unwrap().state.cursor, 2);
        assert_eq!(store.tenant_cursors("t", 0, 10, 10).unwrap(), vec![1, 2, 3]);
        assert_eq!(store.tenant_cursors("u", 0, 10, 10).unwrap(), vec![4]);
        drop(store);
        // A reopened store learns the snapshot's size when it loads it.
        let store = Checkpoints::open(&path).unwrap();
        assert_eq!(store.snapshot_len(), 0);
        assert_eq!(store.load().unwrap().unwrap().state.cursor, 2);
        assert_eq!(store.snapshot_len(), len);
        assert_eq!(store.tenant_cursors("t", 0, 10, 10).unwrap(), vec![1, 2, 3]);
        // A rewrite drops the snapshot, so the next one is due at once.
        store.rewrite(4).unwrap();
        assert_eq!(store.snapshot_len(), 0);
    }
}
