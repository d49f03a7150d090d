//! The whole-object check of a remote segment's `.log`: the CRC-32C of each block is
//! taken as it is fetched, and once every block of the segment has been fetched they are
//! combined in order and compared with the CRC the manifest recorded at upload.
//!
//! Every batch served from the tier is CRC-checked on its own, but that cannot tell an
//! object that was replaced by other well-formed batches (another writer, a restore gone
//! wrong) from the one uploaded; this can, without a byte of extra download. A segment
//! found to differ is refused from then on ([`Error::RemoteCorrupt`]), and counted.

use std::sync::{Arc, Mutex};

use crate::Error;
use crate::manifest::RemoteSegment;
use crate::metrics::{Counters, add};

/// Segments whose block CRCs are being gathered at once (an LRU bound; a segment that
/// falls out simply starts gathering again).
const SEGMENTS_TRACKED_MAX: u64 = 10_000;

#[derive(Debug, Default)]
struct Gathered {
    /// CRC-32C of each block fetched so far, by block number.
    blocks: Vec<Option<u32>>,
    /// `Some(true)` once verified, `Some(false)` once found to differ.
    outcome: Option<bool>,
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct WholeCrc {
    segments: moka::sync::Cache<Arc<str>, Arc<Mutex<Gathered>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for WholeCrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WholeCrc")
            .field("tracked", &self.segments.entry_count())
            .finish()
    }
}

impl WholeCrc {
    pub(crate) fn new(counters: Arc<Counters>) -> WholeCrc {
        WholeCrc {
            segments: moka::sync::Cache::new(SEGMENTS_TRACKED_MAX),
            counters,
        }
    }

    fn gathered(&self, identity: &Arc<str>) -> Arc<Mutex<Gathered>> {
        self.segments
            .get_with_by_ref(identity, || Arc::new(Mutex::new(Gathered::default())))
    }

    /// Refuses a segment already found to differ from what was uploaded.
    pub(crate) fn check(&self, segment: &RemoteSegment, identity: &Arc<str>) -> Result<(), Error> {
        let Some(gathered) = self.segments.get(identity) else {
            return Ok(());
        };
        let differs = lock(&gathered).outcome == Some(false);
        if differs {
            return Err(mismatch(segment));
        }
        Ok(())
    }

    /// Records block `block` (fetched: `crc` of its `len` bytes) of a segment cut into
    /// blocks of `block_bytes`, and once all are in, compares the whole. The fetch that
    /// completes a differing segment fails.
    pub(crate) fn record(
        &self,
        segment: &RemoteSegment,
        identity: &Arc<str>,
        block_bytes: u64,
        block: u64,
        crc: u32,
    ) -> Result<(), Error> {
        let count = segment.size_bytes.div_ceil(block_bytes);
        let gathered = self.gathered(identity);
        // Held only to update a few words, never across an await.
        let mut state = lock(&gathered);
        if state.outcome.is_some() {
            return match state.outcome {
                Some(false) => Err(mismatch(segment)),
                _ => Ok(()),
            };
        }
        let Ok(count) = usize::try_from(count) else {
            return Ok(());
        };
        if state.blocks.len() != count {
            state.blocks = vec![None; count];
        }
        let Some(slot) = usize::try_from(block)
            .ok()
            .and_then(|index| state.blocks.get_mut(index))
        else {
            return Ok(());
        };
        *slot = Some(crc);
        if state.blocks.iter().any(Option::is_none) {
            return Ok(());
        }
        let mut whole = 0u32;
        for (number, crc) in state.blocks.iter().enumerate() {
            let start = number as u64 * block_bytes;
            let len = (segment.size_bytes - start).min(block_bytes);
            whole = crc32c::crc32c_combine(whole, crc.unwrap_or(0), len as usize);
        }
        let matches = whole == segment.log_crc32c;
        state.outcome = Some(matches);
        state.blocks = Vec::new();
        if matches {
            return Ok(());
        }
        add(&self.counters.crc_mismatches, 1);
        tracing::error!(
            key = segment.log_key,
            recorded = segment.log_crc32c,
            found = whole,
            "a remote segment differs from what was uploaded (whole-object CRC-32C); it is refused from now on"
        );
        Err(mismatch(segment))
    }
}

fn lock(gathered: &Mutex<Gathered>) -> std::sync::MutexGuard<'_, Gathered> {
    gathered
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mismatch(segment: &RemoteSegment) -> Error {
    Error::RemoteCorrupt {
        key: segment.log_key.clone(),
        position: 0,
        reason: format!(
            "the object's CRC-32C is not the {:08x} recorded at upload",
            segment.log_crc32c
        ),
    }
}
