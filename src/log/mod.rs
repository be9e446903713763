//! The segmented, append-only log: bytes on disk and nothing else.
//!
//! A log is a directory of segment files, each named by the cursor of its first record
//! (`00000000000000000001.seg`). A segment is a [`segment::Header`] followed by frames
//! (see [`frame`]). The log stores opaque payloads; it learns a payload's cursor, and whether
//! the payload is well formed, only through the [`Codec`] its owner hands it, so it knows
//! nothing of users or events. `log-format/FORMAT.md` documents every byte.

pub mod compact;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod frame;
pub mod reader;
pub mod recovery;
pub mod segment;
pub mod writer;

use std::path::PathBuf;

pub use reader::LogReader;
pub use recovery::{KnownSegments, Recovered, TailRepair, open, open_from};
pub use writer::LogWriter;

/// A record's position in the log: strictly increasing, starting at 1, never reused.
pub type Cursor = u64;

/// How the owner of the log checks a payload and learns its cursor.
///
/// Returns `None` when the payload is not a valid record; the log then treats the frame
/// as damaged exactly as if its CRC had failed.
pub type Codec = fn(&[u8]) -> Option<Cursor>;

/// Errors of the log layer; each variant says what an operator should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The disk refused a read or write: check space, permissions and the device.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation touched.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Damage before the tail of the log: never repaired silently.
    #[error(
        "the log is damaged in {path} at byte offset {offset}: {reason}; run `broker log verify --db <dir>` to list every fault (the server never drops records silently)"
    )]
    Damaged {
        /// The segment file holding the damage.
        path: PathBuf,
        /// Byte offset of the damaged frame or header within that file.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A segment written by an older format version: migrate it.
    #[error(
        "{path} has log format version {found}, this broker reads version {supported}: run `broker log migrate --db <dir>` (it keeps a backup) and start again"
    )]
    OldVersion {
        /// The segment file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A segment written by a newer format version than this build knows.
    #[error(
        "{path} has log format version {found}, newer than this broker's {supported}: run a newer broker"
    )]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A record larger than a frame may hold.
    #[error("a record of {0} bytes exceeds the largest frame ({max} bytes)", max = frame::MAX_PAYLOAD)]
    TooLarge(usize),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}
