//! Raw-socket Kafka helpers shared by the bad-input tests: encode a request, produce
//! batches, check the server still answers.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardline_testkit::RawClient;

pub fn encode<M: Encodable>(message: &M, version: i16) -> Vec<u8> {
    let mut out = BytesMut::new();
    message.encode(&mut out, version).expect("encodable");
    out.to_vec()
}

/// The server still answers a fresh connection: it survived whatever came before.
pub fn assert_alive(addr: SocketAddr) {
    let mut client = RawClient::connect(addr).unwrap();
    client
        .send_request(
            ApiKey::ApiVersions as i16,
            0,
            99,
            &encode(&ApiVersionsRequest::default(), 0),
        )
        .unwrap();
    let frame = client.read_frame().unwrap().expect("an ApiVersions answer");
    assert_eq!(i32::from_be_bytes(frame[0..4].try_into().unwrap()), 99);
}

pub fn produce_body(topic: &str, partitions: Vec<(i32, Vec<u8>)>) -> Vec<u8> {
    let data = partitions
        .into_iter()
        .map(|(index, records)| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(Bytes::from(records)))
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(data),
        ]);
    encode(&request, 8)
}

/// Sends a Produce v8 and returns (partition, error code, base offset) per partition.
pub fn produce(client: &mut RawClient, correlation_id: i32, body: &[u8]) -> Vec<(i32, i16, i64)> {
    client
        .send_request(ApiKey::Produce as i16, 8, correlation_id, body)
        .unwrap();
    let frame = client.read_frame().unwrap().expect("a produce answer");
    let mut bytes = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut bytes, 0).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let response = ProduceResponse::decode(&mut bytes, 8).unwrap();
    response.responses[0]
        .partition_responses
        .iter()
        .map(|partition| (partition.index, partition.error_code, partition.base_offset))
        .collect()
}
