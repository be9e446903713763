//! Checkpoints: the projections at some cursor, kept in fjall so that a restart replays only
//! the tail of the log. A checkpoint is only an optimisation: one that is missing, corrupt,
//! of another schema or ahead of the log is ignored (with a warning) and the log replayed in
//! full. Deleting the checkpoint directory loses nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rkyv::{Archive, Deserialize, Serialize};

use crate::log::Cursor;
use crate::state::{LatestEvent, State, User};

/// Bumped whenever [`Snapshot`] changes shape: older checkpoints are then ignored.
pub const SCHEMA: u32 = 1;

const KEY: &[u8] = b"newest";

/// A loaded checkpoint: the state, and the segment lengths (by first cursor) it saw.
pub type Loaded = (State, HashMap<Cursor, u64>);

/// The state, as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    schema: u32,
    cursor: Cursor,
    users: Vec<UserSnap>,
    latest: Vec<LatestSnap>,
    /// (first cursor, file length) of the segments when the checkpoint was taken: a start
    /// skips reading an old segment only while its length is still the same, so a torn or
    /// truncated older segment is still found and refused at start.
    segments: Vec<(Cursor, u64)>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct UserSnap {
    id: [u8; 16],
    username: String,
    tenant: String,
    password_hash: String,
    email: Option<String>,
    scopes: Vec<String>,
    data: Option<String>,
    two_factor: bool,
    totp_secret: Vec<u8>,
    revoked: bool,
    credential_epoch: Cursor,
    version: Cursor,
    last_login_step: u64,
    last_reset_step: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct LatestSnap {
    tenant: String,
    cursor: Cursor,
    id: [u8; 16],
    event: String,
    data: String,
}

impl Snapshot {
    fn of(state: &State, segments: Vec<(Cursor, u64)>) -> Self {
        Snapshot {
            segments,
            schema: SCHEMA,
            cursor: state.cursor,
            users: state
                .users
                .values()
                .map(|u| UserSnap {
                    id: u.id,
                    username: u.username.clone(),
                    tenant: u.tenant.clone(),
                    password_hash: u.password_hash.clone(),
                    email: u.email.clone(),
                    scopes: u.scopes.clone(),
                    data: u.data.clone(),
                    two_factor: u.two_factor,
                    totp_secret: u.totp_secret.clone(),
                    revoked: u.revoked,
                    credential_epoch: u.credential_epoch,
                    version: u.version,
                    last_login_step: u.last_login_step,
                    last_reset_step: u.last_reset_step,
                })
                .collect(),
            latest: state
                .latest
                .iter()
                .flat_map(|(tenant, by_name)| {
                    by_name.values().map(move |e| LatestSnap {
                        tenant: tenant.clone(),
                        cursor: e.cursor,
                        id: e.id,
                        event: e.event.to_string(),
                        data: e.data.to_string(),
                    })
                })
                .collect(),
        }
    }

    fn into_state(self) -> (State, HashMap<Cursor, u64>) {
        let lengths = self.segments.iter().copied().collect();
        (self.into_state_only(), lengths)
    }

    fn into_state_only(self) -> State {
        let mut latest: HashMap<String, HashMap<String, LatestEvent>> = HashMap::new();
        for e in self.latest {
            latest.entry(e.tenant).or_default().insert(
                e.event.clone(),
                LatestEvent {
                    cursor: e.cursor,
                    id: e.id,
                    event: Arc::from(e.event.as_str()),
                    data: Arc::from(e.data.as_str()),
                },
            );
        }
        State {
            users: self
                .users
                .into_iter()
                .map(|u| {
                    (
                        u.username.clone(),
                        User {
                            id: u.id,
                            username: u.username,
                            tenant: u.tenant,
                            password_hash: u.password_hash,
                            email: u.email,
                            scopes: u.scopes,
                            data: u.data,
                            two_factor: u.two_factor,
                            totp_secret: u.totp_secret,
                            revoked: u.revoked,
                            credential_epoch: u.credential_epoch,
                            version: u.version,
                            last_login_step: u.last_login_step,
                            last_reset_step: u.last_reset_step,
                        },
                    )
                })
                .collect(),
            latest,
            cursor: self.cursor,
        }
    }
}

/// The checkpoint store (a fjall database).
pub struct Checkpoints {
    path: PathBuf,
    _db: Database,
    keyspace: Keyspace,
}

impl Checkpoints {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let db = Database::builder(path)
            .open()
            .map_err(|e| format!("cannot open checkpoints in {}: {e}", path.display()))?;
        let keyspace = db
            .keyspace("checkpoints", KeyspaceCreateOptions::default)
            .map_err(|e| format!("cannot open checkpoints in {}: {e}", path.display()))?;
        Ok(Checkpoints {
            path: path.to_owned(),
            _db: db,
            keyspace,
        })
    }

    /// Stores `state` as the newest checkpoint, durably, with the current segment lengths.
    pub fn save(&self, state: &State, segments: Vec<(Cursor, u64)>) -> Result<(), String> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&Snapshot::of(state, segments))
            .map_err(|e| format!("encoding a checkpoint failed: {e}"))?;
        let mut value = Vec::with_capacity(bytes.len() + 4);
        value.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        value.extend_from_slice(&bytes);
        self.keyspace
            .insert(KEY, value)
            .map_err(|e| format!("writing a checkpoint failed: {e}"))?;
        self._db
            .persist(PersistMode::SyncAll)
            .map_err(|e| format!("persisting a checkpoint failed: {e}"))
    }

    /// The newest checkpoint and the segment lengths it saw, or why there is none to use.
    pub fn load(&self) -> Result<Option<Loaded>, String> {
        let Some(value) = self.keyspace.get(KEY).map_err(|e| {
            format!(
                "reading the checkpoint in {} failed: {e}",
                self.path.display()
            )
        })?
        else {
            return Ok(None);
        };
        if value.len() < 4 {
            return Err("the checkpoint is truncated".into());
        }
        let (crc, bytes) = value.split_at(4);
        if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != crc32c::crc32c(bytes) {
            return Err("the checkpoint fails its CRC".into());
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let snapshot = rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(&aligned)
            .map_err(|e| format!("the checkpoint does not decode: {e}"))?;
        if snapshot.schema != SCHEMA {
            return Err(format!(
                "the checkpoint has schema {}, this build writes {SCHEMA}",
                snapshot.schema
            ));
        }
        Ok(Some(snapshot.into_state()))
    }
}
