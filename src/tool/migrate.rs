//! `broker log migrate`: upgrade a log written by an older format version, in place, after a
//! backup. The steps live in `migrations/steps.rs`.

use std::path::{Path, PathBuf};

use super::ToolError;
use crate::log::segment::{self, FORMAT_VERSION, Header};

#[path = "../../migrations/steps.rs"]
pub mod steps;

/// What a migration did.
#[derive(Debug, Default)]
pub struct Migrated {
    /// Segments rewritten.
    pub segments: usize,
    /// Where the old segments were copied first.
    pub backup: Option<PathBuf>,
}

/// Migrates every segment of `log_dir` to the current version. Segments already current
/// are left alone, so an interrupted migration is finished by running it again.
pub fn migrate(log_dir: &Path) -> Result<Migrated, ToolError> {
    let walk = super::Walk::new(log_dir, "reading versions").map_err(ToolError::io(log_dir))?;
    let mut old = Vec::new();
    let mut listed = Vec::new();
    for segment in walk {
        let path = &segment.path;
        let bytes = segment.bytes?;
        let header = Header::decode(&bytes).map_err(|f| ToolError::Migration {
            path: path.clone(),
            why: f.to_string(),
        })?;
        if header.version > FORMAT_VERSION {
            return Err(ToolError::Migration {
                path: path.clone(),
                why: format!(
                    "version {} is newer than this broker's {FORMAT_VERSION}",
                    header.version
                ),
            });
        }
        if header.version < FORMAT_VERSION {
            old.push((path.clone(), bytes, header.version));
        }
        listed.push(segment.path);
    }
    let mut report = Migrated::default();
    if old.is_empty() {
        return Ok(report);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let backup = log_dir.with_file_name(format!("log-backup-{stamp}"));
    std::fs::create_dir_all(&backup).map_err(ToolError::io(&backup))?;
    for path in &listed {
        let to = backup.join(path.file_name().expect("segment file name"));
        std::fs::copy(path, &to).map_err(ToolError::io(&to))?;
    }
    segment::sync_dir(&backup).map_err(ToolError::io(&backup))?;
    report.backup = Some(backup);
    let bar = super::progress(
        old.iter().map(|(_, b, _)| b.len() as u64).sum(),
        "migrating",
    );
    for (path, mut bytes, mut version) in old {
        bar.inc(bytes.len() as u64);
        while version < FORMAT_VERSION {
            let step = steps::STEPS
                .iter()
                .find(|s| s.from == version)
                .ok_or_else(|| ToolError::Migration {
                    path: path.clone(),
                    why: format!("no migration step from version {version}"),
                })?;
            bytes = (step.apply)(&bytes).map_err(|why| ToolError::Migration {
                path: path.clone(),
                why,
            })?;
            version = step.to;
        }
        let tmp = path.with_extension("seg.tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(ToolError::io(&path))?;
        report.segments += 1;
    }
    segment::sync_dir(log_dir).map_err(ToolError::io(log_dir))?;
    bar.finish_and_clear();
    Ok(report)
}

/// Runs the subcommand.
pub fn run(db: &Path) -> Result<(), ToolError> {
    let dir = db.join("log");
    // The server must not run meanwhile: take its lock (the directory is not created: a
    // mistyped --db is an error).
    let lock = crate::log::lock::open(&dir).map_err(|e| match e {
        crate::log::LogError::Io { path, source } => ToolError::Io { path, source },
        e => e.into(),
    })?;
    if lock.try_lock().is_err() {
        return Err(ToolError::Locked {
            path: dir,
            then: "migrate",
        });
    }
    let done = migrate(&dir)?;
    if done.segments == 0 {
        println!(
            "{}: already at format version {FORMAT_VERSION}; nothing to do",
            dir.display()
        );
    } else {
        println!(
            "{}: {} segments migrated to format version {FORMAT_VERSION}; the old segments are in {}",
            dir.display(),
            done.segments,
            done.backup
                .map(|b| b.display().to_string())
                .unwrap_or_default()
        );
    }
    Ok(())
}
