//! Idempotent-producer bookkeeping for one shard: the de-duplication rules of Kafka's
//! `ProducerStateManager`, as pure logic.
//!
//! For every producer id seen on a shard we remember its epoch and the sequence ranges and
//! offsets of its last five batches (a producer has at most five requests in flight per
//! partition). A retried batch that matches one of them is answered with the original
//! offsets instead of being stored twice.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: Kafka clients keep at most 5 requests in flight.
const BATCHES_REMEMBERED: usize = 5;

/// One stored batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMark {
    pub(crate) first_sequence: i32,
    pub(crate) last_sequence: i32,
    pub(crate) base_offset: u64,
    pub(crate) last_offset: u64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMark>,
}

/// The verdict on an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Store it.
    Append,
    /// Already stored: answer with these offsets and store nothing.
    Duplicate(BatchMark),
    /// The sequence does not follow the last one stored.
    OutOfOrder { expected: i32, found: i32 },
    /// The producer has been fenced by a newer epoch.
    StaleEpoch { current: i16, found: i16 },
}

impl Verdict {
    /// The verdict as the append paths act on it: `None` to store the batch, the stored
    /// batch's mark for a duplicate, or the producer error of `producer_id`.
    pub(crate) fn admit(self, producer_id: i64) -> Result<Option<BatchMark>, crate::Error> {
        match self {
            Verdict::Append => Ok(None),
            Verdict::Duplicate(mark) => Ok(Some(mark)),
            Verdict::OutOfOrder { expected, found } => Err(crate::Error::OutOfOrderSequence {
                producer_id,
                expected,
                found,
            }),
            Verdict::StaleEpoch { current, found } => Err(crate::Error::StaleProducerEpoch {
                producer_id,
                current,
                found,
            }),
        }
    }
}

/// Producer states of one shard.
#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStates {
    /// Decides what to do with a batch from `producer_id` at `epoch` whose records carry
    /// sequences `first_sequence..=last_sequence`.
    pub(crate) fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Verdict {
        let Some(entry) = self.producers.get(&producer_id) else {
            // No state (a new producer, or state lost with old segments): Kafka >= 2.5
            // accepts any sequence here.
            return Verdict::Append;
        };
        if epoch < entry.epoch {
            return Verdict::StaleEpoch {
                current: entry.epoch,
                found: epoch,
            };
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts sequences at zero.
            return if first_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::OutOfOrder {
                    expected: 0,
                    found: first_sequence,
                }
            };
        }
        if let Some(mark) = entry.batches.iter().find(|mark| {
            mark.first_sequence == first_sequence && mark.last_sequence == last_sequence
        }) {
            return Verdict::Duplicate(*mark);
        }
        let expected = entry
            .batches
            .back()
            .map_or(first_sequence, |mark| next_sequence(mark.last_sequence));
        if first_sequence == expected {
            Verdict::Append
        } else {
            Verdict::OutOfOrder {
                expected,
                found: first_sequence,
            }
        }
    }

    /// Records a stored batch; call in log order.
    pub(crate) fn record(&mut self, producer_id: i64, epoch: i16, mark: BatchMark) {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(first: i32, last: i32, base: u64) -> BatchMark {
        BatchMark {
            first_sequence: first,
            last_sequence: last,
            base_offset: base,
            last_offset: base + (last - first) as u64,
        }
    }

    #[test]
    fn a_new_producer_is_accepted_at_any_sequence() {
        let states = ProducerStates::default();
        assert_eq!(states.check(7, 0, 42, 45), Verdict::Append);
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_is_a_duplicate() {
        let mut states = ProducerStates::default();
        for batch in 0..5 {
            let first = batch * 10;
            states.record(7, 0, mark(first, first + 9, (batch * 10) as u64));
        }
        assert_eq!(
            states.check(7, 0, 20, 29),
            Verdict::Duplicate(mark(20, 29, 20))
        );
        assert_eq!(states.check(7, 0, 50, 59), Verdict::Append);
        states.record(7, 0, mark(50, 59, 50));
        // The oldest batch has been forgotten; its retry is now out of order.
        assert_eq!(
            states.check(7, 0, 0, 9),
            Verdict::OutOfOrder {
                expected: 60,
                found: 0
            }
        );
    }

    #[test]
    fn gaps_are_out_of_order_and_old_epochs_are_fenced() {
        let mut states = ProducerStates::default();
        states.record(7, 3, mark(0, 4, 0));
        assert_eq!(
            states.check(7, 3, 6, 8),
            Verdict::OutOfOrder {
                expected: 5,
                found: 6
            }
        );
        assert_eq!(
            states.check(7, 2, 5, 8),
            Verdict::StaleEpoch {
                current: 3,
                found: 2
            }
        );
        assert_eq!(states.check(7, 4, 0, 1), Verdict::Append);
        assert!(matches!(
            states.check(7, 4, 3, 4),
            Verdict::OutOfOrder { .. }
        ));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut states = ProducerStates::default();
        states.record(7, 0, mark(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(states.check(7, 0, 0, 3), Verdict::Append);
    }
}
