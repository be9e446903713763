//! Writes a log directly, the way the server would have: users, tenants and events in
//! numbers that HTTP (and Argon2 per user) would take hours to create. Every user shares
//! one real Argon2id hash of [`PASSWORD`], so seeded users log in like any other.

use std::path::Path;

use broker::state::record::{EventInserted, UserCreated};
use broker::state::{Record, RecordKind};

use crate::target::PASSWORD;

/// What to write.
#[derive(Debug, Clone, Copy)]
pub struct Seed {
    /// Users `u0…`; user `i` is in tenant `t{i % tenants}`.
    pub users: u64,
    /// Tenants `t0…`.
    pub tenants: u64,
    /// Events after the users, spread round-robin over the tenants.
    pub events: u64,
    /// Distinct event names per tenant (the snapshot size of each tenant).
    pub names: u64,
}

/// Writes `seed` as the log of data directory `db`; returns the last cursor.
pub fn write(db: &Path, seed: Seed) -> Result<u64, String> {
    let hash = broker::auth::password::hash(PASSWORD)?;
    let dir = db.join("log");
    let mut log = broker::log::open(&dir, Record::cursor_of, 64 * 1024 * 1024, |_, _| {})
        .map_err(|e| e.to_string())?;
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let tenants = seed.tenants.max(1);
    let mut cursor = log.last_cursor;
    let mut append = |kind: RecordKind| -> Result<(), String> {
        cursor += 1;
        let record = Record {
            cursor,
            at_ms,
            kind,
        };
        log.writer
            .append(cursor, &record.encode())
            .map_err(|e| e.to_string())?;
        if cursor % 4096 == 0 {
            log.writer.flush(false).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    for i in 0..seed.users {
        append(RecordKind::UserCreated(UserCreated {
            id: *uuid::Uuid::new_v4().as_bytes(),
            username: format!("u{i}"),
            tenant: format!("t{}", i % tenants),
            password_hash: hash.clone(),
            email: None,
            scopes: None,
            data: None,
            two_factor: false,
            totp_secret: uuid::Uuid::new_v4().as_bytes().to_vec(),
        }))?;
    }
    let users = seed.users.max(1);
    for j in 0..seed.events {
        let tenant = j % tenants;
        append(RecordKind::EventInserted(EventInserted {
            id: *uuid::Uuid::now_v7().as_bytes(),
            tenant: format!("t{tenant}"),
            event: format!("e{}", (j / tenants) % seed.names.max(1)),
            data: format!(r#"{{"seq":{j},"t":0}}"#),
            by: Some(format!("u{}", tenant % users)),
            idempotency_key: None,
        }))?;
    }
    log.writer.flush(true).map_err(|e| e.to_string())?;
    // As a stopped server leaves it: no zeros reserved after the last record.
    log.writer.release_reserve().map_err(|e| e.to_string())?;
    Ok(cursor)
}
