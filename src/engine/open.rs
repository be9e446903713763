//! Opening an engine: take the log's lock, recover the segments (cutting a torn tail), load
//! the newest usable checkpoint and replay the tail after it, then start the writer thread.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::published::Published;
use super::tenant_index::TenantIndex;
use super::*;
use crate::log::{self, LogError};
use crate::state::evolve_archived;
use crate::state::record::ArchivedRecordKind;

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

impl Engine {
    /// Opens the log (recovering a torn tail), folds it, and starts the writer thread.
    ///
    /// Blocking: call it before serving or from `spawn_blocking`.
    pub fn open(options: EngineOptions, clock: Stamp) -> Result<(Engine, OpenReport), EngineError> {
        let lock = log::lock::take(&options.dir).map_err(|e| match e {
            log::lock::LockError::Held(dir) => EngineError::Locked(dir),
            log::lock::LockError::Log(e) => EngineError::Log(e),
        })?;
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
                checkpoint_ignored = Some(why.to_string());
                None
            }
            _ => None,
        };
        let mut repairs = Vec::new();
        let (recovered, state, records, tail_events, index_base) = loop {
            let loaded = start.clone().unwrap_or_default();
            let (mut state, known, mut index_base) =
                (loaded.state, loaded.segments, loaded.index_base);
            // A parameter of the rules, not a fact of the log: this start's flag wins over
            // whatever the checkpoint was stored with, before the tail is folded with it.
            state.idempotency.window_ms = options.idempotency_window_ms;
            let skip_upto = state.cursor;
            // Tenant events replayed here go into the next checkpoint's index — unless there
            // are too many to hold, then the index starts after them.
            let mut tail_events = checkpoint::TenantEvents::default();
            let mut records = 0u64;
            let mut bad: Option<(Cursor, String)> = None;
            let recovered = log::open_from(
                &options.dir,
                Record::cursor_of,
                options.segment_bytes,
                skip_upto,
                &known,
                !options.shared,
                |cursor, payload| {
                    if cursor <= skip_upto {
                        return;
                    }
                    // The scan's codec validated this record just now: it is read as is.
                    let folded = Record::with_archived(payload, |archived| {
                        if let ArchivedRecordKind::EventInserted(e) = &archived.kind {
                            if tail_events.len() < MAX_TAIL_INDEX {
                                tail_events.push(e.tenant.as_str(), cursor);
                            } else {
                                tail_events.clear();
                                index_base = cursor;
                            }
                        }
                        evolve_archived(&mut state, archived).map_err(|e| e.to_string())
                    })
                    .map_err(|e| e.to_string())
                    .and_then(std::convert::identity);
                    match folded {
                        Ok(()) => records += 1,
                        Err(why) => {
                            bad.get_or_insert((cursor, why));
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
        // Every record the replay decoded is freed by now (see `engine::heap`).
        super::heap::release_freed();
        let (tx, rx) = mpsc::channel(8192);
        let published = Arc::new(Published::new(
            state,
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
            tenant_limits: options.tenant_limits,
            readers: readers::Readers::start(CATCH_UP_READERS)
                .map_err(|e| LogError::io(&options.dir, e))?,
            index: Arc::clone(&index),
            log: recovered.reader.clone(),
            shutdown: watch::Sender::new(false),
            writer: Mutex::new(None),
            space: log::space::FreeSpace::new(options.dir.clone(), options.min_free_bytes),
            last_probe: Mutex::new(None),
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
                tenant_limits: options.tenant_limits,
            },
            recovered.writer,
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
}
