//! Names of the files in a shard directory, and the few file-system moves that must be
//! done in a crash-safe order (write-to-temp-then-rename, directory fsync).
//!
//! This module is the one owner of the naming scheme: `{base_offset:020}.{log,index,
//! timeindex}`, `*.tmp` for files being replaced, `.clean_shutdown` and `.lock`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

/// Present only while the log is closed cleanly; its absence at open means "recover".
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Held locked (flock) while a `ShardLog` has the directory open.
pub(crate) const LOCK_FILE: &str = ".lock";
use shardline_durable::{DirSync, TMP_SUFFIX};
/// Base offsets are printed with this many digits so names sort like numbers.
const OFFSET_DIGITS: usize = 20;

/// The three files that make up a segment. Their names are also the names of a tiered
/// segment's objects in the bucket (the tier crate builds its keys from
/// [`SegmentFile::name`]), so one scheme names a segment wherever it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFile {
    /// `.log`: the batches.
    Log,
    /// `.index`: sparse offset -> position.
    OffsetIndex,
    /// `.timeindex`: sparse max-timestamp -> offset.
    TimeIndex,
}

impl SegmentFile {
    /// All three, `.log` first.
    pub const ALL: [SegmentFile; 3] = [
        SegmentFile::Log,
        SegmentFile::OffsetIndex,
        SegmentFile::TimeIndex,
    ];

    fn extension(self) -> &'static str {
        match self {
            SegmentFile::Log => "log",
            SegmentFile::OffsetIndex => "index",
            SegmentFile::TimeIndex => "timeindex",
        }
    }

    /// The file's name for the segment starting at `base_offset`
    /// (`00000000000000001234.log`): digits that sort like numbers.
    pub fn name(self, base_offset: u64) -> String {
        format!("{base_offset:0OFFSET_DIGITS$}.{}", self.extension())
    }

    /// Path of this file for the segment starting at `base_offset`.
    pub(crate) fn path(self, dir: &Path, base_offset: u64) -> PathBuf {
        dir.join(self.name(base_offset))
    }

    /// Splits a file name into a segment base offset and the file's role, if it is one
    /// of ours.
    pub fn parse(name: &str) -> Option<(u64, SegmentFile)> {
        let (digits, extension) = name.split_once('.')?;
        if digits.len() != OFFSET_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let kind = SegmentFile::ALL
            .into_iter()
            .find(|kind| kind.extension() == extension)?;
        Some((digits.parse().ok()?, kind))
    }
}

/// What a shard directory holds, sorted out by role.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Base offsets of the `.log` files, ascending.
    pub(crate) log_base_offsets: Vec<u64>,
    /// Index files, with the base offset they belong to.
    pub(crate) index_files: Vec<(u64, PathBuf)>,
    /// Leftovers of replacements interrupted by a crash.
    pub(crate) tmp_files: Vec<PathBuf>,
    /// Whether `.clean_shutdown` is present.
    pub(crate) clean_shutdown: bool,
}

/// Lists `dir`, ignoring files that are not part of the log.
pub(crate) fn list(dir: &Path) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name == CLEAN_SHUTDOWN_FILE {
            listing.clean_shutdown = true;
        } else if name.ends_with(TMP_SUFFIX) {
            listing.tmp_files.push(entry.path());
        } else if let Some((base_offset, kind)) = SegmentFile::parse(name) {
            match kind {
                SegmentFile::Log => listing.log_base_offsets.push(base_offset),
                SegmentFile::OffsetIndex | SegmentFile::TimeIndex => {
                    listing.index_files.push((base_offset, entry.path()));
                }
            }
        }
    }
    listing.log_base_offsets.sort_unstable();
    Ok(listing)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old file or the whole
/// new one (`shardline_durable::replace`). The caller fsyncs the directory when the
/// rename itself must survive a crash.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    shardline_durable::replace(path, bytes, DirSync::No).map_err(Error::from)
}

/// Writes `bytes` to `path` without any durability promise: for files whose loss or
/// tearing is detected on load and merely costs a rebuild.
pub(crate) fn write_best_effort(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    fs::write(path, bytes).map_err(Error::io("writing", path))
}

/// Makes file creations, renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    shardline_durable::sync_dir(dir).map_err(Error::from)
}

/// Removes a file; one that is already gone counts as removed.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(Error::io("removing", path)(error))
        }
        _ => Ok(()),
    }
}

/// Creates `.clean_shutdown`. The caller fsyncs the directory.
pub(crate) fn write_clean_shutdown(dir: &Path) -> Result<(), Error> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    File::create(&path)
        .map(drop)
        .map_err(Error::io("creating", path))
}

/// Opens and locks `.lock`, failing fast if another log holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(fs::TryLockError::Error(source)) => Err(Error::io("locking", path)(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = Path::new("/shard");
        for kind in [
            SegmentFile::Log,
            SegmentFile::OffsetIndex,
            SegmentFile::TimeIndex,
        ] {
            for base_offset in [0, 42, i64::MAX as u64, u64::MAX] {
                let path = kind.path(dir, base_offset);
                let name = path.file_name().unwrap().to_str().unwrap();
                assert_eq!(name.split_once('.').unwrap().0.len(), 20);
                assert_eq!(SegmentFile::parse(name), Some((base_offset, kind)));
            }
        }
        assert_eq!(
            SegmentFile::Log.path(dir, 7),
            Path::new("/shard/00000000000000000007.log")
        );
    }

    #[test]
    fn foreign_names_are_ignored() {
        for name in [
            "0.log",
            "0000000000000000000x.log",
            "00000000000000000000.log.tmp",
            "00000000000000000000.snapshot",
            "000000000000000000000.log",
            ".clean_shutdown",
            "99999999999999999999.log",
        ] {
            assert_eq!(SegmentFile::parse(name), None, "{name}");
        }
    }

    #[test]
    fn listing_sorts_out_roles() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "00000000000000000010.log",
            "00000000000000000000.log",
            "00000000000000000000.index",
            "00000000000000000000.timeindex.tmp",
            ".clean_shutdown",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.log_base_offsets, vec![0, 10]);
        assert_eq!(listing.index_files.len(), 1);
        assert_eq!(listing.tmp_files.len(), 1);
        assert!(listing.clean_shutdown);
    }

    #[test]
    fn a_second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        assert!(matches!(lock_dir(dir.path()), Err(Error::Locked { .. })));
        drop(held);
        lock_dir(dir.path()).unwrap();
    }
}
