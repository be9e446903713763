//! Compaction: rewrite closed segments keeping only the records a caller says are needed.
//!
//! The log does not know which records matter (that is the rules' business): the caller
//! passes a `keep` predicate. The closed segments wholly below the retain cursor are read,
//! the kept frames are written — cursors unchanged — into one new segment under a temporary
//! name and fsynced; then the swap: the new file is renamed over the first old segment (one
//! atomic rename) and the other old segments are deleted. Its header says which cursors it
//! covers, so a crash between the rename and the deletions leaves segments that the next
//! open recognises as covered and removes: the log is always either the old segments or the
//! new one, never a mix.
//!
//! The output is cut into runs: a run of consecutive segments becomes one compacted segment,
//! closed before it would pass [`segment::max_len`], the largest segment any reader of this
//! log accepts (without that, a log with many users would compact into one segment that the
//! next start refuses to read). Each run is swapped on its own, oldest first, so a crash
//! between two runs leaves a log whose first runs are compacted and the rest is not.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::frame;
use super::reader::{LogReader, SegmentMeta};
use super::recovery::scan_segment;
use super::segment::{self, Header};
use super::sparse_index::SparseIndex;
use super::{Codec, Cursor, LogError};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segments rewritten.
    pub segments_replaced: usize,
    /// Compacted segments written in their place (one per run).
    pub segments_written: usize,
    /// Records read from them.
    pub records_before: u64,
    /// Records kept.
    pub records_after: u64,
    /// Bytes before and after.
    pub bytes_before: u64,
    /// Bytes of the compacted segment.
    pub bytes_after: u64,
    /// Resume from below this cursor is no longer exact.
    pub horizon: Cursor,
}

/// A crash-test hook (feature `fault-injection`): the process aborts at that point of a
/// compaction when the fault file says `abort_at:compact:<point>` (see [`super::fault`]).
fn failpoint(point: &str) {
    #[cfg(feature = "fault-injection")]
    super::fault::abort_at(&format!("compact:{point}"));
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

/// Compacts every closed segment (all but the last) that holds only cursors below
/// `retain`, keeping the frames for which `keep(cursor, payload)` is true.
pub fn compact(
    reader: &LogReader,
    codec: Codec,
    retain: Cursor,
    keep: impl FnMut(Cursor, &[u8]) -> bool,
) -> Result<CompactReport, LogError> {
    let limit = segment::max_len(reader.segment_bytes());
    compact_within(reader, codec, retain, keep, limit)
}

/// [`compact`], with each compacted segment at most `limit` bytes long.
fn compact_within(
    reader: &LogReader,
    codec: Codec,
    retain: Cursor,
    mut keep: impl FnMut(Cursor, &[u8]) -> bool,
    limit: u64,
) -> Result<CompactReport, LogError> {
    let segments = reader.segments();
    // Segment i is wholly below `retain` when the next one starts at or below it.
    let count = segments
        .windows(2)
        .take_while(|pair| pair[1].first <= retain)
        .count();
    let mut report = CompactReport {
        horizon: reader.horizon(),
        ..Default::default()
    };
    let mut run: Option<Run> = None;
    let mut prev = 0;
    for (i, meta) in segments[..count].iter().enumerate() {
        let bytes = segment::read(&meta.path, reader.segment_bytes())?;
        report.bytes_before += bytes.len() as u64;
        let mut kept = Vec::new();
        let mut kept_frames = Vec::new();
        let scan = scan_segment(&meta.path, &bytes, codec, prev, |cursor, payload| {
            report.records_before += 1;
            if keep(cursor, payload) {
                kept_frames.push((cursor, kept.len() as u64));
                frame::encode_into(&mut kept, payload);
            }
        })?;
        if let Some((f, _)) = scan.fault {
            return Err(LogError::Damaged {
                path: f.path,
                offset: f.offset,
                reason: format!(
                    "{} (compaction reads closed segments only when they are intact)",
                    f.reason
                ),
            });
        }
        if scan.zeros > 0 {
            return Err(super::recovery::zeros_in_closed(&meta.path, &scan));
        }
        prev = scan.last_cursor;
        // A segment's kept frames never exceed the segment, so a run always takes one.
        if run
            .as_ref()
            .is_some_and(|r| (r.out.len() + kept.len()) as u64 > limit)
        {
            let full = run.take().expect("a run");
            swap(reader, &segments, full, i, retain, &mut report)?;
        }
        let run = run.get_or_insert_with(|| Run::new(i));
        let base = run.out.len() as u64;
        for (cursor, offset) in kept_frames {
            run.index.note(run.frames, cursor, base + offset);
            run.frames += 1;
        }
        run.out.extend_from_slice(&kept);
    }
    if let Some(last) = run {
        swap(reader, &segments, last, count, retain, &mut report)?;
    }
    Ok(report)
}

/// Consecutive segments being compacted into one.
struct Run {
    /// Index of its first segment.
    start: usize,
    /// The new segment: a header to be filled in, then the kept frames.
    out: Vec<u8>,
    /// Its sparse index.
    index: SparseIndex,
    /// Frames in `out`.
    frames: u64,
}

impl Run {
    fn new(start: usize) -> Self {
        Run {
            start,
            out: vec![0; segment::HEADER_LEN],
            index: SparseIndex::default(),
            frames: 0,
        }
    }
}

/// Writes `run` (segments `run.start..end`) as one compacted segment and swaps it in.
fn swap(
    reader: &LogReader,
    segments: &[SegmentMeta],
    mut run: Run,
    end: usize,
    retain: Cursor,
    report: &mut CompactReport,
) -> Result<(), LogError> {
    let chosen = &segments[run.start..end];
    let first = chosen[0].first;
    let covers_upto = segments[end].first - 1;
    let horizon = retain.min(covers_upto + 1).max(reader.horizon());
    run.out[..segment::HEADER_LEN]
        .copy_from_slice(&Header::compacted(first, covers_upto, horizon).encode());
    let dir = reader.dir();
    let tmp = segment::path(dir, first).with_extension("seg.tmp");
    write_durably(&tmp, &run.out)?;
    failpoint("before_rename");
    fs::rename(&tmp, &chosen[0].path).map_err(|e| LogError::io(&chosen[0].path, e))?;
    segment::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    failpoint("after_rename");
    reader.swap_in(
        &chosen.iter().map(|s| s.first).collect::<Vec<_>>(),
        SegmentMeta::closed(first, chosen[0].path.clone(), run.index),
        horizon,
    );
    for old in &chosen[1..] {
        fs::remove_file(&old.path).map_err(|e| LogError::io(&old.path, e))?;
    }
    segment::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    report.segments_replaced += chosen.len();
    report.segments_written += 1;
    report.records_after += run.frames;
    report.bytes_after += run.out.len() as u64;
    report.horizon = report.horizon.max(horizon);
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let mut file = File::create(path).map_err(|e| LogError::io(path, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| LogError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::log::test_codec as codec;

    fn cursors(dir: &Path) -> Vec<Cursor> {
        let mut seen = Vec::new();
        let opened = super::super::open(dir, codec, 4096, |c, _| seen.push(c)).unwrap();
        assert!(opened.removed_leftovers.is_empty());
        seen
    }

    #[test]
    fn compaction_cuts_its_output_into_segments_no_larger_than_the_limit() {
        let dir = std::env::temp_dir().join(format!("broker-compact-runs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut log = super::super::open(&dir, codec, 4096, |_, _| {}).unwrap();
        for cursor in 1..=80u64 {
            let mut payload = cursor.to_le_bytes().to_vec();
            payload.resize(600, b'x');
            log.writer.append(cursor, &payload).unwrap();
            log.writer.flush(false).unwrap();
        }
        let closed = log.reader.segments().len() - 1;
        assert!(closed >= 8, "{closed} closed segments");
        let limit = 10_000;
        let report = compact_within(&log.reader, codec, 81, |_, _| true, limit).unwrap();
        assert_eq!(report.segments_replaced, closed);
        assert!(report.segments_written >= 4, "{report:?}");
        assert_eq!(report.records_after, report.records_before);
        for (_, path) in segment::list(&dir).unwrap() {
            let len = fs::metadata(&path).unwrap().len();
            assert!(len <= limit, "{} is {len} bytes", path.display());
        }
        drop(log);
        assert_eq!(cursors(&dir), (1..=80).collect::<Vec<_>>());
        fs::remove_dir_all(&dir).unwrap();
    }
}
