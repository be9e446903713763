//! Opening a log: check every segment, repair a torn tail, refuse any other damage.
//!
//! The policy is explicit ([`Fault`] + [`After`] → `Verdict`): only the **tail of the last
//! segment** can be the remains of a crash, because every earlier byte was fsynced before a
//! later segment was created. A bad frame there is cut away only when the search after it
//! ([`search_after`]) read every byte to the end of the file and found no intact frame; if it
//! finds one, or cannot finish within its bounds, the damage may be in the middle of
//! acknowledged data and we refuse, naming file and offset. A compacted segment is never a
//! torn tail: it was fsynced whole before it was renamed into place.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::frame::{self, FRAME_HEADER};
use super::reader::{LogReader, SegmentMeta};
use super::segment::{self, FLAG_COMPACTED, FORMAT_VERSION, HEADER_LEN, Header};
use super::sparse_index::SparseIndex;
use super::writer::LogWriter;
use super::{Codec, Cursor, LogError};

/// How many candidate frames (offsets whose length field is plausible: non-zero, at most
/// [`frame::MAX_PAYLOAD`], within the file) the search checks at most. The rest of a torn
/// frame holds few: a candidate needs a fourth byte of `00`/`01`, rare in the text and
/// relative pointers a record is made of, and a zero run offers one only at its start.
pub const SEARCH_CANDIDATES: usize = 16 * 1024;

/// How many payload bytes the search checksums at most, over all its candidates: one
/// candidate may claim up to 32 MiB, so without this a few thousand of them cost gigabytes.
pub const SEARCH_CRC_BYTES: usize = 64 * 1024 * 1024;

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
    pub index: SparseIndex,
    /// The first bad frame, if any, and what the search after it found.
    pub fault: Option<(Fault, After)>,
    /// Zero bytes from the end of the last intact frame to the end of the file, which is
    /// no fault: the space the writer zero-fills ahead of the active segment's records
    /// (`writer.rs`). Only the last segment may have any, and only after a crash (a closed
    /// segment and a stopped server's last one are cut back to their records).
    pub zeros: u64,
}

impl SegmentScan {
    /// Where the next segment of one writer's log starts: after this one's last record, or
    /// after the range a compacted one covers (its dropped records leave gaps inside it).
    pub fn next_first(&self) -> Cursor {
        if self.header.flags & FLAG_COMPACTED != 0 {
            self.header.covers_upto.max(self.last_cursor) + 1
        } else {
            self.last_cursor + 1
        }
    }
}

/// What the bounded search after a bad frame found ([`search_after`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Not searched: the bad frame starts a zero-filled sector ([`unwritten_sector`]), the
    /// part of the last write that never reached the disk; what follows was written with it.
    Unwritten,
    /// An intact frame starts at this offset: the damage is in the middle of the data.
    Intact(u64),
    /// Every byte to the end of the segment was searched and no intact frame starts there.
    Nothing,
    /// The search stopped before the end (why): it cannot tell, which counts as damage.
    Unsure(String),
}

impl std::fmt::Display for After {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            After::Unwritten => write!(
                f,
                "zeros fill its frame header and the rest of its {SECTOR}-byte sector: a write that never reached the disk"
            ),
            After::Intact(at) => write!(f, "an intact frame follows at byte offset {at}"),
            After::Nothing => write!(f, "no intact frame follows"),
            After::Unsure(why) => write!(
                f,
                "cannot tell a torn tail from damage ({why}), so it counts as damage"
            ),
        }
    }
}

/// Reads the header and frames of one segment held in `bytes`.
///
/// `prev` is the last cursor of the segment before (0 if none); cursors must rise strictly,
/// and in a compacted segment stay at or below its `covers_upto`. `visit` sees every intact
/// record in order. A header fault is returned as `Err`.
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
        index: SparseIndex::default(),
        fault: None,
        zeros: 0,
    };
    let ceiling = if header.flags & FLAG_COMPACTED != 0 {
        header.covers_upto
    } else {
        Cursor::MAX
    };
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        match check_frame(&bytes[offset..], codec, scan.last_cursor, ceiling) {
            Ok((cursor, payload, len)) => {
                scan.index.note(scan.frames, cursor, offset as u64);
                visit(cursor, payload);
                scan.frames += 1;
                scan.last_cursor = cursor;
                offset += len;
                scan.valid_len = offset as u64;
            }
            Err(_) if bytes[offset..].iter().all(|b| *b == 0) => {
                scan.zeros = (bytes.len() - offset) as u64;
                break;
            }
            Err(reason) => {
                let after = if unwritten_sector(bytes, offset) {
                    After::Unwritten
                } else {
                    search_after(bytes, offset, codec, scan.last_cursor, ceiling)
                };
                scan.fault = Some((
                    Fault {
                        path: path.to_owned(),
                        offset: offset as u64,
                        reason,
                    },
                    after,
                ));
                break;
            }
        }
    }
    Ok(scan)
}

/// Checks the frame at the start of `bytes`: intact, a valid record, cursor above `prev` and
/// at most `ceiling`.
fn check_frame(
    bytes: &[u8],
    codec: Codec,
    prev: Cursor,
    ceiling: Cursor,
) -> Result<(Cursor, &[u8], usize), String> {
    let (payload, len) = frame::decode(bytes).map_err(|f| f.to_string())?;
    let cursor = codec(payload).ok_or_else(|| "frame holds no valid record".to_string())?;
    if cursor <= prev {
        return Err(format!(
            "cursor {cursor} does not follow cursor {prev} (cursors must rise)"
        ));
    }
    if cursor > ceiling {
        return Err(format!(
            "cursor {cursor} lies beyond {ceiling}, the last cursor this compacted segment covers"
        ));
    }
    Ok((cursor, payload, len))
}

/// Looks for an intact record with a cursor in `(prev, ceiling]` starting after `bad`, to
/// tell a torn tail (garbage to the end) from damage in the middle (good data after it).
///
/// Bounded, because the bytes are untrusted: it checks at most [`SEARCH_CANDIDATES`]
/// candidates and checksums at most [`SEARCH_CRC_BYTES`], so its cost is linear in the file's
/// length (itself bounded by the segment size limit) whatever the file holds (trying every
/// offset with no bound cost a CRC of up to 32 MiB per byte). Every byte to the end of the
/// file is looked at: a crash can leave many megabytes of zeros where a large batch was not
/// written, and zeros are no candidates, so they cost a length check each. Whenever a bound
/// stops it before the end of the file the answer is [`After::Unsure`], which recovery
/// refuses like damage: running out of budget can cost an operator a `broker log verify`,
/// never a record.
pub fn search_after(
    bytes: &[u8],
    bad: usize,
    codec: Codec,
    prev: Cursor,
    ceiling: Cursor,
) -> After {
    // A frame needs its header and at least one payload byte.
    let last_start = bytes.len().saturating_sub(FRAME_HEADER + 1);
    let (mut candidates, mut hashed) = (0usize, 0usize);
    for at in bad + 1..=last_start {
        // Cheap pre-check on the length before paying for a CRC.
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > frame::MAX_PAYLOAD || len > bytes.len() - at - FRAME_HEADER {
            continue;
        }
        candidates += 1;
        hashed += len;
        if candidates > SEARCH_CANDIDATES {
            return After::Unsure(format!(
                "more than {SEARCH_CANDIDATES} candidate frames in the {} bytes after it",
                at - bad
            ));
        }
        if hashed > SEARCH_CRC_BYTES {
            return After::Unsure(format!(
                "the candidate frames in the {} bytes after it claim more than {SEARCH_CRC_BYTES} bytes",
                at - bad
            ));
        }
        if check_frame(&bytes[at..], codec, prev, ceiling).is_ok() {
            return After::Intact(at as u64);
        }
    }
    After::Nothing
}

/// The unit a disk writes whole (the smallest logical block size).
pub const SECTOR: usize = 512;

/// Whether the bad frame at `at` starts with zeros that fill its frame header and the rest
/// of its sector. The writer overwrites zeros it wrote ahead (`writer.rs`), and a disk may
/// keep any of a batch's sectors without the others until the batch's `fdatasync` returns:
/// after a power cut, a sector of the last batch that never reached the disk reads as those
/// zeros, with the batch's later sectors intact after it. A frame's length is never zero,
/// and damage to data the disk had made durable does not zero a sector from a frame
/// boundary on, so these zeros are the end of a write that was never acknowledged.
pub fn unwritten_sector(bytes: &[u8], at: usize) -> bool {
    let upto = (at + FRAME_HEADER)
        .max((at / SECTOR + 1) * SECTOR)
        .min(bytes.len());
    bytes[at..upto].iter().all(|b| *b == 0)
}

/// A gapless log's segment that starts at `first` where `expect` was due: the records from
/// `expect` up to it are in no segment (a file was deleted or not restored).
fn missing_segment(path: &Path, first: Cursor, expect: Cursor) -> LogError {
    LogError::Damaged {
        path: path.to_owned(),
        offset: 0,
        reason: if expect == 1 {
            format!(
                "the log's first segment starts at cursor {first}, not 1: the segments before it are missing"
            )
        } else {
            format!(
                "this segment starts at cursor {first} but the log before it ends at cursor {}: the segment holding cursors {expect} to {} is missing",
                expect - 1,
                first - 1
            )
        },
    }
}

/// What recovery does with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The remains of a crash: cut the segment at the fault.
    TruncateTail,
    /// Damage to data that was already acknowledged: refuse to start.
    Refuse,
}

/// `may_be_torn`: the fault is in the last segment, and that segment is not a compacted one.
fn judge(may_be_torn: bool, after: &After) -> Verdict {
    if may_be_torn && matches!(after, After::Nothing | After::Unwritten) {
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
    open_from(
        dir,
        codec,
        segment_bytes,
        0,
        &Default::default(),
        true,
        visit,
    )
}

/// What a checkpoint knew of each segment, by first cursor: its length and sparse index.
pub type KnownSegments = std::collections::HashMap<Cursor, (u64, Vec<(Cursor, u64)>)>;

/// Like [`open`], for a caller that already has the state up to `skip_upto` (a
/// checkpoint): segments holding only older records, whose length is still the one in
/// `known`, get their header checked but are not read (their index comes from `known`),
/// so a restart costs the tail, not the whole log. (`broker log verify` reads everything.)
///
/// `gapless`: the log is one writer's (not a shared stream's local copy, which skips the
/// records its fold dropped), so its segments follow each other without a gap from cursor 1:
/// a segment that starts anywhere else means one before it is missing, and the open refuses
/// rather than serve a log without the acknowledged records it held.
pub fn open_from(
    dir: &Path,
    codec: Codec,
    segment_bytes: u64,
    skip_upto: Cursor,
    known: &KnownSegments,
    gapless: bool,
    mut visit: impl FnMut(Cursor, &[u8]),
) -> Result<Recovered, LogError> {
    fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    remove_leftover_temp_files(dir)?;
    let mut listed = segment::list(dir).map_err(|e| LogError::io(dir, e))?;
    let removed_leftovers = remove_covered_leftovers(dir, &mut listed, codec, segment_bytes)?;
    if listed.is_empty() {
        let path = segment::create(dir, 1)?;
        listed.push((1, path));
    }
    let mut metas = Vec::with_capacity(listed.len());
    let mut repairs = Vec::new();
    let mut last_cursor: Cursor = 0;
    let mut tail = (0u64, 0u64);
    let mut horizon = 0;
    let count = listed.len();
    let firsts: Vec<Cursor> = listed.iter().map(|(first, _)| *first).collect();
    // One buffer for every segment read (see `segment::read_into`).
    let mut bytes = Vec::new();
    // Where the next segment must start, in a gapless log.
    let mut expect: Cursor = 1;
    for (i, (first, path)) in listed.into_iter().enumerate() {
        if gapless && first != expect {
            return Err(missing_segment(&path, first, expect));
        }
        let unchanged = || {
            fs::metadata(&path)
                .ok()
                .is_some_and(|m| known.get(&first).is_some_and(|(len, _)| *len == m.len()))
        };
        let wholly_old =
            firsts.get(i + 1).is_some_and(|next| *next <= skip_upto + 1) && unchanged();
        if wholly_old {
            // Not read: it ends where the next one starts, unless the checkpoint knew a
            // segment between the two, and that one is gone.
            if gapless
                && let Some(gone) = known
                    .keys()
                    .filter(|k| **k > first && **k < firsts[i + 1])
                    .min()
            {
                return Err(missing_segment(
                    &segment::path(dir, firsts[i + 1]),
                    firsts[i + 1],
                    *gone,
                ));
            }
            expect = firsts[i + 1];
            let header = read_header(&path)?;
            last_cursor = last_cursor.max(firsts[i + 1] - 1);
            horizon = horizon.max(header.horizon);
            metas.push(SegmentMeta::closed(
                first,
                path,
                known
                    .get(&first)
                    .map(|(_, index)| SparseIndex::from_entries(index.clone()))
                    .unwrap_or_default(),
            ));
            continue;
        }
        segment::read_into(&path, segment_bytes, &mut bytes)?;
        let scan = scan_segment(&path, &bytes, codec, last_cursor, &mut visit)?;
        let next_first = scan.next_first();
        let compacted = scan.header.flags & FLAG_COMPACTED != 0;
        let may_be_torn = i + 1 == count && !compacted;
        if scan.zeros > 0 {
            if !may_be_torn {
                return Err(zeros_in_closed(&path, &scan));
            }
            // What the writer had reserved when the server stopped without closing the log:
            // no record is in it, so it is cut without a report.
            truncate(&path, scan.valid_len)?;
        }
        if let Some((fault, after)) = scan.fault {
            match judge(may_be_torn, &after) {
                Verdict::Refuse => {
                    return Err(LogError::Damaged {
                        path: fault.path,
                        offset: fault.offset,
                        reason: format!("{}; {after}", fault.reason),
                    });
                }
                Verdict::TruncateTail => {
                    truncate(&path, scan.valid_len)?;
                    repairs.push(TailRepair {
                        path: path.clone(),
                        offset: scan.valid_len,
                        removed: bytes.len() as u64 - scan.valid_len,
                        reason: format!("{}; {after}", fault.reason),
                    });
                }
            }
        }
        last_cursor = scan.last_cursor;
        expect = next_first;
        horizon = horizon.max(scan.header.horizon);
        tail = (scan.frames, scan.valid_len);
        metas.push(SegmentMeta::closed(first, path, scan.index));
    }
    let active = metas.last().expect("at least one segment");
    let writer_path = active.path.clone();
    let writer_end = Arc::clone(&active.end);
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
        writer_end,
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
/// covers; they hold nothing it lacks (only superseded events), so they are removed — but
/// only once the compacted segment has proved to be what an interrupted swap leaves
/// ([`check_compacted`]). A header alone is 48 bytes anyone can forge with a valid CRC.
fn remove_covered_leftovers(
    dir: &Path,
    listed: &mut Vec<(Cursor, PathBuf)>,
    codec: Codec,
    segment_bytes: u64,
) -> Result<Vec<PathBuf>, LogError> {
    let mut removed = Vec::new();
    let mut i = 0;
    while i < listed.len() {
        let path = &listed[i].1;
        let header = match peek_header(path) {
            Some(header) if header.flags & FLAG_COMPACTED != 0 => header,
            _ => {
                i += 1;
                continue;
            }
        };
        let covered = listed[i + 1..]
            .iter()
            .take_while(|(first, _)| *first <= header.covers_upto)
            .count();
        if covered > 0 {
            let next = listed.get(i + 1 + covered).map(|(first, _)| *first);
            check_compacted(path, &header, covered, next, codec, segment_bytes)?;
            for (_, leftover) in listed.drain(i + 1..i + 1 + covered) {
                fs::remove_file(&leftover).map_err(|e| LogError::io(&leftover, e))?;
                removed.push(leftover);
            }
        }
        i += 1;
    }
    if !removed.is_empty() {
        segment::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    }
    Ok(removed)
}

/// Refuses a compacted segment that would remove `covered` later segments unless it is
/// whole: every frame intact and a valid record, cursors rising within
/// `first_cursor..=covers_upto`, no bytes after the last frame, and the segment after the
/// covered ones (`next`) starting at `covers_upto + 1`, as it does after a real swap
/// (compaction never replaces the last segment).
fn check_compacted(
    path: &Path,
    header: &Header,
    covered: usize,
    next: Option<Cursor>,
    codec: Codec,
    segment_bytes: u64,
) -> Result<(), LogError> {
    let refuse = |offset, why: String| LogError::Damaged {
        path: path.to_owned(),
        offset,
        reason: format!(
            "{why}: a compacted segment (covering cursors up to {}) replaces the {covered} segments after it only when it is whole; they are kept",
            header.covers_upto
        ),
    };
    if next != Some(header.covers_upto.saturating_add(1)) {
        return Err(refuse(
            0,
            format!(
                "no segment starts at cursor {}, right after what it covers",
                header.covers_upto.saturating_add(1)
            ),
        ));
    }
    let bytes = segment::read(path, segment_bytes)?;
    let scan = scan_segment(path, &bytes, codec, 0, |_, _| {})?;
    if let Some((fault, _)) = scan.fault {
        return Err(refuse(fault.offset, fault.reason));
    }
    if scan.zeros > 0 {
        return Err(refuse(
            scan.valid_len,
            format!("{} zero bytes after its last record", scan.zeros),
        ));
    }
    Ok(())
}

/// The refusal of zeros after the records of a segment that is not the last one (or is a
/// compacted one): both were cut back to their records before anything came after them,
/// so zeros there are damage, perhaps where records were.
pub fn zeros_in_closed(path: &Path, scan: &SegmentScan) -> LogError {
    LogError::Damaged {
        path: path.to_owned(),
        offset: scan.valid_len,
        reason: format!(
            "{} zero bytes after the last record of a closed segment (only the last segment may end in zeros the writer reserved)",
            scan.zeros
        ),
    }
}

/// The header of `path` if it reads and its CRC holds; `None` otherwise, also for what is no
/// regular file (the scan that follows reports why).
fn peek_header(path: &Path) -> Option<Header> {
    use std::io::Read;
    let mut head = [0u8; HEADER_LEN];
    let n = segment::open(path).ok()?.read(&mut head).ok()?;
    Header::decode(&head[..n]).ok()
}

/// Reads and checks a segment's header only.
fn read_header(path: &Path) -> Result<Header, LogError> {
    use std::io::Read;
    let mut head = [0u8; HEADER_LEN];
    let n = segment::open(path)?
        .read(&mut head)
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::log::test_codec as codec;

    /// A segment's bytes: a header, one intact frame (cursor 1), then a frame with a bad CRC.
    fn damaged() -> Vec<u8> {
        let mut bytes = Header::new(1).encode().to_vec();
        frame::encode_into(&mut bytes, &1u64.to_le_bytes());
        bytes.extend_from_slice(&16u32.to_le_bytes());
        bytes.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
        bytes.extend_from_slice(&[7; 16]);
        bytes
    }

    const BAD: usize = HEADER_LEN + FRAME_HEADER + 8;

    #[test]
    fn the_search_finds_an_intact_frame_behind_damage_and_nothing_behind_garbage() {
        let mut bytes = damaged();
        bytes.extend_from_slice(&[0; 100]);
        assert_eq!(
            search_after(&bytes, BAD, codec, 1, Cursor::MAX),
            After::Nothing
        );
        let at = bytes.len() as u64;
        frame::encode_into(&mut bytes, &2u64.to_le_bytes());
        assert_eq!(
            search_after(&bytes, BAD, codec, 1, Cursor::MAX),
            After::Intact(at)
        );
        // Not above `prev`, or above a compacted segment's ceiling: not intact.
        assert_eq!(
            search_after(&bytes, BAD, codec, 2, Cursor::MAX),
            After::Nothing
        );
        assert_eq!(search_after(&bytes, BAD, codec, 1, 1), After::Nothing);
    }

    #[test]
    fn the_search_stops_unsure_at_each_of_its_bounds() {
        let unsure = |bytes: &[u8]| match search_after(bytes, BAD, codec, 1, Cursor::MAX) {
            After::Unsure(why) => why,
            other => panic!("{other:?}"),
        };
        // Candidates claiming 32 KiB and 8 MiB: the checksum budget runs out.
        let mut crafted = damaged();
        crafted.extend(std::iter::repeat_n([0x00, 0x80, 0x00, 0x00], 4 << 20).flatten());
        assert!(unsure(&crafted).contains("claim more than"));
        // Candidates claiming 1 and 256 bytes: the candidate count runs out.
        let mut small = damaged();
        small.extend(std::iter::repeat_n([0x01, 0x00, 0x00, 0x00], 16 * 1024).flatten());
        assert!(unsure(&small).contains("candidate frames in the"));
        // Zeros offer no candidate: 64 MiB of them (a large batch a crash left unwritten)
        // are read to the end and found to be a torn tail.
        let mut long = damaged();
        long.resize(BAD + (64 << 20), 0);
        assert_eq!(
            search_after(&long, BAD, codec, 1, Cursor::MAX),
            After::Nothing
        );
    }

    #[test]
    fn a_compacted_segment_holds_no_cursor_beyond_what_it_covers() {
        let dir = std::env::temp_dir().join(format!("broker-ceiling-{}", std::process::id()));
        let path = segment::path(&dir, 1);
        let mut bytes = Header::compacted(1, 5, 1).encode().to_vec();
        for cursor in [2u64, 5, 6] {
            frame::encode_into(&mut bytes, &cursor.to_le_bytes());
        }
        let scan = scan_segment(&path, &bytes, codec, 0, |_, _| {}).unwrap();
        assert_eq!(scan.last_cursor, 5);
        let (fault, after) = scan.fault.expect("cursor 6 is a fault");
        assert!(fault.reason.contains("beyond 5"), "{}", fault.reason);
        assert_eq!(after, After::Nothing);
    }

    #[test]
    fn only_a_last_segment_without_later_good_frames_is_a_torn_tail() {
        let unsure = After::Unsure("budget".into());
        assert_eq!(judge(true, &After::Nothing), Verdict::TruncateTail);
        assert_eq!(judge(true, &After::Intact(60)), Verdict::Refuse);
        assert_eq!(judge(true, &unsure), Verdict::Refuse);
        assert_eq!(judge(false, &After::Nothing), Verdict::Refuse);
        assert_eq!(judge(false, &After::Intact(60)), Verdict::Refuse);
        assert_eq!(judge(false, &unsure), Verdict::Refuse);
        assert_eq!(judge(true, &After::Unwritten), Verdict::TruncateTail);
        assert_eq!(judge(false, &After::Unwritten), Verdict::Refuse);
    }

    /// A header, frame 1, zeros to the end of the sector, then frames 2 and 3: the last
    /// batch (frames 2 and 3 and what the zeros held) reached the disk in part.
    fn unwritten_then_intact() -> Vec<u8> {
        let mut bytes = Header::new(1).encode().to_vec();
        frame::encode_into(&mut bytes, &1u64.to_le_bytes());
        bytes.resize(SECTOR, 0);
        frame::encode_into(&mut bytes, &2u64.to_le_bytes());
        frame::encode_into(&mut bytes, &3u64.to_le_bytes());
        bytes
    }

    #[test]
    fn a_zero_filled_sector_before_intact_frames_is_a_write_that_never_reached_the_disk() {
        let path = segment::path(Path::new("/nonexistent"), 1);
        let scan = scan_segment(&path, &unwritten_then_intact(), codec, 0, |_, _| {}).unwrap();
        assert_eq!(scan.last_cursor, 1);
        let (fault, after) = scan.fault.expect("the zeros are a fault");
        assert_eq!((fault.offset, after), (BAD as u64, After::Unwritten));

        // Zeros that stop short of the sector's end are no unwritten sector: damage.
        let mut short = unwritten_then_intact();
        short[SECTOR - 1] = 7;
        let scan = scan_segment(&path, &short, codec, 0, |_, _| {}).unwrap();
        assert_eq!(scan.fault.expect("a fault").1, After::Intact(SECTOR as u64));
        // So is a frame header that is not all zeros, even before a zero sector.
        let mut garbled = unwritten_then_intact();
        garbled[BAD + 5] = 1;
        assert!(!unwritten_sector(&garbled, BAD));
        // A frame header ending right at the file's end is checked to the end only.
        assert!(unwritten_sector(&[0; 4], 0));
    }

    #[test]
    fn a_last_segment_is_cut_at_a_write_that_never_reached_the_disk_and_no_other_is() {
        let dir = std::env::temp_dir().join(format!("broker-unwritten-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let last = segment::path(&dir, 1);
        fs::write(&last, unwritten_then_intact()).unwrap();
        let mut seen = Vec::new();
        let log = open(&dir, codec, 1 << 20, |cursor, _| seen.push(cursor)).unwrap();
        assert_eq!(seen, [1]);
        assert_eq!(log.repairs.len(), 1, "a cut with a warning");
        assert!(
            log.repairs[0].reason.contains("never reached the disk"),
            "{:?}",
            log.repairs
        );
        assert_eq!(fs::metadata(&last).unwrap().len(), BAD as u64);
        drop(log);

        // The same bytes in a segment with one after it: acknowledged data, refused.
        fs::write(&last, unwritten_then_intact()).unwrap();
        let next = segment::path(&dir, 4);
        let mut bytes = Header::new(4).encode().to_vec();
        frame::encode_into(&mut bytes, &4u64.to_le_bytes());
        fs::write(&next, bytes).unwrap();
        let refused = open(&dir, codec, 1 << 20, |_, _| {})
            .err()
            .expect("refused");
        assert!(
            refused.to_string().contains("never reached the disk"),
            "{refused}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
