//! What `decide` reads, and the writer's batch over the published state.
//!
//! The server holds the state once: the published state, which readers see and which holds
//! only durable records. A batch is decided ahead of the disk, so the writer folds it into an
//! [`Overlay`] — the users and idempotency keys it touched, faulted in from the published
//! state on first touch and evolved there by the one `evolve`, and what it changed of the
//! latest events (their names, the lengths of their data) — and decides every command
//! against the overlay over the published state. Once the batch is published the overlay is
//! dropped; a failed write drops it too, which is all it takes to forget what was decided but
//! never written.

use std::sync::Arc;

use super::idempotency::{KeyUse, KeysOverlay};
use super::projection::{Map, State, TenantLatest, User};
use super::record::{EventInserted, Record};
use crate::cursor::Cursor;

/// What `decide` and `recheck` read: the state as of every earlier record.
pub trait View {
    /// The user called `username`, if any.
    fn user(&self, username: &str) -> Option<&User>;
    /// The cursor of the last record folded in.
    fn cursor(&self) -> Cursor;
    /// What `tenant`'s latest events hold, as an insert of `event` would change them.
    fn tenant_latest(&self, tenant: &str, event: &str) -> TenantLatest;
    /// The use of `key` by `by` (`None`: the admin) that still answers retries at `at_ms`.
    fn live_key(&self, by: Option<&str>, key: &str, at_ms: i64) -> Option<(Cursor, &KeyUse)>;
    /// How many users have a name that reads as `username` ([`super::lookalike`]).
    fn lookalikes(&self, username: &str) -> u32;
    /// Whether `tenant` is no tenant's yet but reads as one's (of the published state: two
    /// such tenants new in one batch are not compared).
    fn tenant_taken_alike(&self, tenant: &str) -> bool;
}

/// What the projections keep of an inserted event, owned or archived.
pub struct Inserted<'a> {
    /// UUIDv7 bytes.
    pub id: [u8; 16],
    /// Its tenant.
    pub tenant: &'a str,
    /// Its name.
    pub event: &'a str,
    /// Its compact JSON text.
    pub data: &'a str,
    /// Who inserted it, `None` for the admin.
    pub by: Option<&'a str>,
}

/// What `evolve` changes: the whole state, or a batch's overlay over the published one.
pub trait Fold {
    /// The user called `username`, to change in place.
    fn user_mut(&mut self, username: &str) -> Option<&mut User>;
    /// Adds `user` (a user of that name is replaced).
    fn add_user(&mut self, user: User);
    /// Removes the user called `username`.
    fn remove_user(&mut self, username: &str);
    /// Makes `event` the latest of its name in its tenant.
    fn fold_latest(&mut self, cursor: Cursor, at_ms: i64, event: Inserted<'_>);
    /// The tenant called `name`, shared with its users.
    fn tenant(&mut self, name: &str) -> Arc<str>;
    /// A user left `tenant` (or nobody came): it is forgotten if no user is in it.
    fn release_tenant(&mut self, tenant: Arc<str>);
    /// Remembers an insert's `Idempotency-Key`.
    fn remember_key(&mut self, record: &Record, event: &EventInserted);
    /// Forgets every `Idempotency-Key` of the user called `username`.
    fn forget_keys(&mut self, username: &str);
    /// Moves the cursor up to `cursor`.
    fn advance(&mut self, cursor: Cursor);
}

impl View for State {
    fn user(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }

    fn cursor(&self) -> Cursor {
        self.cursor
    }

    fn tenant_latest(&self, tenant: &str, event: &str) -> TenantLatest {
        self.latest.of(tenant, event)
    }

    fn live_key(&self, by: Option<&str>, key: &str, at_ms: i64) -> Option<(Cursor, &KeyUse)> {
        self.idempotency.live(by, key, at_ms)
    }

    fn lookalikes(&self, username: &str) -> u32 {
        self.users.lookalikes(username)
    }

    fn tenant_taken_alike(&self, tenant: &str) -> bool {
        self.users.tenant_taken_alike(tenant)
    }
}

impl Fold for State {
    fn user_mut(&mut self, username: &str) -> Option<&mut User> {
        self.users.get_mut(username)
    }

    fn add_user(&mut self, user: User) {
        self.users.insert(user);
    }

    fn remove_user(&mut self, username: &str) {
        self.users.remove(username);
    }

    fn fold_latest(&mut self, cursor: Cursor, at_ms: i64, event: Inserted<'_>) {
        super::evolve::fold_latest(self, cursor, at_ms, event);
    }

    fn tenant(&mut self, name: &str) -> Arc<str> {
        self.users.tenant(name)
    }

    fn release_tenant(&mut self, tenant: Arc<str>) {
        self.users.release(tenant);
    }

    fn remember_key(&mut self, record: &Record, event: &EventInserted) {
        self.idempotency.remember(record, event);
    }

    fn forget_keys(&mut self, username: &str) {
        self.idempotency.forget_user(username);
    }

    fn advance(&mut self, cursor: Cursor) {
        self.cursor = self.cursor.max(cursor);
    }
}

/// A batch decided but not yet published: what it changed, over the published state.
#[derive(Debug)]
pub struct Overlay {
    /// The cursor of the last record decided (or passed over); the published state's between
    /// batches.
    cursor: Cursor,
    /// Users the batch touched, as they are after it (`None`: there is none by that name).
    users: Map<String, Option<User>>,
    /// Per tenant, what the batch changed of what `decide` reads of events: which names the
    /// tenant has (`--max_event_names`) and the bytes of their data
    /// (`--max_tenant_snapshot_bytes`). The events themselves are left to the published
    /// state, which gets them at publish.
    latest: Map<String, LatestChanges>,
    keys: KeysOverlay,
}

/// What a batch changed of one tenant's latest events, over the published state.
#[derive(Debug, Default)]
struct LatestChanges {
    /// Names the batch added that the published state does not have.
    new_names: usize,
    /// Bytes of data the batch added to the published total (fewer, when negative).
    bytes: isize,
    /// The data length of the latest event of each name the batch added, or whose data
    /// length it changed, as it is after the batch.
    lens: Map<String, usize>,
}

impl Overlay {
    /// An empty overlay over a published state at `cursor`.
    pub fn new(cursor: Cursor) -> Self {
        Overlay {
            cursor,
            users: Map::default(),
            latest: Map::default(),
            keys: KeysOverlay::default(),
        }
    }

    /// The overlay seen over `published`: what `decide` reads.
    pub fn over<'a>(&'a mut self, published: &'a State) -> Layered<'a> {
        Layered {
            published,
            overlay: self,
        }
    }

    /// The batch was published: the published state now holds all of it.
    pub fn published(&mut self) {
        self.users.clear();
        self.latest.clear();
        self.keys.clear();
    }

    /// The batch was not written: forget it, back to the published state at `cursor`.
    pub fn discard(&mut self, cursor: Cursor) {
        self.published();
        self.cursor = cursor;
    }

    /// The cursor of the last record decided or passed over.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Passes over `cursor` without a record (a shared log's dropped or unreadable message).
    pub fn pass(&mut self, cursor: Cursor) {
        self.cursor = self.cursor.max(cursor);
    }
}

/// An overlay over the published state: the state as of the batch's last record.
pub struct Layered<'a> {
    published: &'a State,
    overlay: &'a mut Overlay,
}

impl View for Layered<'_> {
    fn user(&self, username: &str) -> Option<&User> {
        match self.overlay.users.get(username) {
            Some(touched) => touched.as_ref(),
            None => self.published.users.get(username),
        }
    }

    fn cursor(&self) -> Cursor {
        self.overlay.cursor
    }

    fn tenant_latest(&self, tenant: &str, event: &str) -> TenantLatest {
        let published = self.published.tenant_latest(tenant, event);
        match self.overlay.latest.get(tenant) {
            Some(changes) => TenantLatest {
                names: published.names + changes.new_names,
                bytes: published.bytes.saturating_add_signed(changes.bytes),
                replaced: changes.lens.get(event).copied().or(published.replaced),
            },
            None => published,
        }
    }

    fn live_key(&self, by: Option<&str>, key: &str, at_ms: i64) -> Option<(Cursor, &KeyUse)> {
        self.overlay
            .keys
            .live(&self.published.idempotency, by, key, at_ms)
    }

    fn lookalikes(&self, username: &str) -> u32 {
        // The published count, with the users the batch added or removed (few: look only
        // at names of the same key).
        let key = super::lookalike::key(username);
        let mut count = i64::from(self.published.users.lookalikes(username));
        for (name, now) in &self.overlay.users {
            if super::lookalike::key(name) != key {
                continue;
            }
            let before = self.published.users.contains(name);
            match (before, now.is_some()) {
                (false, true) => count += 1,
                (true, false) => count -= 1,
                _ => {}
            }
        }
        count.max(0) as u32
    }

    fn tenant_taken_alike(&self, tenant: &str) -> bool {
        self.published.users.tenant_taken_alike(tenant)
    }
}

impl Fold for Layered<'_> {
    fn user_mut(&mut self, username: &str) -> Option<&mut User> {
        if !self.overlay.users.contains_key(username) {
            let published = self.published.users.get(username).cloned();
            self.overlay.users.insert(username.to_owned(), published);
        }
        self.overlay.users.get_mut(username)?.as_mut()
    }

    fn add_user(&mut self, user: User) {
        self.overlay
            .users
            .insert(String::from(&*user.username), Some(user));
    }

    fn remove_user(&mut self, username: &str) {
        self.overlay.users.insert(username.to_owned(), None);
    }

    fn fold_latest(&mut self, _: Cursor, _: i64, e: Inserted<'_>) {
        let len = e.data.len();
        // A name the batch already noted: its length now.
        if let Some(changes) = self.overlay.latest.get_mut(e.tenant)
            && let Some(was) = changes.lens.get_mut(e.event)
        {
            changes.bytes += len as isize - *was as isize;
            *was = len;
            return;
        }
        // Most inserts are of a name the tenant has, with data as long as it was (values
        // change, not lengths): nothing to note, nothing allocated.
        let published = self.published.latest.data_len(e.tenant, e.event);
        if published == Some(len) {
            return;
        }
        let changes = match self.overlay.latest.get_mut(e.tenant) {
            Some(changes) => changes,
            None => self.overlay.latest.entry(e.tenant.to_owned()).or_default(),
        };
        changes.new_names += usize::from(published.is_none());
        changes.bytes += match published {
            Some(was) => len as isize - was as isize,
            None => (len + super::projection::name_cost(e.event)) as isize,
        };
        changes.lens.insert(e.event.to_owned(), len);
    }

    fn tenant(&mut self, name: &str) -> Arc<str> {
        // A batch's new tenants are interned when it is published, not here.
        self.published
            .users
            .known_tenant(name)
            .unwrap_or_else(|| Arc::from(name))
    }

    fn release_tenant(&mut self, _: Arc<str>) {}

    fn remember_key(&mut self, record: &Record, event: &EventInserted) {
        self.overlay
            .keys
            .remember(&self.published.idempotency, record, event);
    }

    fn forget_keys(&mut self, username: &str) {
        self.overlay
            .keys
            .forget_user(&self.published.idempotency, username);
    }

    fn advance(&mut self, cursor: Cursor) {
        self.overlay.cursor = self.overlay.cursor.max(cursor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{RecordKind, evolve, evolve_into};

    fn insert(cursor: Cursor, tenant: &str, event: &str) -> Record {
        Record {
            cursor,
            at_ms: 0,
            kind: RecordKind::EventInserted(EventInserted {
                id: [cursor as u8; 16],
                tenant: tenant.into(),
                event: event.into(),
                data: cursor.to_string(),
                by: None,
                idempotency_key: None,
            }),
        }
    }

    #[test]
    fn a_batch_counts_the_names_it_adds_once_and_known_names_cost_nothing() {
        let mut published = State::default();
        evolve(&mut published, &insert(1, "t", "a"));
        let mut overlay = Overlay::new(1);
        let batch = [
            insert(2, "t", "a"),
            insert(3, "t", "b"),
            insert(4, "t", "b"),
            insert(5, "u", "a"),
        ];
        let mut whole = published.clone();
        for (n, record) in batch.iter().enumerate() {
            evolve_into(&mut overlay.over(&published), record);
            evolve(&mut whole, record);
            if n == 0 {
                // Only a name the published state lacks is noted (or a length that changed).
                assert!(overlay.latest.is_empty());
            }
        }
        let layered = overlay.over(&published);
        for (tenant, event) in [("t", "a"), ("t", "b"), ("t", "c"), ("u", "a"), ("v", "a")] {
            assert_eq!(
                layered.tenant_latest(tenant, event),
                whole.tenant_latest(tenant, event),
                "{tenant}/{event}"
            );
        }
        let latest = layered.tenant_latest("t", "b");
        assert_eq!((latest.names, latest.replaced.is_some()), (2, true));
        assert_eq!(layered.cursor(), 5);
        // Published, the overlay is empty again and the published state answers alone.
        overlay.published();
        assert!(overlay.latest.is_empty());
        let latest = overlay.over(&published).tenant_latest("t", "b");
        assert_eq!((latest.names, latest.replaced.is_some()), (1, false));
    }

    fn sized(cursor: Cursor, tenant: &str, event: &str, len: usize) -> Record {
        let mut record = insert(cursor, tenant, event);
        if let RecordKind::EventInserted(e) = &mut record.kind {
            e.data = "7".repeat(len);
        }
        record
    }

    #[test]
    fn a_batch_counts_the_bytes_of_data_it_adds_and_replaces() {
        let mut published = State::default();
        evolve(&mut published, &sized(1, "t", "a", 100));
        evolve(&mut published, &sized(2, "t", "b", 10));
        let mut overlay = Overlay::new(2);
        let mut whole = published.clone();
        // Grown, shrunk, a new name grown again, another tenant, a same-length replacement.
        let batch = [
            sized(3, "t", "a", 300),
            sized(4, "t", "a", 50),
            sized(5, "t", "c", 5),
            sized(6, "t", "c", 70),
            sized(7, "u", "a", 9),
            sized(8, "t", "b", 10),
        ];
        for record in &batch {
            evolve_into(&mut overlay.over(&published), record);
            evolve(&mut whole, record);
            let layered = overlay.over(&published);
            for (tenant, event) in [("t", "a"), ("t", "b"), ("t", "c"), ("u", "a"), ("v", "a")] {
                assert_eq!(
                    layered.tenant_latest(tenant, event),
                    whole.tenant_latest(tenant, event),
                    "{tenant}/{event} after {}",
                    record.cursor
                );
            }
        }
        let name = 1 + crate::state::projection::NAME_ENTRY_BYTES;
        let latest = whole.tenant_latest("t", "c");
        assert_eq!(
            (latest.names, latest.bytes, latest.replaced),
            (3, 50 + 10 + 70 + 3 * name, Some(70))
        );
        let latest = whole.tenant_latest("u", "z");
        assert_eq!((latest.bytes, latest.replaced), (9 + name, None));
        assert!(
            !overlay.latest["t"].lens.contains_key("b"),
            "an unchanged length is not noted"
        );
    }
}
