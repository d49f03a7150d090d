//! Timers (`tick`), and the checks OffsetCommit, OffsetDelete, DeleteGroups and DescribeGroups make of a group.

use super::*;

impl Group {
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
    pub(super) fn debug_check(&self) {
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
