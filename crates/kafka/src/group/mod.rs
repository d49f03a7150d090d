//! The consumer-group coordinator (classic protocol). This node coordinates every group.
//!
//! ```text
//! handlers (JoinGroup, SyncGroup, …) ──▶ Coordinator (coordinator.rs: registry, waiters, timer task)
//!                                            │ requests + now_ms         ▲ effects, next deadline
//!                                            ▼                           │
//!                                        Group (machine.rs: pure state machine, one per group)
//! committed offsets ──▶ shardline_broker::Broker (durable; the coordinator only validates)
//! ```
//!
//! Group membership lives in memory only: after a restart members find their ids unknown
//! and rejoin, as after a Kafka coordinator move, while committed offsets survive in the
//! broker.

pub(crate) mod coordinator;
pub(crate) mod machine;
pub(crate) mod subscription;

/// Consumer-group settings (Kafka's `group.*` and `offsets.*` broker settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub session_timeout_ms_min: i32,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub session_timeout_ms_max: i32,
    /// How long the first rebalance of an empty group waits for more members to arrive
    /// (`group.initial.rebalance.delay.ms`); 0 rebalances at once.
    pub initial_rebalance_delay_ms: i32,
    /// Most members one group may have (`group.max.size`).
    pub group_size_max: usize,
    /// Most groups the coordinator keeps; past it, groups without members are forgotten
    /// to make room, and a new group is refused only when all of them have members.
    pub groups_max: usize,
    /// Most distinct protocols one member may offer in a JoinGroup (clients offer one to
    /// three assignors); bounds the protocol matching a join costs.
    pub member_protocols_max: usize,
    /// How long a new member's JoinGroup may stay parked before the member is dropped.
    pub new_member_join_timeout_ms: i32,
    /// How long the committed offsets of a group without members are kept
    /// (`offsets.retention.minutes`).
    pub offsets_retention_ms: i64,
    /// How often expired offsets are looked for (`offsets.retention.check.interval.ms`).
    pub offsets_retention_check_interval_ms: u64,
    /// Longest metadata string a committed offset may carry (`offset.metadata.max.bytes`).
    pub offset_metadata_bytes_max: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            group_size_max: 10_000,
            groups_max: 10_000,
            member_protocols_max: 64,
            new_member_join_timeout_ms: 300_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_bytes_max: 4096,
        }
    }
}

impl GroupConfig {
    /// Checks that the values make sense together; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_timeout_ms_min < 1 {
            return Err("session_timeout_ms_min must be at least 1".to_owned());
        }
        if self.session_timeout_ms_max < self.session_timeout_ms_min {
            return Err(
                "session_timeout_ms_max must not be below session_timeout_ms_min".to_owned(),
            );
        }
        if self.initial_rebalance_delay_ms < 0 {
            return Err("initial_rebalance_delay_ms must not be negative".to_owned());
        }
        if self.groups_max == 0 {
            return Err("groups_max must be at least 1".to_owned());
        }
        if self.member_protocols_max == 0 {
            return Err("member_protocols_max must be at least 1".to_owned());
        }
        if self.group_size_max == 0 {
            return Err("group_size_max must be at least 1".to_owned());
        }
        if self.new_member_join_timeout_ms < 1 {
            return Err("new_member_join_timeout_ms must be at least 1".to_owned());
        }
        if self.offsets_retention_ms < 1 {
            return Err("offsets_retention_ms must be at least 1".to_owned());
        }
        if self.offsets_retention_check_interval_ms == 0 {
            return Err("offsets_retention_check_interval_ms must be at least 1".to_owned());
        }
        Ok(())
    }

    pub(crate) fn settings(&self) -> machine::Settings {
        machine::Settings {
            session_timeout_ms_min: self.session_timeout_ms_min,
            session_timeout_ms_max: self.session_timeout_ms_max,
            initial_rebalance_delay_ms: self.initial_rebalance_delay_ms,
            group_size_max: self.group_size_max,
            member_protocols_max: self.member_protocols_max,
            new_member_join_timeout_ms: self.new_member_join_timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests;
