//! Idempotency keys: the recent `Idempotency-Key`s of inserts, per caller, folded from the
//! log like every projection, so that a retry is recognised after a restart (replay or
//! checkpoint) and on every node of a shared log.
//!
//! Memory is bounded whatever clients send: at most [`KEYS_PER_CALLER`] keys per caller and
//! [`KEYS_TOTAL`] in all, the oldest forgotten first, and a key older than the window (in
//! record time, `at_ms`) is forgotten as soon as a newer insert is folded.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
        let Some(key) = &event.idempotency_key else {
            return;
        };
        while let Some((&oldest, used)) = self.uses.first_key_value() {
            if record.at_ms.saturating_sub(used.at_ms) < self.window_ms {
                break;
            }
            self.forget(oldest);
        }
        if let Some(&earlier) = self.index.get(&index_key(event.by.as_deref(), key)) {
            self.forget(earlier);
        }
        let who = caller(event.by.as_deref()).to_owned();
        let mine = self.per_caller.entry(who.clone()).or_default();
        mine.insert(record.cursor);
        let over = (mine.len() > KEYS_PER_CALLER).then(|| mine.first().copied());
        self.index
            .insert(index_key(event.by.as_deref(), key), record.cursor);
        self.uses.insert(
            record.cursor,
            KeyUse {
                by: event.by.clone(),
                key: key.clone(),
                at_ms: record.at_ms,
                id: event.id,
                request: request_digest(&event.tenant, &event.event, &event.data),
            },
        );
        if let Some(Some(oldest)) = over {
            self.forget(oldest);
        }
        while self.uses.len() > KEYS_TOTAL {
            let Some(&oldest) = self.uses.keys().next() else {
                break;
            };
            self.forget(oldest);
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

    #[test]
    fn the_digest_separates_its_parts() {
        assert_ne!(
            request_digest("ab", "c", "1"),
            request_digest("a", "bc", "1")
        );
    }
}
