//! The classic consumer-group state machine for one group: pure logic, with time passed in.
//!
//! ```text
//!            join (first member)                all joined / rebalance timeout
//!   Empty ───────────────────────▶ PreparingRebalance ─────────────────────▶ CompletingRebalance
//!     ▲                               ▲        │ no members left                 │ leader's SyncGroup
//!     └───────────────────────────────┼────────┘                                 ▼
//!                                     └──── join / leave / expiry ─────────── Stable
//!   Dead: deleted; every request answers as for a group that moved away.
//! ```
//!
//! Inputs are requests and `now_ms` (a monotonic clock in milliseconds); outputs are
//! [`Effect`]s, each answering a JoinGroup or SyncGroup that was parked here (identified
//! by the caller's [`WaiterId`]), and [`Group::next_deadline`], the time at which
//! [`Group::tick`] has something to do (a rebalance or initial delay ending, a member's
//! session expiring, a pending member or a pending SyncGroup timing out). Nothing here
//! sleeps, spawns or does I/O; the async driver in `coordinator.rs` feeds it.
//!
//! The rules follow Kafka's classic group coordinator: members that must rejoin are told
//! by REBALANCE_IN_PROGRESS on Heartbeat; a JoinGroup is answered once every known member
//! has rejoined (or the rebalance timeout passes, and the ones missing are dropped); only
//! the leader gets the members' metadata; the leader's SyncGroup carries the assignment,
//! which every member then gets; v4+ first joins get MEMBER_ID_REQUIRED (KIP-394); static
//! members (`group.instance.id`, KIP-345) are replaced by a newer join with the same
//! instance id, and the replaced member is fenced (FENCED_INSTANCE_ID).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::codes;
use crate::group::subscription;

mod join;
mod rebalance;
mod sync;
mod timers;

/// The protocol type of Kafka consumers; only their subscriptions are decoded.
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The state of a classic group, named as Kafka names them on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    /// No members (offsets may still be stored).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// The name used in ListGroups and DescribeGroups.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Limits and timings that apply to every group (from `GroupConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Smallest session timeout a member may ask for.
    pub(crate) session_timeout_ms_min: i32,
    /// Largest session timeout a member may ask for.
    pub(crate) session_timeout_ms_max: i32,
    /// How long the first rebalance of an empty group waits for more members.
    pub(crate) initial_rebalance_delay_ms: i32,
    /// Most members one group may have.
    pub(crate) group_size_max: usize,
    pub(crate) member_protocols_max: usize,
    /// How long a new member's JoinGroup may stay parked before the member is dropped.
    pub(crate) new_member_join_timeout_ms: i32,
}

/// Identifies a parked JoinGroup or SyncGroup; chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WaiterId(pub(crate) u64);

/// One protocol a member supports, with its metadata (for consumers, the subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Protocol {
    /// Name, such as `range` or `cooperative-sticky`.
    pub(crate) name: String,
    /// Opaque to the coordinator (decoded only to learn consumers' topics).
    pub(crate) metadata: Bytes,
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest {
    /// Empty for a member that has no id yet.
    pub(crate) member_id: String,
    /// Static membership (KIP-345).
    pub(crate) group_instance_id: Option<String>,
    /// From the request header; shown by DescribeGroups.
    pub(crate) client_id: String,
    /// The client's address; shown by DescribeGroups.
    pub(crate) client_host: String,
    /// How long the member may go without a heartbeat.
    pub(crate) session_timeout_ms: i32,
    /// How long a rebalance waits for this member to rejoin.
    pub(crate) rebalance_timeout_ms: i32,
    /// `consumer` for consumers; `connect` etc. for others.
    pub(crate) protocol_type: String,
    /// In the member's order of preference.
    pub(crate) protocols: Vec<Protocol>,
    /// JoinGroup v4+: a member without an id gets one with MEMBER_ID_REQUIRED first.
    pub(crate) require_known_member_id: bool,
    /// The id this member gets if it is new; generated by the caller.
    pub(crate) fresh_member_id: String,
    /// Where to send the answer.
    pub(crate) waiter: WaiterId,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinedMember {
    /// The member's id.
    pub(crate) member_id: String,
    /// Its static instance id, if any.
    pub(crate) group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub(crate) metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinResult {
    /// Kafka error code.
    pub(crate) error_code: i16,
    /// The generation the member is now in (-1 on error).
    pub(crate) generation_id: i32,
    /// The group's protocol type.
    pub(crate) protocol_type: Option<String>,
    /// The protocol chosen for this generation.
    pub(crate) protocol_name: Option<String>,
    /// The leader's member id.
    pub(crate) leader_id: String,
    /// The member's id (also on MEMBER_ID_REQUIRED).
    pub(crate) member_id: String,
    /// Every member, for the leader only.
    pub(crate) members: Vec<JoinedMember>,
}

impl JoinResult {
    fn error(error_code: i16, member_id: &str) -> JoinResult {
        JoinResult {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest {
    /// The member's id.
    pub(crate) member_id: String,
    /// Static instance id, if any.
    pub(crate) group_instance_id: Option<String>,
    /// The generation the member believes it is in.
    pub(crate) generation_id: i32,
    /// v5+: must match the group's, when given.
    pub(crate) protocol_type: Option<String>,
    /// v5+: must match the group's, when given.
    pub(crate) protocol_name: Option<String>,
    /// From the leader: each member's assignment.
    pub(crate) assignments: Vec<(String, Bytes)>,
    /// Where to send the answer.
    pub(crate) waiter: WaiterId,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncResult {
    /// Kafka error code.
    pub(crate) error_code: i16,
    /// The group's protocol type (when there is no error).
    pub(crate) protocol_type: Option<String>,
    /// The generation's protocol (when there is no error).
    pub(crate) protocol_name: Option<String>,
    /// This member's assignment.
    pub(crate) assignment: Bytes,
}

impl SyncResult {
    fn error(error_code: i16) -> SyncResult {
        SyncResult {
            error_code,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Something the driver must do after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Answer this parked JoinGroup.
    Join(WaiterId, JoinResult),
    /// Answer this parked SyncGroup.
    Sync(WaiterId, SyncResult),
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberDescription {
    /// The member's id.
    pub(crate) member_id: String,
    /// Static instance id, if any.
    pub(crate) group_instance_id: Option<String>,
    /// Client id from its JoinGroup.
    pub(crate) client_id: String,
    /// Client address from its JoinGroup.
    pub(crate) client_host: String,
    /// Metadata for the chosen protocol (Stable groups only).
    pub(crate) metadata: Bytes,
    /// Its assignment (Stable groups only).
    pub(crate) assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupDescription {
    /// Current state.
    pub(crate) state: GroupState,
    /// Protocol type, empty if none.
    pub(crate) protocol_type: String,
    /// The chosen protocol (Stable groups only), else empty.
    pub(crate) protocol_name: String,
    /// The members.
    pub(crate) members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    /// A parked JoinGroup: the member is rejoining the current rebalance.
    join_waiter: Option<WaiterId>,
    /// A parked SyncGroup: the member waits for the leader's assignment.
    sync_waiter: Option<WaiterId>,
    /// Joined but not yet through a completed join phase; such a member has no session
    /// yet, so it is dropped if its join stays parked past the new-member timeout.
    is_new: bool,
    /// When the member expires unless it is heard from (see [`Member::expiry_ms`]).
    heartbeat_deadline_ms: i64,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Same protocols and metadata, in the same order.
    fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    /// When this member expires, if it can: a member with a parked JoinGroup or
    /// SyncGroup cannot send heartbeats, so it is kept until that request is answered,
    /// except a new member, whose join is bounded by the new-member timeout.
    fn expiry_ms(&self) -> Option<i64> {
        if self.join_waiter.is_some() {
            return self.is_new.then_some(self.heartbeat_deadline_ms);
        }
        if self.sync_waiter.is_some() {
            return None;
        }
        Some(self.heartbeat_deadline_ms)
    }

    fn refresh_session(&mut self, now_ms: i64) {
        self.heartbeat_deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }
}

/// The initial rebalance of an empty group waits `delay_ms`, and again while members keep
/// arriving, up to `remaining_ms` more (Kafka's `group.initial.rebalance.delay.ms`).
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    delay_ms: i64,
    remaining_ms: i64,
}

/// One classic group.
#[derive(Debug)]
pub(crate) struct Group {
    group_id: String,
    settings: Settings,
    state: GroupState,
    previous_state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static instance id -> member id.
    static_members: BTreeMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet used to join, with their expiry.
    pending_members: BTreeMap<String, i64>,
    /// Members of this generation that have not sent SyncGroup yet.
    pending_sync: BTreeSet<String>,
    /// When the join phase ends (rebalance timeout, or the initial delay).
    join_deadline_ms: Option<i64>,
    /// Set while the initial rebalance of a previously empty group is being delayed.
    initial_delay: Option<InitialDelay>,
    /// A member arrived during the initial delay, which may therefore be extended.
    new_member_added: bool,
    /// When members still in `pending_sync` are dropped.
    sync_deadline_ms: Option<i64>,
    /// Topics the consumers subscribe to; `None` when unknown (not consumers, or
    /// undecodable metadata), which counts as subscribed to everything.
    subscribed_topics: Option<BTreeSet<String>>,
}

impl Group {
    /// A new, empty group.
    pub(crate) fn new(group_id: &str, settings: Settings) -> Group {
        Group {
            group_id: group_id.to_owned(),
            settings,
            state: GroupState::Empty,
            previous_state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            join_deadline_ms: None,
            initial_delay: None,
            new_member_added: false,
            sync_deadline_ms: None,
            subscribed_topics: Some(BTreeSet::new()),
        }
    }

    /// The group id.
    pub(crate) fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Current state.
    pub(crate) fn state(&self) -> GroupState {
        self.state
    }

    /// Current generation.
    pub(crate) fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// Protocol type, if a member ever set one.
    pub(crate) fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// Number of members.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether nothing refers to this group any more (no members, no member ids handed
    /// out), so it may be forgotten once its offsets are gone too.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, GroupState::Empty | GroupState::Dead)
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }

    /// The earliest time [`Group::tick`] has work to do.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let members = self.members.values().filter_map(Member::expiry_ms);
        let pending = self.pending_members.values().copied();
        [self.join_deadline_ms, self.sync_deadline_ms]
            .into_iter()
            .flatten()
            .chain(members)
            .chain(pending)
            .min()
    }
}
