#!/usr/bin/env bash
# profile-serve.sh: CPU and mutex profiles of `keyplane serve` at the info
# log level while wrk sends it the cached POST /v1/verify of bench-http.sh.
# keyplane is built with scripts/_profile/pprof.go added through
# `go build -overlay` (net/http/pprof on a loopback port; keyplane itself
# never serves it). Prints the top of each profile and keeps them in
# $OUT (default: a new temporary directory).
#
# Environment: DURATION (profile seconds, 15), THREADS (2), CONNS (32), OUT.
# Needs wrk, curl and python3.
set -euo pipefail
DURATION=${DURATION:-15}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
build=$(mktemp -d)
printf '{"Replace": {"%s/cmd/keyplane/zz_pprof.go": "%s/scripts/_profile/pprof.go"}}' "$root" "$root" >"$build/overlay.json"
(cd "$root" && go build -overlay "$build/overlay.json" -o "$build/keyplane" ./cmd/keyplane)
cp "$build/keyplane" "$OUT/keyplane"
rm -rf "$build"

BENCH_NAME=profile-serve BENCH_TOOLS=wrk KEYPLANE_BIN=$OUT/keyplane
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pprof=127.0.0.1:$port
PPROF_ADDR=$pprof KEYPLANE_ADMIN_TOKEN=$token \
  "$tmp/keyplane" serve --addr 127.0.0.1:0 --data "$tmp/data" >"$tmp/serve.out" 2>"$tmp/serve.log" &
pids+=("$!")
url=$(wait_url "$tmp/serve.out")
secret=$(bench_key "$url")
cat >"$tmp/verify.lua" <<LUA
wrk.method = "POST"
wrk.body = [[{"key": "$secret", "scope": "generate"}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA

timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d$((DURATION + 4))s -s "$tmp/verify.lua" "$url/v1/verify" >"$OUT/wrk.txt" &
pids+=("$!")
sleep 1
curl -fsS "http://$pprof/debug/pprof/mutex" >"$OUT/mutex-start.pprof"
curl -fsS "http://$pprof/debug/pprof/profile?seconds=$DURATION" >"$OUT/cpu.pprof"
curl -fsS "http://$pprof/debug/pprof/mutex" >"$OUT/mutex.pprof"
wait "${pids[-1]}"
echo "== profiles and the keyplane binary they came from: $OUT"
grep -E 'requests in|Requests/sec' "$OUT/wrk.txt"
echo "== CPU, cumulative: keyplane's functions and the GC's mark workers"
go tool pprof -top -cum -nodecount=300 "$OUT/keyplane" "$OUT/cpu.pprof" 2>/dev/null | grep -E 'keyplane|gcBgMarkWorker|flat%' | sed -n 1,30p
echo "== mutex contentions during the profile (sampled 1 in 10)"
go tool pprof -top -cum -sample_index=contentions -nodecount=300 -base "$OUT/mutex-start.pprof" "$OUT/keyplane" "$OUT/mutex.pprof" 2>/dev/null |
  grep -E 'keyplane|lru|flat%' | sed -n 1,20p
