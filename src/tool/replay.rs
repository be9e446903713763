//! `broker log replay`: fold the log into the projections and print a summary; with
//! `--check`, compare with the newest checkpoint.

use std::path::Path;

use super::ToolError;
use crate::engine::checkpoint::Checkpoints;
use crate::log::recovery::scan_segment;
use crate::state::{Record, State, evolve};

/// Folds the records of `log_dir` up to `to` (read-only).
pub fn fold(
    log_dir: &Path,
    to: Option<u64>,
    idempotency_window_ms: i64,
) -> Result<(State, u64), ToolError> {
    let mut walk = super::Walk::new(log_dir, "replaying").map_err(ToolError::io(log_dir))?;
    let mut state = State::default();
    state.idempotency.window_ms = idempotency_window_ms;
    let (mut records, mut prev) = (0u64, 0);
    let to = to.unwrap_or(u64::MAX);
    while let Some(segment) = walk.next() {
        let last = walk.is_empty();
        let (path, bytes) = (segment.path, segment.bytes?);
        let mut bad = None;
        let scan = scan_segment(&path, &bytes, Record::cursor_of, prev, |cursor, payload| {
            if cursor > to {
                return;
            }
            match Record::decode(payload) {
                Ok(record) => {
                    evolve(&mut state, &record);
                    records += 1;
                }
                Err(e) => {
                    bad.get_or_insert(ToolError::BadRecord {
                        path: path.clone(),
                        cursor,
                        why: e.to_string(),
                    });
                }
            }
        })?;
        if let Some(bad) = bad {
            return Err(bad);
        }
        if let Some(note) = super::fault_of(&scan, &bytes, last)? {
            eprintln!("{note}");
        }
        prev = scan.last_cursor;
        if prev >= to {
            break;
        }
    }
    Ok((state, records))
}

/// One line about a state.
pub fn summary(state: &State) -> String {
    let revoked = state.users.iter().filter(|u| u.revoked).count();
    let events: usize = state.latest.values().map(|by_name| by_name.len()).sum();
    let mut tenants: std::collections::HashSet<&str> =
        state.users.iter().map(|u| &*u.tenant).collect();
    tenants.extend(state.latest.keys().map(String::as_str));
    format!(
        "cursor {}, {} users ({revoked} revoked), {} tenants, {events} latest events",
        state.cursor,
        state.users.len(),
        tenants.len()
    )
}

/// Runs the subcommand.
pub fn run(db: &Path, to: Option<u64>, check: bool) -> Result<(), ToolError> {
    let dir = db.join("log");
    if !check {
        let (state, records) = fold(&dir, to, crate::state::idempotency::DEFAULT_WINDOW_MS)?;
        println!(
            "{}: replayed {records} records: {}",
            dir.display(),
            summary(&state)
        );
        return Ok(());
    }
    let store = db.join("checkpoints");
    let checkpoint = Checkpoints::open(&store)
        .and_then(|c| c.load())?
        .ok_or(ToolError::NoCheckpoint(store))?
        .state;
    // The keys the fold remembers depend on the window: the server's, as the checkpoint has it.
    let (mut replayed, _) = fold(
        &dir,
        Some(checkpoint.cursor),
        checkpoint.idempotency.window_ms,
    )?;
    replayed.cursor = replayed.cursor.max(checkpoint.cursor);
    let differences = differences(&replayed, &checkpoint);
    for d in &differences {
        println!("difference: {d}");
    }
    println!(
        "checkpoint at cursor {}: {} differences from the replayed log ({})",
        checkpoint.cursor,
        differences.len(),
        summary(&replayed)
    );
    match differences.len() {
        0 => Ok(()),
        n => Err(ToolError::Differences(n)),
    }
}

/// What differs between two states, one line per user or (tenant, event).
pub fn differences(a: &State, b: &State) -> Vec<String> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&str> = a
        .users
        .iter()
        .chain(b.users.iter())
        .map(|u| &*u.username)
        .collect();
    for name in names {
        if a.users.get(name) != b.users.get(name) {
            out.push(format!("user {name:?}"));
        }
    }
    let tenants: std::collections::BTreeSet<&String> =
        a.latest.keys().chain(b.latest.keys()).collect();
    for tenant in tenants {
        if a.latest.get(tenant) != b.latest.get(tenant) {
            out.push(format!("latest events of tenant {tenant:?}"));
        }
    }
    if a.idempotency != b.idempotency {
        out.push(format!(
            "idempotency keys ({} and {} remembered)",
            a.idempotency.len(),
            b.idempotency.len()
        ));
    }
    out
}
