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

    // ---- JoinGroup --------------------------------------------------------------------

    /// Handles a JoinGroup. Its answer comes back as an [`Effect::Join`] for
    /// `request.waiter`, now or from a later call.
    pub(crate) fn join(&mut self, request: JoinRequest, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let waiter = request.waiter;
        let refuse = |code: i16| {
            vec![Effect::Join(
                waiter,
                JoinResult::error(code, &request.member_id),
            )]
        };
        if request.session_timeout_ms < self.settings.session_timeout_ms_min
            || request.session_timeout_ms > self.settings.session_timeout_ms_max
        {
            return refuse(codes::INVALID_SESSION_TIMEOUT);
        }
        if self.state == GroupState::Dead {
            return refuse(codes::COORDINATOR_NOT_AVAILABLE);
        }
        if !self.accepts_joining(&request.member_id) {
            return refuse(codes::GROUP_MAX_SIZE_REACHED);
        }
        if !self.supports_protocols(
            &request.member_id,
            &request.protocol_type,
            &request.protocols,
        ) {
            return refuse(codes::INCONSISTENT_GROUP_PROTOCOL);
        }
        if request.member_id.is_empty() {
            self.join_new_member(request, now_ms, &mut effects);
        } else {
            self.join_known_member(request, now_ms, &mut effects);
        }
        self.debug_check();
        effects
    }

    fn accepts_joining(&self, member_id: &str) -> bool {
        let limit = self.settings.group_size_max;
        // Member ids handed out but not used yet are bounded too, so that a flood of
        // first joins cannot grow the group without limit.
        if member_id.is_empty() && self.pending_members.len() >= limit {
            return false;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            // Members that have not rejoined will be dropped, so count those that have.
            GroupState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(|member| member.join_waiter.is_some())
                    || self.awaiting_join_count() < limit
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < limit
            }
        }
    }

    /// A joining member must share the group's protocol type and support at least one
    /// protocol every other member supports.
    fn supports_protocols(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[Protocol],
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let mut others = self
            .members
            .values()
            .filter(|member| member.member_id != member_id)
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others: Vec<&Member> = others.collect();
        protocols
            .iter()
            .any(|protocol| others.iter().all(|member| member.supports(&protocol.name)))
    }

    fn join_new_member(&mut self, request: JoinRequest, now_ms: i64, effects: &mut Vec<Effect>) {
        let fresh_id = request.fresh_member_id.clone();
        if let Some(instance) = &request.group_instance_id {
            match self.static_members.get(instance).cloned() {
                Some(old_id) => self.replace_static_member(request, &old_id, now_ms, effects),
                None => self.add_member(request, fresh_id, now_ms, effects),
            }
        } else if request.require_known_member_id {
            // KIP-394: hand out the id and wait for the member to come back with it, so a
            // client that times out and retries does not leave defunct members behind.
            let deadline = now_ms + i64::from(request.session_timeout_ms);
            self.pending_members.insert(fresh_id.clone(), deadline);
            effects.push(Effect::Join(
                request.waiter,
                JoinResult::error(codes::MEMBER_ID_REQUIRED, &fresh_id),
            ));
        } else {
            self.add_member(request, fresh_id, now_ms, effects);
        }
    }

    fn join_known_member(&mut self, request: JoinRequest, now_ms: i64, effects: &mut Vec<Effect>) {
        let member_id = request.member_id.clone();
        if request.group_instance_id.is_none() && self.pending_members.remove(&member_id).is_some()
        {
            self.add_member(request, member_id, now_ms, effects);
            return;
        }
        if let Err(code) = self.validate_member(&member_id, request.group_instance_id.as_deref()) {
            effects.push(Effect::Join(
                request.waiter,
                JoinResult::error(code, &member_id),
            ));
            return;
        }
        let (is_leader, unchanged) = {
            let member = &self.members[&member_id];
            (
                self.leader_id.as_deref() == Some(member_id.as_str()),
                member.matches(&request.protocols),
            )
        };
        match self.state {
            GroupState::PreparingRebalance => self.update_member(request, now_ms, effects),
            // Same metadata: the member probably missed its JoinGroup answer; repeat it.
            GroupState::CompletingRebalance if unchanged => {
                let result = self.current_join_result(&member_id, is_leader);
                self.answer_join_now(request.waiter, &member_id, result, now_ms, effects);
            }
            GroupState::CompletingRebalance => self.update_member(request, now_ms, effects),
            // A leader's JoinGroup always rebalances: it may know of topic changes that do
            // not show in its metadata.
            GroupState::Stable if is_leader || !unchanged => {
                self.update_member(request, now_ms, effects);
            }
            GroupState::Stable => {
                let result = self.current_join_result(&member_id, false);
                self.answer_join_now(request.waiter, &member_id, result, now_ms, effects);
            }
            GroupState::Empty | GroupState::Dead => effects.push(Effect::Join(
                request.waiter,
                JoinResult::error(codes::UNKNOWN_MEMBER_ID, &member_id),
            )),
        }
    }

    fn answer_join_now(
        &mut self,
        waiter: WaiterId,
        member_id: &str,
        result: JoinResult,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.refresh_session(now_ms);
        }
        effects.push(Effect::Join(waiter, result));
    }

    fn current_join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        JoinResult {
            error_code: codes::NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if with_members {
                self.member_list()
            } else {
                Vec::new()
            },
        }
    }

    /// Every member with its metadata for the chosen protocol, for the leader.
    fn member_list(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|member| JoinedMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                metadata: member.metadata(&protocol),
            })
            .collect()
    }

    fn add_member(
        &mut self,
        request: JoinRequest,
        member_id: String,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        if self.state == GroupState::PreparingRebalance && self.previous_state == GroupState::Empty
        {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(request.waiter),
            sync_waiter: None,
            is_new: true,
            heartbeat_deadline_ms: now_ms + i64::from(self.settings.new_member_join_timeout_ms),
        };
        self.members.insert(member_id, member);
        self.maybe_prepare_rebalance_or_complete_join(now_ms, effects);
    }

    fn update_member(&mut self, request: JoinRequest, now_ms: i64, effects: &mut Vec<Effect>) {
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return;
        };
        member.protocols = request.protocols;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        if let Some(previous) = member.join_waiter.replace(request.waiter) {
            // A second JoinGroup while the first is parked (the client gave up on it):
            // the first one will never be wanted, but must still be answered.
            effects.push(Effect::Join(
                previous,
                JoinResult::error(codes::REBALANCE_IN_PROGRESS, &request.member_id),
            ));
        }
        self.maybe_prepare_rebalance_or_complete_join(now_ms, effects);
    }

    /// A static member rejoined without its member id (typically after a restart): the
    /// newer join takes the instance over under a new member id, and the old id is fenced.
    fn replace_static_member(
        &mut self,
        request: JoinRequest,
        old_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(old) = self.members.remove(old_id) else {
            return;
        };
        let previous_leader = self.leader_id.clone().unwrap_or_default();
        let new_id = request.fresh_member_id.clone();
        if let Some(waiter) = old.join_waiter {
            effects.push(Effect::Join(
                waiter,
                JoinResult::error(codes::FENCED_INSTANCE_ID, old_id),
            ));
        }
        if let Some(waiter) = old.sync_waiter {
            effects.push(Effect::Sync(
                waiter,
                SyncResult::error(codes::FENCED_INSTANCE_ID),
            ));
        }
        if self.leader_id.as_deref() == Some(old_id) {
            self.leader_id = Some(new_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        let mut member = Member {
            member_id: new_id.clone(),
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: old.assignment,
            join_waiter: Some(request.waiter),
            sync_waiter: None,
            is_new: false,
            heartbeat_deadline_ms: 0,
        };
        member.refresh_session(now_ms);
        self.members.insert(new_id.clone(), member);
        match self.state {
            GroupState::Stable
                if self.select_protocol() == self.protocol_name.clone().unwrap_or_default() =>
            {
                // Nothing changes for the group: answer with the current generation. The
                // previous leader id is reported so that this member does not think it
                // must compute an assignment a Stable group would not distribute.
                let mut result = self.current_join_result(&new_id, false);
                result.leader_id = previous_leader;
                if let Some(member) = self.members.get_mut(&new_id) {
                    member.join_waiter = None;
                }
                self.answer_join_now(request.waiter, &new_id, result, now_ms, effects);
            }
            // The old id may already be in the leader's assignment: rebalance.
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, effects)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(now_ms, effects),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- rebalance mechanics --------------------------------------------------------

    fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        )
    }

    fn transition(&mut self, state: GroupState) {
        self.previous_state = self.state;
        self.state = state;
    }

    fn awaiting_join_count(&self) -> usize {
        self.members
            .values()
            .filter(|member| member.join_waiter.is_some())
            .count()
    }

    fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty()
            && self
                .members
                .values()
                .all(|member| member.join_waiter.is_some())
    }

    /// The longest rebalance timeout of any member; at least 1 ms so that a deadline is
    /// always in the future.
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|member| i64::from(member.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
            .max(1)
    }

    fn maybe_prepare_rebalance_or_complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.can_rebalance() {
            self.prepare_rebalance(now_ms, effects);
        } else {
            self.maybe_complete_join_phase(now_ms, effects);
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for the leader's assignment must rejoin instead.
            self.reset_and_propagate_assignment_error(
                codes::REBALANCE_IN_PROGRESS,
                now_ms,
                effects,
            );
        }
        self.sync_deadline_ms = None;
        let initial = self.state == GroupState::Empty;
        self.transition(GroupState::PreparingRebalance);
        if initial {
            let delay_ms = i64::from(self.settings.initial_rebalance_delay_ms);
            self.initial_delay = Some(InitialDelay {
                delay_ms,
                remaining_ms: (self.rebalance_timeout_ms() - delay_ms).max(0),
            });
            self.new_member_added = false;
            self.join_deadline_ms = Some(now_ms + delay_ms);
        } else {
            self.initial_delay = None;
            if self.has_all_members_joined() {
                self.complete_join(now_ms, effects);
            } else {
                self.join_deadline_ms = Some(now_ms + self.rebalance_timeout_ms());
            }
        }
    }

    /// Completes the join phase early once everyone has rejoined, except during the
    /// initial delay, which exists precisely to wait for members not known yet.
    fn maybe_complete_join_phase(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.state == GroupState::PreparingRebalance
            && self.has_all_members_joined()
            && self.previous_state != GroupState::Empty
        {
            self.complete_join(now_ms, effects);
        }
    }

    fn complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        debug_assert_eq!(self.state, GroupState::PreparingRebalance);
        self.join_deadline_ms = None;
        self.initial_delay = None;
        self.new_member_added = false;
        // Dynamic members that did not rejoin are gone; static ones are kept until their
        // session expires (they may be restarting).
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|member| member.join_waiter.is_none() && member.group_instance_id.is_none())
            .map(|member| member.member_id.clone())
            .collect();
        for member_id in missing {
            self.remove_member(&member_id, effects);
        }
        if !self.elect_joined_leader() && !self.members.is_empty() {
            // Only static members that have not rejoined are left: wait another round
            // for them to rejoin or expire.
            self.join_deadline_ms = Some(now_ms + self.rebalance_timeout_ms());
            return;
        }
        self.init_next_generation();
        if self.state == GroupState::Empty {
            return;
        }
        let leader = self.leader_id.clone().unwrap_or_default();
        let everyone = self.member_list();
        let template = self.current_join_result("", false);
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                let mut result = template.clone();
                result.member_id = member.member_id.clone();
                if member.member_id == leader {
                    result.members = everyone.clone();
                }
                effects.push(Effect::Join(waiter, result));
            }
            member.refresh_session(now_ms);
            member.is_new = false;
            self.pending_sync.insert(member.member_id.clone());
        }
        self.sync_deadline_ms = Some(now_ms + self.rebalance_timeout_ms());
    }

    /// Keeps the leader if it rejoined, else picks a member that did. False if nobody did.
    fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = &self.leader_id else {
            return false;
        };
        if self
            .members
            .get(leader)
            .is_some_and(|member| member.join_waiter.is_some())
        {
            return true;
        }
        match self
            .members
            .values()
            .find(|member| member.join_waiter.is_some())
        {
            Some(member) => {
                self.leader_id = Some(member.member_id.clone());
                true
            }
            None => false,
        }
    }

    fn init_next_generation(&mut self) {
        self.generation_id += 1;
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.subscribed_topics = Some(BTreeSet::new());
            self.transition(GroupState::Empty);
        } else {
            self.protocol_name = Some(self.select_protocol());
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition(GroupState::CompletingRebalance);
        }
    }

    /// The protocol every member supports that most members prefer: each member votes
    /// for its first choice among those all support. Ties go to the one listed first by
    /// the first member, so the choice is deterministic.
    fn select_protocol(&self) -> String {
        let Some(first) = self.members.values().next() else {
            return String::new();
        };
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|protocol| protocol.name.as_str())
            .filter(|name| self.members.values().all(|member| member.supports(name)))
            .collect();
        debug_assert!(
            !candidates.is_empty(),
            "members of {} share no protocol",
            self.group_id
        );
        let mut votes = vec![0usize; candidates.len()];
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find_map(|protocol| candidates.iter().position(|name| *name == protocol.name));
            if let Some(index) = choice {
                votes[index] += 1;
            }
        }
        let mut best = 0;
        for index in 1..candidates.len() {
            if votes[index] > votes[best] {
                best = index;
            }
        }
        candidates
            .get(best)
            .map(|name| (*name).to_owned())
            .unwrap_or_default()
    }

    fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            topics.extend(subscription::topics(&member.metadata(protocol))?);
        }
        Some(topics)
    }

    fn reset_and_propagate_assignment_error(
        &mut self,
        code: i16,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(waiter) = member.sync_waiter.take() {
                effects.push(Effect::Sync(waiter, SyncResult::error(code)));
                member.refresh_session(now_ms);
            }
        }
    }

    /// Removes a member without deciding what the group does next; answers its parked
    /// requests with UNKNOWN_MEMBER_ID so that a live client rejoins.
    fn remove_member(&mut self, member_id: &str, effects: &mut Vec<Effect>) {
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(waiter) = member.join_waiter {
            effects.push(Effect::Join(
                waiter,
                JoinResult::error(codes::UNKNOWN_MEMBER_ID, ""),
            ));
        }
        if let Some(waiter) = member.sync_waiter {
            effects.push(Effect::Sync(
                waiter,
                SyncResult::error(codes::UNKNOWN_MEMBER_ID),
            ));
        }
        if let Some(instance) = &member.group_instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
    }

    /// After members (or only member ids handed out but never used) were removed: a
    /// settled group that lost members rebalances; a rebalancing one may now have
    /// everyone it waits for.
    fn after_removal(&mut self, members_removed: bool, now_ms: i64, effects: &mut Vec<Effect>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance if members_removed => {
                self.maybe_prepare_rebalance_or_complete_join(now_ms, effects);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(now_ms, effects),
            _ => {}
        }
    }

    /// Member checks shared by SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and the
    /// JoinGroup of a known member. A static member's instance id must map to this member
    /// id; a different one means a newer instance took over (FENCED_INSTANCE_ID).
    fn validate_member(&self, member_id: &str, group_instance_id: Option<&str>) -> Result<(), i16> {
        match group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => Err(codes::UNKNOWN_MEMBER_ID),
                Some(current) if current != member_id => Err(codes::FENCED_INSTANCE_ID),
                Some(_) => Ok(()),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(codes::UNKNOWN_MEMBER_ID),
        }
    }

    // ---- SyncGroup ------------------------------------------------------------------

    /// Handles a SyncGroup. Its answer comes back as an [`Effect::Sync`] for
    /// `request.waiter`, now or once the leader's assignment arrives.
    pub(crate) fn sync(&mut self, request: SyncRequest, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let waiter = request.waiter;
        let refuse = |code: i16| vec![Effect::Sync(waiter, SyncResult::error(code))];
        if self.state == GroupState::Dead {
            return refuse(codes::COORDINATOR_NOT_AVAILABLE);
        }
        if let Err(code) =
            self.validate_member(&request.member_id, request.group_instance_id.as_deref())
        {
            return refuse(code);
        }
        if request.generation_id != self.generation_id {
            return refuse(codes::ILLEGAL_GENERATION);
        }
        let inconsistent = |asked: &Option<String>, ours: &Option<String>| matches!((asked, ours), (Some(asked), Some(ours)) if asked != ours);
        if inconsistent(&request.protocol_type, &self.protocol_type)
            || inconsistent(&request.protocol_name, &self.protocol_name)
        {
            return refuse(codes::INCONSISTENT_GROUP_PROTOCOL);
        }
        let member_id = request.member_id.clone();
        match self.state {
            GroupState::Empty | GroupState::Dead => return refuse(codes::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => return refuse(codes::REBALANCE_IN_PROGRESS),
            GroupState::CompletingRebalance => {
                if let Some(member) = self.members.get_mut(&member_id)
                    && let Some(previous) = member.sync_waiter.replace(waiter)
                {
                    effects.push(Effect::Sync(
                        previous,
                        SyncResult::error(codes::REBALANCE_IN_PROGRESS),
                    ));
                }
                self.sync_received(&member_id);
                if self.leader_id.as_deref() == Some(member_id.as_str()) {
                    let mut assignments: BTreeMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    let protocol_type = self.protocol_type.clone();
                    let protocol_name = self.protocol_name.clone();
                    for member in self.members.values_mut() {
                        // Entries for non-members are ignored; members without one get
                        // an empty assignment.
                        member.assignment =
                            assignments.remove(&member.member_id).unwrap_or_default();
                        if let Some(waiter) = member.sync_waiter.take() {
                            effects.push(Effect::Sync(
                                waiter,
                                SyncResult {
                                    error_code: codes::NONE,
                                    protocol_type: protocol_type.clone(),
                                    protocol_name: protocol_name.clone(),
                                    assignment: member.assignment.clone(),
                                },
                            ));
                            member.refresh_session(now_ms);
                        }
                    }
                    self.transition(GroupState::Stable);
                }
            }
            GroupState::Stable => {
                self.sync_received(&member_id);
                if let Some(member) = self.members.get_mut(&member_id) {
                    member.refresh_session(now_ms);
                    effects.push(Effect::Sync(
                        waiter,
                        SyncResult {
                            error_code: codes::NONE,
                            protocol_type: self.protocol_type.clone(),
                            protocol_name: self.protocol_name.clone(),
                            assignment: member.assignment.clone(),
                        },
                    ));
                }
            }
        }
        self.debug_check();
        effects
    }

    fn sync_received(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    // ---- Heartbeat, LeaveGroup ------------------------------------------------------

    /// Handles a Heartbeat; returns its error code.
    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return codes::COORDINATOR_NOT_AVAILABLE;
        }
        if let Err(code) = self.validate_member(member_id, group_instance_id) {
            return code;
        }
        if generation_id != self.generation_id {
            return codes::ILLEGAL_GENERATION;
        }
        let code = match self.state {
            GroupState::Empty | GroupState::Dead => return codes::UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => codes::REBALANCE_IN_PROGRESS,
            // A member may heartbeat between its JoinGroup answer and its SyncGroup.
            GroupState::CompletingRebalance | GroupState::Stable => codes::NONE,
        };
        if let Some(member) = self.members.get_mut(member_id) {
            member.refresh_session(now_ms);
        }
        code
    }

    /// Handles a LeaveGroup of `leaving` (member id, instance id) pairs; returns one error
    /// code per pair. An empty member id with an instance id removes that static member
    /// (administrative removal, KIP-345).
    pub(crate) fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now_ms: i64,
    ) -> (Vec<i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        if self.state == GroupState::Dead {
            return (
                vec![codes::COORDINATOR_NOT_AVAILABLE; leaving.len()],
                effects,
            );
        }
        let mut codes_out = Vec::with_capacity(leaving.len());
        let mut members_removed = false;
        let mut pending_removed = false;
        for (member_id, instance) in leaving {
            let code = if member_id.is_empty() {
                match instance
                    .as_ref()
                    .and_then(|instance| self.static_members.get(instance))
                    .cloned()
                {
                    Some(current) => {
                        self.remove_member(&current, &mut effects);
                        members_removed = true;
                        codes::NONE
                    }
                    None => codes::UNKNOWN_MEMBER_ID,
                }
            } else if self.pending_members.remove(member_id).is_some() {
                pending_removed = true;
                codes::NONE
            } else {
                match self.validate_member(member_id, instance.as_deref()) {
                    Ok(()) => {
                        self.remove_member(member_id, &mut effects);
                        members_removed = true;
                        codes::NONE
                    }
                    Err(code) => code,
                }
            };
            codes_out.push(code);
        }
        if members_removed || pending_removed {
            self.after_removal(members_removed, now_ms, &mut effects);
        }
        self.debug_check();
        (codes_out, effects)
    }

    // ---- timers -----------------------------------------------------------------------

    /// Does whatever is due at `now_ms`: ends a join phase or an initial delay, drops
    /// members that did not send SyncGroup in time, expires members whose session ran out
    /// and member ids handed out but never used.
    pub(crate) fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.join_deadline_ms.is_some_and(|at| at <= now_ms) {
            self.join_deadline_ms = None;
            match self.initial_delay {
                Some(delay)
                    if self.new_member_added
                        && delay.remaining_ms > 0
                        && self.settings.initial_rebalance_delay_ms > 0 =>
                {
                    // Members are still arriving: wait once more, within the budget.
                    self.new_member_added = false;
                    let next_ms =
                        i64::from(self.settings.initial_rebalance_delay_ms).min(delay.remaining_ms);
                    self.initial_delay = Some(InitialDelay {
                        delay_ms: next_ms,
                        remaining_ms: (delay.remaining_ms - delay.delay_ms).max(0),
                    });
                    self.join_deadline_ms = Some(now_ms + next_ms);
                }
                _ if self.state == GroupState::PreparingRebalance => {
                    self.complete_join(now_ms, &mut effects)
                }
                _ => {}
            }
        }
        if self.sync_deadline_ms.is_some_and(|at| at <= now_ms) {
            self.sync_deadline_ms = None;
            if matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            ) && !self.pending_sync.is_empty()
            {
                let late: Vec<String> = self.pending_sync.iter().cloned().collect();
                for member_id in late {
                    self.remove_member(&member_id, &mut effects);
                }
                self.prepare_rebalance(now_ms, &mut effects);
            }
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| member.expiry_ms().is_some_and(|at| at <= now_ms))
            .map(|member| member.member_id.clone())
            .collect();
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(member_id, _)| member_id.clone())
            .collect();
        for member_id in &expired_pending {
            self.pending_members.remove(member_id);
        }
        for member_id in &expired {
            self.remove_member(member_id, &mut effects);
        }
        if !expired.is_empty() || !expired_pending.is_empty() {
            self.after_removal(!expired.is_empty(), now_ms, &mut effects);
        }
        self.debug_check();
        debug_assert!(
            self.next_deadline().is_none_or(|at| at > now_ms),
            "tick left work due in group {}",
            self.group_id
        );
        effects
    }

    // ---- offsets and admin --------------------------------------------------------------

    /// Checks an OffsetCommit from `member_id` at `generation_id`. Generation -1 with no
    /// member id is a standalone commit, allowed while the group has no members.
    pub(crate) fn validate_offset_commit(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(codes::COORDINATOR_NOT_AVAILABLE);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            self.validate_member(member_id, group_instance_id)?;
            if generation_id != self.generation_id {
                return Err(codes::ILLEGAL_GENERATION);
            }
        } else {
            return Err(codes::UNKNOWN_MEMBER_ID);
        }
        if self.state == GroupState::CompletingRebalance {
            // The member has its new generation but not its assignment yet.
            return Err(codes::REBALANCE_IN_PROGRESS);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.refresh_session(now_ms);
        }
        Ok(())
    }

    /// Whether OffsetDelete may remove offsets of `topic`: not while the group's
    /// consumers subscribe to it.
    pub(crate) fn is_subscribed_to(&self, topic: &str) -> bool {
        if self.state == GroupState::Empty {
            return false;
        }
        self.subscribed_topics
            .as_ref()
            .is_none_or(|topics| topics.contains(topic))
    }

    /// Checks that offsets may be deleted at all (OffsetDelete).
    pub(crate) fn validate_offset_delete(&self) -> Result<(), i16> {
        match self.state {
            GroupState::Dead => Err(codes::GROUP_ID_NOT_FOUND),
            GroupState::Empty => Ok(()),
            _ if self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => Ok(()),
            _ => Err(codes::NON_EMPTY_GROUP),
        }
    }

    /// Marks the group deleted (DeleteGroups), if it has no members.
    pub(crate) fn delete(&mut self) -> Result<Vec<Effect>, i16> {
        match self.state {
            GroupState::Dead => Err(codes::GROUP_ID_NOT_FOUND),
            GroupState::Empty => {
                self.pending_members.clear();
                self.join_deadline_ms = None;
                self.sync_deadline_ms = None;
                self.transition(GroupState::Dead);
                Ok(Vec::new())
            }
            _ => Err(codes::NON_EMPTY_GROUP),
        }
    }

    /// The group as DescribeGroups shows it: metadata and assignments only when Stable.
    pub(crate) fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = if stable {
            self.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = self
            .members
            .values()
            .map(|member| MemberDescription {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: if stable {
                    member.metadata(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    member.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol,
            members,
        }
    }

    /// Answers every parked request with `code` (the coordinator is going away).
    pub(crate) fn abandon(&mut self, code: i16) -> Vec<Effect> {
        let mut effects = Vec::new();
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                effects.push(Effect::Join(
                    waiter,
                    JoinResult::error(code, &member.member_id),
                ));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                effects.push(Effect::Sync(waiter, SyncResult::error(code)));
            }
        }
        effects
    }

    /// Invariants that every public call preserves.
    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let leader_ok = match &self.leader_id {
                Some(leader) => self.members.contains_key(leader),
                None => self.members.is_empty(),
            };
            debug_assert!(
                leader_ok,
                "group {}: leader {:?} is not a member",
                self.group_id, self.leader_id
            );
            for (instance, member_id) in &self.static_members {
                debug_assert!(
                    self.members
                        .get(member_id)
                        .and_then(|m| m.group_instance_id.as_deref())
                        == Some(instance),
                    "group {}: static mapping {instance} -> {member_id} is stale",
                    self.group_id
                );
            }
            debug_assert!(
                self.pending_sync
                    .iter()
                    .all(|member_id| self.members.contains_key(member_id)),
                "group {}: pending sync of a non-member",
                self.group_id
            );
            let waiting_outside_rebalance = self.state != GroupState::PreparingRebalance
                && self
                    .members
                    .values()
                    .any(|member| member.join_waiter.is_some());
            debug_assert!(
                !waiting_outside_rebalance,
                "group {}: JoinGroup parked outside a rebalance",
                self.group_id
            );
            if self.state == GroupState::Empty {
                debug_assert!(
                    self.members.is_empty(),
                    "group {}: Empty with members",
                    self.group_id
                );
            }
        }
    }
}
