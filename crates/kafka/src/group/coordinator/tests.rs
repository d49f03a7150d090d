//! The coordinator against a real broker: parked joins, timers, offsets and limits.

use std::collections::BTreeMap;

use shardline_broker::{BrokerConfig, CommittedOffset};

use super::*;
use crate::group::machine::Protocol;

async fn coordinator(dir: &std::path::Path, config: GroupConfig) -> (Coordinator, Broker) {
    let broker = Broker::open(BrokerConfig::with_data_dir(dir.to_path_buf()))
        .await
        .unwrap();
    (Coordinator::new(broker.clone(), config), broker)
}

fn fast() -> GroupConfig {
    GroupConfig {
        session_timeout_ms_min: 10,
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

fn join_request(member_id: &str, session_timeout_ms: i32) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_owned(),
        group_instance_id: None,
        client_id: "test".to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        session_timeout_ms,
        rebalance_timeout_ms: 500,
        protocol_type: "consumer".to_owned(),
        protocols: vec![Protocol {
            name: "range".to_owned(),
            metadata: bytes::Bytes::new(),
        }],
        require_known_member_id: true,
        fresh_member_id: String::new(),
        waiter: WaiterId(0),
    }
}

async fn join_fully(coordinator: &Coordinator, session_timeout_ms: i32) -> JoinResult {
    join_group_fully(coordinator, "g", session_timeout_ms).await
}

async fn join_group_fully(
    coordinator: &Coordinator,
    group_id: &str,
    session_timeout_ms: i32,
) -> JoinResult {
    let first = coordinator
        .join(group_id, join_request("", session_timeout_ms))
        .await;
    assert_eq!(first.error_code, codes::MEMBER_ID_REQUIRED);
    assert!(first.member_id.starts_with("test-"), "{}", first.member_id);
    coordinator
        .join(group_id, join_request(&first.member_id, session_timeout_ms))
        .await
}

#[tokio::test]
async fn new_groups_past_groups_max_take_the_place_of_empty_ones_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        groups_max: 2,
        ..fast()
    };
    let (coordinator, broker) = coordinator(dir.path(), config).await;
    let first = join_group_fully(&coordinator, "g1", 60_000).await;
    assert_eq!(first.error_code, codes::NONE);
    assert_eq!(
        join_group_fully(&coordinator, "g2", 60_000)
            .await
            .error_code,
        codes::NONE
    );
    // Both kept groups have members: a third is refused, and not kept.
    let refused = coordinator.join("g3", join_request("", 60_000)).await;
    assert_eq!(refused.error_code, codes::COORDINATOR_NOT_AVAILABLE);
    assert_eq!(coordinator.state_of("g3"), None);
    // Once g1 is empty, a new group takes its place.
    let (code, _) = coordinator.leave("g1", &[(first.member_id.clone(), None)]);
    assert_eq!(code, codes::NONE);
    assert_eq!(coordinator.state_of("g1"), Some(GroupState::Empty));
    assert_eq!(
        join_group_fully(&coordinator, "g3", 60_000)
            .await
            .error_code,
        codes::NONE
    );
    assert_eq!(coordinator.state_of("g1"), None);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_group_half_way_through_its_first_join_is_not_forgotten_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        groups_max: 1,
        ..fast()
    };
    let (coordinator, broker) = coordinator(dir.path(), config).await;
    // KIP-394: the first join only hands out a member id; the group is Empty.
    let first = coordinator.join("g1", join_request("", 60_000)).await;
    assert_eq!(first.error_code, codes::MEMBER_ID_REQUIRED);
    let other = coordinator.join("g2", join_request("", 60_000)).await;
    assert_eq!(other.error_code, codes::COORDINATOR_NOT_AVAILABLE);
    // The member comes back with its id and joins.
    let joined = coordinator
        .join("g1", join_request(&first.member_id, 60_000))
        .await;
    assert_eq!(joined.error_code, codes::NONE);
    broker.shutdown().await;
}

#[tokio::test]
async fn parked_joins_are_answered_through_the_driver_and_a_silent_member_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, broker) = coordinator(dir.path(), fast()).await;
    let (stop, stopped) = watch::channel(false);
    let timers = tokio::spawn(coordinator.clone().run(stopped));
    let result = join_fully(&coordinator, 60_000).await;
    assert_eq!((result.error_code, result.generation_id), (codes::NONE, 1));
    let sync = coordinator
        .sync(
            "g",
            SyncRequest {
                member_id: result.member_id.clone(),
                group_instance_id: None,
                generation_id: 1,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![(result.member_id.clone(), bytes::Bytes::from_static(b"a"))],
                waiter: WaiterId(0),
            },
        )
        .await;
    assert_eq!(sync.assignment, &b"a"[..]);
    assert_eq!(coordinator.state_of("g"), Some(GroupState::Stable));
    // A second member with a short session joins and then goes silent: the timer
    // task expires it; meanwhile the first member's rejoin is parked, then answered.
    let second = join_fully_in_background(&coordinator, 50);
    let mut rejoined = None;
    for _ in 0..100 {
        if coordinator.heartbeat("g", &result.member_id, None, 1) == codes::REBALANCE_IN_PROGRESS {
            rejoined = Some(
                coordinator
                    .join("g", join_request(&result.member_id, 60_000))
                    .await,
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rejoined = rejoined.expect("the newcomer started a rebalance");
    assert_eq!(rejoined.generation_id, 2);
    let second = second.await.unwrap();
    assert_eq!(second.generation_id, 2);
    // Neither sends SyncGroup nor heartbeats any more: both are dropped in the end
    // (the pending-sync timeout, then sessions), and the group is empty.
    let mut state = None;
    for _ in 0..1000 {
        state = coordinator.state_of("g");
        if state == Some(GroupState::Empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, Some(GroupState::Empty));
    stop.send(true).unwrap();
    timers.await.unwrap();
    broker.shutdown().await;
}

fn join_fully_in_background(
    coordinator: &Coordinator,
    session_timeout_ms: i32,
) -> tokio::task::JoinHandle<JoinResult> {
    let coordinator = coordinator.clone();
    tokio::spawn(async move { join_fully(&coordinator, session_timeout_ms).await })
}

#[tokio::test]
async fn closing_answers_parked_joins_with_not_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        initial_rebalance_delay_ms: 60_000,
        ..fast()
    };
    let (coordinator, broker) = coordinator(dir.path(), config).await;
    let parked = join_fully_in_background(&coordinator, 60_000);
    while coordinator.state_of("g") != Some(GroupState::PreparingRebalance) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    coordinator.close();
    assert_eq!(parked.await.unwrap().error_code, codes::NOT_COORDINATOR);
    assert_eq!(
        coordinator.heartbeat("g", "x", None, 1),
        codes::NOT_COORDINATOR
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn offsets_of_empty_groups_expire_and_empty_groups_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        offsets_retention_ms: 24 * 3_600_000,
        ..fast()
    };
    let (coordinator, broker) = coordinator(dir.path(), config).await;
    broker
        .create_stream("t", 2, BTreeMap::new(), false)
        .await
        .unwrap();
    let now = broker.now_ms();
    let at = |offset: i64, age_ms: i64| CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: Some("m".to_owned()),
        commit_timestamp_ms: now - age_ms,
    };
    let two_days = 2 * 24 * 3_600_000;
    broker
        .commit_offsets(
            "old",
            vec![
                ("t".to_owned(), 0, at(5, two_days)),
                ("t".to_owned(), 1, at(6, 1_000)),
            ],
        )
        .await
        .unwrap();
    broker
        .commit_offsets("busy", vec![("t".to_owned(), 0, at(7, two_days))])
        .await
        .unwrap();
    // "busy" and "g" have a member each.
    let member = join_fully(&coordinator, 60_000).await;
    assert_eq!(member.error_code, codes::NONE);
    let busy = join_group_fully(&coordinator, "busy", 60_000).await;
    assert_eq!(busy.error_code, codes::NONE);
    let listed: Vec<String> = coordinator.list().into_iter().map(|g| g.group_id).collect();
    assert_eq!(listed, vec!["busy", "g", "old"]);
    coordinator.expire_offsets_now().await;
    assert_eq!(
        broker.committed_offsets("old").len(),
        1,
        "only the recent one is kept"
    );
    assert_eq!(broker.committed_offsets("busy").len(), 1, "not empty: kept");
    // Deleting: refused while members exist, then offsets go with the group.
    assert_eq!(coordinator.delete("g").await, codes::NON_EMPTY_GROUP);
    assert_eq!(coordinator.delete("old").await, codes::NONE);
    assert!(broker.committed_offsets("old").is_empty());
    assert_eq!(coordinator.delete("old").await, codes::GROUP_ID_NOT_FOUND);
    assert!(coordinator.describe("old").is_none());
    broker.shutdown().await;
}
