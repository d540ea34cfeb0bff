#!/usr/bin/env bash
# with-emulators.sh CMD...: start fresh Firestore and Pub/Sub emulators on
# free loopback ports, run CMD with FIRESTORE_EMULATOR_HOST,
# PUBSUB_EMULATOR_HOST and KEYPLANE_REQUIRE_EMULATORS=1 set, stop them.
# The emulators keep data in memory only, so every run starts empty.
set -euo pipefail

command -v gcloud >/dev/null || { echo "with-emulators: gcloud is not installed (the Cloud SDK with the firestore and pubsub emulators is required)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
logdir=$(mktemp -d)
fs_port=$(free_port)
ps_port=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  # the emulators run as java children of gcloud; make sure none outlive us
  pkill -f "host-port=127.0.0.1:$fs_port" 2>/dev/null || true
  pkill -f "port=$ps_port" 2>/dev/null || true
}
trap cleanup EXIT

setsid gcloud emulators firestore start --host-port="127.0.0.1:$fs_port" >"$logdir/firestore.log" 2>&1 &
pids+=($!)
setsid gcloud beta emulators pubsub start --host-port="127.0.0.1:$ps_port" >"$logdir/pubsub.log" 2>&1 &
pids+=($!)

wait_up() { # name port log
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$2" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "with-emulators: the $1 emulator did not start; its log:" >&2
  cat "$3" >&2
  exit 1
}
wait_up firestore "$fs_port" "$logdir/firestore.log"
wait_up pubsub "$ps_port" "$logdir/pubsub.log"

export FIRESTORE_EMULATOR_HOST="127.0.0.1:$fs_port"
export PUBSUB_EMULATOR_HOST="127.0.0.1:$ps_port"
export KEYPLANE_REQUIRE_EMULATORS=1
echo "with-emulators: firestore on $FIRESTORE_EMULATOR_HOST, pubsub on $PUBSUB_EMULATOR_HOST" >&2
"$@"
