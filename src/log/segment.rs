//! Segment files: naming and the fixed header.
//!
//! ```text
//! magic "BRKRLOG\0" (8) | format version u32 LE | flags u32 LE (0) |
//! first cursor u64 LE | header crc32c u32 LE (over the 24 bytes before) | reserved u32 (0)
//! ```
//! 32 bytes in all; frames follow immediately.

use std::path::{Path, PathBuf};

use super::Cursor;

/// The first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"BRKRLOG\0";

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Size of the segment header in bytes.
pub const HEADER_LEN: usize = 32;

/// File name suffix of a segment.
pub const SUFFIX: &str = ".seg";

/// The decoded fixed header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version the segment was written with.
    pub version: u32,
    /// Cursor of the first record the segment may hold.
    pub first_cursor: Cursor,
}

/// Why a segment header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderFault {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short(usize),
    /// The magic bytes are wrong: not a broker segment.
    BadMagic,
    /// The header CRC does not match.
    BadCrc,
}

impl std::fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderFault::Short(n) => {
                write!(f, "segment header cut short ({n} of {HEADER_LEN} bytes)")
            }
            HeaderFault::BadMagic => write!(f, "not a broker segment (bad magic bytes)"),
            HeaderFault::BadCrc => write!(f, "segment header CRC mismatch"),
        }
    }
}

impl Header {
    /// The header of a segment of the current version starting at `first_cursor`.
    pub fn new(first_cursor: Cursor) -> Self {
        Header {
            version: FORMAT_VERSION,
            first_cursor,
        }
    }

    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_cursor.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a header; the version is returned as found, for the caller to judge.
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderFault> {
        if bytes.len() < HEADER_LEN {
            return Err(HeaderFault::Short(bytes.len()));
        }
        if bytes[0..8] != MAGIC {
            return Err(HeaderFault::BadMagic);
        }
        let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(&bytes[0..24]) {
            return Err(HeaderFault::BadCrc);
        }
        Ok(Header {
            version: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            first_cursor: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_faults() {
        let h = Header::new(42);
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        let mut bad = bytes;
        bad[17] ^= 1;
        assert_eq!(Header::decode(&bad), Err(HeaderFault::BadCrc));
        bad = bytes;
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderFault::BadMagic));
        assert_eq!(Header::decode(&bytes[..10]), Err(HeaderFault::Short(10)));
    }

    #[test]
    fn names() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_name("00000000000000000001.seg"), Some(1));
        assert_eq!(parse_name("1.seg"), None);
        assert_eq!(parse_name("00000000000000000001.seg.tmp"), None);
    }
}
