//! The 128-bit hash-key space that shards divide between them.
//!
//! Kinesis hashes a record's partition key with MD5 and reads the digest as an unsigned
//! 128-bit big-endian integer; the record goes to the open shard whose inclusive range
//! `[start, end]` holds that number. A stream created with N shards splits the space with
//! `step = floor(2^128 / N)`: shard i gets `[i*step, (i+1)*step - 1]` and the last shard
//! runs to `2^128 - 1`. (Some emulators use `floor((2^128-1)/N)`, which differs for powers
//! of two; we follow AWS.)

use std::fmt;

/// A point in the hash-key space: an unsigned 128-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The MD5 of `partition_key`, read as a big-endian unsigned 128-bit integer.
    pub fn of_partition_key(partition_key: &[u8]) -> HashKey {
        let digest = md5::compute(partition_key);
        HashKey(u128::from_be_bytes(digest.0))
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Kinesis prints hash keys as decimal strings.
        write!(f, "{}", self.0)
    }
}

/// An inclusive range of hash keys owned by one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    /// The first hash key in the range.
    pub start: u128,
    /// The last hash key in the range (inclusive, as Kinesis reports `EndingHashKey`).
    pub end: u128,
}

impl HashKeyRange {
    /// The whole space, `[0, 2^128 - 1]`.
    pub const FULL: HashKeyRange = HashKeyRange {
        start: 0,
        end: u128::MAX,
    };

    /// Whether `key` falls in this range.
    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key.0 && key.0 <= self.end
    }

    /// Splits the whole space into `count` ranges exactly as Kinesis does for a new stream.
    ///
    /// Returns an empty vector for `count == 0`.
    pub fn even_split(count: u32) -> Vec<HashKeyRange> {
        if count == 0 {
            return Vec::new();
        }
        if count == 1 {
            return vec![HashKeyRange::FULL];
        }
        // floor(2^128 / n) without overflowing u128: 2^128 = u128::MAX + 1, and for n >= 2
        // floor((MAX + 1) / n) == MAX / n unless n divides MAX + 1 (a power of two), where
        // the remainder of MAX / n is n - 1.
        let n = u128::from(count);
        let step = if u128::MAX % n == n - 1 {
            u128::MAX / n + 1
        } else {
            u128::MAX / n
        };
        (0..n)
            .map(|i| {
                let start = i * step;
                let end = if i == n - 1 {
                    u128::MAX
                } else {
                    (i + 1) * step - 1
                };
                HashKeyRange { start, end }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_matches_published_kinesis_boundaries() {
        let two = HashKeyRange::even_split(2);
        assert_eq!(two[1].start, 170141183460469231731687303715884105728);
        let three = HashKeyRange::even_split(3);
        assert_eq!(three[1].start, 113427455640312821154458202477256070485);
        assert_eq!(three[2].start, 226854911280625642308916404954512140970);
        let four = HashKeyRange::even_split(4);
        assert_eq!(four[1].start, 85070591730234615865843651857942052864);
        assert_eq!(four[3].start, 255211775190703847597530955573826158592);
        assert_eq!(four[3].end, u128::MAX);
    }

    // Vectors from Python: int(hashlib.md5(b"a").hexdigest(), 16) and so on.
    #[test]
    fn md5_routing_matches_known_vectors() {
        let cases: [(&[u8], u128, [usize; 3]); 4] = [
            (b"a", 0x0cc175b9c0f1b6a831c399e269772661, [0, 0, 0]),
            (b"0", 0xcfcd208495d565ef66e7dff9f98764da, [1, 2, 3]),
            (
                "ü".as_bytes(),
                0xc03410a5204b21cd8229ff754688d743,
                [1, 2, 3],
            ),
            (
                b"partitionKey-0",
                0xd593fc2c1c22ffb3f0109b2c4a73d4df,
                [1, 2, 3],
            ),
        ];
        for (key, digest, shards) in cases {
            let hash = HashKey::of_partition_key(key);
            assert_eq!(hash.0, digest);
            for (n, expected) in [2u32, 3, 4].into_iter().zip(shards) {
                let ranges = HashKeyRange::even_split(n);
                let owner = ranges.iter().position(|r| r.contains(hash));
                assert_eq!(owner, Some(expected), "key {key:?} with {n} shards");
            }
        }
    }

    proptest! {
        #[test]
        fn even_split_covers_the_space_without_gaps(count in 1u32..2000) {
            let ranges = HashKeyRange::even_split(count);
            prop_assert_eq!(ranges.len(), count as usize);
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges[ranges.len() - 1].end, u128::MAX);
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].start <= pair[0].end);
                prop_assert_eq!(pair[0].end + 1, pair[1].start);
            }
        }

        #[test]
        fn every_key_has_exactly_one_owner(count in 1u32..64, key in any::<u128>()) {
            let ranges = HashKeyRange::even_split(count);
            let owners = ranges.iter().filter(|r| r.contains(HashKey(key))).count();
            prop_assert_eq!(owners, 1);
        }
    }
}
