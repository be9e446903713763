//! One SSE subscriber: a cursor tailing its tenant's events.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::Engine;
use super::fanout::{NameWatch, Next, TenantFeed};
use super::sse_frame::{self, CloseReason};
use crate::log::Cursor;
use crate::state::record::EventInserted;
use crate::state::{LatestEvent, Record, RecordKind};

/// Indexed cursors at most this far apart are read in one pass rather than seeked to one by
/// one (the log's sparse index has an entry every 64 frames).
pub(super) const CLOSE_CURSORS: Cursor = 64;

/// Frames sent in one chunk at most, so one subscriber's catch-up stays incremental.
const MAX_FRAMES_PER_CHUNK: usize = 512;

/// The most bytes one catch-up read through the per-tenant index gathers (or one larger
/// frame). Larger than a scan's chunk: each such read costs an index lookup and a turn on the
/// blocking pool, and at the scan's 4 KiB a resume of small events ran 2.8x slower
/// (`broker-bench resume`: 1.18 M events/s at 1ac115f, 0.42 M at 4ce5fcd). A client that does
/// not read still pins at most 16 of them in hyper: 1 MiB.
const CATCH_UP_CHUNK_BYTES: usize = 64 * 1024;

/// Which of the tenant's events a subscription carries, by event name: the names a user may
/// read under `--enforce_scopes` (`auth::scopes::ReadFilter`), and the place a client's own
/// `?event=` list plugs in (combine both with [`EventFilter::and`]). Applied to the snapshot,
/// to catch-up reads of the log and to live frames alike; `id:` stays the global cursor.
#[derive(Clone)]
pub struct EventFilter(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl EventFilter {
    /// Carries the events whose name `allows` accepts.
    pub fn new(allows: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        EventFilter(Arc::new(allows))
    }

    /// Whether events named `name` are carried.
    pub fn allows(&self, name: &str) -> bool {
        (self.0)(name)
    }

    /// Carries what both carry.
    pub fn and(self, other: EventFilter) -> Self {
        EventFilter::new(move |name| self.allows(name) && other.allows(name))
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The snapshot (latest event per name), then live.
    Snapshot,
    /// Every event after this cursor, then live (`Last-Event-ID`).
    After(Cursor),
    /// The client sent a resume point that is not a cursor: reset frame, then snapshot.
    Invalid,
}

/// A live subscription; [`Subscription::next`] yields SSE bytes.
pub struct Subscription {
    engine: Engine,
    tenant: String,
    feed: Arc<TenantFeed>,
    newest: watch::Receiver<Cursor>,
    shutdown: watch::Receiver<bool>,
    /// Every event of the tenant up to here has been sent (or superseded in the snapshot).
    cursor: Cursor,
    first: Option<Bytes>,
    /// The snapshot still to send, as shared references to the published events: encoded a
    /// chunk at a time as the client takes them, never copied whole.
    snapshot: Snapshot,
    /// Changes when the owner's credentials are invalidated: the stream then ends.
    credentials: Option<watch::Receiver<Cursor>>,
    /// The owner's username, to tell why their credentials changed.
    owner: Option<String>,
    /// The owner's user id when the stream opened: a user created again under the same name
    /// has another one.
    owner_id: Option<[u8; 16]>,
    /// Only events of these names, if set.
    filter: Option<EventFilter>,
    /// `data:` is the envelope (`id`, `at`, `by`, `data`) rather than the bare data.
    envelope: bool,
    /// Woken only by events of these names, if set (instead of by every event of the tenant).
    names: Option<NameWatch>,
    /// When the credential that opened the stream expires: the stream then ends.
    expires: Option<tokio::time::Instant>,
    /// The final frame was sent.
    ended: bool,
}

impl Subscription {
    pub(super) fn new(
        engine: Engine,
        tenant: &str,
        start: Start,
        owner: Option<(&str, Cursor)>,
        filter: Option<EventFilter>,
    ) -> Self {
        // Watch first, then read: a change published in between is then seen as a change.
        let mut owner_id = None;
        let credentials = owner.map(|(username, epoch)| {
            let mut accepted = false;
            let mut rx = engine.credentials().watch(username, || {
                engine.read(|s| {
                    let user = s.user(username);
                    accepted = user.is_some_and(|u| u.accepts(epoch));
                    owner_id = user.map(|u| u.id);
                    user.filter(|u| !u.revoked)
                        .map_or(Cursor::MAX, |u| u.credential_epoch)
                })
            });
            if !accepted {
                // Invalidated between authentication and now: end at the first poll.
                rx.mark_changed();
            }
            rx
        });
        let feed = engine.fanout().feed(tenant);
        let newest = feed.watch();
        let shutdown = engine.shutdown_signal();
        let mut first = BytesMut::new();
        let mut snapshot = Snapshot::default();
        let log = engine.log();
        // A resume is exact only from a cursor at or after the last one compaction may
        // have dropped events before.
        let oldest_kept = log.first_cursor().max(log.horizon()).saturating_sub(1);
        let cursor = match start {
            Start::After(n) if n <= engine.cursor() && n >= oldest_kept => n,
            other => {
                // Under the lock the writer also takes: only reference counts, no bytes.
                let (mut events, cursor) =
                    engine.read(|state| (state.snapshot(tenant), state.cursor));
                // An event named like the server's own frames (from a log written before
                // they were refused) is never sent: see `sse_frame::event`.
                events.retain(|e| {
                    !e.event
                        .starts_with(crate::state::validate::RESERVED_EVENT_PREFIX)
                        && filter.as_ref().is_none_or(|f| f.allows(&e.event))
                });
                if other != Start::Snapshot {
                    let reason = match other {
                        Start::After(n) if n > cursor => "last_event_id is newer than this log",
                        Start::After(_) => "last_event_id is older than what the log keeps",
                        _ => "last_event_id is not a cursor",
                    };
                    first.extend_from_slice(&sse_frame::reset(reason, cursor));
                }
                snapshot.events = events.into();
                cursor
            }
        };
        Subscription {
            engine,
            tenant: tenant.to_owned(),
            feed,
            newest,
            shutdown,
            cursor,
            first: (!first.is_empty()).then(|| first.freeze()),
            snapshot,
            credentials,
            owner: owner.map(|(username, _)| username.to_owned()),
            owner_id,
            filter,
            envelope: false,
            names: None,
            expires: None,
            ended: false,
        }
    }

    /// Ends the stream (`broker.closed`, `expired`) at `at`: when the credential that opened
    /// it stops working, so a token that leaked cannot keep a stream past its expiry.
    pub fn until(mut self, at: tokio::time::Instant) -> Self {
        self.expires = Some(at);
        self
    }

    fn expired(&self) -> bool {
        self.expires
            .is_some_and(|at| at <= tokio::time::Instant::now())
    }

    /// Wakes only for events named in `names` — a hint for a filtered subscription whose
    /// filter passes no other name (`/sse?event=`): the filter still decides what is sent.
    pub fn wake_only_for(mut self, names: impl IntoIterator<Item = String>) -> Self {
        if self.names.is_none() {
            self.names = Some(self.feed.watch_names(names));
        }
        self
    }

    /// Sends each event's envelope as its `data:` (`/sse?envelope=true`) from now on.
    pub fn with_envelope(mut self) -> Self {
        if !self.envelope {
            self.envelope = true;
            self.snapshot.envelope = true;
            self.feed.count_envelope(true);
        }
        self
    }

    /// Whether the owner's credentials changed since the stream was opened.
    fn invalidated(&self) -> bool {
        self.credentials
            .as_ref()
            .is_some_and(|c| c.has_changed().unwrap_or(true))
    }

    /// The cursor up to which this subscriber has everything (the snapshot once sent).
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The next bytes to send: frames, or a keep-alive comment after `keep_alive` of
    /// silence. `None` when the stream must end, after one final `broker.closed` frame that
    /// says why: the owner's credentials were invalidated or expired, or the server is
    /// shutting down.
    pub async fn next(&mut self, keep_alive: Duration) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        // Before the snapshot too: credentials invalidated while the stream was being opened
        // (a Basic request waiting for Argon2, say) get none of the tenant's events.
        if self.invalidated() {
            let reason = self.why_invalidated();
            return Some(self.end(reason));
        }
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if let Some(chunk) = self.snapshot.next_chunk(super::fanout::MAX_CHUNK_BYTES) {
            return Some(chunk);
        }
        loop {
            if *self.shutdown.borrow() {
                return Some(self.end(CloseReason::Shutdown));
            }
            if self.expired() {
                return Some(self.end(CloseReason::Expired));
            }
            if self.invalidated() {
                let reason = self.why_invalidated();
                return Some(self.end(reason));
            }
            self.newest.borrow_and_update();
            match self.feed.next_after(
                self.cursor,
                MAX_FRAMES_PER_CHUNK,
                self.filter.as_ref(),
                self.envelope,
                self.names.as_ref(),
            ) {
                // Only frames the filter passed over: nothing to send, look again.
                Next::Frames(bytes, last) if bytes.is_empty() => {
                    self.cursor = last;
                    continue;
                }
                Next::Frames(bytes, last) => {
                    self.cursor = last;
                    return Some(bytes);
                }
                Next::ReadLog(upto) => match self.read_log(upto).await {
                    Some(bytes) if !bytes.is_empty() => return Some(bytes),
                    Some(_) => continue,
                    None => return None,
                },
                Next::Idle => {}
            }
            let idle = self.expires.map_or(keep_alive, |at| {
                keep_alive.min(at.saturating_duration_since(tokio::time::Instant::now()))
            });
            let invalidated = async {
                match self.credentials.as_mut() {
                    Some(rx) => {
                        let _ = rx.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let woken = async {
                match &self.names {
                    Some(names) => {
                        names.wait().await;
                        Ok(())
                    }
                    None => self.newest.changed().await,
                }
            };
            tokio::select! {
                changed = woken => if changed.is_err() { return None },
                _ = self.shutdown.changed() => continue,
                // `changed()` marked the change seen: end here, not at the loop's check.
                _ = invalidated => {
                    let reason = self.why_invalidated();
                    return Some(self.end(reason));
                }
                // One timer for both: the keep-alive, or the expiry if it comes first.
                _ = tokio::time::sleep(idle) => {
                    if self.expired() {
                        return Some(self.end(CloseReason::Expired));
                    }
                    return Some(Bytes::from_static(sse_frame::KEEP_ALIVE));
                }
            }
        }
    }

    /// The final frame, after which [`Self::next`] yields nothing.
    fn end(&mut self, reason: CloseReason) -> Bytes {
        self.ended = true;
        sse_frame::closed(reason, self.cursor)
    }

    /// Why the owner's credential epoch moved, as the published state tells now.
    fn why_invalidated(&self) -> CloseReason {
        let Some(username) = self.owner.as_deref() else {
            return CloseReason::CredentialsChanged;
        };
        // A user created again under the same name is another user: the stream's own user
        // was deleted.
        self.engine.read(|s| match s.user(username) {
            None => CloseReason::Deleted,
            Some(u) if Some(u.id) != self.owner_id => CloseReason::Deleted,
            Some(u) if u.revoked => CloseReason::Revoked,
            Some(_) => CloseReason::CredentialsChanged,
        })
    }

    /// Reads this tenant's events after our cursor, up to `upto`, from the segment files:
    /// through the per-tenant index where it reaches (only this tenant's records are read),
    /// by scanning the log beyond it.
    async fn read_log(&mut self, upto: Cursor) -> Option<Bytes> {
        if let Some((_, base, indexed)) = self.engine.tenant_index()
            && self.cursor >= base
            && self.cursor < indexed
        {
            return self.read_indexed(upto.min(indexed)).await;
        }
        self.scan_log(upto).await
    }

    async fn read_indexed(&mut self, until: Cursor) -> Option<Bytes> {
        let engine = self.engine.clone();
        let tenant = self.tenant.clone();
        let after = self.cursor;
        let filter = self.filter.clone();
        let envelope = self.envelope;
        let read = self
            .engine
            .read_files(&self.tenant, move || -> Result<(Bytes, Cursor), String> {
                let (store, _, _) = engine.tenant_index().ok_or("the tenant index went away")?;
                let cursors = store
                    .tenant_cursors(&tenant, after, until, MAX_FRAMES_PER_CHUNK)
                    .map_err(|e| e.to_string())?;
                let mut out = BytesMut::new();
                // The last indexed cursor looked at, and whether the chunk is full: a chunk holds
                // at most CATCH_UP_CHUNK_BYTES (or one larger frame), so a stream that does not
                // read pins no more than hyper's 16 chunks of it however large its tenant's events.
                let mut looked = after;
                let mut full = false;
                // Cursors close together are read in one pass (skipping the records between
                // undecoded); far apart, each is a seek. One read per cursor made a busy
                // tenant's catch-up 7x slower than scanning (broker-bench resume).
                for run in cursors.chunk_by(|a, b| b - a <= CLOSE_CURSORS) {
                    let (first, last) = (run[0], run[run.len() - 1]);
                    let mut wanted = run.iter().peekable();
                    engine
                        .log()
                        .read_after(first - 1, last, |cursor, payload| {
                            // An indexed cursor the log no longer holds (compaction dropped it)
                            // is passed, not waited for: else the rest of its run was skipped.
                            while wanted.next_if(|w| **w < cursor).is_some() {}
                            if wanted.peek() != Some(&&cursor) {
                                return true;
                            }
                            wanted.next();
                            looked = cursor;
                            // The index is a cache and may name a cursor another tenant's record
                            // holds now (a tail lost with `--fsync never` and written again): only
                            // the record itself says whose it is, as history's pages check too.
                            if let Ok(record) = Record::decode(payload)
                                && let RecordKind::EventInserted(e) = &record.kind
                                && e.tenant == tenant
                                && filter.as_ref().is_none_or(|f| f.allows(&e.event))
                            {
                                out.extend_from_slice(&frame(cursor, record.at_ms, e, envelope));
                                if out.len() >= CATCH_UP_CHUNK_BYTES {
                                    full = true;
                                    return false;
                                }
                            }
                            wanted.peek().is_some()
                        })
                        .map_err(|e| e.to_string())?;
                    if full {
                        break;
                    }
                }
                let reached = match cursors.last() {
                    _ if full => looked,
                    Some(last) if cursors.len() == MAX_FRAMES_PER_CHUNK => *last,
                    _ => until,
                };
                Ok((out.freeze(), reached))
            })
            .await;
        match read {
            Some(Ok((bytes, reached))) => {
                self.cursor = reached;
                Some(bytes)
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, tenant = %self.tenant, "the tenant index failed; scanning the log");
                self.scan_log(until).await
            }
            None => None,
        }
    }

    /// Reads this tenant's events after our cursor, up to `upto`, scanning every record.
    async fn scan_log(&mut self, upto: Cursor) -> Option<Bytes> {
        let log = self.engine.log().clone();
        let tenant = self.tenant.clone();
        let after = self.cursor;
        let filter = self.filter.clone();
        let envelope = self.envelope;
        let read = self
            .engine
            .read_files(&self.tenant, move || {
                let mut out = BytesMut::new();
                let mut frames = 0;
                let mut last_event = after;
                // Records looked at: a filter that matches nothing would otherwise read the
                // whole log since the last checkpoint in one turn of a reading thread.
                let mut looked = 0;
                let scanned = log.read_after(after, upto, |cursor, payload| {
                    looked += 1;
                    let Ok(record) = Record::decode(payload) else {
                        return true;
                    };
                    if let RecordKind::EventInserted(e) = &record.kind
                        && e.tenant == tenant
                        && filter.as_ref().is_none_or(|f| f.allows(&e.event))
                    {
                        out.extend_from_slice(&frame(cursor, record.at_ms, e, envelope));
                        frames += 1;
                        last_event = cursor;
                    }
                    frames < MAX_FRAMES_PER_CHUNK
                        && out.len() < super::fanout::MAX_CHUNK_BYTES
                        && looked < SCAN_BUDGET
                });
                scanned.map(|scanned| {
                    // Full chunk: resume right after the last event sent; cut by the budget:
                    // after the last record looked at; otherwise everything up to `upto` has
                    // been looked at.
                    let reached = if frames >= MAX_FRAMES_PER_CHUNK
                        || out.len() >= super::fanout::MAX_CHUNK_BYTES
                    {
                        last_event
                    } else if looked >= SCAN_BUDGET {
                        scanned
                    } else {
                        scanned.max(upto)
                    };
                    (out.freeze(), reached)
                })
            })
            .await;
        match read {
            Some(Ok((bytes, reached))) => {
                self.cursor = reached;
                Some(bytes)
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, tenant = %self.tenant, "reading the log for a subscriber failed");
                None
            }
            None => None,
        }
    }
}

/// Records one turn of a reading thread looks at for a stream catching up by scanning, at
/// most (a history page's budget): the stream goes on from there in its next turn, after the
/// other readers queued meanwhile.
const SCAN_BUDGET: u64 = super::history::LOOK_BUDGET;

/// The frame of an event read from the log: bare or enveloped.
fn frame(cursor: Cursor, at_ms: i64, e: &EventInserted, envelope: bool) -> Bytes {
    if envelope {
        let data = sse_frame::envelope(&e.id, at_ms, e.author(), &e.data);
        sse_frame::event(cursor, &e.event, &data)
    } else {
        sse_frame::event(cursor, &e.event, &e.data)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.envelope {
            self.feed.count_envelope(false);
        }
        if let Some(names) = &self.names {
            self.feed.unwatch_names(names);
        }
        self.engine.fanout().release(&self.tenant, &self.feed);
    }
}

/// A snapshot being sent: the events left, and how much of the first one's frame is out.
#[derive(Default)]
struct Snapshot {
    events: std::collections::VecDeque<LatestEvent>,
    sent: usize,
    /// Each event's `data:` is its envelope.
    envelope: bool,
}

impl Snapshot {
    /// The next at most `budget` bytes of the snapshot's frames (a frame may span chunks: the
    /// wire does not care where a chunk ends), or `None` once it is all sent.
    fn next_chunk(&mut self, budget: usize) -> Option<Bytes> {
        let mut out = BytesMut::new();
        while out.len() < budget {
            let Some(event) = self.events.front() else {
                break;
            };
            let mut head = format!("id: {}\nevent: {}\ndata: ", event.cursor, event.event);
            // The envelope's head is rendered again for each chunk the frame spans, and the
            // data itself never copied: rendering the whole envelope per 4 KiB chunk made a
            // 1 MB event cost 256 copies of itself (2.4 s of CPU for 16 of them, an attack
            // review).
            let tail = if self.envelope {
                head.push_str(&sse_frame::envelope_head(
                    &event.id,
                    event.at_ms,
                    event.by.as_deref(),
                    0,
                ));
                sse_frame::ENVELOPE_TAIL
            } else {
                ""
            };
            let parts: [&[u8]; 4] = [
                head.as_bytes(),
                event.data.as_bytes(),
                tail.as_bytes(),
                b"\n\n",
            ];
            let total: usize = parts.iter().map(|p| p.len()).sum();
            let mut skip = self.sent;
            for part in parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                let room = budget - out.len();
                let take = (part.len() - skip).min(room);
                out.extend_from_slice(&part[skip..skip + take]);
                self.sent += take;
                skip = 0;
                if out.len() == budget {
                    break;
                }
            }
            if self.sent == total {
                self.events.pop_front();
                self.sent = 0;
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn event(cursor: Cursor, name: &str, data: &str) -> LatestEvent {
        LatestEvent {
            cursor,
            id: [0; 16],
            event: Arc::from(name),
            data: Arc::from(data),
            at_ms: 0,
            by: None,
        }
    }

    #[test]
    fn a_snapshot_goes_out_in_bounded_chunks_that_add_up_to_its_frames() {
        let big = "x".repeat(10_000);
        let events = vec![
            event(3, "a", "1"),
            event(5, "big", &big),
            event(9, "c", "true"),
        ];
        let expected: Vec<u8> = events
            .iter()
            .flat_map(|e| sse_frame::event(e.cursor, &e.event, &e.data).to_vec())
            .collect();
        // With envelopes too: the frames a live subscriber gets, split anywhere.
        let enveloped: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                let data = sse_frame::envelope(&e.id, e.at_ms, e.by.as_deref(), &e.data);
                sse_frame::event(e.cursor, &e.event, &data).to_vec()
            })
            .collect();
        for (envelope, expected) in [(false, &expected), (true, &enveloped)] {
            for budget in [1, 7, 100, 4096, 1 << 20] {
                let mut snapshot = Snapshot {
                    events: events.clone().into(),
                    sent: 0,
                    envelope,
                };
                let mut wire = Vec::new();
                let mut chunks = 0;
                while let Some(chunk) = snapshot.next_chunk(budget) {
                    assert!(chunk.len() <= budget, "{} > {budget}", chunk.len());
                    wire.extend_from_slice(&chunk);
                    chunks += 1;
                    assert!(chunks <= expected.len(), "no progress");
                }
                assert_eq!(&wire, expected, "budget {budget}, envelope {envelope}");
            }
        }
    }
}
