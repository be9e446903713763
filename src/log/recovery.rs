//! Opening a log: check every segment, repair a torn tail, refuse any other damage.
//!
//! The policy is explicit ([`Fault`] → [`Verdict`]): only the **tail of the last segment** can
//! be the remains of a crash, because every earlier byte was fsynced before a later segment
//! was created. A bad frame there is cut away, unless an intact frame follows it (then the
//! damage is in the middle of acknowledged data and we refuse, naming file and offset).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::frame::{self, FRAME_HEADER};
use super::reader::{LogReader, SegmentMeta};
use super::segment::{self, FORMAT_VERSION, HEADER_LEN, Header};
use super::writer::{INDEX_EVERY, LogWriter};
use super::{Codec, Cursor, LogError};

/// A torn tail that recovery cut away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    /// The segment that was truncated.
    pub path: PathBuf,
    /// Its new length: the offset of the first bad frame.
    pub offset: u64,
    /// How many bytes were removed.
    pub removed: u64,
    /// What was wrong with the first removed frame.
    pub reason: String,
}

/// An opened log.
pub struct Recovered {
    /// The one writer.
    pub writer: LogWriter,
    /// A reader handle that can be cloned freely.
    pub reader: LogReader,
    /// The cursor of the newest record (0 for an empty log).
    pub last_cursor: Cursor,
    /// Tails cut away, for the caller to report.
    pub repairs: Vec<TailRepair>,
    /// Segments removed because a compacted segment already covers them (the remains of an
    /// interrupted compaction swap).
    pub removed_leftovers: Vec<PathBuf>,
}

/// One fault found while scanning a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset of the bad header or frame.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// What the scan of one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    /// The decoded header.
    pub header: Header,
    /// Offset just past the last intact frame.
    pub valid_len: u64,
    /// Cursor of the last intact record, or the cursor before the segment's first.
    pub last_cursor: Cursor,
    /// Number of intact frames.
    pub frames: u64,
    /// Sparse cursor → offset index of the intact frames.
    pub index: Vec<(Cursor, u64)>,
    /// The first bad frame, if any, and whether an intact frame follows it.
    pub fault: Option<(Fault, bool)>,
}

/// Reads the header and frames of one segment held in `bytes`.
///
/// `prev` is the last cursor of the segment before (0 if none); cursors must rise strictly.
/// `visit` sees every intact record in order. A header fault is returned as `Err`.
pub fn scan_segment(
    path: &Path,
    bytes: &[u8],
    codec: Codec,
    prev: Cursor,
    mut visit: impl FnMut(Cursor, &[u8]),
) -> Result<SegmentScan, LogError> {
    let header = checked_header(path, bytes)?;
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(segment::parse_name);
    if named != Some(header.first_cursor) {
        return Err(LogError::Damaged {
            path: path.to_owned(),
            offset: 0,
            reason: format!(
                "header says the first cursor is {}, the file name disagrees",
                header.first_cursor
            ),
        });
    }
    if header.first_cursor <= prev {
        return Err(LogError::Damaged {
            path: path.to_owned(),
            offset: 0,
            reason: format!(
                "segment starts at cursor {} but the segment before already reached {prev}",
                header.first_cursor
            ),
        });
    }
    let mut scan = SegmentScan {
        header,
        valid_len: HEADER_LEN as u64,
        last_cursor: header.first_cursor - 1,
        frames: 0,
        index: Vec::new(),
        fault: None,
    };
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        match check_frame(&bytes[offset..], codec, scan.last_cursor) {
            Ok((cursor, payload, len)) => {
                if scan.frames.is_multiple_of(INDEX_EVERY) {
                    scan.index.push((cursor, offset as u64));
                }
                visit(cursor, payload);
                scan.frames += 1;
                scan.last_cursor = cursor;
                offset += len;
                scan.valid_len = offset as u64;
            }
            Err(reason) => {
                let follows = intact_frame_follows(bytes, offset, codec, scan.last_cursor);
                scan.fault = Some((
                    Fault {
                        path: path.to_owned(),
                        offset: offset as u64,
                        reason,
                    },
                    follows,
                ));
                break;
            }
        }
    }
    Ok(scan)
}

/// Checks the frame at the start of `bytes`: intact, a valid record, cursor above `prev`.
fn check_frame(bytes: &[u8], codec: Codec, prev: Cursor) -> Result<(Cursor, &[u8], usize), String> {
    let (payload, len) = frame::decode(bytes).map_err(|f| f.to_string())?;
    let cursor = codec(payload).ok_or_else(|| "frame holds no valid record".to_string())?;
    if cursor <= prev {
        return Err(format!(
            "cursor {cursor} does not follow cursor {prev} (cursors must rise)"
        ));
    }
    Ok((cursor, payload, len))
}

/// Whether an intact record with a cursor above `prev` starts anywhere after `bad`.
///
/// Tells a torn tail (garbage to the end) from damage in the middle (good data after it).
fn intact_frame_follows(bytes: &[u8], bad: usize, codec: Codec, prev: Cursor) -> bool {
    (bad + 1..bytes.len().saturating_sub(FRAME_HEADER)).any(|at| {
        // Cheap pre-check on the length before paying for a CRC.
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        len != 0
            && len <= frame::MAX_PAYLOAD
            && at + FRAME_HEADER + len <= bytes.len()
            && check_frame(&bytes[at..], codec, prev).is_ok()
    })
}

/// What recovery does with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The remains of a crash: cut the segment at the fault.
    TruncateTail,
    /// Damage to data that was already acknowledged: refuse to start.
    Refuse,
}

fn judge(is_last_segment: bool, intact_frame_follows: bool) -> Verdict {
    if is_last_segment && !intact_frame_follows {
        Verdict::TruncateTail
    } else {
        Verdict::Refuse
    }
}

/// Opens (or creates) the log in `dir`, calling `visit` for every record in cursor order.
pub fn open(
    dir: &Path,
    codec: Codec,
    segment_bytes: u64,
    visit: impl FnMut(Cursor, &[u8]),
) -> Result<Recovered, LogError> {
    open_from(dir, codec, segment_bytes, 0, &Default::default(), visit)
}

/// What a checkpoint knew of each segment, by first cursor: its length and sparse index.
pub type KnownSegments = std::collections::HashMap<Cursor, (u64, Vec<(Cursor, u64)>)>;

/// Like [`open`], for a caller that already has the state up to `skip_upto` (a
/// checkpoint): segments holding only older records, whose length is still the one in
/// `known`, get their header checked but are not read (their index comes from `known`),
/// so a restart costs the tail, not the whole log. (`broker log verify` reads everything.)
pub fn open_from(
    dir: &Path,
    codec: Codec,
    segment_bytes: u64,
    skip_upto: Cursor,
    known: &KnownSegments,
    mut visit: impl FnMut(Cursor, &[u8]),
) -> Result<Recovered, LogError> {
    fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    remove_leftover_temp_files(dir)?;
    let mut listed = segment::list(dir).map_err(|e| LogError::io(dir, e))?;
    let removed_leftovers = remove_covered_leftovers(dir, &mut listed)?;
    if listed.is_empty() {
        let path = create_segment(dir, 1)?;
        listed.push((1, path));
    }
    let mut metas = Vec::with_capacity(listed.len());
    let mut repairs = Vec::new();
    let mut last_cursor: Cursor = 0;
    let mut tail = (0u64, 0u64);
    let mut horizon = 0;
    let count = listed.len();
    let firsts: Vec<Cursor> = listed.iter().map(|(first, _)| *first).collect();
    for (i, (first, path)) in listed.into_iter().enumerate() {
        let unchanged = || {
            fs::metadata(&path)
                .ok()
                .is_some_and(|m| known.get(&first).is_some_and(|(len, _)| *len == m.len()))
        };
        let wholly_old =
            firsts.get(i + 1).is_some_and(|next| *next <= skip_upto + 1) && unchanged();
        if wholly_old {
            let header = read_header(&path)?;
            last_cursor = last_cursor.max(firsts[i + 1] - 1);
            horizon = horizon.max(header.horizon);
            metas.push(SegmentMeta {
                first,
                path,
                index: known
                    .get(&first)
                    .map(|(_, index)| index.clone())
                    .unwrap_or_default(),
            });
            continue;
        }
        let bytes = segment::read(&path, segment_bytes)?;
        let scan = scan_segment(&path, &bytes, codec, last_cursor, &mut visit)?;
        if let Some((fault, follows)) = scan.fault {
            match judge(i + 1 == count, follows) {
                Verdict::Refuse => {
                    return Err(LogError::Damaged {
                        path: fault.path,
                        offset: fault.offset,
                        reason: fault.reason,
                    });
                }
                Verdict::TruncateTail => {
                    truncate(&path, scan.valid_len)?;
                    repairs.push(TailRepair {
                        path: path.clone(),
                        offset: scan.valid_len,
                        removed: bytes.len() as u64 - scan.valid_len,
                        reason: fault.reason,
                    });
                }
            }
        }
        last_cursor = scan.last_cursor;
        horizon = horizon.max(scan.header.horizon);
        tail = (scan.frames, scan.valid_len);
        metas.push(SegmentMeta {
            first,
            path,
            index: scan.index,
        });
    }
    let active = metas.last().expect("at least one segment");
    let writer_path = active.path.clone();
    let segments = Arc::new(RwLock::new(metas));
    let reader = LogReader::new(
        dir.to_owned(),
        codec,
        Arc::clone(&segments),
        horizon,
        segment_bytes,
    );
    let writer = LogWriter::resume(
        dir.to_owned(),
        writer_path,
        tail.1,
        tail.0,
        segment_bytes,
        segments,
    )?;
    Ok(Recovered {
        writer,
        reader,
        last_cursor,
        repairs,
        removed_leftovers,
    })
}

/// A compacted segment replaces the segments up to its `covers_upto`: it is renamed over the
/// first of them, then the others are deleted. A crash between the two leaves segments it
/// covers; they hold nothing it lacks (only superseded events), so they are removed.
fn remove_covered_leftovers(
    dir: &Path,
    listed: &mut Vec<(Cursor, PathBuf)>,
) -> Result<Vec<PathBuf>, LogError> {
    let mut covered_upto = 0;
    let mut removed = Vec::new();
    let mut kept = Vec::with_capacity(listed.len());
    for (first, path) in listed.drain(..) {
        if first <= covered_upto {
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            removed.push(path);
            continue;
        }
        let mut head = [0u8; HEADER_LEN];
        let read = fs::File::open(&path).and_then(|mut f| {
            use std::io::Read;
            f.read(&mut head)
        });
        if let Ok(n) = read
            && let Ok(header) = Header::decode(&head[..n])
            && header.flags & segment::FLAG_COMPACTED != 0
        {
            covered_upto = covered_upto.max(header.covers_upto);
        }
        kept.push((first, path));
    }
    *listed = kept;
    if !removed.is_empty() {
        segment::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    }
    Ok(removed)
}

/// Reads and checks a segment's header only.
fn read_header(path: &Path) -> Result<Header, LogError> {
    use std::io::Read;
    let mut head = [0u8; HEADER_LEN];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| LogError::io(path, e))?;
    checked_header(path, &head[..n])
}

/// Decodes a header and refuses any version but the current one, saying what to do.
fn checked_header(path: &Path, bytes: &[u8]) -> Result<Header, LogError> {
    let header = Header::decode(bytes).map_err(|fault| LogError::Damaged {
        path: path.to_owned(),
        offset: 0,
        reason: fault.to_string(),
    })?;
    if header.version < FORMAT_VERSION {
        return Err(LogError::OldVersion {
            path: path.to_owned(),
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    if header.version > FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            path: path.to_owned(),
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(header)
}

fn truncate(path: &Path, len: u64) -> Result<(), LogError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(path, e))?;
    file.set_len(len).map_err(|e| LogError::io(path, e))?;
    file.sync_all().map_err(|e| LogError::io(path, e))
}

fn remove_leftover_temp_files(dir: &Path) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".seg.tmp")) {
            fs::remove_file(entry.path()).map_err(|e| LogError::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Creates an empty segment atomically: header written and fsynced under a temporary name,
/// then renamed, then the directory fsynced, so a crash never leaves a half-written header.
pub(crate) fn create_segment(dir: &Path, first: Cursor) -> Result<PathBuf, LogError> {
    let path = segment::path(dir, first);
    let tmp = path.with_extension("seg.tmp");
    let mut file = File::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
    file.write_all(&Header::new(first).encode())
        .and_then(|_| file.sync_all())
        .map_err(|e| LogError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    segment::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_last_segment_without_later_good_frames_is_a_torn_tail() {
        assert_eq!(judge(true, false), Verdict::TruncateTail);
        assert_eq!(judge(true, true), Verdict::Refuse);
        assert_eq!(judge(false, false), Verdict::Refuse);
        assert_eq!(judge(false, true), Verdict::Refuse);
    }
}
