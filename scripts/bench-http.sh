#!/usr/bin/env bash
# bench-http.sh: POST /v1/verify throughput and latency of `keyplane serve`
# against a bare net/http server (scripts/benchbare) answering the same
# request with a body of the same size, on this machine, in the same run.
#
# It builds keyplane, starts it on a loopback port with a temporary data
# directory and admin token, creates a key on the default plan with its
# requests_per_minute raised out of reach (so every answer is the full VALID
# decision, day quota check included), stops it, and runs
# two copies of that data directory side by side: one at the default log
# level (info: one summary entry per request, written to a file) and one at
# KEYPLANE_LOG_LEVEL=error. Then:
#   1. throughput: wrk, same threads/connections/duration for every server,
#      alternating bare / keyplane(info) / keyplane(error) for ROUNDS rounds;
#      prints requests/s and the ratio keyplane/bare (target >= 0.80), and
#      each server's CPU time per request (from /proc/<pid>/stat), which
#      load from other processes on the machine disturbs less;
#   2. latency at a fixed RATE (open loop, scripts/benchrate, measured from
#      each request's scheduled time): p50/p90/p99 for each server.
# Everything listens on 127.0.0.1, every step is bounded by a timeout, and
# the servers are stopped and the temporary directory removed on exit.
#
# Environment: THREADS (2), CONNS (32), DURATION (10s; in seconds), ROUNDS (3),
# RATE (5000), RATE_DURATION (10s; in seconds), RATE_ROUNDS (2),
# KEYPLANE_BIN (a keyplane binary to use instead of building ./cmd/keyplane),
# KEYPLANE_BIN_B (a second keyplane binary: it runs at the info level as
# kp-info-b, on a copy of the same data, in the same rotation, and the
# summary compares it with kp-info: builds side by side in one run).
# Needs wrk (apt-get install -y wrk), curl and python3.
set -euo pipefail

THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-5000}
RATE_DURATION=${RATE_DURATION:-10s}
RATE_ROUNDS=${RATE_ROUNDS:-2}

BENCH_NAME=bench-http BENCH_TOOLS=wrk
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"
echo "== machine: $machine, wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f2)"
go build -o "$tmp/benchbare" ./scripts/benchbare
go build -o "$tmp/benchrate" ./scripts/benchrate

# start_keyplane NAME LEVEL DATADIR [BINARY]: start keyplane serve; sets URL and PID.
start_keyplane() {
  KEYPLANE_ADMIN_TOKEN=$token KEYPLANE_LOG_LEVEL=$2 \
    "${4:-$tmp/keyplane}" serve --addr 127.0.0.1:0 --data "$3" >"$tmp/$1.out" 2>>"$tmp/$1.log" &
  PID=$!
  pids+=("$PID")
  URL=$(wait_url "$tmp/$1.out")
}

# 1. Create the benchmark key, then stop that server.
start_keyplane setup info "$tmp/data-info"
secret=$(bench_key "$URL")
kill "$PID"; wait "$PID" || true
cp -a "$tmp/data-info" "$tmp/data-error"
if [[ -n "${KEYPLANE_BIN_B:-}" ]]; then cp -a "$tmp/data-info" "$tmp/data-info-b"; fi
printf '{"key": "%s", "scope": "generate"}' "$secret" >"$tmp/verify.json"

start_keyplane kp-info info "$tmp/data-info"
KP_INFO=$URL; KP_INFO_PID=$PID
start_keyplane kp-error error "$tmp/data-error"
KP_ERROR=$URL; KP_ERROR_PID=$PID
servers=(bare kp-info kp-error)
declare -A url=([bare]="" [kp-info]=$KP_INFO [kp-error]=$KP_ERROR)
declare -A pid=([bare]="" [kp-info]=$KP_INFO_PID [kp-error]=$KP_ERROR_PID)
if [[ -n "${KEYPLANE_BIN_B:-}" ]]; then
  start_keyplane kp-info-b info "$tmp/data-info-b" "$KEYPLANE_BIN_B"
  url[kp-info-b]=$URL; pid[kp-info-b]=$PID
  servers+=(kp-info-b)
fi

curl -fsS -X POST "$KP_INFO/v1/verify" -H "Authorization: Bearer $token" -d @"$tmp/verify.json" >"$tmp/decision.json"
grep -q '"code":"VALID"' "$tmp/decision.json" || { echo "bench-http: the benchmark key does not verify: $(cat "$tmp/decision.json")" >&2; exit 1; }
"$tmp/benchbare" -addr 127.0.0.1:0 -body "$tmp/decision.json" >"$tmp/bare.out" 2>"$tmp/bare.log" &
BARE_PID=$!
pids+=("$BARE_PID")
BARE=$(wait_url "$tmp/bare.out")
echo "== request $(wc -c <"$tmp/verify.json") bytes, response body $(wc -c <"$tmp/decision.json") bytes (keyplane's VALID decision; benchbare sends the same bytes)"

cat >"$tmp/verify.lua" <<EOF
wrk.method = "POST"
wrk.body = [[$(cat "$tmp/verify.json")]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
EOF

# cpu_ticks PID: user+system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# write_calls PID: the write system calls a process has made.
write_calls() { awk '$1 == "syscw:" {print $2}' "/proc/$1/io"; }
hz=$(getconf CLK_TCK)

url[bare]=$BARE; pid[bare]=$BARE_PID
results=$tmp/results.txt
: >"$results"

echo "== throughput: wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds alternating ${servers[*]} (kp-info: log level info; kp-error: log level error${KEYPLANE_BIN_B:+; kp-info-b: $KEYPLANE_BIN_B at info})"
secs=${DURATION%s}
for round in $(seq 1 "$ROUNDS"); do
  for name in "${servers[@]}"; do
    before=$(cpu_ticks "${pid[$name]}") writes_before=$(write_calls "${pid[$name]}")
    timeout $((secs + 30)) wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$tmp/verify.lua" "${url[$name]}/v1/verify" >"$tmp/wrk.txt"
    after=$(cpu_ticks "${pid[$name]}") writes_after=$(write_calls "${pid[$name]}")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.txt")
    reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.txt")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk.txt")
    errors=$(awk '/Socket errors/ {print}' "$tmp/wrk.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$tmp/wrk.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.txt")
    cpu_us=$(python3 -c "print(f'{($after - $before) / $hz / $reqs * 1e6:.1f}')")
    writes=$(python3 -c "print(f'{($writes_after - $writes_before) / $reqs:.2f}')")
    logged=""
    if [[ $name == kp-info* ]]; then
      logged=" log_lines=$(wc -l <"$tmp/$name.log")"
      : >"$tmp/$name.log" # opened for appending: truncating is safe
    fi
    echo "round=$round server=$name rps=$rps requests=$reqs non2xx=${non2xx:-0} wrk_p50=$p50 wrk_p99=$p99 server_cpu_us_per_req=$cpu_us writes_per_req=$writes$logged${errors:+ $errors}" | tee -a "$results"
  done
  for name in "${servers[@]:1}"; do
    curl -fsS -X POST "${url[$name]}/v1/verify" -H "Authorization: Bearer $token" -d @"$tmp/verify.json" | grep -q '"code":"VALID"' ||
      { echo "bench-http: $name no longer answers VALID" >&2; exit 1; }
  done
done

python3 - "$results" <<'EOF'
import re, statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in open(sys.argv[1])]
rps, cpu, writes = {}, {}, {}
for r in rows:
    rps.setdefault(r["server"], []).append(float(r["rps"]))
    cpu.setdefault(r["server"], []).append(float(r["server_cpu_us_per_req"]))
    writes.setdefault(r["server"], []).append(float(r["writes_per_req"]))
bare = rps["bare"]
print("== throughput summary (median [min-max] of %d rounds)" % len(bare))
for name, v in rps.items():
    c = cpu[name]
    print(f"  {name:9s} {statistics.median(v):7.0f} req/s [{min(v):.0f}-{max(v):.0f}]   "
          f"server CPU {statistics.median(c):5.1f} us/req [{min(c):.1f}-{max(c):.1f}]   "
          f"write calls {statistics.median(writes[name]):.2f}/req")
for name in ("kp-info", "kp-error"):
    per_round = [k / b for k, b in zip(rps[name], bare)]
    ratio = statistics.median(rps[name]) / statistics.median(bare)
    verdict = "meets" if ratio >= 0.80 else "misses"
    print(f"  ratio {name}/bare: {ratio:.2f} (per round: {', '.join(f'{x:.2f}' for x in per_round)}); {verdict} the 0.80 target")
    per_round = [b / k for b, k in zip(cpu["bare"], cpu[name])]
    print(f"    CPU per request, bare/{name}: {statistics.median(per_round):.2f} (per round: {', '.join(f'{x:.2f}' for x in per_round)})")
if "kp-info-b" in rps:
    per_round = [b / a for a, b in zip(cpu["kp-info"], cpu["kp-info-b"])]
    lower = sum(x < 1 for x in per_round)
    print(f"  CPU per request, kp-info-b/kp-info: {statistics.median(per_round):.2f} (per round: {', '.join(f'{x:.2f}' for x in per_round)}; "
          f"lower in {lower} of {len(per_round)})")
EOF

echo "== latency at a fixed $RATE req/s for $RATE_DURATION (open loop, from the scheduled send time), $RATE_ROUNDS rounds"
rsecs=${RATE_DURATION%s}
for round in $(seq 1 "$RATE_ROUNDS"); do
  for name in "${servers[@]}"; do
    out=$(timeout $((rsecs + 40)) "$tmp/benchrate" -url "${url[$name]}/v1/verify" -rate "$RATE" -duration "$RATE_DURATION" \
      -body "$tmp/verify.json" -header "Authorization: Bearer $token" -expect '"code":"VALID"')
    echo "round=$round server=$name $out"
    if [[ $name == kp-info* ]]; then : >"$tmp/$name.log"; fi
  done
done
