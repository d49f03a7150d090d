//! The store's files: listing a directory, creating and opening logs, replaying
//! snapshots and logs into the offset map.

use super::*;

/// Files of the offsets directory, sorted out by role.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) logs: Vec<u64>,
    pub(super) snapshots: Vec<u64>,
    pub(super) tmp_files: Vec<PathBuf>,
}

pub(super) fn list(dir: &Path) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            listing.tmp_files.push(entry.path());
            continue;
        }
        let Some((digits, extension)) = name.split_once('.') else {
            continue;
        };
        if digits.len() != GENERATION_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            continue;
        }
        let Ok(generation) = digits.parse::<u64>() else {
            continue;
        };
        match extension {
            LOG_EXTENSION => listing.logs.push(generation),
            SNAPSHOT_EXTENSION => listing.snapshots.push(generation),
            _ => {}
        }
    }
    listing.logs.sort_unstable();
    listing.snapshots.sort_unstable();
    Ok(listing)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), Error> {
    shardline_durable::sync_dir(dir).map_err(Error::from)
}

/// Creates (or empties) a log holding only a header, and fsyncs it.
pub(super) fn create_log(path: &Path) -> Result<File, Error> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    file.write_all(&encode_header(FileKind::Log, 0))
        .and_then(|()| file.sync_all())
        .map_err(Error::io(path))?;
    drop(file);
    open_for_append(path)
}

pub(super) fn open_for_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(Error::io(path))
}

/// Checks a header read from `path` against the kind its name promises.
pub(super) fn check_header(path: &Path, bytes: &[u8], kind: FileKind) -> Result<Header, Error> {
    let corrupt = |reason| Error::CorruptOffsets {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    let header = decode_header(bytes).map_err(corrupt)?;
    if header.format_version != OFFSETS_FORMAT_VERSION {
        return Err(Error::UnknownVersion {
            path: path.to_path_buf(),
            found: header.format_version,
            supported: OFFSETS_FORMAT_VERSION,
        });
    }
    if header.kind != kind.code() {
        return Err(corrupt(CorruptReason::WrongKind {
            expected: kind.code(),
            found: header.kind,
        }));
    }
    Ok(header)
}

/// Replays a snapshot into an empty `map`; returns the live bytes it holds. Any damage is
/// an error: a snapshot is fsynced before it is renamed into place, so it cannot be torn.
pub(super) fn replay_snapshot(path: &Path, map: &mut OffsetMap) -> Result<u64, Error> {
    let file = File::open(path).map_err(Error::io(path))?;
    let mut reader = BufReader::new(file);
    let mut header = [0; HEADER_BYTES];
    let header_len = read_full(&mut reader, &mut header).map_err(Error::io(path))?;
    let header = check_header(path, &header[..header_len], FileKind::Snapshot)?;
    let mut payload = Vec::new();
    let mut position = HEADER_BYTES as u64;
    let mut found = 0;
    let mut live_bytes = 0;
    loop {
        match read_record(&mut reader, &mut payload).map_err(Error::io(path))? {
            Step::Record {
                record,
                frame_bytes,
            } => {
                let (added, removed) = apply_counting(map, &record);
                live_bytes = (live_bytes + added).saturating_sub(removed);
                position += frame_bytes;
                found += 1;
            }
            Step::End => break,
            Step::Damaged(reason) => {
                return Err(Error::CorruptOffsets {
                    path: path.to_path_buf(),
                    position,
                    reason,
                });
            }
        }
    }
    if found != header.record_count {
        return Err(Error::CorruptOffsets {
            path: path.to_path_buf(),
            position,
            reason: CorruptReason::CountMismatch {
                expected: header.record_count,
                found,
            },
        });
    }
    Ok(live_bytes)
}

/// What replaying a log found.
#[derive(Debug)]
pub(super) enum LogReplay {
    /// Records up to `valid_bytes` were applied; anything after was truncated.
    Replayed { valid_bytes: u64 },
    /// The newest log's header was torn while it was being created: it holds nothing.
    TornHeader,
}

/// Replays a log into `map`. Only the newest log (`newest`) may have a torn tail, which is
/// truncated; damage in an older one is an error.
pub(super) fn replay_log(
    path: &Path,
    newest: bool,
    map: &mut OffsetMap,
    live_bytes: &mut u64,
) -> Result<LogReplay, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(newest)
        .open(path)
        .map_err(Error::io(path))?;
    let file_bytes = file.metadata().map_err(Error::io(path))?.len();
    let mut reader = BufReader::new(&file);
    let mut header = [0; HEADER_BYTES];
    let header_len = read_full(&mut reader, &mut header).map_err(Error::io(path))?;
    if newest && file_bytes <= HEADER_BYTES as u64 && decode_header(&header[..header_len]).is_err()
    {
        // The header is fsynced before any record is written, so a bad header with nothing
        // after it is a creation cut short, not lost data.
        return Ok(LogReplay::TornHeader);
    }
    check_header(path, &header[..header_len], FileKind::Log)?;
    let mut payload = Vec::new();
    let mut position = HEADER_BYTES as u64;
    loop {
        match read_record(&mut reader, &mut payload).map_err(Error::io(path))? {
            Step::Record {
                record,
                frame_bytes,
            } => {
                let (added, removed) = apply_counting(map, &record);
                *live_bytes = (*live_bytes + added).saturating_sub(removed);
                position += frame_bytes;
            }
            Step::End => break,
            Step::Damaged(reason) if newest => {
                warn!(
                    file = %path.display(),
                    position,
                    bytes_dropped = file_bytes - position,
                    %reason,
                    "truncating torn or corrupt tail of the offsets log"
                );
                drop(reader);
                file.set_len(position)
                    .and_then(|()| file.sync_all())
                    .map_err(Error::io(path))?;
                break;
            }
            Step::Damaged(reason) => {
                return Err(Error::CorruptOffsets {
                    path: path.to_path_buf(),
                    position,
                    reason,
                });
            }
        }
    }
    Ok(LogReplay::Replayed {
        valid_bytes: position,
    })
}

pub(super) fn remove_file(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(Error::io(path)(error)),
        _ => Ok(()),
    }
}
