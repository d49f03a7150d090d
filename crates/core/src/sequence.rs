//! Kinesis sequence numbers, derived from (shard, offset) so they can be decoded back.
//!
//! Real Kinesis numbers are 56-digit decimals whose hexadecimal form (47 digits) is:
//!
//! ```text
//! hex digit  0      1..=9          10            11..=26        27..=28  29..=37        38..=45      46
//!            '2'    shard created  shard index   counter (u64)  "00"     record time    shard index  '2'
//!                   (epoch secs)   low nibble    (< 2^63)                (epoch secs)   (u32)
//! ```
//!
//! Shardline puts the shard's offset in the counter, so numbers increase within a shard,
//! are unique within a stream, and decode back to the offset for GetShardIterator. A
//! closed shard's EndingSequenceNumber uses the counter `2^63 - 1` as AWS does.

use std::fmt;
use std::str::FromStr;

/// The counter value of a closed shard's EndingSequenceNumber.
pub const ENDING_COUNTER: u64 = 0x7fff_ffff_ffff_ffff;

/// The fields of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SequenceNumber {
    /// Shard creation time, seconds since the epoch (36 bits).
    pub shard_created_secs: u64,
    /// Shard index.
    pub shard_index: u32,
    /// Offset within the shard (or [`ENDING_COUNTER`]).
    pub counter: u64,
    /// Record arrival time, seconds since the epoch (36 bits).
    pub record_secs: u64,
}

/// A sequence number string that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sequence number {0:?}")]
pub struct InvalidSequenceNumber(pub String);

const SECS_MASK: u64 = (1 << 36) - 1;

impl SequenceNumber {
    fn to_hex(self) -> String {
        format!(
            "2{:09x}{:01x}{:016x}00{:09x}{:08x}2",
            self.shard_created_secs & SECS_MASK,
            self.shard_index & 0xf,
            self.counter,
            self.record_secs & SECS_MASK,
            self.shard_index
        )
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_to_decimal(&self.to_hex()))
    }
}

impl FromStr for SequenceNumber {
    type Err = InvalidSequenceNumber;

    fn from_str(text: &str) -> Result<SequenceNumber, InvalidSequenceNumber> {
        let invalid = || InvalidSequenceNumber(text.to_owned());
        if text.is_empty() || text.len() > 129 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let hex = decimal_to_hex(text);
        if hex.len() != 47 || !hex.starts_with('2') || !hex.ends_with('2') || &hex[27..29] != "00" {
            return Err(invalid());
        }
        let field = |range: std::ops::Range<usize>| {
            u64::from_str_radix(&hex[range], 16).map_err(|_digits| invalid())
        };
        let number = SequenceNumber {
            shard_created_secs: field(1..10)?,
            shard_index: field(38..46)? as u32,
            counter: field(11..27)?,
            record_secs: field(29..38)?,
        };
        if field(10..11)? != u64::from(number.shard_index & 0xf) {
            return Err(invalid());
        }
        Ok(number)
    }
}

/// Converts a hexadecimal digit string to decimal with schoolbook base conversion
/// (the numbers are 188 bits, wider than any primitive).
fn hex_to_decimal(hex: &str) -> String {
    // Little-endian base-10^9 limbs.
    let mut limbs: Vec<u64> = vec![0];
    for digit in hex.bytes() {
        let mut carry = u64::from((digit as char).to_digit(16).unwrap_or(0));
        for limb in &mut limbs {
            let value = *limb * 16 + carry;
            *limb = value % 1_000_000_000;
            carry = value / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push(carry % 1_000_000_000);
            carry /= 1_000_000_000;
        }
    }
    let mut out = limbs.last().copied().unwrap_or(0).to_string();
    for limb in limbs.iter().rev().skip(1) {
        out.push_str(&format!("{limb:09}"));
    }
    out
}

fn decimal_to_hex(decimal: &str) -> String {
    // Little-endian base-2^32 limbs.
    let mut limbs: Vec<u64> = vec![0];
    for digit in decimal.bytes() {
        let mut carry = u64::from(digit - b'0');
        for limb in &mut limbs {
            let value = *limb * 10 + carry;
            *limb = value & 0xffff_ffff;
            carry = value >> 32;
        }
        while carry > 0 {
            limbs.push(carry & 0xffff_ffff);
            carry >>= 32;
        }
    }
    let mut out = format!("{:x}", limbs.last().copied().unwrap_or(0));
    for limb in limbs.iter().rev().skip(1) {
        out.push_str(&format!("{limb:08x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_real_aws_starting_sequence_number_decodes() {
        // From spec/KINESIS_SEMANTICS.md §3.1: created 1572297165, shard 0, counter 0.
        let number: SequenceNumber = "49600871682957036442365024926191073437251060580128653314"
            .parse()
            .unwrap();
        assert_eq!(number.shard_created_secs, 1572297165);
        assert_eq!(number.shard_index, 0);
        assert_eq!(number.counter, 0);
        assert_eq!(
            number.to_string(),
            "49600871682957036442365024926191073437251060580128653314"
        );
    }

    #[test]
    fn numbers_are_56_digits_and_grow_with_the_offset() {
        let at = |counter| SequenceNumber {
            shard_created_secs: 1_700_000_000,
            shard_index: 3,
            counter,
            record_secs: 1_700_000_100,
        };
        let first = at(0).to_string();
        let later = at(12345).to_string();
        assert_eq!(first.len(), 56);
        assert_eq!(later.len(), 56);
        assert!(later > first);
        assert_eq!(at(ENDING_COUNTER).to_string().len(), 56);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "abc", "12", "-1", &"9".repeat(130)] {
            assert!(bad.parse::<SequenceNumber>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(created in 1u64..(1 << 36), index in any::<u32>(), counter in 0u64..=ENDING_COUNTER, record in 0u64..(1 << 36)) {
            let number = SequenceNumber { shard_created_secs: created, shard_index: index, counter, record_secs: record };
            let text = number.to_string();
            prop_assert_eq!(text.parse::<SequenceNumber>().unwrap(), number);
        }

        #[test]
        fn order_within_a_shard_follows_the_counter(created in 1u64..(1 << 36), index in any::<u32>(), a in 0u64..ENDING_COUNTER, b in 0u64..ENDING_COUNTER) {
            let make = |counter| SequenceNumber { shard_created_secs: created, shard_index: index, counter, record_secs: 5 }.to_string();
            // Equal-length decimal strings compare like the numbers they spell.
            prop_assert_eq!(a.cmp(&b), make(a).cmp(&make(b)));
        }
    }
}
