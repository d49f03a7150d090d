//! The log's two calls whose failure matters most — writing a batch and fsyncing a
//! segment — go through here, so tests can make them fail as a bad disk or a full one
//! would. With the `fault-injection` feature a test registers a fault for a directory
//! (every log file under it is affected); without it these are the plain calls.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `fsync` fails with EIO (the page cache may have dropped the dirty pages).
    SyncFails,
    /// Writes fail with ENOSPC, as on a full disk.
    DiskFull,
}

#[cfg(feature = "fault-injection")]
mod registry {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::Fault;

    static FAULTS: Mutex<Vec<(PathBuf, Fault)>> = Mutex::new(Vec::new());

    pub(super) fn active(path: &Path, fault: Fault) -> bool {
        let faults = FAULTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        faults
            .iter()
            .any(|(dir, registered)| *registered == fault && path.starts_with(dir))
    }

    /// Makes `fault` happen to every log file under `dir` until [`clear`] is called.
    pub fn inject(dir: &Path, fault: Fault) {
        let mut faults = FAULTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        faults.push((dir.to_path_buf(), fault));
    }

    /// Removes every fault registered for `dir`.
    pub fn clear(dir: &Path) {
        let mut faults = FAULTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        faults.retain(|(registered, _)| registered != dir);
    }
}

#[cfg(feature = "fault-injection")]
pub use registry::{clear, inject};

#[cfg(feature = "fault-injection")]
fn injected(path: &Path, fault: Fault) -> bool {
    registry::active(path, fault)
}

#[cfg(not(feature = "fault-injection"))]
fn injected(_path: &Path, _fault: Fault) -> bool {
    false
}

/// `file.sync_data()`, for the log file at `path`.
pub(crate) fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    if injected(path, Fault::SyncFails) {
        return Err(io::Error::from_raw_os_error(5)); // EIO
    }
    file.sync_data()
}

/// `file.write_all_at(bytes, position)`, for the log file at `path`. An injected full
/// disk writes half of `bytes` first, as a real one may.
pub(crate) fn write_all_at(
    file: &File,
    bytes: &[u8],
    position: u64,
    path: &Path,
) -> io::Result<()> {
    if injected(path, Fault::DiskFull) {
        file.write_all_at(&bytes[..bytes.len() / 2], position)?;
        return Err(io::Error::from_raw_os_error(28)); // ENOSPC
    }
    file.write_all_at(bytes, position)
}
