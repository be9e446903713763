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
pub mod fsync;
pub mod lock;
pub mod reader;
pub mod recovery;
pub mod segment;
pub mod space;
pub mod sparse_index;
pub mod writer;

use std::path::PathBuf;

pub use reader::LogReader;
pub use recovery::{KnownSegments, Recovered, TailRepair, open, open_from};
pub use writer::LogWriter;

/// The file whose presence marks a log directory as a node's local copy of a shared stream
/// (`log-format/FORMAT.md`): its cursors are the stream's sequences and may skip.
pub const SHARED_MARKER: &str = "SHARED";

/// Marks `dir` as a shared stream's local copy; a no-op if it already is.
pub fn mark_shared(dir: &std::path::Path) -> Result<(), LogError> {
    let path = dir.join(SHARED_MARKER);
    if path.exists() {
        return Ok(());
    }
    std::fs::write(
        &path,
        "This log is a broker node's local copy of a shared JetStream stream (--log nats://...).\n",
    )
    .map_err(|e| LogError::io(&path, e))
}

/// The log's size on disk: segment files and their bytes. The one place that adds them up
/// (metrics, `/server_stats`, the tools' progress bars).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Segment files.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// The usage of the segment files at `paths`; files that vanished meanwhile count for 0 bytes.
pub fn disk_usage<'a>(paths: impl IntoIterator<Item = &'a std::path::Path>) -> DiskUsage {
    paths
        .into_iter()
        .fold(DiskUsage::default(), |usage, path| DiskUsage {
            segments: usage.segments + 1,
            bytes: usage.bytes + std::fs::metadata(path).map_or(0, |m| m.len()),
        })
}

/// Whether `dir` is a shared stream's local copy.
pub fn is_shared(dir: &std::path::Path) -> bool {
    dir.join(SHARED_MARKER).exists()
}

pub use crate::cursor::Cursor;
pub use fsync::FsyncPolicy;

/// How the owner of the log checks a payload and learns its cursor.
///
/// Returns `None` when the payload is not a valid record; the log then treats the frame
/// as damaged exactly as if its CRC had failed.
pub type Codec = fn(&[u8]) -> Option<Cursor>;

/// The log's tests' codec: a payload's first eight bytes are its cursor.
#[cfg(test)]
pub(crate) fn test_codec(payload: &[u8]) -> Option<Cursor> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

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
    /// A segment file larger than any this broker writes with its `--segment_bytes`: not read.
    #[error(
        "{path} is {len} bytes, larger than the {limit} bytes a segment may span with --segment_bytes {segment_bytes} (twice that, plus one largest frame); it was not read. If it was written with a larger setting, run with --segment_bytes (BROKER_SEGMENT_BYTES for the server and the `broker log` tools) of at least {needed}; otherwise it is not a segment of this log: move it away",
        needed = segment::segment_bytes_for(*len)
    )]
    SegmentTooLarge {
        /// The segment file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
        /// The largest size accepted.
        limit: u64,
        /// The `--segment_bytes` the limit derives from.
        segment_bytes: u64,
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
