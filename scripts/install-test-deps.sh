#!/usr/bin/env bash
# Install the third-party clients used by the interop checks in tests/interop/.
#
#   bash scripts/install-test-deps.sh      (from any directory)
#
# Idempotent; when everything is already in place it only compares two stamp files and
# returns in well under a second. What it installs:
#   1. kcat            Debian package (librdkafka 2.0.2 on Debian 12), via apt-get, only if
#                      `kcat` is not on PATH.
#   2. Python venv     tests/interop/.venv with tests/interop/requirements.txt (kafka-python
#                      3.0.12 + lz4/snappy/zstd codecs). Skipped when the stamp
#                      .venv/.requirements.sha256 matches the requirements file.
#   3. npm packages    `npm ci` in tests/interop/ from package-lock.json (kafkajs 2.2.4).
#                      Skipped when node_modules/.package-lock.sha256 matches the lock.
#
# Environment:
#   PYTHON=python3.11      interpreter used to create the venv (default: python3)
#   FORCE=1                ignore the stamps and reinstall the venv and node_modules
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INTEROP="$ROOT/tests/interop"
VENV="$INTEROP/.venv"
PY="${PYTHON:-python3}"
FORCE="${FORCE:-0}"

log() { printf '[install-test-deps] %s\n' "$*"; }
hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- 1. kcat (Debian) ---------------------------------------------------------------------
if command -v kcat >/dev/null 2>&1; then
  log "kcat: present ($(command -v kcat))"
else
  SUDO=()
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
      log "kcat: missing and not root (no sudo); install the Debian package 'kcat' by hand" >&2
      exit 1
    fi
  fi
  log "kcat: missing -> apt-get update && apt-get install -y kcat"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kcat
  log "kcat: installed ($(kcat -V 2>&1 | grep -m1 '^Version' || true))"
fi

# --- 2. Python venv -------------------------------------------------------------------------
REQ="$INTEROP/requirements.txt"
PY_STAMP="$VENV/.requirements.sha256"
want="$(hash_of "$REQ")"
if [[ "$FORCE" != 1 && -x "$VENV/bin/python" && -f "$PY_STAMP" && "$(cat "$PY_STAMP")" == "$want" ]]; then
  log "python venv: up to date ($VENV)"
else
  if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    log "python venv: creating $VENV with $("$PY" --version 2>&1)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  log "python venv: pip install -r tests/interop/requirements.txt"
  rm -f "$PY_STAMP"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQ"
  # Fail here, not in a test, if a codec did not install.
  "$VENV/bin/python" -c 'import kafka, kafka.codec as c; assert c.has_snappy() and c.has_lz4() and c.has_zstd(), "codec missing"; print("[install-test-deps] python venv: kafka-python", kafka.__version__, "with gzip/snappy/lz4/zstd")'
  printf '%s\n' "$want" >"$PY_STAMP"
fi

# --- 3. npm packages --------------------------------------------------------------------------
LOCK="$INTEROP/package-lock.json"
NPM_STAMP="$INTEROP/node_modules/.package-lock.sha256"
want="$(hash_of "$LOCK")"
if [[ "$FORCE" != 1 && -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$want" \
      && -f "$INTEROP/node_modules/kafkajs/package.json" ]]; then
  log "node_modules: up to date ($INTEROP/node_modules)"
else
  log "node_modules: npm ci in tests/interop"
  (cd "$INTEROP" && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$want" >"$NPM_STAMP"
  log "node_modules: kafkajs $(node -p 'require(process.argv[1]).version' "$INTEROP/node_modules/kafkajs/package.json")"
fi

log "done"
