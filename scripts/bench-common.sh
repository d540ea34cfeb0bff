# bench-common.sh: set-up shared by the bench-*.sh scripts (sourced, not run).
# Checks the tools named in BENCH_TOOLS, makes a private temporary directory
# $tmp removed on exit (with every pid in $pids stopped), builds keyplane
# into $tmp/keyplane (or copies $KEYPLANE_BIN), and sets $token to a fresh
# admin token. BENCH_NAME prefixes error messages. Defines wait_url and
# bench_key.

for tool in curl python3 go ${BENCH_TOOLS:-}; do
  command -v "$tool" >/dev/null || { echo "$BENCH_NAME: $tool is not installed" >&2; exit 1; }
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmp=$(mktemp -d)
chmod 700 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

machine="$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(go version | cut -d' ' -f3)"
if [[ -n "${KEYPLANE_BIN:-}" ]]; then
  cp "$KEYPLANE_BIN" "$tmp/keyplane"
else
  go build -o "$tmp/keyplane" ./cmd/keyplane
fi
token=$(python3 -c 'import secrets; print("kpadm_bench_" + secrets.token_hex(16))')

# wait_url FILE: print the http://127.0.0.1:port a server printed to FILE.
wait_url() {
  for _ in $(seq 1 100); do
    if u=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$1" 2>/dev/null | head -1) && [[ -n "$u" ]]; then
      echo "$u"; return 0
    fi
    sleep 0.1
  done
  echo "$BENCH_NAME: server did not start; its output:" >&2; cat "$1" "${1%.out}.log" >&2 2>/dev/null || true; exit 1
}

# bench_key URL: create the benchmark key on keyplane at URL (the default
# plan, its requests_per_minute out of reach, so that every verify is the
# full VALID decision) and print its secret.
bench_key() {
  curl -fsS -X POST "$1/v1/keys" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"owner": "acct_bench", "limits": {"requests_per_minute": 1000000000000}}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])'
}
