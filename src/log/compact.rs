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

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::frame;
use super::reader::{LogReader, SegmentMeta};
use super::recovery::scan_segment;
use super::segment::{self, Header};
use super::writer::INDEX_EVERY;
use super::{Codec, Cursor, LogError};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segments rewritten into one.
    pub segments_replaced: usize,
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
    mut keep: impl FnMut(Cursor, &[u8]) -> bool,
) -> Result<CompactReport, LogError> {
    let segments = reader.segments();
    // Segment i is wholly below `retain` when the next one starts at or below it.
    let count = segments
        .windows(2)
        .take_while(|pair| pair[1].first <= retain)
        .count();
    if count == 0 {
        return Ok(CompactReport {
            horizon: reader.horizon(),
            ..Default::default()
        });
    }
    let chosen: Vec<SegmentMeta> = segments[..count].to_vec();
    let covers_upto = segments[count].first - 1;
    let horizon = retain.min(covers_upto + 1).max(reader.horizon());
    let first = chosen[0].first;
    let dir = reader.dir();
    let tmp = segment::path(dir, first).with_extension("seg.tmp");
    let mut out = Header::compacted(first, covers_upto, horizon)
        .encode()
        .to_vec();
    let mut index = Vec::new();
    let mut report = CompactReport {
        segments_replaced: chosen.len(),
        horizon,
        ..Default::default()
    };
    let mut prev = 0;
    for meta in &chosen {
        let bytes = fs::read(&meta.path).map_err(|e| LogError::io(&meta.path, e))?;
        report.bytes_before += bytes.len() as u64;
        let mut fault = None;
        let scan = scan_segment(&meta.path, &bytes, codec, prev, |cursor, payload| {
            report.records_before += 1;
            if keep(cursor, payload) {
                if report.records_after.is_multiple_of(INDEX_EVERY) {
                    index.push((cursor, out.len() as u64));
                }
                frame::encode_into(&mut out, payload);
                report.records_after += 1;
            }
        })?;
        if let Some((f, _)) = scan.fault {
            fault = Some(f);
        }
        if let Some(f) = fault {
            return Err(LogError::Damaged {
                path: f.path,
                offset: f.offset,
                reason: format!(
                    "{} (compaction reads closed segments only when they are intact)",
                    f.reason
                ),
            });
        }
        prev = scan.last_cursor;
    }
    report.bytes_after = out.len() as u64;
    write_durably(&tmp, &out)?;
    failpoint("before_rename");
    fs::rename(&tmp, &chosen[0].path).map_err(|e| LogError::io(&chosen[0].path, e))?;
    segment::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    failpoint("after_rename");
    reader.swap_in(
        &chosen.iter().map(|s| s.first).collect::<Vec<_>>(),
        SegmentMeta {
            first,
            path: chosen[0].path.clone(),
            index,
        },
        horizon,
    );
    for old in &chosen[1..] {
        fs::remove_file(&old.path).map_err(|e| LogError::io(&old.path, e))?;
    }
    segment::sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    Ok(report)
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let mut file = File::create(path).map_err(|e| LogError::io(path, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| LogError::io(path, e))
}
