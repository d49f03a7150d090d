//! SyncGroup, Heartbeat and LeaveGroup.

use super::*;

impl Group {
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

    pub(super) fn sync_received(&mut self, member_id: &str) {
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
}
