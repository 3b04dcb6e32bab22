//! Who may read the store on disk. The database holds every profile's
//! sealed signing key and the key file the key that unseals them, so both
//! are for the sidecar's user only:
//!
//! * files the sidecar creates (the database, its `-wal`/`-shm` companions,
//!   the key file) are created `0600`, and directories `0700`;
//! * an existing database file (or companion) that others can read is set
//!   to `0600` on open, with a warning;
//! * a directory others can enter or list is reported with a warning (we do
//!   not change a directory we did not create);
//! * a key file others can read is refused (see `keyring.rs`): unlike the
//!   database, it is often provisioned by someone else, who must fix it.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permission bits for group and others.
const NOT_OWNER: u32 = 0o077;

/// Something about the store's files an operator must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// A file was readable or writable by others; its mode was set to 0600.
    FileTightened { path: PathBuf, was: u32 },
    /// The directory lets others in (list, enter or write).
    OpenDirectory { path: PathBuf, mode: u32 },
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FileTightened { path, was } => write!(
                f,
                "{} was mode {was:04o}, readable by other users; set to 0600. Whoever read it may hold \
                 its contents: if it held plaintext signing keys (before sealing), rotate every profile",
                path.display()
            ),
            Self::OpenDirectory { path, mode } => write!(
                f,
                "directory {} is mode {mode:04o}: other users can list{} it; run chmod 700 {}",
                path.display(),
                if mode & 0o002 != 0 { " and replace files in" } else { "" },
                path.display()
            ),
        }
    }
}

/// Creates `dir` and its missing parents `0700`, or reports an existing one
/// that others can enter.
pub(crate) fn private_dir(dir: &Path) -> io::Result<Option<Exposure>> {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            Ok((mode & 0o007 != 0).then(|| Exposure::OpenDirectory { path: dir.to_path_buf(), mode }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Makes sure `path` exists (when `create`) and is `0600`. Creating it here,
/// before SQLite does, is what makes the database private whatever the
/// umask; SQLite then gives `-wal` and `-shm` the database file's mode.
pub(crate) fn private_file(path: &Path, create: bool) -> io::Result<Option<Exposure>> {
    if create {
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let was = meta.permissions().mode() & 0o7777;
    if was & NOT_OWNER == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
    Ok(Some(Exposure::FileTightened { path: path.to_path_buf(), was }))
}

/// `path` with `suffix` appended to its file name (`t.db` → `t.db-wal`).
pub(crate) fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Mode bits of `path`.
#[cfg(test)]
pub(crate) fn mode(path: &Path) -> io::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Whether group or others have any access to `mode`.
pub(crate) fn shared_with_others(mode: u32) -> bool {
    mode & NOT_OWNER != 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_and_tightens_existing() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        assert_eq!(private_dir(&sub).unwrap(), None);
        assert_eq!(mode(&sub).unwrap(), 0o700);
        assert_eq!(mode(&dir.path().join("a")).unwrap(), 0o700);

        let f = sub.join("t.db");
        assert_eq!(private_file(&f, true).unwrap(), None);
        assert_eq!(mode(&f).unwrap(), 0o600);
        assert_eq!(private_file(&f, true).unwrap(), None, "already private");

        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        let e = private_file(&f, true).unwrap().unwrap();
        assert_eq!(e, Exposure::FileTightened { path: f.clone(), was: 0o644 });
        assert!(e.to_string().contains("was mode 0644"), "{e}");
        assert_eq!(mode(&f).unwrap(), 0o600);

        assert_eq!(private_file(&companion(&f, "-wal"), false).unwrap(), None, "absent companion");
        assert!(!companion(&f, "-wal").exists());
    }

    #[test]
    fn open_directories_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        let e = private_dir(dir.path()).unwrap().unwrap();
        assert!(e.to_string().contains("chmod 700") && !e.to_string().contains("replace"), "{e}");
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(dir.path()).unwrap().unwrap().to_string().contains("replace files"));
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o750)).unwrap();
        assert_eq!(private_dir(dir.path()).unwrap(), None, "group access is the operator's choice");
    }
}
