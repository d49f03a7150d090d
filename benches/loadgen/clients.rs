//! Kafka clients.

use super::*;

pub(crate) fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "4");
    config
}

pub(crate) fn producer_settings(args: &Args) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("acks", "all".to_string()),
        ("enable.idempotence", "true".to_string()),
        ("linger.ms", args.linger_ms.to_string()),
        ("batch.size", "1000000".to_string()),
        ("batch.num.messages", "10000".to_string()),
        ("compression.type", "none".to_string()),
        (
            "queue.buffering.max.messages",
            (args.max_inflight * 2).max(100_000).to_string(),
        ),
        ("queue.buffering.max.kbytes", "1048576".to_string()),
        ("message.timeout.ms", "120000".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    settings.extend(args.producer_config.iter().cloned());
    settings
}

pub(crate) fn consumer_settings(args: &Args) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("group.id", "shardline-bench"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "false"),
        ("auto.offset.reset", "earliest"),
        ("fetch.wait.max.ms", "100"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    settings.extend(args.consumer_config.iter().cloned());
    settings
}

pub(crate) fn settings_json(settings: &[(String, String)]) -> Value {
    Value::Object(
        settings
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect(),
    )
}

pub(crate) fn new_producer(
    bootstrap: &str,
    settings: &[(String, String)],
) -> anyhow::Result<FutureProducer> {
    let mut config = client_config(bootstrap);
    for (key, value) in settings {
        config.set(key, value);
    }
    config.create().context("creating a producer")
}

pub(crate) fn new_consumer(
    bootstrap: &str,
    settings: &[(String, String)],
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BaseConsumer> {
    let mut config = client_config(bootstrap);
    for (key, value) in settings {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().context("creating a consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

pub(crate) async fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    create_topic_with(bootstrap, name, partitions, &[]).await
}

/// CreateTopics with `capacity.mode=unlimited` and the given extra topic configs.
pub(crate) async fn create_topic_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .context("creating an admin client")?;
    // The benchmark measures the server, not Kinesis' per-shard limits (1 MiB/s by
    // default), so its topic is created with those limits lifted.
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
        .set("capacity.mode", "unlimited");
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await? {
        result.map_err(|(topic, code)| anyhow!("creating topic {topic}: {code}"))?;
    }
    Ok(())
}
