//! What `decide` reads, and the writer's batch over the published state.
//!
//! The server holds the state once: the published state, which readers see and which holds
//! only durable records. A batch is decided ahead of the disk, so the writer folds it into an
//! [`Overlay`] — the users, latest events and idempotency keys it touched, faulted in from the
//! published state on first touch and evolved there by the one `evolve` — and decides every
//! command against the overlay over the published state. Once the batch is published the
//! overlay is dropped; a failed write drops it too, which is all it takes to forget what was
//! decided but never written.

use std::sync::Arc;

use super::idempotency::{KeyUse, KeysOverlay};
use super::projection::{LatestEvent, Map, State, User};
use super::record::{EventInserted, Record};
use crate::cursor::Cursor;

/// What `decide` and `recheck` read: the state as of every earlier record.
pub trait View {
    /// The user called `username`, if any.
    fn user(&self, username: &str) -> Option<&User>;
    /// The cursor of the last record folded in.
    fn cursor(&self) -> Cursor;
    /// How many distinct event names `tenant` has, and whether `event` is one of them.
    fn event_names(&self, tenant: &str, event: &str) -> (usize, bool);
    /// The use of `key` by `by` (`None`: the admin) that still answers retries at `at_ms`.
    fn live_key(&self, by: Option<&str>, key: &str, at_ms: i64) -> Option<(Cursor, &KeyUse)>;
}

/// What `evolve` changes: the whole state, or a batch's overlay over the published one.
pub trait Fold {
    /// The user called `username`, to change in place.
    fn user_mut(&mut self, username: &str) -> Option<&mut User>;
    /// Adds `user` (a user of that name is replaced).
    fn add_user(&mut self, user: User);
    /// Removes the user called `username`.
    fn remove_user(&mut self, username: &str);
    /// The latest event called `event` of `tenant`, to change in place.
    fn latest_mut(&mut self, tenant: &str, event: &str) -> Option<&mut LatestEvent>;
    /// Adds the first event called `event` to `tenant`.
    fn add_latest(&mut self, tenant: &str, event: &str, latest: LatestEvent);
    /// The tenant called `name`, shared with its users.
    fn tenant(&mut self, name: &str) -> Arc<str>;
    /// A user left `tenant` (or nobody came): it is forgotten if no user is in it.
    fn release_tenant(&mut self, tenant: Arc<str>);
    /// Remembers an insert's `Idempotency-Key`.
    fn remember_key(&mut self, record: &Record, event: &EventInserted);
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

    fn event_names(&self, tenant: &str, event: &str) -> (usize, bool) {
        self.latest
            .get(tenant)
            .map_or((0, false), |names| (names.len(), names.contains_key(event)))
    }

    fn live_key(&self, by: Option<&str>, key: &str, at_ms: i64) -> Option<(Cursor, &KeyUse)> {
        self.idempotency.live(by, key, at_ms)
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

    fn latest_mut(&mut self, tenant: &str, event: &str) -> Option<&mut LatestEvent> {
        self.latest.get_mut(tenant)?.get_mut(event)
    }

    fn add_latest(&mut self, tenant: &str, event: &str, latest: LatestEvent) {
        // The tenant key is allocated only for a tenant's first event name.
        if !self.latest.contains_key(tenant) {
            self.latest.insert(tenant.to_owned(), Map::default());
        }
        if let Some(names) = self.latest.get_mut(tenant) {
            names.insert(event.to_owned(), latest);
        }
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
    /// Latest events the batch touched, per tenant.
    latest: Map<String, Map<String, LatestEvent>>,
    /// Per tenant, how many of those names the published state does not have.
    new_names: Map<String, usize>,
    keys: KeysOverlay,
}

impl Overlay {
    /// An empty overlay over a published state at `cursor`.
    pub fn new(cursor: Cursor) -> Self {
        Overlay {
            cursor,
            users: Map::default(),
            latest: Map::default(),
            new_names: Map::default(),
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
        self.new_names.clear();
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

    fn event_names(&self, tenant: &str, event: &str) -> (usize, bool) {
        let (published, has) = self.published.event_names(tenant, event);
        let added = self.overlay.new_names.get(tenant).copied().unwrap_or(0);
        let touched = self
            .overlay
            .latest
            .get(tenant)
            .is_some_and(|names| names.contains_key(event));
        (published + added, has || touched)
    }

    fn live_key(&self, by: Option<&str>, key: &str, at_ms: i64) -> Option<(Cursor, &KeyUse)> {
        self.overlay
            .keys
            .live(&self.published.idempotency, by, key, at_ms)
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

    fn latest_mut(&mut self, tenant: &str, event: &str) -> Option<&mut LatestEvent> {
        let touched = self
            .overlay
            .latest
            .get(tenant)
            .is_some_and(|names| names.contains_key(event));
        if !touched {
            let published = self.published.latest.get(tenant)?.get(event)?.clone();
            // The tenant's key is allocated once per batch, not once per name faulted in:
            // this runs for every insert of a name the batch has not touched yet.
            if !self.overlay.latest.contains_key(tenant) {
                self.overlay
                    .latest
                    .insert(tenant.to_owned(), Map::default());
            }
            self.overlay
                .latest
                .get_mut(tenant)
                .expect("inserted above")
                .insert(event.to_owned(), published);
        }
        self.overlay.latest.get_mut(tenant)?.get_mut(event)
    }

    fn add_latest(&mut self, tenant: &str, event: &str, latest: LatestEvent) {
        *self.overlay.new_names.entry(tenant.to_owned()).or_default() += 1;
        self.overlay
            .latest
            .entry(tenant.to_owned())
            .or_default()
            .insert(event.to_owned(), latest);
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

    fn advance(&mut self, cursor: Cursor) {
        self.overlay.cursor = self.overlay.cursor.max(cursor);
    }
}
