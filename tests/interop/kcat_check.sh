#!/usr/bin/env bash
# Interop check: kcat (Debian 12: kcat 1.7.1 on librdkafka 2.0.2) against a running Shardline broker.
#
#   tests/interop/kcat_check.sh BOOTSTRAP TOPIC_PREFIX
#
# Uses the topic "${TOPIC_PREFIX}-kcat" exactly as named, and does NOT create it: kcat has no
# admin API, so the caller must create it first (>= 1 partition; the check uses partition 0)
# and it must be empty (fresh prefix per run).
#
# Checks, in order (stdout `ok <check>`; first failure: stderr `FAIL <check>: <detail>`, exit 1):
#   kcat.metadata             kcat -L -J lists >= 1 broker and the topic with partition 0
#   kcat.produce              100 keyed lines (-K:) to partition 0, in two runs of 50 with a
#                             1.2 s pause between them (the pause is for the timestamp check)
#   kcat.consume              -C -p 0 -o beginning -e -f '%k:%s\n' gives back exactly those lines
#   kcat.consume_from_timestamp  -o s@<ms between the two runs> -e gives exactly the second 50
#                             (set KCAT_CHECK_TIMESTAMPS=0 to skip)
# Every kcat call runs under `timeout` (<= 30 s each) and the whole script under a 75 s budget.
# Exit codes: 0 passed, 1 a check failed, 2 bad usage.
set -euo pipefail

if [[ $# -ne 2 || -z "$1" || -z "$2" ]]; then
  echo "usage: $0 BOOTSTRAP TOPIC_PREFIX   (topic TOPIC_PREFIX-kcat must already exist and be empty)" >&2
  exit 2
fi
BOOTSTRAP="$1"
TOPIC="$2-kcat"
CHECK_TS="${KCAT_CHECK_TIMESTAMPS:-1}"
BUDGET_END=$((SECONDS + 75))
CURRENT="startup"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kcat_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

ok() { echo "ok $1"; }
fail() {
  echo "FAIL $CURRENT: $*" >&2
  if [[ -s "$WORK/diff.txt" ]]; then
    echo "# diff expected vs consumed (first 30 lines):" >&2
    head -n 30 "$WORK/diff.txt" | sed 's/^/#   /' >&2
  fi
  if [[ -s "$WORK/stderr" ]]; then
    echo "# kcat stderr (last 20 lines):" >&2
    tail -n 20 "$WORK/stderr" | sed 's/^/#   /' >&2
  fi
  exit 1
}
# run_kcat ARGS... : kcat bounded by min(30 s, what is left of the budget); stderr -> $WORK/stderr
run_kcat() {
  local left=$((BUDGET_END - SECONDS))
  ((left > 30)) && left=30
  ((left >= 1)) || fail "whole-run budget of 75 s exhausted"
  local rc=0
  timeout "$left" kcat -b "$BOOTSTRAP" "$@" 2>"$WORK/stderr" || rc=$?
  if ((rc == 124)); then fail "kcat $* timed out after ${left} s"; fi
  if ((rc != 0)); then fail "kcat $* exited $rc"; fi
}

CURRENT="kcat.installed"
command -v kcat >/dev/null 2>&1 || fail "kcat not on PATH (run scripts/install-test-deps.sh)"
echo "# $(kcat -V 2>&1 | grep -m1 '^Version' || echo 'kcat version unknown'); bootstrap $BOOTSTRAP; topic $TOPIC"

# --- metadata ------------------------------------------------------------------------------
CURRENT="kcat.metadata"
run_kcat -L -J -m 10 >"$WORK/metadata.json"
python3 - "$WORK/metadata.json" "$TOPIC" <<'EOF' || fail "$(cat "$WORK/why" 2>/dev/null || echo 'bad metadata')"
import json, sys, os
why = os.path.join(os.path.dirname(sys.argv[1]), "why")
def bad(msg):
    open(why, "w").write(msg)
    sys.exit(1)
try:
    md = json.load(open(sys.argv[1]))
except ValueError as exc:
    bad("kcat -L -J printed no JSON: %s" % exc)
brokers = md.get("brokers") or []
if not brokers:
    bad("no brokers in metadata: %s" % json.dumps(md)[:300])
topic = next((t for t in md.get("topics") or [] if t.get("topic") == sys.argv[2]), None)
if topic is None:
    bad("topic %s not in metadata (the caller must create it before running this script)" % sys.argv[2])
if topic.get("error"):
    bad("topic %s has error %s" % (sys.argv[2], topic["error"]))
parts = topic.get("partitions") or []
p0 = next((p for p in parts if p.get("partition") == 0), None)
if p0 is None or p0.get("leader", -1) < 0:
    bad("topic %s: no partition 0 with a leader: %s" % (sys.argv[2], json.dumps(parts)[:300]))
print("# brokers: %s; %s has %d partition(s)" % (
    ", ".join("%s=%s" % (b.get("id"), b.get("name")) for b in brokers), sys.argv[2], len(parts)))
EOF
ok kcat.metadata

# --- produce 2 x 50 keyed lines to partition 0 ----------------------------------------------
CURRENT="kcat.produce"
for i in $(seq 1 50); do echo "k$i:kcat-value-$i-shardline"; done >"$WORK/first.txt"
for i in $(seq 51 100); do echo "k$i:kcat-value-$i-shardline"; done >"$WORK/second.txt"
cat "$WORK/first.txt" "$WORK/second.txt" >"$WORK/expected.txt"
PRODUCE=(-P -t "$TOPIC" -p 0 -K: -X message.timeout.ms=20000)
run_kcat "${PRODUCE[@]}" <"$WORK/first.txt"
sleep 0.6
BOUNDARY_MS=$(($(date +%s%N) / 1000000))
sleep 0.6
run_kcat "${PRODUCE[@]}" <"$WORK/second.txt"
ok kcat.produce

# --- consume them back ----------------------------------------------------------------------
CURRENT="kcat.consume"
run_kcat -C -t "$TOPIC" -p 0 -o beginning -e -f '%k:%s\n' >"$WORK/got.txt"
if ! diff -u "$WORK/expected.txt" "$WORK/got.txt" >"$WORK/diff.txt"; then
  fail "consumed lines differ from the 100 produced ($(wc -l <"$WORK/got.txt") lines read)"
fi
ok kcat.consume

# --- consume from a timestamp (offsets_for_times via librdkafka) ----------------------------
if [[ "$CHECK_TS" != 0 ]]; then
  CURRENT="kcat.consume_from_timestamp"
  run_kcat -C -t "$TOPIC" -p 0 -o "s@$BOUNDARY_MS" -e -f '%k:%s\n' >"$WORK/got_ts.txt"
  if ! diff -u "$WORK/second.txt" "$WORK/got_ts.txt" >"$WORK/diff.txt"; then
    fail "-o s@$BOUNDARY_MS should give exactly lines 51..100 ($(wc -l <"$WORK/got_ts.txt") lines read)"
  fi
  ok kcat.consume_from_timestamp
else
  echo "# skip kcat.consume_from_timestamp (KCAT_CHECK_TIMESTAMPS=0)"
fi
echo "# all checks passed"
