//! Secrets at rest: the data directory holds the biscuit root key, password hashes and TOTP
//! secrets, so it belongs to the server's user alone. New files get their mode from the
//! process umask (set in `main`); this module creates the data directory and warns about
//! one that an earlier version, or a person, left open to other users.

use std::path::{Path, PathBuf};

/// Mode bits that let the group or others in.
const OPEN_TO_OTHERS: u32 = 0o077;

/// A path readable or writable by others, and the command that closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPath {
    /// The file or directory.
    pub path: PathBuf,
    /// Its permission bits (`mode & 0o777`).
    pub mode: u32,
    /// `chmod 700 <dir>` or `chmod 600 <file>`.
    pub fix: String,
}

/// Creates `db` (owner only) if it does not exist, then logs one warning per path in it that
/// group or others may read or write.
pub fn prepare_data_dir(db: &Path) -> Result<(), String> {
    create_private_dir(db)
        .map_err(|e| format!("cannot create the data directory {}: {e}", db.display()))?;
    for open in open_paths(db) {
        tracing::warn!(
            path = %open.path.display(),
            mode = %format!("{:o}", open.mode),
            "readable or writable by group or others, and it holds secrets: run `{}`",
            open.fix
        );
    }
    Ok(())
}

/// Creates `dir` and any missing parents with mode 0700; an existing directory is left as is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// The data directory and its biscuit key, where either lets group or others in.
pub fn open_paths(db: &Path) -> Vec<OpenPath> {
    let mut open = Vec::new();
    let key = db.join("biscuit.key");
    for (path, fix) in [(db, "chmod 700"), (key.as_path(), "chmod 600")] {
        if let Some(mode) = mode_of(path).filter(|m| m & OPEN_TO_OTHERS != 0) {
            open.push(OpenPath {
                path: path.to_owned(),
                mode,
                fix: format!("{fix} {}", path.display()),
            });
        }
    }
    open
}

/// Logs a warning if the file `path` holding `what` lets group or others in (an attack
/// review: a TLS key of mode 0644 went unremarked).
pub fn warn_if_open(path: &Path, what: &str) {
    if let Some(mode) = mode_of(path).filter(|m| m & OPEN_TO_OTHERS != 0) {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:o}"),
            "{what} is readable or writable by group or others: run `chmod 600 {}`",
            path.display()
        );
    }
}

/// Permission bits of `path`, or None if it does not exist (or on a system without them).
fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_missing_data_directory_is_created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("a/db");
        create_private_dir(&db).unwrap();
        assert_eq!(mode_of(&db), Some(0o700));
        assert!(open_paths(&db).is_empty());
    }

    #[test]
    fn open_directory_and_key_are_named_with_their_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        create_private_dir(&db).unwrap();
        let key = db.join("biscuit.key");
        std::fs::write(&key, "00").unwrap();
        chmod(&key, 0o600);
        assert!(open_paths(&db).is_empty());

        chmod(&db, 0o750);
        chmod(&key, 0o604);
        let open = open_paths(&db);
        assert_eq!(open.len(), 2, "{open:?}");
        assert_eq!(open[0].path, db);
        assert_eq!(open[0].mode, 0o750);
        assert_eq!(open[0].fix, format!("chmod 700 {}", db.display()));
        assert_eq!(open[1].path, key);
        assert_eq!(open[1].fix, format!("chmod 600 {}", key.display()));

        // Only group/other bits matter: an owner-only key with no write bit is fine.
        chmod(&db, 0o700);
        chmod(&key, 0o400);
        assert!(open_paths(&db).is_empty());
    }
}
