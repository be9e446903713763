//! Per-tenant fan-out: a subscriber is woken only by its own tenant's records.
//!
//! Each tenant with events or subscribers has a [`TenantFeed`]: a bounded ring of its
//! recent frames and a `watch` of its newest cursor. The writer pushes each durable event
//! into its tenant's ring and bumps that tenant's watch, so the cost of an insert is
//! O(subscribers of that tenant). A subscriber that falls behind the ring reads the gap
//! back from the log at its own cursor: the writer never waits for anyone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use super::sse_frame;
use super::subscription::EventFilter;
use crate::log::Cursor;
use crate::state::projection::Map;
use crate::state::{Record, RecordKind};

/// All tenant feeds, and the newest published cursor.
pub struct Fanout {
    // One std mutex for the map and the published cursor together: a feed created by a
    // subscriber and a batch published by the writer are then ordered, so a new feed's
    // "everything up to here is only in the log" mark is exact.
    inner: Mutex<Feeds>,
    capacity: usize,
    capacity_bytes: usize,
}

struct Feeds {
    /// Keyed by tenant names clients choose: a DoS-resistant keyed hash, as the state's.
    by_tenant: Map<String, Arc<TenantFeed>>,
    published: Cursor,
}

/// One tenant's recent frames and wake-up signal.
pub struct TenantFeed {
    // std mutex: held only to push or copy out a few `Bytes` handles.
    recent: Mutex<Recent>,
    newest: watch::Sender<Cursor>,
    /// Open envelope subscribers (`?envelope=true`): while there are none, publishing
    /// renders only the plain frame, so the common stream pays nothing for envelopes.
    envelopes: AtomicUsize,
}

/// One event in a ring: its plain frame, and its envelope frame when rendered.
struct RecentFrame {
    cursor: Cursor,
    frame: Bytes,
    /// Rendered at publish time only while the tenant has an envelope subscriber; one that
    /// finds it missing reads that event from the log instead (`Next::ReadLog`).
    envelope: Option<Bytes>,
}

impl RecentFrame {
    fn len(&self) -> usize {
        self.frame.len() + self.envelope.as_ref().map_or(0, Bytes::len)
    }
}

/// The recent frames of one tenant, oldest first.
pub struct Recent {
    frames: VecDeque<RecentFrame>,
    /// The bytes of `frames`: big events must not let one tenant's ring grow without bound.
    bytes: usize,
    /// Every event of this tenant at or below this cursor may be missing from `frames`
    /// and must be read from the log.
    pub only_in_log_upto: Cursor,
    /// Subscribers woken by the names they filter on rather than by every event
    /// (`/sse?event=`), by name. Empty for most tenants: publishing then looks at nothing.
    named: HashMap<Arc<str>, Named>,
}

/// The subscribers woken by one event name.
struct Named {
    wakers: Vec<Arc<Notify>>,
    /// The newest frame of this name evicted from the ring while it had subscribers: one
    /// asleep since before that must read the log, one awake since may skip what left.
    evicted: Cursor,
}

/// A subscriber woken only by events of its names (see [`TenantFeed::watch_names`]).
pub struct NameWatch {
    names: Vec<Arc<str>>,
    waker: Arc<Notify>,
    /// Evictions are recorded for these names from here on; below it, the log decides.
    floor: Cursor,
}

impl NameWatch {
    /// Resolves at the next event of one of the names (at once if one came since the last
    /// wake-up: the permit is kept).
    pub async fn wait(&self) {
        self.waker.notified().await;
    }
}

/// The most bytes of frames handed to one subscriber in one chunk. hyper queues up to 16
/// chunks per connection while the client does not read, so this bounds what a stalled
/// subscriber can pin in memory (16 × 4 KiB), whatever the event sizes and rates.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024;

/// What a subscriber at some cursor should do next.
pub enum Next {
    /// Frames with cursors above the subscriber's, and the cursor of the last one.
    Frames(Bytes, Cursor),
    /// The ring no longer covers the subscriber: read the log up to this cursor.
    ReadLog(Cursor),
    /// Nothing new.
    Idle,
}

impl Fanout {
    /// Feeds whose rings keep `capacity` frames and `capacity_bytes` bytes at most per tenant.
    pub(crate) fn new(published: Cursor, capacity: usize, capacity_bytes: usize) -> Self {
        Fanout {
            inner: Mutex::new(Feeds {
                by_tenant: Map::default(),
                published,
            }),
            capacity: capacity.max(1),
            capacity_bytes: capacity_bytes.max(1),
        }
    }

    /// The newest published cursor.
    pub fn published(&self) -> Cursor {
        self.inner.lock().expect("fanout lock").published
    }

    /// Open subscriptions, and tenants with at least one (scraped by `/metrics`).
    pub fn subscribers(&self) -> (u64, u64) {
        let feeds = self.inner.lock().expect("fanout lock");
        feeds
            .by_tenant
            .values()
            .map(|feed| feed.newest.receiver_count() as u64)
            .filter(|n| *n > 0)
            .fold((0, 0), |(subs, tenants), n| (subs + n, tenants + 1))
    }

    /// The feed of `tenant`, created if needed.
    pub fn feed(&self, tenant: &str) -> Arc<TenantFeed> {
        let mut feeds = self.inner.lock().expect("fanout lock");
        let published = feeds.published;
        Arc::clone(
            feeds
                .by_tenant
                .entry(tenant.to_owned())
                .or_insert_with(|| TenantFeed::new(published)),
        )
    }

    /// Forgets `tenant`'s feed if `feed` (its last subscriber's) is the only other hold on it
    /// and its ring is empty: a stream opened for a tenant that has no events — an admin
    /// ticket may name any tenant — must not leave a feed behind for ever.
    pub(crate) fn release(&self, tenant: &str, feed: &Arc<TenantFeed>) {
        let mut feeds = self.inner.lock().expect("fanout lock");
        // Every other hold is taken under this lock (`feed`, `publish`): the count is exact.
        let unused = Arc::strong_count(feed) == 2
            && feed.recent.lock().expect("feed lock").frames.is_empty();
        if unused
            && feeds
                .by_tenant
                .get(tenant)
                .is_some_and(|mine| Arc::ptr_eq(mine, feed))
        {
            feeds.by_tenant.remove(tenant);
        }
    }

    /// Tenants with a feed now.
    pub fn feeds(&self) -> usize {
        self.inner.lock().expect("fanout lock").by_tenant.len()
    }

    /// Moves the published cursor past records no subscriber sees: a shared log's records
    /// that the fold dropped (`state::recheck`).
    pub(crate) fn advance(&self, cursor: Cursor) {
        let mut feeds = self.inner.lock().expect("fanout lock");
        feeds.published = feeds.published.max(cursor);
    }

    /// [`Fanout::stage`], then the wake-ups at once (the writer wakes only after it answered
    /// the batch's requests).
    #[cfg(test)]
    pub(crate) fn publish<'a>(&self, records: impl Iterator<Item = &'a Record>) {
        self.stage(records).wake();
    }

    /// Pushes durable records into their tenants' feeds; the [`Wakeups`] wake those tenants'
    /// subscribers only.
    ///
    /// The subscribers are not woken yet: waking a thousand of them queues a thousand tasks
    /// on the runtime, and the requests that wrote the batch would be answered after them.
    /// The frames are in the rings already, so the wake-ups only decide when subscribers look.
    pub(crate) fn stage<'a>(&self, records: impl Iterator<Item = &'a Record>) -> Wakeups {
        let mut touched: Vec<(Arc<TenantFeed>, Cursor)> = Vec::new();
        let mut wake: Vec<Arc<Notify>> = Vec::new();
        let mut feeds = self.inner.lock().expect("fanout lock");
        let before = feeds.published;
        let mut newest = before;
        for record in records {
            newest = newest.max(record.cursor);
            let RecordKind::EventInserted(e) = &record.kind else {
                continue;
            };
            // Looked up by `&str`: the tenant's name is copied only for its first feed (an
            // entry per insert copied it each time, to drop it at once).
            if !feeds.by_tenant.contains_key(e.tenant.as_str()) {
                feeds
                    .by_tenant
                    .insert(e.tenant.clone(), TenantFeed::new(before));
            }
            let feed = &feeds.by_tenant[e.tenant.as_str()];
            let entry = RecentFrame {
                cursor: record.cursor,
                frame: sse_frame::event(record.cursor, &e.event, &e.data),
                envelope: (feed.envelopes.load(Ordering::Acquire) > 0).then(|| {
                    let data = sse_frame::envelope(&e.id, record.at_ms, e.author(), &e.data);
                    sse_frame::event(record.cursor, &e.event, &data)
                }),
            };
            {
                let mut guard = feed.recent.lock().expect("feed lock");
                let recent = &mut *guard;
                if !recent.named.is_empty()
                    && let Some(named) = recent.named.get(e.event.as_str())
                {
                    wake.extend(named.wakers.iter().cloned());
                }
                recent.bytes += entry.len();
                recent.frames.push_back(entry);
                // The newest frame always stays (it is what wakes the subscribers).
                while recent.frames.len() > 1
                    && (recent.frames.len() > self.capacity || recent.bytes > self.capacity_bytes)
                    && let Some(evicted) = recent.frames.pop_front()
                {
                    recent.bytes -= evicted.len();
                    recent.only_in_log_upto = evicted.cursor;
                    if !recent.named.is_empty()
                        && let Some(name) = sse_frame::event_name(&evicted.frame)
                        && let Some(named) = recent.named.get_mut(name)
                    {
                        named.evicted = evicted.cursor;
                    }
                }
            }
            match touched.iter_mut().find(|(f, _)| Arc::ptr_eq(f, feed)) {
                Some((_, cursor)) => *cursor = record.cursor,
                None => touched.push((Arc::clone(feed), record.cursor)),
            }
        }
        feeds.published = newest;
        drop(feeds);
        Wakeups {
            feeds: touched,
            named: wake,
        }
    }
}

/// The subscribers a staged batch must wake: each touched tenant's feed and its newest
/// cursor (unfiltered subscribers), and the filtered subscribers of the names it carried.
#[must_use = "staged frames reach no subscriber until they are woken"]
pub(crate) struct Wakeups {
    feeds: Vec<(Arc<TenantFeed>, Cursor)>,
    named: Vec<Arc<Notify>>,
}

impl Wakeups {
    /// Nobody to wake.
    pub(crate) fn none() -> Self {
        Wakeups {
            feeds: Vec::new(),
            named: Vec::new(),
        }
    }

    /// Wakes the subscribers of every touched tenant.
    pub(crate) fn wake(self) {
        for (feed, cursor) in self.feeds {
            feed.newest.send_replace(cursor);
        }
        for waker in self.named {
            waker.notify_one();
        }
    }
}

impl TenantFeed {
    /// `next_after` for a filtered or envelope subscriber, from the frame at `start`: at most
    /// `max_frames` frames looked at, at most a chunk of bytes sent.
    fn selected(
        recent: &Recent,
        start: usize,
        max_frames: usize,
        filter: Option<&EventFilter>,
        envelope: bool,
    ) -> Next {
        let mut out = bytes::BytesMut::new();
        let mut last = None;
        for entry in recent.frames.range(start..).take(max_frames) {
            let wanted = filter.is_none_or(|filter| {
                sse_frame::event_name(&entry.frame).is_some_and(|name| filter.allows(name))
            });
            let frame = match (wanted, envelope) {
                (false, _) => None,
                (true, false) => Some(&entry.frame),
                (true, true) => match &entry.envelope {
                    Some(frame) => Some(frame),
                    // Published before this subscriber counted: its envelope is rendered
                    // from the log, after what is gathered so far is sent.
                    None if last.is_none() => return Next::ReadLog(entry.cursor),
                    None => break,
                },
            };
            if let Some(frame) = frame {
                if !out.is_empty() && out.len() + frame.len() > MAX_CHUNK_BYTES {
                    break;
                }
                out.extend_from_slice(frame);
            }
            last = Some(entry.cursor);
        }
        match last {
            None => Next::Idle,
            Some(last) => Next::Frames(out.freeze(), last),
        }
    }

    fn new(only_in_log_upto: Cursor) -> Arc<Self> {
        Arc::new(TenantFeed {
            recent: Mutex::new(Recent {
                frames: VecDeque::new(),
                bytes: 0,
                only_in_log_upto,
                named: HashMap::new(),
            }),
            newest: watch::Sender::new(only_in_log_upto),
            envelopes: AtomicUsize::new(0),
        })
    }

    /// A receiver woken whenever this tenant gets a new event.
    pub fn watch(&self) -> watch::Receiver<Cursor> {
        self.newest.subscribe()
    }

    /// Registers a subscriber that only events named in `names` should wake: a filtered
    /// subscriber of a busy tenant then sleeps through the other names instead of waking for
    /// each to pass it over. Undo with [`Self::unwatch_names`].
    pub(crate) fn watch_names(&self, names: impl IntoIterator<Item = String>) -> NameWatch {
        let waker = Arc::new(Notify::new());
        let mut recent = self.recent.lock().expect("feed lock");
        let names: Vec<Arc<str>> = names.into_iter().map(Arc::from).collect();
        for name in &names {
            recent
                .named
                .entry(Arc::clone(name))
                .or_insert_with(|| Named {
                    wakers: Vec::new(),
                    evicted: 0,
                })
                .wakers
                .push(Arc::clone(&waker));
        }
        NameWatch {
            names,
            waker,
            floor: recent.only_in_log_upto,
        }
    }

    /// Ends what [`Self::watch_names`] registered.
    pub(crate) fn unwatch_names(&self, watch: &NameWatch) {
        let mut recent = self.recent.lock().expect("feed lock");
        for name in &watch.names {
            if let Some(named) = recent.named.get_mut(name) {
                named.wakers.retain(|w| !Arc::ptr_eq(w, &watch.waker));
                if named.wakers.is_empty() {
                    recent.named.remove(name);
                }
            }
        }
    }

    /// An envelope subscriber starts (`true`) or ends (`false`): frames published while one
    /// is open carry their envelope rendering too.
    pub(crate) fn count_envelope(&self, open: bool) {
        if open {
            self.envelopes.fetch_add(1, Ordering::AcqRel);
        } else {
            self.envelopes.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// What a subscriber that has seen everything up to `after` should do next. With a
    /// `filter`, frames of other names are passed over: the cursor still moves past them, and
    /// `Frames` may then carry no bytes. With `envelope`, the envelope renderings are sent
    /// (an event without one sends the subscriber to the log for it).
    pub fn next_after(
        &self,
        after: Cursor,
        max_frames: usize,
        filter: Option<&EventFilter>,
        envelope: bool,
        names: Option<&NameWatch>,
    ) -> Next {
        let recent = self.recent.lock().expect("feed lock");
        if recent.only_in_log_upto > after {
            // Asleep while the ring moved on: when none of its names left the ring above its
            // cursor since it registered, there is nothing of its in the log to read.
            let skip = names.is_some_and(|watch| {
                after >= watch.floor
                    && watch.names.iter().all(|name| {
                        recent
                            .named
                            .get(name)
                            .is_none_or(|named| named.evicted <= after)
                    })
            });
            if skip {
                return Next::Frames(Bytes::new(), recent.only_in_log_upto);
            }
            return Next::ReadLog(recent.only_in_log_upto);
        }
        let start = recent.frames.partition_point(|f| f.cursor <= after);
        if filter.is_some() || envelope {
            return Self::selected(&recent, start, max_frames, filter, envelope);
        }
        let mut end = recent.frames.len().min(start + max_frames);
        // Bound one chunk by bytes too: a client that stops reading holds at most one chunk.
        let mut bytes = 0;
        for (i, entry) in recent.frames.range(start..end).enumerate() {
            bytes += entry.frame.len();
            if bytes > MAX_CHUNK_BYTES && i > 0 {
                end = start + i;
                break;
            }
        }
        match end - start {
            0 => Next::Idle,
            1 => {
                let entry = &recent.frames[start];
                Next::Frames(entry.frame.clone(), entry.cursor)
            }
            _ => {
                let mut out = bytes::BytesMut::new();
                for entry in recent.frames.range(start..end) {
                    out.extend_from_slice(&entry.frame);
                }
                Next::Frames(out.freeze(), recent.frames[end - 1].cursor)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::EventInserted;

    fn event(cursor: Cursor, tenant: &str, data: &str) -> Record {
        Record {
            cursor,
            at_ms: 0,
            kind: RecordKind::EventInserted(EventInserted {
                id: [0; 16],
                tenant: tenant.into(),
                event: "e".into(),
                data: data.into(),
                by: Some("u".into()),
                idempotency_key: None,
            }),
        }
    }

    fn frames(next: Next) -> (Vec<u8>, Cursor) {
        match next {
            Next::Frames(bytes, last) => (bytes.to_vec(), last),
            Next::ReadLog(upto) => panic!("read the log up to {upto}"),
            Next::Idle => panic!("idle"),
        }
    }

    #[test]
    fn next_after_hands_out_only_newer_frames_of_the_tenant() {
        let fanout = Fanout::new(0, 16, 1 << 20);
        let feed = fanout.feed("a");
        fanout.publish([event(1, "a", "1"), event(2, "b", "2"), event(3, "a", "3")].iter());
        let (bytes, last) = frames(feed.next_after(0, 10, None, false, None));
        assert_eq!(last, 3);
        assert_eq!(
            bytes,
            [sse_frame::event(1, "e", "1"), sse_frame::event(3, "e", "3")].concat()
        );
        assert_eq!(frames(feed.next_after(1, 10, None, false, None)).1, 3);
        assert!(matches!(
            feed.next_after(3, 10, None, false, None),
            Next::Idle
        ));
        assert_eq!(fanout.published(), 3);
    }

    #[test]
    fn a_filtered_subscriber_gets_only_its_names_and_moves_past_the_others() {
        let fanout = Fanout::new(0, 16, 1 << 20);
        let feed = fanout.feed("a");
        let named = |cursor, name: &str| Record {
            cursor,
            at_ms: 0,
            kind: RecordKind::EventInserted(EventInserted {
                id: [0; 16],
                tenant: "a".into(),
                event: name.into(),
                data: "1".into(),
                by: Some("u".into()),
                idempotency_key: None,
            }),
        };
        fanout.publish(
            [
                named(1, "yes"),
                named(2, "no"),
                named(3, "yes"),
                named(4, "no"),
            ]
            .iter(),
        );
        let only_yes = EventFilter::new(|name| name == "yes");
        let (bytes, last) = frames(feed.next_after(0, 10, Some(&only_yes), false, None));
        assert_eq!(
            bytes,
            [
                sse_frame::event(1, "yes", "1"),
                sse_frame::event(3, "yes", "1")
            ]
            .concat()
        );
        assert_eq!(last, 4, "past the last frame looked at, wanted or not");
        // Nothing wanted: no bytes, but the cursor moves, so the subscriber does not spin.
        let (bytes, last) = frames(feed.next_after(3, 10, Some(&only_yes), false, None));
        assert!(bytes.is_empty());
        assert_eq!(last, 4);
        assert!(matches!(
            feed.next_after(4, 10, Some(&only_yes), false, None),
            Next::Idle
        ));
        // Bounded by frames looked at, not only by frames sent.
        assert_eq!(
            frames(feed.next_after(0, 2, Some(&only_yes), false, None)).1,
            2
        );
    }

    #[test]
    fn envelopes_are_rendered_only_while_an_envelope_subscriber_is_open() {
        let fanout = Fanout::new(0, 16, 1 << 20);
        let feed = fanout.feed("a");
        fanout.publish([event(1, "a", "1")].iter());
        // Published with nobody asking: no envelope, so an envelope subscriber reads it
        // from the log, while the plain stream is untouched.
        assert!(matches!(
            feed.next_after(0, 10, None, true, None),
            Next::ReadLog(1)
        ));
        assert!(recent_envelopes(&feed) == 0);
        feed.count_envelope(true);
        fanout.publish([event(2, "a", "2"), event(3, "a", "3")].iter());
        let (bytes, last) = frames(feed.next_after(1, 10, None, true, None));
        assert_eq!(last, 3);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("id: 2\nevent: e\ndata: {\"id\":\"00000000-"),
            "{text}"
        );
        assert!(text.contains(r#""by":"u","data":3}"#), "{text}");
        assert!(matches!(
            feed.next_after(0, 10, None, true, None),
            Next::ReadLog(1)
        ));
        // The plain stream still gets plain frames.
        let (bytes, _) = frames(feed.next_after(2, 10, None, false, None));
        assert_eq!(bytes, sse_frame::event(3, "e", "3").to_vec());
        feed.count_envelope(false);
        fanout.publish([event(4, "a", "4")].iter());
        assert_eq!(recent_envelopes(&feed), 2);
    }

    #[test]
    fn a_named_subscriber_is_woken_only_by_its_names_and_skips_what_left_the_ring() {
        use futures_util::FutureExt;
        let fanout = Fanout::new(0, 3, 1 << 20);
        let feed = fanout.feed("a");
        let named = |cursor, name: &str| Record {
            cursor,
            at_ms: 0,
            kind: RecordKind::EventInserted(EventInserted {
                id: [0; 16],
                tenant: "a".into(),
                event: name.into(),
                data: "1".into(),
                by: Some("u".into()),
                idempotency_key: None,
            }),
        };
        let watch = feed.watch_names(["yes".to_owned()]);
        let woken = |watch: &NameWatch| watch.wait().now_or_never().is_some();
        fanout.publish([named(1, "yes")].iter());
        assert!(woken(&watch), "its name wakes it");
        fanout.publish([named(2, "no"), named(3, "no")].iter());
        assert!(!woken(&watch), "other names do not");
        // The ring (3 frames) moves past "yes" at 1 while it sleeps.
        let rest: Vec<Record> = (4..=9).map(|c| named(c, "no")).collect();
        fanout.publish(rest.iter());
        assert!(!woken(&watch));
        let only_yes = EventFilter::new(|name| name == "yes");
        let next = |after| feed.next_after(after, 10, Some(&only_yes), false, Some(&watch));
        // Seen up to 1: nothing of its names left the ring above that, so no log read.
        assert!(matches!(next(1), Next::Frames(bytes, 6) if bytes.is_empty()));
        // Not yet past 1: the "yes" at 1 is only in the log now.
        assert!(matches!(next(0), Next::ReadLog(6)));
        // Without the name watch, the same subscriber would have to read the log.
        assert!(matches!(
            feed.next_after(1, 10, Some(&only_yes), false, None),
            Next::ReadLog(6)
        ));
        feed.unwatch_names(&watch);
        fanout.publish([named(10, "yes")].iter());
        assert!(!woken(&watch), "unwatched");
        assert!(feed.recent.lock().unwrap().named.is_empty());
    }

    fn recent_envelopes(feed: &TenantFeed) -> usize {
        let recent = feed.recent.lock().unwrap();
        recent
            .frames
            .iter()
            .filter(|f| f.envelope.is_some())
            .count()
    }

    #[test]
    fn next_after_is_bounded_by_frames_and_bytes() {
        let fanout = Fanout::new(0, 64, 1 << 20);
        let feed = fanout.feed("a");
        let big = "x".repeat(MAX_CHUNK_BYTES / 2);
        let records: Vec<Record> = (1..=6).map(|c| event(c, "a", &big)).collect();
        fanout.publish(records.iter());
        assert_eq!(
            frames(feed.next_after(0, 1, None, false, None)).1,
            1,
            "one frame at most"
        );
        // Two frames of half a chunk go over the byte bound: one chunk carries one of them.
        assert_eq!(frames(feed.next_after(0, 10, None, false, None)).1, 1);
        // A single frame larger than a chunk still goes, alone.
        let huge = "y".repeat(MAX_CHUNK_BYTES * 3);
        fanout.publish([event(7, "a", &huge)].iter());
        assert_eq!(frames(feed.next_after(6, 10, None, false, None)).1, 7);
    }

    #[test]
    fn a_subscriber_behind_the_ring_is_sent_to_the_log() {
        // Three frames or 100 bytes, whichever is smaller.
        let fanout = Fanout::new(0, 3, 100);
        let feed = fanout.feed("a");
        let records: Vec<Record> = (1..=5).map(|c| event(c, "a", "1")).collect();
        fanout.publish(records.iter());
        assert!(matches!(
            feed.next_after(0, 10, None, false, None),
            Next::ReadLog(2)
        ));
        assert_eq!(frames(feed.next_after(2, 10, None, false, None)).1, 5);
        // One big frame pushes out everything before it, but stays itself.
        fanout.publish([event(6, "a", &"z".repeat(500))].iter());
        assert!(matches!(
            feed.next_after(5, 10, None, false, None),
            Next::Frames(_, 6)
        ));
        assert!(matches!(
            feed.next_after(4, 10, None, false, None),
            Next::ReadLog(5)
        ));
    }

    #[test]
    fn a_feed_nobody_uses_and_that_has_no_events_is_released() {
        let fanout = Fanout::new(0, 8, 1 << 20);
        let ghost = fanout.feed("ghost");
        let other = fanout.feed("ghost");
        fanout.release("ghost", &ghost);
        assert_eq!(fanout.feeds(), 1, "another subscriber still holds it");
        drop(other);
        fanout.release("ghost", &ghost);
        assert_eq!(fanout.feeds(), 0);
        let busy = fanout.feed("busy");
        fanout.publish([event(1, "busy", "1")].iter());
        fanout.release("busy", &busy);
        assert_eq!(fanout.feeds(), 1, "a feed with recent events stays");
    }
}
