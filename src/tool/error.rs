//! Why a `broker log` command failed, and the exit code that says so.

use std::path::PathBuf;

use crate::engine::EngineError;
use crate::engine::checkpoint::CheckpointError;
use crate::log::LogError;

/// A failed `broker log` command. `main` prints it and exits with [`ToolError::exit_code`]:
/// 2 when the command could not do its work at all (flags, environment, unreadable files), 1
/// when it did and found the log wanting (faults, differences, damage, a running server).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// A flag or the environment is not what the command needs.
    #[error("{0}")]
    Usage(String),
    /// A file or directory could not be read or written.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A segment could not be worked through (damaged, oversized, of another version).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record's frame is intact but its bytes are no record.
    #[error("{} cursor {cursor}: record does not decode: {why}", path.display())]
    BadRecord {
        /// The segment.
        path: PathBuf,
        /// The record's cursor.
        cursor: u64,
        /// What the decoder said.
        why: String,
    },
    /// A segment is damaged where a reading command needs it whole.
    #[error("{} @ {offset}: {reason}: the log is damaged here; `broker log verify` reports every fault", path.display())]
    Damaged {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the bad frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// `verify` found faults (each printed above).
    #[error("{0} faults found")]
    Faults(usize),
    /// `replay --check` found the checkpoint and the log disagreeing (each printed above).
    #[error("{0} differences between the checkpoint and the log")]
    Differences(usize),
    /// There is no checkpoint to compare with.
    #[error("no checkpoint in {}", .0.display())]
    NoCheckpoint(PathBuf),
    /// The checkpoint could not be read.
    #[error("the checkpoint cannot be used: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A running server holds the log.
    #[error("{} is in use by a running broker: stop it, then {then}", path.display())]
    Locked {
        /// The log directory.
        path: PathBuf,
        /// What to do once it is stopped.
        then: &'static str,
    },
    /// A migration step could not convert a segment.
    #[error("migration failed: {}: {why}", path.display())]
    Migration {
        /// The segment.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The engine refused (opening the log, compacting).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `compact --url`: the server answered with an error.
    #[error("{url} answered {status}: {reply}")]
    Refused {
        /// The server.
        url: String,
        /// Its HTTP status.
        status: u16,
        /// Its body.
        reply: String,
    },
    /// `compact --url`: the server could not be reached.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        why: String,
    },
}

impl ToolError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ToolError::Usage(_) | ToolError::Io { .. } => 2,
            _ => 1,
        }
    }

    /// An I/O error about `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ToolError {
        let path = path.into();
        move |source| ToolError::Io { path, source }
    }
}
