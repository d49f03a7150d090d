#!/usr/bin/env python3
"""Kinesis control-plane checks with boto3 against Shardline's HTTP API.

Usage: kinesis_boto3_check.py --endpoint http://127.0.0.1:PORT --stream-prefix PREFIX

Prints one `ok <check>` line per passing check; on the first failure prints
`FAIL <check>: <detail>` to stderr and exits 1. Every call is bounded by botocore's
timeouts (connect 5 s, read 30 s, no retries), so the script cannot hang.
Field values are compared with what AWS documents (hash-key split, shard ids, ARN form,
56-digit sequence numbers, error names).
"""
import argparse
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

    client.delete_stream(StreamName=f"{args.stream_prefix}-c")
    expect_error("delete_stream", "ResourceNotFoundException", client.describe_stream, StreamName=f"{args.stream_prefix}-c")
    print("# all checks passed")


if __name__ == "__main__":
    main()
