//! `broker log verify`: read every segment and report every fault, with file and offset.

use std::path::Path;

use crate::log::recovery::scan_segment;
use crate::log::segment;
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
pub fn verify(log_dir: &Path) -> std::io::Result<Report> {
    let mut report = Report::default();
    let listed = segment::list(log_dir)?;
    let count = listed.len();
    for (i, (_, path)) in listed.into_iter().enumerate() {
        report.segments += 1;
        let bytes = std::fs::read(&path)?;
        let mut undecodable = Vec::new();
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
            },
        );
        report.faults.extend(undecodable);
        match scan {
            Ok(scan) => {
                report.records += scan.frames;
                if scan.frames > 0 {
                    report.last_cursor = scan.last_cursor;
                }
                if let Some((fault, follows)) = scan.fault {
                    let kind = if i + 1 == count && !follows {
                        "torn tail (the server cuts it away at its next start)"
                    } else {
                        "damage"
                    };
                    report.faults.push(format!(
                        "{} @ {}: {kind}: {}",
                        fault.path.display(),
                        fault.offset,
                        fault.reason
                    ));
                }
            }
            Err(e) => report.faults.push(e.to_string()),
        }
    }
    Ok(report)
}

/// Runs the subcommand: prints faults and a one-line summary; exit code 1 on any fault.
pub fn run(db: &Path) -> i32 {
    let dir = db.join("log");
    match verify(&dir) {
        Ok(report) => {
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
            i32::from(!report.faults.is_empty())
        }
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.display());
            2
        }
    }
}
