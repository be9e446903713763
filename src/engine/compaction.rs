//! Compaction as the rules see it: which records a compacted log must keep.
//!
//! Below the retain cursor, a compacted log keeps the user records of users that exist (the
//! users' state is made of them, and they are few) and, of the events, only the latest of
//! each (tenant, event name) — exactly what the snapshot and the projections need. Cursors
//! are never renumbered. Runs inside the server (which keeps serving and swaps segments under
//! the readers' lock) or offline from `broker log compact`.
//!
//! **Erasure.** A user's records up to their `UserDeleted` (that one included) are dropped:
//! folded, they end in "no such user" whether they are there or not, and they are what holds
//! the email, data, password hashes and TOTP secret. A compaction that rewrote segments then
//! rewrites the checkpoint store too ([`super::checkpoint::Checkpoints::rewrite`]), whose
//! stored projections may still hold the user.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{Engine, EngineError};
use crate::log::Cursor;
use crate::log::compact::{self, CompactReport};
use crate::state::{Record, RecordKind};

/// What to keep whole: everything from a cursor on, or everything younger than an age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// Keep every record with this cursor or a later one.
    From(Cursor),
    /// Keep every record written within this age.
    Younger(Duration),
}

/// The longest age `--retain` takes: a thousand years, in seconds.
const MAX_RETAIN_SECS: u64 = 1000 * 365 * 86_400;

impl std::str::FromStr for Retain {
    type Err = String;
    /// `7d`, `12h`, `30m`, `45s`, or a cursor (`123` / `cursor:123`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.strip_prefix("cursor:").unwrap_or(s);
        if let Ok(cursor) = digits.parse::<u64>() {
            return Ok(Retain::From(cursor));
        }
        // Split before the last character, not the last byte: `7é` is refused, not a panic
        // (an attack review).
        let last = s.char_indices().last().map_or(0, |(at, _)| at);
        let (number, unit) = s.split_at(last);
        let seconds = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => 0,
        };
        match number.parse::<u64>() {
            // An age past what a duration holds once multiplied wrapped to a short one and
            // compacted nearly everything (found by an attack review): it is refused.
            Ok(n) if seconds > 0 => match n.checked_mul(seconds) {
                Some(secs) if secs <= MAX_RETAIN_SECS => {
                    Ok(Retain::Younger(Duration::from_secs(secs)))
                }
                _ => Err(format!(
                    "retain: {s:?} is longer than 1000 years; to keep everything, set no --retain"
                )),
            },
            _ => Err(format!(
                "retain: {s:?} is neither an age (7d, 12h, 30m, 45s) nor a cursor"
            )),
        }
    }
}

impl Engine {
    /// Retention (`--retain`): compacts with `retain` every `every`, from one interval after
    /// the start until the engine shuts down; each run is logged and counted in
    /// [`super::metrics::EngineMetrics`].
    pub fn spawn_retention(&self, retain: Retain, every: Duration) {
        // Weak: the task must not keep a stopped engine (and its log lock) alive.
        let engine = self.downgrade();
        let mut stop = self.shutdown_signal();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // A compaction longer than the interval delays the next one, never doubles it.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let metrics = engine.metrics();
                match engine.compact(retain, engine.now_ms()).await {
                    Ok(r) => {
                        metrics.retention_compactions.inc();
                        metrics
                            .retention_bytes_reclaimed
                            .inc_by(r.bytes_before.saturating_sub(r.bytes_after));
                        if r.segments_replaced == 0 {
                            // Most runs of a quiet log: counted, not logged at INFO each hour.
                            tracing::debug!("retention: nothing to compact");
                            continue;
                        }
                        tracing::info!(
                            segments = r.segments_replaced,
                            records_before = r.records_before,
                            records_after = r.records_after,
                            bytes_before = r.bytes_before,
                            bytes_after = r.bytes_after,
                            horizon = r.horizon,
                            "retention: log compacted"
                        );
                    }
                    Err(why) => {
                        metrics.retention_failures.inc();
                        tracing::warn!(%why, "retention: compaction failed; trying again next interval");
                    }
                }
            }
        });
    }

    /// Compacts the closed segments below `retain` (see the module docs).
    pub async fn compact(&self, retain: Retain, now_ms: i64) -> Result<CompactReport, EngineError> {
        let engine = self.clone();
        let deletion_in_active =
            tokio::task::spawn_blocking(move || engine.deletion_in_active_segment())
                .await
                .map_err(|e| EngineError::Unavailable(format!("compaction task failed: {e}")))??;
        if deletion_in_active {
            // Compaction rewrites closed segments only: without this, a deletion would wait
            // for the active segment to fill up (--segment_bytes) before it could be erased.
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.inner
                .tx
                .send(super::Msg::CloseSegment(reply))
                .await
                .map_err(|_| EngineError::ShuttingDown)?;
            answer.await.map_err(|_| EngineError::ShuttingDown)??;
        }
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.compact_blocking(retain, now_ms))
            .await
            .map_err(|e| EngineError::Unavailable(format!("compaction task failed: {e}")))?
    }

    fn compact_blocking(&self, retain: Retain, now_ms: i64) -> Result<CompactReport, EngineError> {
        let newest = self.cursor();
        let retain_cursor = match retain {
            Retain::From(cursor) => cursor.min(newest + 1),
            Retain::Younger(age) => {
                let cutoff =
                    now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
                let mut found = newest + 1;
                self.log().read_after(0, newest, |cursor, payload| {
                    match Record::decode(payload) {
                        Ok(r) if r.at_ms >= cutoff => {
                            found = cursor;
                            false
                        }
                        _ => true,
                    }
                })?;
                found
            }
        };
        // The latest event of every (tenant, name): taken after the retain point is fixed,
        // so anything inserted meanwhile only makes more events "latest" — never fewer.
        let latest: HashSet<Cursor> = self.read(|state| {
            state
                .latest
                .values()
                .flat_map(|by_name| by_name.values().map(|e| e.cursor))
                .collect()
        });
        let deleted = self.deletions(newest)?;
        let keep = |cursor: Cursor, payload: &[u8]| match Record::decode(payload) {
            Ok(record) => match &record.kind {
                RecordKind::EventInserted(_) => latest.contains(&cursor),
                _ => record
                    .username()
                    .and_then(|username| deleted.get(username))
                    .is_none_or(|&deletion| cursor > deletion),
            },
            // Undecodable records never reach here: the log's codec validated the frame.
            Err(_) => true,
        };
        let report = compact::compact(self.log(), Record::cursor_of, retain_cursor, keep)?;
        if report.segments_replaced > 0
            && let Some(store) = self.inner.index.store()
        {
            store.rewrite(newest).map_err(|e| {
                EngineError::Unavailable(format!(
                    "the log is compacted, but the checkpoint store could not be rewritten ({e}); it may still hold deleted users' fields until the next compaction"
                ))
            })?;
        }
        Ok(report)
    }

    /// Whether the active segment holds a `UserDeleted` record.
    fn deletion_in_active_segment(&self) -> Result<bool, EngineError> {
        let Some(active) = self.log().segments().last().map(|s| s.first) else {
            return Ok(false);
        };
        let mut found = false;
        self.log()
            .read_after(active.saturating_sub(1), self.cursor(), |_, payload| {
                found = matches!(
                    Record::decode(payload),
                    Ok(Record {
                        kind: RecordKind::UserDeleted { .. },
                        ..
                    })
                );
                !found
            })?;
        Ok(found)
    }

    /// The cursor of each user's last deletion up to `newest`. The whole log is read: a
    /// deletion in the active segment still lets compaction drop the closed segments'
    /// records of that user.
    fn deletions(&self, newest: Cursor) -> Result<HashMap<String, Cursor>, EngineError> {
        let mut deleted = HashMap::new();
        self.log().read_after(0, newest, |cursor, payload| {
            if let Ok(Record {
                kind: RecordKind::UserDeleted { username },
                ..
            }) = Record::decode(payload)
            {
                deleted.insert(username, cursor);
            }
            true
        })?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::Retain;
    use std::time::Duration;

    #[test]
    fn retain_values() {
        assert_eq!(
            "7d".parse(),
            Ok(Retain::Younger(Duration::from_secs(604_800)))
        );
        assert_eq!("90s".parse(), Ok(Retain::Younger(Duration::from_secs(90))));
        assert_eq!("1234".parse(), Ok(Retain::From(1234)));
        assert_eq!("cursor:5".parse(), Ok(Retain::From(5)));
        assert!("soon".parse::<Retain>().is_err());
        assert!("7w".parse::<Retain>().is_err());
        // A last character of several bytes panicked (split on a byte, an attack review).
        for odd in ["7é", "é", "1日", "d日", ""] {
            assert!(odd.parse::<Retain>().is_err(), "{odd}");
        }
        // Ages that wrapped when multiplied (an attack review's kept 17 of 121 records).
        assert_eq!(
            "365000d".parse(),
            Ok(Retain::Younger(Duration::from_secs(365_000 * 86_400)))
        );
        for huge in [
            "365001d",
            "999999999999d",
            "99999999999999h",
            "30000000000000000m",
        ] {
            let refused = huge.parse::<Retain>().unwrap_err();
            assert!(refused.contains("1000 years"), "{huge}: {refused}");
        }
    }
}
