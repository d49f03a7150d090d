//! Deterministic tests of the group state machine: every transition and error, with time
//! passed in. No runtime, no sleeps.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::codes;
use crate::group::machine::{
    Effect, Group, GroupState, JoinRequest, JoinResult, Protocol, Settings, SyncRequest,
    SyncResult, WaiterId,
};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn settings(initial_delay_ms: i32) -> Settings {
    Settings {
        session_timeout_ms_min: 1_000,
        session_timeout_ms_max: 60_000,
        initial_rebalance_delay_ms: initial_delay_ms,
        group_size_max: 4,
        member_protocols_max: 3,
        new_member_join_timeout_ms: 300_000,
    }
}

fn subscription(topics: &[&str]) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|topic| StrBytes::from_string((*topic).to_owned()))
            .collect(),
    );
    let mut out = BytesMut::new();
    out.put_i16(1);
    subscription.encode(&mut out, 1).unwrap();
    out.freeze()
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|name| Protocol {
            name: (*name).to_owned(),
            metadata: subscription(&["orders"]),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Join(JoinResult),
    Sync(SyncResult),
}

/// A group plus a clock, the answers it gave, and a check that no request is answered
/// twice.
struct Harness {
    group: Group,
    now_ms: i64,
    next_id: u64,
    answers: BTreeMap<WaiterId, Answer>,
}

impl Harness {
    fn new(initial_delay_ms: i32) -> Harness {
        Harness {
            group: Group::new("g", settings(initial_delay_ms)),
            now_ms: 1_000,
            next_id: 0,
            answers: BTreeMap::new(),
        }
    }

    fn record(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            let (waiter, answer) = match effect {
                Effect::Join(waiter, result) => (waiter, Answer::Join(result)),
                Effect::Sync(waiter, result) => (waiter, Answer::Sync(result)),
            };
            assert!(
                self.answers.insert(waiter, answer).is_none(),
                "{waiter:?} answered twice"
            );
        }
    }

    fn waiter(&mut self) -> WaiterId {
        self.next_id += 1;
        WaiterId(self.next_id)
    }

    fn join_request(&mut self, member_id: &str, names: &[&str]) -> JoinRequest {
        let waiter = self.waiter();
        JoinRequest {
            member_id: member_id.to_owned(),
            group_instance_id: None,
            client_id: "client".to_owned(),
            client_host: "/127.0.0.1".to_owned(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".to_owned(),
            protocols: protocols(names),
            require_known_member_id: true,
            fresh_member_id: format!("member-{}", self.next_id),
            waiter,
        }
    }

    fn send_join(&mut self, request: JoinRequest) -> WaiterId {
        let waiter = request.waiter;
        let effects = self.group.join(request, self.now_ms);
        self.record(effects);
        waiter
    }

    fn join(&mut self, member_id: &str) -> WaiterId {
        let request = self.join_request(member_id, &["range"]);
        self.send_join(request)
    }

    /// The KIP-394 round trip: a first join gets an id, the second join uses it.
    fn new_member(&mut self) -> (String, WaiterId) {
        let first = self.join("");
        let result = self.join_answer(first).expect("first join answered");
        assert_eq!(result.error_code, codes::MEMBER_ID_REQUIRED);
        assert!(!result.member_id.is_empty());
        let waiter = self.join(&result.member_id);
        (result.member_id, waiter)
    }

    fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: &[(&str, &[u8])],
    ) -> WaiterId {
        let waiter = self.waiter();
        let request = SyncRequest {
            member_id: member_id.to_owned(),
            group_instance_id: None,
            generation_id,
            protocol_type: None,
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(member, bytes)| ((*member).to_owned(), Bytes::copy_from_slice(bytes)))
                .collect(),
            waiter,
        };
        let effects = self.group.sync(request, self.now_ms);
        self.record(effects);
        waiter
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> i16 {
        self.group
            .heartbeat(member_id, None, generation_id, self.now_ms)
    }

    fn leave(&mut self, leaving: &[(&str, Option<&str>)]) -> Vec<i16> {
        let leaving: Vec<(String, Option<String>)> = leaving
            .iter()
            .map(|(member, instance)| ((*member).to_owned(), instance.map(str::to_owned)))
            .collect();
        let (codes_out, effects) = self.group.leave(&leaving, self.now_ms);
        self.record(effects);
        codes_out
    }

    /// Moves the clock to `at_ms` (absolute) and runs whatever is due.
    fn advance_to(&mut self, at_ms: i64) {
        assert!(at_ms >= self.now_ms);
        self.now_ms = at_ms;
        let effects = self.group.tick(self.now_ms);
        self.record(effects);
    }

    fn advance(&mut self, by_ms: i64) {
        self.advance_to(self.now_ms + by_ms);
    }

    fn join_answer(&self, waiter: WaiterId) -> Option<JoinResult> {
        match self.answers.get(&waiter) {
            Some(Answer::Join(result)) => Some(result.clone()),
            Some(Answer::Sync(_)) => panic!("{waiter:?} is a SyncGroup"),
            None => None,
        }
    }

    fn sync_answer(&self, waiter: WaiterId) -> Option<SyncResult> {
        match self.answers.get(&waiter) {
            Some(Answer::Sync(result)) => Some(result.clone()),
            Some(Answer::Join(_)) => panic!("{waiter:?} is a JoinGroup"),
            None => None,
        }
    }

    /// Two members through a whole rebalance to Stable, at generation 1; returns
    /// (leader, follower).
    fn stable_pair(&mut self) -> (String, String) {
        let (first, first_join) = self.new_member();
        let (second, second_join) = self.new_member();
        self.advance(0);
        let a = self.join_answer(first_join).expect("first joined");
        let b = self.join_answer(second_join).expect("second joined");
        assert_eq!(a.generation_id, 1);
        let (leader, follower) = if a.leader_id == first {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(b.leader_id, leader);
        let leader_sync = self.sync(&leader, 1, &[(&leader, b"L"), (&follower, b"F")]);
        let follower_sync = self.sync(&follower, 1, &[]);
        assert_eq!(self.sync_answer(leader_sync).unwrap().assignment, &b"L"[..]);
        assert_eq!(
            self.sync_answer(follower_sync).unwrap().assignment,
            &b"F"[..]
        );
        assert_eq!(self.group.state(), GroupState::Stable);
        (leader, follower)
    }
}

#[test]
fn first_join_requires_a_member_id_then_the_initial_delay_gathers_members() {
    let mut h = Harness::new(3_000);
    let (first, first_join) = h.new_member();
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        h.join_answer(first_join),
        None,
        "parked until the delay ends"
    );
    // A second member arrives during the delay: the delay is extended once more.
    h.advance(1_000);
    let (second, second_join) = h.new_member();
    h.advance_to(1_000 + 2_999);
    assert_eq!(h.join_answer(first_join), None);
    h.advance_to(1_000 + 3_000);
    assert_eq!(
        h.join_answer(first_join),
        None,
        "extended: a member arrived"
    );
    h.advance_to(1_000 + 6_000);
    let a = h
        .join_answer(first_join)
        .expect("answered after the extension");
    let b = h.join_answer(second_join).expect("answered together");
    assert_eq!((a.error_code, b.error_code), (codes::NONE, codes::NONE));
    assert_eq!(a.generation_id, 1);
    assert_eq!(a.leader_id, first, "the first member leads");
    assert_eq!(a.protocol_name.as_deref(), Some("range"));
    assert_eq!(a.protocol_type.as_deref(), Some("consumer"));
    let mut ids: Vec<&str> = a.members.iter().map(|m| m.member_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![first.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "the leader sees every member");
    assert!(b.members.is_empty(), "followers see none");
    assert_eq!(h.group.state(), GroupState::CompletingRebalance);
}

#[test]
fn the_initial_delay_is_bounded_by_the_rebalance_timeout() {
    let mut h = Harness::new(20_000);
    let (_, join) = h.new_member();
    // Members keep arriving before each delay ends.
    for _ in 0..5 {
        h.advance(19_000);
        if h.join_answer(join).is_some() {
            break;
        }
        h.new_member();
    }
    h.advance(60_000);
    assert!(
        h.join_answer(join).is_some(),
        "the delay cannot go on forever"
    );
}

#[test]
fn without_kip_394_a_first_join_is_a_member_at_once() {
    let mut h = Harness::new(0);
    let mut request = h.join_request("", &["range"]);
    request.require_known_member_id = false;
    let waiter = h.send_join(request);
    h.advance(0);
    let result = h.join_answer(waiter).unwrap();
    assert_eq!(result.error_code, codes::NONE);
    assert_eq!(result.leader_id, result.member_id);
}

#[test]
fn sync_hands_out_the_leaders_assignment_and_followers_wait_for_it() {
    let mut h = Harness::new(0);
    let (a, a_join) = h.new_member();
    let (b, b_join) = h.new_member();
    h.advance(0);
    let leader = h.join_answer(a_join).unwrap().leader_id;
    assert_eq!(h.join_answer(b_join).unwrap().leader_id, leader);
    let follower = if leader == a { b } else { a };
    let follower_sync = h.sync(&follower, 1, &[]);
    assert_eq!(h.sync_answer(follower_sync), None, "waits for the leader");
    // The leader's assignment names a non-member and leaves nothing for itself.
    let leader_sync = h.sync(&leader, 1, &[(&follower, b"f"), ("ghost", b"x")]);
    let follower_result = h.sync_answer(follower_sync).unwrap();
    assert_eq!(follower_result.error_code, codes::NONE);
    assert_eq!(follower_result.assignment, &b"f"[..]);
    assert_eq!(follower_result.protocol_name.as_deref(), Some("range"));
    assert!(h.sync_answer(leader_sync).unwrap().assignment.is_empty());
    assert_eq!(h.group.state(), GroupState::Stable);
    // A SyncGroup in a Stable group repeats the member's assignment.
    let again = h.sync(&follower, 1, &[]);
    assert_eq!(h.sync_answer(again).unwrap().assignment, &b"f"[..]);
}

#[test]
fn heartbeats_report_errors_and_rebalances() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    assert_eq!(h.heartbeat(&follower, 1), codes::NONE);
    assert_eq!(h.heartbeat(&follower, 0), codes::ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat("stranger", 1), codes::UNKNOWN_MEMBER_ID);
    // A third member joins: the others learn of the rebalance from their heartbeats.
    let (third, third_join) = h.new_member();
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&follower, 1), codes::REBALANCE_IN_PROGRESS);
    let leader_join = h.join(&leader);
    assert_eq!(
        h.join_answer(third_join),
        None,
        "the follower has not rejoined"
    );
    let follower_join = h.join(&follower);
    // Everyone is back: completes at once (no initial delay outside an empty group).
    for waiter in [third_join, leader_join, follower_join] {
        let result = h.join_answer(waiter).expect("answered");
        assert_eq!(result.generation_id, 2);
        assert_eq!(
            result.leader_id, leader,
            "the leader rejoined and keeps its role"
        );
    }
    assert_eq!(h.join_answer(leader_join).unwrap().members.len(), 3);
    assert_eq!(
        h.heartbeat(&third, 2),
        codes::NONE,
        "allowed before SyncGroup"
    );
    // Sync from a member of the old generation.
    let stale = h.sync(&follower, 1, &[]);
    assert_eq!(
        h.sync_answer(stale).unwrap().error_code,
        codes::ILLEGAL_GENERATION
    );
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    // The follower keeps its session alive but never rejoins.
    let start = h.now_ms;
    let leader_join = h.join(&leader);
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
    for at in [9_000, 18_000, 27_000] {
        h.advance_to(start + at);
        assert_eq!(h.heartbeat(&follower, 1), codes::REBALANCE_IN_PROGRESS);
    }
    h.advance_to(start + i64::from(REBALANCE_MS) - 1);
    assert_eq!(h.join_answer(leader_join), None);
    h.advance_to(start + i64::from(REBALANCE_MS));
    let result = h
        .join_answer(leader_join)
        .expect("completed at the rebalance timeout");
    assert_eq!(result.generation_id, 2);
    assert_eq!(result.members.len(), 1);
    assert_eq!(h.heartbeat(&follower, 2), codes::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_silent_member_expires_and_the_group_rebalances() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let synced_at = h.now_ms;
    // Only the leader heartbeats.
    for step in 1..=3 {
        h.advance_to(synced_at + step * 4_000);
        let code = h.heartbeat(&leader, 1);
        if step < 3 {
            assert_eq!(code, codes::NONE);
        } else {
            assert_eq!(
                code,
                codes::REBALANCE_IN_PROGRESS,
                "follower expired at 10 s"
            );
        }
    }
    assert_eq!(h.heartbeat(&follower, 1), codes::UNKNOWN_MEMBER_ID);
    let rejoin = h.join(&leader);
    let result = h.join_answer(rejoin).expect("alone: completes at once");
    assert_eq!((result.generation_id, result.members.len()), (2, 1));
}

#[test]
fn a_member_awaiting_its_join_is_not_expired_but_a_new_one_times_out() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let leader_join = h.join(&leader);
    // Both sessions run out while the leader waits in JoinGroup: only the silent
    // follower expires, which completes the join phase with the leader alone.
    h.advance(i64::from(SESSION_MS) + 1);
    assert_eq!(
        h.heartbeat(&follower, 1),
        codes::UNKNOWN_MEMBER_ID,
        "silent follower expired"
    );
    let result = h.join_answer(leader_join).expect("join completed");
    assert_eq!(result.error_code, codes::NONE);
    assert_eq!(result.members.len(), 1);
    assert_eq!(result.member_id, leader);

    // A new member whose JoinGroup stays parked (here: a 10-minute rebalance while the
    // others never rejoin) is dropped after the 5-minute new-member timeout.
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let probe = h.join("");
    let newcomer = h.join_answer(probe).unwrap().member_id;
    let mut request = h.join_request(&newcomer, &["range"]);
    request.rebalance_timeout_ms = 600_000;
    let newcomer_join = h.send_join(request);
    let joined_at = h.now_ms;
    while h.now_ms + 8_000 < joined_at + 300_000 {
        h.advance(8_000);
        h.heartbeat(&leader, 1);
        h.heartbeat(&follower, 1);
    }
    assert_eq!(h.join_answer(newcomer_join), None);
    h.advance_to(joined_at + 300_000);
    assert_eq!(
        h.join_answer(newcomer_join).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn leaving_triggers_a_rebalance_and_the_last_one_out_empties_the_group() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    assert_eq!(
        h.leave(&[("stranger", None)]),
        vec![codes::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(h.group.state(), GroupState::Stable, "nothing changed");
    assert_eq!(h.leave(&[(&leader, None)]), vec![codes::NONE]);
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
    let rejoin = h.join(&follower);
    let result = h.join_answer(rejoin).unwrap();
    assert_eq!(result.leader_id, follower, "leadership moved");
    assert_eq!(result.generation_id, 2);
    let sync = h.sync(&follower, 2, &[(&follower, b"all")]);
    assert_eq!(h.sync_answer(sync).unwrap().assignment, &b"all"[..]);
    assert_eq!(h.leave(&[(&follower, None)]), vec![codes::NONE]);
    assert_eq!(h.group.state(), GroupState::Empty);
    assert_eq!(h.group.generation_id(), 3);
    assert!(h.group.is_idle());
    assert_eq!(h.group.next_deadline(), None);
}

#[test]
fn a_leave_answers_the_leavers_parked_join() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    // New metadata makes the follower's join start a rebalance, parked for the leader.
    let changed = h.join_request(&follower, &["range", "roundrobin"]);
    let follower_join = h.send_join(changed);
    assert_eq!(h.join_answer(follower_join), None);
    assert_eq!(h.leave(&[(&follower, None)]), vec![codes::NONE]);
    assert_eq!(
        h.join_answer(follower_join).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
    let rejoin = h.join(&leader);
    assert_eq!(h.join_answer(rejoin).unwrap().members.len(), 1);
}

#[test]
fn protocol_is_one_all_support_chosen_by_votes() {
    let mut h = Harness::new(0);
    let first = h.join_request("", &["range", "roundrobin"]);
    let id = h.send_join(first);
    let first_id = h.join_answer(id).unwrap().member_id;
    let mut request = h.join_request(&first_id, &["range", "roundrobin"]);
    request.fresh_member_id = String::new();
    let first_join = h.send_join(request);
    for names in [
        &["roundrobin", "range"][..],
        &["roundrobin", "sticky", "range"][..],
    ] {
        let probe = h.join_request("", names);
        let w = h.send_join(probe);
        let member_id = h.join_answer(w).unwrap().member_id;
        let again = h.join_request(&member_id, names);
        h.send_join(again);
    }
    h.advance(0);
    let result = h.join_answer(first_join).unwrap();
    assert_eq!(
        result.protocol_name.as_deref(),
        Some("roundrobin"),
        "2 votes to 1"
    );

    // A member sharing no protocol with the group, or with another type, is refused.
    let stranger = h.join_request("", &["sticky"]);
    let w = h.send_join(stranger);
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    let mut connect = h.join_request("", &["range"]);
    connect.protocol_type = "connect".to_owned();
    let w = h.send_join(connect);
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn bad_joins_get_kafka_errors() {
    let mut h = Harness::new(0);
    // No protocols, or an empty protocol type, even for the first member.
    let empty = h.join_request("", &[]);
    let w = h.send_join(empty);
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    // More protocols than groups.member_protocols_max (3 here).
    let many = h.join_request("", &["a", "b", "c", "d"]);
    let w = h.send_join(many);
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    let mut untyped = h.join_request("", &["range"]);
    untyped.protocol_type = String::new();
    let w = h.send_join(untyped);
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    // Session timeouts outside the allowed range.
    for timeout in [999, 60_001, -1] {
        let mut request = h.join_request("", &["range"]);
        request.session_timeout_ms = timeout;
        let w = h.send_join(request);
        assert_eq!(
            h.join_answer(w).unwrap().error_code,
            codes::INVALID_SESSION_TIMEOUT
        );
    }
    // A member id the group never handed out.
    let w = h.join("made-up");
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
    assert!(h.group.is_idle(), "nothing was added");
}

#[test]
fn the_group_size_is_capped() {
    let mut h = Harness::new(0);
    let mut joins = Vec::new();
    for _ in 0..4 {
        joins.push(h.new_member().1);
    }
    h.advance(0);
    assert!(
        joins
            .iter()
            .all(|w| h.join_answer(*w).unwrap().error_code == codes::NONE)
    );
    let w = h.join("");
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::GROUP_MAX_SIZE_REACHED
    );
    // Ids handed out with MEMBER_ID_REQUIRED are capped as well.
    let mut h = Harness::new(0);
    for _ in 0..4 {
        let w = h.join("");
        assert_eq!(
            h.join_answer(w).unwrap().error_code,
            codes::MEMBER_ID_REQUIRED
        );
    }
    let w = h.join("");
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::GROUP_MAX_SIZE_REACHED
    );
}

#[test]
fn an_unused_member_id_expires_and_stops_blocking_the_rebalance() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let started = h.now_ms;
    // Someone asks for an id (the group waits for it too) and never comes back.
    let probe = h.join("");
    assert_eq!(
        h.join_answer(probe).unwrap().error_code,
        codes::MEMBER_ID_REQUIRED
    );
    let leader_join = h.join(&leader);
    let follower_join = h.join(&follower);
    h.advance_to(started + i64::from(SESSION_MS) - 1);
    assert_eq!(
        h.join_answer(leader_join),
        None,
        "waiting for the handed-out id"
    );
    // After its session timeout the id is forgotten and the rebalance completes.
    h.advance_to(started + i64::from(SESSION_MS));
    assert_eq!(h.join_answer(leader_join).unwrap().members.len(), 2);
    assert!(h.join_answer(follower_join).is_some());
}

#[test]
fn a_second_join_of_an_unchanged_member_repeats_the_answer() {
    let mut h = Harness::new(0);
    let (a, a_join) = h.new_member();
    let (_, b_join) = h.new_member();
    h.advance(0);
    let first = h.join_answer(a_join).unwrap();
    let _ = h.join_answer(b_join).unwrap();
    // The leader lost its answer and asks again with the same metadata.
    let again = h.join(&a);
    let repeated = h.join_answer(again).unwrap();
    assert_eq!(repeated.generation_id, first.generation_id);
    assert_eq!(repeated.members.len(), first.members.len());
    assert_eq!(h.group.state(), GroupState::CompletingRebalance);
    // Changed metadata instead forces a new rebalance.
    let changed = h.join_request(&a, &["range", "roundrobin"]);
    h.send_join(changed);
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_leader_rejoining_a_stable_group_rebalances_a_follower_does_not() {
    let mut h = Harness::new(0);
    let (leader, follower) = h.stable_pair();
    let w = h.join(&follower);
    let result = h.join_answer(w).unwrap();
    assert_eq!((result.error_code, result.generation_id), (codes::NONE, 1));
    assert!(result.members.is_empty());
    assert_eq!(h.group.state(), GroupState::Stable);
    h.join(&leader);
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
}

#[test]
fn members_that_never_sync_are_dropped() {
    let mut h = Harness::new(0);
    let (a, a_join) = h.new_member();
    let (b, b_join) = h.new_member();
    h.advance(0);
    let leader = h.join_answer(a_join).unwrap().leader_id;
    let _ = h.join_answer(b_join);
    let follower = if leader == a { b } else { a };
    let joined_at = h.now_ms;
    h.sync(&leader, 1, &[(&leader, b"x"), (&follower, b"y")]);
    assert_eq!(h.group.state(), GroupState::Stable);
    // The follower heartbeats but never sends SyncGroup.
    for step in 1..=3 {
        h.advance_to(joined_at + step * 9_000);
        h.heartbeat(&follower, 1);
        h.heartbeat(&leader, 1);
    }
    h.advance_to(joined_at + i64::from(REBALANCE_MS));
    assert_eq!(h.heartbeat(&follower, 1), codes::UNKNOWN_MEMBER_ID);
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
}

#[test]
fn sync_checks_protocol_names_and_states() {
    let mut h = Harness::new(0);
    let (leader, _) = h.stable_pair();
    let waiter = h.waiter();
    let request = SyncRequest {
        member_id: leader.clone(),
        group_instance_id: None,
        generation_id: 1,
        protocol_type: Some("consumer".to_owned()),
        protocol_name: Some("roundrobin".to_owned()),
        assignments: Vec::new(),
        waiter,
    };
    let effects = h.group.sync(request, h.now_ms);
    h.record(effects);
    assert_eq!(
        h.sync_answer(waiter).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    h.join(&leader);
    let during = h.sync(&leader, 1, &[]);
    assert_eq!(
        h.sync_answer(during).unwrap().error_code,
        codes::REBALANCE_IN_PROGRESS
    );
    let stranger = h.sync("stranger", 1, &[]);
    assert_eq!(
        h.sync_answer(stranger).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn a_rebalance_during_completing_tells_syncing_members_to_rejoin() {
    let mut h = Harness::new(0);
    let (a, a_join) = h.new_member();
    let (b, b_join) = h.new_member();
    h.advance(0);
    let leader = h.join_answer(a_join).unwrap().leader_id;
    let _ = h.join_answer(b_join);
    let follower = if leader == a { b } else { a };
    let parked = h.sync(&follower, 1, &[]);
    h.new_member();
    assert_eq!(
        h.sync_answer(parked).unwrap().error_code,
        codes::REBALANCE_IN_PROGRESS
    );
}

#[test]
fn static_members_skip_kip_394_and_a_restarted_instance_fences_the_old_one() {
    let mut h = Harness::new(0);
    let static_join = |h: &mut Harness, instance: &str| {
        let mut request = h.join_request("", &["range"]);
        request.group_instance_id = Some(instance.to_owned());
        h.send_join(request)
    };
    let a_join = static_join(&mut h, "host-a");
    let b_join = static_join(&mut h, "host-b");
    h.advance(0);
    let a = h.join_answer(a_join).unwrap();
    let b = h.join_answer(b_join).unwrap();
    assert_eq!((a.error_code, b.error_code), (codes::NONE, codes::NONE));
    assert_eq!(
        a.members
            .iter()
            .filter_map(|m| m.group_instance_id.clone())
            .count()
            + b.members.len(),
        2,
        "the leader sees instance ids"
    );
    let leader = a.leader_id.clone();
    let (leader_instance, follower_instance, follower) = if leader == a.member_id {
        ("host-a", "host-b", b.member_id.clone())
    } else {
        ("host-b", "host-a", a.member_id.clone())
    };
    h.sync(&leader, 1, &[(&leader, b"L"), (&follower, b"F")]);
    h.sync(&follower, 1, &[]);
    assert_eq!(h.group.state(), GroupState::Stable);

    // The follower's process restarts: same instance id, no member id.
    let restarted = static_join(&mut h, follower_instance);
    let result = h.join_answer(restarted).expect("answered at once");
    assert_eq!(result.error_code, codes::NONE);
    assert_eq!(result.generation_id, 1, "no rebalance");
    assert_eq!(result.leader_id, leader);
    assert_ne!(result.member_id, follower);
    assert_eq!(h.group.state(), GroupState::Stable);
    let sync = h.sync(&result.member_id, 1, &[]);
    assert_eq!(
        h.sync_answer(sync).unwrap().assignment,
        &b"F"[..],
        "keeps its assignment"
    );
    // The old incarnation is fenced.
    assert_eq!(
        h.group
            .heartbeat(&follower, Some(follower_instance), 1, h.now_ms),
        codes::FENCED_INSTANCE_ID
    );
    assert_eq!(
        h.group
            .heartbeat(&result.member_id, Some(follower_instance), 1, h.now_ms),
        codes::NONE
    );
    assert_eq!(
        h.group
            .heartbeat(&leader, Some(leader_instance), 1, h.now_ms),
        codes::NONE
    );
    assert_eq!(
        h.group.heartbeat("x", Some("host-unknown"), 1, h.now_ms),
        codes::UNKNOWN_MEMBER_ID
    );
    // Administrative removal by instance id only (LeaveGroup v3+).
    assert_eq!(h.leave(&[("", Some(follower_instance))]), vec![codes::NONE]);
    assert_eq!(
        h.leave(&[("", Some(follower_instance))]),
        vec![codes::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(h.group.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_fenced_static_member_parked_in_join_is_told_so() {
    let mut h = Harness::new(0);
    let mut request = h.join_request("", &["range"]);
    request.group_instance_id = Some("host".to_owned());
    let static_join = h.send_join(request);
    let (dynamic, dynamic_join) = h.new_member();
    h.advance(0);
    let old = h.join_answer(static_join).unwrap().member_id;
    let leader = h.join_answer(dynamic_join).unwrap().leader_id;
    h.sync(&leader, 1, &[]);
    // A newcomer starts a rebalance; the static member rejoins and waits for the other.
    h.new_member();
    let mut rejoin = h.join_request(&old, &["range"]);
    rejoin.group_instance_id = Some("host".to_owned());
    let parked = h.send_join(rejoin);
    assert_eq!(h.join_answer(parked), None);
    // A newer incarnation of the same instance takes over: the parked one is fenced.
    let mut newer = h.join_request("", &["range"]);
    newer.group_instance_id = Some("host".to_owned());
    let newer_join = h.send_join(newer);
    assert_eq!(
        h.join_answer(parked).unwrap().error_code,
        codes::FENCED_INSTANCE_ID
    );
    let mut stale = h.join_request(&old, &["range"]);
    stale.group_instance_id = Some("host".to_owned());
    let w = h.send_join(stale);
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::FENCED_INSTANCE_ID
    );
    // The others rejoin: the newer incarnation is in the next generation.
    h.join(&dynamic);
    let result = h.join_answer(newer_join).expect("join completed");
    assert_eq!((result.error_code, result.generation_id), (codes::NONE, 2));
}

#[test]
fn offset_commits_are_checked_against_members_and_generations() {
    let mut h = Harness::new(0);
    // Standalone commits (assign() consumers) while the group has no members.
    assert_eq!(
        h.group.validate_offset_commit("", None, -1, h.now_ms),
        Ok(())
    );
    let (leader, follower) = h.stable_pair();
    assert_eq!(
        h.group.validate_offset_commit(&leader, None, 1, h.now_ms),
        Ok(())
    );
    assert_eq!(
        h.group.validate_offset_commit("", None, -1, h.now_ms),
        Err(codes::UNKNOWN_MEMBER_ID),
        "not while the group has members"
    );
    assert_eq!(
        h.group
            .validate_offset_commit("stranger", None, 1, h.now_ms),
        Err(codes::UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        h.group.validate_offset_commit(&leader, None, 7, h.now_ms),
        Err(codes::ILLEGAL_GENERATION)
    );
    // During PreparingRebalance the old generation may still commit.
    let (newcomer, _) = h.new_member();
    assert_eq!(
        h.group.validate_offset_commit(&follower, None, 1, h.now_ms),
        Ok(())
    );
    h.join(&leader);
    h.join(&follower);
    assert_eq!(h.group.state(), GroupState::CompletingRebalance);
    assert_eq!(
        h.group.validate_offset_commit(&newcomer, None, 2, h.now_ms),
        Err(codes::REBALANCE_IN_PROGRESS)
    );
}

#[test]
fn offset_delete_respects_subscriptions_and_deletion_needs_an_empty_group() {
    let mut h = Harness::new(0);
    assert!(
        !h.group.is_subscribed_to("orders"),
        "an empty group subscribes to nothing"
    );
    let (leader, follower) = h.stable_pair();
    assert_eq!(h.group.validate_offset_delete(), Ok(()));
    assert!(h.group.is_subscribed_to("orders"));
    assert!(!h.group.is_subscribed_to("payments"));
    assert_eq!(h.group.delete(), Err(codes::NON_EMPTY_GROUP));
    h.leave(&[(&leader, None), (&follower, None)]);
    assert_eq!(h.group.state(), GroupState::Empty);
    assert_eq!(h.group.delete(), Ok(Vec::new()));
    assert_eq!(h.group.state(), GroupState::Dead);
    let w = h.join("");
    assert_eq!(
        h.join_answer(w).unwrap().error_code,
        codes::COORDINATOR_NOT_AVAILABLE
    );
    assert_eq!(h.group.delete(), Err(codes::GROUP_ID_NOT_FOUND));
}

#[test]
fn describe_shows_metadata_and_assignments_only_when_stable() {
    let mut h = Harness::new(0);
    let (a, _) = h.new_member();
    let described = h.group.describe();
    assert_eq!(described.state, GroupState::PreparingRebalance);
    assert_eq!(described.members.len(), 1);
    assert!(described.members[0].metadata.is_empty());
    h.advance(0);
    h.sync(&a, 1, &[(&a, b"mine")]);
    let described = h.group.describe();
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(
        (
            described.protocol_type.as_str(),
            described.protocol_name.as_str()
        ),
        ("consumer", "range")
    );
    assert_eq!(described.members[0].assignment, &b"mine"[..]);
    assert_eq!(described.members[0].client_host, "/127.0.0.1");
    assert!(!described.members[0].metadata.is_empty());
}

#[test]
fn abandoning_answers_every_parked_request() {
    let mut h = Harness::new(3_000);
    let (_, join) = h.new_member();
    let effects = h.group.abandon(codes::NOT_COORDINATOR);
    h.record(effects);
    assert_eq!(
        h.join_answer(join).unwrap().error_code,
        codes::NOT_COORDINATOR
    );
}

/// A long pseudo-random run of joins, syncs, heartbeats, leaves and clock jumps: the
/// machine's own invariants (checked inside every call in debug builds) hold, no request
/// is answered twice, a tick never leaves work due, and once everyone has gone quiet long
/// enough every parked request has been answered.
#[test]
fn random_runs_keep_the_invariants_and_answer_everything() {
    let mut generations_completed = 0;
    let mut stable_seen = 0;
    for seed in 1..=40u64 {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let mut h = Harness::new(if seed % 2 == 0 { 0 } else { 500 });
        let mut known: Vec<String> = Vec::new();
        let mut asked: Vec<WaiterId> = Vec::new();
        for _ in 0..300 {
            match next(8) {
                0 | 1 => {
                    let member = if known.is_empty() || next(3) == 0 {
                        String::new()
                    } else {
                        known[next(known.len() as u64) as usize].clone()
                    };
                    let names: &[&str] = if next(10) == 0 {
                        &["sticky"]
                    } else {
                        &["range", "roundrobin"]
                    };
                    let mut request = h.join_request(&member, names);
                    if next(5) == 0 {
                        request.group_instance_id = Some(format!("i{}", next(3)));
                    }
                    let waiter = h.send_join(request);
                    asked.push(waiter);
                    if let Some(answer) = h.join_answer(waiter)
                        && !answer.member_id.is_empty()
                        && !known.contains(&answer.member_id)
                    {
                        known.push(answer.member_id);
                    }
                }
                2 if !known.is_empty() => {
                    let member = known[next(known.len() as u64) as usize].clone();
                    let generation = h.group.generation_id() - next(2) as i32;
                    let assignments = [(member.as_str(), &b"a"[..])];
                    asked.push(h.sync(&member, generation, &assignments));
                }
                3 | 4 if !known.is_empty() => {
                    let member = known[next(known.len() as u64) as usize].clone();
                    h.heartbeat(&member, h.group.generation_id());
                }
                5 if !known.is_empty() => {
                    let member = known[next(known.len() as u64) as usize].clone();
                    h.leave(&[(&member, None)]);
                }
                _ => {
                    let by = [0, 1, 100, 2_000, 11_000][next(5) as usize];
                    h.advance(by);
                }
            }
            if let Some(at) = h.group.next_deadline()
                && at <= h.now_ms
            {
                h.advance(0);
            }
            if h.group.state() == GroupState::Stable {
                stable_seen += 1;
            }
        }
        generations_completed += h
            .answers
            .values()
            .filter(|answer| matches!(answer, Answer::Join(join) if join.error_code == codes::NONE))
            .count();
        // Quiet for longer than any timeout: everything parked must be answered.
        for _ in 0..8 {
            h.advance(400_000);
        }
        for waiter in asked {
            assert!(
                h.answers.contains_key(&waiter),
                "seed {seed}: {waiter:?} never answered"
            );
        }
        assert!(
            h.group.next_deadline().is_none(),
            "seed {seed}: timers left on a quiet group"
        );
    }
    // The runs really went through rebalances, not only through refusals.
    assert!(
        generations_completed > 200,
        "{generations_completed} successful joins"
    );
    assert!(stable_seen > 100, "Stable seen {stable_seen} times");
}
