//! Rebalance mechanics: preparing and completing a join phase, leader election, protocol choice, removing members.

use super::*;

impl Group {
    pub(super) fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        )
    }

    pub(super) fn transition(&mut self, state: GroupState) {
        self.previous_state = self.state;
        self.state = state;
    }

    pub(super) fn awaiting_join_count(&self) -> usize {
        self.members
            .values()
            .filter(|member| member.join_waiter.is_some())
            .count()
    }

    pub(super) fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty()
            && self
                .members
                .values()
                .all(|member| member.join_waiter.is_some())
    }

    /// The longest rebalance timeout of any member; at least 1 ms so that a deadline is
    /// always in the future.
    pub(super) fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|member| i64::from(member.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
            .max(1)
    }

    pub(super) fn maybe_prepare_rebalance_or_complete_join(
        &mut self,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        if self.can_rebalance() {
            self.prepare_rebalance(now_ms, effects);
        } else {
            self.maybe_complete_join_phase(now_ms, effects);
        }
    }

    pub(super) fn prepare_rebalance(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
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
    pub(super) fn maybe_complete_join_phase(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.state == GroupState::PreparingRebalance
            && self.has_all_members_joined()
            && self.previous_state != GroupState::Empty
        {
            self.complete_join(now_ms, effects);
        }
    }

    pub(super) fn complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
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
    pub(super) fn elect_joined_leader(&mut self) -> bool {
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

    pub(super) fn init_next_generation(&mut self) {
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
    pub(super) fn select_protocol(&self) -> String {
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

    pub(super) fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
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

    pub(super) fn reset_and_propagate_assignment_error(
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
    pub(super) fn remove_member(&mut self, member_id: &str, effects: &mut Vec<Effect>) {
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
    pub(super) fn after_removal(
        &mut self,
        members_removed: bool,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
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
    pub(super) fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), i16> {
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
}
