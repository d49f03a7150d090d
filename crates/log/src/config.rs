//! Tunables of a shard's log and the limits they must respect.

use shardline_core::batch::HEADER_LEN;

use crate::Error;

/// When segments roll and how dense their indexes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before an append that would make it larger than this.
    /// At most `u32::MAX`, because index entries store 32-bit positions.
    pub segment_bytes_max: u64,
    /// Roll the active segment before an append once its first batch is older than this.
    pub segment_ms_max: i64,
    /// Add an offset-index and a time-index entry once this many bytes of batches have
    /// been written since the previous entry (0: index every batch).
    pub index_interval_bytes: u32,
    /// Check each batch's CRC when serving reads, not only its length and magic.
    /// Recovery always checks CRCs, whatever this says.
    pub verify_crc_on_read: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_ms_max: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            verify_crc_on_read: false,
        }
    }
}

impl LogConfig {
    /// Checks every field against what the on-disk formats can represent.
    pub fn validate(&self) -> Result<(), Error> {
        if self.segment_bytes_max < HEADER_LEN as u64 {
            return Err(Error::InvalidConfig {
                field: "segment_bytes_max",
                value: i128::from(self.segment_bytes_max),
                reason: "must hold at least one record batch header (61 bytes)",
            });
        }
        if self.segment_bytes_max > u64::from(u32::MAX) {
            return Err(Error::InvalidConfig {
                field: "segment_bytes_max",
                value: i128::from(self.segment_bytes_max),
                reason: "index positions are 32-bit, so segments cannot exceed 4 GiB - 1",
            });
        }
        if self.segment_ms_max <= 0 {
            return Err(Error::InvalidConfig {
                field: "segment_ms_max",
                value: i128::from(self.segment_ms_max),
                reason: "must be positive",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn limits_are_enforced() {
        let too_big = LogConfig {
            segment_bytes_max: u64::from(u32::MAX) + 1,
            ..LogConfig::default()
        };
        assert!(matches!(
            too_big.validate(),
            Err(Error::InvalidConfig {
                field: "segment_bytes_max",
                ..
            })
        ));
        let too_small = LogConfig {
            segment_bytes_max: 10,
            ..LogConfig::default()
        };
        assert!(too_small.validate().is_err());
        let never = LogConfig {
            segment_ms_max: 0,
            ..LogConfig::default()
        };
        assert!(never.validate().is_err());
        let max = LogConfig {
            segment_bytes_max: u64::from(u32::MAX),
            ..LogConfig::default()
        };
        max.validate().unwrap();
    }
}
