//! Control records: the markers a transaction coordinator writes to end a transaction.
//! A control batch (attributes bit 5) holds one record whose key is
//! `version: int16, type: int16` (0 = abort, 1 = commit) and whose value is
//! `version: int16, coordinator_epoch: int32`.

/// The kind of a control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// The transaction was aborted.
    Abort,
    /// The transaction was committed.
    Commit,
}

/// A decoded control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    /// Abort or commit.
    pub kind: ControlType,
    /// The coordinator epoch that wrote the marker.
    pub coordinator_epoch: i32,
}

impl ControlRecord {
    /// Parses a control record's key and value; `None` for anything else (Kafka skips
    /// control records it does not know).
    pub fn parse(key: &[u8], value: &[u8]) -> Option<ControlRecord> {
        let kind = match key {
            [0, 0, 0, 0] => ControlType::Abort,
            [0, 0, 0, 1] => ControlType::Commit,
            _ => return None,
        };
        let coordinator_epoch = match value {
            [0, 0, a, b, c, d, ..] => i32::from_be_bytes([*a, *b, *c, *d]),
            _ => return None,
        };
        Some(ControlRecord {
            kind,
            coordinator_epoch,
        })
    }

    /// The record's key bytes (version 0).
    pub fn key(&self) -> [u8; 4] {
        match self.kind {
            ControlType::Abort => [0, 0, 0, 0],
            ControlType::Commit => [0, 0, 0, 1],
        }
    }

    /// The record's value bytes (version 0).
    pub fn value(&self) -> [u8; 6] {
        let epoch = self.coordinator_epoch.to_be_bytes();
        [0, 0, epoch[0], epoch[1], epoch[2], epoch[3]]
    }
}
