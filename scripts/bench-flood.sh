#!/usr/bin/env bash
# bench-flood.sh: memory of `keyplane serve` under a flood of verifies for
# random well-formed keys (valid checksums, from apikey.Generate: each one
# passes the format check, misses the cache and reads the store), compared
# with a run of the same length verifying one valid key. Each run gets a
# fresh server (temporary data directory, loopback port) whose VmRSS
# scripts/benchflood samples every second; it prints the samples, the peak
# and the final RSS. The negative cache is bounded (100,000 hashes by
# default), so the random-key RSS should rise while it fills and then stay
# flat.
#
# Environment: REQUESTS (1000000), DURATION (60s): each run stops at
# whichever comes first; CONNS (32); KEYPLANE_LOG_LEVEL (error: a million
# INFO request logs are not what is measured here); KEYPLANE_BIN (a
# keyplane binary to use instead of building ./cmd/keyplane).
# Needs curl, python3 and go. Everything is stopped and removed on exit.
set -euo pipefail

REQUESTS=${REQUESTS:-1000000}
DURATION=${DURATION:-60s}
CONNS=${CONNS:-32}
LEVEL=${KEYPLANE_LOG_LEVEL:-error}

BENCH_NAME=bench-flood
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"
echo "== machine: $machine"
go build -o "$tmp/benchflood" ./scripts/benchflood

# run NAME MODE: a fresh server, a key, then the flood (MODE random or valid).
run() {
  local name=$1 mode=$2 dir=$tmp/data-$1
  KEYPLANE_ADMIN_TOKEN=$token KEYPLANE_LOG_LEVEL=$LEVEL \
    "$tmp/keyplane" serve --addr 127.0.0.1:0 --data "$dir" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  local pid=$!
  pids+=("$pid")
  local url secret
  url=$(wait_url "$tmp/$name.out")
  secret=$(bench_key "$url")
  local keyflag=()
  if [[ $mode == valid ]]; then keyflag=(-key "$secret"); fi
  echo "== $name: ${REQUESTS} requests or $DURATION, $CONNS connections, log level $LEVEL, server pid $pid"
  local secs=${DURATION%s}
  timeout $((secs + 60)) "$tmp/benchflood" -url "$url/v1/verify" -token "$token" -pid "$pid" \
    -n "$REQUESTS" -duration "$DURATION" -conns "$CONNS" "${keyflag[@]}" | tee "$tmp/$name.txt"
  kill "$pid"; wait "$pid" || true
}

run random-keys random
run one-valid-key valid

echo "== summary"
grep -h '^mode=' "$tmp/random-keys.txt" "$tmp/one-valid-key.txt"
