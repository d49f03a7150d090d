#!/usr/bin/env python3
"""Kinesis control- and data-plane checks with boto3 against Shardline's HTTP API.

Usage: kinesis_boto3_check.py --endpoint http://127.0.0.1:PORT --stream-prefix PREFIX

Prints one `ok <check>` line per passing check; on the first failure prints
`FAIL <check>: <detail>` to stderr and exits 1. Every call is bounded by botocore's
timeouts (connect 5 s, read 30 s, no retries), so the script cannot hang.
Field values are compared with what AWS documents (hash-key split, shard ids, ARN form,
56-digit sequence numbers, MD5 routing of partition keys, error names).
"""
import argparse
import hashlib
import os
import sys

for key, value in {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ.setdefault(key, value)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

TWO_128 = 2**128


def fail(check, detail):
    print(f"FAIL {check}: {detail}", file=sys.stderr)
    sys.exit(1)


def ok(check):
    print(f"ok {check}", flush=True)


def expect_error(check, code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as error:
        got = error.response["Error"]["Code"]
        if got != code:
            fail(check, f"expected {code}, got {got}: {error}")
        ok(check)
        return error
    fail(check, f"expected {code}, but the call succeeded")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--stream-prefix", required=True)
    args = parser.parse_args()
    client = boto3.client(
        "kinesis",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )
    name = f"{args.stream_prefix}-four"

    client.create_stream(StreamName=name, ShardCount=4)
    ok("create_stream")

    description = client.describe_stream(StreamName=name)["StreamDescription"]
    if description["StreamStatus"] != "ACTIVE":
        fail("describe_stream.status", description["StreamStatus"])
    if description["StreamARN"] != f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}":
        fail("describe_stream.arn", description["StreamARN"])
    shards = description["Shards"]
    ids = [shard["ShardId"] for shard in shards]
    if ids != [f"shardId-{i:012d}" for i in range(4)]:
        fail("describe_stream.shard_ids", ids)
    step = TWO_128 // 4
    for index, shard in enumerate(shards):
        start = int(shard["HashKeyRange"]["StartingHashKey"])
        end = int(shard["HashKeyRange"]["EndingHashKey"])
        want_end = TWO_128 - 1 if index == 3 else (index + 1) * step - 1
        if (start, end) != (index * step, want_end):
            fail("describe_stream.hash_ranges", f"shard {index}: {start}..{end}")
        sequence = shard["SequenceNumberRange"]["StartingSequenceNumber"]
        if len(sequence) != 56 or not sequence.isdigit():
            fail("describe_stream.sequence_numbers", sequence)
        if "EndingSequenceNumber" in shard["SequenceNumberRange"]:
            fail("describe_stream.open_shards_have_no_end", shard)
    if description["RetentionPeriodHours"] < 24 or description["HasMoreShards"]:
        fail("describe_stream.fields", description)
    ok("describe_stream")

    summary = client.describe_stream_summary(StreamARN=description["StreamARN"])["StreamDescriptionSummary"]
    if summary["OpenShardCount"] != 4 or summary["StreamModeDetails"]["StreamMode"] != "PROVISIONED":
        fail("describe_stream_summary", summary)
    ok("describe_stream_summary.by_arn")

    page = client.list_shards(StreamName=name, MaxResults=3)
    if [shard["ShardId"] for shard in page["Shards"]] != ids[:3] or "NextToken" not in page:
        fail("list_shards.page1", page)
    rest = client.list_shards(NextToken=page["NextToken"])
    if [shard["ShardId"] for shard in rest["Shards"]] != ids[3:] or "NextToken" in rest:
        fail("list_shards.page2", rest)
    ok("list_shards.pagination")
    after = client.list_shards(StreamName=name, ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": ids[1]})
    if [shard["ShardId"] for shard in after["Shards"]] != ids[2:]:
        fail("list_shards.after_shard_id", after)
    ok("list_shards.after_shard_id")
    expect_error(
        "list_shards.next_token_with_stream_name",
        "InvalidArgumentException",
        client.list_shards,
        StreamName=name,
        NextToken=page["NextToken"],
    )

    for extra in ("b", "c"):
        client.create_stream(StreamName=f"{args.stream_prefix}-{extra}", ShardCount=1)
    listed = client.list_streams(Limit=2)
    if len(listed["StreamNames"]) != 2 or not listed["HasMoreStreams"]:
        fail("list_streams.limit", listed)
    every = client.list_streams()["StreamNames"]
    for wanted in (name, f"{args.stream_prefix}-b", f"{args.stream_prefix}-c"):
        if wanted not in every:
            fail("list_streams.all", every)
    ok("list_streams")

    expect_error("create_stream.duplicate", "ResourceInUseException", client.create_stream, StreamName=name, ShardCount=1)
    expect_error("describe_stream.unknown", "ResourceNotFoundException", client.describe_stream, StreamName=f"{args.stream_prefix}-nope")
    expect_error(
        "list_shards.bad_filter_shard_id",
        "InvalidArgumentException",
        client.list_shards,
        StreamName=name,
        ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": "shard-7"},
    )

    resharding(client, args.stream_prefix)
    retention_and_tags(client, args.stream_prefix)
    modes(client, args.stream_prefix)
    put_records_and_routing(client, args.stream_prefix)
    put_limits(client, args.stream_prefix)
    put_throughput(client, args.stream_prefix)

    client.delete_stream(StreamName=f"{args.stream_prefix}-c")
    expect_error("delete_stream", "ResourceNotFoundException", client.describe_stream, StreamName=f"{args.stream_prefix}-c")
    print("# all checks passed")


def shard_map(client, name):
    return {shard["ShardId"]: shard for shard in client.list_shards(StreamName=name)["Shards"]}


def resharding(client, prefix):
    name = f"{prefix}-reshard"
    client.create_stream(StreamName=name, ShardCount=2)
    half = TWO_128 // 2
    quarter = TWO_128 // 4
    client.split_shard(StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(quarter))
    shards = shard_map(client, name)
    parent = shards["shardId-000000000000"]
    if "EndingSequenceNumber" not in parent["SequenceNumberRange"]:
        fail("split_shard.parent_closed", parent)
    low, high = shards["shardId-000000000002"], shards["shardId-000000000003"]
    if low.get("ParentShardId") != "shardId-000000000000" or high.get("ParentShardId") != "shardId-000000000000":
        fail("split_shard.children_parents", (low, high))
    if (int(low["HashKeyRange"]["StartingHashKey"]), int(low["HashKeyRange"]["EndingHashKey"])) != (0, quarter - 1):
        fail("split_shard.low_range", low)
    if (int(high["HashKeyRange"]["StartingHashKey"]), int(high["HashKeyRange"]["EndingHashKey"])) != (quarter, half - 1):
        fail("split_shard.high_range", high)
    ok("split_shard")
    expect_error("split_shard.closed_shard", "InvalidArgumentException", client.split_shard,
                 StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(quarter // 2))
    expect_error("split_shard.key_outside_range", "InvalidArgumentException", client.split_shard,
                 StreamName=name, ShardToSplit="shardId-000000000002", NewStartingHashKey=str(half + 10))
    expect_error("split_shard.unknown_shard", "ResourceNotFoundException", client.split_shard,
                 StreamName=name, ShardToSplit="shardId-000000000099", NewStartingHashKey=str(quarter))
    expect_error("merge_shards.not_adjacent", "InvalidArgumentException", client.merge_shards,
                 StreamName=name, ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000001")
    client.merge_shards(StreamName=name, ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
    shards = shard_map(client, name)
    merged = shards["shardId-000000000004"]
    if merged.get("ParentShardId") != "shardId-000000000002" or merged.get("AdjacentParentShardId") != "shardId-000000000003":
        fail("merge_shards.parents", merged)
    if (int(merged["HashKeyRange"]["StartingHashKey"]), int(merged["HashKeyRange"]["EndingHashKey"])) != (0, half - 1):
        fail("merge_shards.range", merged)
    ok("merge_shards")
    latest = client.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    if sorted(shard["ShardId"] for shard in latest) != ["shardId-000000000001", "shardId-000000000004"]:
        fail("list_shards.at_latest", latest)
    ok("list_shards.at_latest")
    answer = client.update_shard_count(StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    if (answer["CurrentShardCount"], answer["TargetShardCount"]) != (2, 4):
        fail("update_shard_count.answer", answer)
    latest = client.list_shards(StreamName=name, ShardFilter={"Type": "AT_LATEST"})["Shards"]
    ranges = sorted((int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in latest)
    step = TWO_128 // 4
    want = [(i * step, (i + 1) * step - 1 if i < 3 else TWO_128 - 1) for i in range(4)]
    if ranges != want:
        fail("update_shard_count.uniform_ranges", ranges)
    for shard in client.list_shards(StreamName=name)["Shards"]:
        parents = [shard.get("ParentShardId"), shard.get("AdjacentParentShardId")]
        if len([p for p in parents if p]) > 2:
            fail("update_shard_count.lineage", shard)
    ok("update_shard_count")
    expect_error("update_shard_count.beyond_double", "LimitExceededException", client.update_shard_count,
                 StreamName=name, TargetShardCount=9, ScalingType="UNIFORM_SCALING")
    expect_error("update_shard_count.below_half", "LimitExceededException", client.update_shard_count,
                 StreamName=name, TargetShardCount=1, ScalingType="UNIFORM_SCALING")


def retention_and_tags(client, prefix):
    name = f"{prefix}-retention"
    client.create_stream(StreamName=name, ShardCount=1, StreamModeDetails={"StreamMode": "PROVISIONED"})
    start = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"]
    client.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=start + 24)
    if client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"] != start + 24:
        fail("retention.increase", "not applied")
    client.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=24)
    if client.describe_stream(StreamName=name)["StreamDescription"]["RetentionPeriodHours"] != 24:
        fail("retention.decrease", "not applied")
    ok("retention.increase_and_decrease")
    expect_error("retention.increase_to_lower", "InvalidArgumentException", client.increase_stream_retention_period,
                 StreamName=name, RetentionPeriodHours=23)
    expect_error("retention.decrease_to_higher", "InvalidArgumentException", client.decrease_stream_retention_period,
                 StreamName=name, RetentionPeriodHours=48)
    expect_error("retention.above_8760", "InvalidArgumentException", client.increase_stream_retention_period,
                 StreamName=name, RetentionPeriodHours=8761)

    client.add_tags_to_stream(StreamName=name, Tags={"team": "data", "env": "test"})
    tags = client.list_tags_for_stream(StreamName=name)
    if {tag["Key"]: tag["Value"] for tag in tags["Tags"]} != {"env": "test", "team": "data"} or tags["HasMoreTags"]:
        fail("tags.list", tags)
    client.remove_tags_from_stream(StreamName=name, TagKeys=["env"])
    tags = client.list_tags_for_stream(StreamName=name)["Tags"]
    if tags != [{"Key": "team", "Value": "data"}]:
        fail("tags.remove", tags)
    ok("tags")
    expect_error("tags.reserved_prefix", "InvalidArgumentException", client.add_tags_to_stream,
                 StreamName=name, Tags={"aws:owner": "x"})
    expect_error("tags.too_many_in_one_call", "InvalidArgumentException", client.add_tags_to_stream,
                 StreamName=name, Tags={f"k{i}": "v" for i in range(11)})


def modes(client, prefix):
    name = f"{prefix}-ondemand"
    client.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    if summary["StreamModeDetails"]["StreamMode"] != "ON_DEMAND" or summary["OpenShardCount"] != 4:
        fail("on_demand.create", summary)
    expect_error("on_demand.no_split", "InvalidArgumentException", client.split_shard,
                 StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**120))
    client.update_stream_mode(StreamARN=summary["StreamARN"], StreamModeDetails={"StreamMode": "PROVISIONED"})
    summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    if summary["StreamModeDetails"]["StreamMode"] != "PROVISIONED":
        fail("update_stream_mode", summary)
    ok("stream_modes")


def expected_shard(partition_key, shard_count):
    """The shard AWS routes a key to: MD5 as a big-endian 128-bit integer, even split."""
    hash_key = int(hashlib.md5(partition_key.encode()).hexdigest(), 16)
    return f"shardId-{min(hash_key // (TWO_128 // shard_count), shard_count - 1):012d}"


def put_records_and_routing(client, prefix):
    name = f"{prefix}-put"
    client.create_stream(StreamName=name, ShardCount=2)
    # MD5("a") = 0cc175b9… (lower half), MD5("0") = cfcd2084… (upper half): spec §2 vectors.
    for key, shard in (("a", "shardId-000000000000"), ("0", "shardId-000000000001")):
        answer = client.put_record(StreamName=name, Data=b"hello", PartitionKey=key)
        if answer["ShardId"] != shard or answer.get("EncryptionType") != "NONE":
            fail("put_record.md5_routing", (key, answer))
    ok("put_record.md5_routing")
    numbers = []
    for i in range(3):
        answer = client.put_record(StreamName=name, Data=f"ordered-{i}".encode(), PartitionKey="a",
                                   **({"SequenceNumberForOrdering": numbers[-1]} if numbers else {}))
        sequence = answer["SequenceNumber"]
        if len(sequence) != 56 or not sequence.isdigit():
            fail("put_record.sequence_number_form", sequence)
        numbers.append(sequence)
    if [int(n) for n in numbers] != sorted(int(n) for n in numbers) or len(set(numbers)) != 3:
        fail("put_record.sequence_numbers_increase", numbers)
    ok("put_record.sequence_numbers")
    for hash_key, shard in (("0", "shardId-000000000000"), (str(TWO_128 - 1), "shardId-000000000001")):
        answer = client.put_record(StreamName=name, Data=b"x", PartitionKey="0", ExplicitHashKey=hash_key)
        if answer["ShardId"] != shard:
            fail("put_record.explicit_hash_key", (hash_key, answer))
    ok("put_record.explicit_hash_key")

    keys = [f"key-{i}" for i in range(10)]
    answer = client.put_records(StreamName=name, Records=[{"Data": key.encode(), "PartitionKey": key} for key in keys])
    results = answer["Records"]
    if answer["FailedRecordCount"] != 0 or len(results) != 10:
        fail("put_records.count", answer)
    for key, result in zip(keys, results):
        if result.get("ShardId") != expected_shard(key, 2) or len(result.get("SequenceNumber", "")) != 56:
            fail("put_records.order_and_routing", (key, result))
    ok("put_records.ten_in_order")


def put_limits(client, prefix):
    name = f"{prefix}-put-limits"
    client.create_stream(StreamName=name, ShardCount=1)
    mib = 1024 * 1024
    expect_error("put_record.over_1_mib", "ValidationException", client.put_record,
                 StreamName=name, Data=b"x" * (mib + 1), PartitionKey="k")
    expect_error("put_record.key_counts_toward_1_mib", "ValidationException", client.put_record,
                 StreamName=name, Data=b"x" * (mib - 1), PartitionKey="ab")
    expect_error("put_records.over_1_mib", "ValidationException", client.put_records,
                 StreamName=name, Records=[{"Data": b"x", "PartitionKey": "k"},
                                           {"Data": b"x" * (mib + 1), "PartitionKey": "k"}])
    expect_error("put_records.over_5_mib", "InvalidArgumentException", client.put_records,
                 StreamName=name, Records=[{"Data": b"x" * (mib - 100), "PartitionKey": "k"}] * 6)
    expect_error("put_records.over_500", "ValidationException", client.put_records,
                 StreamName=name, Records=[{"Data": b"x", "PartitionKey": "k"}] * 501)
    expect_error("put_record.explicit_hash_key_2_128", "InvalidArgumentException", client.put_record,
                 StreamName=name, Data=b"x", PartitionKey="k", ExplicitHashKey=str(TWO_128))
    expect_error("put_record.explicit_hash_key_not_decimal", "ValidationException", client.put_record,
                 StreamName=name, Data=b"x", PartitionKey="k", ExplicitHashKey="12a")
    expect_error("put_record.partition_key_over_256", "ValidationException", client.put_record,
                 StreamName=name, Data=b"x", PartitionKey="k" * 257)
    expect_error("put_record.unknown_stream", "ResourceNotFoundException", client.put_record,
                 StreamName=f"{prefix}-nope", Data=b"x", PartitionKey="k")


def put_throughput(client, prefix):
    name = f"{prefix}-put-throttled"
    # PROVISIONED sets capacity.mode explicitly, overriding the test server's unlimited default.
    client.create_stream(StreamName=name, ShardCount=1, StreamModeDetails={"StreamMode": "PROVISIONED"})
    records = [{"Data": b"d" * 3000, "PartitionKey": f"k{i}"} for i in range(500)]
    answers = [client.put_records(StreamName=name, Records=records) for _ in range(2)]
    for answer in answers:
        if len(answer["Records"]) != 500:
            fail("put_records.throttled_count", len(answer["Records"]))
        codes = [result.get("ErrorCode") for result in answer["Records"]]
        if answer["FailedRecordCount"] != sum(code is not None for code in codes):
            fail("put_records.failed_record_count", answer["FailedRecordCount"])
    throttled = [result for answer in answers for result in answer["Records"]
                 if result.get("ErrorCode") == "ProvisionedThroughputExceededException"]
    if answers[1]["FailedRecordCount"] == 0 or not throttled:
        fail("put_records.throttled", [answer["FailedRecordCount"] for answer in answers])
    message = throttled[0]["ErrorMessage"]
    if "shardId-000000000000" not in message or name not in message:
        fail("put_records.throttled_message", message)
    ok("put_records.throttled_over_1_mib_per_second")


if __name__ == "__main__":
    main()
