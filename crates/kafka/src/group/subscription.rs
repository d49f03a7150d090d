//! The topics a Kafka consumer subscribes to, read from its JoinGroup metadata (the
//! embedded `ConsumerProtocolSubscription`: an `i16` version, then the struct).

use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::{Decodable, Message};

use crate::guard;

/// The subscribed topics, or `None` if the metadata is not a consumer subscription.
/// Versions newer than the ones known are read as the newest known: later versions only
/// append fields.
pub(crate) fn topics(metadata: &Bytes) -> Option<Vec<String>> {
    let version_bytes: [u8; 2] = metadata.get(..2)?.try_into().ok()?;
    let version = i16::from_be_bytes(version_bytes);
    if version < 0 {
        return None;
    }
    let version = version.min(ConsumerProtocolSubscription::VERSIONS.max);
    let mut body = metadata.slice(2..);
    // The decoder sizes vectors from the counts on the wire: check them first.
    guard::consumer_subscription(version, &body).ok()?;
    let subscription = ConsumerProtocolSubscription::decode(&mut body, version).ok()?;
    Some(
        subscription
            .topics
            .into_iter()
            .map(|topic| topic.to_string())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn encoded(version: i16, topics: &[&str]) -> Bytes {
        let subscription = ConsumerProtocolSubscription::default().with_topics(
            topics
                .iter()
                .map(|topic| StrBytes::from_string((*topic).to_owned()))
                .collect(),
        );
        let mut out = BytesMut::new();
        out.put_i16(version);
        subscription.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn every_known_version_is_read() {
        for version in 0..=3 {
            assert_eq!(
                topics(&encoded(version, &["a", "b"])),
                Some(vec!["a".to_owned(), "b".to_owned()])
            );
        }
    }

    #[test]
    fn garbage_and_huge_claims_are_not_subscriptions() {
        assert_eq!(topics(&Bytes::from_static(b"")), None);
        assert_eq!(topics(&Bytes::from_static(b"\x00")), None);
        // Version 0 claiming 2^31-1 topics in a few bytes.
        assert_eq!(
            topics(&Bytes::from_static(b"\x00\x00\x7f\xff\xff\xff\x00")),
            None
        );
        let whole = encoded(1, &["orders"]);
        for cut in 2..whole.len() {
            assert_eq!(topics(&whole.slice(..cut)), None, "cut at {cut}");
        }
    }
}
