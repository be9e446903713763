//! The log directory's lock file: one process per log, held for the process's life.

use std::path::{Path, PathBuf};

use super::LogError;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{0} is in use by another process")]
    Held(PathBuf),
    /// The directory or the file could not be used.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Takes the lock file of the log in `dir` (created if needed); held until the file drops.
pub fn take(dir: &Path) -> Result<std::fs::File, LockError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(LogError::io(&path, e).into()),
    }
}
