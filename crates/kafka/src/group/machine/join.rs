//! JoinGroup: new, known and static members joining, and their answers.

use super::*;

impl Group {
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
        if request.protocols.len() > self.settings.member_protocols_max {
            tracing::warn!(
                group = %self.group_id,
                offered = request.protocols.len(),
                limit = self.settings.member_protocols_max,
                "JoinGroup offers more protocols than groups.member_protocols_max"
            );
            return refuse(codes::INCONSISTENT_GROUP_PROTOCOL);
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

    pub(super) fn accepts_joining(&self, member_id: &str) -> bool {
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
    pub(super) fn supports_protocols(
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

    pub(super) fn join_new_member(
        &mut self,
        request: JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
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

    pub(super) fn join_known_member(
        &mut self,
        request: JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
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

    pub(super) fn answer_join_now(
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

    pub(super) fn current_join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
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
    pub(super) fn member_list(&self) -> Vec<JoinedMember> {
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

    pub(super) fn add_member(
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

    pub(super) fn update_member(
        &mut self,
        request: JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
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
    pub(super) fn replace_static_member(
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
}
