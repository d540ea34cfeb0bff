#!/usr/bin/env bash
# with-emulators.sh CMD...: start fresh Firestore and Pub/Sub emulators on
# free loopback ports, run CMD with FIRESTORE_EMULATOR_HOST,
# PUBSUB_EMULATOR_HOST and KEYPLANE_REQUIRE_EMULATORS=1 set, stop them.
# The emulators keep data in memory only, so every run starts empty. It
# fails at once if an emulator exits while starting, and stops only the
# processes it started.
set -euo pipefail

command -v gcloud >/dev/null || { echo "with-emulators: gcloud is not installed (the Cloud SDK with the firestore and pubsub emulators is required)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
logdir=$(mktemp -d)
fs_port=$(free_port)
ps_port=$(free_port)
pids=()
# Each emulator runs in a session of its own (setsid), so its process group
# id is the pid we started: killing the group stops gcloud and the java
# child it starts, and nothing this script did not start.
cleanup() {
  for p in "${pids[@]}"; do kill -TERM -- -"$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 -- -"$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- -"$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

setsid gcloud emulators firestore start --host-port="127.0.0.1:$fs_port" >"$logdir/firestore.log" 2>&1 &
fs_pid=$!
pids+=("$fs_pid")
setsid gcloud beta emulators pubsub start --host-port="127.0.0.1:$ps_port" >"$logdir/pubsub.log" 2>&1 &
ps_pid=$!
pids+=("$ps_pid")

wait_up() { # name pid port log
  for _ in $(seq 1 240); do
    if curl -fsS "http://127.0.0.1:$3" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "with-emulators: the $1 emulator exited while starting; its log:" >&2
      cat "$4" >&2
      exit 1
    fi
    sleep 0.25
  done
  echo "with-emulators: the $1 emulator did not answer on port $3 within 60 s; its log:" >&2
  cat "$4" >&2
  exit 1
}
wait_up firestore "$fs_pid" "$fs_port" "$logdir/firestore.log"
wait_up pubsub "$ps_pid" "$ps_port" "$logdir/pubsub.log"

export FIRESTORE_EMULATOR_HOST="127.0.0.1:$fs_port"
export PUBSUB_EMULATOR_HOST="127.0.0.1:$ps_port"
export KEYPLANE_REQUIRE_EMULATORS=1
echo "with-emulators: firestore on $FIRESTORE_EMULATOR_HOST, pubsub on $PUBSUB_EMULATOR_HOST" >&2
"$@"
