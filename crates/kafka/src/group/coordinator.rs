//! The async driver around the pure group state machines: a registry of groups behind a
//! std mutex (held only for short, await-free sections), the oneshot channels of parked
//! JoinGroup and SyncGroup requests, and one task that runs due group timers and the
//! periodic expiry of committed offsets.
//!
//! Time for the machines is a monotonic clock: milliseconds since the coordinator started,
//! read from `tokio::time::Instant` (so a paused test clock drives it too). Commit
//! timestamps and offset expiry use the wall clock, because they outlive restarts.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shardline_broker::Broker;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::codes;
use crate::group::GroupConfig;
use crate::group::machine::{
    Effect, Group, GroupDescription, GroupState, JoinRequest, JoinResult, Settings, SyncRequest,
    SyncResult, WaiterId,
};

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The group id.
    pub(crate) group_id: String,
    /// Its state.
    pub(crate) state: GroupState,
    /// Its protocol type, empty if none.
    pub(crate) protocol_type: String,
}

/// The group coordinator. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Coordinator {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    broker: Broker,
    config: GroupConfig,
    settings: Settings,
    registry: Mutex<Registry>,
    /// Wakes the timer task when a group's deadline became the earliest.
    wake: Notify,
    /// Zero of the machines' clock.
    origin: Instant,
    ids: MemberIds,
}

#[derive(Debug, Default)]
struct Registry {
    groups: BTreeMap<String, Group>,
    joins: HashMap<WaiterId, oneshot::Sender<JoinResult>>,
    syncs: HashMap<WaiterId, oneshot::Sender<SyncResult>>,
    next_waiter: u64,
    /// (deadline, group) for every group with one; `scheduled` is the reverse index.
    schedule: BTreeSet<(i64, String)>,
    scheduled: HashMap<String, i64>,
    /// Set at shutdown: every request is then refused with NOT_COORDINATOR.
    closed: bool,
    /// Generation and state of each group when last logged.
    logged: HashMap<String, (i32, GroupState)>,
}

impl Registry {
    fn waiter(&mut self) -> WaiterId {
        self.next_waiter += 1;
        WaiterId(self.next_waiter)
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                // A caller that went away (its connection closed) is fine.
                Effect::Join(waiter, result) => {
                    if let Some(reply) = self.joins.remove(&waiter) {
                        let _ = reply.send(result);
                    }
                }
                Effect::Sync(waiter, result) => {
                    if let Some(reply) = self.syncs.remove(&waiter) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    /// Whether one more group fits under `limit`. At the limit, groups without members
    /// are forgotten first: they hold only a generation counter (their committed offsets
    /// live in the broker), so a new group may take their place.
    fn make_room(&mut self, limit: usize) -> bool {
        if self.groups.len() < limit {
            return true;
        }
        // Idle: Empty with no member half-way through its first join (KIP-394), so
        // forgetting it loses nothing a client still relies on. Only as many as needed.
        let room_needed = self.groups.len() + 1 - limit;
        let empty: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, group)| group.is_idle())
            .map(|(id, _)| id.clone())
            .take(room_needed)
            .collect();
        for group_id in empty {
            self.groups.remove(&group_id);
            self.logged.remove(&group_id);
            if let Some(previous) = self.scheduled.remove(&group_id) {
                self.schedule.remove(&(previous, group_id));
            }
        }
        self.groups.len() < limit
    }

    /// After any call on `group_id`: runs what is already due, forgets a deleted group,
    /// and files the group's next deadline. Returns true if that deadline is now the
    /// earliest, so the timer task must wake.
    fn settle(&mut self, group_id: &str, now_ms: i64) -> bool {
        let mut next = None;
        let mut forget = false;
        if let Some(group) = self.groups.get_mut(group_id) {
            if group.next_deadline().is_some_and(|at| at <= now_ms) {
                let effects = group.tick(now_ms);
                self.apply(effects);
            }
            let group = &self.groups[group_id];
            next = group.next_deadline();
            forget = group.state() == GroupState::Dead;
            let now = (group.generation_id(), group.state());
            let before = self.logged.insert(group_id.to_owned(), now);
            if before.is_some_and(|(generation, _)| generation != now.0) {
                info!(
                    group = group_id,
                    generation = now.0,
                    state = now.1.as_str(),
                    members = group.member_count(),
                    "group rebalanced"
                );
            } else if before.is_none_or(|(_, state)| state != now.1) {
                debug!(
                    group = group_id,
                    state = now.1.as_str(),
                    "group state changed"
                );
            }
        }
        if forget {
            self.groups.remove(group_id);
            self.logged.remove(group_id);
        }
        if let Some(previous) = self.scheduled.remove(group_id) {
            self.schedule.remove(&(previous, group_id.to_owned()));
        }
        let Some(at) = next else {
            return false;
        };
        self.scheduled.insert(group_id.to_owned(), at);
        self.schedule.insert((at, group_id.to_owned()));
        self.schedule.first().is_some_and(|(first, _)| *first == at)
    }
}

/// Member ids as Kafka makes them: `<client id or instance id>-<random UUID>`. Random
/// because ids must not repeat across restarts (a stale member would pass as a new one).
/// The randomness comes from std's per-process random hash keys.
#[derive(Debug)]
struct MemberIds {
    keys: RandomState,
    counter: AtomicU64,
}

impl MemberIds {
    fn new() -> MemberIds {
        MemberIds {
            keys: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self, prefix: &str) -> String {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut halves = [0u64; 2];
        for (salt, half) in halves.iter_mut().enumerate() {
            *half = self
                .keys
                .hash_one((salt, count, std::time::SystemTime::now()));
        }
        let uuid = uuid::Uuid::from_u64_pair(halves[0], halves[1]);
        format!("{prefix}-{uuid}")
    }
}

impl Coordinator {
    pub(crate) fn new(broker: Broker, config: GroupConfig) -> Coordinator {
        Coordinator {
            shared: Arc::new(Shared {
                broker,
                settings: config.settings(),
                config,
                registry: Mutex::new(Registry::default()),
                wake: Notify::new(),
                origin: Instant::now(),
                ids: MemberIds::new(),
            }),
        }
    }

    /// The settings, for handlers (metadata limit).
    pub(crate) fn config(&self) -> &GroupConfig {
        &self.shared.config
    }

    fn now_ms(&self) -> i64 {
        self.shared.origin.elapsed().as_millis() as i64
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.shared
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn settle(&self, registry: &mut Registry, group_id: &str, now_ms: i64) {
        if registry.settle(group_id, now_ms) {
            self.shared.wake.notify_one();
        }
    }

    /// Whether `group_id` exists: known here, or with committed offsets.
    fn exists(&self, registry: &Registry, group_id: &str) -> bool {
        registry.groups.contains_key(group_id) || self.shared.broker.has_committed_offsets(group_id)
    }

    /// JoinGroup. `request.waiter` and `request.fresh_member_id` are filled in here.
    /// Resolves when the member's join phase completes (or at once on error).
    pub(crate) async fn join(&self, group_id: &str, mut request: JoinRequest) -> JoinResult {
        let refused = |code: i16, member_id: &str| JoinResult {
            error_code: code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        };
        if group_id.is_empty() {
            return refused(codes::INVALID_GROUP_ID, &request.member_id);
        }
        let receiver = {
            let mut registry = self.registry();
            if registry.closed {
                return refused(codes::NOT_COORDINATOR, &request.member_id);
            }
            let now_ms = self.now_ms();
            if !registry.groups.contains_key(group_id) {
                if !request.member_id.is_empty() {
                    return refused(codes::UNKNOWN_MEMBER_ID, &request.member_id);
                }
                if !registry.make_room(self.shared.config.groups_max) {
                    warn!(
                        group = group_id,
                        limit = self.shared.config.groups_max,
                        "JoinGroup for a new group refused: groups.groups_max groups have members"
                    );
                    return refused(codes::COORDINATOR_NOT_AVAILABLE, &request.member_id);
                }
                let group = Group::new(group_id, self.shared.settings);
                registry.groups.insert(group_id.to_owned(), group);
            }
            let prefix = request
                .group_instance_id
                .clone()
                .unwrap_or_else(|| request.client_id.clone());
            request.fresh_member_id = self.shared.ids.next(&prefix);
            request.waiter = registry.waiter();
            let (reply, receiver) = oneshot::channel();
            registry.joins.insert(request.waiter, reply);
            let effects = match registry.groups.get_mut(group_id) {
                Some(group) => group.join(request, now_ms),
                None => Vec::new(),
            };
            registry.apply(effects);
            // A refused first join must not leave an empty group behind.
            if registry
                .groups
                .get(group_id)
                .is_some_and(|group| group.is_idle() && group.generation_id() == 0)
            {
                registry.groups.remove(group_id);
            }
            self.settle(&mut registry, group_id, now_ms);
            receiver
        };
        receiver
            .await
            .unwrap_or_else(|_dropped| refused(codes::NOT_COORDINATOR, ""))
    }

    /// SyncGroup. `request.waiter` is filled in here. Resolves when the leader's
    /// assignment arrives (or at once).
    pub(crate) async fn sync(&self, group_id: &str, mut request: SyncRequest) -> SyncResult {
        let refused = |code: i16| SyncResult {
            error_code: code,
            protocol_type: None,
            protocol_name: None,
            assignment: bytes::Bytes::new(),
        };
        if group_id.is_empty() {
            return refused(codes::INVALID_GROUP_ID);
        }
        let receiver = {
            let mut registry = self.registry();
            if registry.closed {
                return refused(codes::NOT_COORDINATOR);
            }
            if !registry.groups.contains_key(group_id) {
                return refused(codes::UNKNOWN_MEMBER_ID);
            }
            let now_ms = self.now_ms();
            request.waiter = registry.waiter();
            let (reply, receiver) = oneshot::channel();
            registry.syncs.insert(request.waiter, reply);
            let effects = match registry.groups.get_mut(group_id) {
                Some(group) => group.sync(request, now_ms),
                None => Vec::new(),
            };
            registry.apply(effects);
            self.settle(&mut registry, group_id, now_ms);
            receiver
        };
        receiver
            .await
            .unwrap_or_else(|_dropped| refused(codes::NOT_COORDINATOR))
    }

    /// Heartbeat; returns its error code.
    pub(crate) fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> i16 {
        if group_id.is_empty() {
            return codes::INVALID_GROUP_ID;
        }
        let mut registry = self.registry();
        if registry.closed {
            return codes::NOT_COORDINATOR;
        }
        let now_ms = self.now_ms();
        let Some(group) = registry.groups.get_mut(group_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        let code = group.heartbeat(member_id, group_instance_id, generation_id, now_ms);
        self.settle(&mut registry, group_id, now_ms);
        code
    }

    /// LeaveGroup; returns the top-level error code and one code per leaving member.
    pub(crate) fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (i16, Vec<i16>) {
        if group_id.is_empty() {
            return (
                codes::INVALID_GROUP_ID,
                vec![codes::INVALID_GROUP_ID; leaving.len()],
            );
        }
        let mut registry = self.registry();
        if registry.closed {
            return (
                codes::NOT_COORDINATOR,
                vec![codes::NOT_COORDINATOR; leaving.len()],
            );
        }
        let now_ms = self.now_ms();
        let Some(group) = registry.groups.get_mut(group_id) else {
            return (codes::NONE, vec![codes::UNKNOWN_MEMBER_ID; leaving.len()]);
        };
        let (member_codes, effects) = group.leave(leaving, now_ms);
        registry.apply(effects);
        self.settle(&mut registry, group_id, now_ms);
        (codes::NONE, member_codes)
    }

    /// Checks that an OffsetCommit may be stored. An unknown group accepts standalone
    /// commits (generation < 0); otherwise the group does not exist (GROUP_ID_NOT_FOUND
    /// from OffsetCommit v9, ILLEGAL_GENERATION before, as Kafka answers).
    pub(crate) fn validate_offset_commit(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        version: i16,
    ) -> Result<(), i16> {
        let mut registry = self.registry();
        if registry.closed {
            return Err(codes::NOT_COORDINATOR);
        }
        let now_ms = self.now_ms();
        let Some(group) = registry.groups.get_mut(group_id) else {
            return match generation_id {
                generation if generation < 0 => Ok(()),
                _ if version >= 9 => Err(codes::GROUP_ID_NOT_FOUND),
                _ => Err(codes::ILLEGAL_GENERATION),
            };
        };
        let outcome =
            group.validate_offset_commit(member_id, group_instance_id, generation_id, now_ms);
        self.settle(&mut registry, group_id, now_ms);
        outcome
    }

    /// Checks an OffsetDelete: whether the group exists and may lose offsets, and for each
    /// of `topics` whether its consumers subscribe to it (then its offsets stay).
    pub(crate) fn offset_delete_check(
        &self,
        group_id: &str,
        topics: &[String],
    ) -> Result<Vec<bool>, i16> {
        let registry = self.registry();
        if registry.closed {
            return Err(codes::NOT_COORDINATOR);
        }
        match registry.groups.get(group_id) {
            Some(group) => {
                group.validate_offset_delete()?;
                Ok(topics
                    .iter()
                    .map(|topic| group.is_subscribed_to(topic))
                    .collect())
            }
            None if self.exists(&registry, group_id) => Ok(vec![false; topics.len()]),
            None => Err(codes::GROUP_ID_NOT_FOUND),
        }
    }

    /// Every group: those with members or known since start, and those that only have
    /// committed offsets (shown as Empty, as Kafka shows groups loaded from offsets).
    pub(crate) fn list(&self) -> Vec<Listed> {
        let registry = self.registry();
        let mut listed: BTreeMap<String, Listed> = registry
            .groups
            .values()
            .filter(|group| group.state() != GroupState::Dead)
            .map(|group| {
                (
                    group.group_id().to_owned(),
                    Listed {
                        group_id: group.group_id().to_owned(),
                        state: group.state(),
                        protocol_type: group.protocol_type().unwrap_or_default().to_owned(),
                    },
                )
            })
            .collect();
        drop(registry);
        for group_id in self.shared.broker.groups_with_committed_offsets() {
            listed.entry(group_id.clone()).or_insert(Listed {
                group_id,
                state: GroupState::Empty,
                protocol_type: String::new(),
            });
        }
        listed.into_values().collect()
    }

    /// DescribeGroups of one group; `None` if it does not exist.
    pub(crate) fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let registry = self.registry();
        if let Some(group) = registry.groups.get(group_id) {
            return Some(group.describe());
        }
        self.exists(&registry, group_id).then(|| GroupDescription {
            state: GroupState::Empty,
            protocol_type: String::new(),
            protocol_name: String::new(),
            members: Vec::new(),
        })
    }

    /// DeleteGroups of one group: refused while it has members; deletes its offsets.
    pub(crate) async fn delete(&self, group_id: &str) -> i16 {
        {
            let mut registry = self.registry();
            if registry.closed {
                return codes::NOT_COORDINATOR;
            }
            let now_ms = self.now_ms();
            let exists = self.exists(&registry, group_id);
            match registry.groups.get_mut(group_id) {
                Some(group) => match group.delete() {
                    Ok(effects) => registry.apply(effects),
                    Err(code) => return code,
                },
                None if exists => {}
                None => return codes::GROUP_ID_NOT_FOUND,
            }
            self.settle(&mut registry, group_id, now_ms);
        }
        match self.shared.broker.delete_group_offsets(group_id).await {
            Ok(()) => {
                info!(group = group_id, "group deleted");
                codes::NONE
            }
            Err(error) => {
                warn!(group = group_id, %error, "deleting a group's offsets failed");
                codes::for_offsets_error(&error)
            }
        }
    }

    /// Runs group timers and offset expiry until `shutdown` turns true, then answers every
    /// parked request with NOT_COORDINATOR (clients look the coordinator up again) so that
    /// connections can drain.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut retention = tokio::time::interval(Duration::from_millis(
            self.shared.config.offsets_retention_check_interval_ms,
        ));
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.registry().schedule.first().map(|(at, _)| *at);
            let sleep = async {
                match next {
                    Some(at) => {
                        let at = self.shared.origin + Duration::from_millis(at.max(0) as u64);
                        tokio::time::sleep_until(at).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = sleep => self.run_due_timers(),
                () = self.shared.wake.notified() => {}
                _ = retention.tick() => self.expire_offsets().await,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        self.close();
    }

    fn run_due_timers(&self) {
        let now_ms = self.now_ms();
        let mut registry = self.registry();
        let due: Vec<String> = registry
            .schedule
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, group_id)| group_id.clone())
            .collect();
        for group_id in due {
            let effects = match registry.groups.get_mut(&group_id) {
                Some(group) => group.tick(now_ms),
                None => Vec::new(),
            };
            registry.apply(effects);
            // Waking ourselves is pointless: the loop recomputes the next deadline.
            let _ = registry.settle(&group_id, now_ms);
        }
    }

    /// Deletes expired offsets of groups without members (Kafka's offsets retention), and
    /// forgets empty groups that have no offsets left.
    async fn expire_offsets(&self) {
        let wall_now_ms = self.shared.broker.now_ms();
        let retention_ms = self.shared.config.offsets_retention_ms;
        for group_id in self.shared.broker.groups_with_committed_offsets() {
            let empty = self
                .registry()
                .groups
                .get(&group_id)
                .is_none_or(|group| group.state() == GroupState::Empty);
            if !empty {
                continue;
            }
            match self
                .shared
                .broker
                .expire_committed_offsets(&group_id, wall_now_ms, retention_ms)
                .await
            {
                Ok(0) => {}
                Ok(expired) => info!(group = %group_id, expired, "expired committed offsets"),
                Err(error) => warn!(group = %group_id, %error, "expiring committed offsets failed"),
            }
        }
        let with_offsets: BTreeSet<String> = self
            .shared
            .broker
            .groups_with_committed_offsets()
            .into_iter()
            .collect();
        let mut registry = self.registry();
        let forgotten: Vec<String> = registry
            .groups
            .values()
            .filter(|group| group.is_idle() && !with_offsets.contains(group.group_id()))
            .map(|group| group.group_id().to_owned())
            .collect();
        for group_id in forgotten {
            debug!(group = %group_id, "forgetting an empty group without offsets");
            registry.groups.remove(&group_id);
            registry.logged.remove(&group_id);
            let _ = registry.settle(&group_id, self.now_ms());
        }
    }

    /// Answers every parked request with NOT_COORDINATOR and refuses new ones.
    pub(crate) fn close(&self) {
        let mut registry = self.registry();
        registry.closed = true;
        let effects: Vec<Effect> = registry
            .groups
            .values_mut()
            .flat_map(|group| group.abandon(codes::NOT_COORDINATOR))
            .collect();
        registry.apply(effects);
        // Anything left (there should be nothing) is answered by dropping its channel.
        registry.joins.clear();
        registry.syncs.clear();
    }

    /// Runs `expire_offsets` now (tests).
    #[cfg(test)]
    pub(crate) async fn expire_offsets_now(&self) {
        self.expire_offsets().await;
    }

    /// Group state (tests).
    #[cfg(test)]
    pub(crate) fn state_of(&self, group_id: &str) -> Option<GroupState> {
        self.registry().groups.get(group_id).map(Group::state)
    }
}

#[cfg(test)]
mod tests;
