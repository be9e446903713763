//! A tenant's past events a page at a time (`GET /events`), read from the log.
//!
//! A page costs what it returns, not the tenant's history: the cursors of the tenant's events
//! come from the per-tenant index in the checkpoint store where it reaches (only this tenant's
//! records are read, like a subscriber's catch-up), and from a scan of the log beyond it —
//! the tail since the last checkpoint, at most `--checkpoint_records`, or the whole log when
//! checkpoints are off. Scans go in windows that grow from the page's size, and every page
//! looks at no more than [`LOOK_BUDGET`] records: a page cut short by it (a filter that
//! matches little, a log without an index) holds what was found and a `next` to go on from.

use super::subscription::CLOSE_CURSORS;
use super::{Engine, EngineError, EventFilter};
use crate::log::{Cursor, LogError, LogReader};
use crate::state::{Record, RecordKind};

/// Records one page may look at, at most (index entries and scanned records alike).
pub const LOOK_BUDGET: u64 = 100_000;

/// Bytes of events (data, name and author) one page holds, at most, beyond its last event: a
/// page of 1,000 events of 1 MB each was a gigabyte held for a client that need not read it.
/// A page cut short by it holds what fits and a `next` to go on from, as a budget-cut page.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The largest window of the log scanned in one pass going backwards.
const MAX_WINDOW: u64 = 64 * 1024;

/// Which way a page goes from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Cursors above this one, oldest first.
    After(Cursor),
    /// Cursors below this one, newest first.
    Before(Cursor),
    /// The newest events, newest first.
    Newest,
}

/// One event of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastEvent {
    /// Its cursor.
    pub cursor: Cursor,
    /// UUIDv7 bytes.
    pub id: [u8; 16],
    /// Event name.
    pub event: String,
    /// When it was appended, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Who inserted it (`None`: the admin).
    pub by: Option<String>,
    /// Compact JSON text.
    pub data: String,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// At most the page's limit, in the page's order.
    pub events: Vec<PastEvent>,
    /// The cursor to pass as `after` (or `before`) for the next page; `None` when there is
    /// nothing more that way.
    pub next: Option<Cursor>,
    /// The newest cursor of the log when the page was read.
    pub head: Cursor,
}

impl Engine {
    /// Up to `limit` of `tenant`'s events from `from`, only names `filter` allows.
    pub async fn history(
        &self,
        tenant: &str,
        from: Direction,
        limit: usize,
        filter: Option<EventFilter>,
    ) -> Result<Page, EngineError> {
        // On the same reading threads as subscribers catching up: history must not take
        // every blocking thread, nor the request path's CPU.
        let engine = self.clone();
        let key = tenant;
        let tenant = tenant.to_owned();
        self.read_files(key, move || {
            let head = engine.cursor();
            let reading = Reading {
                engine: &engine,
                tenant: &tenant,
                filter: filter.as_ref(),
                want: limit.saturating_add(1),
                budget: LOOK_BUDGET,
                found: Vec::new(),
                bytes: 0,
                batch: None,
                cut: false,
            };
            let (found, stopped_at) = match from {
                Direction::After(after) => reading.forward(after, head)?,
                Direction::Before(before) => {
                    reading.backward(before.min(head.saturating_add(1)))?
                }
                Direction::Newest => reading.backward(head.saturating_add(1))?,
            };
            let mut events = found;
            let next = if events.len() > limit {
                events.truncate(limit);
                events.last().map(|e| e.cursor)
            } else {
                stopped_at
            };
            Ok::<_, LogError>(Page { events, next, head })
        })
        .await
        .ok_or(EngineError::ShuttingDown)?
        .map_err(EngineError::from)
    }
}

/// One page being read.
struct Reading<'a> {
    engine: &'a Engine,
    tenant: &'a str,
    filter: Option<&'a EventFilter>,
    /// The page's limit plus one: the extra event says whether there is a next page.
    want: usize,
    budget: u64,
    found: Vec<PastEvent>,
    /// [`event_bytes`] of the events in `found` that are kept.
    bytes: usize,
    /// Going backwards, a batch is read oldest first but the page keeps its newest: the
    /// batch's events start at `found[start]`, and those before `found[dropped]` were dropped
    /// for [`PAGE_BYTES`] (their data freed at once, the entries at [`Reading::settle`]).
    batch: Option<Batch>,
    /// The page reached [`PAGE_BYTES`]: it ends at its last event.
    cut: bool,
}

/// See [`Reading::batch`].
#[derive(Clone, Copy)]
struct Batch {
    start: usize,
    dropped: usize,
}

/// What an event of a page weighs against [`PAGE_BYTES`]: its texts and a fixed part.
fn event_bytes(e: &PastEvent) -> usize {
    e.data.len() + e.event.len() + e.by.as_ref().map_or(0, String::len) + 64
}

impl Reading<'_> {
    fn full(&self) -> bool {
        self.cut || self.found.len() >= self.want
    }

    /// Counts the event just pushed against [`PAGE_BYTES`]. Forwards, the page ends with
    /// it; backwards, the batch's oldest events go until the rest fits (the newest is kept
    /// whatever its size if the page holds nothing else), and the page ends there.
    fn weigh_last(&mut self) {
        self.bytes += self.found.last().map_or(0, event_bytes);
        if self.bytes <= PAGE_BYTES {
            return;
        }
        self.cut = true;
        if let Some(batch) = &mut self.batch {
            while self.bytes > PAGE_BYTES && batch.dropped + 1 < self.found.len() {
                let gone = &mut self.found[batch.dropped];
                self.bytes -= event_bytes(gone);
                gone.data = String::new();
                batch.dropped += 1;
            }
        }
    }

    /// Ends a backward batch: removes the events dropped for [`PAGE_BYTES`].
    fn settle(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.found.drain(batch.start..batch.dropped);
        }
    }

    /// Where the next page starts when this one was cut by [`PAGE_BYTES`]: at its last event.
    fn cut_at(&self) -> Option<Cursor> {
        self.found.last().filter(|_| self.cut).map(|e| e.cursor)
    }

    /// Keeps `record` if it is one of the tenant's events the filter allows.
    fn keep(&mut self, record: &Record) {
        if let RecordKind::EventInserted(e) = &record.kind
            && e.tenant == self.tenant
            && self.filter.is_none_or(|f| f.allows(&e.event))
        {
            self.found.push(PastEvent {
                cursor: record.cursor,
                id: e.id,
                event: e.event.clone(),
                at_ms: record.at_ms,
                by: e.author().map(str::to_owned),
                data: e.data.clone(),
            });
            self.weigh_last();
        }
    }

    /// The index's range `(base, upto]`, if usable.
    fn indexed(&self) -> Option<(Cursor, Cursor)> {
        self.engine
            .tenant_index()
            .map(|(_, base, upto)| (base, upto))
    }

    /// Oldest first from `after` up to `head`. Returns what was found and, when the budget
    /// ran out first, the cursor up to which everything was looked at.
    fn forward(
        mut self,
        mut at: Cursor,
        head: Cursor,
    ) -> Result<(Vec<PastEvent>, Option<Cursor>), LogError> {
        while at < head && !self.full() {
            if self.budget == 0 {
                return Ok((self.found, Some(at)));
            }
            match self.indexed() {
                Some((base, upto)) if at >= base && at < upto => {
                    let batch = (self.want - self.found.len()).min(self.budget as usize);
                    let Some(cursors) = self.index_cursors(at, upto, batch, false) else {
                        at = self.scan_forward(at, upto)?;
                        continue;
                    };
                    self.budget -= cursors.len() as u64;
                    at = match cursors.last() {
                        Some(last) if cursors.len() == batch => *last,
                        _ => upto,
                    };
                    self.read_cursors(&cursors)?;
                }
                indexed => {
                    // Below the index (it starts after a huge replayed tail) or beyond it.
                    let end = match indexed {
                        Some((base, _)) if at < base => base,
                        _ => head,
                    };
                    at = self.scan_forward(at, end)?;
                }
            }
        }
        let next = self.cut_at();
        Ok((self.found, next))
    }

    /// Newest first below `before`. Returns what was found and, when the budget ran out
    /// first, the cursor below which the next page starts.
    fn backward(
        mut self,
        mut before: Cursor,
    ) -> Result<(Vec<PastEvent>, Option<Cursor>), LogError> {
        let oldest = self.engine.log().first_cursor().max(1);
        let mut window = (self.want as u64).saturating_mul(2).max(64);
        while before > oldest && !self.full() {
            if self.budget == 0 {
                return Ok((self.found, Some(before)));
            }
            let top = before - 1;
            let indexed = self.indexed();
            if let Some((base, upto)) = indexed
                && top > base
                && top <= upto
            {
                let batch = (self.want - self.found.len()).min(self.budget as usize);
                if let Some(mut cursors) = self.index_cursors(base, top, batch, true) {
                    self.budget -= cursors.len() as u64;
                    before = match cursors.last() {
                        Some(last) if cursors.len() == batch => *last,
                        _ => base + 1,
                    };
                    cursors.reverse();
                    let from = self.found.len();
                    self.batch = Some(Batch {
                        start: from,
                        dropped: from,
                    });
                    self.read_cursors(&cursors)?;
                    self.settle();
                    self.found[from..].reverse();
                    continue;
                }
            }
            // Beyond the index (the tail since the last checkpoint), below it, or without
            // one: scan a window under `before`, growing while it finds too little.
            let floor = match indexed {
                Some((_, upto)) if top > upto => upto,
                _ => 0,
            };
            let span = window.min(self.budget).min(top - floor).max(1);
            let after = top - span;
            self.scan_window(after, top)?;
            before = after + 1;
            window = window.saturating_mul(2).min(MAX_WINDOW);
        }
        let next = self.cut_at();
        Ok((self.found, next))
    }

    /// Cursors of the tenant's events from the index: in `(after, upto]` ascending, or the
    /// newest of them descending when `newest_first`.
    fn index_cursors(
        &self,
        after: Cursor,
        upto: Cursor,
        max: usize,
        newest_first: bool,
    ) -> Option<Vec<Cursor>> {
        let (store, _, _) = self.engine.tenant_index()?;
        let read = if newest_first {
            store.tenant_cursors_newest(self.tenant, after, upto, max)
        } else {
            store.tenant_cursors(self.tenant, after, upto, max)
        };
        // The index is only an optimisation: when it fails, the caller scans that range.
        read.inspect_err(|e| {
            tracing::warn!(error = %e, "the tenant index failed; history scans the log instead");
        })
        .ok()
    }

    /// Reads the records at `cursors` (ascending): close ones in one pass, far ones by seeking.
    fn read_cursors(&mut self, cursors: &[Cursor]) -> Result<(), LogError> {
        let log: LogReader = self.engine.log().clone();
        for run in cursors.chunk_by(|a, b| b - a <= CLOSE_CURSORS) {
            let (first, last) = (run[0], run[run.len() - 1]);
            let mut wanted = run.iter().peekable();
            log.read_after(first - 1, last, |cursor, payload| {
                // A cursor compaction removed is passed over, not waited for.
                while wanted.next_if(|w| **w < cursor).is_some() {}
                if wanted.next_if(|w| **w == cursor).is_some()
                    && let Ok(record) = Record::decode(payload)
                {
                    self.keep(&record);
                }
                // Forwards, a page cut by its bytes ends at its last event; backwards, the
                // batch is read whole and keeps its newest.
                wanted.peek().is_some() && !(self.cut && self.batch.is_none())
            })?;
            if self.cut && self.batch.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Scans `(at, end]` oldest first until the page is full or the budget is spent; returns
    /// the cursor up to which everything was looked at.
    fn scan_forward(&mut self, at: Cursor, end: Cursor) -> Result<Cursor, LogError> {
        let log = self.engine.log().clone();
        let mut looked = 0u64;
        let budget = self.budget;
        let reached = log.read_after(at, end, |_, payload| {
            looked += 1;
            if let Ok(record) = Record::decode(payload) {
                self.keep(&record);
            }
            !self.full() && looked < budget
        })?;
        self.budget -= looked.min(self.budget);
        // Stopped early: up to the last record visited; read to the end: all of `(at, end]`.
        Ok(if self.full() || looked >= budget {
            reached
        } else {
            end
        })
    }

    /// Scans the window `(after, top]` whole and keeps the newest of its events the page
    /// still needs, newest first.
    fn scan_window(&mut self, after: Cursor, top: Cursor) -> Result<(), LogError> {
        let log = self.engine.log().clone();
        let mut looked = 0u64;
        let from = self.found.len();
        let want = self.want;
        self.want = usize::MAX;
        self.batch = Some(Batch {
            start: from,
            dropped: from,
        });
        let read = log.read_after(after, top, |_, payload| {
            looked += 1;
            if let Ok(record) = Record::decode(payload) {
                self.keep(&record);
            }
            true
        });
        self.settle();
        self.want = want;
        read?;
        self.budget -= looked.min(self.budget);
        let window = self.found.split_off(from);
        let room = want.saturating_sub(self.found.len());
        self.found.extend(window.into_iter().rev().take(room));
        Ok(())
    }
}
