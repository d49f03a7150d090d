#!/usr/bin/env python3
"""Interop check: kafka-python 3.0.12 against a running Shardline broker.

Usage:
    tests/interop/.venv/bin/python tests/interop/kafka_python_check.py \
        --bootstrap 127.0.0.1:PORT --topic-prefix PREFIX [--with-group-consumer | --group-consumer-only]
    tests/interop/.venv/bin/python tests/interop/kafka_python_check.py \
        --bootstrap 127.0.0.1:PORT --group-member GROUP --topic TOPIC

Creates topic PREFIX-kpy (3 partitions, RF 1), so PREFIX must be fresh for every run.
--with-group-consumer adds the consumer-group checks (topic PREFIX-kpy-g, group
PREFIX-kpy-group): a member commits part of the records and leaves, a new member of the
same group resumes right after the commits. --group-consumer-only runs only those.

--group-member runs one member of GROUP subscribed to TOPIC (for mixed-client groups):
after each poll it commits synchronously, then prints `processed-record: <partition>
<offset> <value>` per record; on SIGTERM (or stdin closing) it leaves the group and exits 0.
Prints one `ok <check>` line per passed check on stdout; on the first failure prints
`FAIL <check>: <detail>` on stderr and exits 1. Lines starting with `#` are information.
Exit codes: 0 all passed, 1 a check failed (or the whole-run deadline hit), 2 bad usage.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time

try:
    import kafka
    import kafka.codec
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType
except ImportError as exc:  # wrong interpreter: say so instead of a traceback
    print("FAIL imports: %s (run scripts/install-test-deps.sh and use tests/interop/.venv/bin/python)"
          % exc, file=sys.stderr)
    sys.exit(1)

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
RECORDS_PER_CODEC = 200
PARTITIONS = 3
# offsets_for_times probe: the pause goes between these two produce phases.
BOUNDARY_AFTER = "gzip"      # phase that ends >= BOUNDARY_GAP_S before the boundary
BOUNDARY_GAP_S = 1.2
PAD = "shardline-interop-" * 6  # compressible payload so every codec has work to do
GROUP_RECORDS = 200


class CheckFailed(Exception):
    pass


def codec_name(codec):
    return codec or "none"


def make_value(codec, i):
    return ("%s:%d:%s" % (codec_name(codec), i, PAD)).encode()


def parse_value(raw):
    parts = raw.decode(errors="replace").split(":", 2)
    if len(parts) != 3 or parts[2] != PAD:
        raise CheckFailed("unrecognised record value %r" % raw[:80])
    return parts[0], int(parts[1])


def describe(exc):
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else "%s: %s" % (name, text)


def info(msg):
    print("# " + msg, flush=True)


class Runner:
    def __init__(self, args):
        self.args = args
        self.topic = "%s-kpy" % args.topic_prefix
        self.tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        self.clients = []          # (kind, client) to close at the end
        self.current = "startup"
        # (codec_name, i) -> (partition, offset, timestamp)
        self.produced = {}
        self.phase_offsets = {}    # codec_name -> {partition: [offsets in send order]}
        self.boundary_ms = None
        self.common = dict(
            bootstrap_servers=args.bootstrap,
            request_timeout_ms=10000,
            bootstrap_timeout_ms=args.bootstrap_timeout_ms,
            reconnect_backoff_max_ms=1000,
        )

    # -- plumbing ------------------------------------------------------------------------
    def ok(self, name):
        print("ok " + name, flush=True)

    def fail(self, detail):
        raise CheckFailed(detail)

    def track(self, kind, client):
        self.clients.append((kind, client))
        return client

    def close_all(self, quick=False):
        t = 2 if quick else 10
        for kind, client in reversed(self.clients):
            try:
                if kind == "producer":
                    client.close(timeout=t)
                elif kind == "consumer":
                    client.close(autocommit=False, timeout_ms=t * 1000)
                else:
                    client.close()
            except Exception as exc:  # closing must never turn a pass into a crash
                info("close %s: %s" % (kind, describe(exc)))
        self.clients = []

    # -- a. admin ------------------------------------------------------------------------
    def check_admin(self):
        self.current = "admin.connect"
        admin = self.track("admin", KafkaAdminClient(client_id="shardline-interop-kpy-admin", **self.common))
        info("admin connected; inferred broker version %s" % (
            getattr(getattr(admin, "_manager", None), "broker_version", "?"),))
        self.ok("admin.connect")

        self.current = "admin.create_topics"
        res = admin.create_topics({self.topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                                  timeout_ms=10000)
        info("create_topics -> %s" % (res,))
        admin.wait_for_topics([self.topic], timeout_ms=10000)
        desc = [t for t in admin.describe_topics([self.topic]) if t.get("name") == self.topic]
        if not desc:
            self.fail("describe_topics does not return %s" % self.topic)
        nparts = len(desc[0].get("partitions") or [])
        if nparts != PARTITIONS:
            self.fail("topic has %d partitions in metadata, want %d" % (nparts, PARTITIONS))
        self.ok("admin.create_topics")

        self.current = "admin.list_topics"
        topics = admin.list_topics()
        if self.topic not in topics:
            self.fail("%s missing from list_topics %r" % (self.topic, topics))
        self.ok("admin.list_topics")

        self.current = "admin.describe_configs"
        cfg = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, self.topic)],
                                     config_filter="all")
        entries = cfg.get("topic", {}).get(self.topic, {})
        info("describe_configs(topic) -> %d entries: %s" % (
            len(entries), ", ".join("%s=%s" % (k, v.get("value")) for k, v in sorted(entries.items()))[:2000]))
        self.ok("admin.describe_configs")

    # -- b. produce ----------------------------------------------------------------------
    def produce_phase(self, codec):
        name = codec_name(codec)
        self.current = "produce.%s" % name
        producer = self.track("producer", KafkaProducer(
            client_id="shardline-interop-kpy-%s" % name,
            compression_type=codec,
            enable_idempotence=True,
            acks="all",
            linger_ms=10,               # several records per batch
            max_block_ms=10000,
            delivery_timeout_ms=25000,
            **self.common))
        futures = []
        for i in range(RECORDS_PER_CODEC):
            p = i % PARTITIONS
            futures.append((i, p, producer.send(self.topic, key=("k%d" % i).encode(),
                                                value=make_value(codec, i), partition=p)))
        producer.flush(timeout=30)
        per_part = {p: [] for p in range(PARTITIONS)}
        for i, p, fut in futures:
            if not fut.is_done:
                self.fail("record %s:%d not acknowledged after flush" % (name, i))
            try:
                md = fut.get(timeout=0)
            except Exception as exc:
                self.fail("record %s:%d failed: %s" % (name, i, describe(exc)))
            if md.topic != self.topic or md.partition != p:
                self.fail("record %s:%d acked for %s[%d], sent to %s[%d]" % (
                    name, i, md.topic, md.partition, self.topic, p))
            if md.offset < 0:
                self.fail("record %s:%d acked with offset %d" % (name, i, md.offset))
            self.produced[(name, i)] = (md.partition, md.offset, md.timestamp)
            per_part[p].append(md.offset)
        for p, offs in per_part.items():
            if any(b <= a for a, b in zip(offs, offs[1:])):
                self.fail("partition %d offsets not strictly increasing in send order: %s" % (p, offs[:20]))
        self.phase_offsets[name] = per_part
        producer.close(timeout=10)
        self.clients.remove(("producer", producer))
        info("%s: %d records, offsets %s" % (name, RECORDS_PER_CODEC, {
            p: "%d..%d" % (o[0], o[-1]) for p, o in per_part.items()}))
        self.ok("produce.%s" % name)

    def check_produce(self):
        for codec in CODECS:
            if codec and not getattr(kafka.codec, "has_" + codec, lambda: True)():
                self.current = "produce.%s" % codec
                self.fail("codec library for %s not installed in this interpreter" % codec)
            self.produce_phase(codec)
            if codec_name(codec) == BOUNDARY_AFTER:
                time.sleep(BOUNDARY_GAP_S)
                self.boundary_ms = int(time.time() * 1000)
                time.sleep(0.05)

    # -- c. consume (no group) -----------------------------------------------------------
    def new_consumer(self, client_id):
        return self.track("consumer", KafkaConsumer(
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            **self.common))

    def check_consume(self):
        self.current = "consume.assign_from_beginning"
        consumer = self.new_consumer("shardline-interop-kpy-consumer")
        self.consumer = consumer
        consumer.assign(self.tps)
        consumer.seek_to_beginning()
        seen = {}
        last_offset = {p: -1 for p in range(PARTITIONS)}
        deadline = time.monotonic() + 30
        while len(seen) < len(self.produced) and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    ident = parse_value(r.value)
                    if ident in seen:
                        self.fail("record %s:%d delivered twice (offsets %d and %d on partition %d)" % (
                            ident + (seen[ident][1], r.offset, r.partition)))
                    if ident not in self.produced:
                        self.fail("unexpected record %s:%d at %d/%d" % (ident + (r.partition, r.offset)))
                    want_p, want_off, _ = self.produced[ident]
                    if (r.partition, r.offset) != (want_p, want_off):
                        self.fail("record %s:%d read at partition %d offset %d, acked as %d/%d" % (
                            ident + (r.partition, r.offset, want_p, want_off)))
                    if r.key != ("k%d" % ident[1]).encode():
                        self.fail("record %s:%d has key %r" % (ident + (r.key,)))
                    if r.offset <= last_offset[r.partition]:
                        self.fail("partition %d: offset %d delivered after %d" % (
                            r.partition, r.offset, last_offset[r.partition]))
                    last_offset[r.partition] = r.offset
                    seen[ident] = (r.partition, r.offset)
        if len(seen) != len(self.produced):
            missing = sorted(set(self.produced) - set(seen))
            self.fail("received %d of %d records in 30 s; first missing: %s" % (
                len(seen), len(self.produced), missing[:10]))
        self.ok("consume.assign_from_beginning")

    # -- d. offsets_for_times ------------------------------------------------------------
    def check_offsets_for_times(self):
        self.current = "offsets_for_times"
        consumer = self.consumer
        codec_names = [codec_name(c) for c in CODECS]
        before = BOUNDARY_AFTER
        after = codec_names[codec_names.index(BOUNDARY_AFTER) + 1]
        res = consumer.offsets_for_times({tp: self.boundary_ms for tp in self.tps}, timeout_ms=10000)
        for tp in self.tps:
            got = res.get(tp)
            last_before = self.phase_offsets[before][tp.partition][-1]
            first_after = self.phase_offsets[after][tp.partition][0]
            if got is None:
                self.fail("partition %d: no offset for boundary %d (want in (%d, %d])" % (
                    tp.partition, self.boundary_ms, last_before, first_after))
            if not (last_before < got.offset <= first_after):
                self.fail("partition %d: offsets_for_times(%d) = %d, want > %d (last %s record) and <= %d "
                          "(first %s record)" % (tp.partition, self.boundary_ms, got.offset, last_before,
                                                 before, first_after, after))
            info("offsets_for_times p%d -> offset %d ts %s (last %s=%d, first %s=%d)" % (
                tp.partition, got.offset, got.timestamp, before, last_before, after, first_after))
        self.ok("offsets_for_times")

    # -- e. end/beginning offsets --------------------------------------------------------
    def check_watermarks(self):
        consumer = self.consumer
        per_part = {p: sorted(o for (pp, o, _) in self.produced.values() if pp == p) for p in range(PARTITIONS)}
        self.current = "end_offsets"
        end = consumer.end_offsets(self.tps, timeout_ms=10000)
        for tp in self.tps:
            offs = per_part[tp.partition]
            if end.get(tp) != offs[-1] + 1:
                self.fail("partition %d: end offset %s, want %d (last acked offset + 1)" % (
                    tp.partition, end.get(tp), offs[-1] + 1))
        self.ok("end_offsets")
        self.current = "beginning_offsets"
        begin = consumer.beginning_offsets(self.tps, timeout_ms=10000)
        for tp in self.tps:
            offs = per_part[tp.partition]
            if begin.get(tp) != offs[0]:
                self.fail("partition %d: beginning offset %s, want %d" % (tp.partition, begin.get(tp), offs[0]))
            if end[tp] - begin[tp] != len(offs):
                self.fail("partition %d: end-beginning = %d but %d records produced" % (
                    tp.partition, end[tp] - begin[tp], len(offs)))
        self.ok("beginning_offsets")

    # -- f. unknown topic, no auto-create ------------------------------------------------
    def check_unknown_topic(self):
        self.current = "produce.unknown_topic"
        missing = "%s-kpy-missing" % self.args.topic_prefix
        producer = self.track("producer", KafkaProducer(
            client_id="shardline-interop-kpy-missing",
            allow_auto_create_topics=False,
            max_block_ms=3000,
            delivery_timeout_ms=15000,
            **self.common))
        t0 = time.monotonic()
        expected = (Errors.KafkaTimeoutError, Errors.UnknownTopicOrPartitionError)
        try:
            # No metadata for the topic: send() itself blocks up to max_block_ms, then raises
            # KafkaTimeoutError; a non-retriable metadata error comes back as a failed future.
            fut = producer.send(missing, key=b"k", value=b"must-not-be-stored")
        except expected as exc:
            err = exc
        else:
            try:
                md = fut.get(timeout=10)
            except Errors.UnknownTopicOrPartitionError as exc:
                err = exc
            except Errors.KafkaTimeoutError:
                self.fail("send() to nonexistent topic %s returned a future that did not complete in 10 s"
                          % missing)
            except Errors.KafkaError as exc:
                self.fail("expected UnknownTopicOrPartition or KafkaTimeoutError, got %s" % describe(exc))
            else:
                self.fail("send to nonexistent topic %s succeeded (%s); auto-creation should be off"
                          % (missing, md))
        info("send to %s failed as expected after %.1f s: %s" % (missing, time.monotonic() - t0, describe(err)))
        producer.close(timeout=5)
        self.clients.remove(("producer", producer))
        self.ok("produce.unknown_topic_fails")

    # -- extras: both ends of the timestamp index ----------------------------------------
    def check_offsets_for_times_edges(self):
        self.current = "offsets_for_times.before_all"
        res = self.consumer.offsets_for_times({tp: 0 for tp in self.tps}, timeout_ms=10000)
        for tp in self.tps:
            if res.get(tp) is None or res[tp].offset != 0:
                self.fail("partition %d: offsets_for_times(0) = %s, want offset 0" % (tp.partition, res.get(tp)))
        self.ok("offsets_for_times.before_all")
        self.current = "offsets_for_times.after_all"
        future_ms = int(time.time() * 1000) + 3600 * 1000
        res = self.consumer.offsets_for_times({tp: future_ms for tp in self.tps}, timeout_ms=10000)
        for tp in self.tps:
            if res.get(tp) is not None:
                self.fail("partition %d: offsets_for_times(now+1h) = %s, want None (offset -1)" % (
                    tp.partition, res.get(tp)))
        self.ok("offsets_for_times.after_all")

    # -- g. consumer group: commit, leave, a new member resumes --------------------------
    def group_consumer(self, topic, group, client_id):
        return self.track("consumer", KafkaConsumer(
            topic,
            client_id=client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=200,
            max_poll_records=40,
            **self.common))

    def check_group_consumer(self):
        topic = "%s-kpy-g" % self.args.topic_prefix
        group = "%s-kpy-group" % self.args.topic_prefix
        total = GROUP_RECORDS
        self.current = "group.produce"
        admin = self.track("admin", KafkaAdminClient(client_id="shardline-interop-kpy-gadmin", **self.common))
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}}, timeout_ms=10000)
        admin.wait_for_topics([topic], timeout_ms=10000)
        producer = self.track("producer", KafkaProducer(client_id="shardline-interop-kpy-gproducer",
                                                        acks="all", linger_ms=5, **self.common))
        futures = [producer.send(topic, key=b"k", value=("g:%d" % i).encode(), partition=i % 2)
                   for i in range(total)]
        producer.flush(timeout=30)
        acked = {}
        for i, fut in enumerate(futures):
            md = fut.get(timeout=0)
            acked["g:%d" % i] = (md.partition, md.offset)
        self.ok("group.produce")

        def take(consumer, seen, until, what):
            deadline = time.monotonic() + 30
            while len(seen) < until and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for r in records:
                        value = r.value.decode()
                        if value in seen:
                            self.fail("%s: %s delivered twice" % (what, value))
                        if acked.get(value) != (r.partition, r.offset):
                            self.fail("%s: %s read at %d/%d, acked at %s" % (
                                what, value, r.partition, r.offset, acked.get(value)))
                        seen[value] = (r.partition, r.offset)
            if len(seen) < until:
                self.fail("%s: %d of %d records in 30 s" % (what, len(seen), until))

        self.current = "group.commit"
        first = self.group_consumer(topic, group, "shardline-interop-kpy-member1")
        first_seen = {}
        take(first, first_seen, total // 2, "first member")
        first.commit()
        for tp in first.assignment():
            committed = first.committed(tp)
            position = first.position(tp)
            if committed != position:
                self.fail("%s: committed %s but the position is %s" % (tp, committed, position))
        info("first member read %d records; committed %s" % (
            len(first_seen), {tp.partition: first.committed(tp) for tp in first.assignment()}))
        first.close(autocommit=False)
        self.clients.remove(("consumer", first))
        self.ok("group.commit")

        self.current = "group.resume_after_restart"
        second = self.group_consumer(topic, group, "shardline-interop-kpy-member2")
        second_seen = {}
        take(second, second_seen, total - len(first_seen), "second member")
        overlap = set(first_seen) & set(second_seen)
        if overlap:
            self.fail("%d records read by both members, e.g. %s" % (len(overlap), sorted(overlap)[:3]))
        if set(first_seen) | set(second_seen) != set(acked):
            self.fail("records missing: %s" % sorted(set(acked) - set(first_seen) - set(second_seen))[:5])
        second.commit()
        second.close(autocommit=False)
        self.clients.remove(("consumer", second))
        self.ok("group.resume_after_restart")

    def run(self):
        if not self.args.group_consumer_only:
            self.check_admin()
            self.check_produce()
            self.check_consume()
            self.check_offsets_for_times()
            self.check_watermarks()
            self.check_unknown_topic()
            self.check_offsets_for_times_edges()
        if self.args.with_group_consumer or self.args.group_consumer_only:
            self.check_group_consumer()


def run_group_member(args):
    """One member of a consumer group, for groups mixing clients (see the module docs)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        client_id="shardline-interop-kpy-member",
        group_id=args.group_member,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=100,
        request_timeout_ms=10000)
    deadline = time.monotonic() + args.deadline
    while not stop.is_set() and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=200)
        if not batch:
            continue
        try:
            consumer.commit()
        except Errors.CommitFailedError as exc:
            # The records go to the partitions' next owner; they were not processed here.
            info("commit failed, batch dropped: %s" % describe(exc))
            continue
        for tp, records in batch.items():
            for r in records:
                print("processed-record: %d %d %s" % (r.partition, r.offset, r.value.decode()), flush=True)
    consumer.close(autocommit=False, timeout_ms=10000)
    print("ok group-member", flush=True)
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True, help="host:port of the broker")
    ap.add_argument("--topic-prefix", help="fresh prefix; topic PREFIX-kpy is created")
    ap.add_argument("--with-group-consumer", action="store_true", help="also run the consumer-group checks")
    ap.add_argument("--group-consumer-only", action="store_true", help="run only the consumer-group checks")
    ap.add_argument("--group-member", metavar="GROUP", help="run as one member of GROUP (needs --topic)")
    ap.add_argument("--topic", help="topic for --group-member")
    ap.add_argument("--bootstrap-timeout-ms", type=int, default=5000,
                    help="how long each client waits for its first metadata (default 5000)")
    ap.add_argument("--deadline", type=float, default=85.0, help="hard limit for the whole run, s (default 85)")
    ap.add_argument("-v", "--verbose", action="store_true", help="kafka-python DEBUG logging on stderr")
    args = ap.parse_args()
    if args.group_member:
        if not args.topic:
            ap.error("--group-member needs --topic")
    elif not args.topic_prefix:
        ap.error("--topic-prefix is required")

    logging.basicConfig(stream=sys.stderr, format="# %(asctime)s %(name)s %(levelname)s %(message)s",
                        level=logging.DEBUG if args.verbose else logging.WARNING)
    if args.group_member:
        run_group_member(args)
    info("kafka-python %s, python %s, bootstrap %s, topic prefix %s" % (
        kafka.__version__, sys.version.split()[0], args.bootstrap, args.topic_prefix))

    runner = Runner(args)

    def on_deadline(signum, frame):
        print("FAIL %s: whole-run deadline of %.0f s exceeded" % (runner.current, args.deadline),
              file=sys.stderr, flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, on_deadline)
    signal.setitimer(signal.ITIMER_REAL, args.deadline)

    code = 0
    try:
        runner.run()
    except CheckFailed as exc:
        print("FAIL %s: %s" % (runner.current, exc), file=sys.stderr, flush=True)
        code = 1
    except Exception as exc:  # a client error is a failed check, not a crash
        print("FAIL %s: %s" % (runner.current, describe(exc)), file=sys.stderr, flush=True)
        if args.verbose:
            import traceback
            traceback.print_exc()
        code = 1

    # Close every client, bounded; kafka-python's background threads must not keep us alive.
    closer = threading.Thread(target=runner.close_all, kwargs={"quick": code != 0}, daemon=True)
    closer.start()
    closer.join(15)
    if closer.is_alive():
        info("closing clients took more than 15 s; exiting anyway")
    if code == 0:
        print("# all checks passed", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
