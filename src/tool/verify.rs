//! `broker log verify`: read every segment and report every fault, with file and offset.

use std::path::Path;

use super::ToolError;
use crate::log::recovery::{After, scan_segment};
use crate::log::segment::{self, FLAG_COMPACTED};
use crate::log::{Cursor, LogError};
use crate::state::Record;

/// The outcome of a verification.
#[derive(Debug, Default)]
pub struct Report {
    /// Segments read.
    pub segments: usize,
    /// Intact records.
    pub records: u64,
    /// The newest cursor seen.
    pub last_cursor: u64,
    /// One line per fault: `file @ offset: reason`.
    pub faults: Vec<String>,
}

/// Verifies the log in `log_dir` without changing anything.
///
/// Beyond frames and records: cursors must rise by exactly one inside a segment and from one
/// segment to the next, except where compaction (flagged in the header) dropped records —
/// so a missing segment or a lost record shows up as a gap. Segments larger than
/// [`segment::max_len`] of [`super::segment_bytes`] are reported, not read.
pub fn verify(log_dir: &Path) -> std::io::Result<Report> {
    let mut report = Report::default();
    // A shared stream's local copy skips the cursors of records every node's fold drops.
    let shared = crate::log::is_shared(log_dir);
    if shared {
        println!(
            "note: {} is a local copy of a shared JetStream stream: cursors may skip records the fold dropped",
            log_dir.display()
        );
    }
    let firsts: Vec<Cursor> = segment::list(log_dir)?
        .iter()
        .map(|(first, _)| *first)
        .collect();
    let walk = super::Walk::new(log_dir, "verifying")?;
    let count = walk.len();
    // The cursor the next record must have, when gaps are not allowed: a log starts at 1
    // (compaction names its output after the first segment it replaces).
    let mut expect: Option<Cursor> = Some(1);
    // Segments an intact compacted segment covers are leftovers of an interrupted swap: the
    // next start removes them; they are not damage.
    let mut covered_upto = 0;
    for (i, segment) in walk.enumerate() {
        let (first, path) = (segment.first, segment.path);
        // `covered_upto` 0 covers nothing: a segment named for cursor 0 is damage, not a
        // leftover (a stray `…0000.seg` was called one while the start refused it).
        if covered_upto > 0 && first <= covered_upto {
            println!(
                "note: {} is covered by a compacted segment (an interrupted compaction); the next start removes it",
                path.display()
            );
            continue;
        }
        report.segments += 1;
        let bytes = match segment.bytes {
            Ok(bytes) => bytes,
            Err(LogError::Io { source, .. }) => return Err(source),
            Err(e) => {
                report.faults.push(e.to_string());
                expect = None;
                continue;
            }
        };
        let mut undecodable = Vec::new();
        let mut gaps = Vec::new();
        let compacted =
            segment::Header::decode(&bytes).is_ok_and(|h| h.flags & FLAG_COMPACTED != 0);
        if let Ok(header) = segment::Header::decode(&bytes)
            && !shared
            && let Some(want) = expect
            && header.first_cursor != want
        {
            gaps.push(format!(
                "{} @ 0: gap: the segment before ended at cursor {}, this one starts at {} (a missing segment?)",
                path.display(),
                want - 1,
                header.first_cursor
            ));
        }
        let mut prev_in_segment: Option<Cursor> = None;
        let scan = scan_segment(
            &path,
            &bytes,
            Record::cursor_of,
            report.last_cursor,
            |cursor, payload| {
                if let Err(e) = Record::decode(payload) {
                    undecodable.push(format!(
                        "{} cursor {cursor}: record does not decode: {e}",
                        path.display()
                    ));
                }
                if !compacted
                    && !shared
                    && let Some(prev) = prev_in_segment
                    && cursor != prev + 1
                {
                    gaps.push(format!(
                        "{}: gap: cursor {cursor} follows cursor {prev}",
                        path.display()
                    ));
                }
                prev_in_segment = Some(cursor);
            },
        );
        let intact = undecodable.is_empty();
        report.faults.extend(undecodable);
        report.faults.extend(gaps);
        match scan {
            Ok(scan) => {
                report.records += scan.frames;
                if scan.frames > 0 {
                    report.last_cursor = scan.last_cursor;
                }
                expect = Some(scan.next_first());
                if let Some((fault, after)) = &scan.fault {
                    let kind = match after {
                        After::Nothing if i + 1 == count && !compacted => {
                            "torn tail (the server cuts it away at its next start)".to_owned()
                        }
                        After::Unwritten if i + 1 == count && !compacted => {
                            "torn tail: a write that never reached the disk (the server cuts it at its next start)".to_owned()
                        }
                        After::Nothing | After::Unwritten => "damage".to_owned(),
                        After::Intact(at) => {
                            format!("damage (an intact frame follows at byte offset {at})")
                        }
                        After::Unsure(why) => format!(
                            "damage, or a torn tail too large to tell apart ({why}; the server refuses to start)"
                        ),
                    };
                    report.faults.push(format!(
                        "{} @ {}: {kind}: {}",
                        fault.path.display(),
                        fault.offset,
                        fault.reason
                    ));
                }
                // Zeros the writer reserved are no fault in the last segment (the server
                // cuts them at its next start); anywhere else they are damage.
                if scan.zeros > 0 && (i + 1 != count || compacted) {
                    report
                        .faults
                        .push(crate::log::recovery::zeros_in_closed(&path, &scan).to_string());
                }
                if compacted {
                    let upto = scan.header.covers_upto;
                    let covered = firsts[i + 1..].iter().take_while(|f| **f <= upto).count();
                    let next = firsts.get(i + 1 + covered).copied();
                    let whole = scan.fault.is_none() && scan.zeros == 0 && intact;
                    if covered > 0 && whole && next == Some(upto.saturating_add(1)) {
                        covered_upto = upto;
                    } else if covered > 0 {
                        let why = if whole {
                            format!(
                                "no segment starts at cursor {}, right after what it covers",
                                upto.saturating_add(1)
                            )
                        } else {
                            "it is damaged".to_owned()
                        };
                        report.faults.push(format!(
                            "{} @ 0: compacted segment covering cursors up to {upto} claims the {covered} segments after it, but {why}: the server refuses to start rather than remove them",
                            path.display()
                        ));
                    }
                }
            }
            Err(e) => {
                report.faults.push(e.to_string());
                expect = None;
            }
        }
    }
    Ok(report)
}

/// Runs the subcommand: prints faults and a one-line summary; any fault is an error.
pub fn run(db: &Path) -> Result<(), ToolError> {
    let dir = db.join("log");
    let report = verify(&dir).map_err(ToolError::io(&dir))?;
    for fault in &report.faults {
        println!("fault: {fault}");
    }
    println!(
        "{}: {} segments, {} records, last cursor {}, {} faults",
        dir.display(),
        report.segments,
        report.records,
        report.last_cursor,
        report.faults.len()
    );
    match report.faults.len() {
        0 => Ok(()),
        n => Err(ToolError::Faults(n)),
    }
}
