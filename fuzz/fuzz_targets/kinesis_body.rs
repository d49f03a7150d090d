//! A Kinesis JSON request body for any operation, served by a real broker: every body
//! gets a well-formed JSON answer with a 200, 4xx or 5xx status, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shardline_broker::{Broker, BrokerConfig};
use shardline_kinesis::{Kinesis, KinesisConfig};

const OPERATIONS: &[&str] = &[
    "CreateStream",
    "DeleteStream",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListStreams",
    "ListShards",
    "PutRecord",
    "PutRecords",
    "SplitShard",
    "MergeShards",
    "UpdateShardCount",
    "IncreaseStreamRetentionPeriod",
    "DecreaseStreamRetentionPeriod",
    "AddTagsToStream",
    "NoSuchOperation",
];

struct Server {
    runtime: tokio::runtime::Runtime,
    kinesis: Kinesis,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = runtime
            .block_on(Broker::open(BrokerConfig::with_data_dir(
                dir.path().to_path_buf(),
            )))
            .expect("broker opens");
        Server {
            runtime,
            kinesis: Kinesis::new(broker, KinesisConfig::default()),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let operation = OPERATIONS[usize::from(which) % OPERATIONS.len()];
    let target = format!("{}{operation}", shardline_kinesis::TARGET_PREFIX);
    let server = server();
    let answer = server
        .runtime
        .block_on(server.kinesis.handle(Some(&target), body));
    assert!(
        answer.status == 200 || (400..600).contains(&answer.status),
        "status {}",
        answer.status
    );
    serde_json::from_slice::<serde_json::Value>(&answer.body).expect("the answer is JSON");
});
