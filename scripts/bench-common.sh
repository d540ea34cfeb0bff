# bench-common.sh: set-up shared by the bench-*.sh scripts (sourced, not run).
# Checks the tools named in BENCH_TOOLS, makes a private temporary directory
# $tmp removed on exit (with every pid in $pids stopped), builds keyplane
# into $tmp/keyplane (or copies $KEYPLANE_BIN), and sets $token to a fresh
# admin token. BENCH_NAME prefixes error messages.

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
