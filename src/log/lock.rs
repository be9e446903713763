//! The log directory's lock file: one process per log, held for the process's life.

use std::path::{Path, PathBuf};

use super::LogError;
use super::segment::file_kind;

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
    let file = open(dir)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(LogError::io(dir.join("LOCK"), e).into()),
    }
}

/// Opens `dir/LOCK`, creating it if missing, without locking it; refuses anything there but
/// a regular file, naming it.
///
/// Why: a dangling symbolic link named `LOCK` made the open create the file it points to,
/// anywhere the process may write; a FIFO made it wait for a reader forever. The open
/// neither follows a link nor waits (`O_NOFOLLOW | O_NONBLOCK`; Linux ignores the latter for
/// a regular file), and the type is checked on the open descriptor.
pub fn open(dir: &Path) -> Result<std::fs::File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("LOCK");
    let refuse = |what: &str| {
        LogError::io(
            &path,
            std::io::Error::other(format!(
                "it is {what}, not a regular file: the lock file is a regular file the broker creates itself; remove it and start again"
            )),
        )
    };
    // A clear word for what is there before the open (which says only ELOOP or ENXIO).
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && !meta.file_type().is_file()
    {
        return Err(refuse(file_kind(&meta.file_type())));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("a symbolic link"),
            _ => LogError::io(&path, e),
        })?;
    let kind = file
        .metadata()
        .map_err(|e| LogError::io(&path, e))?
        .file_type();
    if !kind.is_file() {
        return Err(refuse(file_kind(&kind)));
    }
    Ok(file)
}
