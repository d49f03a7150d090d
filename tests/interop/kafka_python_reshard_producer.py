#!/usr/bin/env python3
"""kafka-python producer for the reshard test: sends COUNT keyed records while the test
splits and merges shards, then prints every acknowledged payload.

Usage: kafka_python_reshard_producer.py --bootstrap HOST:PORT --topic TOPIC --count N

Output (stdout): `ok produced N` then one line per acknowledged payload prefixed `acked `.
Exit 1 with `FAIL <detail>` on stderr if any send fails. Bounded: every send is awaited
with a 60 s timeout; the script's own deadline is 120 s.
"""
import argparse
import sys
import time

from kafka import KafkaProducer

KEYS = 40


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    deadline = time.monotonic() + 120
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        # See new partitions (children of a split) quickly.
        metadata_max_age_ms=500,
        request_timeout_ms=30000,
    )
    acknowledged = []
    futures = []
    try:
        for i in range(args.count):
            key = f"key-{i % KEYS}"
            payload = f"kafka-python:{key}:{i:06d}"
            futures.append((payload, producer.send(args.topic, key=key.encode(), value=payload.encode())))
            if i % 20 == 19:
                for payload, future in futures:
                    future.get(timeout=60)
                    acknowledged.append(payload)
                futures.clear()
                time.sleep(0.015)
            if time.monotonic() > deadline:
                raise TimeoutError("deadline passed")
        for payload, future in futures:
            future.get(timeout=60)
            acknowledged.append(payload)
    except Exception as error:  # noqa: BLE001 - report any client failure plainly
        print(f"FAIL send: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        producer.close(timeout=10)
    print(f"ok produced {len(acknowledged)}")
    for payload in acknowledged:
        print(f"acked {payload}")


if __name__ == "__main__":
    main()
