//! [`Entries`]: an append-only list whose copies cost two reference counts, for the
//! index entries that readers' snapshots of a log share with the writer.
//!
//! The active segment's index grows while readers hold snapshots of it. Copying a
//! `Vec` of a quarter of a million entries on every group commit would cost more than
//! the commit, so entries live in fixed-size chunks: full chunks are immutable and
//! shared; only the last, partly filled chunk is copied, and only when the writer
//! pushes to it while a snapshot still holds it.

use std::sync::Arc;

/// Entries per chunk: a copy of a partly filled chunk is at most this many entries.
const CHUNK_ENTRIES: usize = 512;

/// An append-only list, cheap to clone (see the module docs).
#[derive(Clone)]
pub(crate) struct Entries<T> {
    full: Arc<Vec<Arc<[T]>>>,
    tail: Arc<Vec<T>>,
}

impl<T: Copy> Default for Entries<T> {
    fn default() -> Self {
        Entries {
            full: Arc::new(Vec::new()),
            tail: Arc::new(Vec::new()),
        }
    }
}

impl<T: Copy> Entries<T> {
    pub(crate) fn from_vec(entries: Vec<T>) -> Entries<T> {
        let mut out = Entries::default();
        for entry in entries {
            out.push(entry);
        }
        out
    }

    pub(crate) fn push(&mut self, entry: T) {
        if self.tail.len() == CHUNK_ENTRIES {
            let chunk: Arc<[T]> = Arc::from(self.tail.as_slice());
            Arc::make_mut(&mut self.full).push(chunk);
            self.tail = Arc::new(Vec::with_capacity(CHUNK_ENTRIES));
        }
        Arc::make_mut(&mut self.tail).push(entry);
    }

    pub(crate) fn len(&self) -> usize {
        self.full.len() * CHUNK_ENTRIES + self.tail.len()
    }

    pub(crate) fn get(&self, at: usize) -> Option<&T> {
        let chunk = at / CHUNK_ENTRIES;
        match self.full.get(chunk) {
            Some(full) => full.get(at % CHUNK_ENTRIES),
            None => self.tail.get(at - self.full.len() * CHUNK_ENTRIES),
        }
    }

    /// As `slice::partition_point`: the entries must be partitioned by `pred` (all
    /// that satisfy it first).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        // A full chunk is never empty, so its last entry stands for the whole chunk.
        let chunks_before = self
            .full
            .partition_point(|chunk| chunk.last().is_some_and(&mut pred));
        let before = chunks_before * CHUNK_ENTRIES;
        match self.full.get(chunks_before) {
            Some(chunk) => before + chunk.partition_point(pred),
            None => before + self.tail.partition_point(pred),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.full
            .iter()
            .flat_map(|chunk| chunk.iter())
            .chain(self.tail.iter())
    }
}

impl<T: Copy + PartialEq> PartialEq for Entries<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Copy + Eq> Eq for Entries<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_as_a_vec(values in proptest::collection::vec(0u32..5000, 0..2000), probe in 0u32..5000) {
            let mut sorted = values;
            sorted.sort_unstable();
            let mut entries = Entries::default();
            let mut snapshots = Vec::new();
            for (number, value) in sorted.iter().enumerate() {
                entries.push(*value);
                if number % 300 == 0 {
                    snapshots.push((number + 1, entries.clone()));
                }
            }
            prop_assert_eq!(entries.len(), sorted.len());
            prop_assert!(entries.iter().copied().eq(sorted.iter().copied()));
            for at in [0, sorted.len() / 2, sorted.len().saturating_sub(1), sorted.len()] {
                prop_assert_eq!(entries.get(at), sorted.get(at));
            }
            prop_assert_eq!(
                entries.partition_point(|value| *value < probe),
                sorted.partition_point(|value| *value < probe)
            );
            prop_assert!(Entries::from_vec(sorted.clone()) == entries);
            // A snapshot keeps what it saw while the original grows.
            for (len, snapshot) in snapshots {
                prop_assert!(snapshot.iter().copied().eq(sorted[..len].iter().copied()));
            }
        }
    }
}
