//! Idempotency keys: the recent `Idempotency-Key`s of inserts, per caller, folded from the
//! log like every projection, so that a retry is recognised after a restart (replay or
//! checkpoint) and on every node of a shared log.
//!
//! Memory is bounded whatever clients send: at most [`KEYS_PER_CALLER`] keys per caller and
//! [`KEYS_TOTAL`] in all, the oldest forgotten first, and a key older than the window (in
//! record time, `at_ms`) is forgotten as soon as a newer insert is folded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rkyv::{Archive, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cursor::Cursor;

use super::record::{EventInserted, Record, RecordKind};

/// Keys one caller (a user, or the admin) has remembered at most.
pub const KEYS_PER_CALLER: usize = 1_000;

/// Keys remembered at most, all callers together.
pub const KEYS_TOTAL: usize = 100_000;

/// `--idempotency_window_secs`' default, in milliseconds: one day.
pub const DEFAULT_WINDOW_MS: i64 = 86_400_000;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// One remembered use of a key: enough to answer a retry without reading the log.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct KeyUse {
    /// Who inserted (`None`: the admin).
    pub by: Option<String>,
    /// The key.
    pub key: String,
    /// Record time of the insert.
    pub at_ms: i64,
    /// The event's id.
    pub id: [u8; 16],
    /// SHA-256 of what was inserted (tenant, event, data): a retry must send the same.
    pub request: [u8; 32],
}

/// The remembered keys. `window_ms` is a rule parameter, not folded from the log: the engine
/// sets it from `--idempotency_window_secs` when it opens (a checkpoint's value is replaced).
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct IdempotencyKeys {
    /// How long (record time) a key answers retries.
    pub window_ms: i64,
    /// Every remembered use by the cursor of its insert: oldest first, for eviction.
    uses: BTreeMap<Cursor, KeyUse>,
    /// `caller \n key` → cursor of its use (a username has no control characters).
    index: HashMap<String, Cursor>,
    /// Cursors of each caller's uses (`""` is the admin: no username is empty).
    per_caller: HashMap<String, BTreeSet<Cursor>>,
}

impl Default for IdempotencyKeys {
    fn default() -> Self {
        IdempotencyKeys {
            window_ms: DEFAULT_WINDOW_MS,
            uses: BTreeMap::new(),
            index: HashMap::new(),
            per_caller: HashMap::new(),
        }
    }
}

fn caller(by: Option<&str>) -> &str {
    by.unwrap_or("")
}

fn index_key(by: Option<&str>, key: &str) -> String {
    format!("{}\n{key}", caller(by))
}

/// The digest a retry's request must match: tenant, event and data, each length-prefixed so
/// that no two different requests share a byte string.
pub fn request_digest(tenant: &str, event: &str, data: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [tenant, event, data] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

impl IdempotencyKeys {
    /// The use of `key` by `by` that still answers retries at `at_ms`, with its cursor.
    pub fn live(&self, by: Option<&str>, key: &str, at_ms: i64) -> Option<(Cursor, &KeyUse)> {
        let cursor = *self.index.get(&index_key(by, key))?;
        let used = self.uses.get(&cursor)?;
        (at_ms.saturating_sub(used.at_ms) < self.window_ms).then_some((cursor, used))
    }

    /// Keys remembered, all callers.
    pub fn len(&self) -> usize {
        self.uses.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.uses.is_empty()
    }

    /// Keys remembered for one caller (`None`: the admin).
    pub fn len_of(&self, by: Option<&str>) -> usize {
        self.per_caller.get(caller(by)).map_or(0, BTreeSet::len)
    }

    /// Folds an insert: forgets what fell out of the window by its time, then remembers its
    /// key (replacing an earlier use of the same key) within the caps.
    pub(super) fn remember(&mut self, record: &Record, event: &EventInserted) {
        remember(self, record, event);
    }

    /// Forgets every key of the user called `username` (deleted, or created anew): found
    /// through the user's own cursors, so it costs the user's keys (at most
    /// [`KEYS_PER_CALLER`]), not everyone's.
    pub(super) fn forget_user(&mut self, username: &str) {
        let mine: Vec<Cursor> = self
            .per_caller
            .get(caller(Some(username)))
            .map_or_else(Vec::new, |mine| mine.iter().copied().collect());
        for cursor in mine {
            self.forget(cursor);
        }
    }

    fn forget(&mut self, cursor: Cursor) {
        let Some(used) = self.uses.remove(&cursor) else {
            return;
        };
        let who = caller(used.by.as_deref());
        let index_key = index_key(used.by.as_deref(), &used.key);
        if self.index.get(&index_key) == Some(&cursor) {
            self.index.remove(&index_key);
        }
        if let Some(mine) = self.per_caller.get_mut(who) {
            mine.remove(&cursor);
            if mine.is_empty() {
                self.per_caller.remove(who);
            }
        }
    }
}

/// What [`remember`] does to a set of keys, as steps: on the whole set, or on a batch's
/// changes over the published set ([`KeysOverlay`]). Both run the one `remember`, so the
/// writer decides a batch against exactly what folding it will leave.
trait KeyStore {
    fn window_ms(&self) -> i64;
    /// The oldest use: its cursor and record time.
    fn oldest(&mut self) -> Option<(Cursor, i64)>;
    /// The cursor of the use of `index_key`.
    fn find(&self, index_key: &str) -> Option<Cursor>;
    fn caller_len(&self, who: &str) -> usize;
    fn caller_oldest(&mut self, who: &str) -> Option<Cursor>;
    fn add(&mut self, cursor: Cursor, used: KeyUse);
    fn forget(&mut self, cursor: Cursor);
    fn len(&self) -> usize;
}

fn remember(store: &mut impl KeyStore, record: &Record, event: &EventInserted) {
    let Some(key) = &event.idempotency_key else {
        return;
    };
    while let Some((oldest, at_ms)) = store.oldest() {
        if record.at_ms.saturating_sub(at_ms) < store.window_ms() {
            break;
        }
        store.forget(oldest);
    }
    if let Some(earlier) = store.find(&index_key(event.by.as_deref(), key)) {
        store.forget(earlier);
    }
    store.add(
        record.cursor,
        KeyUse {
            by: event.by.clone(),
            key: key.clone(),
            at_ms: record.at_ms,
            id: event.id,
            request: request_digest(&event.tenant, &event.event, &event.data),
        },
    );
    let who = caller(event.by.as_deref());
    if store.caller_len(who) > KEYS_PER_CALLER
        && let Some(oldest) = store.caller_oldest(who)
    {
        store.forget(oldest);
    }
    while store.len() > KEYS_TOTAL {
        let Some((oldest, _)) = store.oldest() else {
            break;
        };
        store.forget(oldest);
    }
}

impl KeyStore for IdempotencyKeys {
    fn window_ms(&self) -> i64 {
        self.window_ms
    }

    fn oldest(&mut self) -> Option<(Cursor, i64)> {
        self.uses.first_key_value().map(|(&c, u)| (c, u.at_ms))
    }

    fn find(&self, index_key: &str) -> Option<Cursor> {
        self.index.get(index_key).copied()
    }

    fn caller_len(&self, who: &str) -> usize {
        self.per_caller.get(who).map_or(0, BTreeSet::len)
    }

    fn caller_oldest(&mut self, who: &str) -> Option<Cursor> {
        self.per_caller.get(who)?.first().copied()
    }

    fn add(&mut self, cursor: Cursor, used: KeyUse) {
        let who = caller(used.by.as_deref()).to_owned();
        self.per_caller.entry(who).or_default().insert(cursor);
        self.index
            .insert(index_key(used.by.as_deref(), &used.key), cursor);
        self.uses.insert(cursor, used);
    }

    fn forget(&mut self, cursor: Cursor) {
        IdempotencyKeys::forget(self, cursor);
    }

    fn len(&self) -> usize {
        self.uses.len()
    }
}

/// A batch's changes to the published keys, not yet published: uses it added, published
/// uses it forgot, and the index entries that moved. The writer folds the batch into this
/// instead of into a copy of the keys, and drops it once the batch is published.
#[derive(Debug, Default)]
pub struct KeysOverlay {
    added: BTreeMap<Cursor, KeyUse>,
    /// Published uses this batch forgot.
    forgotten: HashSet<Cursor>,
    /// `caller \n key` → its use now (`None`: none), over the published index.
    index: HashMap<String, Option<Cursor>>,
    /// Per caller: uses added, and published uses forgotten.
    callers: HashMap<String, CallerChanges>,
    /// Every published use below this cursor is forgotten: where the search for the oldest
    /// starts, so that a batch evicting many is not quadratic.
    floor: Cursor,
}

#[derive(Debug, Default)]
struct CallerChanges {
    added: BTreeSet<Cursor>,
    forgotten: usize,
    floor: Cursor,
}

impl KeysOverlay {
    /// Whether the batch changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.forgotten.is_empty()
    }

    /// Forgets the batch.
    pub fn clear(&mut self) {
        *self = KeysOverlay::default();
    }

    /// The use of `key` by `by` that answers retries at `at_ms`, after the batch.
    pub fn live<'a>(
        &'a self,
        published: &'a IdempotencyKeys,
        by: Option<&str>,
        key: &str,
        at_ms: i64,
    ) -> Option<(Cursor, &'a KeyUse)> {
        let index_key = index_key(by, key);
        let cursor = match self.index.get(&index_key) {
            Some(cursor) => (*cursor)?,
            None => *published.index.get(&index_key)?,
        };
        let used = match self.added.get(&cursor) {
            Some(used) => used,
            None if self.forgotten.contains(&cursor) => return None,
            None => published.uses.get(&cursor)?,
        };
        (at_ms.saturating_sub(used.at_ms) < published.window_ms).then_some((cursor, used))
    }

    /// Folds an insert of the batch, exactly as [`IdempotencyKeys::remember`] would fold it
    /// into the published keys after the batch's earlier inserts.
    pub fn remember(
        &mut self,
        published: &IdempotencyKeys,
        record: &Record,
        event: &EventInserted,
    ) {
        remember(
            &mut Layered {
                published,
                changes: self,
            },
            record,
            event,
        );
    }
}

impl KeysOverlay {
    /// Forgets every key of the user called `username` within the batch, exactly as
    /// [`IdempotencyKeys::forget_user`] would after the batch's earlier records.
    pub fn forget_user(&mut self, published: &IdempotencyKeys, username: &str) {
        let who = caller(Some(username));
        let mut layered = Layered {
            published,
            changes: self,
        };
        // The user's uses still kept: published ones the batch did not forget, and the
        // batch's own. Most users have none: nothing is allocated for them.
        let mut mine: Vec<Cursor> = published.per_caller.get(who).map_or_else(Vec::new, |p| {
            p.iter()
                .filter(|c| !layered.changes.forgotten.contains(c))
                .copied()
                .collect()
        });
        if let Some(changes) = layered.changes.callers.get(who) {
            mine.extend(changes.added.iter().copied());
        }
        for cursor in mine {
            KeyStore::forget(&mut layered, cursor);
        }
    }
}

/// The published keys with a batch's changes over them.
struct Layered<'a> {
    published: &'a IdempotencyKeys,
    changes: &'a mut KeysOverlay,
}

/// The first cursor of `published` at or above `*floor` that `forgotten` does not hold; the
/// floor moves up to it (everything skipped is forgotten for good).
fn first_kept<'a>(
    mut published: impl Iterator<Item = &'a Cursor>,
    forgotten: &HashSet<Cursor>,
    floor: &mut Cursor,
) -> Option<Cursor> {
    let found = published.find(|c| !forgotten.contains(c)).copied();
    if let Some(found) = found {
        *floor = found;
    }
    found
}

impl KeyStore for Layered<'_> {
    fn window_ms(&self) -> i64 {
        self.published.window_ms
    }

    fn oldest(&mut self) -> Option<(Cursor, i64)> {
        let changes = &mut *self.changes;
        let kept = first_kept(
            self.published.uses.range(changes.floor..).map(|(c, _)| c),
            &changes.forgotten,
            &mut changes.floor,
        )
        .and_then(|c| self.published.uses.get(&c).map(|u| (c, u.at_ms)));
        let added = changes.added.first_key_value().map(|(&c, u)| (c, u.at_ms));
        match (kept, added) {
            (Some(k), Some(a)) => Some(if k.0 < a.0 { k } else { a }),
            (k, a) => k.or(a),
        }
    }

    fn find(&self, index_key: &str) -> Option<Cursor> {
        match self.changes.index.get(index_key) {
            Some(cursor) => *cursor,
            None => self.published.index.get(index_key).copied(),
        }
    }

    fn caller_len(&self, who: &str) -> usize {
        let changes = self.changes.callers.get(who);
        self.published.per_caller.get(who).map_or(0, BTreeSet::len)
            - changes.map_or(0, |c| c.forgotten)
            + changes.map_or(0, |c| c.added.len())
    }

    fn caller_oldest(&mut self, who: &str) -> Option<Cursor> {
        let changes = &mut *self.changes;
        let mine = changes.callers.entry(who.to_owned()).or_default();
        let kept = self.published.per_caller.get(who).and_then(|published| {
            first_kept(
                published.range(mine.floor..),
                &changes.forgotten,
                &mut mine.floor,
            )
        });
        let added = mine.added.first().copied();
        match (kept, added) {
            (Some(k), Some(a)) => Some(k.min(a)),
            (k, a) => k.or(a),
        }
    }

    fn add(&mut self, cursor: Cursor, used: KeyUse) {
        let who = caller(used.by.as_deref()).to_owned();
        self.changes
            .callers
            .entry(who)
            .or_default()
            .added
            .insert(cursor);
        self.changes
            .index
            .insert(index_key(used.by.as_deref(), &used.key), Some(cursor));
        self.changes.added.insert(cursor, used);
    }

    fn forget(&mut self, cursor: Cursor) {
        let index_key = match self.changes.added.remove(&cursor) {
            Some(used) => {
                if let Some(mine) = self.changes.callers.get_mut(caller(used.by.as_deref())) {
                    mine.added.remove(&cursor);
                }
                index_key(used.by.as_deref(), &used.key)
            }
            None => {
                let published = self.published;
                let Some(used) = published.uses.get(&cursor) else {
                    return;
                };
                if !self.changes.forgotten.insert(cursor) {
                    return;
                }
                self.changes
                    .callers
                    .entry(caller(used.by.as_deref()).to_owned())
                    .or_default()
                    .forgotten += 1;
                index_key(used.by.as_deref(), &used.key)
            }
        };
        if self.find(&index_key) == Some(cursor) {
            self.changes.index.insert(index_key, None);
        }
    }

    fn len(&self) -> usize {
        self.published.uses.len() - self.changes.forgotten.len() + self.changes.added.len()
    }
}

/// The earlier insert a keyed insert repeats, rebuilt from what is remembered and the
/// request (whose digest matched, so its tenant, event and data are the stored ones).
pub fn earlier_record(cursor: Cursor, used: &KeyUse, event: EventInserted) -> Record {
    Record {
        cursor,
        at_ms: used.at_ms,
        kind: RecordKind::EventInserted(EventInserted {
            id: used.id,
            ..event
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(cursor: Cursor, at_ms: i64, by: Option<&str>, key: &str) -> Record {
        Record {
            cursor,
            at_ms,
            kind: RecordKind::EventInserted(EventInserted {
                id: [cursor as u8; 16],
                tenant: "t".into(),
                event: "e".into(),
                data: "1".into(),
                by: by.map(str::to_owned),
                idempotency_key: Some(key.into()),
            }),
        }
    }

    fn fold(keys: &mut IdempotencyKeys, record: &Record) {
        let RecordKind::EventInserted(e) = &record.kind else {
            unreachable!()
        };
        keys.remember(record, e);
    }

    #[test]
    fn a_caller_keeps_at_most_its_cap_oldest_forgotten() {
        let mut keys = IdempotencyKeys::default();
        for i in 0..(KEYS_PER_CALLER as u64 + 500) {
            fold(&mut keys, &insert(i + 1, 0, Some("bob"), &format!("k{i}")));
        }
        assert_eq!(keys.len_of(Some("bob")), KEYS_PER_CALLER);
        assert_eq!(keys.len(), KEYS_PER_CALLER);
        assert!(keys.live(Some("bob"), "k0", 0).is_none(), "oldest evicted");
        assert!(keys.live(Some("bob"), "k1499", 0).is_some());
    }

    #[test]
    fn callers_do_not_share_keys_and_the_admin_is_a_caller() {
        let mut keys = IdempotencyKeys::default();
        fold(&mut keys, &insert(1, 0, Some("bob"), "k"));
        fold(&mut keys, &insert(2, 0, None, "k"));
        assert_eq!(keys.live(Some("bob"), "k", 0).unwrap().0, 1);
        assert_eq!(keys.live(None, "k", 0).unwrap().0, 2);
        assert!(keys.live(Some("ann"), "k", 0).is_none());
    }

    #[test]
    fn keys_expire_by_record_time_and_are_pruned_by_later_inserts() {
        let mut keys = IdempotencyKeys {
            window_ms: 1_000,
            ..Default::default()
        };
        fold(&mut keys, &insert(1, 0, Some("bob"), "k"));
        assert!(keys.live(Some("bob"), "k", 999).is_some());
        assert!(keys.live(Some("bob"), "k", 1_000).is_none());
        fold(&mut keys, &insert(2, 5_000, Some("ann"), "other"));
        assert_eq!(keys.len(), 1, "the expired key was forgotten");
        // A key reused after its window belongs to the new insert.
        fold(&mut keys, &insert(3, 5_001, Some("bob"), "k"));
        assert_eq!(keys.live(Some("bob"), "k", 5_001).unwrap().0, 3);
    }

    #[test]
    fn the_total_cap_holds_across_callers() {
        let mut keys = IdempotencyKeys::default();
        let callers = KEYS_TOTAL / KEYS_PER_CALLER + 2;
        let mut cursor = 0;
        for c in 0..callers {
            for k in 0..KEYS_PER_CALLER {
                cursor += 1;
                fold(
                    &mut keys,
                    &insert(cursor, 0, Some(&format!("u{c}")), &k.to_string()),
                );
            }
        }
        assert_eq!(keys.len(), KEYS_TOTAL);
        assert_eq!(
            keys.len_of(Some("u0")),
            0,
            "the oldest caller's keys went first"
        );
    }

    /// The writer folds a batch into an overlay over the published keys: whatever the batch
    /// evicts (window, caller cap, total cap, a reused key), the overlay answers as the keys
    /// after the batch do.
    #[test]
    fn an_overlay_answers_as_the_folded_keys() {
        let mut published = IdempotencyKeys {
            window_ms: 1_000_000,
            ..Default::default()
        };
        let mut cursor = 0;
        let mut at_ms = 0;
        let mut next = |by: &str, key: String, step: i64| {
            cursor += 1;
            at_ms += step;
            insert(cursor, at_ms, (!by.is_empty()).then_some(by), &key)
        };
        // Published: near the total cap, bob near his own.
        let mut records = Vec::new();
        for c in 0..(KEYS_TOTAL / KEYS_PER_CALLER - 1) {
            for k in 0..KEYS_PER_CALLER - 10 {
                records.push(next(&format!("u{c}"), format!("k{k}"), 0));
            }
        }
        for k in 0..KEYS_PER_CALLER - 5 {
            records.push(next("bob", format!("k{k}"), 0));
        }
        for record in &records {
            fold(&mut published, record);
        }
        // The batch: bob past his cap, everyone past the total, a reused key, the admin, and
        // time moving past the window of the oldest.
        let mut batch = Vec::new();
        for k in 0..30 {
            batch.push(next("bob", format!("new{k}"), 0));
        }
        batch.push(next("bob", "k500".into(), 0));
        batch.push(next("", "k1".into(), 0));
        for k in 0..2_000 {
            batch.push(next(&format!("v{}", k % 3), format!("k{k}"), 0));
        }
        batch.push(next("ann", "late".into(), 1_000_000));
        let asked: Vec<(Option<String>, String)> = records
            .iter()
            .chain(&batch)
            .map(|r| {
                let RecordKind::EventInserted(e) = &r.kind else {
                    unreachable!()
                };
                (e.by.clone(), e.idempotency_key.clone().unwrap_or_default())
            })
            .collect();
        let mut overlay = KeysOverlay::default();
        let mut whole = published.clone();
        for (n, record) in batch.iter().enumerate() {
            let RecordKind::EventInserted(e) = &record.kind else {
                unreachable!()
            };
            overlay.remember(&published, record, e);
            whole.remember(record, e);
            if n + 2 < batch.len() {
                continue;
            }
            for (by, key) in &asked {
                assert_eq!(
                    overlay.live(&published, by.as_deref(), key, record.at_ms),
                    whole.live(by.as_deref(), key, record.at_ms),
                    "{by:?} {key} after record {n}"
                );
            }
            if n + 2 == batch.len() {
                assert_eq!(whole.len(), KEYS_TOTAL, "the total cap evicted");
                assert_eq!(
                    whole.len_of(Some("bob")),
                    KEYS_PER_CALLER,
                    "bob's cap evicted"
                );
            }
        }
        assert_eq!(whole.len(), 1, "the window emptied the oldest");
    }

    #[test]
    fn forgetting_a_user_forgets_their_keys_and_no_one_elses() {
        let mut keys = IdempotencyKeys::default();
        fold(&mut keys, &insert(1, 0, Some("bob"), "k"));
        fold(&mut keys, &insert(2, 0, Some("bob"), "k2"));
        fold(&mut keys, &insert(3, 0, Some("ann"), "k"));
        fold(&mut keys, &insert(4, 0, None, "k"));
        keys.forget_user("bob");
        assert!(keys.live(Some("bob"), "k", 0).is_none());
        assert!(keys.live(Some("bob"), "k2", 0).is_none());
        assert_eq!(keys.len_of(Some("bob")), 0);
        assert_eq!(keys.live(Some("ann"), "k", 0).unwrap().0, 3);
        assert_eq!(keys.live(None, "k", 0).unwrap().0, 4);
        assert_eq!(keys.len(), 2);
        keys.forget_user("nobody");
        assert_eq!(keys.len(), 2);
        // The name's next user starts afresh.
        fold(&mut keys, &insert(5, 0, Some("bob"), "k"));
        assert_eq!(keys.live(Some("bob"), "k", 0).unwrap().0, 5);
    }

    /// A batch that deletes a user forgets the user's published keys and those the batch
    /// itself remembered, as the keys after the batch do.
    #[test]
    fn an_overlay_forgets_a_user_as_the_folded_keys() {
        let mut published = IdempotencyKeys::default();
        for (cursor, by, key) in [(1, "bob", "a"), (2, "bob", "b"), (3, "ann", "a")] {
            fold(&mut published, &insert(cursor, 0, Some(by), key));
        }
        let mut whole = published.clone();
        let mut overlay = KeysOverlay::default();
        let step = |whole: &mut IdempotencyKeys, overlay: &mut KeysOverlay, r: &Record| {
            let RecordKind::EventInserted(e) = &r.kind else {
                unreachable!()
            };
            whole.remember(r, e);
            overlay.remember(&published, r, e);
        };
        // The batch reuses one of bob's published keys and adds one, then forgets bob.
        step(&mut whole, &mut overlay, &insert(4, 0, Some("bob"), "a"));
        step(&mut whole, &mut overlay, &insert(5, 0, Some("bob"), "c"));
        whole.forget_user("bob");
        overlay.forget_user(&published, "bob");
        step(&mut whole, &mut overlay, &insert(6, 0, Some("bob"), "b"));
        for (by, key) in [("bob", "a"), ("bob", "b"), ("bob", "c"), ("ann", "a")] {
            assert_eq!(
                overlay.live(&published, Some(by), key, 0),
                whole.live(Some(by), key, 0),
                "{by} {key}"
            );
        }
        assert_eq!(whole.len_of(Some("bob")), 1);
        assert_eq!(whole.live(Some("bob"), "b", 0).unwrap().0, 6);
    }

    #[test]
    fn the_digest_separates_its_parts() {
        assert_ne!(
            request_digest("ab", "c", "1"),
            request_digest("a", "bc", "1")
        );
    }
}
