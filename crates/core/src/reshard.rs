//! The rules of Kinesis resharding on hash-key ranges: which splits and merges are
//! allowed, and the ranges of the children they produce. Shard ids and lineage are the
//! caller's business; this module only answers "is this legal, and what are the ranges".

use crate::HashKeyRange;

/// A reshard request that Kinesis would refuse (all map to `InvalidArgumentException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReshardError {
    /// SplitShard's new starting hash key is not strictly inside the parent's range.
    #[error(
        "NewStartingHashKey {new_start} is not both greater than one plus the shard's StartingHashKey {start} and less than the shard's EndingHashKey {end}"
    )]
    SplitKeyOutsideRange {
        /// Requested key.
        new_start: u128,
        /// Parent's first key.
        start: u128,
        /// Parent's last key.
        end: u128,
    },
    /// MergeShards on ranges that do not touch.
    #[error("shards with ranges [{a_start}, {a_end}] and [{b_start}, {b_end}] are not adjacent")]
    NotAdjacent {
        /// First range start.
        a_start: u128,
        /// First range end.
        a_end: u128,
        /// Second range start.
        b_start: u128,
        /// Second range end.
        b_end: u128,
    },
}

/// The two children of splitting `parent` at `new_start`: `[start, new_start - 1]` (the
/// lower child, which takes the next shard index) and `[new_start, end]`.
///
/// Kinesis requires `start + 1 < new_start < end`, so each child holds at least two keys.
pub fn split(
    parent: HashKeyRange,
    new_start: u128,
) -> Result<(HashKeyRange, HashKeyRange), ReshardError> {
    let inside = parent
        .start
        .checked_add(1)
        .is_some_and(|floor| floor < new_start)
        && new_start < parent.end;
    if !inside {
        return Err(ReshardError::SplitKeyOutsideRange {
            new_start,
            start: parent.start,
            end: parent.end,
        });
    }
    Ok((
        HashKeyRange {
            start: parent.start,
            end: new_start - 1,
        },
        HashKeyRange {
            start: new_start,
            end: parent.end,
        },
    ))
}

/// The child of merging two adjacent ranges, given in either order.
pub fn merge(a: HashKeyRange, b: HashKeyRange) -> Result<HashKeyRange, ReshardError> {
    let touches =
        |low: HashKeyRange, high: HashKeyRange| low.end.checked_add(1) == Some(high.start);
    if touches(a, b) || touches(b, a) {
        Ok(HashKeyRange {
            start: a.start.min(b.start),
            end: a.end.max(b.end),
        })
    } else {
        Err(ReshardError::NotAdjacent {
            a_start: a.start,
            a_end: a.end,
            b_start: b.start,
            b_end: b.end,
        })
    }
}

/// The key that splits `range` into two halves as even as possible (what the CLI and
/// on-demand scaling use when no key is given). `None` for ranges too small to split.
pub fn midpoint(range: HashKeyRange) -> Option<u128> {
    let width = range.end - range.start;
    let middle = range.start + width / 2 + 1;
    split(range, middle).ok().map(|_| middle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinesis_split_boundaries_are_enforced() {
        let parent = HashKeyRange { start: 10, end: 20 };
        assert!(split(parent, 11).is_err(), "start + 1 is not allowed");
        assert!(split(parent, 20).is_err(), "the ending key is not allowed");
        assert!(split(parent, 10).is_err());
        assert_eq!(
            split(parent, 12).unwrap(),
            (
                HashKeyRange { start: 10, end: 11 },
                HashKeyRange { start: 12, end: 20 }
            )
        );
    }

    #[test]
    fn splitting_the_full_space_in_the_middle_gives_the_two_shard_layout() {
        let middle = midpoint(HashKeyRange::FULL).unwrap();
        let (low, high) = split(HashKeyRange::FULL, middle).unwrap();
        assert_eq!(vec![low, high], HashKeyRange::even_split(2));
    }

    #[test]
    fn only_adjacent_ranges_merge() {
        let a = HashKeyRange { start: 0, end: 9 };
        let b = HashKeyRange { start: 10, end: 20 };
        let c = HashKeyRange { start: 22, end: 30 };
        assert_eq!(merge(b, a).unwrap(), HashKeyRange { start: 0, end: 20 });
        assert!(matches!(merge(a, c), Err(ReshardError::NotAdjacent { .. })));
    }

    fn range() -> impl Strategy<Value = HashKeyRange> {
        (any::<u128>(), any::<u128>()).prop_map(|(x, y)| HashKeyRange {
            start: x.min(y),
            end: x.max(y),
        })
    }

    proptest! {
        #[test]
        fn children_cover_the_parent_exactly_and_merge_restores_it(parent in range(), pick in any::<u128>()) {
            let width = parent.end - parent.start;
            prop_assume!(width >= 3);
            let new_start = parent.start + 2 + pick % (width - 2);
            let (low, high) = split(parent, new_start).unwrap();
            prop_assert_eq!(low.start, parent.start);
            prop_assert_eq!(high.end, parent.end);
            prop_assert_eq!(low.end + 1, high.start);
            prop_assert!(low.start < low.end && high.start < high.end);
            prop_assert_eq!(merge(low, high).unwrap(), parent);
            prop_assert_eq!(merge(high, low).unwrap(), parent);
        }

        #[test]
        fn midpoint_halves_are_within_one_key(parent in range()) {
            if let Some(middle) = midpoint(parent) {
                let (low, high) = split(parent, middle).unwrap();
                let low_width = low.end - low.start;
                let high_width = high.end - high.start;
                prop_assert!(low_width.abs_diff(high_width) <= 1);
            }
        }
    }
}
