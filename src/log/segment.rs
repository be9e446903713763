//! Segment files: naming and the fixed header.
//!
//! Version 3 (current) and 2, 48 bytes (they differ only in their records' layout):
//! ```text
//! magic "BRKRLOG\0" (8) | format version u32 LE (3) | flags u32 LE |
//! first cursor u64 LE | covers_upto u64 LE | horizon u64 LE |
//! header crc32c u32 LE (over the 40 bytes before) | reserved u32 (0)
//! ```
//! flags bit 0: the segment was written by compaction. `covers_upto`: the last cursor of the
//! segments a compacted segment replaced (0 otherwise) — at open, a leftover segment it covers
//! is the remains of an interrupted compaction swap and is removed. `horizon`: events below
//! this cursor may have been dropped by compaction, so a resume from before it gets the
//! snapshot (0 otherwise).
//!
//! Version 1 (first shipped), 32 bytes, read only to migrate it:
//! ```text
//! magic (8) | version u32 LE (1) | flags u32 (0) | first cursor u64 LE |
//! header crc32c u32 LE (over the 24 bytes before) | reserved u32 (0)
//! ```
//! Frames follow the header immediately, in both versions.

use std::path::{Path, PathBuf};

use super::frame::{FRAME_HEADER, MAX_PAYLOAD};
use super::{Cursor, LogError};

/// The first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"BRKRLOG\0";

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 3;

/// Size of the current segment header in bytes.
pub const HEADER_LEN: usize = 48;

/// Size of a version-1 segment header.
pub const HEADER_LEN_V1: usize = 32;

/// Header flag: written by compaction.
pub const FLAG_COMPACTED: u32 = 1;

/// File name suffix of a segment.
pub const SUFFIX: &str = ".seg";

/// The smallest `--segment_bytes` the writer uses (a smaller setting is raised to this).
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// The `--segment_bytes` the `broker log` tools assume when `BROKER_SEGMENT_BYTES` is unset.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The largest segment file a reader accepts from a log written with `segment_bytes`: twice
/// `segment_bytes` plus one largest frame (and the header).
///
/// Why that much: the writer starts a new segment before a batch once the active one has
/// reached `segment_bytes`, and ends a batch early when it reaches it, so a plain segment
/// never exceeds `segment_bytes` plus the frames of one command (under one largest frame: a
/// request body is at most 16 MiB); compaction closes its output at this same limit. The
/// second `segment_bytes` is slack, e.g. for a log written before those rules. Anything
/// larger was not written by this broker with this setting, and reading it whole would let
/// one file take the process's memory.
pub fn max_len(segment_bytes: u64) -> u64 {
    segment_bytes
        .max(MIN_SEGMENT_BYTES)
        .saturating_mul(2)
        .saturating_add((FRAME_HEADER + MAX_PAYLOAD + HEADER_LEN) as u64)
}

/// The smallest `--segment_bytes` whose [`max_len`] admits a file of `len` bytes.
pub fn segment_bytes_for(len: u64) -> u64 {
    len.saturating_sub((FRAME_HEADER + MAX_PAYLOAD + HEADER_LEN) as u64)
        .div_ceil(2)
        .max(MIN_SEGMENT_BYTES)
}

/// Reads a whole segment file, refusing one larger than [`max_len`]`(segment_bytes)` and
/// anything but a regular file ([`open`]).
///
/// The size is checked before anything is read, and the read itself stops one byte past the
/// limit, so a file that grows meanwhile cannot slip through either.
pub fn read(path: &Path, segment_bytes: u64) -> Result<Vec<u8>, LogError> {
    let mut bytes = Vec::new();
    read_into(path, segment_bytes, &mut bytes)?;
    Ok(bytes)
}

/// [`read`] into `bytes` (emptied first), so that a walk over many segments reuses one
/// buffer: a fresh 64 MiB buffer per segment is mapped, faulted in and zeroed page by page,
/// which cost a tenth of a full replay (measured with perf).
pub fn read_into(path: &Path, segment_bytes: u64, bytes: &mut Vec<u8>) -> Result<(), LogError> {
    use std::io::Read;
    let limit = max_len(segment_bytes);
    let too_large = |len| LogError::SegmentTooLarge {
        path: path.to_owned(),
        len,
        limit,
        segment_bytes,
    };
    let file = open(path)?;
    let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    if len > limit {
        return Err(too_large(len));
    }
    bytes.clear();
    bytes.reserve(len as usize);
    file.take(limit + 1)
        .read_to_end(bytes)
        .map_err(|e| LogError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(())
}

/// Opens a segment file to read it, refusing anything but a regular file (with the path).
///
/// A FIFO named like a segment blocked the `open` until some process opened it for writing,
/// so a start or a `broker log` tool hung without a word; a device or a socket is no segment
/// either, and a symbolic link would make the log read (and a start cut) a file outside its
/// directory. So the file is opened without following a link and without waiting
/// (`O_NOFOLLOW | O_NONBLOCK`: a FIFO's open returns at once), and its type is checked on the
/// open descriptor, so nothing can be swapped in between the check and the reads.
/// `O_NONBLOCK` stays set: Linux ignores it for a regular file, whose reads never wait.
pub fn open(path: &Path) -> Result<std::fs::File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_a_file(path, "a symbolic link"),
            _ => LogError::io(path, e),
        })?;
    let kind = file
        .metadata()
        .map_err(|e| LogError::io(path, e))?
        .file_type();
    if !kind.is_file() {
        return Err(not_a_file(path, file_kind(&kind)));
    }
    Ok(file)
}

/// What a file that is not a regular one is, for an operator.
pub fn file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// The refusal of a segment's name that holds no regular file: the log is not what this
/// broker wrote, and nothing of it was read.
fn not_a_file(path: &Path, what: &str) -> LogError {
    LogError::Damaged {
        path: path.to_owned(),
        offset: 0,
        reason: format!(
            "it is {what}, not a regular file, so no segment of this log (nothing was read from it): move it away"
        ),
    }
}

/// The decoded fixed header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version the segment was written with.
    pub version: u32,
    /// Flags ([`FLAG_COMPACTED`]).
    pub flags: u32,
    /// Cursor of the first record the segment may hold.
    pub first_cursor: Cursor,
    /// For a compacted segment: the last cursor of the segments it replaced.
    pub covers_upto: Cursor,
    /// Events below this cursor may have been dropped by compaction.
    pub horizon: Cursor,
}

/// Why a segment header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderFault {
    /// Fewer bytes than the header of its version.
    Short(usize),
    /// The magic bytes are wrong: not a broker segment.
    BadMagic,
    /// The header CRC does not match.
    BadCrc,
}

impl std::fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderFault::Short(n) => write!(f, "segment header cut short ({n} bytes)"),
            HeaderFault::BadMagic => write!(f, "not a broker segment (bad magic bytes)"),
            HeaderFault::BadCrc => write!(f, "segment header CRC mismatch"),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// The header of a plain segment of the current version starting at `first_cursor`.
    pub fn new(first_cursor: Cursor) -> Self {
        Header {
            version: FORMAT_VERSION,
            flags: 0,
            first_cursor,
            covers_upto: 0,
            horizon: 0,
        }
    }

    /// The header of a compacted segment.
    pub fn compacted(first_cursor: Cursor, covers_upto: Cursor, horizon: Cursor) -> Self {
        Header {
            flags: FLAG_COMPACTED,
            covers_upto,
            horizon,
            ..Header::new(first_cursor)
        }
    }

    /// Bytes this header takes in its file (32 for version 1, 48 from version 2).
    pub fn len(&self) -> usize {
        if self.version == 1 {
            HEADER_LEN_V1
        } else {
            HEADER_LEN
        }
    }

    /// Never empty: a header always has its fixed size.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The 48 header bytes (the layout of version 2 and later, with this header's version:
    /// a migration step writes the version it migrates to).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_cursor.to_le_bytes());
        out[24..32].copy_from_slice(&self.covers_upto.to_le_bytes());
        out[32..40].copy_from_slice(&self.horizon.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..40]);
        out[40..44].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a header of any known layout; the version is returned as found, for the
    /// caller to judge (an unknown version is parsed as far as the magic and version go).
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderFault> {
        if bytes.len() < 12 {
            return Err(HeaderFault::Short(bytes.len()));
        }
        if bytes[0..8] != MAGIC {
            return Err(HeaderFault::BadMagic);
        }
        let version = u32_at(bytes, 8);
        let (len, crc_at) = if version == 1 {
            (HEADER_LEN_V1, 24)
        } else {
            (HEADER_LEN, 40)
        };
        if bytes.len() < len {
            return Err(HeaderFault::Short(bytes.len()));
        }
        if version > FORMAT_VERSION {
            // A newer layout we cannot check: report the version, the caller refuses it.
            return Ok(Header {
                version,
                ..Header::new(0)
            });
        }
        if u32_at(bytes, crc_at) != crc32c::crc32c(&bytes[0..crc_at]) {
            return Err(HeaderFault::BadCrc);
        }
        let header = if version == 1 {
            Header {
                version,
                flags: 0,
                first_cursor: u64_at(bytes, 16),
                covers_upto: 0,
                horizon: 0,
            }
        } else {
            Header {
                version,
                flags: u32_at(bytes, 12),
                first_cursor: u64_at(bytes, 16),
                covers_upto: u64_at(bytes, 24),
                horizon: u64_at(bytes, 32),
            }
        };
        Ok(header)
    }
}

/// The file name of the segment whose first cursor is `first`.
pub fn file_name(first: Cursor) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The path of the segment whose first cursor is `first` in `dir`.
pub fn path(dir: &Path, first: Cursor) -> PathBuf {
    dir.join(file_name(first))
}

/// The first cursor named by a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<Cursor> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, sorted by first cursor.
pub fn list(dir: &Path) -> std::io::Result<Vec<(Cursor, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// Flushes a directory's entries so a created or renamed file survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates an empty segment atomically: header written and fsynced under a temporary name,
/// then renamed, then the directory fsynced, so a crash never leaves a half-written header.
pub(crate) fn create(dir: &Path, first: Cursor) -> Result<PathBuf, LogError> {
    let path = path(dir, first);
    let tmp = path.with_extension("seg.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
    std::io::Write::write_all(&mut file, &Header::new(first).encode())
        .and_then(|_| file.sync_all())
        .map_err(|e| LogError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_faults() {
        let h = Header::compacted(42, 99, 77);
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        assert_eq!(Header::decode(&Header::new(5).encode()), Ok(Header::new(5)));
        let mut bad = bytes;
        bad[17] ^= 1;
        assert_eq!(Header::decode(&bad), Err(HeaderFault::BadCrc));
        bad = bytes;
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderFault::BadMagic));
        assert_eq!(Header::decode(&bytes[..10]), Err(HeaderFault::Short(10)));
        assert_eq!(Header::decode(&bytes[..40]), Err(HeaderFault::Short(40)));
    }

    #[test]
    fn version_one_headers_still_decode() {
        let mut v1 = [0u8; HEADER_LEN_V1];
        v1[0..8].copy_from_slice(&MAGIC);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        v1[16..24].copy_from_slice(&7u64.to_le_bytes());
        let crc = crc32c::crc32c(&v1[0..24]);
        v1[24..28].copy_from_slice(&crc.to_le_bytes());
        let h = Header::decode(&v1).unwrap();
        assert_eq!((h.version, h.first_cursor, h.len()), (1, 7, HEADER_LEN_V1));
    }

    #[test]
    fn the_size_limit_and_the_setting_it_asks_for_agree() {
        let limit = max_len(DEFAULT_SEGMENT_BYTES);
        assert_eq!(limit, 160 * 1024 * 1024 + 8 + 48);
        assert_eq!(segment_bytes_for(limit), DEFAULT_SEGMENT_BYTES);
        assert_eq!(max_len(segment_bytes_for(limit + 1)), limit + 2);
        assert_eq!(max_len(1), max_len(MIN_SEGMENT_BYTES));
        assert_eq!(max_len(u64::MAX), u64::MAX);
    }

    #[test]
    fn an_oversized_segment_is_refused_before_it_is_read() {
        let dir = std::env::temp_dir().join(format!("broker-segment-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file_name(1));
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(max_len(MIN_SEGMENT_BYTES)).unwrap();
        assert_eq!(
            read(&path, MIN_SEGMENT_BYTES).unwrap().len() as u64,
            max_len(MIN_SEGMENT_BYTES)
        );
        file.set_len(max_len(MIN_SEGMENT_BYTES) + 1).unwrap();
        let err = read(&path, MIN_SEGMENT_BYTES).unwrap_err();
        assert!(
            matches!(err, LogError::SegmentTooLarge { len, .. } if len == max_len(MIN_SEGMENT_BYTES) + 1),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_name("00000000000000000001.seg"), Some(1));
        assert_eq!(parse_name("1.seg"), None);
        assert_eq!(parse_name("00000000000000000001.seg.tmp"), None);
    }
}
