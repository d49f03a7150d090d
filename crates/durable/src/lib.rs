//! The few file-system moves that must happen in a crash-safe order, in one place for
//! every crate that keeps files (the log's indexes, the metadata document, the offsets
//! store's snapshots):
//!
//! - [`replace`]: a crash leaves either the old file or the whole new one — write
//!   `<name>.tmp`, fsync it, rename it over, and (with [`DirSync::Yes`]) fsync the
//!   directory so the rename itself survives;
//! - [`sync_dir`]: make creations, renames and removals in a directory durable;
//! - [`create_dir`]: create a directory and every missing parent, fsyncing each new
//!   entry's parent, so a directory that was reported created is still there after a
//!   power loss.
//!
//! Depends on no other Shardline crate.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of a file being written to replace another.
pub const TMP_SUFFIX: &str = ".tmp";

/// A file-system step that failed, naming what it did and where.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct DurableError {
    /// What was being done ("writing", "renaming into place", …).
    pub action: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

fn failed(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DurableError {
    let path = path.to_path_buf();
    move |source| DurableError {
        action,
        path,
        source,
    }
}

/// Whether [`replace`] fsyncs the directory after the rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirSync {
    /// Yes: the new file is durable when `replace` returns.
    Yes,
    /// No: the caller fsyncs the directory once after several replacements.
    No,
}

/// The temp-file path used while replacing `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the whole new one.
pub fn replace(path: &Path, bytes: &[u8], dir_sync: DirSync) -> Result<(), DurableError> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(failed("creating", &tmp))?;
    file.write_all(bytes).map_err(failed("writing", &tmp))?;
    file.sync_all().map_err(failed("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(failed("renaming into place", path))?;
    if dir_sync == DirSync::Yes {
        sync_dir(parent_of(path))?;
    }
    Ok(())
}

/// Makes file creations, renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(failed("syncing directory", dir))
}

/// Creates `dir` and its missing parents, fsyncing the parent of each one created.
pub fn create_dir(dir: &Path) -> Result<(), DurableError> {
    if dir.is_dir() {
        return Ok(());
    }
    // Find the missing ancestors, outermost first.
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.exists() {
        missing.push(at.to_path_buf());
        at = parent_of(at);
    }
    for created in missing.iter().rev() {
        match fs::create_dir(created) {
            Ok(()) => {}
            // Another thread made it meanwhile: fine, it is there.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => {}
            Err(error) => return Err(failed("creating directory", created)(error)),
        }
        sync_dir(parent_of(created))?;
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_leaves_the_new_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        replace(&path, b"one", DirSync::Yes).unwrap();
        replace(&path, b"two", DirSync::No).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_failed_replace_keeps_the_old_file_and_names_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        replace(&path, b"old", DirSync::Yes).unwrap();
        // A directory where the temp file goes: creating it fails, even for root.
        fs::create_dir_all(tmp_path(&path).join("x")).unwrap();
        let error = replace(&path, b"new", DirSync::Yes).unwrap_err();
        assert_eq!(error.action, "creating");
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn create_dir_makes_every_missing_parent() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir(&deep).unwrap();
        let blocked = dir.path().join("file");
        fs::write(&blocked, b"x").unwrap();
        assert!(create_dir(&blocked.join("below")).is_err());
    }
}
