//! `broker log …`: tools that work on a log directory. Each prints a one-line summary at the
//! end and a progress bar on long work when stderr is a terminal.

pub mod cli;
pub mod compact;
pub mod dump;
pub mod migrate;
pub mod replay;
pub mod verify;

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use cli::LogCommand;

mod error;

pub use error::ToolError;

/// Runs a `broker log` subcommand. Its report goes to stdout as it works; the error, if any,
/// is for `main` to print (with [`ToolError::exit_code`]).
pub fn run(command: LogCommand) -> Result<(), ToolError> {
    match command {
        LogCommand::Verify { db } => verify::run(&db),
        LogCommand::Dump {
            db,
            from,
            to,
            tenant,
            kind,
        } => dump::run(&db, from, to, tenant.as_deref(), kind.as_deref()),
        LogCommand::Replay { db, to, check } => replay::run(&db, to, check),
        LogCommand::Compact {
            db,
            retain,
            url,
            admin_token,
        } => compact::run(&db, &retain, url.as_deref(), admin_token.as_deref()),
        LogCommand::Migrate { db } => migrate::run(&db),
    }
}

/// The environment variable of the server's `--segment_bytes`, which the tools honour too.
pub const SEGMENT_BYTES_ENV: &str = "BROKER_SEGMENT_BYTES";

/// The `--segment_bytes` the tools assume: `BROKER_SEGMENT_BYTES` when it is set (as for the
/// server), else the server's default of 64 MiB. It only decides the largest segment file a
/// tool reads whole ([`crate::log::segment::max_len`]: 160 MiB by default).
pub fn segment_bytes() -> u64 {
    std::env::var(SEGMENT_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(crate::log::segment::DEFAULT_SEGMENT_BYTES)
}

/// A byte-counting progress bar, drawn only when a person is watching.
pub fn progress(total_bytes: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Total size of the segment files in `dir`.
pub fn log_bytes(dir: &std::path::Path) -> u64 {
    crate::log::segment::list(dir)
        .map(|segments| crate::log::disk_usage(segments.iter().map(|(_, p)| p.as_path())).bytes)
        .unwrap_or(0)
}

/// The one walk over a log's segments that every tool makes: in cursor order, each read whole
/// (refused past the size limit, see [`segment_bytes`]), with a progress bar of the bytes read
/// that ends with the walk.
pub struct Walk {
    listed: std::vec::IntoIter<(crate::log::Cursor, std::path::PathBuf)>,
    max_segment: u64,
    bar: ProgressBar,
}

/// One segment met by a [`Walk`].
pub struct WalkedSegment {
    /// Its first cursor (from the file name).
    pub first: crate::log::Cursor,
    /// Its file.
    pub path: std::path::PathBuf,
    /// Its bytes, or why they could not be read.
    pub bytes: Result<Vec<u8>, crate::log::LogError>,
}

impl Walk {
    /// The segments of `log_dir`; `what` labels the progress bar ("verifying", …).
    pub fn new(log_dir: &std::path::Path, what: &str) -> std::io::Result<Walk> {
        let listed = crate::log::segment::list(log_dir)?;
        Ok(Walk {
            listed: listed.into_iter(),
            max_segment: segment_bytes(),
            bar: progress(log_bytes(log_dir), what),
        })
    }

    /// How many segments are left.
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    /// Whether no segment is left.
    pub fn is_empty(&self) -> bool {
        self.listed.len() == 0
    }
}

impl Iterator for Walk {
    type Item = WalkedSegment;

    fn next(&mut self) -> Option<WalkedSegment> {
        let Some((first, path)) = self.listed.next() else {
            self.bar.finish_and_clear();
            return None;
        };
        let bytes = crate::log::segment::read(&path, self.max_segment);
        if let Ok(bytes) = &bytes {
            self.bar.inc(bytes.len() as u64);
        }
        Some(WalkedSegment { first, path, bytes })
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// What a reading command (`dump`, `replay`) makes of the fault a segment's scan stopped at:
/// nothing if none; a note for a torn tail of the log's last segment (what a crash leaves,
/// and the server cuts away at its next start: the records before it are the log); an
/// error for damage anywhere else, so the command does not end as if the log were whole
/// (an attack review: both exited 0 on a log `verify` called damaged).
pub fn fault_of(
    scan: &crate::log::recovery::SegmentScan,
    bytes: &[u8],
    last: bool,
) -> Result<Option<String>, ToolError> {
    use crate::log::recovery::After;
    let Some((fault, after)) = &scan.fault else {
        return Ok(None);
    };
    let compacted = crate::log::segment::Header::decode(bytes)
        .is_ok_and(|h| h.flags & crate::log::segment::FLAG_COMPACTED != 0);
    match after {
        After::Nothing | After::Unwritten if last && !compacted => Ok(Some(format!(
            "note: {} @ {}: torn tail ({}); the records before it are the log, and the server cuts it away at its next start",
            fault.path.display(),
            fault.offset,
            fault.reason
        ))),
        _ => Err(ToolError::Damaged {
            path: fault.path.clone(),
            offset: fault.offset,
            reason: format!("{} ({after})", fault.reason),
        }),
    }
}
