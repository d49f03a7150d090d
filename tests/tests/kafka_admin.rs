//! Kafka admin calls that change a stream, through librdkafka's admin client:
//! CreatePartitions (Kinesis uniform scaling to that many open shards), AlterConfigs and
//! DescribeConfigs of the settings both APIs share (retention), and IncrementalAlterConfigs
//! over a raw socket (the rdkafka crate has no binding for it).

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{client_config, create_topic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewPartitions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use shardline_testkit::{RawClient, TestServer};

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap).create().expect("admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_scales_the_stream_uniformly() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, "grow", 2).await;
    let admin = admin(&bootstrap);
    let results = admin
        .create_partitions([&NewPartitions::new("grow", 4)], &options())
        .await
        .unwrap();
    results[0].clone().expect("CreatePartitions to 4");
    let info = server.broker().stream("grow").unwrap();
    let open: Vec<_> = info.shards.iter().filter(|shard| shard.is_open()).collect();
    assert_eq!(open.len(), 4, "4 open shards of equal ranges");
    assert_eq!(
        info.shards.len(),
        6,
        "the 2 closed parents are still partitions"
    );

    // Kafka's rule: the count must grow past the current partition count.
    let results = admin
        .create_partitions([&NewPartitions::new("grow", 5)], &options())
        .await
        .unwrap();
    assert_eq!(
        results[0].clone().unwrap_err().1,
        RDKafkaErrorCode::InvalidPartitions
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_altered_and_described_and_validated() {
    let server = TestServer::start().await;
    let bootstrap = server.bootstrap();
    create_topic(&bootstrap, "keep", 1).await;
    let admin = admin(&bootstrap);
    let two_days =
        AlterConfig::new(ResourceSpecifier::Topic("keep")).set("retention.ms", "172800000");
    let results = admin.alter_configs([&two_days], &options()).await.unwrap();
    assert!(results[0].is_ok(), "retention.ms = 48 h");
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic("keep")], &options())
        .await
        .unwrap();
    let config = described[0].as_ref().unwrap();
    assert_eq!(
        config
            .get("retention.ms")
            .and_then(|entry| entry.value.as_deref()),
        Some("172800000")
    );
    assert_eq!(
        server.broker().stream("keep").unwrap().config.retention_ms,
        172_800_000
    );

    // Under 24 hours is outside the Kinesis range: refused and nothing changes. (The
    // rdkafka crate reports AlterConfigs resource errors as success, so the error code is
    // checked over a raw socket below; kafka-python shows INVALID_CONFIG with the message.)
    let one_hour =
        AlterConfig::new(ResourceSpecifier::Topic("keep")).set("retention.ms", "3600000");
    admin.alter_configs([&one_hour], &options()).await.unwrap();
    assert_eq!(
        server.broker().stream("keep").unwrap().config.retention_ms,
        172_800_000
    );

    // IncrementalAlterConfigs v1 (flexible): DELETE puts the default back.
    let addr = server.kafka_addr;
    let incremental = |operation: i8, value: Option<&'static str>| {
        let mut config = AlterableConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_config_operation(operation);
        if let Some(value) = value {
            config = config.with_value(Some(StrBytes::from_static_str(value)));
        }
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("keep"))
                .with_configs(vec![config]),
        ])
    };
    let too_short = send_incremental(addr, incremental(0, Some("1000"))).await;
    assert_eq!(too_short, 40, "INVALID_CONFIG");
    let code = send_incremental(addr, incremental(1, None)).await;
    assert_eq!(code, 0);
    let info = server.broker().stream("keep").unwrap();
    assert!(!info.explicit_configs.contains_key("retention.ms"));
    assert_eq!(info.config.retention_ms, 7 * 24 * 3600 * 1000);
    server.stop().await;
}

/// Sends an IncrementalAlterConfigs v1 (flexible) and returns the first resource's code.
async fn send_incremental(
    addr: std::net::SocketAddr,
    request: IncrementalAlterConfigsRequest,
) -> i16 {
    tokio::task::spawn_blocking(move || {
        let mut body = BytesMut::new();
        request.encode(&mut body, 1).unwrap();
        let mut client = RawClient::connect(addr).unwrap();
        client
            .send_raw(&shardline_testkit::request_frame(
                ApiKey::IncrementalAlterConfigs as i16,
                1,
                9,
                true,
                &body,
            ))
            .unwrap();
        let mut frame = Bytes::from(client.read_frame().unwrap().unwrap());
        assert_eq!(
            ResponseHeader::decode(&mut frame, 1)
                .unwrap()
                .correlation_id,
            9
        );
        IncrementalAlterConfigsResponse::decode(&mut frame, 1)
            .unwrap()
            .responses[0]
            .error_code
    })
    .await
    .unwrap()
}
